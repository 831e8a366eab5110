"""Folding: soft masks and BatchNorm into constant N:M conv weights and biases.

Per MaxQ sparse layer ``W' = (W * mask) * g`` and ``b' = beta - mean * g`` with
``g = gamma / sqrt(var + eps)``. Scaling by ``g`` keeps every zero, so ``W'`` keeps the N:M
pattern. Dense conv + BN pairs (stem, depthwise) fold the same way without a mask.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from maxq_deploy.archs import MaxQConvBN, build_model, state_dict_shapes
from maxq_deploy.archs.layers import BN_EPS
from maxq_deploy.artifacts import TORCH_SUFFIXES, Output, atomic_output, check_output_path, guard_outputs, provenance
from maxq_deploy.checkpoint import FOLDED_FORMAT, MaxQCheckpoint, torch_load_safe
from maxq_deploy.errors import CheckpointFormatError, InputFileError, UnfinishedSparsityError
from maxq_deploy.sparsity import HARDWARE_PATTERN, check_pattern, project_to_pattern

FORMAT_VERSION = 1


@dataclass
class FoldedLayer:
    """One conv of the folded network, with what is known of its sparsity."""

    name: str
    role: str  # "sparse" (MaxQ conv-bn) or "dense" (stem / depthwise conv + BN)
    shape: list[int]
    groups: int  # conv groups (depthwise convs have groups == channels)
    trained_nm: str | None
    nm_groups: int = 0
    dense_groups: int = 0  # N:M groups still dense in the checkpoint
    projected: bool = False  # N:M re-imposed by magnitude (--project)
    holds_hardware_pattern: bool | None = None


@dataclass
class ProjectionDrift:
    """How much ``--project`` changed the network's output on a probe batch."""

    probe_batch: list[int]
    max_abs_error: float
    relative_l2_error: float
    top1_agreement: float


@dataclass
class FoldResult:
    """A folded network: its deploy state dict and the report that travels with it."""

    arch: str
    num_classes: int
    nm: str | None
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    layers: list[FoldedLayer]
    source: dict  # provenance: source path, hash, tool version, time
    drift: ProjectionDrift | None = None
    output: Path | None = None

    @property
    def sparse_layers(self) -> list[FoldedLayer]:
        return [layer for layer in self.layers if layer.role == "sparse"]

    def to_checkpoint(self) -> dict:
        """The self-describing deploy checkpoint; plain data only, so it loads weights_only."""
        return {
            "format": FOLDED_FORMAT,
            "format_version": FORMAT_VERSION,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "nm": self.nm,
            "hardware_pattern": HARDWARE_PATTERN,
            "layers": [asdict(layer) for layer in self.layers],
            "projection_drift": asdict(self.drift) if self.drift else None,
            "provenance": self.source,
            "state_dict": self.state_dict,
        }

    def summary(self) -> dict:
        sparse = self.sparse_layers
        return {
            "output": str(self.output) if self.output else None,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "nm": self.nm,
            "sparse_layers": len(sparse),
            "dense_layers": len(self.layers) - len(sparse),
            "projected_layers": sum(layer.projected for layer in sparse),
            "sparse_layers_holding_2_4": sum(bool(layer.holds_hardware_pattern) for layer in sparse),
            "projection_drift": asdict(self.drift) if self.drift else None,
            "provenance": self.source,
            "layers": [asdict(layer) for layer in self.layers],
        }

    def build_model(self) -> nn.Module:
        model = build_model(self.arch, self.num_classes, "folded")
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def _bn_scale_shift(state: dict[str, torch.Tensor], bn: str) -> tuple[torch.Tensor, torch.Tensor]:
    gamma, beta = state[f"{bn}.weight"].double(), state[f"{bn}.bias"].double()
    mean, var = state[f"{bn}.running_mean"].double(), state[f"{bn}.running_var"].double()
    if bool((var < 0).any()) or not all(bool(torch.isfinite(t).all()) for t in (gamma, beta, mean, var)):
        raise CheckpointFormatError(f"BatchNorm {bn!r} has negative or non-finite statistics: the checkpoint is damaged")
    g = gamma / torch.sqrt(var + BN_EPS)
    return g, beta - mean * g


#: Weight values folded per step: float64 temporaries of at most 0.5 MB, which the allocator
#: keeps reusing, instead of layer-sized ones that leave holes between the folded weights.
_FOLD_BLOCK_VALUES = 1 << 16


