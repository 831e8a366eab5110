"""An exact integer emulation of the INT8 Q/DQ graphs maxq-deploy writes (a test helper, not a runtime).

The reference the INT8 tests compare ONNX Runtime and OpenVINO with, layer by layer:

- a Conv/Gemm whose input and weight come from DequantizeLinear of integer tensors is computed
  as ONNX Runtime's integer kernels compute it: ``sum((x_q - zp_x) * (w_q - zp_w))`` accumulated
  exactly (int64, which holds every int32 sum), times ``s_x * s_w``, plus the bias;
- QuantizeLinear is ONNX's: ``saturate(round_half_to_even(x / scale) + zero_point)``;
- every other op (Relu, Add, MaxPool, pooling, Flatten/Reshape) as ONNX defines it, in float64.

``saturate_int16=True`` emulates the u8 x s8 kernels of x86 CPUs without VNNI (AVX2/AVX-512BW
``vpmaddubsw``): the activations as uint8 (int8 ones shifted by 128, as ONNX Runtime's
QDQS8ToU8 transform does), each pair of adjacent products along the reduction axis (input channels
innermost, then kernel position: the NHWC order of the integer convolution) summed in int16
with saturation, then the pairs summed in int32. Only the layers ONNX Runtime fuses into integer
kernels saturate (:func:`integer_layer`): a Conv whose output goes only into QuantizeLinear (after
an optional ReLU the quantizer absorbs), and a Gemm; layers with uint8 weights (U8U8) never do.
With it, the non-VNNI failure and its fix can be shown on any CPU.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

INT16_MIN, INT16_MAX = -32768, 32767


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _consts(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
    return values


def _per_axis(p: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    p = np.asarray(p)
    if p.ndim == 0 or p.size == 1:
        return p.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return p.reshape(shape)


def quantize(x: np.ndarray, scale, zero_point, dtype, axis: int = 1) -> np.ndarray:
    """ONNX QuantizeLinear: round half to even, add the zero point, saturate to ``dtype``."""
    info = np.iinfo(dtype)
    s = _per_axis(np.asarray(scale, np.float64), x.ndim, axis)
    z = _per_axis(np.asarray(zero_point, np.int64), x.ndim, axis)
    return np.clip(np.rint(x.astype(np.float64) / s) + z, info.min, info.max).astype(dtype)


def integer_layer(node, producers: dict, consumers: dict, consts: dict) -> bool:
    """Whether ONNX Runtime's CPU provider runs this Conv/Gemm in its integer kernels (QLinearConv, QGemm)."""
    if node.op_type not in ("Conv", "Gemm"):
        return False
    dqs = [producers.get(name) for name in node.input[:2]]
    if any(d is None or d.op_type != "DequantizeLinear" for d in dqs):
        return False
    if node.op_type == "Gemm":
        return True
    users = consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Relu":
        relu_users = consumers.get(users[0].output[0], [])
        return bool(relu_users) and all(u.op_type == "QuantizeLinear" and _zero_is_min(u, consts) for u in relu_users)
    return bool(users) and all(u.op_type == "QuantizeLinear" for u in users)


def _zero_is_min(q, consts: dict) -> bool:
    """A QuantizeLinear whose clamp at zero is a ReLU (uint8, zero point 0)."""
    zp = consts.get(q.input[2]) if len(q.input) > 2 else None
    return zp is not None and zp.dtype == np.uint8 and int(np.asarray(zp).reshape(-1)[0]) == 0


