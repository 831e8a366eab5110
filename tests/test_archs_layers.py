"""The layers every architecture is written with: MaxQ's sparse conv-bn and the two layer factories."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from maxq_deploy.archs.layers import BN_EPS, FoldedLayers, LayerFactory, MaxQConvBN, MaxQLayers
from maxq_deploy.core.sparsity import check_pattern

#: The key layout MAXQ_FORMAT.md gives for one sparse layer.
MAXQ_KEYS = ["conv.weight", "mask", "scale.weight", "scale.bias", "scale.running_mean", "scale.running_var",
             "scale.num_batches_tracked"]


def _trained(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, seed: int = 0) -> MaxQConvBN:
    """A layer with random weights, BN statistics and a soft 2:4 mask (kept entries in [1, 3]) along C."""
    g = torch.Generator().manual_seed(seed)
    layer = MaxQConvBN(in_ch, out_ch, kernel, stride, padding)
    weight = torch.randn(out_ch, in_ch, kernel, kernel, generator=g)
    groups = weight.abs().permute(0, 2, 3, 1).reshape(-1, 4)  # MaxQ's grouping: 4 consecutive input channels
    keep = torch.zeros_like(groups).scatter_(1, groups.topk(2, dim=1).indices, 1.0)
    keep = keep.reshape(out_ch, kernel, kernel, in_ch).permute(0, 3, 1, 2)
    soft = 1 + 2 * torch.rand(weight.shape, generator=g)
    layer.load_state_dict({
        "conv.weight": weight, "mask": keep * soft,
        "scale.weight": torch.rand(out_ch, generator=g) + 0.5, "scale.bias": torch.randn(out_ch, generator=g),
        "scale.running_mean": torch.randn(out_ch, generator=g), "scale.running_var": torch.rand(out_ch, generator=g) + 0.1,
        "scale.num_batches_tracked": torch.tensor(100),
    }, strict=True)
    return layer.eval()


def test_sparse_layer_has_maxq_key_layout():
    layer = MaxQConvBN(8, 16, 3, 2, 1)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert sorted(shapes) == sorted(MAXQ_KEYS)
    assert shapes["conv.weight"] == shapes["mask"] == (16, 8, 3, 3)  # [K, C, R, S]
    assert shapes["scale.weight"] == shapes["scale.running_var"] == (16,) and shapes["scale.num_batches_tracked"] == ()
    assert layer.conv.bias is None and layer.scale.eps == BN_EPS == 1e-5
    assert "mask" not in dict(layer.named_parameters())  # a buffer: training never moves it
    assert torch.equal(layer.mask, torch.ones(16, 8, 3, 3))  # until a checkpoint's mask is loaded


def test_forward_is_batchnorm_of_conv_with_masked_weight():
    """``y = BN(conv2d(x, W * mask))`` in eval mode, computed here by hand."""
    layer = _trained(8, 6, 3, stride=2, padding=1)
    x = torch.randn(2, 8, 9, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = layer(x)
    sd = layer.state_dict()
    conv = F.conv2d(x, sd["conv.weight"] * sd["mask"], None, stride=2, padding=1)
    col = (-1, 1, 1)
    expected = ((conv - sd["scale.running_mean"].view(col)) / torch.sqrt(sd["scale.running_var"].view(col) + 1e-5)
                * sd["scale.weight"].view(col) + sd["scale.bias"].view(col))
    assert out.shape == (2, 6, 5, 5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # the soft mask scales the kept weights (values in [1, 3]): a 0/1 mask gives another output
    binary = F.conv2d(x, sd["conv.weight"] * (sd["mask"] > 0), None, stride=2, padding=1)
    assert not torch.allclose(conv, binary, atol=1e-3)


def test_pruned_weights_never_reach_the_output():
    layer = _trained(8, 4, 3, padding=1)
    x = torch.randn(1, 8, 5, 5, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = layer(x)
        layer.conv.weight[layer.mask == 0] = 1e6
        assert torch.equal(layer(x), before)
        layer.conv.weight[layer.mask != 0] += 1.0
        assert not torch.allclose(layer(x), before)
    assert check_pattern(layer.conv.weight * layer.mask, "2:4", axis=1).holds


def test_the_mask_groups_input_channels():
    """N:M groups run along C (axis 1 of [K, C, R, S]): a pruned input channel does not reach that output channel."""
    layer = MaxQConvBN(8, 2, 1).eval()
    mask = torch.zeros(2, 8, 1, 1)
    mask[0, [0, 1, 4, 5]] = 1  # output 0 keeps channels 0, 1 of the first group of 4 and 4, 5 of the second
    mask[1, [2, 3, 6, 7]] = 1
    layer.mask.copy_(mask)
    x = torch.randn(1, 8, 3, 3, generator=torch.Generator().manual_seed(3))
    bumped = x.clone()
    bumped[:, 2] += 5.0  # channel 2: pruned for output 0, kept for output 1
    with torch.no_grad():
        a, b = layer(x), layer(bumped)
    assert torch.equal(a[:, 0], b[:, 0])
    assert not torch.allclose(a[:, 1], b[:, 1])
    assert check_pattern(mask, "2:4", axis=1).holds


def test_built_on_the_meta_device_the_mask_is_there_too():
    with torch.device("meta"):
        layer = MaxQConvBN(16, 32, 1)
    assert layer.mask.device.type == "meta" and layer.mask.shape == (32, 16, 1, 1)
    assert layer(torch.empty(3, 16, 7, 7, device="meta")).shape == (3, 32, 7, 7)


def test_folded_form_reproduces_the_trained_layer():
    """``W' = (W * mask) * g``, ``b' = beta - mean * g`` with ``g = gamma / sqrt(var + eps)`` (MAXQ_FORMAT.md)."""
    trained = _trained(8, 12, 3, stride=2, padding=1, seed=4)
    sd = trained.state_dict()
    g = sd["scale.weight"] / torch.sqrt(sd["scale.running_var"] + BN_EPS)
    folded = FoldedLayers().sparse_conv_bn(8, 12, 3, 2, 1)
    folded.load_state_dict({"weight": sd["conv.weight"] * sd["mask"] * g.view(-1, 1, 1, 1),
                            "bias": sd["scale.bias"] - sd["scale.running_mean"] * g}, strict=True)
    x = torch.randn(2, 8, 11, 11, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(folded(x), trained(x), rtol=1e-5, atol=1e-5)
    assert check_pattern(folded.weight, "2:4", axis=1).holds  # folding keeps every zero


def test_trained_form_factory():
    f = MaxQLayers()
    sparse = f.sparse_conv_bn(16, 32, 3, 2, 1)
    assert isinstance(sparse, MaxQConvBN)
    assert (sparse.conv.kernel_size, sparse.conv.stride, sparse.conv.padding) == ((3, 3), (2, 2), (1, 1))
    dense = f.conv(32, 32, 3, 1, 1, groups=32)
    assert isinstance(dense, nn.Conv2d) and dense.bias is None and dense.groups == 32
    assert dense.weight.shape == (32, 1, 3, 3)
    bn = f.bn(32)
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == 32 and bn.eps == 1e-5


def test_deploy_form_factory():
    f = FoldedLayers()
    sparse = f.sparse_conv_bn(16, 32, 1, 2, 0)
    assert type(sparse) is nn.Conv2d and sparse.bias.shape == (32,) and sparse.stride == (2, 2)
    assert list(sparse.state_dict()) == ["weight", "bias"]
    dense = f.conv(8, 8, 3, 2, 1, groups=8)
    assert dense.bias is not None and dense.groups == 8 and dense.weight.shape == (8, 1, 3, 3)
    assert isinstance(f.bn(8), nn.Identity) and list(f.bn(8).state_dict()) == []


@pytest.mark.parametrize("factory", [LayerFactory(), MaxQLayers(), FoldedLayers()])
def test_head_and_residual_are_the_same_in_every_form(factory):
    head = factory.head_conv(512, 100)
    assert type(head) is nn.Conv2d and head.kernel_size == (1, 1) and head.weight.shape == (100, 512, 1, 1)
    assert head.bias.shape == (100,)
    assert isinstance(factory.residual_quantizer(), nn.Identity)


@pytest.mark.parametrize("ask", [
    lambda f: f.sparse_conv_bn(4, 4, 1), lambda f: f.conv(4, 4, 1), lambda f: f.bn(4),
])
def test_the_base_factory_leaves_the_layers_to_its_forms(ask):
    with pytest.raises(NotImplementedError):
        ask(LayerFactory())
