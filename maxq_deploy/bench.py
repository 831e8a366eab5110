"""Benchmarks: latency and throughput of several models, measured side by side.

``benchmark([a.onnx, b.onnx])`` opens every model with its runtime (``runtimes.runner_for``;
checkpoints run on torch), then for each batch size measures all of them INTERLEAVED: a warm-up
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
semi-structured sparse matmuls (``maxq_deploy.sparse_torch``): the same precision, so the ratio
is the sparse speed-up.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from maxq_deploy.artifacts import atomic_output, check_input_file, guard_bench_outputs
from maxq_deploy.errors import InputFileError, OptionError
from maxq_deploy.progress import SILENT, Progress
from maxq_deploy.runtimes.base import Runner

SCHEMA = "maxq-deploy/bench"
SCHEMA_VERSION = 1
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 8, 32)
DEFAULT_WARMUP = 5
DEFAULT_ITERS = 30
#: Timed iterations a model runs per turn before the next model's turn (``iters`` mode).
DEFAULT_BLOCK = 5
#: Measured time a model gets per turn (``seconds`` mode; at least one iteration).
TURN_SECONDS = 0.25
DEFAULT_INPUT_SIZE = 224
DEVICES = ("cpu", "cuda")
#: Columns of the CSV file, one row per model and batch size.
CSV_COLUMNS = (
    "model_index", "model", "path", "backend", "device", "variant", "batch", "iterations",
    "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "std_ms", "throughput_ips", "speedup_vs_first",
)


# --------------------------------------------------------------------------- statistics (pure)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation between closest ranks.

    Same as ``numpy.percentile(values, q)`` (method "linear"): rank ``q/100 * (n-1)`` of the
    sorted values, interpolated between its floor and ceiling.
    """
    if not len(values):
        raise ValueError("percentile of no values")
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


# --------------------------------------------------------------------------- what is measured


@dataclass
class BenchModel:
    """One measured configuration: a model file opened by a runtime, maybe in a variant."""

    label: str  # unique, shown in tables and legends
    path: str | None
    kind: str  # "onnx", "engine", "folded-checkpoint", ... (what the file is)
    backend: str  # "onnxruntime", "tensorrt", "torch"
    device: str
    input_size: int
    variant: str = ""  # "", "nchw", "channels-last", "fp16-dense", "fp16-sparse-2:4"
    threads: int | None = None
    notes: list[str] = field(default_factory=list)
    sparse_report: dict | None = None  # layers run sparse and why others did not (--sparse)
    runner: Runner | None = field(default=None, repr=False, compare=False)

    def to_dict(self, index: int) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "runner"}  # asdict would deep-copy the runner
        return {"index": index, **data, "notes": list(self.notes)}


@dataclass
class Measurement:
    """One model at one batch size."""

    model_index: int
    model: str
    batch: int
    latency: LatencyStats
    throughput_ips: float
    speedup_vs_first: float | None  # first model's mean latency / this mean latency

    def to_dict(self) -> dict:
        return {
            "model_index": self.model_index, "model": self.model, "batch": self.batch,
            **asdict(self.latency), "throughput_ips": self.throughput_ips, "speedup_vs_first": self.speedup_vs_first,
        }


@dataclass
class BenchSettings:
    backend: str | None
    device: str
    batch_sizes: list[int]
    warmup: int
    iters: int | None
    seconds: float | None
    block: int
    threads: int | None
    input_size: int | None
    sparse: bool
    seed: int = 0
    interleaved: bool = True

    def __post_init__(self) -> None:
        if self.iters is None and self.seconds is None:
            self.iters = DEFAULT_ITERS
        if self.warmup < 0:
            raise OptionError(f"warmup must be >= 0 iterations, got {self.warmup}")
        if self.iters is not None and self.seconds is not None:
            raise OptionError("give either iters or seconds, not both")
        if self.iters is not None and self.iters < 1:
            raise OptionError(f"iters must be >= 1, got {self.iters}")
        if self.seconds is not None and not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise OptionError(f"seconds must be a positive number, got {self.seconds}")
        if self.block < 1:
            raise OptionError(f"block must be >= 1 iteration, got {self.block}")
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"threads must be >= 1, got {self.threads}")
        if self.input_size is not None and self.input_size < 1:
            raise OptionError(f"input size must be >= 1 pixel, got {self.input_size}")
        if self.device not in DEVICES:
            raise OptionError(f"unknown device {self.device!r}; use {' or '.join(DEVICES)}")


