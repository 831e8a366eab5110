"""Verification of the N:M pattern at every stage: checkpoint, folded, ONNX, engine.

Every artifact kind turns into the same :class:`VerifyReport`: per layer the trained N:M,
whether the hardware pattern (2:4 by default) holds along the reduction axis TensorRT uses,
C % 4, grouped/depthwise, and one verdict. Verifiers register per artifact kind, so a new
stage adds one function.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from maxq_deploy.core.files import check_input_file
from maxq_deploy.core.errors import InputFileError
from maxq_deploy.load.formats import FOLDED_FORMAT, check_format, format_of
from maxq_deploy.core.sparsity import HARDWARE_PATTERN, NMPattern, PatternTally, check_pattern


@dataclass
class LayerVerdict:
    """One weight of a network measured against the hardware pattern."""

    name: str
    op: str  # "conv", "gemm", "matmul", "linear"
    shape: list[int]
    expected_sparse: bool  # the layer is meant to be N:M (a MaxQ sparse layer)
    trained_nm: str | None
    channels: int  # length of the reduction axis
    channels_divisible: bool  # reduction axis % M of the hardware pattern == 0
    grouped: bool
    depthwise: bool
    groups: int  # N:M groups checked
    violating_groups: int
    holds: bool  # the hardware pattern holds on this weight
    dtype: str = "float32"
    note: str = ""


@dataclass
class VerifyReport(PatternTally):
    path: str
    kind: str  # "maxq-checkpoint", "folded-checkpoint", "quantized-checkpoint", "onnx", "engine"
    pattern: str
    trained_nm: str | None
    layers: list[LayerVerdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    ok = PatternTally.pattern_ok  # what ``verify`` calls it

    @property
    def verdict(self) -> str:
        if not self.expected:
            return f"FAIL: no sparse layers found to hold {self.pattern}"
        if self.failing:
            return f"FAIL: {len(self.failing)} of {len(self.expected)} sparse layers break {self.pattern}"
        return f"PASS: all {len(self.expected)} sparse layers hold {self.pattern}"

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "kind": self.kind,
            "pattern": self.pattern,
            "trained_nm": self.trained_nm,
            "ok": self.ok,
            "verdict": self.verdict,
            "sparse_layers": len(self.expected),
            "holding_layers": self.holding_layers,
            "notes": self.notes,
            "layers": [asdict(layer) for layer in self.layers],
        }


def weight_verdict(
    name: str, weight: torch.Tensor, pattern: NMPattern, *, op: str = "conv", axis: int = 1,
    expected_sparse: bool, trained_nm: str | None, conv_groups: int = 1, dtype: str | None = None, note: str = "",
) -> LayerVerdict:
    """Measure one weight tensor; the reduction axis is ``axis`` (1 for conv [K, C, R, S])."""
    check = check_pattern(weight, pattern, axis)
    channels = int(weight.shape[axis]) if weight.dim() > axis else 0
    depthwise = conv_groups > 1 and channels == 1
    return LayerVerdict(
        name=name, op=op, shape=list(weight.shape), expected_sparse=expected_sparse, trained_nm=trained_nm,
        channels=channels, channels_divisible=check.applicable, grouped=conv_groups > 1, depthwise=depthwise,
        groups=check.groups, violating_groups=check.violating_groups,
        holds=check.holds and conv_groups == 1, dtype=dtype or str(weight.dtype).replace("torch.", ""), note=note,
    )


def _verify_maxq(path: Path, obj: object, pattern: NMPattern, arch: str | None, nm: str | None) -> VerifyReport:
    from maxq_deploy.load.maxq_checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, arch=arch, nm=nm, loaded=obj)
    report = VerifyReport(str(path), "maxq-checkpoint", str(pattern), str(ckpt.nm) if ckpt.nm else None)
    state = ckpt.state_dict
    for layer in ckpt.layers:
        weight = state[f"{layer.name}.conv.weight"]
        mask = state.get(f"{layer.name}.mask")
        effective = weight * mask if mask is not None else weight
        note = f"{layer.dense_groups} of {layer.groups} N:M groups still dense" if layer.dense_groups else ""
        if not layer.has_mask:
            note = "no mask (DenseConv2dBN)"
        report.layers.append(
            weight_verdict(layer.name, effective, pattern, expected_sparse=layer.has_mask, trained_nm=layer.trained_nm, note=note)
        )
    if ckpt.unfinished_layers:
        report.notes.append(f"{len(ckpt.unfinished_layers)} layers have unfinished incremental sparsity")
    advice = ckpt.project_advice() if pattern == NMPattern.parse(HARDWARE_PATTERN) else None
    if advice:
        report.notes.append(advice)
    return report


def _verify_folded(path: Path, obj: dict, pattern: NMPattern, arch: str | None, nm: str | None) -> VerifyReport:
    from maxq_deploy.fold import folded_from_dict

    folded = folded_from_dict(obj, path)
    report = VerifyReport(str(path), "folded-checkpoint", str(pattern), folded.nm)
    for layer in folded.layers:
        report.layers.append(
            weight_verdict(
                layer.name, folded.state_dict[f"{layer.name}.weight"], pattern,
                expected_sparse=layer.role == "sparse" and not layer.kept_dense,
                trained_nm=layer.trained_nm, conv_groups=layer.groups,
                note="kept dense on purpose (fold --keep-dense): runs dense" if layer.kept_dense else
                "projected by magnitude" if layer.projected else "",
            )
        )
    fc = folded.state_dict["fc.weight"]  # Linear, or the CIFAR ResNets' 1x1 conv
    report.layers.append(weight_verdict("fc", fc, pattern, op="conv" if fc.dim() == 4 else "linear", expected_sparse=False, trained_nm=None))
    kept = [layer.name for layer in folded.layers if layer.kept_dense]
    if kept:
        report.notes.append(f"{len(kept)} sparse layer(s) kept dense on purpose (fold --keep-dense), not checked for {pattern}: {', '.join(kept)}")
    breaking = sum(layer.violating_groups for layer in report.expected)
    if breaking and not any(layer.projected for layer in folded.layers):
        report.notes.append(
            f"{breaking:,} groups of 4 break {pattern} (trained {folded.nm}); fold the MaxQ checkpoint again with "
            "--project to keep the 2 largest of each group of 4"
        )
    return report


#: Torch artifacts: the ``format`` entry (None for MaxQ training files) -> verifier.
TorchVerifier = Callable[[Path, object, NMPattern, "str | None", "str | None"], VerifyReport]
TORCH_VERIFIERS: dict[str | None, TorchVerifier] = {None: _verify_maxq, FOLDED_FORMAT: _verify_folded}
#: Other artifacts by file suffix -> verifier(path, pattern).
FILE_VERIFIERS: dict[str, Callable[[Path, NMPattern], VerifyReport]] = {}


#: Modules that register verifiers for the later stages; imported only when verify runs.
_PLUGIN_MODULES = ("maxq_deploy.verify.onnx", "maxq_deploy.quantize.verify", "maxq_deploy.tensorrt.verify")


def _load_plugins() -> None:
    import importlib

    for name in _PLUGIN_MODULES:
        importlib.import_module(name)


def verify_artifact(
    path: str | os.PathLike[str], pattern: str = HARDWARE_PATTERN, arch: str | None = None, nm: str | None = None
) -> VerifyReport:
    """Verify any artifact of the pipeline; the kind is taken from the file itself."""
    from maxq_deploy.load.maxq_checkpoint import torch_load_safe

    p = check_input_file(path)
    hw = NMPattern.parse(pattern)
    _load_plugins()
    suffix = p.suffix.lower()
    if suffix in FILE_VERIFIERS:
        return FILE_VERIFIERS[suffix](p, hw)
    obj = torch_load_safe(p)
    fmt = format_of(obj)
    if fmt is not None and fmt in TORCH_VERIFIERS:
        check_format(obj, fmt, p)  # the same format and version check as every other reader
    if fmt not in TORCH_VERIFIERS:
        raise InputFileError(f"{p}: artifact format {fmt!r} cannot be verified by this version of maxq-deploy")
    return TORCH_VERIFIERS[fmt](p, obj, hw, arch, nm)
