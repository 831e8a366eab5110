"""Shared TensorRT test helpers: inspector JSON samples built from the field names TensorRT documents, a tiny ONNX graph, a CLI runner."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from maxq_deploy.onnx_graph.layers import OnnxLayer
from maxq_deploy.tensorrt.report import EngineReport, build_engine_report

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
