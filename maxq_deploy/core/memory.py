"""Sizes that cannot fit: refused in one line before anything is allocated."""

from __future__ import annotations

import os
from collections.abc import Sequence

from maxq_deploy.core.errors import DataError


#: A forward pass needs several times its input batch in activations; this many is the floor.
FORWARD_MEMORY_FACTOR = 4


def available_memory_bytes() -> int | None:
    """Memory this process can still take (MemAvailable, else free pages); None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_batch_memory(batch: int, sample_shape: Sequence[int], what: str = "a batch", factor: int = FORWARD_MEMORY_FACTOR,
                       itemsize: int = 4) -> None:
    """Refuse, before allocating, a float32 batch whose forward pass cannot fit in memory.

    The estimate is ``factor`` times the input batch (a lower bound: real networks need more),
    so only sizes that cannot possibly run are refused.
    """
    count = int(batch)
    for d in sample_shape:
        count *= int(d)
    needed = count * itemsize * factor
    available = available_memory_bytes()
    if available is not None and needed > available:
        shape = "x".join(str(int(d)) for d in (batch, *sample_shape))
        raise DataError(
            f"{what} of {shape} float32 needs at least {needed / 2**30:.1f} GiB but {available / 2**30:.1f} GiB are available: "
            "use a smaller batch size or input size"
        )
