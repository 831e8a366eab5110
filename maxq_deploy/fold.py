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
from maxq_deploy.core.files import TORCH_SUFFIXES, Output, atomic_output, check_output_path, guard_outputs, provenance
from maxq_deploy.load.maxq_checkpoint import MaxQCheckpoint, torch_load_safe
from maxq_deploy.core.compare import compare_outputs
from maxq_deploy.core.errors import CheckpointFormatError, InputFileError, OptionError, UnfinishedSparsityError
from maxq_deploy.load.formats import FOLDED_FORMAT, FORMATS, check_format
from maxq_deploy.load.torch_model import LoadedModel
from maxq_deploy.core.sparsity import HARDWARE_PATTERN, NMPattern, check_pattern, groups_along, project_to_pattern

FORMAT_VERSION = FORMATS[FOLDED_FORMAT].version


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
    projected_to: str | None = None  # the pattern(s) --project imposed, e.g. "2:4" or "2:8+2:4"
    groups_changed: int = 0  # groups of 4 along C in which --project zeroed a weight
    hardware_groups: int = 0  # groups of 4 along C (0 when C % 4 != 0)
    kept_dense: bool = False  # left out of the 2:4 projection on purpose (--keep-dense): runs dense


@dataclass
class ProjectionDrift:
    """How much ``--project`` changed the network's output on a probe batch."""

    probe_batch: list[int]
    max_abs_error: float
    relative_l2_error: float
    top1_agreement: float


@dataclass
class ProjectionAccuracy:
    """Top-1 on real labelled images before (MaxQ network) and after (projected folded network)."""

    data: str
    images: int
    top1_before: float
    top1_after: float
    agreement: float  # share of images where both predict the same class, percent


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
    input_size: int | None = None  # the architecture's default input size, stored for export/eval/bench
    accuracy: ProjectionAccuracy | None = None

    @property
    def sparse_layers(self) -> list[FoldedLayer]:
        return [layer for layer in self.layers if layer.role == "sparse"]

    def to_checkpoint(self) -> dict:
        """The self-describing deploy checkpoint; plain data only, so it loads weights_only."""
        return {
            **FORMATS[FOLDED_FORMAT].header(self.arch, self.num_classes, self.nm),
            "layers": [asdict(layer) for layer in self.layers],
            "projection_drift": asdict(self.drift) if self.drift else None,
            "projection_accuracy": asdict(self.accuracy) if self.accuracy else None,
            "input_size": self.input_size,
            "kept_dense": [layer.name for layer in self.layers if layer.kept_dense],
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
            "input_size": self.input_size,
            "projected_layers": sum(layer.projected for layer in sparse),
            "kept_dense": [layer.name for layer in sparse if layer.kept_dense],
            "groups_changed": sum(layer.groups_changed for layer in sparse),
            "sparse_layers_holding_2_4": sum(bool(layer.holds_hardware_pattern) for layer in sparse),
            "groups_breaking_2_4": self.groups_breaking_hardware_pattern,
            "projection_drift": asdict(self.drift) if self.drift else None,
            "projection_accuracy": asdict(self.accuracy) if self.accuracy else None,
            "provenance": self.source,
            "layers": [asdict(layer) for layer in self.layers],
        }

    @property
    def groups_breaking_hardware_pattern(self) -> int:
        """Groups of 4 along C of the sparse layers with more than 2 non-zeros (0: ready for 2:4 engines)."""
        return sum(
            check_pattern(self.state_dict[f"{layer.name}.weight"], HARDWARE_PATTERN).violating_groups
            for layer in self.sparse_layers
        )

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


