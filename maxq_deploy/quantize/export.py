"""The raw INT8 Q/DQ ONNX graph of a quantized checkpoint (``export_onnx`` post-processes it).

TensorRT's rules: QuantizeLinear/DequantizeLinear pairs with zero point 0 (int8), per-channel
weight scales on axis 0 (opset >= 13), per-tensor activation scales, nothing between Conv and
ReLU, the residual input of every Add quantized. The quantized network already has exactly
these quantizers; it is exported frozen (:mod:`maxq_deploy.quantize.frozen`: every range a
constant scale), through either torch exporter (:func:`maxq_deploy.onnx_graph.from_torch.torch_to_onnx`),
with no quantization backend involved. Weights are stored as INT8 initializers followed by
DequantizeLinear (:mod:`maxq_deploy.quantize.int8_weights`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from maxq_deploy.core.errors import QuantizationError

MIN_OPSET = 13  # per-channel QuantizeLinear (axis attribute)


@dataclass
class QdqSummary:
    """What the Q/DQ graph holds."""

    quantize_nodes: int
    dequantize_nodes: int
    per_channel: int  # DequantizeLinear nodes with a 1-D scale (the weights)
    zero_points: str  # "int8 zeros"


def frozen_module(module: nn.Module, arch: str, num_classes: int, kept_float: list[str] | tuple[str, ...] = ()) -> nn.Module:
    """``module`` with every quantizer frozen to a constant scale (a frozen module is returned as is).

    Reads the ranges from the module's own state (``<quantizer>._amax``, the backends' buffer),
    so whatever backend built it, the export needs none.
    """
    from maxq_deploy.quantize.frozen import FixedQuantizer, build_frozen_model

    if any(isinstance(m, FixedQuantizer) for m in module.modules()):
        return module.eval()
    state = module.state_dict()
    ranges = {k[: -len("._amax")]: v for k, v in state.items() if k.endswith("._amax")}
    weights = {k: v for k, v in state.items() if not k.endswith("._amax")}
    return build_frozen_model(arch, num_classes, weights, ranges, "quantized model", kept_float)


def qdq_model(loaded, dummy: torch.Tensor, opset: int, dynamic_batch: bool, exporter: str = "dynamo"):
    """The Q/DQ ONNX ModelProto of ``loaded`` (a quantized-checkpoint LoadedModel) and its summary."""
    from maxq_deploy.onnx_graph.from_torch import torch_to_onnx
    from maxq_deploy.quantize.int8_weights import store_weights_as_int8

    if opset < MIN_OPSET:
        raise QuantizationError(f"--opset {opset}: INT8 Q/DQ with per-channel weight scales needs opset {MIN_OPSET} or newer")
    module = frozen_module(loaded.module, loaded.arch, loaded.num_classes, loaded.meta.get("kept_float") or ())
    model = torch_to_onnx(module, dummy, opset, dynamic_batch, exporter)
    store_weights_as_int8(model)  # the TorchScript form (float weight -> Q -> DQ); dynamo writes int8 already
    return model, summarize_qdq(model)


def export_qdq_onnx(loaded, dummy: torch.Tensor, path: str | os.PathLike[str], opset: int, dynamic_batch: bool,
                    exporter: str = "dynamo") -> QdqSummary:
    """Write the Q/DQ ONNX graph of ``loaded`` to ``path`` (input ``input``, output ``output``)."""
    import onnx

    model, summary = qdq_model(loaded, dummy, opset, dynamic_batch, exporter)
    onnx.save(model, str(path))
    return summary


def check_qdq_graph(path: str | os.PathLike[str]) -> QdqSummary:
    """Every Q/DQ node of the file must have an int8 zero point equal to 0; there must be some."""
    from maxq_deploy.onnx_graph.index import load_onnx

    return summarize_qdq(load_onnx(path), Path(path).name)


def summarize_qdq(model, name: str = "the graph") -> QdqSummary:
    """Every Q/DQ node must have an int8 zero point equal to 0; there must be some."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    consts = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = attr.t
    q = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    if not q or not dq:
        raise RuntimeError(f"bug: {name} has no QuantizeLinear/DequantizeLinear nodes after a Q/DQ export")
    per_channel = 0
    for node in q + dq:
        if len(node.input) < 3 or node.input[2] not in consts:
            raise RuntimeError(f"bug: {node.op_type} {node.name!r} has no constant zero point")
        zp = consts[node.input[2]]
        if zp.data_type != TensorProto.INT8 or np.any(numpy_helper.to_array(zp) != 0):
            raise RuntimeError(f"bug: {node.op_type} {node.name!r} zero point is not int8 zeros")
        scale = consts.get(node.input[1])
        if node.op_type == "DequantizeLinear" and scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1:
            per_channel += 1  # a weight (INT8 initializer -> DequantizeLinear: no QuantizeLinear of its own)
    return QdqSummary(len(q), len(dq), per_channel, "int8 zeros")
