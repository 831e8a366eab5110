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


# ------------------------------------------------------------------ 2. the trtexec path


def test_trtexec_layer_info_run_has_an_execution_context() -> None:
    from maxq_deploy.tensorrt.flags import choose_builder_flags, known_flag_names
    from maxq_deploy.tensorrt.profiles import ProfileShapes
    from maxq_deploy.tensorrt.trtexec import trtexec_command

    for version in ("10.8", "11"):
        cmd = trtexec_command("m.onnx", "m.engine", choose_builder_flags(version, known_flag_names(version), "int8"),
                              ProfileShapes("input", 1, 8, 32, (3, 16, 16)))
        assert "--skipInference" not in cmd.argv
        assert {"--iterations=1", "--warmUp=0", "--duration=0", "--exportLayerInfo=m.engine.layers.json"} <= set(cmd.argv)
        assert any("no --skipInference" in n for n in cmd.notes)


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


# ------------------------------------------------------------------ 3. --pin-timing-cache


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
    from test_tensorrt_build import make_onnx

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
    from test_tensorrt_build import make_onnx
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
    from test_tensorrt_build import make_onnx
    from trt_fake import REFUSED_CACHE

    fake_trt("10.16.1", {"name": "NVIDIA H200", "compute_capability": "9.0"})
    cache = tmp_path / "t.cache"
    cache.write_bytes(REFUSED_CACHE)
    with pytest.raises(EngineBuildError, match="TensorRT rejected it"):
        build_engine(make_onnx(tmp_path / "m.onnx", qdq=True), tmp_path / "m.engine", timing_cache=cache, pin_timing_cache=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "t.cache"]


# ------------------------------------------------------------------ 5. float regions of the Q/DQ graph


@pytest.mark.parametrize("version, strongly", [("10.8.0", False), ("11.4.0", True)])
def test_engine_report_names_the_float_regions(tmp_path, fake_trt, version: str, strongly: bool) -> None:
    import onnx

    from maxq_deploy.onnx_graph import meta as onnx_meta
    from maxq_deploy.tensorrt.build import build_engine
    from test_tensorrt_build import make_onnx

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


def test_float_regions_option_is_checked_before_any_work(tmp_path) -> None:
    from maxq_deploy.core.errors import OptionError
    from maxq_deploy.export import export_model
    from maxq_deploy.export.tensorrt_form import ExportOptions

    with pytest.raises(OptionError, match="--float-regions must be fp16 or fp32, got 'fp8'"):
        ExportOptions(float_regions="fp8")
    with pytest.raises(OptionError, match="--float-regions applies to INT8 Q/DQ graphs, not a fp32 export"):
        ExportOptions(float_regions="fp16").resolve_float_regions("fp32")
    with pytest.raises(OptionError, match="--float-regions does not apply to --target onnxruntime"):
        export_model(tmp_path / "x.pt", tmp_path / "x.onnx", "onnxruntime", float_regions="fp16")


@pytest.mark.parametrize("installed, expected", [(None, "fp32"), ("11.0.0.114", "fp16"), ("10.13.3.9", "fp16"),
                                                 ("10.8.0.43", "fp32")])
def test_float_regions_default_follows_the_installed_release(monkeypatch, installed, expected: str) -> None:
    from maxq_deploy.export.tensorrt_form import ExportOptions
    from maxq_deploy.runtimes import tensorrt_api as _trt

    monkeypatch.setattr(_trt, "installed_tensorrt_version", lambda: installed)
    regions, why = ExportOptions().resolve_float_regions("int8")
    assert regions == expected and why


