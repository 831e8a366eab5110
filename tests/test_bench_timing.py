"""bench.timing: the interleaved schedule, warm-up and iteration counts, the seconds budget, the pre-made input,
and the statistics per model -- on a fake clock that the runners advance, never on wall-clock time."""

from __future__ import annotations

import numpy as np
import pytest

from bench_fixtures import FakeClock, fake_clock, fake_models, settings  # noqa: F401  (fake_clock: a pytest fixture)
from maxq_deploy import bench
from maxq_deploy.bench import BenchModel, measure
from maxq_deploy.bench.timing import TURN_SECONDS, collect_samples, make_input, schedule, summarize, time_for, time_iterations
from maxq_deploy.core.errors import DataError, OptionError


def test_interleaving_order(fake_clock: FakeClock) -> None:
    log: list = []
    models = fake_models(fake_clock, log)
    measure(models, settings(warmup=1, iters=4, block=2))
    per_batch = ["m0", "m1", "m0", "m0", "m1", "m1", "m0", "m0", "m1", "m1"]  # warm-ups, then 2 rounds of blocks of 2
    assert log == [(t, 1) for t in per_batch] + [(t, 2) for t in per_batch]


def test_warmup_excluded_and_counts_exact(fake_clock: FakeClock) -> None:
    log: list = []
    models = fake_models(fake_clock, log, costs_ms=(1, 2), slow_calls=3)  # 3 slow (1 s) calls per batch size
    results = measure(models, settings(warmup=3, iters=5, block=2))
    for m in results:
        assert m.latency.iterations == 5
        assert m.latency.max_ms < 1000  # no warm-up call was timed
        assert m.latency.mean_ms == pytest.approx(1.0 if m.model_index == 0 else 2.0)
    for model in models:
        assert model.runner.calls_per_batch == {1: 8, 2: 8}


def test_ab_ratios_against_first(fake_clock: FakeClock) -> None:
    log: list = []
    results = measure(fake_models(fake_clock, log, costs_ms=(2, 1, 4)), settings(batch_sizes=[4]))
    ratio = {m.model_index: m.speedup_vs_first for m in results}
    assert ratio == {0: pytest.approx(1.0), 1: pytest.approx(2.0), 2: pytest.approx(0.5)}
    assert [m.throughput_ips for m in results] == [pytest.approx(2000.0), pytest.approx(4000.0), pytest.approx(1000.0)]


def test_seconds_mode_gives_each_model_its_time_interleaved(fake_clock: FakeClock) -> None:
    log: list = []
    models = fake_models(fake_clock, log, costs_ms=(100, 300))
    results = measure(models, settings(iters=None, seconds=1.0, warmup=0, batch_sizes=[1]))
    for m in results:
        assert m.latency.iterations * m.latency.mean_ms >= 1000
        assert m.latency.iterations * m.latency.mean_ms < 1000 + 300 + 1e-6  # at most one call over budget
    tags = [t for t, _ in log]
    assert tags.index("m1") < len(tags) - 1 - tags[::-1].index("m0")  # m1 ran before m0's last call


def test_time_iterations_uses_no_clock_inside_run() -> None:
    calls = []
    samples = bench.time_iterations(lambda x: calls.append(x), np.zeros(1), 7)
    assert len(samples) == 7 and len(calls) == 7 and all(s >= 0 for s in samples)



def test_time_iterations_reads_the_clock_around_each_call(fake_clock: FakeClock) -> None:
    calls = []

    def run(x):
        calls.append(x)
        fake_clock.now += 7 + len(calls)  # each call costs a different, known time

    x = np.zeros(2)
    assert time_iterations(run, x, 4) == [8, 9, 10, 11]
    assert len(calls) == 4 and all(c is x for c in calls)  # the same batch, not a copy
    assert time_iterations(run, x, 0) == [] and len(calls) == 4


@pytest.mark.parametrize("budget, calls", [(10, 4), (9, 3), (1, 1)])
def test_time_for_runs_until_the_budget_is_spent(fake_clock: FakeClock, budget: int, calls: int) -> None:
    """3 ns per call: a 10 ns budget takes 4 calls (the last one goes over), 9 ns exactly 3."""
    count = []

    def run(_):
        count.append(1)
        fake_clock.now += 3

    assert time_for(run, np.zeros(1), budget) == [3] * calls
    assert len(count) == calls


def test_schedule_warms_every_model_then_runs_rounds_per_batch() -> None:
    turns = schedule(2, [1, 8], rounds=3)
    assert [(t.batch, t.phase, t.model_index) for t in turns] == [
        (1, "warmup", 0), (1, "warmup", 1), (1, "round", None), (1, "round", None), (1, "round", None),
        (8, "warmup", 0), (8, "warmup", 1), (8, "round", None), (8, "round", None), (8, "round", None),
    ]