def check_layer_names(names, known: list[str], option: str, what: str = "sparse layer") -> set[str]:
    """``names`` (a list, or one comma-separated string) as a set, each one of ``known``, else one OptionError line."""
    if isinstance(names, str):
        names = [names]
    wanted = [n.strip() for item in names for n in str(item).split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        shown = ", ".join(known[:6]) + (", ..." if len(known) > 6 else "")
        raise OptionError(f"{option}: no {what} named {unknown[0]!r} ({len(known)} {what}s: {shown})")
    return set(wanted)


def _groups_changed(before: torch.Tensor, after: torch.Tensor) -> tuple[int, int]:
    """(groups of 4 along C where ``after`` differs from ``before``, all groups of 4); (0, 0) if C % 4."""
    if before.dim() < 2 or before.shape[1] % 4:
        return 0, 0
    changed = groups_along(before != after, 4).any(dim=1)
    return int(changed.sum()), int(changed.numel())


def _project_layer(w: torch.Tensor, layer, nm: NMPattern | None, to_hardware: bool = True) -> tuple[torch.Tensor, list[str]]:
    """``--project`` on one folded sparse weight: finish unfinished N:M, then reach 2:4 if needed.

    Per aligned group of 4 along the input channels the 2 largest magnitudes are kept, which is
    the only change a 4:8 / 4:16 / 8:16 layer needs to run on sparse tensor cores.
    """
    applied = []
    if layer.dense_groups > 0 and nm is not None:
        w = project_to_pattern(w, nm)
        applied.append(str(nm))
    hardware = NMPattern.parse(HARDWARE_PATTERN)
    check = check_pattern(w, hardware)
    if to_hardware and check.applicable and not check.holds:
        w = project_to_pattern(w, hardware)
        applied.append(HARDWARE_PATTERN)
    return w, applied


def fold_masks_and_bn(
    ckpt: MaxQCheckpoint, project: bool = False, probe_shape: tuple[int, int, int, int] | None = None,
    keep_dense: tuple[str, ...] | list[str] = (),
) -> FoldResult:
    """Fold ``ckpt`` into deploy weights; refuse unfinished sparsity unless ``project``.

    ``project`` re-imposes the trained N:M on unfinished layers and then projects every sparse
    layer that breaks the hardware 2:4 pattern (4:8, 4:16, 8:16, ...) to 2:4 by magnitude; the
    drift on a probe batch (default: 8 random images, 64x64, or 32x32 for the CIFAR ResNets) is reported.
    ``keep_dense`` names sparse layers left out of the 2:4 projection (they keep their trained N:M
    and run dense); the choice is recorded per layer and in the checkpoint's ``kept_dense``.
    """
    if ckpt.unfinished_layers and not project:
        raise UnfinishedSparsityError(unfinished_message(ckpt))
    from maxq_deploy.archs.catalog import default_input_size, spec

    input_size = default_input_size(ckpt.arch)
    keep = check_layer_names(keep_dense, [layer.name for layer in ckpt.layers if layer.has_mask], "--keep-dense")
    if keep and not project:
        raise OptionError("--keep-dense names layers to leave out of --project: add --project")
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
        applied: list[str] = []
        changed = 0
        if project and layer.has_mask:
            before = w
            w, applied = _project_layer(w, layer, ckpt.nm, to_hardware=name not in keep)
            changed, _ = _groups_changed(before, w) if applied else (0, 0)
        folded[f"{name}.weight"], folded[f"{name}.bias"] = w, b
        finished_nm = str(ckpt.nm) if ckpt.nm is not None and str(ckpt.nm) in applied else layer.trained_nm
        layers.append(
            FoldedLayer(
                name=name, role="sparse", shape=list(w.shape), groups=1,
                trained_nm=finished_nm,
                nm_groups=layer.groups, dense_groups=layer.dense_groups, projected=bool(applied),
                holds_hardware_pattern=check_pattern(w, HARDWARE_PATTERN).holds,
                projected_to="+".join(applied) or None, groups_changed=changed,
                hardware_groups=_groups_changed(w, w)[1], kept_dense=name in keep,
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
        input_size=input_size,
    )
    if any(layer.projected for layer in layers):
        # 64x64 keeps the probe cheap where the network takes any size; the CIFAR ResNets run only near 32
        probe = 64 if spec(ckpt.arch).max_input is None else input_size
        result.drift = _projection_drift(ckpt, result, probe_shape or (8, 3, probe, probe))
    return result


@torch.no_grad()
def _projection_drift(ckpt: MaxQCheckpoint, result: FoldResult, probe_shape: tuple[int, ...]) -> ProjectionDrift:
    """Output change caused by projection: original MaxQ network vs projected folded network."""
    x = torch.randn(probe_shape, generator=torch.Generator().manual_seed(0))
    diff = compare_outputs(ckpt.build_model()(x), result.build_model()(x))
    return ProjectionDrift(list(probe_shape), diff.max_abs_error, diff.relative_l2_error, diff.top1_agreement)


def save_folded(result: FoldResult, path: str | os.PathLike[str]) -> Path:
    """Write the deploy checkpoint atomically, after the reader's own checks passed on it.

    The writer refuses what :func:`folded_from_dict` would refuse (a bias that overflowed to
    -inf from extreme BatchNorm statistics, ...): no command writes a file the next one calls damaged.
    """
    out = check_output_path(path)
    ckpt = result.to_checkpoint()
    try:
        folded_from_dict(ckpt, out)
    except InputFileError as exc:
        detail = str(exc).removeprefix(f"{out}: ").removesuffix("; re-create it from its source")
        cause = ": its BatchNorm statistics or weights overflow float32" if "NaN or Inf" in detail else ""
        raise CheckpointFormatError(
            f"refusing to write {out}: folding {result.source.get('source_path', 'the checkpoint')} gives a {detail}{cause}"
        ) from None
    with atomic_output(out) as tmp:
        torch.save(ckpt, tmp)
    result.output = out
    return out


def fold_checkpoint(
    ckpt_path: str | os.PathLike[str], output: str | os.PathLike[str], arch: str | None = None,
    nm: str | None = None, project: bool = False, *, data: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None, preprocess=None, limit: int | None = None,
    batch_size: int = 64, progress=None, keep_dense: tuple[str, ...] | list[str] = (),
) -> FoldResult:
    """Load, fold and write: what ``maxq-deploy fold`` does.

    ``data`` (labelled images, with ``project``) measures top-1 of the MaxQ network and of the
    projected folded network on real images; ``preprocess`` defaults to the eval transform at
    the architecture's input size.
    """
    from maxq_deploy.load.maxq_checkpoint import load_checkpoint

    guard_outputs([Output(Path(output), TORCH_SUFFIXES, "folded checkpoint")], [ckpt_path, data, labels])  # before the work
    if data is not None and not project:
        raise OptionError("--data measures the accuracy cost of --project; add --project (a plain fold is exact)")
    if data is None and (labels is not None or limit is not None):
        raise OptionError("--labels and --limit apply to --data (the images --project is measured on); add --data DATA")
    ckpt = load_checkpoint(ckpt_path, arch=arch, nm=nm)
    dataset = _open_projection_data(ckpt.arch, data, labels, preprocess) if data is not None else None
    result = fold_masks_and_bn(ckpt, project=project, keep_dense=keep_dense)
    if dataset is not None and any(layer.projected for layer in result.layers):
        result.accuracy = projection_accuracy(ckpt, result, dataset, limit=limit, batch_size=batch_size, progress=progress)
    save_folded(result, output)
    return result


def _open_projection_data(arch: str, data, labels, preprocess):
    from maxq_deploy.archs.catalog import check_input_size, default_input_size
    from maxq_deploy.data import open_dataset
    from maxq_deploy.load.input_size import preprocess_for

    size = default_input_size(arch)
    if preprocess is None:
        preprocess = preprocess_for(arch, size)
    dataset = open_dataset(data, labels, preprocess, require_labels=True)
    c, h, w = dataset.sample_shape
    if h != w:
        from maxq_deploy.core.errors import DataError

        raise DataError(f"{dataset.root} holds {h}x{w} images; the models take square inputs")
    check_input_size(arch, h, what="--data")
    return dataset


@torch.no_grad()
def projection_accuracy(ckpt: MaxQCheckpoint, result: FoldResult, dataset, *, limit: int | None = None,
                        batch_size: int = 64, progress=None) -> ProjectionAccuracy:
    """Top-1 of the original MaxQ network and of the projected folded one on the same images."""
    from maxq_deploy.data import make_loader
    from maxq_deploy.core.progress import SILENT

    indices = list(range(len(dataset)))
    if limit is not None and limit < len(indices):
        step = len(indices) / limit
        indices = [int(i * step) for i in range(limit)]
    subset = torch.utils.data.Subset(dataset, indices)
    loader = make_loader(subset, batch_size=batch_size, workers=0)
    before, after = ckpt.build_model(), result.build_model()
    right_before = right_after = same = seen = 0
    for images, targets in (progress or SILENT).track(loader, total=len(loader), description="top-1 before/after --project"):
        p0, p1 = before(images).argmax(1), after(images).argmax(1)
        right_before += int((p0 == targets).sum())
        right_after += int((p1 == targets).sum())
        same += int((p0 == p1).sum())
        seen += int(targets.numel())
    pct = 100.0 / max(seen, 1)
    return ProjectionAccuracy(str(dataset.root), seen, right_before * pct, right_after * pct, same * pct)


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


def architecture_layers(arch: str, num_classes: int) -> dict[str, tuple[str, int]]:
    """Every conv of the folded ``arch``: name -> (role, conv groups), from the architecture itself.

    "sparse" is a MaxQ conv-bn layer (meant to hold N:M), "dense" a plain conv + BN pair: what a
    verifier expects comes from here, never from the labels a file carries.
    """
    meta_model = build_model(arch, num_classes, "maxq", device="meta")
    roles = {name: ("sparse", 1) for name, mod in meta_model.named_modules() if isinstance(mod, MaxQConvBN)}
    roles.update({conv_name: ("dense", conv.groups) for conv_name, conv, _ in _dense_conv_bn_pairs(meta_model)})
    return roles


def layers_from_dict(obj: dict, path: Path, what: str) -> list[FoldedLayer]:
    """The layer report of a folded/quantized checkpoint with role and groups from the architecture.

    A record naming a layer the architecture lacks is damage; a record whose role or groups
    differ from the architecture's is corrected (so ``verify`` judges every sparse layer).
    """
    roles = architecture_layers(obj["arch"], int(obj["num_classes"]))
    records: dict[str, FoldedLayer] = {}
    try:
        for record in obj["layers"]:
            layer = FoldedLayer(**record)
            if not isinstance(layer.name, str) or layer.name not in roles:
                raise InputFileError(
                    f"{path}: damaged {what} (its layer record {layer.name!r} names no layer of {obj['arch']})"
                )
            records[layer.name] = layer
    except TypeError as exc:
        raise InputFileError(f"{path}: damaged {what} (a layer record {exc})") from None
    layers = []
    for name, (role, groups) in roles.items():
        layer = records.get(name) or FoldedLayer(name, role, [], groups, None)
        layer.role, layer.groups = role, groups
        layers.append(layer)
    return layers


def folded_from_dict(obj: dict, path: Path) -> FoldedCheckpoint:
    """Validate a loaded folded checkpoint (version, metadata, keys, shapes, dtypes, finite weights)."""
    from maxq_deploy.load.checks import check_metadata, check_state_dict

    check_format(obj, FOLDED_FORMAT, path)
    check_metadata(obj, path, "folded checkpoint")
    state = check_state_dict(obj.get("state_dict"), path, "folded checkpoint")
    layers = layers_from_dict(obj, path, "folded checkpoint")
    result = FoldedCheckpoint(
        path=path, arch=obj["arch"], num_classes=int(obj["num_classes"]), nm=obj.get("nm"),
        layers=layers, state_dict=state, meta={k: v for k, v in obj.items() if k != "state_dict"},
    )
    expected = state_dict_shapes(result.arch, result.num_classes, "folded")
    got = {k: tuple(v.shape) for k, v in result.state_dict.items()}
    if got != expected:
        raise InputFileError(f"{path}: folded weights do not match {result.arch} with {result.num_classes} classes")
    return result


def load_folded(path: str | os.PathLike[str]) -> FoldedCheckpoint:
    """Read a deploy checkpoint written by :func:`save_folded` (weights_only)."""
    p = Path(path)
    obj = check_format(torch_load_safe(p, "folded checkpoint"), FOLDED_FORMAT, p)
    return folded_from_dict(obj, p)


def loaded_model_from_dict(path: Path, obj: dict) -> LoadedModel:
    """The folded network of an already loaded folded checkpoint (registered in ``formats``)."""
    folded = folded_from_dict(obj, path)
    return LoadedModel(path, "folded-checkpoint", folded.arch, folded.num_classes, folded.nm, folded.build_model(), folded.meta)
