"""The quantized network with every quantizer frozen to constant scales (plain torch, no backend).

What the INT8 Q/DQ export is made from. A quantized checkpoint holds the folded weights and a
range (``amax``) for every quantizer; here each quantizer becomes a :class:`FixedQuantizer`
whose scale is a constant (``amax / 127``: a Python float per tensor, a float32 buffer per
channel), so no scale is computed from a tensor at trace time. That is what lets torch's current
(dynamo) exporter trace it: pytorch-quantization and ModelOpt compute the scale from the amax
tensor and fail there (``GuardOnDataDependentSymNode``). Neither backend is imported: a
checkpoint made by either exports (and runs) with torch alone.

The op each quantizer traces to is the exporter's own Q/DQ op:

- ``torch.onnx.export(dynamo=True)`` (``torch.export``): ``quantized_decomposed.quantize_per_*``
  then ``dequantize_per_*``, which it writes as QuantizeLinear/DequantizeLinear (the fake-quant
  ops of torch have no fake-tensor kernel for a dynamic batch axis);
- the TorchScript exporter (``dynamo=False``, where ``torch.jit.is_tracing()``):
  ``torch.fake_quantize_per_tensor_affine`` / ``_per_channel_affine``, which it writes as the
  same QuantizeLinear/DequantizeLinear pair (what pytorch-quantization's own export emitted).

Both quantize to the full int8 range [-128, 127] with zero point 0 (ONNX's QuantizeLinear). Run
eagerly, the module computes ONNX's own arithmetic (``x / scale`` in float32, round half to
even, saturate), so it is an exact reference for the graph. Names match the backends' quantizers
(``layer1.0.convbn1._input_quantizer``, ``._weight_quantizer``, ``layer1.0.residual_quantizer``,
``avgpool._input_quantizer``), so the checkpoint's ``quantizers`` dict maps one to one.
"""

from __future__ import annotations

import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed before any export)
from torch import nn
from torch.nn import functional as F

from maxq_deploy.archs.layers import FoldedLayers
from maxq_deploy.core.errors import InputFileError

#: The int8 range of ONNX QuantizeLinear (TensorRT: symmetric, zero point 0).
QMIN, QMAX = -128, 127
#: amax maps to this (symmetric, as the backends calibrate it).
BOUND = 127


class FixedQuantizer(nn.Module):
    """Symmetric int8 fake quantization with a constant scale; an identity where ``amax`` is None."""

    def __init__(self, amax: torch.Tensor | None = None, axis: int = 0):
        super().__init__()
        self.enabled = amax is not None
        self.axis: int | None = None
        self.scale = 1.0
        if amax is None:
            return
        amax = amax.detach().float().cpu()
        if amax.numel() == 1:
            self.scale = float(amax.item()) / BOUND  # a Python float: a constant to every exporter
        else:
            self.axis = axis
            self.register_buffer("channel_scale", amax.reshape(-1) / BOUND)
            self.register_buffer("zero_point", torch.zeros(amax.numel(), dtype=torch.int32))

    def hold_weight(self, weight: torch.Tensor) -> None:
        """Store ``weight`` quantized (int8, exactly as ONNX QuantizeLinear rounds it): the dynamo export
        then writes the pre-quantized form TensorRT documents (int8 initializer -> DequantizeLinear)."""
        from maxq_deploy.quantize.int8_weights import quantize_like_onnx

        scale = self.channel_scale.numpy() if self.axis is not None else torch.tensor(self.scale).numpy()
        q = quantize_like_onnx(weight.detach().cpu().numpy(), scale, torch.zeros(scale.shape, dtype=torch.int8).numpy(), self.axis or 0)
        self.register_buffer("int8_weight", torch.from_numpy(q))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        held = getattr(self, "int8_weight", None)
        if torch.jit.is_tracing():  # the TorchScript exporter knows only the fake-quant ops
            if self.axis is None:
                return torch.fake_quantize_per_tensor_affine(x, self.scale, 0, QMIN, QMAX)
            zero_point = torch.zeros_like(self.channel_scale, dtype=torch.int32)  # folded into the graph's int8 zeros
            return torch.fake_quantize_per_channel_affine(x, self.channel_scale, zero_point, self.axis, QMIN, QMAX)
        if torch.compiler.is_exporting() or torch.compiler.is_compiling():  # torch.export: the ops it writes as Q/DQ
            return self._traced(x, held)
        return self._onnx_math(x, held)

    def _traced(self, x: torch.Tensor, held: torch.Tensor | None) -> torch.Tensor:
        ops = torch.ops.quantized_decomposed
        if held is not None:  # a weight: its int8 values are constants, only the dequantization is traced
            if self.axis is None:
                return ops.dequantize_per_tensor(held, self.scale, 0, QMIN, QMAX, torch.int8)
            return ops.dequantize_per_channel(held, self.channel_scale, self.zero_point, self.axis, QMIN, QMAX, torch.int8)
        if self.axis is None:
            q = ops.quantize_per_tensor(x, self.scale, 0, QMIN, QMAX, torch.int8)
            return ops.dequantize_per_tensor(q, self.scale, 0, QMIN, QMAX, torch.int8)
        q = ops.quantize_per_channel(x, self.channel_scale, self.zero_point, self.axis, QMIN, QMAX, torch.int8)
        return ops.dequantize_per_channel(q, self.channel_scale, self.zero_point, self.axis, QMIN, QMAX, torch.int8)

    def _onnx_math(self, x: torch.Tensor, held: torch.Tensor | None) -> torch.Tensor:
        """Eager: exactly ONNX's QuantizeLinear (x / float32 scale, round half to even, saturate) + DequantizeLinear."""
        if self.axis is None:
            scale = torch.tensor(self.scale, dtype=torch.float32, device=x.device)
        else:
            shape = [1] * x.dim()
            shape[self.axis] = -1
            scale = self.channel_scale.reshape(shape).to(x.device)
        q = held.to(x.dtype) if held is not None else torch.clamp(torch.round(x / scale), QMIN, QMAX)
        return q * scale

    def extra_repr(self) -> str:
        if not self.enabled:
            return "disabled"
        return f"scale={self.scale:.6g}" if self.axis is None else f"per-channel axis={self.axis} ({self.channel_scale.numel()})"


