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


def test_runner_for_refuses_mismatches_and_unknowns(folded_onnx: tuple[Path, Path], tmp_path: Path) -> None:
    folded, onnx_path = folded_onnx
    with pytest.raises(InputFileError, match="is an ONNX model, which the torch backend cannot run; use --backend onnxruntime"):
        open_runner(onnx_path, backend="torch")
    with pytest.raises(InputFileError, match="is a PyTorch checkpoint, which the onnxruntime backend cannot run"):
        open_runner(folded, backend="onnxruntime")
    with pytest.raises(InputFileError, match="export trt"):
        open_runner(onnx_path, backend="tensorrt")
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tflite'; choose one of torch, onnxruntime, tensorrt"):
        open_runner(onnx_path, backend="tflite")
    odd = tmp_path / "model.weights"
    odd.write_bytes(b"x")
    with pytest.raises(InputFileError, match="cannot tell which runtime .* pass --backend"):
        open_runner(odd)


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