def _fold_pair(
    weight: torch.Tensor, conv_bias: torch.Tensor | None, g: torch.Tensor, shift: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W * mask) * g`` computed in float64 and rounded to float32, and the folded bias.

    Done a block of output channels at a time (same values as one whole-layer expression):
    float64 copies of a whole big layer raised the peak memory of ``fold`` on ResNet-50 by
    ~50 MB (see benchmarks/fold_benchmark.py).
    """
    scale = g.view(-1, *([1] * (weight.dim() - 1)))
    w = torch.empty(weight.shape, dtype=torch.float32, device=weight.device)
    step = max(1, _FOLD_BLOCK_VALUES // max(1, weight[0].numel())) if weight.shape[0] else 1
    for start in range(0, weight.shape[0], step):
        block = weight[start:start + step]
        if mask is not None:
            block = block * mask[start:start + step]  # float32 product first, as W * mask
        w[start:start + step] = block.double().mul_(scale[start:start + step])
    b = shift if conv_bias is None else shift + conv_bias.double() * g
    if not bool(torch.isfinite(w).all()):
        raise CheckpointFormatError("a conv weight or mask holds NaN or infinity: the checkpoint is damaged")
    return w, b.float()


def _dense_conv_bn_pairs(model: nn.Module) -> list[tuple[str, nn.Conv2d, str]]:
    """(conv name, conv, bn name) for every BatchNorm that directly follows a plain conv."""
    pairs, last_conv = [], None
    inside_sparse: set[str] = {name for name, mod in model.named_modules() if isinstance(mod, MaxQConvBN)}
    for name, mod in model.named_modules():
        if any(name.startswith(prefix + ".") for prefix in inside_sparse):
            continue
        if isinstance(mod, nn.Conv2d):
            last_conv = (name, mod)
        elif isinstance(mod, nn.BatchNorm2d) and last_conv is not None:
            pairs.append((last_conv[0], last_conv[1], name))
            last_conv = None
    return pairs


def unfinished_message(ckpt: MaxQCheckpoint) -> str:
    parts = [f"{layer.name} ({layer.dense_groups}/{layer.groups} groups dense)" for layer in ckpt.unfinished_layers]
    return (
        f"incremental sparsity is unfinished in {len(parts)} of {len(ckpt.layers)} sparse layers of "
        f"{ckpt.path.name} (saved before the end of the N:M schedule?): {', '.join(parts)}; "
        "fold --project re-imposes N:M by magnitude and reports the output drift"
    )


def fold_masks_and_bn(
    ckpt: MaxQCheckpoint, project: bool = False, probe_shape: tuple[int, int, int, int] = (8, 3, 64, 64)
) -> FoldResult:
    """Fold ``ckpt`` into deploy weights; refuse unfinished sparsity unless ``project``."""
    if ckpt.unfinished_layers and not project:
        raise UnfinishedSparsityError(unfinished_message(ckpt))
    state = ckpt.state_dict
    meta_model = build_model(ckpt.arch, ckpt.num_classes, "maxq", device="meta")
    folded: dict[str, torch.Tensor] = {}
    layers: list[FoldedLayer] = []
    info = {layer.name: layer for layer in ckpt.layers}
    for name, mod in meta_model.named_modules():
        if not isinstance(mod, MaxQConvBN):
            continue
        layer = info[name]
        weight = state[f"{name}.conv.weight"]
        g, shift = _bn_scale_shift(state, f"{name}.scale")
        w, b = _fold_pair(weight, None, g, shift, mask=state.get(f"{name}.mask"))
        projected = False
        if project and layer.dense_groups > 0 and ckpt.nm is not None:
            w, projected = project_to_pattern(w, ckpt.nm), True
        folded[f"{name}.weight"], folded[f"{name}.bias"] = w, b
        layers.append(
            FoldedLayer(
                name=name, role="sparse", shape=list(w.shape), groups=1,
                trained_nm=str(ckpt.nm) if projected else layer.trained_nm,
                nm_groups=layer.groups, dense_groups=layer.dense_groups, projected=projected,
                holds_hardware_pattern=check_pattern(w, HARDWARE_PATTERN).holds,
            )
        )
    for conv_name, conv, bn_name in _dense_conv_bn_pairs(meta_model):
        g, shift = _bn_scale_shift(state, bn_name)
        w, b = _fold_pair(state[f"{conv_name}.weight"], state.get(f"{conv_name}.bias"), g, shift)
        folded[f"{conv_name}.weight"], folded[f"{conv_name}.bias"] = w, b
        layers.append(FoldedLayer(conv_name, "dense", list(w.shape), conv.groups, None))
    for key in ("fc.weight", "fc.bias"):
        folded[key] = state[key].float().contiguous()

    expected = state_dict_shapes(ckpt.arch, ckpt.num_classes, "folded")
    assert set(folded) == set(expected), "fold produced keys the folded architecture lacks"  # a bug, not input
    order = list(expected)
    result = FoldResult(
        arch=ckpt.arch,
        num_classes=ckpt.num_classes,
        nm=str(ckpt.nm) if ckpt.nm else None,
        state_dict={k: folded[k] for k in order},
        layers=layers,
        source=provenance(ckpt.path, ckpt.sha256) | {"epoch": ckpt.epoch, "best_acc1": ckpt.best_acc1},
    )
    if any(layer.projected for layer in layers):
        result.drift = _projection_drift(ckpt, result, probe_shape)
    return result


@torch.no_grad()
def _projection_drift(ckpt: MaxQCheckpoint, result: FoldResult, probe_shape: tuple[int, ...]) -> ProjectionDrift:
    """Output change caused by projection: original MaxQ network vs projected folded network."""
    x = torch.randn(probe_shape, generator=torch.Generator().manual_seed(0))
    ref = ckpt.build_model()(x)
    out = result.build_model()(x)
    return ProjectionDrift(
        probe_batch=list(probe_shape),
        max_abs_error=float((out - ref).abs().max()),
        relative_l2_error=float((out - ref).norm() / ref.norm().clamp_min(1e-12)),
        top1_agreement=float((out.argmax(1) == ref.argmax(1)).float().mean()),
    )


def save_folded(result: FoldResult, path: str | os.PathLike[str]) -> Path:
    """Write the deploy checkpoint atomically."""
    out = check_output_path(path)
    with atomic_output(out) as tmp:
        torch.save(result.to_checkpoint(), tmp)
    result.output = out
    return out


def fold_checkpoint(
    ckpt_path: str | os.PathLike[str], output: str | os.PathLike[str], arch: str | None = None,
    nm: str | None = None, project: bool = False,
) -> FoldResult:
    """Load, fold and write: what ``maxq-deploy fold`` does."""
    from maxq_deploy.checkpoint import load_checkpoint

    guard_outputs([Output(Path(output), TORCH_SUFFIXES, "folded checkpoint")], [ckpt_path])  # before the work
    result = fold_masks_and_bn(load_checkpoint(ckpt_path, arch=arch, nm=nm), project=project)
    save_folded(result, output)
    return result


@dataclass
class FoldedCheckpoint:
    """A deploy checkpoint read back from disk."""

    path: Path
    arch: str
    num_classes: int
    nm: str | None
    layers: list[FoldedLayer]
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    meta: dict = field(repr=False)

    def build_model(self) -> nn.Module:
        model = build_model(self.arch, self.num_classes, "folded")
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def folded_from_dict(obj: dict, path: Path) -> FoldedCheckpoint:
    """Validate a loaded folded checkpoint (version, metadata, keys, shapes, finite weights)."""
    from maxq_deploy.artifact_checks import check_finite_tensors, check_format_version, check_metadata

    check_format_version(obj, path, FORMAT_VERSION, "folded checkpoint")
    check_metadata(obj, path, "folded checkpoint")
    try:
        layers = [FoldedLayer(**layer) for layer in obj["layers"]]
        result = FoldedCheckpoint(
            path=path, arch=obj["arch"], num_classes=int(obj["num_classes"]), nm=obj.get("nm"),
            layers=layers, state_dict=obj["state_dict"],
            meta={k: v for k, v in obj.items() if k != "state_dict"},
        )
    except (KeyError, TypeError) as exc:
        raise InputFileError(f"{path}: damaged folded checkpoint ({exc})") from None
    expected = state_dict_shapes(result.arch, result.num_classes, "folded")
    got = {k: tuple(v.shape) for k, v in result.state_dict.items()}
    if got != expected:
        raise InputFileError(f"{path}: folded weights do not match {result.arch} with {result.num_classes} classes")
    check_finite_tensors(result.state_dict, path, "folded checkpoint")
    return result


def load_folded(path: str | os.PathLike[str]) -> FoldedCheckpoint:
    """Read a deploy checkpoint written by :func:`save_folded` (weights_only)."""
    p = Path(path)
    obj = torch_load_safe(p, "folded checkpoint")
    if not isinstance(obj, dict) or obj.get("format") != FOLDED_FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else None
        raise InputFileError(
            f"{p} is not a folded checkpoint (format {found!r}); make one with: maxq-deploy fold CKPT -o OUT"
        )
    return folded_from_dict(obj, p)
