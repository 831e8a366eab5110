"""bench: statistics, interleaving, warm-up, A/B ratios, JSON/CSV/PNG outputs, CLI, sparse-torch plans."""

from __future__ import annotations

import copy
import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from maxq_deploy import bench
from maxq_deploy.bench import (
    CSV_COLUMNS,
    BenchModel,
    BenchSettings,
    benchmark,
    latency_stats,
    measure,
    nice_ticks,
    parse_batch_sizes,
    percentile,
    throughput,
)
from maxq_deploy.core.errors import MaxQDeployError, OptionError

# --------------------------------------------------------------------------- fixtures


class FakeClock:
    """Stands in for time.perf_counter_ns: runners advance it by what each call 'costs'."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class FakeRunner:
    """Records every call; the first ``slow_calls`` runs at each batch size cost ``slow_ns``."""

    name = "fake"
    device = "cpu"

    def __init__(self, tag: str, clock: FakeClock, cost_ns: int, log: list, slow_calls: int = 0, slow_ns: int = 10**9):
        self.tag, self.clock, self.cost_ns, self.log = tag, clock, cost_ns, log
        self.slow_calls, self.slow_ns = slow_calls, slow_ns
        self.calls_per_batch: dict[int, int] = {}
        self.closed = False

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        seen = self.calls_per_batch.get(n, 0)
        self.calls_per_batch[n] = seen + 1
        self.log.append((self.tag, n))
        self.clock.now += self.slow_ns if seen < self.slow_calls else self.cost_ns
        return np.zeros((n, 10), np.float32)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(bench.timing.time, "perf_counter_ns", clock)
    return clock


def fake_models(clock: FakeClock, log: list, costs_ms=(1, 2), slow_calls: int = 0) -> list[BenchModel]:
    return [
        BenchModel(f"m{i}", None, "fake", "fake", "cpu", 8,
                   runner=FakeRunner(f"m{i}", clock, int(ms * 1e6), log, slow_calls=slow_calls))
        for i, ms in enumerate(costs_ms)
    ]


def settings(**kw) -> BenchSettings:
    base = dict(backend=None, device="cpu", batch_sizes=[1, 2], warmup=1, iters=4, seconds=None, block=2,
                threads=None, input_size=None, sparse=False)
    return BenchSettings(**(base | kw))


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def export_tiny(path: Path, size: int = 16, dynamic: bool = True, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
    torch.onnx.export(TinyNet().eval(), (torch.zeros(1, 3, size, size),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tiny_onnx")
    return export_tiny(folder / "a.onnx", seed=0), export_tiny(folder / "b.onnx", seed=1)


# --------------------------------------------------------------------------- statistics


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


@pytest.mark.parametrize("kw", [dict(iters=0), dict(warmup=-1), dict(iters=3, seconds=1.0), dict(seconds=0.0),
                                dict(threads=0), dict(device="tpu"), dict(block=0)])
def test_settings_validation(kw: dict) -> None:
    with pytest.raises(OptionError):
        settings(**kw)


def test_nice_ticks() -> None:
    assert nice_ticks(87.2) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0.0) == [0.0, 1.0]
    ticks = nice_ticks(12345)
    assert ticks[-1] >= 12345 and len(ticks) <= 8


# --------------------------------------------------------------------------- the timing loop


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


# --------------------------------------------------------------------------- outputs


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


def test_plot_draws_every_model_colour(tmp_path: Path, fake_clock: FakeClock) -> None:
    from PIL import Image

    models = fake_models(fake_clock, [], costs_ms=(1, 2, 3))
    s = settings(batch_sizes=[1, 8])
    result = bench.BenchResult(models, measure(models, s), s, {})
    result.write_plot(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as image:
        colours = {c for _, c in image.convert("RGB").getcolors(1 << 20)}
    for hex_colour in bench.PALETTE[:3]:
        assert tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)) in colours


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


# --------------------------------------------------------------------------- CLI


def test_cli_end_to_end(cli, tiny_onnx, tmp_path: Path) -> None:
    a, b = tiny_onnx
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    res = cli("bench", a, b, "--batch-sizes", "1,2", "--iters", "3", "--warmup", "1", "--threads", "1",
              "--json", out, "--csv", tmp_path / "r.csv", "--plot", plot)
    assert res.exit_code == 0, res.stderr
    assert "vs first" in res.stdout and "baseline" in res.stdout and "b.onnx" in res.stdout
    assert "environment:" in res.stdout and "threads 1" in res.stdout
    assert out.is_file() and (tmp_path / "r.csv").is_file() and plot.is_file()
    assert len(json.loads(out.read_text())["results"]) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.onnx"], "not found"),
        (["{a}", "--backend", "foo"], "unknown backend"),
        (["{a}", "--batch-sizes", "1,x"], "batch sizes"),
        (["{a}", "--iters", "3", "--seconds", "1"], "either iters or seconds"),
        (["{a}", "--json", "{tmp}/no/such/dir/r.json"], "does not exist"),
        (["{a}", "--sparse"], "--sparse"),
        (["{engine}", "--device", "cuda"], "TensorRT"),
        (["{a}", "--backend", "tensorrt", "--device", "cuda"], "tensorrt"),
        (["{a}", "--device", "cuda", "--backend", "torch"], "torch"),
    ],
)
def test_cli_errors_are_one_line(cli, tiny_onnx, tmp_path: Path, args: list[str], message: str) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    filled = [s.format(a=tiny_onnx[0], tmp=tmp_path, engine=engine) for s in args]
    res = cli("bench", *filled)
    assert res.exit_code != 0 and res.exception is None
    assert "Traceback" not in res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), res.stderr
    assert message.lower() in res.stderr.lower()
    assert not (tmp_path / "r.json").exists()


# --------------------------------------------------------------------------- sparse torch (plans run anywhere)


def test_sparse_plan_resnet18(store) -> None:
    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.runtimes.semi_structured import plan_sparse_layers

    model = load_torch_model(store.folded(arch="resnet18")).module
    plan = plan_sparse_layers(model, torch.float16, min_shape=(16, 16))
    by_name = {d.name: d for d in plan.layers}
    assert not by_name["conv1"].sparse and by_name["conv1"].category == "kxk"  # 7x7 stem
    assert not by_name["fc"].sparse and by_name["fc"].category == "not-2:4"  # dense classifier
    assert by_name["layer2.0.downsample"].sparse and by_name["layer2.0.downsample"].matrix == [128, 64]
    assert by_name["layer1.0.convbn1"].category == "kxk"
    assert "3 of 21 layers run 2:4" in plan.summary()
    im2col = plan_sparse_layers(model, torch.float16, min_shape=(16, 16), conv_kxk="im2col")
    assert len(im2col.converted) == 19  # every MaxQ sparse layer
    assert {d.name: d.category for d in im2col.skipped} == {"conv1": "not-2:4", "fc": "not-2:4"}  # 3 input channels; dense fc
    assert plan_sparse_layers(model, torch.float16, min_shape=(256, 256)).reasons()["shape"] == 2  # 128x64, 256x128; 512x256 fits
    as_fp32 = plan_sparse_layers(model, torch.float32)
    assert not as_fp32.converted and set(as_fp32.reasons()) == {"dtype"}
    json.dumps(plan.to_dict())


def test_sparse_plan_skips_depthwise(store) -> None:
    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.runtimes.semi_structured import plan_sparse_layers

    model = load_torch_model(store.folded(arch="mobilenet_v1")).module
    plan = plan_sparse_layers(model, torch.bfloat16, min_shape=(16, 16))
    assert plan.reasons().get("grouped") == 13
    assert all(d.op == "conv1x1" for d in plan.converted) and plan.converted


def test_matmul_forms_reproduce_convs(store) -> None:
    """The layer swap is exact with dense weights, so only the sparse kernel itself needs a GPU."""
    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.runtimes.semi_structured import plan_sparse_layers, replace_with_matmuls_

    model = load_torch_model(store.folded(arch="resnet18")).module
    plan = plan_sparse_layers(model, torch.float16, min_shape=(16, 16), conv_kxk="im2col")
    swapped = replace_with_matmuls_(copy.deepcopy(model), plan)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
        for fmt in (torch.contiguous_format, torch.channels_last):
            out = swapped(x.contiguous(memory_format=fmt))
            assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_sparse_runner_needs_cuda() -> None:
    from maxq_deploy.runtimes.semi_structured import check_sparse_device

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(MaxQDeployError, match="CUDA"):
        check_sparse_device(torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sparse_runner_on_gpu(store) -> None:
    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.runtimes.torch_sparse_runner import SparseTorchRunner

    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 sparse tensor cores need sm80+")
    module = load_torch_model(store.folded(arch="resnet50", num_classes=1000)).module
    x = np.random.default_rng(0).standard_normal((8, 3, 224, 224), dtype=np.float32)
    dense = SparseTorchRunner(copy.deepcopy(module), sparse=False)
    sparse = SparseTorchRunner(module, sparse=True)
    assert sparse.report is not None and len(sparse.report.converted) > 0
    a, b = dense.run(x), sparse.run(x)
    assert np.abs(a - b).max() <= 2e-2 * np.abs(a).max()
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.75
    dense.close(), sparse.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_sparse_torch_on_gpu(store, tmp_path: Path) -> None:
    folded = store.folded(arch="resnet50", num_classes=1000)
    result = benchmark([folded], backend="torch", device="cuda", sparse=True, batch_sizes=[8], warmup=2, iters=5,
                       json_path=tmp_path / "s.json")
    assert [m.variant for m in result.models] == ["fp16-dense", "fp16-sparse-2:4"]
    assert result.models[1].sparse_report["sparse_layers"] > 0
    assert result.environment["gpus"]


def test_environment_line_mentions_threads_and_versions() -> None:
    env = bench.collect_environment(threads=2)
    line = bench.environment_line(env)
    assert "threads 2" in line and "onnxruntime" in line and env["cpu_count"] >= 1


def test_seconds_budget_is_wall_clock_bounded(tiny_onnx) -> None:
    started = time.perf_counter()
    result = benchmark([tiny_onnx[0]], batch_sizes=[1], warmup=0, seconds=0.3)
    assert result.measurements[0].latency.iterations >= 1
    assert time.perf_counter() - started < 30


def test_cli_checkpoint_on_missing_cuda_is_one_line(cli, store) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    res = cli("bench", store.folded(arch="resnet18"), "--device", "cuda", "--iters", "1")
    assert res.exit_code == 2 and res.exception is None
    assert res.stderr.strip().startswith("error:") and "CUDA is not available" in res.stderr


def test_same_file_twice_gets_unique_labels(tiny_onnx) -> None:
    result = benchmark([tiny_onnx[0], tiny_onnx[0]], batch_sizes=[1], warmup=0, iters=1)
    labels = [m.label for m in result.models]
    assert len(set(labels)) == 2 and all("a.onnx" in label for label in labels)


# --------------------------------------------------------------------------- runtimes side by side


def test_backend_list_measures_every_pair_in_one_run(cli, tiny_onnx, tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'maxq-deploy[openvino]'")
    a, _ = tiny_onnx
    out = tmp_path / "pairs.json"
    res = cli("bench", a, "--backend", "onnxruntime,openvino:f32", "--batch-sizes", "1,2", "--iters", "2", "--warmup", "1",
              "--threads", "1", "--json", out)
    assert res.exit_code == 0, res.stderr
    data = json.loads(out.read_text())
    models = data["models"]
    assert [m["label"] for m in models] == ["a.onnx [onnxruntime]", "a.onnx [openvino:f32]"]
    assert [m["backend"] for m in models] == ["onnxruntime", "openvino:fp32"]  # the precision it really ran in
    assert models[1]["options"]["inference_precision"] == "fp32" and models[1]["precision"] == "fp32"
    assert models[0]["precision"] is None  # a graph without maxq_deploy metadata: not known, not guessed
    assert len(data["results"]) == 4 and {r["model_index"] for r in data["results"]} == {0, 1}
    first = [r for r in data["results"] if r["model_index"] == 0]
    assert all(r["speedup_vs_first"] == 1.0 for r in first)  # ratios against the first row


def test_backend_list_that_runs_none_of_a_model_is_one_line(cli, tiny_onnx, store) -> None:
    res = cli("bench", tiny_onnx[0], store.folded(arch="resnet18"), "--backend", "onnxruntime,openvino", "--iters", "1")
    assert res.exit_code == 2 and res.stderr.startswith("error: none of the backends onnxruntime, openvino runs")
    assert res.stderr.count("\n") == 1
