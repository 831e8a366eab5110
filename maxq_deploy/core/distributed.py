"""torchrun's process group, joined one way for every stage that can span processes (eval, QAT)."""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job; rank 0 of 1 when not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this call created the group (and destroys it at exit)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank() -> int:
    """torchrun's RANK (0 outside torchrun); read without starting anything."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main_process() -> bool:
    """Whether this process prints and writes (rank 0, or not distributed)."""
    return env_rank() == 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def join_process_group(backend: str = "gloo") -> DistContext:
    """Join torchrun's group when WORLD_SIZE > 1 (or reuse one already joined).

    The group is destroyed at exit when this call created it. ``backend``: "gloo" (CPU
    tensors) or "nccl" (CUDA tensors).
    """
    import torch.distributed as dist

    if not dist.is_available():
        return DistContext()
    if not dist.is_initialized():
        if env_world_size() <= 1:
            return DistContext()
        dist.init_process_group(backend=backend, init_method="env://")
        atexit.register(_destroy_group)
        owns = True
    else:
        owns = False
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, owns)


def _destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Sum (or max) a few numbers across the group; identity when not distributed."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return list(values)
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor.cpu().tolist()
