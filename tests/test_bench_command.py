"""bench.command: ``benchmark`` end to end on tiny ONNX graphs and a checkpoint (JSON/CSV/PNG, variants, labels),
and its refusals -- options and outputs before any model is opened, graphs bench cannot feed -- each one line."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest
import torch

from bench_fixtures import FakeClock, export_tiny, fake_clock, fake_models, tiny_onnx  # noqa: F401  (pytest fixtures)
from maxq_deploy import bench
from maxq_deploy.bench import CSV_COLUMNS, BenchModel, benchmark
from maxq_deploy.bench.command import _unique_labels
from maxq_deploy.core.errors import InputFileError, MaxQDeployError, OptionError, OutputPathError


def test_benchmark_onnx_json_csv_plot(tiny_onnx, tmp_path: Path) -> None:
    from PIL import Image

    a, b = tiny_onnx
    out = tmp_path / "res.json"
    plot = tmp_path / "res.png"
    result = benchmark([a, b], batch_sizes="1,3", warmup=1, iters=4, threads=1, json_path=out, plot_path=plot,
                       csv_path=tmp_path / "res.csv")
    data = json.loads(out.read_text())
    assert data["schema"] == "maxq-deploy/bench" and data["schema_version"] == 1
    assert {"tool_version", "created", "settings", "environment", "models", "results", "outputs"} <= set(data)
    assert data["settings"]["batch_sizes"] == [1, 3] and data["settings"]["interleaved"] is True
    env = data["environment"]
    for key in ("cpu", "cpu_count", "gpus", "threads", "os", "python", "versions", "load_average"):
        assert key in env
    assert isinstance(env["cpu_count"], int) and env["threads"] == 1
    assert env["versions"]["onnxruntime"] and env["versions"]["onnx"]
    assert [m["label"] for m in data["models"]] == ["a.onnx", "b.onnx"]
    assert all(m["backend"] == "onnxruntime" and m["input_size"] == 16 for m in data["models"])
    assert len(data["results"]) == 4
    for row in data["results"]:
        for key in ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "std_ms", "throughput_ips"):
            assert isinstance(row[key], float) and row[key] >= 0
        assert row["iterations"] == 4 and isinstance(row["batch"], int)
        assert row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert [r["speedup_vs_first"] for r in data["results"] if r["model_index"] == 0] == [1.0, 1.0]

    with open(tmp_path / "res.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CSV_COLUMNS) and len(rows) == 4
    assert {(r["model"], r["batch"]) for r in rows} == {("a.onnx", "1"), ("a.onnx", "3"), ("b.onnx", "1"), ("b.onnx", "3")}

    with Image.open(plot) as image:
        assert image.format == "PNG"
        width, height = image.size
        image.verify()
    assert width >= 600 and 300 <= height <= 2000
    assert result.outputs == {"plot": str(plot), "json": str(out), "csv": str(tmp_path / "res.csv")}
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes left no temp files


def test_torch_checkpoint_on_cpu_measures_both_layouts(store) -> None:
    folded = store.folded(arch="resnet18")
    result = benchmark([folded], batch_sizes=[1], warmup=0, iters=2, input_size=32, threads=1)
    assert [m.variant for m in result.models] == ["nchw", "channels-last"]
    assert all(m.backend == "torch" and m.input_size == 32 for m in result.models)
    assert len(result.measurements) == 2


def test_fixed_batch_onnx_is_refused_before_timing(tmp_path: Path) -> None:
    fixed = export_tiny(tmp_path / "fixed.onnx", dynamic=False)
    with pytest.raises(OptionError, match="fixed batch of 1"):
        benchmark([fixed], batch_sizes=[1, 4], iters=1)


def test_sparse_needs_torch_on_cuda(tiny_onnx) -> None:
    with pytest.raises(OptionError, match="--sparse"):
        benchmark([tiny_onnx[0]], sparse=True, iters=1)


def test_input_size_conflicting_with_graph(tiny_onnx) -> None:
    with pytest.raises(MaxQDeployError, match="16x16"):
        benchmark([tiny_onnx[0]], input_size=32, batch_sizes=[1], iters=1)


def test_runners_closed_after_run(fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch, tiny_onnx) -> None:
    opened: list = []
    monkeypatch.setattr(bench.command, "open_models", lambda *a, **k: opened.extend(fake_models(fake_clock, [])) or opened)
    benchmark([tiny_onnx[0]], batch_sizes=[1], iters=1)
    assert opened and all(m.runner.closed for m in opened)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_sparse_torch_on_gpu(store, tmp_path: Path) -> None:
    folded = store.folded(arch="resnet50", num_classes=1000)
    result = benchmark([folded], backend="torch", device="cuda", sparse=True, batch_sizes=[8], warmup=2, iters=5,
                       json_path=tmp_path / "s.json")
    assert [m.variant for m in result.models] == ["fp16-dense", "fp16-sparse-2:4"]
    assert result.models[1].sparse_report["sparse_layers"] > 0
    assert result.environment["gpus"]


def test_seconds_budget_is_wall_clock_bounded(tiny_onnx) -> None:
    started = time.perf_counter()
    result = benchmark([tiny_onnx[0]], batch_sizes=[1], warmup=0, seconds=0.3)
    assert result.measurements[0].latency.iterations >= 1
    assert time.perf_counter() - started < 30


def test_same_file_twice_gets_unique_labels(tiny_onnx) -> None:
    result = benchmark([tiny_onnx[0], tiny_onnx[0]], batch_sizes=[1], warmup=0, iters=1)
    labels = [m.label for m in result.models]
    assert len(set(labels)) == 2 and all("a.onnx" in label for label in labels)



# --------------------------------------------------------------------------- refusals


def test_no_models_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="no models given; pass one or more ONNX files"):
        benchmark([])


@pytest.mark.parametrize("kw, error, message", [
    (dict(batch_sizes="1,x"), OptionError, "batch sizes must be comma-separated positive integers"),
    (dict(iters=2, seconds=1.0), OptionError, "give either iters or seconds, not both"),
    (dict(warmup=-1), OptionError, "warmup must be between 0"),
    (dict(device="tpu"), OptionError, "unknown device 'tpu'"),
    (dict(json_path="{tmp}/r.txt"), OutputPathError, "--json output {tmp}/r.txt would hold JSON but its name ends in .txt"),
    (dict(csv_path="{tmp}/r.json"), OutputPathError, "--csv output {tmp}/r.json would hold CSV"),
    (dict(plot_path="{tmp}/r.jpg"), OutputPathError, "name it *.png"),
])
def test_options_and_outputs_are_refused_before_any_model_is_opened(tmp_path: Path, kw: dict, error, message: str) -> None:
    """The model does not exist: the option or output error comes first, in one line, and nothing is written."""
    kw = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in kw.items()}
    with pytest.raises(error) as info:
        benchmark([tmp_path / "missing.onnx"], **kw)
    assert message.format(tmp=tmp_path) in str(info.value) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_model_is_an_input_file_error(tmp_path: Path) -> None:
    with pytest.raises(MaxQDeployError, match="not found"):
        benchmark([tmp_path / "missing.onnx"], iters=1)


def test_non_square_graph_is_refused(tmp_path: Path) -> None:
    graph = export_tiny(tmp_path / "wide.onnx", size=16, width=24)
    with pytest.raises(InputFileError, match="wide.onnx: non-square input 16x24 is not supported by bench"):
        benchmark([graph], batch_sizes=[1], iters=1)


def test_dynamic_spatial_graph_runs_at_the_requested_or_default_size(tmp_path: Path) -> None:
    """No size in the graph and no maxq_deploy metadata: --input-size, else 224 (the size of an unknown architecture)."""
    graph = export_tiny(tmp_path / "any.onnx", dynamic_spatial=True)
    assert benchmark([graph], batch_sizes=[1], warmup=0, iters=1, input_size=20).models[0].input_size == 20
    assert benchmark([graph], batch_sizes=[1], warmup=0, iters=1).models[0].input_size == 224


def test_only_the_outputs_asked_for_are_written(tiny_onnx, tmp_path: Path) -> None:
    result = benchmark([tiny_onnx[0]], batch_sizes=[1], warmup=0, iters=1)
    assert result.outputs == {} and list(tmp_path.iterdir()) == []
    result = benchmark([tiny_onnx[0]], batch_sizes=[1], warmup=0, iters=1, csv_path=tmp_path / "only.csv")
    assert result.outputs == {"csv": str(tmp_path / "only.csv")} and [p.name for p in tmp_path.iterdir()] == ["only.csv"]


def test_warmup_and_iterations_reach_the_runners(fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch, tiny_onnx) -> None:
    """benchmark's options arrive in the timing loop: 3 warm-up + 4 timed calls per model and batch size."""
    opened: list = []
    monkeypatch.setattr(bench.command, "open_models", lambda *a, **k: opened.extend(fake_models(fake_clock, [])) or opened)
    result = benchmark([tiny_onnx[0]], batch_sizes="1,2", warmup=3, iters=4, block=3)
    assert [m.runner.calls_per_batch for m in opened] == [{1: 7, 2: 7}, {1: 7, 2: 7}]
    assert [(m.model_index, m.batch, m.latency.iterations) for m in result.measurements] == [
        (0, 1, 4), (1, 1, 4), (0, 2, 4), (1, 2, 4)]
    assert result.settings.block == 3 and result.environment["threads"] is None