@dataclass
class BenchResult:
    """Everything one run measured, with the environment it was measured in."""

    models: list[BenchModel]
    measurements: list[Measurement]
    settings: BenchSettings
    environment: dict
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    outputs: dict[str, str] = field(default_factory=dict)  # "json", "csv", "plot" -> path written

    def to_dict(self) -> dict:
        from maxq_deploy import __version__

        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "tool_version": __version__,
            "created": self.created,
            "settings": asdict(self.settings),
            "environment": self.environment,
            "models": [m.to_dict(i) for i, m in enumerate(self.models)],
            "results": [m.to_dict() for m in self.measurements],
            "outputs": dict(self.outputs),
        }

    summary = to_dict

    def csv_rows(self) -> list[dict]:
        rows = []
        for m in self.measurements:
            model = self.models[m.model_index]
            row = m.to_dict() | {"path": model.path, "backend": model.backend, "device": model.device, "variant": model.variant}
            rows.append({col: row[col] for col in CSV_COLUMNS})
        return rows

    def measurement(self, model_index: int, batch: int) -> Measurement:
        for m in self.measurements:
            if m.model_index == model_index and m.batch == batch:
                return m
        raise KeyError((model_index, batch))

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n")
        return Path(path)

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        with atomic_output(path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
                writer.writeheader()
                writer.writerows(self.csv_rows())
        return Path(path)

    def write_plot(self, path: str | os.PathLike[str]) -> Path:
        """PNG grouped bar chart: throughput per batch size, one bar per model."""
        series = [(m.label, [self.measurement(i, b).throughput_ips for b in self.settings.batch_sizes]) for i, m in enumerate(self.models)]
        title = f"Throughput by batch size ({self.settings.device}, threads {self.settings.threads or 'default'})"
        image = throughput_chart(self.settings.batch_sizes, series, title)
        with atomic_output(path) as tmp:
            image.save(tmp, format="PNG")
        return Path(path)


# --------------------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version_of(*distributions: str) -> str | None:
    from importlib import metadata

    for dist in distributions:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _gpus() -> list[dict]:
    """Name, driver and memory of each NVIDIA GPU (nvidia-smi, else torch.cuda if already loaded)."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout
            gpus = []
            for line in out.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) >= 3:
                    gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
            if gpus:
                return gpus
        except (OSError, subprocess.SubprocessError):
            pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return [{"name": torch.cuda.get_device_name(i), "driver": None, "memory": None} for i in range(torch.cuda.device_count())]
    return []


def collect_environment(threads: int | None = None) -> dict:
    """Where the numbers were measured: CPU, GPU, library versions, threads, OS, Python."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    env: dict = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "gpus": _gpus(),
        "threads": threads,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "maxq_deploy": _version_of("maxq-deploy"),
            "numpy": np.__version__,
            "torch": _version_of("torch"),
            "onnxruntime": _version_of("onnxruntime", "onnxruntime-gpu"),
            "onnx": _version_of("onnx"),
            "tensorrt": _version_of("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
        },
    }
    try:
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]  # other work sharing the CPU skews numbers
    except OSError:
        env["load_average"] = None
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
        env["cuda"] = torch.version.cuda
    return env


def environment_line(env: dict) -> str:
    """One line for the CLI: CPU, cores, GPU, threads, versions."""
    v = env.get("versions", {})
    gpu = ", ".join(f"{g['name']} (driver {g['driver']})" if g.get("driver") else g["name"] for g in env.get("gpus", [])) or "no GPU"
    libs = ", ".join(f"{k} {val}" for k, val in v.items() if val and k not in ("maxq_deploy", "numpy"))
    threads = env.get("threads") or "default"
    load = env.get("load_average")
    load_text = f"; load average {load[0]:g}" if load else ""
    return f"{env.get('cpu')} ({env.get('cpu_count')} cores{load_text}); {gpu}; threads {threads}; {libs}; Python {env.get('python')}, {env.get('os')}"


