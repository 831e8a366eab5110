"""Post-processing of an exported ONNX graph with the onnx API: I/O names, fp16 typing, layer names.

The naming contract every later stage relies on: I/O named ``input``/``output``; every Conv/Gemm
node, and its weight initializer ``<layer>.weight``, named after the checkpoint layer it came
from (found from the exporter's scope names, source lines, or the weight values themselves).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from maxq_deploy.onnx_graph.index import GraphIndex

INPUT_NAME, OUTPUT_NAME = "input", "output"
#: Ops of the exported CNNs that accept float16 for every float input (ONNX type constraint T).
FP16_OPS = frozenset({
    "Conv", "Gemm", "MatMul", "Relu", "Add", "Sub", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool",
    "Flatten", "Reshape", "Identity", "Concat", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Softmax", "Constant",
})


@dataclass
class ExportedLayer:
    """One Conv/Gemm node of the written graph."""

    name: str  # node name = checkpoint layer name
    op: str
    weight: str  # initializer name
    bias: str | None
    dtype: str
    sparse: bool  # listed in maxq_deploy.sparse_layers


def _value_names(graph) -> set[str]:
    names = {init.name for init in graph.initializer}
    names.update(v.name for v in (*graph.input, *graph.output, *graph.value_info))
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
    names.discard("")
    return names


def rename_value(graph, old: str, new: str) -> None:
    """Rename a tensor everywhere in ``graph`` (initializers, node I/O, graph I/O, value_info)."""
    if old == new:
        return
    if new in _value_names(graph):  # make room: the blocking tensor gets a free name
        suffix = 1
        while f"{new}.orig{suffix}" in _value_names(graph):
            suffix += 1
        rename_value(graph, new, f"{new}.orig{suffix}")
    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new
    _rename_in_nodes(graph, old, new)


def _rename_in_nodes(graph, old: str, new: str) -> None:
    """Rename a tensor where nodes read or write it (graph inputs/outputs keep their names)."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def _name_io(graph) -> None:
    """One input named ``input`` and one output named ``output`` (the Q/DQ hook may differ)."""
    initializers = {init.name for init in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise RuntimeError(f"bug: exported graph has {len(inputs)} inputs and {len(graph.output)} outputs, expected 1 and 1")
    rename_value(graph, inputs[0].name, INPUT_NAME)
    rename_value(graph, graph.output[0].name, OUTPUT_NAME)


def graph_to_fp16(graph) -> None:
    """Make a float32 graph all-float16: float initializers, Constant values and I/O types.

    Only for graphs made of :data:`FP16_OPS`; value_info is dropped (the checker re-infers it).
    """
    from onnx import TensorProto, numpy_helper

    unsupported = sorted({node.op_type for node in graph.node} - FP16_OPS)
    if unsupported:
        raise RuntimeError(f"bug: fp16 conversion does not know {', '.join(unsupported)}; check and add to FP16_OPS")
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            with np.errstate(over="ignore"):  # a value past fp16's range becomes Inf: the writer's check refuses it in one line
                init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
    for node in graph.node:
        if node.op_type != "Constant":
            continue
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                with np.errstate(over="ignore"):
                    attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
    del graph.value_info[:]
    for value in (*graph.input, *graph.output):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16


def _float32_boundary(graph) -> None:
    """Turn an all-fp16 graph into fp16 inside with float32 ``input``/``output`` (Casts at the edges)."""
    from onnx import TensorProto, helper

    inner_in, inner_out = f"{INPUT_NAME}_fp16", f"{OUTPUT_NAME}_fp16"
    _rename_in_nodes(graph, INPUT_NAME, inner_in)
    _rename_in_nodes(graph, OUTPUT_NAME, inner_out)
    graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT
    graph.node.insert(0, helper.make_node("Cast", [INPUT_NAME], [inner_in], name="input_to_fp16", to=TensorProto.FLOAT16))
    graph.node.append(helper.make_node("Cast", [inner_out], [OUTPUT_NAME], name="output_to_fp32", to=TensorProto.FLOAT))


def _torch_layers(module: nn.Module) -> dict[str, nn.Module]:
    return {name: mod for name, mod in module.named_modules() if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear))}


def _name_from_scope(node_name: str, known: dict[str, nn.Module]) -> str | None:
    """``/layer1/layer1.0/convbn1/Conv`` (TorchScript scopes) -> ``layer1.0.convbn1``."""
    parts = [p for p in node_name.split("/") if p][:-1]
    full = ""
    for part in parts:
        full = part if not full or part.startswith(full + ".") else f"{full}.{part}"
    return full if full in known else None


