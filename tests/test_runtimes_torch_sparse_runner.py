"""SparseTorchRunner: fp16/bf16 only; the sparse variant needs a CUDA GPU (one-line error elsewhere); on a GPU it agrees with dense."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from maxq_deploy.core.errors import BackendUnavailableError, MaxQDeployError
from maxq_deploy.runtimes.torch_sparse_runner import SparseTorchRunner


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 1), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, 10))


def test_float32_is_refused() -> None:
    with pytest.raises(MaxQDeployError, match="sparse torch runs in float16 or bfloat16, not torch.float32"):
        SparseTorchRunner(_net(), device="cpu", dtype=torch.float32)


def test_sparse_on_a_cpu_is_one_line_asking_for_cuda() -> None:
    with pytest.raises(BackendUnavailableError) as info:
        SparseTorchRunner(_net(), device="cpu", dtype=torch.float16)
    assert str(info.value) == "2:4 semi-structured sparse matmuls need a CUDA GPU (use --device cuda)"


def test_dense_variant_records_its_precision_and_matches_fp32() -> None:
    net = _net()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8), dtype=np.float32)
    with torch.no_grad():
        reference = net(torch.from_numpy(x)).numpy()
    with SparseTorchRunner(_net(), device="cpu", dtype=torch.bfloat16, sparse=False) as runner:
        assert runner.report is None
        assert runner.info.precision == "bf16" and runner.info.options["variant"] == "bf16-dense"
        out = runner.run(x)
    assert out.dtype == np.float32 and out.shape == (2, 10)
    assert np.abs(out - reference).max() <= 0.05 * np.abs(reference).max()
