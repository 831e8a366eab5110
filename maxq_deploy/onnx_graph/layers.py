"""What the engine builder and its report need from an ONNX graph, read with the onnx package.

The ONNX export names every Conv/Gemm node (and its weight ``<layer>.weight``) after the
checkpoint layer and lists the sparse ones in ``metadata_props["maxq_deploy.sparse_layers"]``;
TensorRT derives its layer names from ONNX node names. So this module collects, per
Conv/Gemm/MatMul node: its name, weight shape in checkpoint layout, groups, kernel, whether the
weight holds 2:4, and whether it sits between Q/DQ nodes. All plain data, no TensorRT.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from maxq_deploy.onnx_graph import meta as onnx_meta
from maxq_deploy.onnx_graph.index import GraphIndex, load_onnx
from maxq_deploy.core.errors import InputFileError

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_PASS_THROUGH = ("Identity", "Cast", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Pad")
#: Ops a conv's output may pass before its QuantizeLinear and still run INT8 out (TensorRT moves
#: Q/DQ across ReLU and MaxPool and fuses Add + activation into the conv).
_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSwish", "HardSigmoid", "Add", "Identity", "Cast", "MaxPool")
_OPS = {"Conv": "conv", "Gemm": "gemm", "MatMul": "matmul"}


@dataclass
class OnnxLayer:
    """One Conv/Gemm/MatMul node of the graph, in the checkpoint's terms."""

    name: str  # ONNX node name == checkpoint layer name for graphs written by `export onnx`
    op: str  # "conv", "gemm", "matmul"
    weight: str | None  # name of the weight initializer (through Q/DQ), None when computed
    shape: list[int]  # conv [K, C/groups, R, S]; gemm/matmul [out, in]
    groups: int = 1
    kernel: list[int] = field(default_factory=list)
    in_channels: int = 0  # C of the layer's input (conv: C/groups * groups; gemm: in features)
    out_channels: int = 0
    weight_dtype: str = "float32"
    holds_2_4: bool | None = None  # None: weight not a constant of the graph
    violating_groups: int = 0
    nm_groups: int = 0
    input_quantized: bool = False  # activation input comes out of a DequantizeLinear
    output_quantized: bool = False  # output reaches a QuantizeLinear (through ReLU / residual Add)

    @classmethod
    def from_dict(cls, data: dict) -> OnnxLayer:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class OnnxGraphInfo:
    path: str
    input_name: str
    input_shape: list[int | None]  # None: dynamic axis
    precision: str  # "fp32", "fp16", "int8" (has Q/DQ nodes)
    layers: dict[str, OnnxLayer]
    sparse_layers: list[str] | None  # from metadata; None when the graph does not say
    metadata: dict[str, str]
    aliases: dict[str, str] = field(default_factory=dict)  # name token (weight initializer, ...) -> layer

    @property
    def expected_sparse(self) -> list[str]:
        """Layers meant to be 2:4: the metadata list, else every constant weight that holds 2:4."""
        if self.sparse_layers is not None:
            return list(self.sparse_layers)
        return [name for name, layer in self.layers.items() if layer.holds_2_4]

    @property
    def nm(self) -> str | None:
        return self.metadata.get(onnx_meta.NM)

    def to_dict(self) -> dict:
        return {
            "path": self.path, "input_name": self.input_name, "input_shape": self.input_shape,
            "precision": self.precision, "sparse_layers": self.sparse_layers, "metadata": self.metadata,
            "layers": [asdict(layer) for layer in self.layers.values()],
        }


def _dim(d) -> int | None:
    return int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None


