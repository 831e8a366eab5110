"""OnnxRuntimeRunner: parity with torch on the folded network, float16 inputs, shape and file errors, unknown providers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maxq_deploy.core.errors import BackendUnavailableError, DataError, InputFileError
from maxq_deploy.runtimes import OnnxRuntimeRunner, Runner, TorchRunner, open_runner
from runtimes_fixtures import SIZE, batch, folded_onnx, fp16_pooling_graph


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
