"""torchrun's process group (``core.distributed``): one process without torchrun's variables, two real gloo ranks with them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from maxq_deploy.core.distributed import DistContext, all_reduce, env_rank, env_world_size, is_main_process, join_process_group

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def no_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_default_context_is_rank_0_of_1() -> None:
    ctx = DistContext()
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.owns_group) == (0, 1, 0, False)
    assert not ctx.enabled and ctx.is_main
    assert DistContext(rank=1, world_size=2).enabled and not DistContext(rank=1, world_size=2).is_main


def test_outside_torchrun_one_process_is_rank_0_of_1_and_starts_nothing(no_torchrun) -> None:
    import torch.distributed as dist

    assert (env_rank(), env_world_size(), is_main_process()) == (0, 1, True)
    assert join_process_group() == DistContext()
    assert not dist.is_initialized()  # no group was made for one process
    values = [1.5, -2.0]
    reduced = all_reduce(values, "max")
    assert reduced == [1.5, -2.0] and reduced is not values  # identity, on a copy


def test_a_world_of_one_under_torchrun_joins_no_group(no_torchrun, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert join_process_group() == DistContext() and not dist.is_initialized()


def test_rank_and_world_size_come_from_torchrun_variables(no_torchrun, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (env_rank(), env_world_size(), is_main_process()) == (3, 4, False)
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()


@pytest.mark.parametrize("garbage", ["", "two", "1.0"])
def test_unreadable_variables_read_as_one_process(no_torchrun, monkeypatch: pytest.MonkeyPatch, garbage: str) -> None:
    monkeypatch.setenv("RANK", garbage)
    monkeypatch.setenv("WORLD_SIZE", garbage)
    assert (env_rank(), env_world_size(), is_main_process()) == (0, 1, True)


_RANK_SCRIPT = """
import json, sys
import torch.distributed as dist
from maxq_deploy.core.distributed import all_reduce, is_main_process, join_process_group
ctx = join_process_group()
again = join_process_group()  # a second caller reuses the group, and does not own it
rank = ctx.rank
out = {"ctx": [ctx.rank, ctx.world_size, ctx.local_rank, ctx.owns_group, ctx.enabled, ctx.is_main],
       "again_owns": again.owns_group, "main": is_main_process(),
       "sum": all_reduce([rank + 1.0, 10.0 * rank]), "max": all_reduce([float(rank), -float(rank)], "max")}
print(json.dumps(out), flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_real_gloo_ranks_join_one_group_and_reduce(tmp_path: Path) -> None:
    """Two processes with torchrun's variables (set by hand, as torchrun would) form one gloo group."""
    port = _free_port()
    base = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    base.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    procs = [
        subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT], env=dict(base, RANK=str(rank), LOCAL_RANK=str(rank)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        for rank in (0, 1)
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        assert proc.returncode == 0, err  # the group is destroyed at exit without error
        results.append(json.loads(out.strip().splitlines()[-1]))
    for rank, result in enumerate(results):
        assert result["ctx"] == [rank, 2, rank, True, True, rank == 0]
        assert result["again_owns"] is False and result["main"] is (rank == 0)
        assert result["sum"] == [1.0 + 2.0, 0.0 + 10.0]
        assert result["max"] == [1.0, 0.0]
