"""Shared bench test helpers: a fake clock and runners that advance it (the timing loop without wall-clock time),
the settings the tests start from, and a tiny ONNX model pair exported by code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from maxq_deploy import bench
from maxq_deploy.bench import BenchModel, BenchSettings


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


def export_tiny(path: Path, size: int = 16, dynamic: bool = True, seed: int = 0, width: int | None = None,
                dynamic_spatial: bool = False) -> Path:
    """``size`` x ``width`` (default square) inputs; ``dynamic`` batch, ``dynamic_spatial`` height and width too."""
    torch.manual_seed(seed)
    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
    if axes and dynamic_spatial:
        axes["input"] |= {2: "height", 3: "width"}
    torch.onnx.export(TinyNet().eval(), (torch.zeros(1, 3, size, width or size),), str(path), dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["output"], dynamic_axes=axes)
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tiny_onnx")
    return export_tiny(folder / "a.onnx", seed=0), export_tiny(folder / "b.onnx", seed=1)
