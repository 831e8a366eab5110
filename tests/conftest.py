"""Shared fixtures for the foundation tests: real MaxQ checkpoints made by code.

Every checkpoint is written by :mod:`maxq_deploy.reference` (``make_checkpoint`` +
``save_checkpoint``) in the upstream layout, once per test run, into a folder that all xdist
workers share (a file lock per checkpoint makes sure only one worker writes it). Tests must
treat these files as read-only: a test that damages a file copies it into its own ``tmp_path``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from torch import nn

from maxq_deploy.reference import build_reference_model, make_checkpoint, save_checkpoint

NUM_CLASSES = 10
DEFAULT_LAYER_TYPE = "SoftMaxQConv2DBNV2Pro"
#: Share of N:M groups left dense in the "mid-training" checkpoints.
MID_TRAINING_RATE = 0.3
#: Small inputs keep the suite fast; 64x64 still leaves a 2x2 (ResNet) / 2x2 (MobileNet) last map.
INPUT_SHAPE = (2, 3, 64, 64)


def _threads_per_worker() -> int | None:
    """Under xdist, share the cores: two workers with two OpenMP threads each on two cores
    spin against each other and run many times slower than one thread each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    return max(1, (os.cpu_count() or 1) // workers) if workers else None


THREADS = _threads_per_worker()
if THREADS is not None:
    torch.set_num_threads(THREADS)


@dataclass(frozen=True)
class CkptSpec:
    """Everything that decides the content of one fixture checkpoint."""

    arch: str = "resnet18"
    nm: str = "2:4"
    layer_type: str = DEFAULT_LAYER_TYPE
    rate: float = 0.0
    prefix: str = ""
    layout: str = "training"
    num_classes: int = NUM_CLASSES
    seed: int = 0

    @property
    def stem(self) -> str:
        prefix = self.prefix.strip(".") or "noprefix"
        return (
            f"{self.arch}_{self.nm.replace(':', 'of')}_{self.layer_type}_rate{self.rate:g}_{prefix}_"
            f"{self.layout}_c{self.num_classes}_s{self.seed}"
        )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock shared by all xdist workers (they share the fixture folder)."""
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class CheckpointStore:
    """Makes each fixture checkpoint (and its folded form) once per run and hands out paths."""

    def __init__(self, root: Path):
        self.root = root
        self._loaded: dict[CkptSpec, object] = {}
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def spec(**kwargs: object) -> CkptSpec:
        return CkptSpec(**kwargs)  # type: ignore[arg-type]

    def checkpoint(self, spec: CkptSpec | None = None, **kwargs: object) -> Path:
        """Path of the MaxQ checkpoint for ``spec`` (or ``CkptSpec(**kwargs)``)."""
        spec = replace(spec, **kwargs) if spec is not None else CkptSpec(**kwargs)  # type: ignore[arg-type]
        target = self.root / f"{spec.stem}.pth.tar"
        with _file_lock(target):
            if not target.exists():
                ckpt = make_checkpoint(
                    spec.arch, spec.nm, spec.layer_type, spec.num_classes,
                    rate=spec.rate, prefix=spec.prefix, layout=spec.layout, seed=spec.seed,
                )
                save_checkpoint(ckpt, target)
        return target

    def load(self, spec: CkptSpec | None = None, **kwargs: object):
        """The loaded checkpoint of ``spec``, cached per process: callers must not modify it."""
        from maxq_deploy.load.maxq_checkpoint import load_checkpoint

        spec = replace(spec, **kwargs) if spec is not None else CkptSpec(**kwargs)  # type: ignore[arg-type]
        if spec not in self._loaded:
            self._loaded[spec] = load_checkpoint(self.checkpoint(spec))
        return self._loaded[spec]

    def folded(self, spec: CkptSpec | None = None, **kwargs: object) -> Path:
        """Path of the folded checkpoint of ``spec`` (``--project`` when the spec is mid-training)."""
        from maxq_deploy.fold import fold_checkpoint

        spec = replace(spec, **kwargs) if spec is not None else CkptSpec(**kwargs)  # type: ignore[arg-type]
        source = self.checkpoint(spec)
        target = self.root / f"{spec.stem}.folded.pt"
        with _file_lock(target):
            if not target.exists():
                fold_checkpoint(source, target, project=spec.rate > 0)
        return target


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> CheckpointStore:
    """The run's fixture checkpoints; under xdist all workers share one folder."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    return CheckpointStore(root / "maxq_fixtures")


@pytest.fixture(scope="session")
def mid_spec() -> CkptSpec:
    """A checkpoint saved before the end of the incremental-sparsity schedule."""
    return CkptSpec(arch="resnet18", rate=MID_TRAINING_RATE)


@pytest.fixture(scope="session")
def probe() -> torch.Tensor:
    """A fixed input batch."""
    return torch.randn(INPUT_SHAPE, generator=torch.Generator().manual_seed(1234))


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| / max |ref|: the parity measure the acceptance criteria use."""
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="session")
def rel_err():
    return relative_error


def reference_network(path: Path, spec: CkptSpec) -> nn.Module:
    """The eval-mode MaxQ network of ``spec`` made of *reference* layers, loaded from the file.

    Independent of the deploy loader: the prefix is stripped here and the state dict loaded
    strictly into the same reference network that wrote it.
    """
    obj = torch.load(path, map_location="cpu", weights_only=True)
    state = obj if spec.layout == "bare" else obj["state_dict"]
    state = {k.removeprefix(spec.prefix): v for k, v in state.items()}
    model = build_reference_model(spec.arch, spec.num_classes, spec.nm, spec.layer_type)
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="session")
def reference_net():
    return reference_network


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def file_hash():
    return sha256


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None = None


@pytest.fixture(scope="session")
def cli():
    """Run ``maxq-deploy ARGS`` in-process with Typer's CliRunner (stdout and stderr apart)."""
    from typer.testing import CliRunner

    from maxq_deploy.cli.app import app

    runner = CliRunner()

    def run(*args: object) -> CliResult:
        result = runner.invoke(app, [str(a) for a in args])
        exc = result.exception if not isinstance(result.exception, SystemExit) else None
        return CliResult(result.exit_code, _ANSI.sub("", result.stdout), _ANSI.sub("", result.stderr), exc)

    return run


def maxq_deploy_command() -> list[str]:
    """The installed console script, or the module form where the script is not on PATH."""
    beside = Path(sys.executable).with_name("maxq-deploy")  # this interpreter's script, not a shim
    exe = str(beside) if beside.is_file() else shutil.which("maxq-deploy")
    return [exe] if exe else [sys.executable, "-m", "maxq_deploy"]


@pytest.fixture(scope="session")
def cli_subprocess():
    """Run the real ``maxq-deploy`` program as a child process."""

    def run(*args: object, timeout: float = 120) -> CliResult:
        env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
        if THREADS is not None:
            env["OMP_NUM_THREADS"] = str(THREADS)
        proc = subprocess.run(
            maxq_deploy_command() + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env
        )
        return CliResult(proc.returncode, _ANSI.sub("", proc.stdout), _ANSI.sub("", proc.stderr))

    return run


@pytest.fixture(scope="session")
def fresh_python():
    """Run ``code`` in a fresh interpreter (nothing imported yet) and return the JSON its last line prints."""

    def run(code: str) -> object:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    return run


def tiny_reference_network(layer_type: str = DEFAULT_LAYER_TYPE, nm: str = "2:4", seed: int = 0) -> nn.Module:
    """Two reference MaxQ layers (3x3 then 1x1, 8 input channels) and a classifier: N:M tests in milliseconds."""
    from maxq_deploy.core.sparsity import NMPattern
    from maxq_deploy.reference import ReferenceMaxQConvBN

    pattern = NMPattern.parse(nm)
    torch.manual_seed(seed)
    layer = {"layer_type": layer_type, "n": pattern.n, "m": pattern.m}
    return nn.Sequential(ReferenceMaxQConvBN(8, 16, 3, 1, 1, **layer), nn.ReLU(), ReferenceMaxQConvBN(16, 8, 1, **layer),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, NUM_CLASSES))


@pytest.fixture(scope="session")
def tiny_reference_net():
    return tiny_reference_network
