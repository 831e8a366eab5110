"""Loading MaxQ training checkpoints safely and describing their sparse layers.

Everything a MaxQ file holds is tensors, numbers, strings and dicts, so it is always read with
``weights_only=True``: a pickle that would run code is refused, never executed.
"""

from __future__ import annotations

import math
import os
import pickle
import warnings
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from maxq_deploy.archs import MaxQConvBN, build_model, list_archs, normalize_arch, state_dict_shapes
from maxq_deploy.core.files import check_input_file, sha256_file
from maxq_deploy.core.errors import (
    CheckpointFormatError,
    InputFileError,
    SparsityPatternError,
    UnsupportedArchitectureError,
    first_line,
)
from maxq_deploy.load.formats import format_of, is_tool_artifact
from maxq_deploy.core.sparsity import NMPattern, dense_groups_for, groups_along, infer_mask_pattern, mask_agrees

PREFIXES = ("module.", "_orig_mod.")


def torch_load_safe(path: str | os.PathLike[str], what: str = "checkpoint") -> object:
    """``torch.load`` with ``weights_only=True``, turning every failure into a one-line error.

    The file is read into memory, never memory-mapped: a checkpoint that a training job rewrites
    or truncates while a command has it mapped would kill the process with SIGBUS (no message, no
    cleanup). Reading costs one copy of the file in memory for the command's duration.
    """
    p = check_input_file(path, what)
    if p.stat().st_size == 0:
        raise InputFileError(f"{what} is empty: {p}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol of foreign files
            return torch.load(p, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower() or _pickle_references_code(p):
            raise InputFileError(
                f"refused to load {p}: it references Python callables beyond tensors and plain data, "
                "and unpickling them could run code (only weights_only-safe files are read)"
            ) from None
        raise InputFileError(f"{p} is not a PyTorch {what} (not a file written by torch.save)") from None
    # A damaged or foreign file makes torch's readers fail in many ways (KeyError from a bad memo
    # index, IndexError from an empty stack, AssertionError on a missing storage, BadZipFile from
    # a bogus end record, ...): each means "not a readable checkpoint", never a bug of ours.
    except Exception as exc:
        if _is_npz(p):
            raise InputFileError(f"{p} is a NumPy .npz archive (data), not a PyTorch {what}") from None
        hint = "truncated or corrupt" if isinstance(exc, EOFError) or "zip" in str(exc).lower() else "not a PyTorch file"
        raise InputFileError(f"{p} cannot be read as a PyTorch {what}: {hint} ({first_line(exc)})") from None


def _is_npz(path: Path) -> bool:
    """A zip of ``.npy`` members (what ``np.savez`` writes) is data, not a torch file."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception:  # noqa: BLE001 - not a readable zip: not an .npz either
        return False
    return bool(names) and all(name.endswith(".npy") for name in names)


_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


def _pickle_references_code(path: Path) -> bool:
    """Whether a raw pickle imports or calls anything, read with pickletools (never executed)."""
    import pickletools

    try:
        with open(path, "rb") as f:
            return any(op.name in _CODE_OPCODES for op, _, _ in pickletools.genops(f))
    except Exception:  # noqa: BLE001 - garbage is simply "not a pickle"
        return False


def strip_prefixes(state: dict[str, torch.Tensor], path: Path | None = None) -> dict[str, torch.Tensor]:
    """Remove DataParallel (``module.``) and torch.compile (``_orig_mod.``) prefixes, nested too.

    Two keys that become one (``module.fc.weight`` and ``fc.weight``) are refused: which of
    them is the weight cannot be known.
    """
    out: dict[str, torch.Tensor] = {}
    original: dict[str, str] = {}
    for key, value in state.items():
        name = key
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if name.startswith(prefix):
                    name, changed = name[len(prefix):], True
        if name in out:
            where = f"{path}: " if path is not None else ""
            raise CheckpointFormatError(
                f"{where}damaged checkpoint: {original[name]!r} and {key!r} are both {name!r} once the "
                f"{'/'.join(PREFIXES)} prefixes are removed; keep one of them"
            )
        out[name], original[name] = value, key
    return out


def extract_state_dict(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, the rest of the training dict) from a full training dict or a bare state dict.

    The state dict passes :func:`maxq_deploy.load.checks.check_state_dict` (string keys, dense
    real-float tensors, finite) and its keys are unique once prefixes are stripped.
    """
    from maxq_deploy.load.checks import check_state_dict

    if not isinstance(obj, dict):
        raise InputFileError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    if is_tool_artifact(obj):
        raise InputFileError(f"{path} is a {format_of(obj)} artifact written by maxq-deploy, not a MaxQ training checkpoint")
    if "state_dict" in obj:
        state, meta = obj["state_dict"], {k: v for k, v in obj.items() if k != "state_dict"}
    else:
        state, meta = obj, {}
        if not any(isinstance(v, torch.Tensor) for v in obj.values()):
            raise InputFileError(f"{path} has no tensors under 'state_dict' or at the top level: not a MaxQ checkpoint")
    check_state_dict(state, path, "checkpoint", "state_dict" if "state_dict" in obj else "the top level")
    if not state:
        raise InputFileError(f"{path} has no tensors under 'state_dict': not a MaxQ checkpoint")
    for key in ("epoch", "best_acc1"):
        _scalar(meta.get(key), int if key == "epoch" else float, f"{path}: damaged checkpoint ({key}")
    return strip_prefixes(state, path), meta


def _num_classes(state: dict[str, torch.Tensor], path: Path) -> int:
    fc = state.get("fc.weight")  # Linear [classes, C] (ImageNet nets) or 1x1 conv [classes, C, 1, 1] (CIFAR ResNets)
    if fc is None or not (fc.dim() == 2 or (fc.dim() == 4 and tuple(fc.shape[2:]) == (1, 1))):
        raise UnsupportedArchitectureError(
            f"{path} has no classifier 'fc.weight'; supported architectures: {', '.join(list_archs())}"
        )
    if fc.shape[0] < 1 or fc.shape[1] < 1:
        raise CheckpointFormatError(f"{path}: damaged checkpoint (classifier 'fc.weight' has shape {list(fc.shape)}: no classes)")
    return int(fc.shape[0])


def infer_arch(state: dict[str, torch.Tensor], num_classes: int) -> str | None:
    """The registered architecture whose parameter names match ``state`` (masks optional)."""
    keys = {k for k in state if not k.endswith(".mask")}
    fc_dims = state["fc.weight"].dim() if "fc.weight" in state else None
    for arch in list_archs():
        shapes = state_dict_shapes(arch, num_classes)
        if fc_dims is not None and len(shapes.get("fc.weight", ())) != fc_dims:
            continue  # a Linear head is no CIFAR ResNet and a conv head no ImageNet net
        expected = {k for k in shapes if not k.endswith(".mask")}
        if expected == keys:
            return arch
    return None


@dataclass
class SparseLayerInfo:
    """One MaxQ sparse conv-bn layer as found in the checkpoint."""

    name: str
    shape: tuple[int, ...]
    has_mask: bool
    mask_kind: str  # "soft" (kept values in [1, 3]), "hard" (0/1) or "none" (DenseConv2dBN)
    trained_nm: str | None
    groups: int
    dense_groups: int
    params: int
    kept: int  # non-zeros of W * mask

    @property
    def finished(self) -> bool:
        return self.has_mask and self.trained_nm is not None and self.dense_groups == 0


@dataclass
class MaxQCheckpoint:
    """A loaded MaxQ checkpoint: canonical state dict plus what it says about its sparsity."""

    path: Path
    sha256: str
    arch: str
    arch_source: str  # "option", "file" or "keys"
    num_classes: int
    epoch: int | None
    best_acc1: float | None
    nm: NMPattern | None
    nm_source: str  # "option" or "masks"
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    layers: list[SparseLayerInfo]

    @property
    def unfinished_layers(self) -> list[SparseLayerInfo]:
        return [layer for layer in self.layers if layer.has_mask and layer.dense_groups > 0]

    @property
    def total_params(self) -> int:
        return sum(int(v.numel()) for k, v in self.state_dict.items() if not k.endswith((".mask", "num_batches_tracked", "running_mean", "running_var")))

    def build_model(self) -> nn.Module:
        """The eval-mode MaxQ network with this checkpoint's weights and masks."""
        model = build_model(self.arch, self.num_classes, "maxq")
        state = dict(self.state_dict)
        for layer in self.layers:  # DenseConv2dBN layers have no mask: all ones
            if not layer.has_mask:
                state[f"{layer.name}.mask"] = torch.ones(layer.shape)
        model.load_state_dict(state, strict=True)
        return model.eval()

    def hardware_pattern_gap(self) -> tuple[int, int, int]:
        """(sparse layers breaking 2:4, groups of 4 along C breaking it, all such groups) of W * mask."""
        from maxq_deploy.core.sparsity import HARDWARE_PATTERN, check_pattern

        layers = groups = total = 0
        for layer in self.layers:
            if not layer.has_mask:
                continue
            check = check_pattern(self.state_dict[f"{layer.name}.conv.weight"] * self.state_dict[f"{layer.name}.mask"], HARDWARE_PATTERN)
            layers += int(check.violating_groups > 0)
            groups += check.violating_groups
            total += check.groups
        return layers, groups, total

    def project_advice(self) -> str | None:
        """What to do when a fully trained N:M (4:8, 4:16, 8:16, ...) does not give 2:4, else None."""
        from maxq_deploy.core.sparsity import HARDWARE_PATTERN

        if self.nm is None or self.nm.implies(NMPattern.parse(HARDWARE_PATTERN)):
            return None
        layers, groups, total = self.hardware_pattern_gap()
        if not groups:
            return None
        return (
            f"trained {self.nm} is not {HARDWARE_PATTERN}: {groups:,} of {total:,} groups of 4 along the input channels "
            f"break {HARDWARE_PATTERN} in {layers} of {sum(l.has_mask for l in self.layers)} sparse layers; it needs "
            f"maxq-deploy fold {self.path.name} -o OUT --project (keeps the 2 largest of each group of 4, reports the drift) "
            "before a sparse engine can use it"
        )

    def summary(self) -> dict:
        """JSON-ready description (what ``inspect --json`` prints)."""
        from maxq_deploy.archs.catalog import default_input_size

        sparse = [layer for layer in self.layers if layer.has_mask]
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "arch": self.arch,
            "arch_source": self.arch_source,
            "num_classes": self.num_classes,
            "epoch": self.epoch,
            "best_acc1": self.best_acc1,
            "nm": str(self.nm) if self.nm else None,
            "nm_source": self.nm_source,
            "input_size": default_input_size(self.arch),
            "breaks_2_4": self.project_advice(),
            "sparse_layers": len(sparse),
            "unfinished_layers": len(self.unfinished_layers),
            "sparse_params": sum(layer.params for layer in sparse),
            "kept_sparse_params": sum(layer.kept for layer in sparse),
            "total_params": self.total_params,
            "layers": [asdict(layer) | {"shape": list(layer.shape)} for layer in self.layers],
        }


def _arch_hint(state: dict[str, torch.Tensor], arch: str, num_classes: int, source: str) -> str:
    """What to do when the weights are not ``arch``: name the architecture the keys match, if any."""
    found = infer_arch(state, num_classes)
    match = f"its keys match {found}: pass --arch {found}" if found and found != arch else "pass --arch NAME if the weights are one of them"
    if source == "option":
        return f"is --arch right? {match}" if found and found != arch else "is --arch right?"
    if source == "file":
        return f"the file's 'arch' entry says {arch}; {match}"
    return match


def _check_shapes(state: dict[str, torch.Tensor], arch: str, num_classes: int, path: Path, source: str = "option") -> None:
    expected = state_dict_shapes(arch, num_classes)
    for key, shape in expected.items():
        if key not in state:
            if key.endswith(".mask"):
                continue  # DenseConv2dBN layers carry no mask
            raise CheckpointFormatError(f"{path}: key {key!r} missing for {arch} ({_arch_hint(state, arch, num_classes, source)})")
        if tuple(state[key].shape) != shape:
            what = "mask and weight have different shapes" if key.endswith(".mask") else "shape mismatch"
            hint = "" if key.endswith(".mask") else f" ({_arch_hint(state, arch, num_classes, source)})"
            raise CheckpointFormatError(
                f"{path}: {what} at {key!r}: {tuple(state[key].shape)} in the file, {arch} needs {shape}{hint}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointFormatError(
            f"{path}: {len(extra)} key(s) that {arch} does not have, e.g. {extra[0]!r} ({_arch_hint(state, arch, num_classes, source)})"
        )


def _describe_layer(name: str, state: dict[str, torch.Tensor], nm: NMPattern | None) -> SparseLayerInfo:
    weight = state[f"{name}.conv.weight"]
    mask = state.get(f"{name}.mask")
    shape = tuple(weight.shape)
    if mask is None:
        return SparseLayerInfo(name, shape, False, "none", None, 0, 0, weight.numel(), int((weight != 0).sum()))
    mask = mask.float()
    # "hard": every kept value is exactly 1 (tested in place, no copy of the kept values)
    kind = "hard" if bool(((mask == 0) | (mask == 1)).all()) else "soft"
    kept = int(torch.count_nonzero(weight * mask))
    if nm is not None:
        if shape[1] % nm.m:
            raise SparsityPatternError(
                f"layer {name}: {shape[1]} input channels are not divisible by M={nm.m} of --nm {nm}"
            )
        if not mask_agrees(mask, nm):
            worst = int((groups_along(mask, nm.m) != 0).sum(dim=1).max())
            raise SparsityPatternError(
                f"--nm {nm} disagrees with the masks: layer {name} keeps up to {worst} of {nm.m} in a group"
            )
        groups, dense = dense_groups_for(mask, nm)
        all_dense = dense == groups
        return SparseLayerInfo(name, shape, True, kind, None if all_dense else str(nm), groups, dense, weight.numel(), kept)
    try:
        found = infer_mask_pattern(mask)
    except SparsityPatternError as exc:
        raise SparsityPatternError(f"layer {name}: {exc}; pass --nm N:M if the masks are unusual") from None
    return SparseLayerInfo(
        name, shape, True, kind, str(found.pattern) if found.pattern else None, found.groups, found.dense_groups,
        weight.numel(), kept,
    )


def _scalar(value: object, kind: type, damaged: str = "damaged checkpoint (value") -> int | float | None:
    """A number stored as int, float or 0-d tensor (MaxQ saves best_acc1 either way); None if absent.

    Anything else (NaN, Inf, a list, a tensor of many values, a string) is refused: ``damaged``
    starts the message.
    """
    if value is None:
        return None
    number = value
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.layout == torch.strided and value.device.type != "meta" \
            and not value.is_complex():
        number = value.item()
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        shown = f"a {type(value).__name__}" if not isinstance(value, (int, float)) else repr(value)
        raise InputFileError(f"{damaged} is {shown}, not a finite number)")
    return kind(number)


def load_checkpoint(
    path: str | os.PathLike[str], arch: str | None = None, nm: str | NMPattern | None = None, *, loaded: object = None
) -> MaxQCheckpoint:
    """Read a MaxQ checkpoint (training dict or bare state dict) and describe its sparsity.

    ``arch`` overrides the file's ``arch`` entry (needed for bare state dicts whose keys are
    ambiguous); ``nm`` overrides N:M inference and is checked against the masks. ``loaded`` is
    the file's content when the caller already read it with :func:`torch_load_safe`.
    """
    p = Path(path)
    pattern = NMPattern.parse(nm) if nm is not None else None
    obj = torch_load_safe(p) if loaded is None else loaded
    state, meta = extract_state_dict(obj, p)
    num_classes = _num_classes(state, p)
    if arch is not None:
        arch_name, arch_source = normalize_arch(arch), "option"
    elif meta.get("arch") is not None and not isinstance(meta.get("arch"), str):
        found = infer_arch(state, num_classes)
        hint = f"its keys match {found}: pass --arch {found}" if found else "pass --arch NAME"
        raise UnsupportedArchitectureError(f"{p}: damaged checkpoint (its 'arch' entry {meta['arch']!r} is not an architecture name); {hint}")
    elif isinstance(meta.get("arch"), str):
        try:
            arch_name, arch_source = normalize_arch(meta["arch"]), "file"
        except UnsupportedArchitectureError as exc:
            found = infer_arch(state, num_classes)
            hint = f"its keys match {found}: pass --arch {found}" if found else "pass --arch NAME if the weights are one of them"
            raise UnsupportedArchitectureError(f"{p}: the file's 'arch' entry: {exc}; {hint}") from None
    else:
        found = infer_arch(state, num_classes)
        if found is None:
            raise UnsupportedArchitectureError(
                f"{p}: its keys match no supported architecture ({', '.join(list_archs())}); pass --arch if it is one"
            )
        arch_name, arch_source = found, "keys"
    _check_shapes(state, arch_name, num_classes, p, arch_source)

    meta_model = build_model(arch_name, num_classes, "maxq", device="meta")
    names = [name for name, mod in meta_model.named_modules() if isinstance(mod, MaxQConvBN)]
    layers = [_describe_layer(name, state, pattern) for name in names]
    if pattern is None:
        counts = Counter(layer.trained_nm for layer in layers if layer.trained_nm)
        model_nm = NMPattern.parse(counts.most_common(1)[0][0]) if counts else None
    else:
        model_nm = pattern

    return MaxQCheckpoint(
        path=p,
        sha256=sha256_file(p),
        arch=arch_name,
        arch_source=arch_source,
        num_classes=num_classes,
        epoch=_scalar(meta.get("epoch"), int, f"{p}: damaged checkpoint (epoch"),
        best_acc1=_scalar(meta.get("best_acc1"), float, f"{p}: damaged checkpoint (best_acc1"),
        nm=model_nm,
        nm_source="option" if pattern is not None else "masks",
        state_dict=state,
        layers=layers,
    )
