"""Five TensorRT behaviours a review against the real API found, each driven through real-shaped data.

Inspector JSON here follows what TensorRT 10.x writes (NVIDIA's trt-engine-explorer examples
of a Q/DQ ResNet on A100: ``Reformat`` layers with ``"Origin": "QDQ"``, fused names
``"<layer>.weight + QuantizeLinear_N + Conv_N + Add_N + Relu_N"``, the last conv with an
``i8f32`` tactic and a "Row major linear FP32" output; reformat layers named "Reformatting
CopyNode for Input Tensor 1 to <conv> + ..."), and the ``I/O Tensors`` form of 11.x. The fake
``tensorrt`` module (tests/trt_fake.py) is built from the real API surface of each version.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from maxq_deploy.runtimes import tensorrt_api as _trt
from maxq_deploy.onnx_graph.layers import OnnxLayer
from maxq_deploy.tensorrt.report import build_engine_report, load_engine_report, save_engine_report

import inspector_fixtures  # noqa: E402
from tensorrt_fixtures import INT8_FMT, FP32_FMT, SPARSITY_LOG, make_onnx  # noqa: E402
from trt_fake import DYNAMIC_FORMAT, FOREIGN_CACHE, LOGGER_DIFFERS, fake_tensorrt  # noqa: E402

SPARSE_I8 = "sm80_xmma_fprop_sparse_conv_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32_nchw_vect_c_32_tilesize128x128x64"
DENSE_I8F32 = ("sm80_xmma_fprop_implicit_gemm_interleaved_i8f32_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32_nchw_"
               "tilesize128x64x64_stage4_warpsize2x2x1_g1_tensor16x8x32_t1r3s3_alignc4_nchw")
#: The fused name TensorRT gives the last conv of the Q/DQ graph (weight, its DequantizeLinear, conv, Add, ReLU).
CONV2 = ("layer1.0.convbn2.weight + /layer1.0/convbn2/weight_quantizer/DequantizeLinear + layer1.0.convbn2 + "
         "/layer1/layer1.0/Add + /layer1/layer1.0/relu_1/Relu")
VERSIONS = ["10.8.0", "10.13.3", "11.0.0", "11.4.0"]


def _t(name: str, dims: list[int], fmt: str) -> dict:
    return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": fmt}


def qdq_engine_layers() -> list[dict]:
    """The tiny Q/DQ graph of make_onnx(qdq=True) as TensorRT 10.x prints it (detailed, shapes set)."""
    return [
        {"Name": "/layer1.0/convbn1/input_quantizer/QuantizeLinear", "LayerType": "Reformat", "ParameterType": "Reformat",
         "Origin": "QDQ", "Inputs": [_t("r1", [-1, 8, 16, 16], FP32_FMT)], "Outputs": [_t("r1_q", [-1, 8, 16, 16], INT8_FMT)],
         "TacticValue": "0x00000000000003ea"},
        {"Name": "layer1.0.convbn1.weight + /layer1.0/convbn1/weight_quantizer/DequantizeLinear + layer1.0.convbn1 + /layer1/relu/Relu",
         "LayerType": "CaskConvolution", "ParameterType": "Convolution",
         "Inputs": [_t("r1_q", [-1, 8, 16, 16], INT8_FMT)], "Outputs": [_t("r2_q", [-1, 8, 16, 16], INT8_FMT)],
         "Kernel": [3, 3], "OutMaps": 8, "Groups": 1, "Weights": {"Type": "Int8", "Count": 576},
         "Bias": {"Type": "Float", "Count": 8}, "HasSparseWeights": 1, "HasBias": 1, "HasReLU": 1,
         "TacticName": SPARSE_I8, "TacticValue": "0x1"},
        # the residual input of the next conv is reformatted: its fused name contains that conv's name
        {"Name": "Reformatting CopyNode for Input Tensor 1 to " + CONV2,
         "LayerType": "Reformat", "ParameterType": "Reformat", "Origin": "REFORMAT",
         "Inputs": [_t("r2_q", [-1, 8, 16, 16], INT8_FMT)],
         "Outputs": [_t("Reformatted Input Tensor 1 to " + CONV2, [-1, 8, 16, 16], FP32_FMT)],
         "TacticValue": "0x0000000000000000"},
        {"Name": CONV2, "LayerType": "CaskConvolution",
         "ParameterType": "Convolution", "Inputs": [_t("c3", [-1, 8, 16, 16], INT8_FMT)],
         "Outputs": [_t("c4", [-1, 8, 16, 16], FP32_FMT)], "Kernel": [1, 1], "OutMaps": 8, "Groups": 1,
         "Weights": {"Type": "Int8", "Count": 64}, "HasSparseWeights": 1, "HasBias": 1, "HasReLU": 1,
         "TacticName": DENSE_I8F32, "TacticValue": "0x8e570d33939edbf3"},
        {"Name": "/avgpool/GlobalAveragePool", "LayerType": "CaskPooling", "ParameterType": "Pooling",
         "Inputs": [_t("c4", [-1, 8, 16, 16], FP32_FMT)], "Outputs": [_t("p", [-1, 8, 1, 1], FP32_FMT)], "TacticValue": "0x3"},
    ]


def inspector(version: str, layers: list[dict] | None = None) -> dict:
    """The engine information ``version`` prints: 11.x splits each tensor's Format and DataType (tests/inspector_fixtures.py)."""
    if version.startswith("11"):
        data = inspector_fixtures.inspector_json(version, layers)
    else:
        data = {"Layers": qdq_engine_layers() if layers is None else layers, "Bindings": ["input", "output"]}
    return {**data, "_sparsity_log": SPARSITY_LOG[:1]}


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(_trt, "require_cuda_gpu", lambda *a, **k: None)
    monkeypatch.setattr(_trt, "_SHARED", [], raising=False)  # a fresh process as far as the shared logger goes

    def put(trt):
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        return trt

    return put