class _InputAndWeightQuantizers:
    """A layer whose input and weight pass a (not yet set) quantizer each."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._input_quantizer = FixedQuantizer()
        self._weight_quantizer = FixedQuantizer()


class FrozenQuantConv2d(_InputAndWeightQuantizers, nn.Conv2d):
    """A folded conv (bias, no BN) reading a quantized input and quantized weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._input_quantizer(x), self._weight_quantizer(self.weight), self.bias)


class FrozenQuantLinear(_InputAndWeightQuantizers, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._input_quantizer(x), self._weight_quantizer(self.weight), self.bias)


class FrozenQuantAdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """Global pooling reading a quantized input (so the last conv ends in INT8, see ``pool_quant``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._input_quantizer = FixedQuantizer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self._input_quantizer(x))


class FrozenLayers(FoldedLayers):
    """The folded layout with a (not yet set) quantizer on every conv input and weight and residual."""

    def sparse_conv_bn(self, in_ch, out_ch, kernel, stride=1, padding=0):
        return FrozenQuantConv2d(in_ch, out_ch, kernel, stride, padding, bias=True)

    def conv(self, in_ch, out_ch, kernel, stride=1, padding=0, groups=1):
        return FrozenQuantConv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=True)

    def head_conv(self, in_ch, out_ch):
        return FrozenQuantConv2d(in_ch, out_ch, 1, bias=True)

    def residual_quantizer(self) -> nn.Module:
        return FixedQuantizer()


def _swap(model: nn.Module, name: str, new: nn.Module) -> None:
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], new)


def frozen_skeleton(arch: str, num_classes: int, state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """The quantized layout of ``arch`` with every quantizer off (an identity), weights loaded if given."""
    from maxq_deploy.archs import model_entrypoint

    model = model_entrypoint(arch)(FrozenLayers(), num_classes)
    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear:
            _swap(model, name, FrozenQuantLinear(module.in_features, module.out_features, bias=module.bias is not None))
        elif type(module) is nn.AdaptiveAvgPool2d:
            _swap(model, name, FrozenQuantAdaptiveAvgPool2d(module.output_size))
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval()


def quantizer_names(model: nn.Module) -> list[str]:
    """Every quantizer slot of a frozen model, in module order (the checkpoint's ``quantizers`` keys)."""
    return [name for name, module in model.named_modules() if isinstance(module, FixedQuantizer)]


def build_frozen_model(arch: str, num_classes: int, state_dict: dict[str, torch.Tensor],
                       ranges: dict[str, torch.Tensor], source: str = "quantized checkpoint",
                       kept_float: list[str] | tuple[str, ...] = ()) -> nn.Module:
    """The quantized network of a checkpoint with constant-scale quantizers (eval mode, no gradients).

    A pooling quantizer without a range stays off (checkpoints made before pooling inputs were
    quantized export the graph they were made with); any other quantizer without one, or a
    range no quantizer takes, is a damaged checkpoint. The input and weight quantizers of the
    layers in ``kept_float`` (``quantize --keep-float``) stay off: those layers run float.
    """
    from maxq_deploy.quantize.pool_quant import is_pool_quantizer

    model = frozen_skeleton(arch, num_classes, state_dict)
    floating = {f"{layer}.{attr}" for layer in kept_float for attr in ("_input_quantizer", "_weight_quantizer")}
    slots = set(quantizer_names(model)) - floating
    unknown = sorted(set(ranges) - slots - floating)
    if unknown:
        raise InputFileError(f"{source}: a range for {unknown[0]}, which {arch} has no quantizer for (damaged checkpoint?)")
    for name in sorted(slots):
        amax = ranges.get(name)
        if amax is None:
            if is_pool_quantizer(name):
                continue
            raise InputFileError(f"{source}: damaged quantized checkpoint (no range for quantizer {name})")
        quantizer = FixedQuantizer(amax, axis=0)
        if name.endswith("._weight_quantizer"):
            quantizer.hold_weight(model.get_submodule(name.rpartition(".")[0]).weight)
        _swap(model, name, quantizer)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def frozen_from_checkpoint(ckpt) -> nn.Module:
    """:func:`build_frozen_model` of a :class:`~maxq_deploy.quantize.artifact.QuantizedCheckpoint`."""
    return build_frozen_model(ckpt.arch, ckpt.num_classes, ckpt.state_dict, ckpt.quantizers, str(ckpt.path), ckpt.kept_float)
