"""Strict reading of the torch artifacts this tool writes (folded and quantized checkpoints).

One place decides what "damaged" means, and the one loader of each format
(``fold.folded_from_dict``, ``quantize.artifact.quantized_from_dict``) calls it, so ``verify``,
``export``, ``eval`` and ``bench`` all refuse the same files with the same words:

- kind and ``format_version`` (:func:`maxq_deploy.load.formats.check_format`): an integer from 1 to
  the version this maxq-deploy writes; anything else (newer, a string, a bool, missing) is
  refused naming the version the tool reads.
- metadata: ``arch`` a registered architecture, ``num_classes`` a positive integer, ``nm``
  absent/None or a valid N:M such as ``2:4``, ``layers`` a list of layer records.
- tensors (:func:`check_state_dict`): a dict of string keys to dense CPU tensors of real floats
  (integer only for BatchNorm's ``num_batches_tracked``), every value finite; no two keys the same
  after the DataParallel/compile prefixes are removed.
- quantizer ranges (``amax``): tensors, finite, never negative (input and residual ranges
  positive), a non-zero range between :data:`MIN_RANGE` and :data:`MAX_RANGE` (its scale
  ``amax / 127`` a normal float32), and one value per tensor or one per output channel of the
  weight they quantize.
"""

from __future__ import annotations

from pathlib import Path

import torch

from maxq_deploy.core.errors import InputFileError, UnsupportedArchitectureError


