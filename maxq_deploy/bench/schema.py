"""What a benchmark run measured and how it is written: the JSON schema, the CSV columns, the chart file."""

from __future__ import annotations

import csv
import datetime as _dt
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from maxq_deploy.core.files import atomic_output, json_text
from maxq_deploy.bench.stats import LatencyStats
from maxq_deploy.core.errors import OptionError
from maxq_deploy.runtimes.base import Runner

SCHEMA = "maxq-deploy/bench"
SCHEMA_VERSION = 1
DEFAULT_ITERS = 30
DEVICES = ("cpu", "cuda")
#: Columns of the CSV file, one row per model and batch size.
CSV_COLUMNS = (
    "model_index", "model", "path", "backend", "device", "variant", "batch", "iterations",
    "mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "std_ms", "throughput_ips", "speedup_vs_first",
)


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
    precision: str | None = None  # "fp32", "fp16", "int8" (None: not known)
    options: dict = field(default_factory=dict)  # backend settings that change results or speed
    warning: str | None = None  # the runner's one-line warning (an int8 form that saturates on this CPU)
    runner: Runner | None = field(default=None, repr=False, compare=False)

    def to_dict(self, index: int) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "runner"}  # asdict would deep-copy the runner
        return {"index": index, **data, "notes": list(self.notes), "options": dict(self.options)}


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


#: Bounds on timed and warm-up runs per model and batch size (a million: hours on any model, yet
#: a schedule that fits in memory) and on --seconds (a day).
MAX_ITERS = 1_000_000
MAX_SECONDS = 86_400


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
        if not 0 <= self.warmup <= MAX_ITERS:
            raise OptionError(f"warmup must be between 0 and {MAX_ITERS:,} iterations, got {self.warmup}")
        if self.iters is not None and self.seconds is not None:
            raise OptionError("give either iters or seconds, not both")
        if self.iters is not None and not 1 <= self.iters <= MAX_ITERS:
            # an absurd count would first build its schedule in memory (1e22 runs: killed for memory)
            raise OptionError(f"iters must be between 1 and {MAX_ITERS:,}, got {self.iters}")
        if self.seconds is not None and not (0 < self.seconds <= MAX_SECONDS and math.isfinite(self.seconds)):
            raise OptionError(f"seconds must be a positive number up to {MAX_SECONDS:,} (a day), got {self.seconds}")
        if self.block < 1:
            raise OptionError(f"block must be >= 1 iteration, got {self.block}")
        from maxq_deploy.core.devices import check_threads

        check_threads(self.threads)
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
            tmp.write_text(json_text(self.to_dict(), default=str) + "\n")
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
        from maxq_deploy.bench.chart import throughput_chart

        image = throughput_chart(self.settings.batch_sizes, series, title)
        with atomic_output(path) as tmp:
            image.save(tmp, format="PNG")
        return Path(path)
