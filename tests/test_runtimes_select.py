"""open_runner / backend_for_file: the backend is decided once, from the suffix or --backend checked against the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxq_deploy.core.errors import BackendUnavailableError, InputFileError, MaxQDeployError
from maxq_deploy.runtimes import OnnxRuntimeRunner, TorchRunner, open_runner
from runtimes_fixtures import folded_onnx


def test_runner_for_picks_the_backend_from_the_file(store, folded_onnx: tuple[Path, Path]) -> None:
    maxq = open_runner(store.checkpoint())
    assert isinstance(maxq, TorchRunner) and maxq.model_kind == "maxq-checkpoint" and maxq.num_classes == 10
    assert isinstance(open_runner(folded_onnx[1], backend="onnxruntime"), OnnxRuntimeRunner)
    assert isinstance(open_runner(folded_onnx[0], backend="torch"), TorchRunner)


@pytest.mark.parametrize("model, backend, error, message", [
    ("onnx", "torch", InputFileError, "is an ONNX model, which the torch backend cannot run; use --backend onnxruntime"),
    ("folded", "onnxruntime", InputFileError, "is a PyTorch checkpoint, which the onnxruntime backend cannot run"),
    ("onnx", "tensorrt", InputFileError, "export trt"),
    ("onnx", "tflite", BackendUnavailableError, "unknown backend 'tflite'; choose one of torch, onnxruntime, tensorrt"),
    ("unknown-suffix", None, InputFileError, "cannot tell which runtime .* pass --backend"),
], ids=["onnx-as-torch", "folded-as-onnxruntime", "onnx-as-tensorrt", "unknown-backend", "unknown-suffix"])
def test_runner_for_refuses_mismatches_and_unknowns(folded_onnx: tuple[Path, Path], tmp_path: Path, model: str,
                                                    backend: str | None, error: type, message: str) -> None:
    folded, onnx_path = folded_onnx
    odd = tmp_path / "model.weights"
    odd.write_bytes(b"x")
    path = {"folded": folded, "onnx": onnx_path, "unknown-suffix": odd}[model]
    with pytest.raises(error, match=message):
        open_runner(path, backend=backend)


def test_tensorrt_needs_cuda_and_tensorrt(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(BackendUnavailableError, match="CUDA devices only"):
        open_runner(engine, device="cpu")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(MaxQDeployError):  # a one-line "not available" error, never an ImportError
            open_runner(engine)