def _pairwise_saturated(xu: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``xu`` [N, K, L] uint8 values, ``w`` [M, K] int8 values -> [N, M, L]: int16-saturated pairs, int32 sum."""
    n, k, length = xu.shape
    if k % 2:
        xu = torch.cat([xu, torch.zeros(n, 1, length, dtype=xu.dtype)], 1)
        w = torch.cat([w, torch.zeros(w.shape[0], 1, dtype=w.dtype)], 1)
    xe, xo = xu[:, 0::2], xu[:, 1::2]  # [N, K/2, L]
    we, wo = w[:, 0::2], w[:, 1::2]  # [M, K/2]
    out = torch.empty(n, w.shape[0], length, dtype=torch.int64)
    for i in range(n):
        pairs = xe[i][None] * we[:, :, None] + xo[i][None] * wo[:, :, None]  # [M, K/2, L]
        out[i] = pairs.clamp_(INT16_MIN, INT16_MAX).sum(1)
    return out


def _conv_accumulate(xq: np.ndarray, zx: int, wq: np.ndarray, zw: np.ndarray, attrs: dict, saturate: bool) -> np.ndarray:
    """Integer accumulation of one convolution (or Gemm as a 1x1 conv): int64 [N, M, H, W]."""
    pads = attrs.get("pads", [0, 0, 0, 0])
    stride, dilation, group = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1]), attrs.get("group", 1)
    x = torch.from_numpy(xq.astype(np.int64) - zx)
    w = torch.from_numpy(wq.astype(np.int64) - np.asarray(zw, np.int64).reshape(-1, *[1] * (wq.ndim - 1)))
    if not saturate or wq.dtype == np.uint8:
        x = torch.nn.functional.pad(x.double(), (pads[1], pads[3], pads[0], pads[2]))
        acc = torch.nn.functional.conv2d(x, w.double(), stride=stride, dilation=dilation, groups=group)
        return acc.round().long().numpy()  # integer-valued float64 sums below 2**53: exact
    if group != 1:
        raise NotImplementedError("saturation emulation of grouped convolutions")
    # the kernel sees uint8 activations: x_u8 = x_q (uint8) or x_q + 128 (int8); its zero point is subtracted apart
    shift = 128 if xq.dtype == np.int8 else 0
    xu = torch.from_numpy(xq.astype(np.int64) + shift)
    zu = zx + shift
    # padding holds the zero point (the value of 0.0), in the kernel's uint8 domain
    xu = torch.nn.functional.pad(xu, (pads[1], pads[3], pads[0], pads[2]), value=zu)
    m, c, kh, kw = w.shape
    cols = torch.nn.functional.unfold(xu.double(), (kh, kw), dilation=dilation, stride=stride).long()  # [N, C*kh*kw, L]
    n, _, length = cols.shape
    cols = cols.reshape(n, c, kh * kw, length).transpose(1, 2).reshape(n, kh * kw * c, length)  # NHWC order
    wk = w.reshape(m, c, kh * kw).transpose(1, 2).reshape(m, kh * kw * c)
    acc = _pairwise_saturated(cols, wk) - zu * wk.sum(1)[None, :, None]
    hout = (xq.shape[2] + pads[0] + pads[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    return acc.reshape(n, m, hout, -1).numpy()


def run_graph(model, x: np.ndarray, saturate_int16: bool = False) -> dict[str, np.ndarray]:
    """Every tensor of ``model`` (an ``onnx.ModelProto``) on input ``x``; float tensors as float64."""
    consts = _consts(model)
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    values: dict[str, np.ndarray] = dict(consts)
    values[graph.input[0].name] = np.asarray(x, np.float64)
    for node in graph.node:
        a = _attrs(node)
        ins = [values[name] if name else None for name in node.input]
        op = node.op_type
        if op == "Constant":
            continue
        if op == "QuantizeLinear":
            zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), np.uint8)
            out = quantize(ins[0], ins[1], zp, zp.dtype, a.get("axis", 1))
        elif op == "DequantizeLinear":
            zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros((), ins[0].dtype)
            axis = a.get("axis", 1)
            out = (ins[0].astype(np.int64) - _per_axis(zp.astype(np.int64), ins[0].ndim, axis)) * _per_axis(
                ins[1].astype(np.float64), ins[0].ndim, axis)
        elif op in ("Conv", "Gemm") and _is_quantized(node, producers, consts):
            out = _integer_layer(node, a, producers, values, saturate_int16 and integer_layer(node, producers, consumers, consts))
        elif op == "Conv":
            pads = a.get("pads", [0, 0, 0, 0])
            xt = torch.nn.functional.pad(torch.from_numpy(ins[0].astype(np.float64)), (pads[1], pads[3], pads[0], pads[2]))
            out = torch.nn.functional.conv2d(xt, torch.from_numpy(ins[1].astype(np.float64)),
                                             None if len(ins) < 3 else torch.from_numpy(ins[2].astype(np.float64)),
                                             stride=a.get("strides", [1, 1]), dilation=a.get("dilations", [1, 1]),
                                             groups=a.get("group", 1)).numpy()
        elif op == "Gemm":
            b = ins[1].T if a.get("transB", 0) else ins[1]
            out = ins[0].astype(np.float64) @ b.astype(np.float64) + (0 if len(ins) < 3 else ins[2])
        elif op == "Relu":
            out = np.maximum(ins[0], 0)
        elif op == "Add":
            out = ins[0] + ins[1]
        elif op == "MaxPool":
            pads = a.get("pads", [0, 0, 0, 0])
            xt = torch.nn.functional.pad(torch.from_numpy(ins[0].astype(np.float64)), (pads[1], pads[3], pads[0], pads[2]),
                                         value=-np.inf if ins[0].dtype.kind == "f" else float(np.iinfo(ins[0].dtype).min))
            out = torch.nn.functional.max_pool2d(xt, a["kernel_shape"], a.get("strides", [1, 1])).numpy().astype(ins[0].dtype)
        elif op == "GlobalAveragePool":
            out = ins[0].mean(axis=(2, 3), keepdims=True)
        elif op == "AveragePool":
            out = torch.nn.functional.avg_pool2d(torch.from_numpy(ins[0]), a["kernel_shape"], a.get("strides")).numpy()
        elif op == "Flatten":
            out = ins[0].reshape(ins[0].shape[0], -1)
        elif op == "Reshape":
            shape = [d if d != 0 else ins[0].shape[i] for i, d in enumerate(ins[1].tolist())]
            out = ins[0].reshape(shape)
        elif op in ("Identity", "Cast"):
            out = ins[0]
        else:
            raise NotImplementedError(f"int8 emulation: op {op}")
        values[node.output[0]] = out
    return values


def _is_quantized(node, producers: dict, consts: dict) -> bool:
    dqs = [producers.get(name) for name in node.input[:2]]
    return all(d is not None and d.op_type == "DequantizeLinear" for d in dqs)


def _integer_layer(node, a: dict, producers: dict, values: dict, saturate: bool) -> np.ndarray:
    x_dq, w_dq = producers[node.input[0]], producers[node.input[1]]
    xq, wq = values[x_dq.input[0]], values[w_dq.input[0]]
    sx, zx = float(values[x_dq.input[1]].reshape(-1)[0]), int(values[x_dq.input[2]].reshape(-1)[0])
    sw = values[w_dq.input[1]].astype(np.float64).reshape(-1)
    zw = values[w_dq.input[2]].astype(np.int64).reshape(-1) if len(w_dq.input) > 2 else np.zeros(1, np.int64)
    if node.op_type == "Gemm":
        wmat = wq if a.get("transB", 0) else wq.T  # [M, K]
        acc = _conv_accumulate(xq.reshape(*xq.shape, 1, 1), zx, wmat.reshape(*wmat.shape, 1, 1), zw, {}, saturate)
        acc = acc.reshape(acc.shape[0], -1)
        out = acc * (sx * sw)[None, :]
    else:
        acc = _conv_accumulate(xq, zx, wq, zw, a, saturate)
        out = acc * (sx * sw)[None, :, None, None]
    if len(node.input) > 2 and node.input[2]:
        b = values[node.input[2]].astype(np.float64)
        out = out + (b if node.op_type == "Gemm" else b.reshape(1, -1, 1, 1))
    return out
