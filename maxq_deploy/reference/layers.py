"""MaxQ mask rules (local N:M mask, incremental dense groups, soft filter/kernel terms)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from maxq_deploy.archs.layers import MaxQConvBN

TAU = 0.01


@dataclass(frozen=True)
class LayerRule:
    """How one upstream layer type turns |W| into a mask."""

    soft: bool = False  # multiply by (1 + filter term + kernel term)
    sigmoid: bool = True  # soft terms through a sigmoid (V2*) or 0/1 (V1)
    kernel_term_always: bool = False  # V1: kernel term for 1x1 convs too
    incremental: str | None = None  # None, "ascending", "descending", "random": dense-group choice
    random_local: bool = False  # the N kept per group are chosen at random
    masked: bool = True  # DenseConv2dBN has no mask


LAYER_TYPES: dict[str, LayerRule] = {
    "SoftMaxQConv2DBNV1": LayerRule(soft=True, sigmoid=False, kernel_term_always=True, incremental="ascending"),
    "HardMaxQConv2DBNV1": LayerRule(incremental="ascending"),
    "SoftMaxQConv2DBNV2": LayerRule(soft=True),
    "HardMaxQConv2DBNV2": LayerRule(),
    "SoftMaxQConv2DBNV2Pro": LayerRule(soft=True, incremental="ascending"),
    "HardMaxQConv2DBNV2Pro": LayerRule(incremental="ascending"),
    "SoftMaxQConv2DBNV2ProRandom": LayerRule(soft=True, incremental="random"),
    "SoftMaxQConv2DBNV2ProInverse": LayerRule(soft=True, incremental="descending"),
    "SoftMaxQConv2DBNV2ProNM": LayerRule(soft=True, incremental="ascending"),
    "SoftSRSTEConv2dBN": LayerRule(),
    "HardSRSTEConv2dBN": LayerRule(),
    "SoftRandomConv2dBN": LayerRule(random_local=True),
    "HardRandomConv2dBN": LayerRule(random_local=True),
    "DenseConv2dBN": LayerRule(masked=False),
}


def preserve_rate(epoch: float, start: float, end: float, schedule: str = "cos") -> float:
    """Share of N:M groups still kept dense at ``epoch`` (1 before ``start``, 0 from ``end``)."""
    if end <= start:
        return 0.0 if epoch >= end else 1.0
    u = min(max((epoch - start) / (end - start), 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - u
    if schedule == "cubic":
        return (1.0 - u) ** 3
    if schedule == "cos":
        return math.cos(u * math.pi / 2)
    if schedule == "exp":
        k = 5.0  # the upstream constant is not documented; any decay from 1 to 0 serves fixtures
        return (math.exp(-k * u) - math.exp(-k)) / (1.0 - math.exp(-k))
    raise ValueError(f"unknown schedule {schedule!r}: linear, cubic, cos or exp")


def _grouped(a: torch.Tensor, m: int) -> torch.Tensor:
    return a.permute(0, 2, 3, 1).reshape(-1, m)


def _ungrouped(g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    k, c, r, s = shape
    return g.reshape(k, r, s, c).permute(0, 3, 1, 2).contiguous()


def local_mask(
    weight: torch.Tensor, n: int, m: int, rule: LayerRule, rate: float, generator: torch.Generator | None
) -> torch.Tensor:
    """0/1 mask keeping N of every M along C, then whole groups back to 1 per the incremental rule."""
    a = _grouped(weight.detach().abs(), m)
    score = torch.rand(a.shape, generator=generator) if rule.random_local else a
    keep = torch.zeros_like(a)
    keep.scatter_(1, score.topk(n, dim=1).indices, 1.0)
    dense_count = math.floor(rate * a.shape[0]) if rule.incremental else 0
    if dense_count > 0:
        l1 = a.sum(dim=1)
        if rule.incremental == "random":
            order = torch.randperm(a.shape[0], generator=generator)
        else:
            order = torch.argsort(l1, descending=rule.incremental == "descending")
        keep[order[:dense_count]] = 1.0
    return _ungrouped(keep, weight.shape)


def _threshold_term(a: torch.Tensor, sparsity: float, sigmoid: bool) -> torch.Tensor:
    """Per row of ``a``: the t smallest get 0, the rest sigmoid((a - thr)/tau) or 1."""
    length = a.shape[1]
    t = math.floor(sparsity * length)
    if t <= 0:
        return torch.ones_like(a)
    sorted_a, order = torch.sort(a, dim=1)
    upper = sorted_a[:, min(t, length - 1)]
    threshold = ((sorted_a[:, t - 1] + upper) / 2).unsqueeze(1)
    term = torch.sigmoid((a - threshold) / TAU) if sigmoid else torch.ones_like(a)
    zero_idx = order[:, :t]
    return term.scatter(1, zero_idx, 0.0)


def compute_mask(
    weight: torch.Tensor,
    n: int,
    m: int,
    layer_type: str,
    rate: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The mask a MaxQ layer of ``layer_type`` holds for ``weight`` [K, C, R, S] at preserve ``rate``."""
    rule = LAYER_TYPES[layer_type]
    local = local_mask(weight, n, m, rule, rate, generator)
    if not rule.soft:
        return local
    a = weight.detach().abs()
    k, c, r, s = a.shape
    sparsity = (m - n) / m
    filter_term = _threshold_term(a.reshape(k, -1), sparsity, rule.sigmoid).reshape(a.shape)
    if r * s > 1 or rule.kernel_term_always:
        per_pos = a.permute(2, 3, 0, 1).reshape(r * s, k * c)
        kernel_term = _threshold_term(per_pos, sparsity, rule.sigmoid).reshape(r, s, k, c).permute(2, 3, 0, 1)
    else:
        kernel_term = torch.zeros_like(a)
    return local * (1.0 + filter_term + kernel_term)


class ReferenceMaxQConvBN(MaxQConvBN):
    """A trainable MaxQ sparse layer: same keys as upstream, mask refreshed by :meth:`update_mask`."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, *,
                 layer_type: str = "SoftMaxQConv2DBNV2Pro", n: int = 2, m: int = 4):
        super().__init__(in_ch, out_ch, kernel, stride, padding)
        if layer_type not in LAYER_TYPES:
            raise ValueError(f"unknown layer type {layer_type!r}; known: {', '.join(LAYER_TYPES)}")
        self.layer_type, self.n, self.m = layer_type, n, m
        if not LAYER_TYPES[layer_type].masked:
            del self.mask  # DenseConv2dBN stores no mask
            self.register_buffer("mask", None, persistent=False)

    @torch.no_grad()
    def update_mask(self, rate: float = 0.0, generator: torch.Generator | None = None) -> None:
        if self.mask is not None:
            self.mask.copy_(compute_mask(self.conv.weight, self.n, self.m, self.layer_type, rate, generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            return self.scale(self.conv(x))
        return super().forward(x)
