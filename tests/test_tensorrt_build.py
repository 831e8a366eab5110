"""TensorRT stage without TensorRT: flag plans, profiles, trtexec, inspector parsing, report, verify, CLI.

Inspector JSON samples are built here from the field names TensorRT documents (``Layers``,
``Name``, ``LayerType``, ``Inputs``/``Outputs`` with ``Format/Datatype``, ``TacticName``,
``HasSparseWeights``; ``Bindings`` in 10.x, ``I/O Tensors`` in 11.x). A small fake ``tensorrt``
module, written against the real Python API names, drives ``build_engine`` end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from maxq_deploy.core.errors import BackendUnavailableError, InputFileError, MaxQDeployError
from maxq_deploy.runtimes import tensorrt_api as _trt
from maxq_deploy.core.errors import EngineBuildError, ProfileShapeError
from maxq_deploy.tensorrt.flags import choose_builder_flags, known_flag_names
from maxq_deploy.onnx_graph.layers import OnnxLayer, read_onnx_graph
from maxq_deploy.tensorrt.profiles import ProfileShapes, check_profile_fits, resolve_profile
from maxq_deploy.tensorrt.report import (
    EngineReport,
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
from maxq_deploy.tensorrt.trtexec import trtexec_command, trtexec_for_onnx

# --------------------------------------------------------------------------------------------- helpers

SPARSE_TACTIC = "sm80_xmma_fprop_sparse_conv_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32_tilesize128x128x128"
DENSE_TACTIC = "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32_tilesize192x64x64"
INT8_FMT = "Thirty-two wide channel vectorized row major Int8 format"
FP32_FMT = "Row major linear FP32"


def _tensor(name: str, dims: list[int], fmt: str) -> dict:
    return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": fmt}


def _conv(name: str, c: int, k: int, kernel: int, *, sparse: bool, tactic: str, in_fmt: str = INT8_FMT,
          out_fmt: str = INT8_FMT, groups: int = 1, weights: str = "Int8") -> dict:
    return {
        "Name": name, "LayerType": "CaskConvolution", "ParameterType": "Convolution",
        "Inputs": [_tensor("in_" + name, [-1, c, 16, 16], in_fmt)],
        "Outputs": [_tensor("out_" + name, [-1, k, 16, 16], out_fmt)],
        "Kernel": [kernel, kernel], "Groups": groups, "OutMaps": k,
        "Weights": {"Type": weights, "Count": k * c // groups * kernel * kernel}, "Bias": {"Type": "Float", "Count": k},
        "HasSparseWeights": int(sparse), "HasBias": 1, "HasReLU": 1, "TacticName": tactic, "TacticValue": "0x1",
    }


def sample_layers() -> list[dict]:
    """An INT8 Q/DQ ResNet-ish engine: stem, a sparse-picked conv, eligible-but-dense convs, a broken one, fc."""
    stem = {
        "Name": "conv1.weight + /conv1/_weight_quantizer/QuantizeLinear + conv1 + /maxpool/MaxPool",
        "LayerType": "ConvActPool", "ParameterType": "ConvActPool",
        "Inputs": [_tensor("input_q", [-1, 3, 64, 64], "Row major Int8 format")],
        "Outputs": [_tensor("stem_out", [-1, 64, 16, 16], INT8_FMT)],
        "ConvKernel": [7, 7], "ConvGroups": 1, "ConvOutMaps": 64, "ConvWeights": {"Type": "Int8", "Count": 9408},
        "ConvHasSparseWeights": 0, "TacticValue": "0x0000000000000461",
    }
    return [
        {"Name": "Reformatting CopyNode for Input Tensor 0 to conv1", "LayerType": "Reformat", "ParameterType": "Reformat",
         "Inputs": [_tensor("input", [-1, 3, 64, 64], FP32_FMT)], "Outputs": [_tensor("input_q", [-1, 3, 64, 64], INT8_FMT)],
         "TacticValue": "0x3ea"},
        stem,
        _conv("layer1.0.convbn1.weight + /layer1.0/convbn1/_weight_quantizer/QuantizeLinear + layer1.0.convbn1 + "
              "/layer1/layer1.0/relu/Relu", 512, 512, 3, sparse=True, tactic=SPARSE_TACTIC),
        _conv("layer1.0.convbn2 + /layer1/layer1.0/Add + /layer1/layer1.0/relu_1/Relu", 64, 64, 3, sparse=True,
              tactic=DENSE_TACTIC),
        _conv("layer4.0.convbn1", 512, 512, 3, sparse=True, tactic=DENSE_TACTIC, out_fmt="Channel major FP16 format"),
        _conv("layer4.0.downsample", 256, 512, 1, sparse=False, tactic=DENSE_TACTIC),
        {"Name": "fc", "LayerType": "CaskGemmMatrixMultiply", "ParameterType": "MatrixMultiply",
         "Inputs": [_tensor("pool", [-1, 512], INT8_FMT)], "Outputs": [_tensor("output", [-1, 10], FP32_FMT)],
         "HasSparseWeights": 0, "TacticName": "sm80_xmma_gemm_i8f32", "TacticValue": "0x2"},
        {"Name": "/avgpool/GlobalAveragePool", "LayerType": "CaskPooling", "ParameterType": "Pooling",
         "Inputs": [], "Outputs": [], "TacticValue": "0x3"},
    ]


def inspector_10(layers: list | None = None) -> dict:
    return {"Layers": sample_layers() if layers is None else layers, "Bindings": ["input", "output"]}


def inspector_11(layers: list | None = None) -> dict:
    io = [
        {"Name": "input", "IOMode": "Input", "DataType": "Float", "Dimensions": [-1, 3, 64, 64], "Location": "Device",
         "IsShapeInferenceIO": False, "ProfileInfo": [{"MinShape": [1, 3, 64, 64], "OptShape": [8, 3, 64, 64],
                                                       "MaxShape": [32, 3, 64, 64], "Format": "Row major linear FP32 format (kLINEAR)"}]},
        {"Name": "output", "IOMode": "Output", "DataType": "Float", "Dimensions": [-1, 10], "Location": "Device",
         "IsShapeInferenceIO": False},
    ]
    return {"Layers": sample_layers() if layers is None else layers, "I/O Tensors": io}


SPARSE_LAYERS = ["layer1.0.convbn1", "layer1.0.convbn2", "layer4.0.convbn1", "layer4.0.downsample"]


def onnx_layers() -> list[OnnxLayer]:
    def conv(name, c, k, kernel, holds=True, groups=1):
        return OnnxLayer(name=name, op="conv", weight=f"{name}.weight", shape=[k, c // groups, kernel, kernel], groups=groups,
                         kernel=[kernel, kernel], in_channels=c, out_channels=k, weight_dtype="int8", holds_2_4=holds,
                         violating_groups=0 if holds else 12, nm_groups=k * c * kernel * kernel // 4)
    return [
        conv("conv1", 3, 64, 7, holds=False),
        conv("layer1.0.convbn1", 512, 512, 3), conv("layer1.0.convbn2", 64, 64, 3), conv("layer4.0.convbn1", 512, 512, 3),
        conv("layer4.0.downsample", 256, 512, 1, holds=False),
        OnnxLayer(name="fc", op="gemm", weight="fc.weight", shape=[10, 512], in_channels=512, out_channels=10),
    ]


SPARSITY_LOG = [
    "(Sparsity) Layers eligible for sparse math: layer1.0.convbn1.weight + /layer1.0/convbn1/_weight_quantizer/QuantizeLinear"
    " + layer1.0.convbn1 + /layer1/layer1.0/relu/Relu, layer1.0.convbn2 + /layer1/layer1.0/Add + /layer1/layer1.0/relu_1/Relu,"
    " layer4.0.convbn1",
    "(Sparsity) TRT inference plan picked sparse implementation for layers: layer1.0.convbn1.weight + "
    "/layer1.0/convbn1/_weight_quantizer/QuantizeLinear + layer1.0.convbn1 + /layer1/layer1.0/relu/Relu",
]


def sample_report(engine: Path, inspector: dict | None = None, **kwargs) -> EngineReport:
    from maxq_deploy.core.files import sha256_file

    args = dict(engine=str(engine), onnx_layers=onnx_layers(), sparse_layers=SPARSE_LAYERS, sparsity_log_lines=SPARSITY_LOG,
                sparse_build=True, trt_version="10.9.0", graph_precision="int8", nm="2:4",
                engine_sha256=sha256_file(engine) if engine.exists() else None)
    args.update(kwargs)
    return build_engine_report(inspector_10() if inspector is None else inspector, **args)


def make_onnx(path: Path, *, qdq: bool = False, batch: int | str = "batch", sparse_meta: bool = True, size: int = 16) -> Path:
    """A tiny ONNX graph in the export's naming: stem conv1, 2:4 conv, depthwise conv, dense conv, fc."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def two_four(k, c, r):
        w = rng.standard_normal((k, c, r, r)).astype(np.float32)
        mask = np.zeros_like(w)
        mask[:, 0::4], mask[:, 1::4] = 1, 1
        return w * mask

    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "conv1.weight"),
        numpy_helper.from_array(rng.standard_normal((8, 1, 3, 3)).astype(np.float32), "dw.weight"),
        numpy_helper.from_array(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), "layer1.0.convbn2.weight"),
        numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "fc.weight"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias"),
        numpy_helper.from_array(np.array([2, -1], np.int64), "flat_shape"),
    ]
    nodes = [helper.make_node("Conv", ["input", "conv1.weight"], ["c1"], name="conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c1"], ["r1"], name="/relu/Relu")]
    w = two_four(8, 8, 3)
    if qdq:
        scale_w = (np.abs(w).max(axis=(1, 2, 3)) / 127).astype(np.float32)
        w_q = np.round(w / scale_w[:, None, None, None]).astype(np.int8)
        inits += [numpy_helper.from_array(w_q, "layer1.0.convbn1.weight"),
                  numpy_helper.from_array(scale_w, "w_scale"), numpy_helper.from_array(np.zeros(8, np.int8), "w_zp"),
                  numpy_helper.from_array(np.array(0.05, np.float32), "a_scale"), numpy_helper.from_array(np.array(0, np.int8), "a_zp")]
        nodes += [
            helper.make_node("QuantizeLinear", ["r1", "a_scale", "a_zp"], ["r1_q"], name="/layer1.0/convbn1/input_quantizer/QuantizeLinear"),
            helper.make_node("DequantizeLinear", ["r1_q", "a_scale", "a_zp"], ["r1_dq"], name="/layer1.0/convbn1/input_quantizer/DequantizeLinear"),
            helper.make_node("DequantizeLinear", ["layer1.0.convbn1.weight", "w_scale", "w_zp"], ["w1_dq"], axis=0,
                             name="/layer1.0/convbn1/weight_quantizer/DequantizeLinear"),
            helper.make_node("Conv", ["r1_dq", "w1_dq"], ["c2"], name="layer1.0.convbn1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
            helper.make_node("Relu", ["c2"], ["r2"], name="/layer1/relu/Relu"),
            helper.make_node("QuantizeLinear", ["r2", "a_scale", "a_zp"], ["r2_q"], name="/dw/input_quantizer/QuantizeLinear"),
            helper.make_node("DequantizeLinear", ["r2_q", "a_scale", "a_zp"], ["r2_dq"], name="/dw/input_quantizer/DequantizeLinear"),
        ]
        dw_in = "r2_dq"
    else:
        inits.append(numpy_helper.from_array(w, "layer1.0.convbn1.weight"))
        nodes += [helper.make_node("Conv", ["r1", "layer1.0.convbn1.weight"], ["c2"], name="layer1.0.convbn1", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", ["c2"], ["r2"], name="/layer1/relu/Relu")]
        dw_in = "r2"
    nodes += [
        helper.make_node("Conv", [dw_in, "dw.weight"], ["c3"], name="dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c3", "layer1.0.convbn2.weight"], ["c4"], name="layer1.0.convbn2"),
        helper.make_node("GlobalAveragePool", ["c4"], ["p"], name="/avgpool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/Flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 10])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"maxq_deploy.nm": "2:4", "maxq_deploy.precision": "int8" if qdq else "fp32", "maxq_deploy.input_size": str(size)}
    if sparse_meta:
        meta["maxq_deploy.sparse_layers"] = json.dumps(["layer1.0.convbn1", "layer1.0.convbn2"])
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorrt`` fail as on a machine without it (even where it is installed)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def run_cli():
    from typer.testing import CliRunner

    from maxq_deploy.cli.app import app

    runner = CliRunner()

    def run(*args: object):
        return runner.invoke(app, [str(a) for a in args])

    return run


# --------------------------------------------------------------------------------------------- import hygiene


def test_importing_the_package_never_imports_tensorrt() -> None:
    code = (
        "import sys; import maxq_deploy.tensorrt, maxq_deploy.tensorrt.verify, maxq_deploy.cli.cmd_trt; "
        "import maxq_deploy.tensorrt.build, maxq_deploy.runtimes.tensorrt_runner; "
        "assert 'tensorrt' not in sys.modules, 'tensorrt imported'; "
        "import torch; assert not torch.cuda.is_initialized(), 'CUDA initialised'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


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


def test_runner_without_tensorrt_is_one_line(tmp_path: Path, no_tensorrt) -> None:
    from maxq_deploy.runtimes.tensorrt_runner import TensorRTRunner

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        TensorRTRunner(engine)


@pytest.mark.parametrize("text, expected", [("10.12.0.36", (10, 12)), ("11.1.0", (11, 1)), ("10", (10, 0)), ("junk", (0, 0))])
def test_parse_version(text: str, expected: tuple[int, int]) -> None:
    assert _trt.parse_version(text) == expected


# --------------------------------------------------------------------------------------------- flags


@pytest.mark.parametrize("version", ["10.0.1", "10.12.0", "11.1.0"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_flag_plan_invariants(version: str, precision: str) -> None:
    plan = choose_builder_flags(version, known_flag_names(version), precision)
    assert "SPARSE_WEIGHTS" in plan.builder_flags and "--sparsity=enable" in plan.trtexec_flags
    assert not any("force" in f for f in plan.trtexec_flags)
    if plan.strongly_typed:  # strongly typed networks forbid precision flags
        assert not {"FP16", "INT8", "BF16", "FP8"} & set(plan.builder_flags)
        assert not {"--fp16", "--int8"} & set(plan.trtexec_flags)
    if version.startswith("11"):
        assert plan.strongly_typed and plan.network_flags == ()  # always on; the flag is ignored there
        assert plan.builder_flags == ("SPARSE_WEIGHTS",) and plan.trtexec_flags == ("--sparsity=enable",)


@pytest.mark.parametrize("precision, flags, trtexec", [
    ("fp32", ("SPARSE_WEIGHTS",), ("--sparsity=enable",)),
    ("fp16", ("SPARSE_WEIGHTS", "FP16"), ("--sparsity=enable", "--fp16")),
    ("int8", ("SPARSE_WEIGHTS", "INT8", "FP16"), ("--sparsity=enable", "--int8", "--fp16")),
])
def test_flags_before_10_12_use_weak_typing(precision: str, flags: tuple, trtexec: tuple) -> None:
    plan = choose_builder_flags("10.0.1.6", known_flag_names("10.0"), precision)
    assert not plan.strongly_typed and plan.network_flags == ()
    assert plan.builder_flags == flags and plan.trtexec_flags == trtexec


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_flags_from_10_12_are_strongly_typed(precision: str) -> None:
    plan = choose_builder_flags("10.12.0.36", known_flag_names("10.12"), precision)
    assert plan.strongly_typed and plan.network_flags == ("STRONGLY_TYPED",)
    assert plan.builder_flags == ("SPARSE_WEIGHTS",)
    assert plan.trtexec_flags == ("--sparsity=enable", "--stronglyTyped")
    assert any("deprecates" in note for note in plan.notes)


def test_flags_follow_what_the_installed_version_exposes() -> None:
    # An 11.x build (no FP16/INT8 flags at all) and a 10.x one without SPARSE_WEIGHTS.
    plan = choose_builder_flags("11.1.0", {"SPARSE_WEIGHTS", "STRONGLY_TYPED", "TF32"}, "int8", sparse=False)
    assert plan.builder_flags == () and plan.trtexec_flags == () and plan.strongly_typed
    plan = choose_builder_flags("10.3.0", {"FP16", "INT8", "STRONGLY_TYPED"}, "fp16")
    assert plan.builder_flags == ("FP16",) and any("SPARSE_WEIGHTS" in n for n in plan.notes)


def test_flag_plan_rejects_unknown_precision() -> None:
    with pytest.raises(MaxQDeployError, match="graph precision must be one of fp32, fp16, int8, got 'bf8'"):
        choose_builder_flags("10.9", known_flag_names("10.9"), "bf8")


# --------------------------------------------------------------------------------------------- profiles


def test_profile_defaults_and_options() -> None:
    dyn = [None, 3, 64, 64]
    p = resolve_profile("input", dyn)
    assert (p.min_shape, p.opt_shape, p.max_shape) == ((1, 3, 64, 64), (8, 3, 64, 64), (32, 3, 64, 64))
    assert resolve_profile("input", dyn, opt_batch=64).max_batch == 64
    assert resolve_profile("input", dyn, max_batch=4).opt_batch == 4
    assert resolve_profile("input", dyn, min_batch=16).opt_batch == 16
    assert resolve_profile("input", dyn, 2, 4, 256).trtexec_spec("max") == "input:256x3x64x64"


@pytest.mark.parametrize("batches, match", [
    ((8, 4, 16), "min <= opt <= max, got min_batch=8, opt_batch=4, max_batch=16"),
    ((1, 64, 32), "min <= opt <= max"),
    ((0, 1, 2), "min_batch must be an integer >= 1, got 0"),
])
def test_profile_validation(batches: tuple, match: str) -> None:
    with pytest.raises(ProfileShapeError, match=match.replace("(", r"\(").replace(")", r"\)")):
        resolve_profile("input", [None, 3, 64, 64], *batches)


def test_fixed_batch_graph_admits_only_its_batch() -> None:
    p = resolve_profile("input", [4, 3, 32, 32])
    assert (p.min_batch, p.opt_batch, p.max_batch) == (4, 4, 4)
    assert resolve_profile("input", [4, 3, 32, 32], opt_batch=4).opt_batch == 4
    with pytest.raises(ProfileShapeError, match="fixed batch of 4 .* got max_batch=32"):
        resolve_profile("input", [4, 3, 32, 32], max_batch=32)
    with pytest.raises(ProfileShapeError, match="fixed C, H, W"):
        resolve_profile("input", [None, 3, None, None])
    with pytest.raises(ProfileShapeError, match="C, H, W 3x64x64 do not match the ONNX input 3x32x32"):
        check_profile_fits(ProfileShapes("input", 4, 4, 4, (3, 64, 64)), "input", [4, 3, 32, 32])


# --------------------------------------------------------------------------------------------- ONNX facts


def test_read_onnx_graph_fp32(tmp_path: Path) -> None:
    g = read_onnx_graph(make_onnx(tmp_path / "m.onnx"))
    assert (g.input_name, g.input_shape, g.precision, g.nm) == ("input", [None, 3, 16, 16], "fp32", "2:4")
    assert set(g.layers) == {"conv1", "layer1.0.convbn1", "dw", "layer1.0.convbn2", "fc"}
    assert g.layers["layer1.0.convbn1"].holds_2_4 and not g.layers["layer1.0.convbn2"].holds_2_4
    dw = g.layers["dw"]
    assert (dw.groups, dw.in_channels, dw.shape) == (8, 8, [8, 1, 3, 3])
    assert (g.layers["fc"].op, g.layers["fc"].shape, g.layers["fc"].in_channels) == ("gemm", [10, 8], 8)
    assert g.aliases["layer1.0.convbn1.weight"] == "layer1.0.convbn1"
    assert g.expected_sparse == ["layer1.0.convbn1", "layer1.0.convbn2"]


def test_read_onnx_graph_qdq(tmp_path: Path) -> None:
    g = read_onnx_graph(make_onnx(tmp_path / "q.onnx", qdq=True, sparse_meta=False))
    assert g.precision == "int8"
    layer = g.layers["layer1.0.convbn1"]
    assert layer.weight == "layer1.0.convbn1.weight" and layer.weight_dtype == "int8" and layer.holds_2_4
    assert layer.input_quantized and layer.output_quantized  # DQ in, Relu -> Q out
    assert not g.layers["layer1.0.convbn2"].input_quantized
    assert g.sparse_layers is None and g.expected_sparse == ["layer1.0.convbn1"]  # fallback: weights holding 2:4


def test_read_onnx_graph_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(InputFileError, match="is not an ONNX model"):  # the one loader's words, as `verify` says them
        read_onnx_graph(bad)


# --------------------------------------------------------------------------------------------- trtexec


def test_trtexec_command_10_int8() -> None:
    plan = choose_builder_flags("10.8.0", known_flag_names("10.8"), "int8")
    cmd = trtexec_command("m.onnx", "m.engine", plan, ProfileShapes("input", 1, 8, 64, (3, 224, 224)), 2.0, "cache.bin")
    argv = cmd.argv
    assert argv[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine"]
    for expected in ("--minShapes=input:1x3x224x224", "--optShapes=input:8x3x224x224", "--maxShapes=input:64x3x224x224",
                     "--memPoolSize=workspace:2048M", "--sparsity=enable", "--int8", "--fp16", "--profilingVerbosity=detailed",
                     "--exportLayerInfo=m.engine.layers.json", "--timingCacheFile=cache.bin", "--iterations=1"):
        assert expected in argv
    assert "--sparsity=force" not in argv and "--stronglyTyped" not in argv


def test_trtexec_command_11_and_10_12() -> None:
    profile = ProfileShapes("input", 1, 1, 1, (3, 64, 64))
    argv11 = trtexec_command("a b.onnx", "m.engine", choose_builder_flags("11", known_flag_names("11"), "fp16"), profile).argv
    assert not {"--fp16", "--int8", "--stronglyTyped"} & set(argv11) and "--sparsity=enable" in argv11
    assert "'--onnx=a b.onnx'" in trtexec_command("a b.onnx", "m.engine", choose_builder_flags("11", known_flag_names("11"), "fp16"), profile).command_line
    argv = trtexec_command("m.onnx", "m.engine", choose_builder_flags("10.12", known_flag_names("10.12"), "int8"), profile).argv
    assert "--stronglyTyped" in argv and "--int8" not in argv
    dense = trtexec_command("m.onnx", "m.engine", choose_builder_flags("10.12", known_flag_names("10.12"), "fp32", sparse=False), profile).argv
    assert not any(a.startswith("--sparsity") for a in dense)


def test_trtexec_without_tensorrt_asks_for_the_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tensorrt) -> None:
    monkeypatch.setattr(_trt, "installed_tensorrt_version", lambda: None)
    onnx_path = make_onnx(tmp_path / "q.onnx", qdq=True)
    with pytest.raises(MaxQDeployError, match="TensorRT is not installed here, so the release the command is for is unknown"):
        trtexec_for_onnx(onnx_path, tmp_path / "q.engine", max_batch=16)
    cmd = trtexec_for_onnx(onnx_path, tmp_path / "q.engine", trt_version="10.8", max_batch=16)
    assert cmd.trt_version == "10.8" and "--int8" in cmd.argv and "--maxShapes=input:16x3x16x16" in cmd.argv
    monkeypatch.setattr(_trt, "installed_tensorrt_version", lambda: "11.4.0.106")  # detected from package metadata
    cmd = trtexec_for_onnx(onnx_path, tmp_path / "q.engine")
    assert cmd.trt_version == "11.4.0.106" and "--int8" not in cmd.argv and "installed TensorRT 11.4.0.106" in cmd.notes[0]
    with pytest.raises(EngineBuildError, match="--trt-version must be 10 or 11"):
        trtexec_for_onnx(onnx_path, tmp_path / "q.engine", trt_version="9")


def test_cli_trtexec_prints_and_writes_nothing(tmp_path: Path, run_cli, no_tensorrt) -> None:
    onnx_path = make_onnx(tmp_path / "m.onnx", batch=2)
    engine = tmp_path / "m.engine"
    result = run_cli("export", "trt", onnx_path, "-o", engine, "--trtexec", "--trt-version", "11", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["trt_version"] == "11" and "--minShapes=input:2x3x16x16" in data["argv"] and "--fp16" not in data["argv"]
    plain = run_cli("export", "trt", onnx_path, "-o", engine, "--trtexec", "--trt-version", "10", "--dense")
    assert plain.exit_code == 0 and plain.stdout.startswith("trtexec --onnx=") and "--sparsity" not in plain.stdout
    assert not engine.exists() and not report_path_for(engine).exists()
    bad = run_cli("export", "trt", onnx_path, "-o", engine, "--trtexec", "--max-batch", "8")
    assert bad.exit_code == 2 and "fixed batch of 2" in bad.stderr and "Traceback" not in bad.output


# --------------------------------------------------------------------------------------------- names and logs


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


# --------------------------------------------------------------------------------------------- inspector JSON


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


# --------------------------------------------------------------------------------------------- verify


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
