"""N:M sparsity arithmetic: grouping, checking, inferring and projecting patterns.

Groups are cut along the reduction axis, the one NVIDIA's sparse tensor cores use: the input
channels C of a conv weight [K, C, R, S] (axis 1), the input features of a Linear weight
[out, in] (axis 1). For every other index the values along that axis are split into
consecutive groups of M.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from maxq_deploy.core.errors import SparsityPatternError

#: The pattern NVIDIA sparse tensor cores accelerate.
HARDWARE_PATTERN = "2:4"
#: Group sizes tried when inferring N:M from a mask, smallest first.
CANDIDATE_M = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class NMPattern:
    """At most ``n`` non-zeros in every group of ``m`` consecutive values along the axis."""

    n: int
    m: int

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.m, int)):
            raise SparsityPatternError(f"N:M must be integers, got {self.n!r}:{self.m!r}")
        if not 0 < self.n < self.m:
            raise SparsityPatternError(
                f"N:M pattern needs 0 < N < M, got {self.n}:{self.m} (e.g. 2:4, 1:4, 2:8, 1:16)"
            )

    @classmethod
    def parse(cls, text: str | NMPattern) -> NMPattern:
        """Parse ``"2:4"``; the error names the value and the expected form."""
        if isinstance(text, NMPattern):
            return text
        parts = str(text).strip().split(":")
        if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):  # "²" is a digit int() refuses
            raise SparsityPatternError(f"N:M must look like 2:4, got {text!r}")
        return cls(int(parts[0]), int(parts[1]))

    @property
    def density(self) -> float:
        return self.n / self.m

    def implies(self, other: NMPattern) -> bool:
        """True when every tensor with this pattern also has ``other`` (1:4 implies 2:4)."""
        if self.m == other.m:
            return self.n <= other.n
        if self.m > other.m and self.m % other.m == 0:
            return self.n <= other.n  # worst case: all n non-zeros in one small group
        if other.m > self.m and other.m % self.m == 0:
            return self.n * (other.m // self.m) <= other.n
        return False

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


def groups_along(tensor: torch.Tensor, m: int, axis: int = 1) -> torch.Tensor:
    """View ``tensor`` as rows of ``m`` consecutive values along ``axis``: shape [G, m]."""
    size = tensor.shape[axis]
    if size % m:
        raise SparsityPatternError(
            f"axis {axis} has {size} values, not divisible by M={m}; "
            "an N:M layer needs its input channels to be a multiple of M"
        )
    return tensor.movedim(axis, -1).reshape(-1, m)


def nonzeros_per_group(tensor: torch.Tensor, m: int, axis: int = 1) -> torch.Tensor:
    """Count of non-zero entries in each group of ``m`` along ``axis`` (int64, shape [G])."""
    # compare first: the regrouping copy is then 1 byte per value instead of 4
    return groups_along(tensor != 0, m, axis).sum(dim=-1)


class PatternTally:
    """Which layers of a report are meant to hold the pattern and how many do: for any report whose
    ``layers`` each say ``expected_sparse`` and ``holds`` (the verify report, the quantize result)."""

    layers: list

    @property
    def expected(self) -> list:
        """The layers meant to hold the pattern (a layer fold kept dense on purpose is not one)."""
        return [layer for layer in self.layers if layer.expected_sparse]

    @property
    def failing(self) -> list:
        return [layer for layer in self.expected if not layer.holds]

    @property
    def holding_layers(self) -> int:
        return len(self.expected) - len(self.failing)

    @property
    def pattern_ok(self) -> bool:
        """Some layers are meant to hold the pattern, and all of them do."""
        return bool(self.expected) and not self.failing


@dataclass(frozen=True)
class PatternCheck:
    """How one tensor measures against an N:M pattern."""

    pattern: str
    applicable: bool  # False when the axis length is not a multiple of M
    groups: int
    violating_groups: int
    max_nonzeros: int

    @property
    def holds(self) -> bool:
        return self.applicable and self.violating_groups == 0


def check_pattern(tensor: torch.Tensor, pattern: NMPattern | str, axis: int = 1) -> PatternCheck:
    """Measure ``tensor`` against ``pattern`` along ``axis`` (at most N non-zeros per group)."""
    pattern = NMPattern.parse(pattern)
    if tensor.dim() <= axis or tensor.shape[axis] % pattern.m:
        return PatternCheck(str(pattern), False, 0, 0, -1)
    # counts in 1 byte (M < 256) instead of nonzeros_per_group's int64: a quarter of the memory
    counts = groups_along(tensor != 0, pattern.m, axis).sum(dim=-1, dtype=torch.uint8 if pattern.m < 256 else torch.int64)
    return PatternCheck(
        pattern=str(pattern),
        applicable=True,
        groups=int(counts.numel()),
        violating_groups=int((counts > pattern.n).sum()),
        max_nonzeros=int(counts.max()) if counts.numel() else 0,
    )


@dataclass(frozen=True)
class MaskPattern:
    """What a training mask says: its N:M and how many groups are still fully dense."""

    pattern: NMPattern | None  # None: every group is dense (sparsity not started)
    groups: int
    dense_groups: int


def _counts_per_group_size(tensor: torch.Tensor, sizes: list[int], axis: int) -> dict[int, torch.Tensor]:
    """Non-zeros per group for every M in ``sizes`` (each divides the axis), reading ``tensor`` once.

    Counts for a group size come from those of a smaller size that divides it, so inferring N:M
    over all candidates costs about one pass over the weight instead of one per candidate.
    Each result has shape [rows, axis length / M]; flattened, its order is that of
    :func:`groups_along`.
    """
    nonzero = (tensor != 0).movedim(axis, -1)
    rows = nonzero.reshape(-1, nonzero.shape[-1])
    counts: dict[int, torch.Tensor] = {1: rows.to(torch.uint8 if max(sizes) < 256 else torch.int32)}
    for m in sorted(sizes):
        step = max(k for k in counts if m % k == 0)
        ratio, smaller = m // step, counts[step]
        total = smaller[:, 0::ratio].clone()
        for i in range(1, ratio):
            total += smaller[:, i::ratio]
        counts[m] = total
    return counts


def infer_mask_pattern(mask: torch.Tensor, axis: int = 1) -> MaskPattern:
    """Infer N:M from a MaxQ mask, allowing whole groups still dense (incremental sparsity).

    A MaxQ mask keeps exactly N entries of every sparse group and all M of a dense one, so a
    candidate M fits when every group count is either its minimum N or M. Of the fitting
    candidates the sparsest N/M wins, and the smaller M on a tie (a 2:4 mask also fits 4:8).
    """
    best: tuple[float, int, NMPattern, int, int] | None = None
    channels = mask.shape[axis]
    usable = [m for m in CANDIDATE_M if channels % m == 0]
    counts_by_m = _counts_per_group_size(mask, usable, axis) if usable else {}
    for m in usable:
        counts = counts_by_m[m]
        n = int(counts.min())
        if not 0 < n < m:
            continue
        dense = counts == m
        if not bool(((counts == n) | dense).all()):
            continue
        key = (n / m, m)
        if best is None or key < best[:2]:
            best = (n / m, m, NMPattern(n, m), int(counts.numel()), int(dense.sum()))
    if best is None:
        # All groups dense (or no candidate fits): report against the smallest usable M.
        m = usable[0] if usable else None
        if m is not None and bool((counts_by_m[m] == m).all()):
            groups = mask.numel() // m
            return MaskPattern(None, groups, groups)
        raise SparsityPatternError(
            f"mask of shape {tuple(mask.shape)} has no consistent N:M pattern along axis {axis}"
        )
    return MaskPattern(best[2], best[3], best[4])


def dense_groups_for(mask: torch.Tensor, pattern: NMPattern, axis: int = 1) -> tuple[int, int]:
    """(groups, groups with more than N kept) of ``mask`` under a user-given ``pattern``."""
    counts = nonzeros_per_group(mask, pattern.m, axis)
    return int(counts.numel()), int((counts > pattern.n).sum())


def mask_agrees(mask: torch.Tensor, pattern: NMPattern, axis: int = 1) -> bool:
    """True when every group of ``mask`` keeps at most N entries or is a whole dense group."""
    counts = nonzeros_per_group(mask, pattern.m, axis)
    return bool(((counts <= pattern.n) | (counts == pattern.m)).all())


def project_to_pattern(tensor: torch.Tensor, pattern: NMPattern | str, axis: int = 1) -> torch.Tensor:
    """Keep the N largest-magnitude entries of each group of M along ``axis``; zero the rest."""
    pattern = NMPattern.parse(pattern)
    groups = groups_along(tensor, pattern.m, axis)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.abs().topk(pattern.n, dim=1).indices, True)
    moved_shape = tensor.movedim(axis, -1).shape
    return (groups * keep).reshape(moved_shape).movedim(-1, axis).contiguous()
