"""Run a torch module (MaxQ, folded or fake-quantized network) behind the Runner interface."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from maxq_deploy.errors import BackendUnavailableError


def resolve_torch_device(device: str) -> torch.device:
    """``cpu``, ``cuda`` or ``cuda:N``, checked against what this machine has."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BackendUnavailableError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {device!r} requested but CUDA is not available here (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise BackendUnavailableError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return dev


class TorchRunner:
    """PyTorch eager inference on CPU or CUDA; float32 logits come back as numpy.

    ``threads`` sets torch's intra-op thread count, which is process-wide in PyTorch.
    ``model_kind``, ``num_classes`` and ``input_shape`` describe the model for eval (the
    eager networks take any input size, so ``input_shape`` only fixes the channels).
    """

    name = "torch"

    def __init__(
        self,
        module: nn.Module,
        device: str = "cpu",
        channels_last: bool = False,
        threads: int | None = None,
        *,
        model_kind: str = "torch-module",
        num_classes: int | None = None,
        arch: str | None = None,
    ):
        self._device = resolve_torch_device(device)
        self.device = self._device.type
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        self.channels_last = channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.eval().to(self._device, memory_format=memory_format)
        self.model_kind = model_kind
        self.num_classes = num_classes
        self.arch = arch
        self.input_shape: tuple[int | None, int | None, int | None] = (3, None, None)

    @torch.inference_mode()
    def run(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        x = torch.as_tensor(batch).to(self._device, torch.float32, non_blocking=False)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.module(x)
        return out.float().cpu().numpy()  # .cpu() synchronizes on CUDA

    def close(self) -> None:
        self.module = None  # type: ignore[assignment]
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def torch_runner_from_path(
    path: str | os.PathLike[str], device: str = "cpu", threads: int | None = None, channels_last: bool = False
) -> TorchRunner:
    """Any torch artifact of the pipeline (MaxQ, folded, quantized checkpoint) as a TorchRunner."""
    from maxq_deploy.models import load_torch_model

    resolve_torch_device(device)  # fail before loading the weights
    loaded = load_torch_model(path)
    return TorchRunner(
        loaded.module, device=device, channels_last=channels_last, threads=threads,
        model_kind=loaded.kind, num_classes=loaded.num_classes, arch=loaded.arch,
    )
