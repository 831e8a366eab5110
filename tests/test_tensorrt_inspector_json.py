"""TensorRT 11 and INT8 for real (issue 18): inspector shapes, trtexec path, pinned timing caches, GPU facts.

Inspector JSON comes from tests/inspector_fixtures.py (the shapes NVIDIA documents for 10.x and
11.x, sources cited there); TensorRT itself is the fake of tests/trt_fake.py, built from the
recorded surface of each real release.
"""

from __future__ import annotations

import pytest

import inspector_fixtures as fx
from maxq_deploy.onnx_graph.layers import OnnxLayer
from maxq_deploy.tensorrt.report import build_engine_report, dtype_from_format, parse_inspector_json, tensor_dtype

SPARSE = ["layer1.0.convbn1", "layer1.0.convbn2"]


def onnx_layers() -> list[OnnxLayer]:
    return [
        OnnxLayer("layer1.0.convbn1", "conv", "layer1.0.convbn1.weight", [8, 8, 3, 3], kernel=[3, 3], in_channels=8,
                  out_channels=8, holds_2_4=True, input_quantized=True, output_quantized=True),
        OnnxLayer("layer1.0.convbn2", "conv", "layer1.0.convbn2.weight", [8, 8, 1, 1], kernel=[1, 1], in_channels=8,
                  out_channels=8, holds_2_4=True, input_quantized=True, output_quantized=False),
    ]


def _by_layer(report) -> dict:
    return {layer.checkpoint_layers[0]: layer for layer in report.layers}


# ------------------------------------------------------------------ 1. both inspector shapes


@pytest.mark.parametrize("version, schema", [("10.13.3", "10.x (Bindings)"), ("11.0.0", "11.x (I/O Tensors)"),
                                             ("11.4.0", "11.x (I/O Tensors)")])
def test_each_inspector_shape_gives_per_layer_int8_in_and_out(version: str, schema: str) -> None:
    report = build_engine_report(fx.inspector_json(version), engine="m.engine", onnx_layers=onnx_layers(),
                                 sparse_layers=SPARSE, graph_precision="int8", nm="2:4")
    layers = _by_layer(report)
    assert report.inspector_schema == schema
    assert (layers["layer1.0.convbn1"].input_dtype, layers["layer1.0.convbn1"].output_dtype) == ("int8", "int8")
    assert (layers["layer1.0.convbn2"].input_dtype, layers["layer1.0.convbn2"].output_dtype) == ("int8", "fp32")
    assert layers["layer1.0.convbn1"].sparse_tactic and not layers["layer1.0.convbn2"].sparse_tactic
    assert "output is fp32, not INT8: sparse INT8 kernels want INT8 in and out" in layers["layer1.0.convbn2"].reason
    assert not any(fx.DYNAMIC in note for note in report.notes)


def test_11x_split_fields_are_read_field_by_field() -> None:
    entry = fx.tensor("11", "t", [1, 8, 4, 4], "int8")
    assert set(entry) >= {"Format", "DataType"} and "Format/Datatype" not in entry
    assert tensor_dtype(entry) == "int8"
    # the guide's own I/O example: DataType "Float", format in ProfileInfo
    info = parse_inspector_json(fx.inspector_json("11.4.0"))
    assert [tensor_dtype(t) for t in info.io_tensors] == ["fp32", "fp32"]


def test_11x_without_context_keeps_data_types_and_says_where_they_came_from() -> None:
    data = fx.without_context(fx.inspector_json("11.4.0"), keep_datatype=True)
    report = build_engine_report(data, engine="m.engine", onnx_layers=onnx_layers(), sparse_layers=SPARSE,
                                 graph_precision="int8", nm="2:4")
    layers = _by_layer(report)
    assert (layers["layer1.0.convbn2"].input_dtype, layers["layer1.0.convbn2"].output_dtype) == ("int8", "fp32")
    note = next(n for n in report.notes if fx.DYNAMIC in n)
    assert "inspector's DataType fields" in note and "ONNX" not in note


@pytest.mark.parametrize("version", ["10.13.3", "11.4.0"])
def test_dynamic_formats_note_names_the_onnx_graph_only_when_one_was_read(version: str) -> None:
    data = fx.without_context(fx.inspector_json(version), keep_datatype=False)
    with_onnx = build_engine_report(data, engine="m.engine", onnx_layers=onnx_layers(), sparse_layers=SPARSE,
                                    graph_precision="int8", nm="2:4")
    assert any("comes from the ONNX graph's Q/DQ nodes" in n for n in with_onnx.notes)
    assert _by_layer(with_onnx)["layer1.0.convbn2"].output_dtype == "unknown"
    assert "output is float in the ONNX graph" in _by_layer(with_onnx)["layer1.0.convbn2"].reason
    alone = build_engine_report(data, engine="m.engine", sparse_build=True)  # e.g. trtexec's file, no ONNX
    notes = " | ".join(alone.notes)
    assert "ONNX graph's Q/DQ nodes" not in notes
    assert "no ONNX graph was read: INT8 in/out per layer is unknown" in notes


@pytest.mark.parametrize("text, dtype", [
    ("Row major linear UInt8 format", "uint8"), ("UInt8", "uint8"), ("Int8", "int8"), (fx.V10_INT8, "int8"),
    (fx.V11_INT8_FORMAT, "int8"), ("Row major linear FP32 format (kLINEAR)", "fp32"), ("Float", "fp32"),
    ("BFloat16", "bf16"), ("Half", "fp16"), ("Channel major FP16 format", "fp16"), (fx.DYNAMIC, "unknown"), (None, "unknown"),
])
def test_dtype_words(text, dtype: str) -> None:
    assert dtype_from_format(text) == dtype


@pytest.mark.parametrize("schema", ["10", "11"])
def test_uint8_tensors_are_not_int8(schema: str) -> None:
    layers = fx.qdq_layers(schema)
    conv1 = layers[1]
    conv1["Inputs"] = [fx.tensor(schema, "u8", [-1, 8, 16, 16], "uint8")]
    report = build_engine_report(fx.inspector_json("11.4.0" if schema == "11" else "10.8.0", layers), engine="m.engine",
                                 onnx_layers=onnx_layers(), sparse_layers=SPARSE, graph_precision="int8", nm="2:4")
    first = _by_layer(report)["layer1.0.convbn1"]
    assert first.input_dtype == "uint8"
