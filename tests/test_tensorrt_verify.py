"""verify MODEL.engine: the layer report (or trtexec layer info) says whether every expected sparse layer got sparse weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maxq_deploy.core.errors import MaxQDeployError
from maxq_deploy.tensorrt.report import report_path_for, save_engine_report

import inspector_fixtures as fx
from tensorrt_fixtures import inspector_10, inspector_11, no_tensorrt, run_cli, sample_layers, sample_report

# --------------------------------------------------------------------------------------------- ONNX facts


def _engine_with_report(tmp_path: Path, inspector: dict | None = None, **kwargs) -> Path:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"serialized engine bytes")
    save_engine_report(sample_report(engine, inspector, **kwargs), report_path_for(engine))
    return engine


def _all_eligible() -> dict:
    layers = sample_layers()
    for layer in layers:
        if layer["Name"] == "layer4.0.downsample":
            layer["HasSparseWeights"] = 1
    return inspector_10(layers)


def test_verify_engine_pass_and_fail(tmp_path: Path, run_cli, no_tensorrt) -> None:
    from maxq_deploy.verify import verify_artifact

    (tmp_path / "ok").mkdir()
    engine = _engine_with_report(tmp_path / "ok", _all_eligible())
    report = verify_artifact(engine)
    assert report.kind == "engine" and report.ok and report.verdict == "PASS: all 4 sparse layers hold 2:4"
    picked = next(l for l in report.layers if l.name == "layer1.0.convbn1")
    assert picked.holds and "sparse tactic picked" in picked.note and picked.dtype == "int8"
    assert any("not re-inspected" in n for n in report.notes) and any("eligible 4, sparse 1" in n for n in report.notes)
    result = run_cli("verify", engine, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True

    failing = _engine_with_report(tmp_path)  # layer4.0.downsample is not eligible
    report = verify_artifact(failing)
    assert not report.ok and [l.name for l in report.failing] == ["layer4.0.downsample"]
    assert "weights break 2:4" in report.failing[0].note
    result = run_cli("verify", failing)
    assert result.exit_code == 1 and "FAIL: 1 of 4 sparse layers break 2:4" in result.stdout


def test_verify_plan_suffix_and_dense_engine(tmp_path: Path, no_tensorrt) -> None:
    from maxq_deploy.verify import verify_artifact

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"engine")
    layers = sample_layers()
    for layer in layers:
        layer.pop("HasSparseWeights", None)
        layer.pop("ConvHasSparseWeights", None)
    save_engine_report(sample_report(plan, inspector_10(layers), sparse_build=False, sparsity_log_lines=[]), report_path_for(plan))
    report = verify_artifact(plan)
    assert not report.ok and len(report.failing) == 4 and any("built dense" in n for n in report.notes)


def test_verify_stale_report_without_tensorrt(tmp_path: Path, run_cli, no_tensorrt) -> None:
    engine = _engine_with_report(tmp_path, _all_eligible())
    engine.write_bytes(b"a different engine")
    result = run_cli("verify", engine)
    assert result.exit_code == 2 and "sha256 differs" in result.stderr and "Traceback" not in result.output


def test_verify_without_report_and_tensorrt_is_one_line(tmp_path: Path, run_cli, no_tensorrt) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine")
    result = run_cli("verify", engine)
    assert result.exit_code == 2 and result.stdout == ""
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "no layer report (model.engine.json)" in lines[0] and "TensorRT is not installed" in lines[0]
    assert "Traceback" not in result.output


def test_verify_reads_trtexec_layer_info(tmp_path: Path, no_tensorrt) -> None:
    from maxq_deploy.verify import verify_artifact

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine")
    (tmp_path / "model.engine.layers.json").write_text(json.dumps(inspector_11()))
    report = verify_artifact(engine)
    assert {l.name for l in report.expected} >= {"layer4.0.convbn1", "layer4.0.downsample"}
    assert any("trtexec" in n for n in report.notes)


def test_verify_engine_rejects_other_patterns(tmp_path: Path, no_tensorrt) -> None:
    from maxq_deploy.verify import verify_artifact

    with pytest.raises(MaxQDeployError, match="only the hardware pattern 2:4"):
        verify_artifact(_engine_with_report(tmp_path), pattern="1:4")


def _trtexec_engine(tmp_path, data: dict):
    import json

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"ENGINE-BYTES")
    (tmp_path / "model.engine.layers.json").write_text(json.dumps(data))
    return engine


def test_verify_trtexec_file_without_tensorrt_claims_no_onnx_source(tmp_path, monkeypatch) -> None:
    from maxq_deploy.runtimes import tensorrt_api as _trt
    from maxq_deploy.tensorrt.verify import load_report_for_engine

    monkeypatch.setattr(_trt, "import_tensorrt", lambda: (_ for _ in ()).throw(
        __import__("maxq_deploy.core.errors", fromlist=["x"]).BackendUnavailableError("TensorRT is not installed")))
    engine = _trtexec_engine(tmp_path, fx.without_context(fx.inspector_json("10.13.3")))  # an old --skipInference file
    report = load_report_for_engine(engine)
    notes = " | ".join(report.notes)
    assert "ONNX graph's Q/DQ nodes" not in notes
    assert "no ONNX graph was read" in notes and "not re-inspected (TensorRT/GPU not available here)" in notes
    assert report.graph_precision is None and report.onnx is None


@pytest.mark.parametrize("version", ["10.13.3", "11.4.0"])
def test_verify_trtexec_engine_is_reinspected_where_tensorrt_runs(tmp_path, monkeypatch, version: str) -> None:
    import sys

    from maxq_deploy.runtimes import tensorrt_api as _trt
    from maxq_deploy.tensorrt.verify import load_report_for_engine
    from trt_fake import fake_tensorrt

    trt = fake_tensorrt(version, fx.inspector_json(version))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(_trt, "require_cuda_gpu", lambda *a, **k: None)
    monkeypatch.setattr(_trt, "_SHARED", [])
    engine = _trtexec_engine(tmp_path, fx.without_context(fx.inspector_json(version), keep_datatype=False))
    report = load_report_for_engine(engine)
    assert trt.calls["inspected_with_shapes"] is True
    layer = next(l for l in report.layers if "layer1.0.convbn2" in l.trt_name)
    assert (layer.input_dtype, layer.output_dtype) == ("int8", "fp32")  # from the engine, not the N/A file
    notes = " | ".join(report.notes)
    assert f"re-inspected the engine with TensorRT {version}" in notes and "was not used" in notes
    assert "ONNX graph's Q/DQ nodes" not in notes and not any(fx.DYNAMIC in n for n in report.notes)
