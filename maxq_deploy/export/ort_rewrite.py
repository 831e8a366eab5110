"""ONNX Runtime's fast INT8 form, rewritten from the TensorRT-form Q/DQ graph of a quantized checkpoint.

Why a rewrite and not ONNX Runtime's quantizer: the TensorRT-form graph already carries every
range of the checkpoint (PTQ or QAT-trained ``amax``) as Q/DQ scales, but in the form TensorRT
wants (symmetric int8, Q/DQ only on conv *inputs*). ONNX Runtime's CPU provider only runs a conv
in integer kernels (QLinearConv, VNNI) when the conv's inputs come from DequantizeLinear and its
output goes straight into a QuantizeLinear; on the TensorRT form every conv stays float after a
DequantizeLinear (0.66x of fp32). ``quantize_static`` with given ranges
(``TensorQuantOverrides``) still wants a calibration reader and calibrates every tensor it has no
range for (conv outputs, Add outputs): a second calibration. This module moves the checkpoint's
ranges to where ONNX Runtime needs them, with no data:

- weights: int8 initializers (the checkpoint's per-channel ``amax / 127``, symmetric, so 2:4 zeros
  stay 0) + DequantizeLinear on axis 0; conv biases int32 at ``s_x * s_w`` (what QLinearConv adds);
- activations: uint8. A range that is signed (the network input, a downsample output) keeps the
  int8 grid exactly: scale ``amax / 127``, zero point 128. A ReLU output (``unsigned_relu``) uses
  all 256 steps of [0, amax]: scale ``amax / 255``, zero point 0, and the ReLU disappears into the
  QuantizeLinear (its clamp at 0 is the ReLU); with ``unsigned_relu=False`` ReLU outputs keep the
  int8 grid (zero point 128), which is exact against the fake-quantized model but leaves the ReLU
  and every conv before one in float (slow: a comparison point, not a deployment form);
- a conv's output gets the range of the QuantizeLinear its (ReLU'd) output feeds; through MaxPool
  too (monotone, it commutes with the clamp);
- a conv whose output goes into a residual Add: the checkpoint has no range for it (TensorRT
  fuses Conv+Add), but the Add's other input ``b`` lies in ``[lo_b, hi_b]`` (its Q/DQ) and the
  Add's output is clamped to ``[L, H]`` by the QuantizeLinear after it (L = 0 after a ReLU), so
  clamping the conv output to ``[L - hi_b, H - lo_b]`` changes nothing downstream: that range is
  derived, not calibrated. The Add becomes QLinearAdd;
- a conv whose output reaches no QuantizeLinear (the last block before global pooling) stays
  float, with its weight stored as the fake-quantized values (``q * scale``: the same numbers).

Extra error against the fake-quantized model: the conv-before-Add rounding (one step of the
derived range) and bias rounding; ``unsigned_relu`` makes ReLU outputs finer, not coarser.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from maxq_deploy.onnx_graph.index import GraphIndex

#: Ops through which a non-negative tensor stays non-negative (values are a subset or averages).
_KEEPS_SIGN = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Identity"})
#: Ops that commute with a per-tensor clamp to [lo, hi] and keep the quantization grid (uint8 in, uint8 out).
_PASS_THROUGH = frozenset({"MaxPool"})
INT8_MAX = 127
#: How weights are stored (the checkpoint's per-channel ``amax`` either way, symmetric, so 2:4 zeros stay 0):
#: ``s8`` int8 in [-127, 127] (u8 x s8 kernels: fastest with VNNI, saturates without it); ``u8`` the same
#: integers + 128 as uint8, zero point 128 (U8U8 kernels: exact on every x86 CPU, the checkpoint's weights
#: unchanged); ``s7`` int8 in [-63, 63] at ``amax / 63`` (ONNX Runtime's ``reduce_range``: exact on every
#: x86 CPU, one bit of weight precision less).
WEIGHT_FORMS = {"s8": (np.int8, INT8_MAX, 0), "u8": (np.uint8, INT8_MAX, 128), "s7": (np.int8, 63, 0)}


@dataclass
class QuantParams:
    """One per-tensor uint8 quantization: value = (q - zero_point) * scale, q in [0, 255]."""

    scale: float
    zero_point: int

    @property
    def lo(self) -> float:
        return (0 - self.zero_point) * self.scale

    @property
    def hi(self) -> float:
        return (255 - self.zero_point) * self.scale


@dataclass
class RewriteReport:
    """What the rewrite did, layer by layer (checkpoint layer names)."""

    int8_convs: list[str] = field(default_factory=list)  # conv/gemm with integer input and output
    float_convs: list[str] = field(default_factory=list)  # conv/gemm that stays float (no output range)
    float_output: list[str] = field(default_factory=list)  # gemm with integer inputs and float output (logits)
    derived_ranges: dict[str, list[float]] = field(default_factory=dict)  # layer -> [lo, hi] from an Add
    removed_relus: int = 0
    quantized_adds: int = 0
    requantized: int = 0  # tensors with two different ranges (one re-quantization each)


class _Graph:
    """Producer/consumer index over an ONNX graph, kept valid by the few edits the rewrite makes."""

    def __init__(self, graph) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.consts: dict[str, np.ndarray] = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self._counter = 0

    def producers(self) -> dict[str, object]:
        """Fresh after every edit: the one graph index, rebuilt (the graphs are small)."""
        return GraphIndex(self.graph).producers

    def consumers(self) -> dict[str, list]:
        return defaultdict(list, GraphIndex(self.graph).consumers)

    def graph_outputs(self) -> set[str]:
        return {o.name for o in self.graph.output}

    def fresh(self, base: str) -> str:
        self._counter += 1
        return f"{base}__ort{self._counter}"

    def add_const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        for i, init in enumerate(self.graph.initializer):
            if init.name == name:
                del self.graph.initializer[i]
                break
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.consts[name] = value
        return name


def constants_to_initializers(graph) -> None:
    """Constant nodes -> initializers (the TorchScript exporter writes Q/DQ scales as Constant nodes)."""
    from onnx import numpy_helper

    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0])
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _replace_input(node, old: str, new: str) -> None:
    for i, name in enumerate(node.input):
        if name == old:
            node.input[i] = new


def rewrite_for_onnxruntime(model, unsigned_relu: bool = True, weight_form: str = "s8") -> RewriteReport:
    """Rewrite ``model`` (a TensorRT-form Q/DQ graph from ``export onnx``) in place; see the module docstring.

    ``weight_form``: one of :data:`WEIGHT_FORMS`.
    """
    from onnx import helper

    if weight_form not in WEIGHT_FORMS:
        raise ValueError(f"weight_form {weight_form!r}: choose one of {', '.join(WEIGHT_FORMS)}")
    graph = model.graph
    # The exporter's value_info types the Q/DQ outputs int8; this rewrite changes many to uint8, and
    # a stale type makes the checker refuse the graph ("x_zero_point has inconsistent type").
    del graph.value_info[:]
    constants_to_initializers(graph)
    g = _Graph(graph)
    report = RewriteReport()
    pairs = _qdq_pairs(g)

    # 1. weights: int8 initializers + DQ; remember each weight's scales for the bias
    weight_scales: dict[str, np.ndarray] = {}
    for q, dq in [(q, dq) for q, dq in pairs if q.input[0] in g.consts]:
        # float32 division and round-half-to-even: exactly what the QuantizeLinear being removed computes
        w = g.consts[q.input[0]].astype(np.float32)
        scale = np.asarray(g.consts[q.input[1]], dtype=np.float32)
        axis = _axis(q)
        shape = [1] * w.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[axis] = -1
        safe = np.where(scale > 0, scale, np.float32(1)).reshape(shape)
        w8 = np.where(scale.reshape(shape) > 0, np.clip(np.rint(w / safe), -INT8_MAX, INT8_MAX), 0).astype(np.int8)
        name = q.input[0]
        qname = g.add_const(f"{name}_quantized", w8)
        sname = g.add_const(f"{name}_scale", scale.astype(np.float32))
        zname = g.add_const(f"{name}_zero_point", np.zeros(scale.shape, np.int8))
        dq.input[:] = [qname, sname, zname]
        graph.node.remove(q)
        weight_scales[dq.output[0]] = scale.astype(np.float32)
    if weight_form != "s8":
        _convert_weights(g, weight_form)
    # 2. activations: each remaining Q/DQ pair -> uint8 params on the pair's input tensor
    act_pairs = [(q, dq) for q, dq in pairs if q.input[0] not in g.consts]
    producers = g.producers()
    nonneg_cache: dict[str, bool] = {}
    params_of: dict[str, QuantParams] = {}  # DQ output name -> the params it dequantizes with
    for q, dq in act_pairs:
        scale = float(np.asarray(g.consts[q.input[1]]).reshape(-1)[0])
        amax = scale * INT8_MAX
        if unsigned_relu and _nonnegative(q.input[0], producers, nonneg_cache):
            p = QuantParams(amax / 255.0, 0)
        else:
            p = QuantParams(scale, 128)
        _set_params(g, q, p)
        _set_params(g, dq, p)
        params_of[dq.output[0]] = p
    # 3. every conv/gemm: give its output a range where one exists, else leave it float
    for node in [n for n in graph.node if n.op_type in ("Conv", "Gemm")]:
        _place_output_range(g, node, params_of, report, unsigned_relu)
    # 4. biases of integer convs: int32 at s_x * s_w (QLinearConv's accumulator scale)
    producers = g.producers()
    for node in [n for n in graph.node if n.op_type in ("Conv", "Gemm")]:
        if node.name in report.float_convs:
            _fold_weight(g, node, producers)
            continue
        if len(node.input) > 2 and node.input[2] in g.consts:
            x_dq, w_dq = producers.get(node.input[0]), producers.get(node.input[1])
            if x_dq is None or w_dq is None or x_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear":
                continue
            bias = g.consts[node.input[2]].astype(np.float64)
            s = float(np.asarray(g.consts[x_dq.input[1]]).reshape(-1)[0]) * np.asarray(g.consts[w_dq.input[1]], dtype=np.float64).reshape(-1)
            s = np.broadcast_to(s, bias.shape)
            b32 = np.round(bias / np.where(s > 0, s, 1.0)).astype(np.int32)
            name = node.input[2]
            qname = g.add_const(f"{name}_quantized", np.where(s > 0, b32, 0).astype(np.int32))
            sname = g.add_const(f"{name}_quantized_scale", s.astype(np.float32))
            zname = g.add_const(f"{name}_quantized_zero_point", np.zeros(bias.shape, np.int32))
            out = g.fresh(f"{name}_dequantized")
            graph.node.append(helper.make_node("DequantizeLinear", [qname, sname, zname], [out], name=f"{name}_DequantizeLinear", axis=0))
            node.input[2] = out
    _drop_unused_initializers(graph)
    _topological_sort(graph)
    return report


def _convert_weights(g: _Graph, weight_form: str) -> None:
    """Every int8 weight behind a DequantizeLinear -> :data:`WEIGHT_FORMS` ``weight_form`` (same values or 7 bits)."""
    dtype, qmax, zero = WEIGHT_FORMS[weight_form]
    for dq in [n for n in g.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in g.consts]:
        w8 = g.consts[dq.input[0]]
        if w8.dtype != np.int8:
            continue
        scale = np.asarray(g.consts[dq.input[1]], dtype=np.float64)
        q = w8.astype(np.int32)
        if qmax != INT8_MAX:  # the same amax in fewer steps: re-quantize the int8 values (round half to even)
            q = np.clip(np.rint(q * (qmax / INT8_MAX)), -qmax, qmax).astype(np.int32)
            scale = scale * (INT8_MAX / qmax)
        base = g.fresh(dq.input[0])
        dq.input[:] = [g.add_const(dq.input[0], (q + zero).astype(dtype)),  # keeps its name (<layer>.weight)
                       g.add_const(f"{base}_scale", scale.astype(np.float32)),
                       g.add_const(f"{base}_zero_point", np.full(scale.shape, zero, dtype))]


def _axis(node) -> int:
    for attr in node.attribute:
        if attr.name == "axis":
            return int(attr.i)
    return 1


def _qdq_pairs(g: _Graph) -> list[tuple]:
    consumers = g.consumers()
    pairs = []
    for q in [n for n in g.graph.node if n.op_type == "QuantizeLinear"]:
        users = consumers.get(q.output[0], [])
        if len(users) != 1 or users[0].op_type != "DequantizeLinear":
            raise RuntimeError(f"bug: QuantizeLinear {q.name!r} is not followed by exactly one DequantizeLinear")
        pairs.append((q, users[0]))
    return pairs


def _set_params(g: _Graph, node, p: QuantParams) -> None:
    base = g.fresh(node.name or node.op_type)
    s = g.add_const(f"{base}_scale", np.array(p.scale, dtype=np.float32))
    z = g.add_const(f"{base}_zero_point", np.array(p.zero_point, dtype=np.uint8))
    node.input[1], node.input[2] = s, z
    del node.attribute[:]  # per-tensor: no axis


def _nonnegative(name: str, producers: dict, cache: dict[str, bool]) -> bool:
    """Whether a tensor is >= 0 by construction (a ReLU, or pooling/reshaping of one)."""
    if name in cache:
        return cache[name]
    node = producers.get(name)
    result = False
    if node is not None:
        if node.op_type == "Relu":
            result = True
        elif node.op_type in _KEEPS_SIGN:
            result = _nonnegative(node.input[0], producers, cache)
        elif node.op_type == "DequantizeLinear":
            q = producers.get(node.input[0])
            result = q is not None and q.op_type == "QuantizeLinear" and _nonnegative(q.input[0], producers, cache)
    cache[name] = result
    return result


def _dq_params(g: _Graph, node) -> QuantParams | None:
    if node is None or node.op_type != "DequantizeLinear" or node.input[0] in g.consts:
        return None
    scale = float(np.asarray(g.consts[node.input[1]]).reshape(-1)[0])
    zp = int(np.asarray(g.consts[node.input[2]]).reshape(-1)[0])
    return QuantParams(scale, zp)


def _output_quantizers(g: _Graph, name: str, consumers: dict) -> tuple[list, list] | None:
    """The QuantizeLinear nodes reading ``name`` directly or through MaxPool, and the pass-through nodes.

    None when some consumer is anything else (the tensor is also needed in float).
    """
    qs, through = [], []
    for user in consumers.get(name, []):
        if user.op_type == "QuantizeLinear":
            qs.append(user)
        elif user.op_type in _PASS_THROUGH and len(user.output) == 1:
            inner = _output_quantizers(g, user.output[0], consumers)
            if inner is None:
                return None
            qs.extend(inner[0])
            through.append(user)
        else:
            return None
    if name in g.graph_outputs() or not qs:
        return None
    return qs, through


def _params_of_q(g: _Graph, q) -> QuantParams:
    return QuantParams(float(np.asarray(g.consts[q.input[1]]).reshape(-1)[0]), int(np.asarray(g.consts[q.input[2]]).reshape(-1)[0]))


def _quantize_output(g: _Graph, tensor: str, p: QuantParams, qs: list, report: RewriteReport) -> None:
    """Put one Q/DQ with ``p`` on ``tensor``; the existing quantizers downstream re-quantize (or vanish if equal)."""
    from onnx import helper

    consumers = g.consumers()
    q_out, dq_out = g.fresh(f"{tensor}_quantized"), g.fresh(f"{tensor}_dequantized")
    base = g.fresh(tensor)
    s = g.add_const(f"{base}_scale", np.array(p.scale, dtype=np.float32))
    z = g.add_const(f"{base}_zero_point", np.array(p.zero_point, dtype=np.uint8))
    for user in consumers.get(tensor, []):
        _replace_input(user, tensor, dq_out)
    g.graph.node.append(helper.make_node("QuantizeLinear", [tensor, s, z], [q_out], name=f"{base}_QuantizeLinear"))
    g.graph.node.append(helper.make_node("DequantizeLinear", [q_out, s, z], [dq_out], name=f"{base}_DequantizeLinear"))
    # a Q reading the tensor directly with the very same params is now a no-op pair (DQ -> Q): drop
    # it and its DQ; one behind a MaxPool stays (DQ -> MaxPool -> Q is what runs MaxPool in uint8)
    consumers = g.consumers()
    for q in qs:
        if q.input[0] == dq_out and _params_of_q(g, q) == p:
            (dq,) = consumers[q.output[0]]
            for user in consumers.get(dq.output[0], []):
                _replace_input(user, dq.output[0], q.input[0])
            g.graph.node.remove(q)
            g.graph.node.remove(dq)
            consumers = g.consumers()
        elif _params_of_q(g, q) != p:
            report.requantized += 1


def _place_output_range(g: _Graph, node, params_of: dict[str, QuantParams], report: RewriteReport, unsigned_relu: bool) -> None:
    consumers = g.consumers()
    producers = g.producers()
    if _dq_params(g, producers.get(node.input[0])) is None:
        report.float_convs.append(node.name)  # its input is not quantized either
        return
    out = node.output[0]
    users = consumers.get(out, [])
    relu = users[0] if len(users) == 1 and users[0].op_type == "Relu" else None
    tensor = relu.output[0] if relu is not None else out
    found = _output_quantizers(g, tensor, consumers)
    if found is not None:
        qs, _ = found
        candidates = [_params_of_q(g, q) for q in qs]
        p = max(candidates, key=lambda c: (c.hi - c.lo, c.hi))
        if relu is not None and p.zero_point == 0:  # the Q's clamp at 0 is the ReLU
            _bypass(g, relu)
            report.removed_relus += 1
            tensor = out
        elif relu is not None:
            report.float_convs.append(node.name)  # a signed grid after a ReLU: the ReLU must stay float
            return
        _quantize_output(g, tensor, p, qs, report)
        report.int8_convs.append(node.name)
        return
    if relu is None and len(users) == 1 and users[0].op_type == "Add":
        if _quantize_add(g, node, users[0], report):
            report.int8_convs.append(node.name)
            return
    if node.op_type == "Gemm" and relu is None:
        report.float_output.append(node.name)  # the classifier: integer Gemm, float logits (QGemm)
        return
    report.float_convs.append(node.name)


def _bypass(g: _Graph, node) -> None:
    """Remove a one-input, one-output node, wiring its consumers to its input."""
    for user in g.consumers().get(node.output[0], []):
        _replace_input(user, node.output[0], node.input[0])
    g.graph.node.remove(node)


def _quantize_add(g: _Graph, conv, add, report: RewriteReport) -> bool:
    """conv -> Add(conv, DQ(b)) -> [Relu] -> Q: quantize the conv output with the derived range."""
    producers, consumers = g.producers(), g.consumers()
    other = add.input[1] if add.input[0] == conv.output[0] else add.input[0]
    b = _dq_params(g, producers.get(other))
    if b is None:
        return False
    users = consumers.get(add.output[0], [])
    relu = users[0] if len(users) == 1 and users[0].op_type == "Relu" else None
    tensor = relu.output[0] if relu is not None else add.output[0]
    found = _output_quantizers(g, tensor, consumers)
    if found is None:
        return False
    qs, _ = found
    p_out = max((_params_of_q(g, q) for q in qs), key=lambda c: (c.hi - c.lo, c.hi))
    lo_out, hi_out = (max(p_out.lo, 0.0), p_out.hi) if relu is not None else (p_out.lo, p_out.hi)
    if relu is not None and p_out.zero_point != 0:
        return False  # the ReLU would have to stay between the Add and its Q
    lo, hi = lo_out - b.hi, hi_out - b.lo
    scale = (hi - lo) / 255.0
    zp = int(np.clip(np.round(-lo / scale), 0, 255))
    if relu is not None:
        _bypass(g, relu)
        report.removed_relus += 1
    _quantize_output(g, add.output[0], p_out, qs, report)
    _quantize_output(g, conv.output[0], QuantParams(scale, zp), [], report)
    report.derived_ranges[conv.name] = [float(lo), float(hi)]
    report.quantized_adds += 1
    return True


def _fold_weight(g: _Graph, node, producers: dict) -> None:
    """A float conv: its weight becomes the fake-quantized float values (no DequantizeLinear at run time)."""
    dq = producers.get(node.input[1])
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in g.consts:
        return
    w8 = g.consts[dq.input[0]].astype(np.float32)
    scale = np.asarray(g.consts[dq.input[1]], dtype=np.float32)
    shape = [1] * w8.ndim
    if scale.ndim == 1 and scale.size > 1:
        shape[_axis(dq)] = -1
    if len(dq.input) > 2 and dq.input[2] in g.consts:  # uint8 weights: zero point 128
        w8 = w8 - np.asarray(g.consts[dq.input[2]], dtype=np.float32).reshape(shape if scale.size > 1 else [])
    base = dq.input[0].removesuffix("_quantized")
    name = base if base != dq.input[0] else f"{base}_float"  # an INT8 initializer keeps its own name
    g.add_const(name, (w8 * scale.reshape(shape)).astype(np.float32))
    node.input[1] = name
    if len(g.consumers().get(dq.output[0], [])) == 0:
        g.graph.node.remove(dq)


def _drop_unused_initializers(graph) -> None:
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _topological_sort(graph) -> None:
    """Nodes appended by the rewrite go where their inputs exist (ONNX wants a sorted node list)."""
    available = {init.name for init in graph.initializer} | {i.name for i in graph.input} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            raise RuntimeError(f"bug: the rewritten graph has a cycle or a dangling input at {rest[0].name!r}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)
