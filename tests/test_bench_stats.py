"""bench.stats: percentiles (numpy's linear method), mean/std/min/max in milliseconds, throughput, and the
--batch-sizes option, against numpy and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maxq_deploy.bench import latency_stats, parse_batch_sizes, percentile, throughput
from maxq_deploy.bench.stats import LatencyStats
from maxq_deploy.core.errors import OptionError


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101])
@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 99.9, 100])
def test_percentile_matches_numpy_linear(n: int, q: float) -> None:
    values = np.random.default_rng(n).exponential(3.0, n).tolist()
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-12)


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_latency_stats_match_numpy() -> None:
    samples = np.random.default_rng(0).integers(1_000_000, 9_000_000, 57)
    stats = latency_stats(samples.tolist())
    ms = samples / 1e6
    assert stats.iterations == 57
    assert stats.mean_ms == pytest.approx(ms.mean())
    assert stats.std_ms == pytest.approx(ms.std())  # ddof=0
    assert (stats.min_ms, stats.max_ms) == (pytest.approx(ms.min()), pytest.approx(ms.max()))
    for q, got in ((50, stats.p50_ms), (90, stats.p90_ms), (99, stats.p99_ms)):
        assert got == pytest.approx(np.percentile(ms, q))


def test_throughput_is_batch_over_mean() -> None:
    assert throughput(8, 4.0) == pytest.approx(2000.0)


@pytest.mark.parametrize("text, expected", [("1,8,32", (1, 8, 32)), (" 4 ", (4,)), ("2, 16", (2, 16)), ([1, 3], (1, 3))])
def test_parse_batch_sizes(text, expected) -> None:
    assert parse_batch_sizes(text) == expected


@pytest.mark.parametrize("text", ["", "a,b", "0", "1,1", "-4", "1.5", ","])
def test_parse_batch_sizes_rejects(text: str) -> None:
    with pytest.raises(OptionError, match="batch sizes"):
        parse_batch_sizes(text)



# --------------------------------------------------------------------------- hand computations


@pytest.mark.parametrize("q, expected", [(0, 1.0), (25, 1.75), (50, 2.5), (90, 3.7), (99, 3.97), (100, 4.0)])
def test_percentile_by_hand(q: float, expected: float) -> None:
    """Rank q/100 * (n-1) of the sorted values, interpolated: [1, 2, 3, 4] at q=25 is rank 0.75 -> 1.75."""
    assert percentile([4.0, 1.0, 3.0, 2.0], q) == pytest.approx(expected, abs=1e-12)  # order of the input is irrelevant


def test_percentile_leaves_its_input_alone() -> None:
    values = [3.0, 1.0, 2.0]
    percentile(values, 50)
    assert values == [3.0, 1.0, 2.0]


@pytest.mark.parametrize("q", [-0.001, 100.5, float("nan"), float("inf")])
def test_percentile_refuses_q_outside_0_100(q: float) -> None:
    with pytest.raises(ValueError, match=r"q must be in \[0, 100\]"):
        percentile([1.0, 2.0], q)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_percentile_refuses_non_finite_values(bad: float) -> None:
    """numpy returns nan here; a sorted() over a nan is order-dependent garbage, so it is refused, not guessed."""
    for values in ([bad, 1.0, 2.0], [1.0, bad, 2.0], [1.0, 2.0, bad]):
        with pytest.raises(ValueError, match="non-finite"):
            percentile(values, 50)


def test_latency_stats_by_hand() -> None:
    """1, 2, 3, 4 ms (given in ns): mean 2.5, population std sqrt(1.25), p90 rank 2.7 -> 3.7."""
    stats = latency_stats([4_000_000, 1_000_000, 3_000_000, 2_000_000])
    assert stats == LatencyStats(iterations=4, mean_ms=pytest.approx(2.5), p50_ms=pytest.approx(2.5),
                                 p90_ms=pytest.approx(3.7), p99_ms=pytest.approx(3.97), min_ms=1.0, max_ms=4.0,
                                 std_ms=pytest.approx(math.sqrt(1.25)))


def test_latency_stats_of_one_sample() -> None:
    stats = latency_stats([1_500_000])
    assert (stats.iterations, stats.std_ms) == (1, 0.0)
    assert stats.mean_ms == stats.p50_ms == stats.p99_ms == stats.min_ms == stats.max_ms == 1.5


def test_an_outlier_is_kept_in_mean_and_max_but_not_in_the_median() -> None:
    """Nothing is trimmed: one 1 s stall among 99 runs of 1 ms shows in mean, max, std and p99, not in p50/p90."""
    samples = [1_000_000] * 99 + [1_000_000_000]
    stats = latency_stats(samples)
    ms = np.array(samples) / 1e6
    assert stats.iterations == 100 and stats.max_ms == 1000.0
    assert stats.mean_ms == pytest.approx(ms.mean()) == pytest.approx(10.99)
    assert stats.std_ms == pytest.approx(ms.std())
    assert stats.p50_ms == stats.p90_ms == 1.0
    assert stats.p99_ms == pytest.approx(np.percentile(ms, 99)) == pytest.approx(1.0 + 0.01 * 999)


def test_latency_stats_refuses_no_samples() -> None:
    with pytest.raises(ValueError, match="no latency samples"):
        latency_stats([])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_latency_stats_refuses_non_finite_samples(bad: float) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        latency_stats([1_000_000, bad, 2_000_000])


@pytest.mark.parametrize("mean_ms", [0.0, -1.0])
def test_throughput_of_no_time_is_infinite(mean_ms: float) -> None:
    """A mean of zero (a clock too coarse for the run) is infinitely fast, not a ZeroDivisionError."""
    assert throughput(8, mean_ms) == math.inf


def test_throughput_scales_with_batch() -> None:
    assert throughput(1, 0.5) == pytest.approx(2000.0)
    assert throughput(32, 0.5) == pytest.approx(32 * throughput(1, 0.5))


# --------------------------------------------------------------------------- --batch-sizes


def test_parse_batch_sizes_takes_spaces_as_separators() -> None:
    assert parse_batch_sizes("1 8  32") == (1, 8, 32)
    assert parse_batch_sizes("64,") == (64,)


def test_parse_batch_sizes_gives_python_ints_from_numpy_ints() -> None:
    sizes = parse_batch_sizes(np.array([2, 4], dtype=np.int64))
    assert sizes == (2, 4) and all(type(s) is int for s in sizes)


@pytest.mark.parametrize("text", ["\u0967", "+8", "1_000", "0x10", "8.0"])
def test_parse_batch_sizes_refuses_what_int_would_take(text: str) -> None:
    """int() reads Devanagari digits, signs and underscores; the option takes plain ASCII digits only."""
    with pytest.raises(OptionError, match="comma-separated positive integers like 1,8,32"):
        parse_batch_sizes(text)


@pytest.mark.parametrize("sizes, message", [
    ([True, 2], "batch sizes must be positive integers, got [True, 2]"),
    ([1.0], "batch sizes must be positive integers"),
    (["8"], "batch sizes must be positive integers"),
    ([], "no batch sizes given"),
    ([4, 0], "batch sizes must be >= 1, got 4,0"),
    ([8, 1, 8], "batch sizes repeat: 8,1,8"),
])
def test_parse_batch_sizes_refuses_bad_sequences(sizes: list, message: str) -> None:
    with pytest.raises(OptionError) as info:
        parse_batch_sizes(sizes)
    assert message in str(info.value) and "\n" not in str(info.value)