# --------------------------------------------------------------------------- labels


def _model(label: str, path: str | None) -> BenchModel:
    return BenchModel(label, path, "onnx", "onnxruntime", "cpu", 16)


def test_labels_that_collide_get_their_folder_then_an_index() -> None:
    models = [_model("a.onnx", "/x/a.onnx"), _model("a.onnx", "/y/a.onnx"), _model("b.onnx", "/x/b.onnx"),
              _model("c.onnx", "/z/c.onnx"), _model("c.onnx", "/z/c.onnx")]
    _unique_labels(models)
    assert [m.label for m in models] == ["x/a.onnx", "y/a.onnx", "b.onnx", "z/c.onnx#3", "z/c.onnx#4"]


def test_labels_without_a_path_get_an_index() -> None:
    models = [_model("m", None), _model("m", None), _model("n", None)]
    _unique_labels(models)
    assert [m.label for m in models] == ["m#0", "m#1", "n"]


def test_same_file_in_two_folders_is_labelled_by_folder(tiny_onnx, tmp_path: Path) -> None:
    for folder in ("left", "right"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.onnx").write_bytes(tiny_onnx[0].read_bytes())
    result = benchmark([tmp_path / "left" / "a.onnx", tmp_path / "right" / "a.onnx"], batch_sizes=[1], warmup=0, iters=1)
    assert [m.label for m in result.models] == ["left/a.onnx", "right/a.onnx"]
    assert [m.model for m in result.measurements] == ["left/a.onnx", "right/a.onnx"]