# --------------------------------------------------------------------------- the timing loop


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
        turn_ns = int(settings.seconds * 1e9 / rounds)
        budget_ns = int(settings.seconds * 1e9)
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


# --------------------------------------------------------------------------- opening models


def _static_input(runner: Runner, label: str) -> tuple[int | None, int | None]:
    """(fixed batch, fixed square size) of a runner's input; None where the model leaves it dynamic."""
    shape = getattr(runner, "input_shape", None)  # (C, H, W), None for dynamic dims
    size = None
    if shape and len(shape) == 3 and shape[1] is not None and shape[2] is not None:
        if shape[1] != shape[2]:
            raise InputFileError(f"{label}: non-square input {shape[1]}x{shape[2]} is not supported by bench")
        size = int(shape[1])
    batch = None
    session = getattr(runner, "session", None)  # ONNX Runtime: the graph's batch dim
    if session is not None:
        dim = session.get_inputs()[0].shape[0]
        batch = dim if isinstance(dim, int) and dim > 0 else None
    return batch, size


def _resolve_input_size(label: str, static: int | None, meta: dict[str, str], requested: int | None) -> int:
    if static is not None:
        if requested is not None and requested != static:
            raise InputFileError(f"{label} takes {static}x{static} inputs (fixed in the graph), not --input-size {requested}")
        return static
    if requested is not None:
        return requested
    try:
        return int(meta["maxq_deploy.input_size"])
    except (KeyError, ValueError):
        return DEFAULT_INPUT_SIZE


def _unique_labels(models: list[BenchModel]) -> None:
    """File names, made unique with their parent folder (then an index) where two collide."""
    seen: dict[str, int] = {}
    for m in models:
        seen[m.label] = seen.get(m.label, 0) + 1
    for m in models:
        if seen[m.label] > 1 and m.path:
            m.label = f"{Path(m.path).parent.name}/{m.label}"
    labels = [m.label for m in models]
    for i, m in enumerate(models):
        if labels.count(m.label) > 1:
            m.label = f"{m.label}#{i}"


def open_models(
    paths: Sequence[str | os.PathLike[str]],
    backend: str | None,
    device: str,
    threads: int | None,
    input_size: int | None,
    sparse: bool,
    batch_sizes: Sequence[int],
) -> list[BenchModel]:
    """Open every model with its runtime; variants (layouts, sparse) become separate entries."""
    from maxq_deploy.runtimes.select import backend_for_file, normalize_backend

    chosen = normalize_backend(backend) if backend is not None else None
    if sparse and not (chosen in (None, "torch") and device == "cuda"):
        raise OptionError(
            "--sparse measures the torch backend on CUDA (semi-structured 2:4 matmuls); use --backend torch --device cuda, "
            "or build a sparse TensorRT engine (maxq-deploy export trt) and bench it on --backend tensorrt"
        )
    opened: list[BenchModel] = []
    try:
        for raw in paths:
            path = check_input_file(raw, "model")
            file_backend = backend_for_file(path)
            if file_backend == "torch" or (file_backend is None and chosen == "torch"):
                opened.extend(_open_torch_variants(path, chosen, device, threads, input_size, sparse))
            else:
                opened.append(_open_file_model(path, chosen, device, threads, input_size, batch_sizes))
    except BaseException:
        for m in opened:
            if m.runner is not None:
                m.runner.close()
        raise
    _unique_labels(opened)
    return opened


def _open_file_model(
    path: Path, backend: str | None, device: str, threads: int | None, input_size: int | None, batch_sizes: Sequence[int]
) -> BenchModel:
    from maxq_deploy.runtimes.select import runner_for

    runner = runner_for(path, backend=backend, device=device, threads=threads)
    try:
        meta = getattr(runner, "metadata", None) or {}
        static_batch, static_size = _static_input(runner, path.name)
        if static_batch is not None and any(b != static_batch for b in batch_sizes):
            raise OptionError(
                f"{path.name} has a fixed batch of {static_batch}; bench it with --batch-sizes {static_batch} "
                "or export it with a dynamic batch"
            )
        size = _resolve_input_size(path.name, static_size, meta, input_size)
    except BaseException:
        runner.close()
        raise
    kind = getattr(runner, "model_kind", None) or ("engine" if runner.name == "tensorrt" else "onnx")
    return BenchModel(path.name, str(path), kind, runner.name, runner.device, size, threads=threads, runner=runner)


