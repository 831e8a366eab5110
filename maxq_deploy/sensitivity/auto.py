"""``fold --project --auto --max-drop X``: the layers to keep dense, chosen greedily under an accuracy budget.

The sensitivity report ranks the sparse layers that break 2:4 by what projecting each one
alone costs (:func:`maxq_deploy.sensitivity.analyze`). Then, on the same ``--limit``-ed images,
the whole projected network is measured with the k most costly layers kept dense, k = 0, 1,
...; the first k whose measured drop (top-1 of the MaxQ network minus top-1 of the folded,
projected one) is within ``max_drop`` points is written. Every measured step is reported: it is
the measured trade-off curve (layers kept, drop, multiply-adds and parameters still 2:4).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from maxq_deploy.core.errors import OptionError
from maxq_deploy.core.progress import SILENT, Progress


def check_budget(max_drop) -> float:
    """``--max-drop``: a finite number of points >= 0, else one OptionError line."""
    try:
        value = float(max_drop)
    except (TypeError, ValueError):
        raise OptionError(f"--max-drop must be a number of top-1 points, got {max_drop!r}") from None
    if isinstance(max_drop, bool) or not math.isfinite(value) or value < 0:
        raise OptionError(f"--max-drop must be a finite number of top-1 points >= 0 (e.g. 0.5), got {max_drop!r}")
    return value


@dataclass
class AutoStep:
    """One measured choice: these layers kept dense, the rest projected to 2:4."""

    kept_dense: list[str]
    top1: float
    drop: float  # baseline top-1 minus this top-1 (points; negative: better than the MaxQ network)
    sparse_flops_share: float  # percent of the network's multiply-adds in layers that hold 2:4
    sparse_params_share: float  # percent of its parameters in layers that hold 2:4


@dataclass
class AutoChoice:
    """What ``--auto`` chose, the steps it measured, and the folded result it wrote."""

    max_drop: float
    baseline_top1: float  # the MaxQ network on the same images
    images: int
    data: str
    kept_dense: list[str]
    drop: float
    within_budget: bool
    steps: list[AutoStep] = field(default_factory=list)
    ranking: list[dict] = field(default_factory=list)  # per candidate: name, single-layer 2:4 cost, FLOPs share
    fold: object = None  # FoldResult

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "fold"}
        return data


@torch.no_grad()
def _top1(model, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    model.eval()
    right = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum()) for i in range(0, len(y), batch_size))
    return 100.0 * right / max(len(y), 1)


def auto_keep_dense(
    ckpt_path: str | os.PathLike[str], output: str | os.PathLike[str], data, labels=None, *, max_drop: float,
    limit: int | None = 1000, batch_size: int = 64, preprocess=None, arch: str | None = None, nm: str | None = None,
    progress: Progress | None = None,
) -> AutoChoice:
    """Fold ``ckpt_path`` with ``--project``, keeping dense the fewest costly layers that hold the drop within ``max_drop``."""
    from maxq_deploy.core.files import TORCH_SUFFIXES, Output, guard_outputs
    from maxq_deploy.data import open_dataset
    from maxq_deploy.load.input_size import preprocess_for
    from maxq_deploy.fold import fold_masks_and_bn, save_folded
    from maxq_deploy.load.maxq_checkpoint import load_checkpoint
    from maxq_deploy.sensitivity import _limited, _load_images, analyze

    budget = check_budget(max_drop)
    if data is None:
        raise OptionError("--auto measures accuracy: add --data DATA (labelled images) and --limit N")
    guard_outputs([Output(Path(output), TORCH_SUFFIXES, "folded checkpoint")], [ckpt_path, data, labels])
    progress = progress or SILENT
    ckpt = load_checkpoint(ckpt_path, arch=arch, nm=nm)
    from maxq_deploy.archs.catalog import default_input_size

    size = default_input_size(ckpt.arch)
    dataset = open_dataset(data, labels, preprocess or preprocess_for(ckpt.arch, size), require_labels=True)  # fold --data's rule
    report = analyze(ckpt_path, dataset, limit=limit, batch_size=batch_size, progress=progress)
    x, y = _load_images(dataset, _limited(dataset, limit), batch_size, progress)
    baseline = _top1(ckpt.build_model(), x, y, batch_size)
    candidates = sorted((layer for layer in report.layers if layer.delta_2_4 is not None), key=lambda layer: (layer.delta_2_4, layer.name))
    macs = {layer.name: layer.flops_share for layer in report.layers}
    params = {layer.name: layer.params_share for layer in report.layers}
    choice = AutoChoice(budget, baseline, len(y), str(dataset.root), [], 0.0, False,
                        ranking=[{"name": c.name, "delta_2_4": c.delta_2_4, "flops_share": c.flops_share} for c in candidates])
    result = None
    for k in progress.track(range(len(candidates) + 1), total=len(candidates) + 1, description="--auto: keep dense"):
        kept = [c.name for c in candidates[:k]]
        result = fold_masks_and_bn(ckpt, project=True, keep_dense=kept)
        top1 = _top1(result.build_model(), x, y, batch_size)
        holding = [layer.name for layer in result.sparse_layers if layer.holds_hardware_pattern]
        choice.steps.append(AutoStep(kept, round(top1, 4), round(baseline - top1, 4), round(sum(macs.get(n, 0.0) for n in holding), 3),
                                     round(sum(params.get(n, 0.0) for n in holding), 3)))
        if baseline - top1 <= budget:
            break
    choice.kept_dense, choice.drop = choice.steps[-1].kept_dense, choice.steps[-1].drop
    choice.within_budget = choice.drop <= budget
    save_folded(result, output)
    choice.fold = result
    return choice
