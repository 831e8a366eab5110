"""Where an INT8 graph and the fake-quantized PyTorch model part ways: the first layer, in quantization steps.

A failed INT8 parity check says how far the logits moved; this says where. Every Conv/Gemm whose
input comes from a DequantizeLinear of a quantized tensor is compared at that input: ONNX Runtime's
integer tensor (added as an extra graph output, so the same kernels run: only QuantizeLinear/
QLinear* outputs are exposed, never the float tensors whose fusion would change) dequantized, next
to the output of the layer's ``_input_quantizer`` in PyTorch. The unit is one quantization step
(the coarser of the graph's scale and the checkpoint's ``amax / 127``): values that sit on a
rounding boundary may differ by one step in any correct graph; more than one step is divergence.
"""

from __future__ import annotations

import os

import numpy as np

#: More than this many quantization steps apart: diverged (one step is a rounding tie).
STEP_TOLERANCE = 1.0


def _layer_inputs(model) -> list[tuple[str, str, float, int]]:
    """(layer, quantized tensor feeding its DequantizeLinear input, scale, zero point) in graph order."""
    from onnx import numpy_helper

    from maxq_deploy.export.ort_rewrite import constants_to_initializers
    from maxq_deploy.onnx_graph.index import GraphIndex

    constants_to_initializers(model.graph)
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = GraphIndex(model.graph).producers
    found = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or not node.name:
            continue
        dq = producers.get(node.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] in consts or dq.input[1] not in consts:
            continue
        zp = consts.get(dq.input[2]) if len(dq.input) > 2 else None
        found.append((node.name, dq.input[0], float(consts[dq.input[1]].reshape(-1)[0]),
                      0 if zp is None else int(zp.reshape(-1)[0])))
    return found


def first_divergence(onnx_path: str | os.PathLike[str], module, x, reference_arithmetic: bool = False) -> dict | None:
    """The first layer whose quantized input differs by more than one step; None when nothing can be compared.

    Returns ``{"layer", "max_steps", "share", "step", "layers_checked"}`` (``layer`` None: every
    compared layer input agrees within one step, the difference grows at the output).
    """
    import torch
    from onnx import helper

    from maxq_deploy.onnx_graph.index import load_onnx
    from maxq_deploy.runtimes.onnxruntime_runner import session_from_onnx

    model = load_onnx(onnx_path)
    layers = [entry for entry in _layer_inputs(model) if _quantizer(module, entry[0]) is not None]
    if not layers:
        return None
    types = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2:
            types[node.output[0]] = node.input[2]
    inits = {i.name: i.data_type for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    for _, tensor, _, _ in layers:
        if tensor not in outputs and types.get(tensor) in inits:
            model.graph.output.append(helper.make_tensor_value_info(tensor, inits[types[tensor]], None))
    session = session_from_onnx(onnx_path, model=model.SerializeToString(), reference_arithmetic=reference_arithmetic)
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x.numpy()})))
    captured: dict[str, np.ndarray] = {}
    hooks = [_quantizer(module, layer).register_forward_hook(
        lambda _m, _i, out, layer=layer: captured.__setitem__(layer, out.detach().float().cpu().numpy())) for layer, *_ in layers]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for hook in hooks:
            hook.remove()
    checked = 0
    for layer, tensor, scale, zero in layers:
        if tensor not in got or layer not in captured or got[tensor].shape != captured[layer].shape:
            continue
        checked += 1
        onnx_values = (got[tensor].astype(np.float64) - zero) * scale
        step = max(scale, _torch_step(_quantizer(module, layer)) or 0.0)
        steps = np.abs(onnx_values - captured[layer]) / step
        worst = float(steps.max())
        if worst > STEP_TOLERANCE + 1e-3:
            return {"layer": layer, "max_steps": round(worst, 2), "share": float((steps > STEP_TOLERANCE + 1e-3).mean()),
                    "step": step, "layers_checked": checked}
    return {"layer": None, "max_steps": None, "share": 0.0, "step": None, "layers_checked": checked}


def describe_divergence(d: dict) -> str:
    """One clause for the ParityError message."""
    if d.get("layer") is None:
        return (f"all {d['layers_checked']} layer inputs agree with the fake-quantized model within one quantization "
                "step: the difference builds up at the output")
    return (f"first layer where ONNX Runtime and the fake-quantized model differ by more than one quantization step: "
            f"{d['layer']} (input off by up to {d['max_steps']:g} steps of {d['step']:.3g} on {d['share']:.1%} of its values; "
            f"{d['layers_checked'] - 1} layer(s) before it agree)")


def _quantizer(module, layer: str):
    try:
        return getattr(module.get_submodule(layer), "_input_quantizer", None)
    except AttributeError:
        return None


def _torch_step(quantizer) -> float | None:
    amax = getattr(quantizer, "amax", None)
    try:
        return float(np.asarray(amax.detach().cpu()).reshape(-1).max()) / 127.0
    except AttributeError:
        return None
