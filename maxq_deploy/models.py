"""Any torch-side artifact of the pipeline as a runnable eval-mode ``nn.Module``.

MaxQ training checkpoints run as the MaxQ network (masks applied, BatchNorm separate), folded
checkpoints as the deploy network, quantized checkpoints as the fake-quantized network. Used by
export, eval, quantize and bench so that each stage can be compared with the one before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from maxq_deploy.checkpoint import FOLDED_FORMAT, QUANTIZED_FORMAT, load_checkpoint, torch_load_safe
from maxq_deploy.errors import InputFileError


@dataclass
class LoadedModel:
    """A runnable model plus what it is."""

    path: Path
    kind: str  # "maxq-checkpoint", "folded-checkpoint" or "quantized-checkpoint"
    arch: str
    num_classes: int
    nm: str | None
    module: nn.Module = field(repr=False)  # eval mode, CPU, float32 inputs
    meta: dict = field(default_factory=dict, repr=False)  # the artifact's own metadata


def load_torch_model(path: str | os.PathLike[str], arch: str | None = None, nm: str | None = None) -> LoadedModel:
    """Load a MaxQ, folded or quantized checkpoint as an eval-mode module."""
    p = Path(path)
    obj = torch_load_safe(p)
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt == FOLDED_FORMAT:
        from maxq_deploy.fold import folded_from_dict

        folded = folded_from_dict(obj, p)
        return LoadedModel(p, "folded-checkpoint", folded.arch, folded.num_classes, folded.nm, folded.build_model(), folded.meta)
    if fmt == QUANTIZED_FORMAT:
        from maxq_deploy.quantize import load_quantized_model

        return load_quantized_model(p, obj)
    if isinstance(fmt, str):
        raise InputFileError(f"{p}: artifact format {fmt!r} is not a model this version can run")
    ckpt = load_checkpoint(p, arch=arch, nm=nm, loaded=obj)
    return LoadedModel(p, "maxq-checkpoint", ckpt.arch, ckpt.num_classes, str(ckpt.nm) if ckpt.nm else None, ckpt.build_model(), {"epoch": ckpt.epoch})
