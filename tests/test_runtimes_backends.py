"""Backend specs and lists (openvino:f32, onnxruntime,openvino) and the (model, backend) pairs bench and eval run side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxq_deploy.core.errors import BackendUnavailableError, InputFileError, OptionError
from maxq_deploy.runtimes.backends import BackendSpec, backend_pairs, parse_backend, parse_backend_list


def test_parse_backend_specs() -> None:
    assert parse_backend("onnxruntime") == BackendSpec("onnxruntime")
    assert parse_backend(" ORT ") == BackendSpec("onnxruntime")
    assert parse_backend("ov:FP32") == BackendSpec("openvino", "f32")
    assert parse_backend("openvino:bf16").label == "openvino:bf16"
    assert parse_backend("openvino:default") == BackendSpec("openvino")  # the device default: plain openvino
    with pytest.raises(OptionError, match="precision 'int4' is not supported"):
        parse_backend("openvino:int4")
    with pytest.raises(OptionError, match="onnxruntime takes no option"):
        parse_backend("onnxruntime:f32")
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tflite'"):
        parse_backend("tflite")


def test_parse_backend_list_and_pairs(tmp_path: Path) -> None:
    specs = parse_backend_list("onnxruntime, openvino:f32,openvino")
    assert [s.label for s in specs] == ["onnxruntime", "openvino:f32", "openvino"]
    assert parse_backend_list(None) == [] and parse_backend_list(["ort", "ov"]) == [BackendSpec("onnxruntime"), BackendSpec("openvino")]
    with pytest.raises(OptionError, match="twice"):
        parse_backend_list("ort,onnxruntime")
    with pytest.raises(OptionError, match="empty entry"):
        parse_backend_list("ort,,openvino")
    pairs = backend_pairs([tmp_path / "a.onnx", tmp_path / "b.engine", tmp_path / "c.xml"], parse_backend_list("onnxruntime,openvino,tensorrt"))
    assert [(p.name, s.label) for p, s in pairs] == [
        ("a.onnx", "onnxruntime"), ("a.onnx", "openvino"), ("b.engine", "tensorrt"), ("c.xml", "openvino"),
    ]
    with pytest.raises(InputFileError, match="none of the backends onnxruntime, openvino runs m.pt"):
        backend_pairs([tmp_path / "m.pt"], parse_backend_list("onnxruntime,openvino"))


@pytest.mark.parametrize("text", [",", "", " , "])
def test_a_backend_list_naming_no_backend_is_refused(text: str) -> None:
    with pytest.raises(OptionError, match="names no backend"):
        parse_backend_list(text)