# ------------------------------------------------------------------ 1. inspector without shapes


@pytest.mark.parametrize("version", VERSIONS)
def test_inspector_sees_real_formats_of_a_dynamic_batch_engine(tmp_path: Path, install, version: str) -> None:
    from maxq_deploy.tensorrt.build import build_engine

    trt = install(fake_tensorrt(version, inspector(version)))
    onnx_path = make_onnx(tmp_path / "m.onnx", qdq=True)  # dynamic batch, like the default export
    result = build_engine(onnx_path, tmp_path / "m.engine", max_batch=8)
    assert trt.calls["inspected_with_shapes"] is True
    by_name = {layer.checkpoint_layers[0]: layer for layer in result.report.layers}
    last = by_name["layer1.0.convbn2"]
    assert (last.input_dtype, last.output_dtype) == ("int8", "fp32")
    assert "output is fp32, not INT8: sparse INT8 kernels want INT8 in and out" in last.reason
    assert (by_name["layer1.0.convbn1"].input_dtype, by_name["layer1.0.convbn1"].output_dtype) == ("int8", "int8")
    assert not any(DYNAMIC_FORMAT in note for note in result.report.notes)


def test_formats_unknown_fall_back_to_the_onnx_q_dq_facts() -> None:
    layers = qdq_engine_layers()
    for layer in layers:
        for tensor in layer.get("Inputs", []) + layer.get("Outputs", []):
            tensor["Format/Datatype"] = DYNAMIC_FORMAT  # what an inspector without a context prints
    onnx_layers = [
        OnnxLayer("layer1.0.convbn1", "conv", "layer1.0.convbn1.weight", [8, 8, 3, 3], kernel=[3, 3], in_channels=8,
                  out_channels=8, holds_2_4=True, input_quantized=True, output_quantized=True),
        OnnxLayer("layer1.0.convbn2", "conv", "layer1.0.convbn2.weight", [8, 8, 1, 1], kernel=[1, 1], in_channels=8,
                  out_channels=8, holds_2_4=True, input_quantized=True, output_quantized=False),
    ]
    report = build_engine_report({"Layers": layers, "Bindings": ["input", "output"]}, engine="m.engine", onnx_layers=onnx_layers,
                                 sparse_layers=["layer1.0.convbn1", "layer1.0.convbn2"], graph_precision="int8", nm="2:4")
    last = next(l for l in report.layers if l.checkpoint_layers == ["layer1.0.convbn2"])
    assert last.output_dtype == "unknown"
    assert "output is float in the ONNX graph (no QuantizeLinear after it)" in last.reason
    assert any(DYNAMIC_FORMAT in note for note in report.notes)


# ------------------------------------------------------------------ 2. null timing cache


@pytest.mark.parametrize("version", ["10.8.0", "11.4.0"])
def test_timing_cache_of_another_gpu_is_rebuilt_and_reported(tmp_path: Path, install, version: str) -> None:
    from maxq_deploy.tensorrt.build import build_engine

    trt = install(fake_tensorrt(version, inspector(version)))
    onnx_path = make_onnx(tmp_path / "m.onnx", qdq=True)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(FOREIGN_CACHE + b"...")
    result = build_engine(onnx_path, tmp_path / "m.engine", timing_cache=cache)
    assert trt.calls["timing_caches"] == [FOREIGN_CACHE + b"...", b""]  # rejected (null), then a fresh one
    record = result.report.reproducibility["timing_cache"]
    assert record["status"] == "mismatch" and record["sha256_out"] and record["sha256_in"] != record["sha256_out"]
    assert any("made by another TensorRT version or GPU" in note for note in result.report.notes)
    assert cache.read_bytes() == FOREIGN_CACHE + b"..."  # the other GPU's cache is never overwritten
    beside = tmp_path / f"timing.unknown-GPU.trt{version}.cache"  # no GPU identity here: named so
    assert record["written_to"] == str(beside) and beside.read_bytes() == b"+new"


