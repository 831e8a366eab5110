"""Acceptance on the digits example: every int8 CPU path within 0.5 top-1 points of fp32, PTQ and QAT."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("pytorch_quantization")
pytest.importorskip("sklearn")

from filelock import FileLock  # noqa: E402

from maxq_deploy.export.tensorrt_form import export_onnx  # noqa: E402
from maxq_deploy.export.ort_from_quantized import export_ort_int8_from_quantized  # noqa: E402
from maxq_deploy.fold import fold_checkpoint  # noqa: E402
from maxq_deploy.quantize import quantize_ptq, quantize_qat  # noqa: E402
from maxq_deploy.reference.train import prepare_digits_example  # noqa: E402

MAX_DROP = 0.5
CALIB = {"calibrator": "percentile", "calib_batches": 8, "batch_size": 32, "workers": 0}


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "maxq_digits"  # as tests/test_quantize.py
    example = prepare_digits_example(shared)
    folded = example.workdir / "digits_resnet18.folded.pth"
    with FileLock(str(folded) + ".lock"):
        if not folded.exists():
            fold_checkpoint(example.checkpoint, folded)
    return example, folded


def top1(path: Path, data: Path, backend: str | None = None) -> float:
    from maxq_deploy.evaluate import evaluate

    return evaluate(path, data, backend=backend, batch_size=128, workers=0).top1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ptq", "qat"])
def test_cpu_int8_paths_keep_fp32_accuracy(digits, mode: str, tmp_path: Path) -> None:
    example, folded = digits
    fp32_onnx = tmp_path / "fp32.onnx"
    export_onnx(folded, fp32_onnx, input_size=example.image_size)
    fp32 = top1(fp32_onnx, example.test_npz)
    quantized = tmp_path / f"{mode}.pt"
    if mode == "ptq":
        quantize_ptq(folded, quantized, example.train_npz, **CALIB)
    else:
        quantize_qat(folded, quantized, example.train_npz, None, epochs=1, lr=1e-4, train_batches=12, **CALIB)
    ort_graph, trt_graph = tmp_path / "ort.onnx", tmp_path / "trt.onnx"
    result = export_ort_int8_from_quantized(quantized, ort_graph, input_size=example.image_size)
    assert result.mode == mode and result.ranges_match  # the checkpoint's (PTQ or QAT) ranges, not new ones
    export_onnx(quantized, trt_graph, input_size=example.image_size)
    ort = top1(ort_graph, example.test_npz)
    print(f"\n{mode}: fp32 {fp32:.2f}  ONNX Runtime (graph from the checkpoint) {ort:.2f}", end="")
    assert ort >= fp32 - MAX_DROP
    try:
        import openvino  # noqa: F401
    except ImportError:
        return
    ov = top1(trt_graph, example.test_npz, backend="openvino")
    print(f"  OpenVINO (TensorRT-form Q/DQ) {ov:.2f}")
    assert ov >= fp32 - MAX_DROP
