"""TorchRunner: a module runs to float32 numpy; CUDA is refused where there is none."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

from maxq_deploy.core.errors import BackendUnavailableError
from maxq_deploy.runtimes import Runner, TorchRunner
from runtimes_fixtures import batch


def test_torch_runner_runs_a_module_to_float32_numpy() -> None:
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    runner = TorchRunner(module, num_classes=5)
    assert isinstance(runner, Runner) and runner.name == "torch" and runner.device == "cpu"
    x = batch(3, 8)
    out = runner.run(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 5)
    np.testing.assert_allclose(out, module(torch.from_numpy(x)).detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(TorchRunner(module, channels_last=True).run(x), out, rtol=1e-5, atol=1e-5)
    runner.close()


def test_torch_runner_refuses_cuda_where_there_is_none() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BackendUnavailableError, match="CUDA is not available"):
        TorchRunner(nn.Identity(), device="cuda")