@pytest.mark.parametrize("iters, block, blocks", [(5, 2, [2, 2, 1]), (3, 10, [3]), (4, 1, [1, 1, 1, 1])])
def test_iterations_come_in_blocks_and_stop_at_iters(fake_clock: FakeClock, iters: int, block: int, blocks: list[int]) -> None:
    """Rounds of ``block`` timed calls per model in turn; the last block is cut so each model runs exactly ``iters``."""
    log: list = []
    models = fake_models(fake_clock, log)
    results = measure(models, settings(batch_sizes=[1], warmup=2, iters=iters, block=block))
    assert [m.latency.iterations for m in results] == [iters, iters]
    tags = [t for t, _ in log][4:]  # after 2 warm-ups each
    expected: list[str] = []
    for n in blocks:
        expected += ["m0"] * n + ["m1"] * n
    assert tags == expected


def test_warmup_zero_times_from_the_first_call(fake_clock: FakeClock) -> None:
    log: list = []
    models = fake_models(fake_clock, log, costs_ms=(1,), slow_calls=1)  # the first call costs 1 s
    (result,) = measure(models, settings(batch_sizes=[1], warmup=0, iters=3, block=3))
    assert result.latency.max_ms == 1000.0 and result.latency.min_ms == 1.0
    assert models[0].runner.calls_per_batch == {1: 3}


def test_every_model_gets_one_input_per_batch_made_once(fake_clock: FakeClock) -> None:
    """Inputs are made once per (batch, input size) and handed to every call: the timed loop allocates nothing."""
    seen: list[np.ndarray] = []
    models = fake_models(fake_clock, [])
    for m in models:
        run = m.runner.run
        m.runner.run = lambda x, run=run: (seen.append(x), run(x))[1]
    inputs: dict = {}
    collect_samples(models, settings(batch_sizes=[1, 2], warmup=1, iters=2, block=2), inputs=inputs)
    assert sorted(inputs) == [(1, 8), (2, 8)]  # fake models take 8x8 inputs
    assert {id(x) for x in seen} == {id(inputs[(1, 8)]), id(inputs[(2, 8)])}
    assert inputs[(2, 8)].shape == (2, 3, 8, 8)


def test_no_models_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="no models to benchmark"):
        collect_samples([], settings())


@pytest.mark.parametrize("seconds", [1e-10, 1e-9, 3e-9])
def test_a_tiny_seconds_budget_still_times_every_model_once(fake_clock: FakeClock, seconds: float) -> None:
    """``--seconds 1e-10`` rounded the budget to 0 ns: no model ran, and the statistics of no samples crashed."""
    models = fake_models(fake_clock, [])
    results = measure(models, settings(iters=None, seconds=seconds, warmup=0, batch_sizes=[1, 2]))
    assert [m.latency.iterations for m in results] == [1, 1, 1, 1]


def test_seconds_mode_splits_the_budget_into_turns(fake_clock: FakeClock) -> None:
    """1 s is 4 turns of 0.25 s: at 100 ms a call each turn takes 3 calls (the third goes over), then stops."""
    assert TURN_SECONDS == 0.25
    log: list = []
    models = fake_models(fake_clock, log, costs_ms=(100, 100))
    (a, b) = measure(models, settings(iters=None, seconds=1.0, warmup=0, batch_sizes=[1]))
    assert [t for t, _ in log] == ["m0"] * 3 + ["m1"] * 3 + ["m0"] * 3 + ["m1"] * 3 + ["m0"] * 3 + ["m1"] * 3 + ["m0"] + ["m1"]
    assert a.latency.iterations == b.latency.iterations == 10


def test_summarize_by_hand() -> None:
    """Model 1 at 1 ms against model 0 at 2 ms: twice as fast, 8000 images/s at batch 8."""
    models = [BenchModel(f"m{i}", None, "fake", "fake", "cpu", 8) for i in range(2)]
    samples = {(0, 8): [1_000_000, 3_000_000], (1, 8): [1_000_000, 1_000_000]}
    first, second = summarize(models, [8], samples)
    assert (first.model_index, first.model, first.batch, second.model) == (0, "m0", 8, "m1")
    assert first.speedup_vs_first == 1.0 and second.speedup_vs_first == pytest.approx(2.0)
    assert first.throughput_ips == pytest.approx(4000.0) and second.throughput_ips == pytest.approx(8000.0)
    assert first.latency.std_ms == pytest.approx(1.0)


def test_summarize_leaves_no_ratio_for_a_zero_mean() -> None:
    models = [BenchModel(f"m{i}", None, "fake", "fake", "cpu", 8) for i in range(2)]
    first, second = summarize(models, [1], {(0, 1): [2_000_000], (1, 1): [0]})
    assert second.speedup_vs_first is None and second.throughput_ips == float("inf")


def test_make_input_is_seeded_standard_normal_nchw() -> None:
    x = make_input(4, 16, seed=3)
    assert x.shape == (4, 3, 16, 16) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.array_equal(x, make_input(4, 16, seed=3)) and not np.array_equal(x, make_input(4, 16, seed=4))
    expected = np.random.default_rng(3).standard_normal((4, 3, 16, 16), dtype=np.float32)
    assert np.array_equal(x, expected)
    assert make_input(1, 5, channels=1).shape == (1, 1, 5, 5)


def test_make_input_refuses_a_batch_memory_cannot_hold_before_allocating() -> None:
    with pytest.raises(DataError, match="a bench input batch of 100000000x3x2048x2048 float32 needs"):
        make_input(100_000_000, 2048)