def _open_torch_variants(
    path: Path, backend: str | None, device: str, threads: int | None, input_size: int | None, sparse: bool
) -> list[BenchModel]:
    """A checkpoint on torch: NCHW + channels-last on CPU; fp32, or fp16 dense + fp16 2:4 sparse on CUDA."""
    import copy

    from maxq_deploy.models import load_torch_model
    from maxq_deploy.runtimes.torch_runner import TorchRunner, resolve_torch_device

    if backend not in (None, "torch"):
        raise InputFileError(
            f"{path.name} is a PyTorch checkpoint, which the {backend} backend cannot run; export it first "
            "(maxq-deploy export onnx / export trt) or use --backend torch"
        )
    resolve_torch_device(device)
    loaded = load_torch_model(path)
    size = input_size or DEFAULT_INPUT_SIZE
    common = dict(path=str(path), kind=loaded.kind, backend="torch", device=device, input_size=size, threads=threads)
    out: list[BenchModel] = []
    try:
        if device == "cpu":
            for variant, channels_last in (("nchw", False), ("channels-last", True)):
                module = copy.deepcopy(loaded.module) if channels_last else loaded.module
                runner = TorchRunner(module, device=device, channels_last=channels_last, threads=threads,
                                     model_kind=loaded.kind, num_classes=loaded.num_classes, arch=loaded.arch)
                out.append(BenchModel(f"{path.name} [{variant}]", variant=variant, runner=runner, **common))
        elif not sparse:
            runner = TorchRunner(loaded.module, device=device, threads=threads, model_kind=loaded.kind,
                                 num_classes=loaded.num_classes, arch=loaded.arch)
            out.append(BenchModel(path.name, variant="fp32", runner=runner, **common))
        else:
            from maxq_deploy.sparse_torch import SparseTorchRunner

            if loaded.kind != "folded-checkpoint":
                raise InputFileError(
                    f"--sparse runs folded checkpoints (constant 2:4 weights); {path.name} is a {loaded.kind}: "
                    "fold it first (maxq-deploy fold), or bench its TensorRT engine"
                )
            for variant, make_sparse in (("fp16-dense", False), ("fp16-sparse-2:4", True)):
                module = copy.deepcopy(loaded.module) if make_sparse else loaded.module
                runner = SparseTorchRunner(module, device=device, sparse=make_sparse)
                report = runner.report.to_dict() if runner.report is not None else None
                notes = [runner.report.summary()] if runner.report is not None else []
                out.append(BenchModel(f"{path.name} [{variant}]", variant=variant, runner=runner, notes=notes,
                                      sparse_report=report, **common))
    except BaseException:
        for m in out:
            m.runner.close()  # type: ignore[union-attr]
        raise
    return out


# --------------------------------------------------------------------------- the command