def _name_from_source(source: str, known: dict[str, nn.Module]) -> str | None:
    """``layer1.0.convbn1.weight`` or ``...parametrizations.weight.original`` -> the module name."""
    matches = [name for name in known if source.startswith(name + ".")]
    return max(matches, key=len) if matches else None


def _name_from_values(value: np.ndarray, known: dict[str, nn.Module]) -> str | None:
    """The one module whose weight equals ``value`` (in the graph's dtype)."""
    hits = []
    for name, mod in known.items():
        weight = getattr(mod, "weight", None)
        if isinstance(weight, torch.Tensor) and tuple(weight.shape) == value.shape:
            if np.array_equal(weight.detach().cpu().numpy().astype(value.dtype), value):
                hits.append(name)
    return hits[0] if len(hits) == 1 else None


def _rename_layers(graph, module: nn.Module, sparse: set[str], notes: list[str]) -> list[ExportedLayer]:
    """Name every Conv/Gemm node after its checkpoint layer, its weight ``<layer>.weight``."""
    known = _torch_layers(module)
    layers: list[ExportedLayer] = []
    used: set[str] = set()
    for node in list(graph.node):
        if node.op_type not in ("Conv", "Gemm"):
            continue
        index = GraphIndex(graph)  # renames below change names: one fresh index per node
        weight = index.trace_weight(node.input[1])
        if weight is None:
            raise RuntimeError(f"bug: {node.op_type} node {node.name!r} has a non-constant weight after export")
        name = (
            _name_from_scope(node.name, known)
            or _name_from_source(weight.source, known)
            or (None if weight.chain else _name_from_values(weight.value, known))
        )
        mapped = name is not None and name not in used
        if not mapped:
            notes.append(f"{node.op_type} node {node.name!r} could not be mapped to a checkpoint layer; name kept")
            name = node.name
        else:
            used.add(name)
            node.name = name
            rename_value(graph, weight.source, f"{name}.weight")
        bias = None
        if len(node.input) > 2 and node.input[2]:
            traced = index.trace_weight(node.input[2])
            if traced is not None and not traced.chain and mapped:
                rename_value(graph, traced.source, f"{name}.bias")
                bias = f"{name}.bias"
            else:
                bias = node.input[2]
        source = f"{name}.weight" if mapped else weight.source
        layers.append(ExportedLayer(name, node.op_type, source, bias, weight.dtype, name in sparse))
    return layers


def _assert_clean_graph(graph) -> None:
    """Fold already happened: a BatchNormalization left in the graph is a bug.

    A mask multiply on a weight would already have failed in :func:`_rename_layers` (the weight
    would not trace back to a constant through Q/DQ, Cast, Transpose, Reshape, Identity).
    """
    if any(node.op_type == "BatchNormalization" for node in graph.node):
        raise RuntimeError("bug: exported graph still has BatchNormalization nodes (fold should have removed them)")


# --- one canonical form, whichever exporter wrote the graph ------------------------------------


def canonical_form(model) -> None:
    """Rewrite an exported graph in place into the one form both torch exporters are reduced to.

    The TorchScript and the dynamo exporter spell the same network differently; after this the
    two graphs have the same nodes (``tests/test_export_dynamo.py`` compares them node for node):

    - Constant nodes become initializers, and an Identity of a constant is read through;
    - a Clip right after an int8 QuantizeLinear whose bounds cover [-128, 127] (a no-op) goes;
    - ``ReduceMean`` over H and W keeping dims (dynamo's ``AdaptiveAvgPool2d(1)``) becomes
      ``GlobalAveragePool``, and the rank-2 ``Reshape`` of its output ``Flatten(axis=1)``;
    - QuantizeLinear (then DequantizeLinear) nodes that read the same tensor with the same scale,
      zero point and axis are one node (the dynamo exporter merges them, TorchScript does not;
      TensorRT duplicates a Q/DQ pair per consumer as it needs);
    - nodes whose outputs nobody reads, and initializers nobody reads, go;
    - attributes spelled out at their schema default (``auto_pad="NOTSET"``, ``axis=1`` of a
      per-tensor Q/DQ) are left implicit.
    """
    graph = model.graph
    _constants_to_initializers(graph)
    _drop_noop_clips(graph)
    _global_pools(model)
    _merge_duplicate_qdq(graph)
    _prune(graph)
    _drop_default_attributes(model)