@pytest.mark.slow
def test_int8_export_with_fp16_float_regions_is_parity_checked(tmp_path, monkeypatch) -> None:
    pytest.importorskip("pytorch_quantization")
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.quantize import quantize_ptq
    from maxq_deploy.reference import make_checkpoint, save_checkpoint
    from maxq_deploy.reference.train import save_digits_npz
    from maxq_deploy.runtimes import tensorrt_api as _trt

    monkeypatch.setattr(_trt, "installed_tensorrt_version", lambda: "11.4.0")  # a strongly typed release: fp16 by default
    train, _test = save_digits_npz(tmp_path, 32)
    save_checkpoint(make_checkpoint("resnet18", "2:4", num_classes=10, seed=0), tmp_path / "r.pth.tar")
    fold_checkpoint(tmp_path / "r.pth.tar", tmp_path / "r.folded.pt")
    quantize_ptq(tmp_path / "r.folded.pt", tmp_path / "r.q.pt", train, calibrator="max", calib_batches=2, batch_size=16, workers=0)
    result = export_onnx(tmp_path / "r.q.pt", tmp_path / "int8.onnx", input_size=32)  # default: fp16 float regions
    assert result.parity.passed and result.opset == 19 and result.io_dtype == "float32"
    assert any("float regions of the Q/DQ graph: fp16" in n for n in result.notes)
    model = onnx.load(str(tmp_path / "int8.onnx"))
    graph = model.graph
    assert [i.type.tensor_type.elem_type for i in (*graph.input, *graph.output)] == [TensorProto.FLOAT, TensorProto.FLOAT]
    inits = {i.name: i for i in graph.initializer}
    inits.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
    assert not any(i.data_type == TensorProto.FLOAT for i in inits.values())
    dq_scales = [inits[n.input[1]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits]
    assert dq_scales and all(s.data_type == TensorProto.FLOAT16 for s in dq_scales)
    weights = [inits[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weights and all(w.data_type == TensorProto.INT8 for w in weights)  # the INT8 values are untouched
    assert (graph.node[0].op_type, graph.node[-1].op_type) == ("Cast", "Cast")
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["maxq_deploy.float_regions"] == "fp16" and meta["maxq_deploy.precision"] == "int8"
    assert np.isfinite(numpy_helper.to_array(dq_scales[0]).astype(np.float32)).all()


# ------------------------------------------------------------------ 6. CUDA facts from CUDA, not torch


class _FakeDriver:
    """libcuda's calls as ctypes makes them (out-parameters through byref)."""

    def cuInit(self, flags):
        return 0

    def cuDriverGetVersion(self, ref):
        ref._obj.value = 13000
        return 0

    def cuDeviceGet(self, ref, index):
        ref._obj.value = index
        return 0 if index == 0 else 101  # CUDA_ERROR_INVALID_DEVICE

    def cuDeviceGetName(self, buf, size, handle):
        buf.value = b"NVIDIA H200"
        return 0

    def cuDeviceGetAttribute(self, ref, attribute, handle):
        ref._obj.value = {75: 9, 76: 0}[attribute]
        return 0


class _FakeRuntime:
    def cudaRuntimeGetVersion(self, ref):
        ref._obj.value = 12080
        return 0


def test_engine_report_records_cuda_versions_and_gpu_name_from_cuda(tmp_path, monkeypatch) -> None:
    import sys

    from maxq_deploy.runtimes import tensorrt_api as _trt
    from maxq_deploy.tensorrt.build import build_engine
    from test_tensorrt_build import make_onnx
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


def test_cuda_facts_without_cuda_are_none_with_a_note(monkeypatch) -> None:
    from maxq_deploy.runtimes import tensorrt_api as _trt

    monkeypatch.setattr(_trt, "_load_first", lambda names: (None, None))
    facts = _trt.cuda_facts()
    assert facts["name"] is None and facts["cuda_driver_version"] is None and facts["cuda_runtime_version"] is None
    assert any("no CUDA driver library" in n for n in facts["notes"]) and any("libcudart" in n for n in facts["notes"])
    monkeypatch.setattr(_trt, "_load_first", lambda names: (_FakeDriver(), "libcuda.so.1") if "libcuda.so.1" in names else (None, None))
    other = _trt.cuda_facts(device=3)
    assert other["name"] is None and other["cuda_driver_version"] == "13.0" and any("no CUDA device 3" in n for n in other["notes"])


def test_default_fp16_float_regions_fall_back_to_fp32_when_parity_fails(tmp_path, monkeypatch) -> None:
    """The default never makes an export fail that the fp32 form passes: the fallback is written and said."""
    import onnx

    from maxq_deploy.export import tensorrt_form
    from maxq_deploy.export.tensorrt_form import ExportOptions, _ExportJob

    class Parity:
        def __init__(self, passed: bool) -> None:
            self.passed = passed

        def describe(self) -> str:
            return "relative error 0.3 (> tolerance 0.1)"

    job = _ExportJob(tmp_path / "q.pt", tmp_path / "q.onnx", ExportOptions())
    job.precision, job.options.input_size = "int8", 16
    job.loaded = __import__("types").SimpleNamespace(module=None)
    fp32_model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    fp16_model = onnx.helper.make_model(onnx.helper.make_graph([], "g16", [], []))
    job.model, job.float_regions, job.fallback = fp16_model, "fp16", (fp32_model, ["before"])
    results = iter([Parity(False), Parity(True)])
    monkeypatch.setattr(tensorrt_form, "check_parity", lambda *a, **k: next(results))
    monkeypatch.setattr(job, "_seal", lambda: None)
    job.write_checked()
    assert job.model is fp32_model and job.float_regions == "fp32" and job.fallback is None
    assert job.notes[0] == "before" and "the default fp16 form failed the parity check" in job.notes[-1]
    assert onnx.load(str(tmp_path / "q.onnx")).graph.name == "g"
