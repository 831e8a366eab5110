"""The quantized checkpoint: its format, reading it back, and its INT8 weights.

A quantized checkpoint is the folded checkpoint plus a range (``amax``) for every quantizer::

    {"format": "maxq-deploy/quantized", "format_version": 1, "arch", "num_classes", "nm",
     "hardware_pattern", "quantizers": {name: amax}, "calibration": {...}, "training": {...} | None,
     "int8_pattern": {...}, "layers": [folded layer report], "provenance": {...},
     "kept_float": [layers without quantizers], "kept_dense": [layers fold kept dense],
     "state_dict": folded (or fine-tuned) float weights}

Plain data and tensors only, so it loads with ``weights_only=True``. The INT8 weights TensorRT
will use are computed from it without pytorch-quantization (:func:`int8_weight`), so ``verify``
works where the quantization backend is not installed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from maxq_deploy.archs import state_dict_shapes
from maxq_deploy.load.maxq_checkpoint import torch_load_safe
from maxq_deploy.load.formats import FOLDED_FORMAT, FORMATS, QUANTIZED_FORMAT, check_format, format_of
from maxq_deploy.core.errors import InputFileError
from maxq_deploy.fold import FoldedCheckpoint, FoldedLayer, folded_from_dict
from maxq_deploy.core.sparsity import HARDWARE_PATTERN, check_pattern

FORMAT_VERSION = FORMATS[QUANTIZED_FORMAT].version
#: Largest INT8 magnitude of a symmetric weight quantizer (amax maps to 127).
INT8_BOUND = 127


def weight_quantizer_name(layer: str) -> str:
    return f"{layer}._weight_quantizer"


def int8_weight(weight: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """``round(w / (amax / 127))`` clamped to [-127, 127] per output channel, as int8.

    Symmetric (zero point 0): an exact 0.0 maps to 0, so an N:M zero stays a zero. A channel
    whose amax is 0 is all zeros.
    """
    w = weight.detach().double()
    scale = amax.detach().double().reshape(-1, *([1] * (w.dim() - 1))) / INT8_BOUND if amax.numel() > 1 else amax.detach().double() / INT8_BOUND
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(w / safe), -INT8_BOUND, INT8_BOUND)
    return torch.where(scale > 0, q, torch.zeros_like(q)).to(torch.int8)


@dataclass
class Int8LayerCheck:
    """The hardware pattern on one layer's INT8 weights (what TensorRT sees)."""

    name: str
    role: str  # "sparse" or "dense"
    shape: list[int]
    groups: int
    violating_groups: int
    holds: bool  # on the INT8 weights
    fp32_holds: bool  # on the float weights it was quantized from
    zeros_kept: bool  # every float zero is an INT8 zero
    new_zeros: int  # small weights that rounded to 0 in INT8
    kept_float: bool = False  # no quantizers on purpose (quantize --keep-float): checked on its float weights
    kept_dense: bool = False  # left out of the 2:4 projection on purpose (fold --keep-dense): not expected to hold it

    @property
    def expected_sparse(self) -> bool:
        return self.role == "sparse" and not self.kept_dense


def check_int8_layers(layers: list[FoldedLayer], state: dict[str, torch.Tensor], amax: dict[str, torch.Tensor],
                      pattern: str = HARDWARE_PATTERN, keep_float=()) -> list[Int8LayerCheck]:
    """Check ``pattern`` on the INT8 weights of every conv of the folded layer report (float weights for ``keep_float``)."""
    checks = []
    kept = set(keep_float)
    for layer in layers:
        weight = state[f"{layer.name}.weight"]
        q = weight if layer.name in kept else int8_weight(weight, amax[weight_quantizer_name(layer.name)])
        c8, c32 = check_pattern(q, pattern), check_pattern(weight, pattern)
        zeros = weight == 0
        checks.append(Int8LayerCheck(
            name=layer.name, role=layer.role, shape=list(weight.shape), groups=c8.groups,
            violating_groups=c8.violating_groups, holds=c8.holds and layer.groups == 1,
            fp32_holds=c32.holds and layer.groups == 1, zeros_kept=bool((q[zeros] == 0).all()),
            new_zeros=int(((q == 0) & ~zeros).sum()), kept_float=layer.name in kept, kept_dense=layer.kept_dense,
        ))
    return checks


