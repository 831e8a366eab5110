"""The timing loop: models measured interleaved, in blocks, on one pre-made input per batch size.

Every iteration is ``t0 = perf_counter_ns(); runner.run(batch); perf_counter_ns() - t0``;
``Runner.run`` is synchronous by contract and CUDA work is also synchronized before each block.
Warm-up runs are never recorded.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from maxq_deploy.bench.schema import BenchModel, BenchSettings, Measurement
from maxq_deploy.bench.stats import LatencyStats, latency_stats, throughput
from maxq_deploy.core.errors import OptionError
from maxq_deploy.core.progress import SILENT, Progress

#: Timed iterations a model runs per turn before the next model's turn (``iters`` mode).
DEFAULT_BLOCK = 5
#: Measured time a model gets per turn (``seconds`` mode; at least one iteration).
TURN_SECONDS = 0.25


def time_iterations(run: Callable[[np.ndarray], object], batch: np.ndarray, count: int) -> list[int]:
    """``count`` timed calls of ``run(batch)``; per-call nanoseconds. The hot loop: keep it bare."""
    samples = [0] * count
    clock = time.perf_counter_ns
    for i in range(count):
        t0 = clock()
        run(batch)
        samples[i] = clock() - t0
    return samples


def time_for(run: Callable[[np.ndarray], object], batch: np.ndarray, budget_ns: int) -> list[int]:
    """Timed calls of ``run(batch)`` until their summed time reaches ``budget_ns`` (at least one)."""
    samples: list[int] = []
    append = samples.append
    clock = time.perf_counter_ns
    spent = 0
    while spent < budget_ns:
        t0 = clock()
        run(batch)
        dt = clock() - t0
        append(dt)
        spent += dt
    return samples


def _synchronize(device: str) -> None:
    """Wait for queued CUDA work, so a block starts on an idle device."""
    torch = sys.modules.get("torch")
    if device == "cuda" and torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


def make_input(batch: int, input_size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """The benchmark input: standard-normal float32 NCHW, C-contiguous."""
    from maxq_deploy.data import check_batch_memory

    check_batch_memory(batch, (channels, input_size, input_size), "a bench input batch")  # before allocating it
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(rng.standard_normal((batch, channels, input_size, input_size), dtype=np.float32))


@dataclass
class _Turn:
    """One unit of the schedule: a warm-up of one model, or one round over all models."""

    batch: int
    phase: str  # "warmup" or "round"
    model_index: int | None = None


def schedule(num_models: int, batch_sizes: Sequence[int], rounds: int) -> list[_Turn]:
    """The interleaved order: per batch size, warm each model, then ``rounds`` rounds over all."""
    turns: list[_Turn] = []
    for batch in batch_sizes:
        turns.extend(_Turn(batch, "warmup", i) for i in range(num_models))
        turns.extend(_Turn(batch, "round") for _ in range(rounds))
    return turns


def measure(
    models: Sequence[BenchModel],
    settings: BenchSettings,
    progress: Progress | None = None,
) -> list[Measurement]:
    """Time every model (``model.runner`` opened) at every batch size, interleaved in blocks."""
    return summarize(models, settings.batch_sizes, collect_samples(models, settings, progress))


def collect_samples(
    models: Sequence[BenchModel],
    settings: BenchSettings,
    progress: Progress | None = None,
    inputs: dict[tuple[int, int], np.ndarray] | None = None,
) -> dict[tuple[int, int], list[int]]:
    """(model index, batch) -> per-iteration nanoseconds, measured as :func:`measure` describes.

    ``inputs`` caches the batches by (batch, input size) across calls; missing ones are made
    by :func:`make_input`.
    """
    if not models:
        raise OptionError("no models to benchmark")
    progress = progress or SILENT
    iters = settings.iters
    if settings.seconds is not None:
        rounds = max(1, math.ceil(settings.seconds / TURN_SECONDS))
        # at least 1 ns, so a budget under a nanosecond still times one run of each model
        turn_ns = max(1, int(settings.seconds * 1e9 / rounds))
        budget_ns = max(1, int(settings.seconds * 1e9))
    else:
        assert iters is not None
        rounds = math.ceil(iters / settings.block)
    inputs = {} if inputs is None else inputs
    samples: dict[tuple[int, int], list[int]] = {}
    turns = schedule(len(models), settings.batch_sizes, rounds)
    for turn in progress.track(turns, total=len(turns), description="benchmark"):
        batch = turn.batch
        if turn.phase == "warmup":
            model = models[turn.model_index]  # type: ignore[index]
            x = _input_for(inputs, batch, model.input_size, settings.seed)
            for _ in range(settings.warmup):
                model.runner.run(x)  # type: ignore[union-attr]
            _synchronize(model.device)
            continue
        for index, model in enumerate(models):
            taken = samples.setdefault((index, batch), [])
            x = _input_for(inputs, batch, model.input_size, settings.seed)
            run = model.runner.run  # type: ignore[union-attr]
            _synchronize(model.device)
            if settings.seconds is not None:
                spent = sum(taken)
                if spent >= budget_ns:
                    continue
                taken.extend(time_for(run, x, min(turn_ns, budget_ns - spent)))
            else:
                count = min(settings.block, iters - len(taken))  # type: ignore[operator]
                if count > 0:
                    taken.extend(time_iterations(run, x, count))
    return samples


def _input_for(cache: dict[tuple[int, int], np.ndarray], batch: int, size: int, seed: int) -> np.ndarray:
    key = (batch, size)
    if key not in cache:
        cache[key] = make_input(batch, size, seed=seed)
    return cache[key]


def summarize(models: Sequence[BenchModel], batch_sizes: Sequence[int], samples: dict[tuple[int, int], list[int]]) -> list[Measurement]:
    """Statistics per model and batch size, with ratios against model 0 at the same batch size."""
    out: list[Measurement] = []
    for batch in batch_sizes:
        base: LatencyStats | None = None
        for index, model in enumerate(models):
            stats = latency_stats(samples[(index, batch)])
            if index == 0:
                base = stats
            speedup = base.mean_ms / stats.mean_ms if base is not None and stats.mean_ms > 0 else None
            out.append(Measurement(index, model.label, batch, stats, throughput(batch, stats.mean_ms), speedup))
    return out
