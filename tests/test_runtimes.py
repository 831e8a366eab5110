"""Runners (torch, ONNX Runtime) and the choice of runtime for a model file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from maxq_deploy.core.errors import BackendUnavailableError, DataError, InputFileError, MaxQDeployError
from maxq_deploy.runtimes import OnnxRuntimeRunner, Runner, TorchRunner, open_runner

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


def test_torch_runner_runs_a_module_to_float32_numpy() -> None:
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    runner = TorchRunner(module, num_classes=5)
    assert isinstance(runner, Runner) and runner.name == "torch" and runner.device == "cpu"
    x = batch(3, 8)
    out = runner.run(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 5)
    np.testing.assert_allclose(out, module(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(TorchRunner(module, channels_last=True).run(x), out, rtol=1e-5, atol=1e-5)
    runner.close()


def test_torch_runner_refuses_cuda_where_there_is_none() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
        TorchRunner(nn.Identity(), device="cuda")


def test_onnxruntime_matches_torch_on_the_folded_network(folded_onnx: tuple[Path, Path]) -> None:
    folded, onnx_path = folded_onnx
    torch_runner, ort_runner = open_runner(folded), open_runner(onnx_path, threads=1)
    assert isinstance(torch_runner, TorchRunner) and torch_runner.model_kind == "folded-checkpoint"
    assert isinstance(ort_runner, OnnxRuntimeRunner) and isinstance(ort_runner, Runner)
    assert (ort_runner.name, ort_runner.device, ort_runner.input_name) == ("onnxruntime", "cpu", "input")
    assert ort_runner.num_classes == 10 and ort_runner.input_dtype == np.float32
    x = batch(5)
    ref, out = torch_runner.run(x), ort_runner.run(x)
    assert out.dtype == np.float32 and out.shape == (5, 10)
    assert float(np.abs(out - ref).max() / np.abs(ref).max()) < 1e-4
    if ort_runner.metadata:  # written by maxq_deploy.export.tensorrt_form
        assert ort_runner.input_shape == (3, SIZE, SIZE) and ort_runner.arch == "resnet18"
    ort_runner.close()
    torch_runner.close()


def test_onnxruntime_casts_to_a_float16_input_and_returns_float32(tmp_path: Path) -> None:
    runner = OnnxRuntimeRunner(fp16_pooling_graph(tmp_path / "fp16.onnx"), threads=1)
    assert runner.input_dtype == np.float16 and runner.input_shape == (3, 4, 4)
    x = batch(2, 4)
    out = runner.run(x)
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)), atol=2e-3)


def test_onnxruntime_wrong_input_shape_is_a_data_error(folded_onnx: tuple[Path, Path]) -> None:
    runner = open_runner(folded_onnx[1])
    if runner.input_shape[1] is None:
        pytest.skip("the fallback export has a dynamic spatial size")
    with pytest.raises(DataError, match=r"rejected a batch of shape \(1, 3, 16, 16\)"):
        runner.run(batch(1, 16))


def test_unreadable_onnx_is_an_input_file_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not a protobuf model")
    with pytest.raises(InputFileError, match="is not an ONNX model"):  # the one ONNX loader, before any runtime
        open_runner(bad)
    with pytest.raises(InputFileError, match="not found"):
        open_runner(tmp_path / "missing.onnx")


def test_unavailable_provider_is_named(folded_onnx: tuple[Path, Path]) -> None:
    with pytest.raises(BackendUnavailableError, match="NoSuchExecutionProvider"):
        OnnxRuntimeRunner(folded_onnx[1], providers=["NoSuchExecutionProvider"])


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


def test_importing_runtimes_loads_neither_onnxruntime_nor_tensorrt() -> None:
    code = (
        "import sys, maxq_deploy.runtimes, maxq_deploy.evaluate, maxq_deploy.data; "
        "print(sorted(m for m in ('onnxruntime', 'tensorrt') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
