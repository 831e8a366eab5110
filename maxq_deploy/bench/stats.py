"""Latency statistics (pure): percentiles, mean/std, throughput, and the batch-size option."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from maxq_deploy.core.errors import OptionError


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks.

    Same as ``numpy.percentile(values, q)`` (method "linear"): rank ``q/100 * (n-1)`` of the
    sorted values, interpolated between its floor and ceiling. Non-finite values are refused (sorting
    a nan gives an order-dependent answer).
    """
    if not len(values):
        raise ValueError("percentile of no values")
    if not all(map(math.isfinite, values)):
        raise ValueError("percentile of non-finite values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = q / 100.0 * (len(ordered) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model at one batch size, in milliseconds."""

    iterations: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float


def latency_stats(samples_ns: Sequence[int]) -> LatencyStats:
    """Statistics of per-iteration latencies given in nanoseconds (std is ddof=0)."""
    if not len(samples_ns):
        raise ValueError("no latency samples")
    if not all(map(math.isfinite, samples_ns)):
        raise ValueError("non-finite latency samples")
    ms = [s / 1e6 for s in samples_ns]
    n = len(ms)
    mean = sum(ms) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in ms) / n)
    return LatencyStats(
        iterations=n, mean_ms=mean, p50_ms=percentile(ms, 50), p90_ms=percentile(ms, 90), p99_ms=percentile(ms, 99),
        min_ms=min(ms), max_ms=max(ms), std_ms=std,
    )


def throughput(batch: int, mean_ms: float) -> float:
    """Images per second at ``batch`` images per run of ``mean_ms`` milliseconds."""
    return batch * 1000.0 / mean_ms if mean_ms > 0 else float("inf")


def parse_batch_sizes(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,8,32"`` (or a sequence of ints) -> (1, 8, 32); positive, no duplicates."""
    if isinstance(text, str):
        parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
        try:
            if not all(p.isascii() and p.isdigit() for p in parts):  # int() also takes "१", "+8", "1_000"
                raise ValueError
            sizes = tuple(int(p) for p in parts)
        except ValueError:
            raise OptionError(f"batch sizes must be comma-separated positive integers like 1,8,32, got {text!r}") from None
    else:
        sizes = tuple(text)
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in sizes):
            raise OptionError(f"batch sizes must be positive integers, got {list(sizes)!r}")
        sizes = tuple(int(s) for s in sizes)
    if not sizes:
        raise OptionError(f"no batch sizes given ({text!r}); e.g. 1,8,32")
    if min(sizes) < 1:
        raise OptionError(f"batch sizes must be >= 1, got {','.join(map(str, sizes))}")
    if len(set(sizes)) != len(sizes):
        raise OptionError(f"batch sizes repeat: {','.join(map(str, sizes))}")
    return sizes
