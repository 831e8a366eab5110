"""One place that turns a ``--device`` string into a torch device, checked against this machine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from maxq_deploy.core.errors import BackendUnavailableError

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "cpu, cuda or cuda:N"


def resolve_device(device: str | None) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``; None means cuda where available, else cpu.

    An unknown name, a device type other than cpu/cuda, or cuda on a machine without it is a
    one-line :class:`BackendUnavailableError`.
    """
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device).strip())
    except (RuntimeError, ValueError, TypeError):
        raise BackendUnavailableError(f"unknown --device {device!r}; use {DEVICE_HELP}") from None
    if dev.type not in ("cpu", "cuda"):
        raise BackendUnavailableError(f"unsupported --device {device!r}; use {DEVICE_HELP}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"device {device!r} requested but CUDA is not available here (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendUnavailableError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's share), at least 1."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_threads(threads: int | None, option: str = "--threads") -> int | None:
    """Refuse a thread count below 1 or above the CPUs this process may use (thousands of threads on
    2 cores make the machine unusable and the run unmeasurable); None (the runtime's default) passes."""
    from maxq_deploy.core.errors import OptionError

    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise OptionError(f"{option} must be a whole number >= 1, got {threads!r}")
    cpus = usable_cpus()
    if threads > cpus:
        raise OptionError(f"{option} {threads} is more than the {cpus} CPU(s) this process may use: refused; pass at most {cpus}")
    return threads
