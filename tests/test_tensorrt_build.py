"""TensorRT stage without TensorRT: flag plans, profiles, trtexec, inspector parsing, report, verify, CLI.

Inspector JSON samples are built here from the field names TensorRT documents (``Layers``,
``Name``, ``LayerType``, ``Inputs``/``Outputs`` with ``Format/Datatype``, ``TacticName``,
``HasSparseWeights``; ``Bindings`` in 10.x, ``I/O Tensors`` in 11.x). A small fake ``tensorrt``
module, written against the real Python API names, drives ``build_engine`` end to end.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from maxq_deploy.runtimes import tensorrt_api as _trt
from maxq_deploy.core.errors import EngineBuildError
from maxq_deploy.tensorrt.report import load_engine_report

import inspector_fixtures as fx
from tensorrt_fixtures import (
    DENSE_TACTIC,
    FP32_FMT,
    SPARSE_TACTIC,
    SPARSITY_LOG,
    _conv,
    _FakeDriver,
    _FakeRuntime,
    make_onnx,
    no_tensorrt,
    run_cli,
)

# --------------------------------------------------------------------------------------------- build (CLI, fake TensorRT)


def test_cli_build_without_tensorrt_is_one_line_and_writes_nothing(tmp_path: Path, run_cli, no_tensorrt) -> None:
    onnx_path = make_onnx(tmp_path / "m.onnx")
    engine = tmp_path / "m.engine"
    result = run_cli("export", "trt", onnx_path, "-o", engine)
    assert result.exit_code == 2 and result.stdout == ""
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert lines == ["error: TensorRT is not installed: pip install tensorrt (10.x or 11.x) on a machine with an NVIDIA GPU and driver"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def fake_tensorrt(version: str, inspector: dict, **kwargs) -> types.ModuleType:
    """The fake built from the real API surface of ``version`` (tests/trt_fake.py); its builds log SPARSITY_LOG."""
    from trt_fake import fake_tensorrt as surface_fake

    return surface_fake(version, {**inspector, "_sparsity_log": SPARSITY_LOG}, **kwargs)


def _tiny_inspector() -> dict:
    return {"Layers": [
        _conv("conv1 + /relu/Relu", 3, 8, 3, sparse=False, tactic=DENSE_TACTIC, weights="Float", in_fmt=FP32_FMT, out_fmt=FP32_FMT),
        _conv("layer1.0.convbn1.weight + layer1.0.convbn1 + /layer1/relu/Relu", 8, 8, 3, sparse=True, tactic=SPARSE_TACTIC),
        _conv("dw", 8, 8, 3, sparse=False, tactic=DENSE_TACTIC, groups=8),
        _conv("layer1.0.convbn2", 8, 8, 1, sparse=False, tactic=DENSE_TACTIC),
    ], "I/O Tensors": [{"Name": "input", "IOMode": "Input"}, {"Name": "output", "IOMode": "Output"}]}


@pytest.mark.parametrize("version, precision, flags, network_flags", [
    ("10.3.0", "int8", ["SPARSE_WEIGHTS", "INT8", "FP16"], 0),
    ("10.13.2", "int8", ["SPARSE_WEIGHTS"], 1 << 1),  # STRONGLY_TYPED is member 1 in the fake enum
    ("11.1.0", "fp32", ["SPARSE_WEIGHTS"], 0),
])
def test_build_engine_with_fake_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str, precision: str,
                                         flags: list, network_flags: int) -> None:
    from maxq_deploy.tensorrt.build import build_engine

    trt = fake_tensorrt(version, _tiny_inspector())
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(_trt, "require_cuda_gpu", lambda *a, **k: None)
    onnx_path = make_onnx(tmp_path / "m.onnx", qdq=precision == "int8")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old")
    result = build_engine(onnx_path, tmp_path / "m.engine", workspace_gib=0.5, timing_cache=cache, max_batch=4)
    assert trt.calls["flags"] == flags and trt.calls["network_flags"] == network_flags
    assert trt.calls["profile"] == ("input", (1, 3, 16, 16), (4, 3, 16, 16), (4, 3, 16, 16))
    assert trt.calls["workspace"] == ("WORKSPACE", 1 << 29) and trt.calls["verbosity"] == "DETAILED"
    assert (tmp_path / "m.engine").read_bytes() == b"ENGINE-BYTES" and cache.read_bytes() == b"old+new"
    report = load_engine_report(tmp_path / "m.engine.json")
    assert report.to_dict() == result.report.to_dict() and report.inspector_schema == "11.x (I/O Tensors)"
    assert report.sparsity_log_lines == SPARSITY_LOG and report.trt_version == version
    assert report.graph_precision == precision and report.sparse_layers == ["layer1.0.convbn1", "layer1.0.convbn2"]
    by_name = {l.checkpoint_layers[0]: l for l in report.layers}
    assert by_name["layer1.0.convbn1"].sparse_tactic and by_name["layer1.0.convbn1"].expected_sparse
    assert "weights break 2:4" in by_name["layer1.0.convbn2"].reason and not by_name["dw"].expected_sparse
    assert result.warnings == ["a warning"] and result.summary()["summary"] == "eligible 1, sparse 1"


def test_build_engine_parser_and_builder_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from maxq_deploy.tensorrt.build import build_engine

    monkeypatch.setattr(_trt, "require_cuda_gpu", lambda *a, **k: None)
    onnx_path = make_onnx(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.9.0", _tiny_inspector(), parse_ok=False))
    with pytest.raises(EngineBuildError, match=r"cannot parse .*m.onnx: layer1.0.convbn1: Unsupported operator FancyConv$"):
        build_engine(onnx_path, tmp_path / "m.engine")
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.9.0", _tiny_inspector(), build_ok=False))
    with pytest.raises(EngineBuildError, match="failed to build m.engine: out of workspace"):
        build_engine(onnx_path, tmp_path / "m.engine")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_cli_build_with_fake_tensorrt_renders_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.1.0", _tiny_inspector()))
    monkeypatch.setattr(_trt, "require_cuda_gpu", lambda *a, **k: None)
    onnx_path = make_onnx(tmp_path / "m.onnx")
    result = run_cli("export", "trt", onnx_path, "-o", tmp_path / "m.engine", "--min-batch", "2", "--opt-batch", "2", "--max-batch", "2")
    assert result.exit_code == 0, result.output
    assert "eligible 1, sparse 1" in result.stdout and "layer1.0.convbn1" in result.stdout
    data = json.loads(run_cli("export", "trt", onnx_path, "-o", tmp_path / "m.engine", "--dense", "--json").stdout)
    assert data["sparse_build"] is False and data["builder_flags"] == [] and data["profile"]["max_batch"] == 32
    bad = run_cli("export", "trt", onnx_path, "-o", tmp_path / "x.engine", "--min-batch", "8", "--max-batch", "4")
    assert bad.exit_code == 2 and "min <= opt <= max" in bad.stderr and not (tmp_path / "x.engine").exists()


@pytest.fixture
def fake_trt(monkeypatch):
    import sys

    from maxq_deploy.runtimes import tensorrt_api as _trt
    from trt_fake import fake_tensorrt

    monkeypatch.setattr(_trt, "require_cuda_gpu", lambda *a, **k: None)
    monkeypatch.setattr(_trt, "_SHARED", [])

    def put(version: str, gpu: dict | None = None):
        trt = fake_tensorrt(version, fx.inspector_json(version))
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(_trt, "gpu_identity", lambda: gpu)
        return trt

    return put


def _recorded():
    from trt_fake import recorded_versions

    return recorded_versions()


@pytest.mark.parametrize("version", _recorded())
def test_pinned_cache_sets_error_on_timing_cache_miss_per_release(tmp_path, fake_trt, version: str) -> None:
    from maxq_deploy.tensorrt.build import build_engine
    trt = fake_trt(version, {"name": "NVIDIA H200", "compute_capability": "9.0"})
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"this-gpu")
    result = build_engine(make_onnx(tmp_path / "m.onnx", qdq=True), tmp_path / "m.engine", timing_cache=cache,
                          pin_timing_cache=True)
    assert "ERROR_ON_TIMING_CACHE_MISS" in trt.calls["flags"]
    assert result.report.reproducibility["timing_cache"]["error_on_miss"] is True
    assert cache.read_bytes() == b"this-gpu"


def test_cache_refused_by_set_timing_cache_is_kept_and_this_gpus_goes_beside(tmp_path, fake_trt) -> None:
    from maxq_deploy.tensorrt.build import build_engine
    from trt_fake import REFUSED_CACHE

    trt = fake_trt("11.4.0", {"name": "NVIDIA H200", "compute_capability": "9.0"})
    onnx_path = make_onnx(tmp_path / "m.onnx", qdq=True)
    cache = tmp_path / "t.cache"
    cache.write_bytes(REFUSED_CACHE + b"-A100")
    first = build_engine(onnx_path, tmp_path / "m.engine", timing_cache=cache)
    beside = tmp_path / "t.NVIDIA-H200.trt11.4.0.cache"
    assert trt.calls["refused_caches"] == [REFUSED_CACHE + b"-A100"]  # set_timing_cache said False
    assert cache.read_bytes() == REFUSED_CACHE + b"-A100" and beside.read_bytes() == b"+new"
    record = first.report.reproducibility["timing_cache"]
    assert record["status"] == "mismatch" and record["written_to"] == str(beside)
    # the next build on this GPU reuses (and updates) its own cache beside the other one
    second = build_engine(onnx_path, tmp_path / "m2.engine", timing_cache=cache)
    assert any("reused and updated this GPU's cache beside it" in n for n in second.report.notes)
    assert beside.read_bytes() == b"+new+new" and cache.read_bytes() == REFUSED_CACHE + b"-A100"


def test_pinned_cache_refused_by_set_timing_cache_is_one_error_and_writes_nothing(tmp_path, fake_trt) -> None:
    from maxq_deploy.core.errors import EngineBuildError
    from maxq_deploy.tensorrt.build import build_engine
    from trt_fake import REFUSED_CACHE

    fake_trt("10.16.1", {"name": "NVIDIA H200", "compute_capability": "9.0"})
    cache = tmp_path / "t.cache"
    cache.write_bytes(REFUSED_CACHE)
    with pytest.raises(EngineBuildError, match="TensorRT rejected it"):
        build_engine(make_onnx(tmp_path / "m.onnx", qdq=True), tmp_path / "m.engine", timing_cache=cache, pin_timing_cache=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "t.cache"]


@pytest.mark.parametrize("version, strongly", [("10.8.0", False), ("11.4.0", True)])
def test_engine_report_names_the_float_regions(tmp_path, fake_trt, version: str, strongly: bool) -> None:
    import onnx

    from maxq_deploy.onnx_graph import meta as onnx_meta
    from maxq_deploy.tensorrt.build import build_engine
    fake_trt(version)
    onnx_path = make_onnx(tmp_path / "m.onnx", qdq=True)
    old = build_engine(onnx_path, tmp_path / "old.engine")
    assert old.report.reproducibility["float_regions"].startswith("fp32 (not recorded")
    model = onnx.load(str(onnx_path))
    onnx_meta.write_metadata(model, {onnx_meta.key("float_regions"): "fp16"})
    onnx.save(model, str(onnx_path))
    new = build_engine(onnx_path, tmp_path / "new.engine")
    assert new.report.reproducibility["float_regions"] == "fp16"
    note = next(n for n in new.report.notes if n.startswith("float regions of the Q/DQ graph: fp16"))
    assert ("strongly typed" in note) == strongly


def test_engine_report_records_cuda_versions_and_gpu_name_from_cuda(tmp_path, monkeypatch) -> None:
    import sys

    from maxq_deploy.runtimes import tensorrt_api as _trt
    from maxq_deploy.tensorrt.build import build_engine
    from trt_fake import fake_tensorrt

    monkeypatch.setattr(_trt, "require_cuda_gpu", lambda *a, **k: None)
    monkeypatch.setattr(_trt, "_SHARED", [])
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.4.0", fx.inspector_json("11.4.0")))
    libs = {_trt._CUDA_DRIVER_LIBS: (_FakeDriver(), "libcuda.so.1"), _trt._CUDA_RUNTIME_LIBS: (_FakeRuntime(), "libcudart.so.12")}
    monkeypatch.setattr(_trt, "_load_first", lambda names: libs[names])
    import torch

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: pytest.fail("the GPU name must not come from torch"))
    result = build_engine(make_onnx(tmp_path / "m.onnx", qdq=True), tmp_path / "m.engine")
    gpu = result.report.reproducibility["gpu"]
    assert (gpu["name"], gpu["compute_capability"], gpu["cuda_driver_version"], gpu["cuda_runtime_version"]) == \
        ("NVIDIA H200", "9.0", "13.0", "12.8")
    assert gpu["notes"] == []
