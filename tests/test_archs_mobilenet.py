"""MobileNet V1 as MaxQ trains it: dense depthwise 3x3 convs, sparse pointwise 1x1 conv-bn layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from maxq_deploy.archs.layers import MaxQConvBN
from maxq_deploy.archs.registry import build_model

#: (output channels, depthwise stride) per block, as MAXQ_FORMAT.md lists them:
#: 64, 128/2, 128, 256/2, 256, 512/2, 512 x5, 1024/2, 1024.
WIDTHS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
#: Learnable parameters of MobileNet V1 with BatchNorm at 1000 classes (the paper's 4.2 million).
PARAMETERS_1000 = 4_231_976


def _in_out() -> list[tuple[int, int, int]]:
    """(input channels, output channels, stride) of each block."""
    ins = [32] + [w for w, _ in WIDTHS[:-1]]
    return [(i, o, s) for i, (o, s) in zip(ins, WIDTHS)]


def test_thirteen_blocks_with_the_upstream_widths_and_strides():
    model = build_model("mobilenet_v1", 10, device="meta")
    assert len(model.features) == 13
    for block, (in_ch, out_ch, stride) in zip(model.features, _in_out()):
        depthwise, bn, relu1, pointwise, relu2 = block
        assert type(depthwise) is nn.Conv2d and depthwise.groups == depthwise.in_channels == depthwise.out_channels == in_ch
        assert (depthwise.kernel_size, depthwise.stride, depthwise.padding) == ((3, 3), (stride, stride), (1, 1))
        assert depthwise.weight.shape == (in_ch, 1, 3, 3) and depthwise.bias is None
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == in_ch
        assert isinstance(pointwise, MaxQConvBN) and pointwise.conv.weight.shape == (out_ch, in_ch, 1, 1)
        assert pointwise.conv.stride == (1, 1)
        assert isinstance(relu1, nn.ReLU) and isinstance(relu2, nn.ReLU)


def test_only_the_pointwise_convs_are_sparse_and_every_one_can_hold_2_4():
    shapes = build_model("mobilenet_v1", 10, device="meta").state_dict()
    masks = sorted(k for k in shapes if k.endswith("mask"))
    assert masks == sorted(f"features.{i}.3.mask" for i in range(13))
    assert not any(k.startswith(("conv1.", "fc.")) and "mask" in k for k in shapes)
    assert all(shapes[k].shape[1] % 16 == 0 for k in masks)  # C % M == 0 for every M MaxQ trains (4, 8, 16)


def test_stem_and_head():
    model = build_model("mobilenet_v1", 7, device="meta")
    stem, bn, relu = model.conv1
    assert (stem.in_channels, stem.out_channels, stem.kernel_size, stem.stride, stem.padding) == (3, 32, (3, 3), (2, 2), (1, 1))
    assert stem.bias is None and bn.num_features == 32 and isinstance(relu, nn.ReLU)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and (model.fc.in_features, model.fc.out_features) == (1024, 7)


def test_parameter_count_by_hand():
    per_block = sum(i * 9 + 2 * i + i * o + 2 * o for i, o, _ in _in_out())  # depthwise + BN, pointwise + BN
    expected = 3 * 32 * 9 + 2 * 32 + per_block + 1024 * 1000 + 1000
    assert expected == PARAMETERS_1000
    maxq = build_model("mobilenet_v1", 1000, device="meta")
    assert sum(p.numel() for p in maxq.parameters()) == PARAMETERS_1000
    folded = build_model("mobilenet_v1", 1000, "folded", device="meta")
    bn_channels = 32 + sum(i + o for i, o, _ in _in_out())  # gamma and beta become one bias per channel
    assert sum(p.numel() for p in folded.parameters()) == PARAMETERS_1000 - bn_channels


def test_feature_maps_at_64x64_downsample_by_32():
    model = build_model("mobilenet_v1", 10, device="meta")
    seen = []
    for block in model.features:
        block.register_forward_hook(lambda m, i, out: seen.append(tuple(out.shape[1:])))
    out = model(torch.empty(2, 3, 64, 64, device="meta"))
    side, expected = 32, []  # the stem halves 64
    for width, stride in WIDTHS:
        side //= stride
        expected.append((width, side, side))
    assert seen == expected and seen[-1] == (1024, 2, 2)
    assert out.shape == (2, 10)


def test_a_folded_block_by_hand():
    """``relu(pointwise(relu(depthwise(x))))``; a depthwise output channel sees only its own input channel."""
    torch.manual_seed(0)
    block = build_model("mobilenet_v1", 10, "folded").features[1]  # 64 -> 128, stride 2
    depthwise, pointwise = block[0], block[3]
    x = torch.randn(2, 64, 8, 8)
    hidden = F.relu(F.conv2d(x, depthwise.weight, depthwise.bias, 2, 1, groups=64))
    expected = F.relu(F.conv2d(hidden, pointwise.weight, pointwise.bias))
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
        bumped = x.clone()
        bumped[:, 5] += 3.0
        changed = (depthwise(bumped) != depthwise(x)).flatten(2).any(-1).any(0)
    assert changed.nonzero().flatten().tolist() == [5]


@pytest.mark.parametrize("size", [32, 96])
def test_any_size_from_32_gives_one_prediction_per_image(size):
    out = build_model("mobilenet_v1", 3, "folded", device="meta")(torch.empty(1, 3, size, size, device="meta"))
    assert out.shape == (1, 3)
