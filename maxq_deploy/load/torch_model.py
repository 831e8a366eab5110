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

from maxq_deploy.load.maxq_checkpoint import load_checkpoint, torch_load_safe
from maxq_deploy.load.formats import artifact_format


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


def load_torch_model(path: str | os.PathLike[str], arch: str | None = None, nm: str | None = None, *,
                     loaded: object | None = None) -> LoadedModel:
    """Load a MaxQ, folded or quantized checkpoint as an eval-mode module.

    ``loaded``: what ``torch_load_safe(path)`` returned, where the caller read the file already.
    """
    p = Path(path)
    obj = torch_load_safe(p) if loaded is None else loaded
    spec = artifact_format(obj, p)  # checks the format and its version once, for every caller
    if spec is not None:
        return spec.load_model(p, obj)  # type: ignore[arg-type]
    ckpt = load_checkpoint(p, arch=arch, nm=nm, loaded=obj)
    return LoadedModel(p, "maxq-checkpoint", ckpt.arch, ckpt.num_classes, str(ckpt.nm) if ckpt.nm else None, ckpt.build_model(), {"epoch": ckpt.epoch})