def test_pinned_timing_cache_mismatch_is_one_error_line(tmp_path: Path, install) -> None:
    from typer.testing import CliRunner

    from maxq_deploy.cli.app import app

    install(fake_tensorrt("11.4.0", inspector("11.4.0")))
    onnx_path = make_onnx(tmp_path / "m.onnx", qdq=True)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(FOREIGN_CACHE)
    result = CliRunner().invoke(app, ["export", "trt", str(onnx_path), "-o", str(tmp_path / "m.engine"),
                                      "--timing-cache", str(cache), "--pin-timing-cache", "--json"])
    assert result.exit_code != 0
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: timing cache") and "rejected it" in lines[0]
    assert cache.read_bytes() == FOREIGN_CACHE and not (tmp_path / "m.engine").exists()


def test_pinned_timing_cache_is_reused_and_never_rewritten(tmp_path: Path, install) -> None:
    from maxq_deploy.tensorrt.build import build_engine

    trt = install(fake_tensorrt("10.13.3", inspector("10.13.3")))
    onnx_path = make_onnx(tmp_path / "m.onnx", qdq=True)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"pinned-cache-of-this-gpu")
    result = build_engine(onnx_path, tmp_path / "m.engine", timing_cache=cache, pin_timing_cache=True)
    record = result.report.reproducibility["timing_cache"]
    assert record["status"] == "reused" and record["pinned"] and record["sha256_out"] is None
    assert cache.read_bytes() == b"pinned-cache-of-this-gpu" and trt.calls["timing_caches"] == [b"pinned-cache-of-this-gpu"]
    repro = load_engine_report(tmp_path / "m.engine.json").reproducibility
    assert repro["trt_version"] == "10.13.3" and repro["builder_flags"] == ["SPARSE_WEIGHTS", "ERROR_ON_TIMING_CACHE_MISS"]
    assert trt.calls["flags"] == ["SPARSE_WEIGHTS", "ERROR_ON_TIMING_CACHE_MISS"] and record["error_on_miss"] is True
    assert repro["network_flags"] == ["STRONGLY_TYPED"] and len(repro["onnx_sha256"]) == 64 and "gpu" in repro


# ------------------------------------------------------------------ 3. fused reformat names


@pytest.mark.parametrize("version", ["10.8.0", "11.4.0"])
def test_reformat_layers_do_not_map_to_convs(tmp_path: Path, version: str) -> None:
    from typer.testing import CliRunner

    from maxq_deploy.cli.app import app

    layers = qdq_engine_layers()
    layers[3]["TacticName"] = SPARSE_I8  # both convs eligible: the engine should pass verify
    onnx_layers = [
        OnnxLayer("layer1.0.convbn1", "conv", "layer1.0.convbn1.weight", [8, 8, 3, 3], kernel=[3, 3], in_channels=8,
                  out_channels=8, holds_2_4=True),
        OnnxLayer("layer1.0.convbn2", "conv", "layer1.0.convbn2.weight", [8, 8, 1, 1], kernel=[1, 1], in_channels=8,
                  out_channels=8, holds_2_4=True),
    ]
    data = inspector(version, layers)
    data.pop("_sparsity_log")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"ENGINE")
    from maxq_deploy.core.files import sha256_file

    report = build_engine_report(data, engine=str(engine), onnx_layers=onnx_layers, graph_precision="int8", nm="2:4",
                                 sparse_layers=["layer1.0.convbn1", "layer1.0.convbn2"], engine_sha256=sha256_file(engine))
    assert [l.checkpoint_layers for l in report.layers] == [["layer1.0.convbn1"], ["layer1.0.convbn2"]]
    assert report.totals()["conv_gemm_layers"] == 2 and report.totals()["expected_sparse"] == 2
    assert report.totals()["expected_eligible"] == 2
    save_engine_report(report, tmp_path / "m.engine.json")
    import maxq_deploy.tensorrt.verify as tv

    original = tv._can_reinspect
    tv._can_reinspect = lambda: False
    try:
        result = CliRunner().invoke(app, ["verify", str(engine)])
    finally:
        tv._can_reinspect = original
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout and "Reformatting" not in result.stdout


# ------------------------------------------------------------------ 5. one logger per process


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_one_logger_for_every_builder_and_runtime(tmp_path: Path, install, version: str) -> None:
    from maxq_deploy.tensorrt.build import build_engine, inspect_engine_file

    trt = install(fake_tensorrt(version, inspector(version)))
    onnx_path = make_onnx(tmp_path / "m.onnx", qdq=True)
    first = build_engine(onnx_path, tmp_path / "a.engine")
    second = build_engine(onnx_path, tmp_path / "b.engine", sparse=False)
    inspect_engine_file(tmp_path / "a.engine")
    assert len(trt.loggers) >= 5 and len({id(logger) for logger in trt.loggers}) == 1
    for result in (first, second):
        assert not any("differs from one already provided" in w for w in result.warnings)
        assert result.warnings == ["a warning"]  # each build sees only its own messages
    assert second.report.sparsity_log_lines == SPARSITY_LOG[:1]
    assert LOGGER_DIFFERS.startswith("The logger passed into createInferRuntime differs")
