"""torch on CUDA in fp16/bf16 with the 2:4 layers as semi-structured sparse matmuls.

Which layers can run sparse, and the swap itself, are planned in :mod:`maxq_deploy.runtimes.semi_structured`;
this runner only applies the plan to a loaded model and runs it. A dense runner of the same
precision and layout is the baseline, so their ratio is the sparse gain.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from maxq_deploy.core.devices import resolve_device
from maxq_deploy.core.errors import MaxQDeployError
from maxq_deploy.load.torch_model import LoadedModel
from maxq_deploy.runtimes.base import ModelInfo, Runner
from maxq_deploy.runtimes.semi_structured import SPARSE_DTYPES, SparseConversionReport, check_sparse_device, sparsify_semi_structured_

_PRECISION = {torch.float16: "fp16", torch.bfloat16: "bf16"}


class SparseTorchRunner(Runner):
    """torch on CUDA in fp16/bf16, channels-last; ``sparse`` swaps the 2:4 layers for sparse matmuls."""

    def __init__(self, module: nn.Module, device: str = "cuda", dtype: torch.dtype = torch.float16,
                 sparse: bool = True, conv_kxk: str = "skip", *, model_kind: str = "folded-checkpoint",
                 num_classes: int | None = None, arch: str | None = None, path=None):
        self._device = resolve_device(device)
        if dtype not in SPARSE_DTYPES:
            raise MaxQDeployError(f"sparse torch runs in float16 or bfloat16, not {dtype}")
        if sparse:
            check_sparse_device(self._device)
        self.dtype = dtype
        self.module = module.eval().to(self._device, dtype, memory_format=torch.channels_last)
        self.report: SparseConversionReport | None = (
            sparsify_semi_structured_(self.module, dtype, conv_kxk) if sparse else None
        )
        precision = _PRECISION[dtype]
        self.info = ModelInfo(
            backend="torch", backend_version=torch.__version__, device=self._device.type, model_kind=model_kind,
            path=path, precision=precision, arch=arch, num_classes=num_classes,
            options={"layout": "channels-last", "variant": f"{precision}-sparse-2:4" if sparse else f"{precision}-dense",
                     "conv_kxk": conv_kxk},
        )

    @classmethod
    def from_loaded(cls, model: LoadedModel, device: str = "cuda", dtype: torch.dtype = torch.float16,
                    sparse: bool = True, conv_kxk: str = "skip", *, copy_module: bool = False) -> SparseTorchRunner:
        module = copy.deepcopy(model.module) if copy_module else model.module
        return cls(module, device, dtype, sparse, conv_kxk, model_kind=model.kind, num_classes=model.num_classes,
                   arch=model.arch, path=model.path)

    @torch.inference_mode()
    def run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self._device).to(self.dtype)
        out = self.module(x.contiguous(memory_format=torch.channels_last))
        return out.float().cpu().numpy()  # .cpu() waits for the GPU

    def close(self) -> None:
        self.module = None  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
