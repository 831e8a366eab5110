"""ModelInfo: what eval and bench read instead of probing a runner (fixed batch, input size, JSON record)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maxq_deploy.runtimes.base import ModelInfo


def test_fixed_batch_only_for_a_closed_range_of_one_size() -> None:
    info = ModelInfo("onnxruntime", "1.0", "cpu", "onnx-fp32")
    assert info.fixed_batch is None  # (1, None): any batch
    assert ModelInfo("onnxruntime", "1.0", "cpu", "onnx-fp32", batch_range=(8, 8)).fixed_batch == 8
    assert ModelInfo("tensorrt", "10.8", "cuda", "tensorrt-engine", batch_range=(1, 32)).fixed_batch is None


def test_input_size_only_for_a_square_fixed_shape() -> None:
    assert ModelInfo("torch", "2", "cpu", "folded-checkpoint", input_shape=(3, 32, 32)).input_size == 32
    assert ModelInfo("torch", "2", "cpu", "folded-checkpoint", input_shape=(3, 32, 64)).input_size is None
    assert ModelInfo("torch", "2", "cpu", "folded-checkpoint").input_size is None  # (3, None, None)


def test_to_dict_is_plain_json_data() -> None:
    info = ModelInfo("openvino", "2026.4", "CPU", "onnx-int8", path=Path("m.onnx"), precision="int8", arch="resnet18",
                     num_classes=10, input_shape=(3, 224, 224), input_dtype=np.dtype(np.float16), batch_range=(1, None),
                     options={"threads": 2})
    assert info.to_dict() == {
        "backend": "openvino", "backend_version": "2026.4", "device": "CPU", "model_kind": "onnx-int8", "path": "m.onnx",
        "precision": "int8", "arch": "resnet18", "num_classes": 10, "input_name": "input", "input_shape": [3, 224, 224],
        "input_dtype": "float16", "batch_range": [1, None], "options": {"threads": 2},
    }
