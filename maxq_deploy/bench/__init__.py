"""Benchmarks: latency and throughput of several models, measured side by side.

``benchmark([a.onnx, b.onnx])`` opens every model with its runtime (the backend decided once by
``runtimes.select``; checkpoints run on torch), then for each batch size measures all of them INTERLEAVED: a warm-up
per model, then rounds in which every model runs one small block of timed iterations in turn,
so that drift (thermal, frequency, a neighbour's load) hits all models alike. The first model is
the baseline of the A/B ratios.

Timing: every iteration is ``t0 = perf_counter_ns(); runner.run(batch); perf_counter_ns() - t0``
on one pre-allocated float32 NCHW batch; ``Runner.run`` is synchronous by contract (its result
is on the host), and CUDA work is also synchronized before each block. Warm-up runs are never
recorded.

Statistics (:func:`latency_stats`): mean, min, max, population standard deviation (numpy's
``std`` with ``ddof=0``) and percentiles by linear interpolation between the two closest ranks
(numpy's default ``percentile`` method). Throughput = batch / mean latency.

Backends: ONNX files run on ONNX Runtime, engines on TensorRT, checkpoints on torch. On CPU the
torch backend measures every checkpoint twice, NCHW ("plain") and channels-last, as two rows of
the same run, since which layout is faster depends on the CPU and the model. On CUDA with
``sparse=True`` it measures every checkpoint in fp16 dense and fp16 with its 2:4 layers as
semi-structured sparse matmuls (``runtimes.torch_sparse_runner``): the same precision, so the ratio
is the sparse speed-up.

Modules: ``stats`` (pure statistics), ``schema`` (results, JSON/CSV), ``environment``,
``timing`` (the interleaved loop), ``chart`` (PNG), ``command`` (``benchmark``: open, time, write).
"""

from maxq_deploy.bench.chart import PALETTE, nice_ticks, throughput_chart
from maxq_deploy.bench.command import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_WARMUP,
    benchmark,
    open_models,
)
from maxq_deploy.bench.environment import collect_environment, environment_line
from maxq_deploy.bench.schema import CSV_COLUMNS, SCHEMA, SCHEMA_VERSION, BenchModel, BenchResult, BenchSettings, Measurement
from maxq_deploy.bench.stats import LatencyStats, latency_stats, parse_batch_sizes, percentile, throughput
from maxq_deploy.bench.timing import (
    DEFAULT_BLOCK,
    collect_samples,
    make_input,
    measure,
    schedule,
    summarize,
    time_for,
    time_iterations,
)

__all__ = [
    "CSV_COLUMNS", "DEFAULT_BATCH_SIZES", "DEFAULT_BLOCK", "DEFAULT_WARMUP", "PALETTE", "SCHEMA",
    "SCHEMA_VERSION", "BenchModel", "BenchResult", "BenchSettings", "LatencyStats", "Measurement", "benchmark",
    "collect_environment", "collect_samples", "environment_line", "latency_stats", "make_input", "measure", "nice_ticks",
    "open_models", "parse_batch_sizes", "percentile", "schedule", "summarize", "throughput", "throughput_chart", "time_for",
    "time_iterations",
]
