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