def check_metadata(obj: dict, path: Path, what: str) -> None:
    """``arch``, ``num_classes``, ``nm`` and ``layers`` hold values this tool can use."""
    from maxq_deploy.archs import normalize_arch
    from maxq_deploy.core.errors import SparsityPatternError
    from maxq_deploy.core.sparsity import NMPattern

    arch = obj.get("arch")
    if not isinstance(arch, str):
        raise InputFileError(f"{path}: damaged {what} (arch {arch!r} is not an architecture name)")
    try:
        normalize_arch(arch)
    except UnsupportedArchitectureError as exc:
        raise InputFileError(f"{path}: damaged {what} ({exc})") from None
    classes = obj.get("num_classes")
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise InputFileError(f"{path}: damaged {what} (num_classes {classes!r} is not a positive integer)")
    nm = obj.get("nm")
    if nm is not None:
        try:
            if not isinstance(nm, str):
                raise SparsityPatternError("not a string")
            NMPattern.parse(nm)
        except SparsityPatternError:
            raise InputFileError(f"{path}: damaged {what} (nm {nm!r} is not an N:M pattern such as '2:4')") from None
    size = obj.get("input_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise InputFileError(f"{path}: damaged {what} (input_size {size!r} is not a positive number of pixels)")
    layers = obj.get("layers")
    if not isinstance(layers, list) or not all(isinstance(layer, dict) for layer in layers):
        raise InputFileError(f"{path}: damaged {what} (its 'layers' entry is not a list of layer records)")


#: Entries that are integer counters, not weights.
INTEGER_KEYS = ("num_batches_tracked",)
_REAL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_state_dict(state: object, path: Path, what: str, where: str = "state_dict") -> dict:
    """A dict of named dense CPU tensors of real floats, all finite: the one strict check of weights.

    Refused, each with one line naming the entry: a state dict that is not a dict, a key that is
    not a string, a value that is not a tensor (a list, a number), a sparse, quantized or meta
    tensor, a tensor of complex, integer or bool values (an integer is allowed only for
    ``num_batches_tracked``), NaN or Inf in a float tensor.
    """
    damaged = f"{path}: damaged {what}"
    if not isinstance(state, dict):
        raise InputFileError(f"{damaged} ({where!r} is a {type(state).__name__}, not a dict of named tensors)")
    for key, value in state.items():
        if not isinstance(key, str):
            raise InputFileError(f"{damaged} ({where} has a key {key!r} of type {type(key).__name__}; keys are layer names)")
        if not isinstance(value, torch.Tensor):
            raise InputFileError(f"{damaged} ({key} holds a {type(value).__name__}, not a tensor)")
        if value.layout != torch.strided or value.is_quantized:
            kind = "quantized" if value.is_quantized else str(value.layout).replace("torch.", "").replace("_", " ")
            raise InputFileError(f"{damaged} ({key} is a {kind} tensor; weights are stored dense)")
        if value.device.type == "meta":
            raise InputFileError(f"{damaged} ({key} is a meta tensor: it holds no values)")
        integer_ok = key.endswith(INTEGER_KEYS) and not value.is_floating_point() and not value.is_complex() and value.dtype != torch.bool
        if value.dtype not in _REAL_FLOATS and not integer_ok:
            dtype = str(value.dtype).replace("torch.", "")
            raise InputFileError(f"{damaged} ({key} holds {dtype} values; weights and masks are real floating-point numbers)")
    check_finite_tensors(state, path, what)
    return state


def check_finite_tensors(state: dict, path: Path, what: str) -> None:
    """Every floating-point tensor finite; the first bad one is named with its first bad index."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = ~torch.isfinite(value)
            if bool(bad.any()):
                index = [int(i) for i in torch.nonzero(bad)[0]]
                raise InputFileError(
                    f"{path}: damaged {what} ({key} holds NaN or Inf, first at index {index}); re-create it from its source"
                )


#: A range (amax) gives the INT8 scale amax / 127, which must be a normal float32 number.
MIN_RANGE = 127 * float(torch.finfo(torch.float32).tiny)
MAX_RANGE = float(torch.finfo(torch.float32).max)


def check_quantizer_ranges(quantizers: dict, state: dict, path: Path, *, positive_weight_ranges: bool = False) -> None:
    """Every range a tensor, finite, non-negative (input/residual: positive), of a usable shape.

    A zero weight range (a channel whose weights are all zero) quantizes to zeros in torch; a
    target that divides by it (ONNX Runtime's int8 graph has scale = amax / 127 and refuses a
    zero scale) asks for ``positive_weight_ranges``.
    """
    for name, amax in quantizers.items():
        where = f"{path}: damaged quantized checkpoint (range of {name}"
        if not isinstance(amax, torch.Tensor) or not (amax.is_floating_point() or amax.dtype in (torch.int32, torch.int64)):
            raise InputFileError(f"{where} is not a tensor of numbers)")
        if amax.numel() == 0:
            raise InputFileError(f"{where} is empty)")
        values = amax.detach().double()
        if not bool(torch.isfinite(values).all()):
            raise InputFileError(f"{where} holds NaN or Inf)")
        weight_quantizer = name.endswith("._weight_quantizer")
        zero_allowed = weight_quantizer and not positive_weight_ranges
        if bool((values < 0).any()) or (not zero_allowed and bool((values <= 0).any())):
            raise InputFileError(f"{where} is {'negative' if bool((values < 0).any()) else 'zero'}: {float(values.min()):g})")
        nonzero = values[values != 0]
        if nonzero.numel() and (float(nonzero.min()) < MIN_RANGE or float(nonzero.max()) > MAX_RANGE):
            bad = float(nonzero.min()) if float(nonzero.min()) < MIN_RANGE else float(nonzero.max())
            raise InputFileError(
                f"{where} is {bad:g}: outside what an INT8 scale can hold, {MIN_RANGE:.3g} to {MAX_RANGE:.3g}, "
                "since scale = range / 127 must be a normal float32)"
            )
        if weight_quantizer:
            weight = state.get(name.removesuffix("._weight_quantizer") + ".weight")
            channels = int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() > 0 else None
            if amax.numel() not in (1, channels) or (amax.numel() > 1 and sum(d > 1 for d in amax.shape) > 1):
                raise InputFileError(
                    f"{where} has shape {list(amax.shape)}; expected one value or one per output channel ({channels}))"
                )
        elif amax.numel() != 1:
            raise InputFileError(f"{where} has shape {list(amax.shape)}; an activation range is one value)")