def _constants_to_initializers(graph) -> None:
    from onnx import numpy_helper

    index = GraphIndex(graph)
    for node in list(graph.node):
        if node.op_type == "Constant" and len(node.output) == 1:
            value = index.constant_array(node.output[0])
            if value is not None:
                graph.initializer.append(numpy_helper.from_array(np.asarray(value), node.output[0]))
                graph.node.remove(node)
    inits = {init.name for init in graph.initializer}
    outputs = {value.name for value in graph.output}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            _rename_in_nodes(graph, node.output[0], node.input[0])
            graph.node.remove(node)


def _drop_noop_clips(graph) -> None:
    from onnx import TensorProto

    index = GraphIndex(graph)
    outputs = {value.name for value in graph.output}
    for node in list(graph.node):
        if node.op_type != "Clip" or node.output[0] in outputs:
            continue
        producer = index.producers.get(node.input[0])
        if producer is None or producer.op_type != "QuantizeLinear" or len(producer.input) < 3:
            continue
        zp = index.initializers.get(producer.input[2])
        lo, hi = index.param(node, 1), index.param(node, 2)
        if zp is None or zp.data_type != TensorProto.INT8:
            continue
        if (lo is None or float(lo) <= -128) and (hi is None or float(hi) >= 127):
            _rename_in_nodes(graph, node.output[0], node.input[0])
            graph.node.remove(node)


def _global_pools(model) -> None:
    import onnx
    from onnx import helper

    graph = model.graph
    index = GraphIndex(graph)
    pooled: dict[str, object] = {}
    for node in list(graph.node):
        if node.op_type != "ReduceMean":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            axes = index.param(node, 1)
        if axes is None or attrs.get("keepdims", 1) != 1 or sorted(int(a) for a in np.ravel(axes)) not in ([2, 3], [-2, -1]):
            continue
        pool = helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
        graph.node.insert(list(graph.node).index(node), pool)
        graph.node.remove(node)
        pooled[node.output[0]] = pool
    if not pooled:
        return
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: v for v in (*inferred.value_info, *inferred.output)}  # a Reshape may write the graph output
    for node in list(graph.node):
        if node.op_type != "Reshape" or node.input[0] not in pooled:
            continue
        out = shapes.get(node.output[0])
        dims = out.type.tensor_type.shape.dim if out is not None else []
        if len(dims) == 2 and dims[1].HasField("dim_value"):
            flatten = helper.make_node("Flatten", [node.input[0]], list(node.output), name=node.name, axis=1)
            graph.node.insert(list(graph.node).index(node), flatten)
            graph.node.remove(node)


def _qdq_key(index: GraphIndex, node) -> tuple | None:
    scale, zp = index.param(node, 1), index.param(node, 2)
    if scale is None:
        return None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    zp_key = (str(zp.dtype), np.asarray(zp).tobytes()) if zp is not None else None
    return node.op_type, node.input[0], np.asarray(scale, dtype=np.float32).tobytes(), zp_key, axis if np.ndim(scale) else None


def _merge_duplicate_qdq(graph) -> None:
    outputs = {value.name for value in graph.output}
    for op in ("QuantizeLinear", "DequantizeLinear"):
        index = GraphIndex(graph)
        kept: dict[tuple, object] = {}
        for node in list(graph.node):
            if node.op_type != op or node.output[0] in outputs:
                continue
            key = _qdq_key(index, node)
            if key is None:
                continue
            first = kept.setdefault(key, node)
            if first is not node:
                _rename_in_nodes(graph, node.output[0], first.output[0])
                graph.node.remove(node)


def _prune(graph) -> None:
    outputs = {value.name for value in graph.output}
    while True:
        used = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if not any(out in used for out in node.output if out)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | outputs
    for init in list(graph.initializer):
        if init.name not in used:
            graph.initializer.remove(init)
    names = {out for node in graph.node for out in node.output}
    for value in list(graph.value_info):
        if value.name not in names:
            graph.value_info.remove(value)


def _drop_default_attributes(model) -> None:
    from onnx import defs, helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        return
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            schema = defs.get_schema(node.op_type, opset)
        except Exception:  # an op this onnx does not know: leave it as written
            continue
        for attr in list(node.attribute):
            spec = schema.attributes.get(attr.name)
            if spec is None or not spec.default_value.name:
                continue
            if helper.get_attribute_value(attr) == helper.get_attribute_value(spec.default_value):
                node.attribute.remove(attr)