@dataclass
class QuantizedCheckpoint:
    """A quantized checkpoint read back from disk (no pytorch-quantization needed)."""

    path: Path
    arch: str
    num_classes: int
    nm: str | None
    layers: list[FoldedLayer]
    quantizers: dict[str, torch.Tensor] = field(repr=False)
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    meta: dict = field(repr=False)
    kept_float: list[str] = field(default_factory=list)  # layers without quantizers (quantize --keep-float)

    @property
    def kept_dense(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.kept_dense]

    def int8_checks(self, pattern: str = HARDWARE_PATTERN) -> list[Int8LayerCheck]:
        return check_int8_layers(self.layers, self.state_dict, self.quantizers, pattern, keep_float=self.kept_float)


def quantized_from_dict(obj: dict, path: Path, *, positive_weight_ranges: bool = False) -> QuantizedCheckpoint:
    """Validate a loaded quantized checkpoint: kind and version, metadata, keys, shapes, finite weights, every range.

    ``positive_weight_ranges``: also refuse a zero weight range (see
    :func:`maxq_deploy.load.checks.check_quantizer_ranges`), for targets that divide by it.
    """
    from maxq_deploy.fold import layers_from_dict
    from maxq_deploy.load.checks import check_metadata, check_quantizer_ranges, check_state_dict

    check_format(obj, QUANTIZED_FORMAT, path)
    check_metadata(obj, path, "quantized checkpoint")
    state = check_state_dict(obj.get("state_dict"), path, "quantized checkpoint")
    quantizers = obj.get("quantizers")
    if not isinstance(quantizers, dict) or not all(isinstance(k, str) for k in quantizers):
        raise InputFileError(f"{path}: damaged quantized checkpoint (its 'quantizers' entry is not a dict of named ranges)")
    layers = layers_from_dict(obj, path, "quantized checkpoint")
    kept_float = obj.get("kept_float") or []
    if not isinstance(kept_float, (list, tuple)) or not all(isinstance(name, str) for name in kept_float):
        raise InputFileError(f"{path}: damaged quantized checkpoint (kept_float is not a list of layer names)")
    ckpt = QuantizedCheckpoint(
        path=path, arch=obj["arch"], num_classes=int(obj["num_classes"]), nm=obj.get("nm"), layers=layers,
        quantizers=dict(quantizers), state_dict=state, meta={k: v for k, v in obj.items() if k != "state_dict"},
        kept_float=list(kept_float),
    )
    expected = state_dict_shapes(ckpt.arch, ckpt.num_classes, "folded")
    got = {k: tuple(v.shape) for k, v in ckpt.state_dict.items()}
    if got != expected:
        raise InputFileError(f"{path}: weights do not match {ckpt.arch} with {ckpt.num_classes} classes")
    bad = [name for name, value in ckpt.quantizers.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise InputFileError(f"{path}: damaged quantized checkpoint (range of {bad[0]} is a {type(ckpt.quantizers[bad[0]]).__name__}, "
                             "not a tensor)")
    unknown = sorted(set(ckpt.kept_float) - {layer.name for layer in layers})
    if unknown:
        raise InputFileError(f"{path}: damaged quantized checkpoint (kept_float names {unknown[0]!r}, not one of its conv layers)")
    missing = [weight_quantizer_name(layer.name) for layer in layers
               if layer.name not in ckpt.kept_float and weight_quantizer_name(layer.name) not in ckpt.quantizers]
    if bad or missing:
        raise InputFileError(f"{path}: damaged quantized checkpoint (no range for {(bad + missing)[0]})")
    check_quantizer_ranges(ckpt.quantizers, ckpt.state_dict, path, positive_weight_ranges=positive_weight_ranges)
    return ckpt


def refuse_unreadable(ckpt: dict, out: Path) -> None:
    """The writer's side of :func:`quantized_from_dict`: refuse to write what every reader would refuse."""
    from maxq_deploy.core.errors import QuantizationError

    try:
        quantized_from_dict(ckpt, Path(out))
    except InputFileError as exc:
        detail = str(exc).removeprefix(f"{out}: ").removesuffix("; re-create it from its source")
        raise QuantizationError(
            f"refusing to write {out}: the result would be a {detail}; nothing was written (calibrate on other data, "
            "or fine-tune with a smaller --lr)"
        ) from None


def read_folded_input(path: str | os.PathLike[str]) -> tuple[FoldedCheckpoint, dict]:
    """The folded checkpoint to quantize, with a clear error for every other kind of file."""
    p = Path(path)
    obj = torch_load_safe(p, "folded checkpoint")
    fmt = format_of(obj)
    if fmt == QUANTIZED_FORMAT:
        raise InputFileError(
            f"{p} is already quantized ({QUANTIZED_FORMAT}); quantize the folded checkpoint it was made from"
        )
    if fmt != FOLDED_FORMAT:
        what = f"a {fmt} artifact" if isinstance(fmt, str) else "a MaxQ training checkpoint (or another file)"
        raise InputFileError(
            f"{p} is {what}, not a folded checkpoint: fold it first with maxq-deploy fold {p.name} -o folded.pth, "
            "then quantize folded.pth"
        )
    check_format(obj, FOLDED_FORMAT, p)
    return folded_from_dict(obj, p), obj


def load_quantized_checkpoint(path: str | os.PathLike[str]) -> QuantizedCheckpoint:
    p = Path(path)
    obj = torch_load_safe(p, "quantized checkpoint")
    return quantized_from_dict(check_format(obj, QUANTIZED_FORMAT, p), p)


def load_quantized_model(path: Path, obj: dict):
    """``models.load_torch_model`` hook: the fake-quantized network (eval mode, CPU).

    pytorch-quantization's network where it is installed (what PTQ calibrated and QAT trained);
    without it, the same network with constant-scale quantizers (:mod:`maxq_deploy.quantize.frozen`,
    plain torch: what the Q/DQ graph computes), so eval, bench and export need no backend.
    """
    from maxq_deploy.core.errors import BackendUnavailableError
    from maxq_deploy.load.torch_model import LoadedModel
    from maxq_deploy.quantize import pq_adapter
    from maxq_deploy.quantize.pool_quant import is_pool_quantizer

    ckpt = quantized_from_dict(obj, Path(path))
    try:
        pq_adapter.require_pytorch_quantization()
    except BackendUnavailableError:
        from maxq_deploy.quantize.frozen import frozen_from_checkpoint

        return LoadedModel(Path(path), "quantized-checkpoint", ckpt.arch, ckpt.num_classes, ckpt.nm, frozen_from_checkpoint(ckpt), ckpt.meta)
    model = pq_adapter.build_quant_model(ckpt.arch, ckpt.num_classes)
    pq_adapter.load_weights(model, ckpt.state_dict)
    pq_adapter.keep_float(model, ckpt.kept_float)
    for name, quantizer in pq_adapter.quantizers(model).items():
        amax = ckpt.quantizers.get(name)
        if amax is None and is_pool_quantizer(name):
            quantizer.disable()  # made before pooling inputs were quantized: export as that version did
            continue
        if amax is None:
            raise InputFileError(f"{path}: damaged quantized checkpoint (no range for quantizer {name})")
        pq_adapter.set_amax(quantizer, amax)
    return LoadedModel(Path(path), "quantized-checkpoint", ckpt.arch, ckpt.num_classes, ckpt.nm, model.eval(), ckpt.meta)


def layers_to_dicts(layers: list[FoldedLayer]) -> list[dict]:
    return [asdict(layer) for layer in layers]
