"""PyTorch eager inference of any torch artifact (MaxQ, folded or fake-quantized network).

The loader is :func:`maxq_deploy.load.torch_model.load_torch_model` (file -> ``LoadedModel``); the runner
only runs the module it is given, so bench can run one loaded model in several layouts.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maxq_deploy.core.devices import resolve_device
from maxq_deploy.core.errors import OptionError
from maxq_deploy.load.torch_model import LoadedModel
from maxq_deploy.runtimes.base import ModelInfo, Runner


def torch_precision(kind: str) -> str:
    return "int8" if kind == "quantized-checkpoint" else "fp32"


class TorchRunner(Runner):
    """Eager inference of a module on CPU or CUDA; float32 logits come back as numpy.

    ``threads`` sets torch's intra-op thread count, which is process-wide in PyTorch. The eager
    networks take any input size, so ``info.input_shape`` only fixes the channels. Build one
    from a loaded artifact with :meth:`from_loaded`.
    """

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
        path: Path | None = None,
        metadata: dict | None = None,
    ):
        self._device = resolve_device(device)
        if threads is not None:
            if threads < 1:
                raise OptionError(f"threads must be >= 1, got {threads}")
            torch.set_num_threads(threads)
        self.channels_last = channels_last
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.module = module.eval().to(self._device, memory_format=memory_format)
        self.info = ModelInfo(
            backend="torch",
            backend_version=torch.__version__,
            device=self._device.type,
            model_kind=model_kind,
            path=path,
            precision=torch_precision(model_kind),
            arch=arch,
            num_classes=num_classes,
            metadata={k: str(v) for k, v in (metadata or {}).items() if isinstance(v, (str, int, float))},
            options={"threads": threads, "layout": "channels-last" if channels_last else "nchw"},
        )

    @classmethod
    def from_loaded(
        cls, model: LoadedModel, device: str = "cpu", channels_last: bool = False, threads: int | None = None,
        *, copy_module: bool = False,
    ) -> TorchRunner:
        """A runner of a loaded artifact; ``copy_module`` runs a private copy (two layouts side by side)."""
        module = copy.deepcopy(model.module) if copy_module else model.module
        return cls(module, device, channels_last, threads, model_kind=model.kind, num_classes=model.num_classes,
                   arch=model.arch, path=model.path, metadata=model.meta)

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


def open_torch_runner(
    path: str | os.PathLike[str], device: str | None = "cpu", threads: int | None = None, channels_last: bool = False
) -> TorchRunner:
    """Any torch artifact of the pipeline (MaxQ, folded, quantized checkpoint) as a TorchRunner."""
    from maxq_deploy.load.torch_model import load_torch_model

    device = device or "cpu"
    resolve_device(device)  # fail before loading the weights
    return TorchRunner.from_loaded(load_torch_model(path), device=device, channels_last=channels_last, threads=threads)
