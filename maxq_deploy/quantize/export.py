"""The raw INT8 Q/DQ ONNX graph of a quantized checkpoint (``export_onnx`` post-processes it).

TensorRT's rules: QuantizeLinear/DequantizeLinear pairs with zero point 0 (int8), per-channel
weight scales on axis 0 (opset >= 13), per-tensor activation scales, nothing between Conv and
ReLU, the residual input of every Add quantized. The fake-quant network already has exactly
these quantizers; :func:`pq_adapter.onnx_export_mode` makes them export as Q/DQ. Weights are then
stored as INT8 initializers followed by DequantizeLinear (:mod:`maxq_deploy.quantize.int8_weights`).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from maxq_deploy.core.errors import QuantizationError
from maxq_deploy.quantize import pq_adapter

MIN_OPSET = 13  # per-channel QuantizeLinear (axis attribute)
INPUT_NAME, OUTPUT_NAME = "input", "output"


@dataclass
class QdqSummary:
    """What the Q/DQ graph holds."""

    quantize_nodes: int
    dequantize_nodes: int
    per_channel: int  # DequantizeLinear nodes with a 1-D scale (the weights)
    zero_points: str  # "int8 zeros"


def export_qdq_onnx(loaded, dummy: torch.Tensor, path: str | os.PathLike[str], opset: int, dynamic_batch: bool) -> QdqSummary:
    """Write the Q/DQ ONNX graph of ``loaded`` (a quantized-checkpoint LoadedModel) to ``path``.

    Input ``input``, output ``output``, batch axis ``batch`` dynamic when ``dynamic_batch``.
    pytorch-quantization 2.2+ exports inside ``enable_onnx_export()``, 2.1.x through
    ``TensorQuantizer.use_fb_fake_quant``; both with torch's TorchScript exporter
    (``dynamo=False``), the only one that handles its fake-quant modules. Global state is
    restored on exit, also on failure.
    """
    if opset < MIN_OPSET:
        raise QuantizationError(f"--opset {opset}: INT8 Q/DQ with per-channel weight scales needs opset {MIN_OPSET} or newer")
    module = loaded.module
    module.eval()
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    with pq_adapter.onnx_export_mode(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript exporter deprecation and tracer warnings
        torch.onnx.export(
            module, (dummy,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes, do_constant_folding=True, export_params=True,
        )
    _weights_to_int8(path)
    return check_qdq_graph(path)


def _weights_to_int8(path: str | os.PathLike[str]) -> None:
    """INT8 initializers + DequantizeLinear for every weight (TensorRT's pre-quantized form, ~4x smaller)."""
    import onnx

    from maxq_deploy.onnx_graph.index import load_onnx
    from maxq_deploy.quantize.int8_weights import store_weights_as_int8

    model = load_onnx(path)
    if store_weights_as_int8(model):
        onnx.save(model, str(path))


def check_qdq_graph(path: str | os.PathLike[str]) -> QdqSummary:
    """Every Q/DQ node must have an int8 zero point equal to 0; there must be some."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    from maxq_deploy.onnx_graph.index import load_onnx

    model = load_onnx(path)
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
        raise RuntimeError(f"bug: {Path(path).name} has no QuantizeLinear/DequantizeLinear nodes after a Q/DQ export")
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
