"""Shared runtime test helpers: the folded reference network exported to ONNX, a float16 pooling graph, seeded batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper


SIZE = 32


def export_folded_onnx(folded: Path, output: Path, size: int = SIZE) -> Path:
    """The project's exporter where it exists, else torch's TorchScript exporter (same I/O names)."""
    try:
        from maxq_deploy.export.tensorrt_form import export_onnx
    except ImportError:
        from maxq_deploy.load.torch_model import load_torch_model

        module = load_torch_model(folded).module
        torch.onnx.export(
            module, (torch.zeros(1, 3, size, size),), str(output), input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17, dynamo=False,
        )
        return output
    export_onnx(folded, output, input_size=size)
    return output


@pytest.fixture(scope="module")
def folded_onnx(store, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folded = store.folded()
    return folded, export_folded_onnx(folded, tmp_path_factory.mktemp("onnx") / "resnet18.onnx")


def fp16_pooling_graph(path: Path) -> Path:
    """A float16-input ONNX graph: global average pool -> flatten (logits = channel means)."""
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]), helper.make_node("Flatten", ["pooled"], ["output"])],
        "fp16_pool",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT16, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT16, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every ONNX Runtime in use reads
    onnx.save(model, path)
    return path


def batch(n: int = 4, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size), dtype=np.float32)