def benchmark(
    models: Sequence[str | os.PathLike[str]],
    backend: str | None = None,
    device: str = "cpu",
    batch_sizes: Sequence[int] | str = DEFAULT_BATCH_SIZES,
    warmup: int = DEFAULT_WARMUP,
    iters: int | None = None,
    seconds: float | None = None,
    threads: int | None = None,
    input_size: int | None = None,
    sparse: bool = False,
    block: int = DEFAULT_BLOCK,
    json_path: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> BenchResult:
    """Measure ``models`` side by side (interleaved) at every batch size; write JSON/CSV/PNG if asked.

    ``iters`` timed iterations per model and batch size (default 30), or ``seconds`` of measured
    time per model and batch size. ``json_path`` also writes a CSV beside it (same stem).
    """
    if not models:
        raise OptionError("no models given; pass one or more ONNX files, engines or checkpoints")
    settings = BenchSettings(
        backend=backend, device=str(device).split(":")[0], batch_sizes=list(parse_batch_sizes(batch_sizes)),
        warmup=warmup, iters=iters, seconds=seconds,
        block=block, threads=threads, input_size=input_size, sparse=sparse,
    )
    outputs = guard_bench_outputs(json_path, plot_path, models)
    opened = open_models(models, backend, device, threads, input_size, sparse, settings.batch_sizes)
    try:
        measurements = measure(opened, settings, progress)
    finally:
        for m in opened:
            if m.runner is not None:
                m.runner.close()
    result = BenchResult(opened, measurements, settings, collect_environment(threads))
    if "plot" in outputs:
        result.write_plot(outputs["plot"])
        result.outputs["plot"] = str(outputs["plot"])
    if "json" in outputs:
        result.outputs["json"], result.outputs["csv"] = str(outputs["json"]), str(outputs["csv"])
        result.write_csv(outputs["csv"])
        result.write_json(outputs["json"])
    return result


# --------------------------------------------------------------------------- the chart

#: Bar colours (matplotlib's "tab10"), one per model.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def nice_ticks(top: float, target: int = 6) -> list[float]:
    """0, step, 2*step, ... covering ``top``, with step 1, 2 or 5 times a power of ten."""
    if not top > 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    count = math.ceil(top / step - 1e-9)
    return [i * step for i in range(count + 1)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def throughput_chart(batch_sizes: Sequence[int], series: Sequence[tuple[str, Sequence[float]]], title: str):
    """A grouped bar chart (Pillow image): groups = batch sizes, bars = models, y = images/s."""
    from PIL import Image, ImageDraw

    font, small, bold = _font(14), _font(11), _font(16)
    width, left, right, top, plot_h = 960, 80, 24, 56, 340
    legend_top = top + plot_h + 64
    height = legend_top + 22 * len(series) + 16
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 16), title, fill="black", font=bold)

    values = [v for _, vals in series for v in vals if math.isfinite(v)]
    ticks = nice_ticks(max(values, default=1.0))
    y_max = ticks[-1] or 1.0
    x0, x1, y0, y1 = left, width - right, top + plot_h, top  # y0 is the axis (bottom), y1 the top

    def y_of(value: float) -> float:
        return y0 - (y0 - y1) * min(value, y_max) / y_max

    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    for tick in ticks:
        y = y_of(tick)
        draw.line([(x0, y), (x1, y)], fill="#dddddd")
        label = f"{tick:,.{decimals}f}"
        w = draw.textlength(label, font=small)
        draw.text((x0 - 8 - w, y - 7), label, fill="black", font=small)
    draw.line([(x0, y1), (x0, y0), (x1, y0)], fill="black", width=1)

    groups = max(len(batch_sizes), 1)
    group_w = (x1 - x0) / groups
    bar_w = group_w * 0.8 / max(len(series), 1)
    for g, batch in enumerate(batch_sizes):
        gx = x0 + g * group_w + group_w * 0.1
        for s, (_, vals) in enumerate(series):
            value = vals[g]
            bx = gx + s * bar_w
            draw.rectangle([bx + 1, y_of(value), bx + bar_w - 1, y0], fill=PALETTE[s % len(PALETTE)])
            text = _fmt(value)
            tw = draw.textlength(text, font=small)
            if tw <= bar_w + 6:
                draw.text((bx + (bar_w - tw) / 2, y_of(value) - 15), text, fill="black", font=small)
        label = f"batch {batch}"
        lw = draw.textlength(label, font=font)
        draw.text((x0 + g * group_w + (group_w - lw) / 2, y0 + 8), label, fill="black", font=font)

    axis_title = "batch size"
    draw.text(((x0 + x1 - draw.textlength(axis_title, font=font)) / 2, y0 + 32), axis_title, fill="black", font=font)
    y_title = "throughput (images/s)"
    tw = int(draw.textlength(y_title, font=font)) + 4
    label_img = Image.new("RGB", (tw, 20), "white")
    ImageDraw.Draw(label_img).text((2, 2), y_title, fill="black", font=font)
    rotated = label_img.rotate(90, expand=True)
    image.paste(rotated, (8, int((y0 + y1) / 2 - rotated.height / 2)))

    for s, (name, _) in enumerate(series):
        ly = legend_top + 22 * s
        draw.rectangle([x0, ly + 2, x0 + 14, ly + 16], fill=PALETTE[s % len(PALETTE)])
        draw.text((x0 + 22, ly + 1), name, fill="black", font=font)
    return image
