"""The only door to tensorrt: a missing or unsupported TensorRT and missing GPUs are one-line errors; version parsing."""

from __future__ import annotations

import sys
import types

import pytest

from maxq_deploy.core.errors import BackendUnavailableError
from maxq_deploy.runtimes import tensorrt_api as _trt
from tensorrt_fixtures import _FakeDriver, no_tensorrt

# --------------------------------------------------------------------------------------------- import hygiene


def test_import_tensorrt_missing_is_one_line(no_tensorrt) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        _trt.import_tensorrt()
    message = str(info.value)
    assert message == "TensorRT is not installed: pip install tensorrt (10.x or 11.x) on a machine with an NVIDIA GPU and driver"
    assert "\n" not in message


def test_unsupported_tensorrt_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.1"))
    with pytest.raises(BackendUnavailableError, match="TensorRT 8.6.1 is not supported"):
        _trt.import_tensorrt()


def test_gpu_checks_have_their_own_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    with pytest.raises(BackendUnavailableError, match=r"no CUDA GPU is available \(torch.cuda.is_available\(\) is False\)"):
        _trt.require_cuda_gpu("running a TensorRT engine")
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(BackendUnavailableError, match="CPU-only"):
        _trt.require_cuda_gpu("running a TensorRT engine", need_torch_cuda=True)
    _trt.require_cuda_gpu("building", need_torch_cuda=False)  # builds let TensorRT itself find the GPU


@pytest.mark.parametrize("text, expected", [("10.12.0.36", (10, 12)), ("11.1.0", (11, 1)), ("10", (10, 0)), ("junk", (0, 0))])
def test_parse_version(text: str, expected: tuple[int, int]) -> None:
    assert _trt.parse_version(text) == expected


def test_cuda_facts_without_cuda_are_none_with_a_note(monkeypatch) -> None:
    from maxq_deploy.runtimes import tensorrt_api as _trt

    monkeypatch.setattr(_trt, "_load_first", lambda names: (None, None))
    facts = _trt.cuda_facts()
    assert facts["name"] is None and facts["cuda_driver_version"] is None and facts["cuda_runtime_version"] is None
    assert any("no CUDA driver library" in n for n in facts["notes"]) and any("libcudart" in n for n in facts["notes"])
    monkeypatch.setattr(_trt, "_load_first", lambda names: (_FakeDriver(), "libcuda.so.1") if "libcuda.so.1" in names else (None, None))
    other = _trt.cuda_facts(device=3)
    assert other["name"] is None and other["cuda_driver_version"] == "13.0" and any("no CUDA device 3" in n for n in other["notes"])