def read_onnx_graph(path: str | os.PathLike[str], model=None) -> OnnxGraphInfo:
    """Collect input, precision, metadata and every Conv/Gemm/MatMul of an ONNX graph."""
    import onnx
    from onnx import numpy_helper

    model = load_onnx(path) if model is None else model
    graph = model.graph
    metadata = {p.key: p.value for p in model.metadata_props}
    index = GraphIndex(graph)
    inits, producers, consumers = index.initializers, index.producers, index.consumers
    constants = {node.output[0]: next((a.t for a in node.attribute if a.name == "value"), None)
                 for node in graph.node if node.op_type == "Constant" and node.output}

    inputs = [i for i in graph.input if i.name not in inits]
    if not inputs:
        raise InputFileError(f"{path}: the ONNX graph has no input")
    graph_input = next((i for i in inputs if i.name == "input"), inputs[0])
    input_shape = [_dim(d) for d in graph_input.type.tensor_type.shape.dim]
    if len(input_shape) == 4 and any(d is None for d in input_shape[2:]):
        size = metadata.get(onnx_meta.INPUT_SIZE)
        try:
            value = json.loads(size) if size else []
            hw = [int(value)] * 2 if isinstance(value, (int, float)) else [int(v) for v in value]
        except (ValueError, TypeError):
            hw = []
        if len(hw) >= 2:
            input_shape = [input_shape[0], input_shape[1], hw[-2], hw[-1]]

    has_qdq = any(node.op_type in _QDQ for node in graph.node)
    input_fp16 = graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    float_inits = [t for t in inits.values() if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    mostly_fp16 = bool(float_inits) and sum(t.data_type == onnx.TensorProto.FLOAT16 for t in float_inits) * 2 > len(float_inits)
    precision = "int8" if has_qdq else ("fp16" if input_fp16 or mostly_fp16 else "fp32")
    declared = metadata.get(onnx_meta.PRECISION)
    if declared in ("fp32", "fp16") and not has_qdq:
        precision = declared  # the exporter's word; Q/DQ nodes always mean int8

    def weight_source(name: str):
        """(initializer name, TensorProto) behind a node input, through Q/DQ and pass-through ops."""
        seen = 0
        while seen < 8:
            seen += 1
            if name in inits:
                return name, inits[name]
            if name in constants and constants[name] is not None:
                return name, constants[name]
            node = producers.get(name)
            if node is None or not node.input or node.op_type not in _QDQ + ("Identity", "Cast"):
                return None, None
            name = node.input[0]
        return None, None

    def comes_from_dq(name: str) -> bool:
        for _ in range(4):
            node = producers.get(name)
            if node is None:
                return False
            if node.op_type == "DequantizeLinear":
                return True
            if node.op_type not in _PASS_THROUGH or not node.input:
                return False
            name = node.input[0]
        return False

    def reaches_q(name: str, depth: int = 0) -> bool:
        if depth > 3:
            return False
        for node in consumers.get(name, []):
            if node.op_type == "QuantizeLinear":
                return True
            if node.op_type in _ACTIVATIONS and node.output and reaches_q(node.output[0], depth + 1):
                return True
        return False

    layers: dict[str, OnnxLayer] = {}
    alias_targets: dict[str, set[str]] = {}
    for index, node in enumerate(graph.node):
        op = _OPS.get(node.op_type)
        if op is None or len(node.input) < 2:
            continue
        name = node.name or f"{node.op_type}_{index}"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        init_name, tensor = weight_source(node.input[1])
        array = numpy_helper.to_array(tensor) if tensor is not None and tensor.data_location != onnx.TensorProto.EXTERNAL else None
        if array is None and tensor is not None:
            try:
                array = numpy_helper.to_array(tensor, base_dir=str(Path(path).parent))
            except Exception:  # noqa: BLE001 - external data missing: no 2:4 check for this layer
                array = None
        dims = list(tensor.dims) if tensor is not None else []
        groups = int(attrs.get("group", 1)) if op == "conv" else 1
        kernel: list[int] = []
        if op == "conv":
            shape = [int(d) for d in dims]
            kernel = [int(k) for k in attrs.get("kernel_shape", shape[2:])]
            axis_array = array
            in_ch = shape[1] * groups if len(shape) > 1 else 0
            out_ch = shape[0] if shape else 0
        else:
            transposed = op == "gemm" and int(attrs.get("transB", 0)) == 1
            # checkpoint layout [out, in]: Gemm B with transB=1 already is; otherwise transpose
            shape = [int(d) for d in dims] if transposed else [int(d) for d in reversed(dims)]
            axis_array = array if (transposed or array is None) else array.T
            in_ch = shape[1] if len(shape) == 2 else 0
            out_ch = shape[0] if len(shape) == 2 else 0
        holds, violating, nm_groups = None, 0, 0
        if axis_array is not None and axis_array.ndim >= 2:
            holds, violating, nm_groups = _check_2_4(axis_array)
        layers[name] = OnnxLayer(
            name=name, op=op, weight=init_name, shape=shape, groups=groups, kernel=kernel,
            in_channels=in_ch, out_channels=out_ch,
            weight_dtype=str(array.dtype) if array is not None else "unknown",
            holds_2_4=holds, violating_groups=violating, nm_groups=nm_groups,
            input_quantized=comes_from_dq(node.input[0]),
            output_quantized=bool(node.output) and reaches_q(node.output[0]),
        )
        for token in {name, init_name, node.input[1]} - {None, ""}:
            alias_targets.setdefault(token, set()).add(name)  # type: ignore[arg-type]
    aliases = {token: next(iter(targets)) for token, targets in alias_targets.items() if len(targets) == 1}

    sparse_layers = None
    raw = metadata.get(onnx_meta.SPARSE_LAYERS)
    if raw is not None:
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise InputFileError(f"{path}: metadata maxq_deploy.sparse_layers is not a JSON list") from None
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            raise InputFileError(f"{path}: metadata maxq_deploy.sparse_layers is not a JSON list of layer names")
        sparse_layers = parsed
    return OnnxGraphInfo(
        path=str(path), input_name=graph_input.name, input_shape=input_shape, precision=precision,
        layers=layers, sparse_layers=sparse_layers, metadata=metadata, aliases=aliases,
    )


def _check_2_4(array) -> tuple[bool, int, int]:
    """(holds, violating groups, groups) of 2:4 along axis 1 of a [out, in, ...] weight."""
    import numpy as np
    import torch

    from maxq_deploy.core.sparsity import HARDWARE_PATTERN, check_pattern

    tensor = torch.from_numpy(np.array(array, dtype=np.float32))  # a writable copy
    check = check_pattern(tensor, HARDWARE_PATTERN, axis=1)
    return check.holds, check.violating_groups, check.groups
