"""The 2:4 semi-structured plan (pure, no CUDA): which Conv2d/Linear layers run as sparse matmuls, and why the rest stay dense."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maxq_deploy.core.errors import MaxQDeployError
from maxq_deploy.core.sparsity import project_to_pattern
from maxq_deploy.runtimes.semi_structured import decide_layer, plan_sparse_layers, weight_matrix


def _two_four(module: nn.Module) -> nn.Module:
    """Project the weight to 2:4 along the reduction axis (C of [K, C, R, S] with C fastest, in of [out, in])."""
    with torch.no_grad():
        matrix = project_to_pattern(weight_matrix(module), "2:4", axis=1)
        if isinstance(module, nn.Conv2d):
            k, c, r, s = module.weight.shape
            matrix = matrix.reshape(k, r, s, c).permute(0, 3, 1, 2)
        module.weight.copy_(matrix)
    return module


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.pw = _two_four(nn.Conv2d(64, 64, 1, bias=False))  # 2:4, 64x64: sparse
        self.k3 = _two_four(nn.Conv2d(64, 64, 3, padding=1, bias=False))  # KxK: dense unless im2col
        self.dw = nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False)  # depthwise: never
        self.dense = nn.Linear(64, 32)  # not 2:4
        self.small = _two_four(nn.Linear(16, 8))  # 2:4 but below the kernel's 32x64


def test_weight_matrix_orders_conv_reduction_as_r_s_c() -> None:
    conv = nn.Conv2d(2, 3, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(24, dtype=torch.float32).reshape(3, 2, 2, 2))
    m = weight_matrix(conv)
    assert m.shape == (3, 8)
    # row 0: (r, s, c) with c fastest: w[0, c, r, s] for r, s in (0,0),(0,1),(1,0),(1,1)
    assert m[0].tolist() == [0.0, 4.0, 1.0, 5.0, 2.0, 6.0, 3.0, 7.0]


def test_plan_decides_each_layer_with_its_reason() -> None:
    report = plan_sparse_layers(_Net(), torch.float16)
    by_name = {d.name: d for d in report.layers}
    assert set(by_name) == {"pw", "k3", "dw", "dense", "small"}
    assert by_name["pw"].sparse and by_name["pw"].matrix == [64, 64] and by_name["pw"].op == "conv1x1"
    assert {n: d.category for n, d in by_name.items() if not d.sparse} == {
        "k3": "kxk", "dw": "grouped", "dense": "not-2:4", "small": "shape"}
    assert report.reasons() == {"kxk": 1, "grouped": 1, "not-2:4": 1, "shape": 1}
    assert report.summary().startswith("1 of 5 layers run 2:4 semi-structured sparse (float16, plan); dense: ")
    assert report.to_dict()["sparse_layers"] == 1


def test_im2col_makes_a_2_4_kxk_conv_sparse_and_float32_is_never_sparse() -> None:
    net = _Net()
    assert decide_layer("k3", net.k3, torch.float16, conv_kxk="im2col").matrix == [64, 576]
    assert decide_layer("k3", net.k3, torch.float16, conv_kxk="im2col").sparse
    fp32 = plan_sparse_layers(net, torch.float32)
    assert not fp32.converted and fp32.reasons() == {"dtype": 5}
    assert decide_layer("bn", nn.BatchNorm2d(4), torch.float16) is None


def test_unknown_kxk_mode_is_refused() -> None:
    with pytest.raises(MaxQDeployError, match="conv_kxk must be one of skip, im2col, got 'unfold'"):
        plan_sparse_layers(_Net(), conv_kxk="unfold")
