"""The engine layer report: log lines fill missing fields, the shape rule without a checkpoint list, missing layers, explanations, JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maxq_deploy.core.errors import InputFileError
from maxq_deploy.tensorrt.report import (
    build_engine_report,
    explain_sparsity,
    layer_name_tokens,
    load_engine_report,
    map_to_checkpoint_layers,
    parse_inspector_json,
    parse_sparsity_log,
    report_path_for,
    save_engine_report,
)
from tensorrt_fixtures import SPARSE_LAYERS, SPARSITY_LOG, inspector_10, inspector_11, onnx_layers, sample_layers, sample_report

# --------------------------------------------------------------------------------------------- ONNX facts


def test_log_lines_fill_in_for_missing_fields() -> None:
    # Layers without HasSparseWeights/TacticName (e.g. a newer schema): the build log still says.
    layers = [{k: v for k, v in layer.items() if k not in ("HasSparseWeights", "TacticName")} for layer in sample_layers()]
    report = build_engine_report({"Layers": layers}, engine="m.engine", onnx_layers=onnx_layers(), sparse_layers=SPARSE_LAYERS,
                                 sparsity_log_lines=SPARSITY_LOG, graph_precision="int8")
    assert report.summary_line() == "eligible 3, sparse 1" and report.inspector_schema == "unknown"


def test_report_without_checkpoint_list_falls_back_to_shape_rule() -> None:
    report = build_engine_report(inspector_10(), engine="m.engine", graph_precision="int8")
    expected = {l.trt_name for l in report.expected}
    assert "layer4.0.convbn1" in expected and not any(name.startswith("conv1") for name in expected)
    assert any("no checkpoint sparse-layer list" in n for n in report.notes)


def test_missing_layers_are_reported() -> None:
    layers = [l for l in sample_layers() if l["Name"] != "layer4.0.convbn1"]
    report = build_engine_report({"Layers": layers}, engine="m.engine", onnx_layers=onnx_layers(), sparse_layers=SPARSE_LAYERS)
    assert report.missing_layers == ["layer4.0.convbn1"] and report.totals()["missing_layers"] == 1


@pytest.mark.parametrize("kwargs, expected", [
    (dict(groups=64, in_channels=64), "depthwise conv: never sparse"),
    (dict(groups=4, in_channels=64), "grouped (groups=4) conv: never sparse"),
    (dict(in_channels=3, kernel=[7, 7]), "C=3 is not a multiple of 4"),
    (dict(eligible=True, kernel=[7, 7]), "kernel 7x7: sparse kernels mostly help 1x1 and 3x3"),
    (dict(eligible=True, input_dtype="fp16"), "input is fp16, not INT8"),
    (dict(eligible=True, graph_precision="fp32", precision="fp32", input_dtype="fp32", output_dtype="fp32"), "FP32/TF32 layer"),
    (dict(eligible=True), "the dense tactic was faster"),
    (dict(eligible=True, sparse_build=False), "engine built dense (--dense)"),
    (dict(eligible=True, sparse_tactic=True), ""),
])
def test_explain_sparsity(kwargs: dict, expected: str) -> None:
    args = dict(eligible=False, sparse_tactic=False, sparse_build=True, in_channels=512, out_channels=512, groups=1,
                kernel=[3, 3], holds_2_4=True, violating_groups=0, input_dtype="int8", output_dtype="int8",
                precision="int8", graph_precision="int8")
    args.update(kwargs)
    reason = explain_sparsity(**args)
    assert (expected in reason) if expected else reason == ""


def test_report_json_round_trip(tmp_path: Path) -> None:
    report = sample_report(tmp_path / "m.engine")
    path = save_engine_report(report, report_path_for(tmp_path / "m.engine"))
    assert path.name == "m.engine.json"
    loaded = load_engine_report(path)
    assert loaded.to_dict() == report.to_dict()
    assert json.loads(path.read_text())["summary"] == "eligible 3, sparse 1"
    path.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(InputFileError, match="not a maxq-deploy engine report"):
        load_engine_report(path)


def test_layer_name_mapping() -> None:
    known = {"layer1.0.convbn1", "layer1.0.convbn10", "layer1.0.convbn2", "fc"}
    assert map_to_checkpoint_layers("layer1.0.convbn1 + /layer1/layer1.0/relu/Relu", known) == ["layer1.0.convbn1"]
    assert map_to_checkpoint_layers("layer1.0.convbn1.weight + QuantizeLinear_20 + Conv_22", known) == ["layer1.0.convbn1"]
    assert map_to_checkpoint_layers("/layer1.0/convbn1/input_quantizer/QuantizeLinear", known) == []
    assert map_to_checkpoint_layers("layer1.0.convbn10", known) == ["layer1.0.convbn10"]
    assert map_to_checkpoint_layers("{ForeignNode[layer1.0.convbn1...layer1.0.convbn2]}", known) == ["layer1.0.convbn1", "layer1.0.convbn2"]
    assert map_to_checkpoint_layers("PWN(fc || layer1.0.convbn2)", known) == ["fc", "layer1.0.convbn2"]
    assert map_to_checkpoint_layers("onnx::Conv_123 + /relu/Relu", {"onnx::Conv_123": "conv1"}) == ["conv1"]
    assert layer_name_tokens("a + b, c") == ["a", "b", "c"]


def test_parse_sparsity_log() -> None:
    lines = ["[03/01/2025-10:00:00] [I] [TRT] " + SPARSITY_LOG[0], SPARSITY_LOG[1],
             "(Sparsity) TRT inference plan picked sparse implementation for layers:"]
    eligible, picked = parse_sparsity_log(lines)
    assert len(eligible) == 3 and eligible[2] == "layer4.0.convbn1" and eligible[1].startswith("layer1.0.convbn2 + ")
    assert picked == [eligible[0]]
    assert parse_sparsity_log(["(Sparsity) Layers eligible for sparse math:"]) == ([], [])


@pytest.mark.parametrize("make, schema", [(inspector_10, "10.x (Bindings)"), (inspector_11, "11.x (I/O Tensors)")])
def test_parse_inspector_both_versions(make, schema: str) -> None:
    info = parse_inspector_json(json.dumps(make()))
    assert info.schema == schema and [t["Name"] for t in info.io_tensors] == ["input", "output"]
    if schema.startswith("11"):
        assert info.io_tensors[0]["IOMode"] == "Input"
    report = build_engine_report(make(), engine="m.engine", onnx_layers=onnx_layers(), sparse_layers=SPARSE_LAYERS,
                                 sparse_build=True, graph_precision="int8", nm="2:4")
    by_layer = {tuple(l.checkpoint_layers): l for l in report.layers}
    assert set(by_layer) == {("conv1",), ("layer1.0.convbn1",), ("layer1.0.convbn2",), ("layer4.0.convbn1",),
                             ("layer4.0.downsample",), ("fc",)}  # reformat and pooling layers are left out
    picked = by_layer[("layer1.0.convbn1",)]
    assert picked.eligible and picked.sparse_tactic and picked.precision == "int8" and picked.reason == ""
    assert by_layer[("conv1",)].layer_type == "ConvActPool" and not by_layer[("conv1",)].expected_sparse
    assert by_layer[("conv1",)].kernel == [7, 7]
    small = by_layer[("layer1.0.convbn2",)]
    assert small.eligible and not small.sparse_tactic and "small channels (C=64, K=64, 3x3)" in small.reason
    fp16_out = by_layer[("layer4.0.convbn1",)]
    assert "output is fp16, not INT8" in fp16_out.reason and "small channels" not in fp16_out.reason
    broken = by_layer[("layer4.0.downsample",)]
    assert not broken.eligible and "weights break 2:4 in 12 groups" in broken.reason
    assert by_layer[("fc",)].op == "gemm" and not by_layer[("fc",)].expected_sparse
    assert report.summary_line() == "eligible 3, sparse 1"
    assert report.totals()["expected_sparse"] == 4 and report.missing_layers == []


def test_names_only_inspector_json_is_a_clear_error() -> None:
    with pytest.raises(InputFileError, match="built without detailed profiling"):
        parse_inspector_json({"Layers": ["conv1 + /relu/Relu", "layer1.0.convbn1"], "Bindings": ["input", "output"]})
    with pytest.raises(InputFileError, match="no 'Layers' list"):
        parse_inspector_json({"Bindings": []})
    with pytest.raises(InputFileError, match="not JSON"):
        parse_inspector_json("{not json")
