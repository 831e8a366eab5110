"""ResNet-18/34/50 as MaxQ trains them: torchvision's layouts under MaxQ's key names."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from maxq_deploy.archs.catalog import ARCHS
from maxq_deploy.archs.layers import FoldedLayers, MaxQConvBN, MaxQLayers
from maxq_deploy.archs.registry import build_model
from maxq_deploy.archs.resnet import VARIANTS, BasicBlock, Bottleneck, add_stages

#: Learnable parameters of torchvision's resnet18/34/50 (1000 classes); the trained form has exactly these
#: (masks and BN statistics are buffers).
TORCHVISION_PARAMETERS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


def _shapes_of(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape of each named submodule for input ``x``."""
    seen: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    for name in names:
        modules[name].register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, tuple(out.shape)))
    model(x)
    return seen


def _conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)


@pytest.mark.parametrize("arch", sorted(TORCHVISION_PARAMETERS))
def test_parameter_counts_are_torchvisions(arch):
    maxq = build_model(arch, 1000, "maxq", device="meta")
    assert sum(p.numel() for p in maxq.parameters()) == TORCHVISION_PARAMETERS[arch]
    # folded: each BatchNorm's gamma and beta become one conv bias per channel
    bn_channels = sum(m.num_features for m in maxq.modules() if isinstance(m, nn.BatchNorm2d))
    folded = build_model(arch, 1000, "folded", device="meta")
    assert sum(p.numel() for p in folded.parameters()) == TORCHVISION_PARAMETERS[arch] - bn_channels


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_blocks_per_stage_are_the_catalogs(arch):
    model = build_model(arch, 10, device="meta")
    block, counts = VARIANTS[arch]
    stages = [getattr(model, f"layer{i}") for i in range(1, 5)]
    assert [len(s) for s in stages] == counts
    assert all(type(b) is block for s in stages for b in s)
    assert ARCHS[arch].blocks == f"{block.__name__} {counts}"


def test_resnet50_bottleneck_shapes_at_64x64():
    model = build_model("resnet50", 10, device="meta")
    names = ["conv1", "maxpool", "layer1", "layer2.0.convbn1", "layer2.0.convbn2", "layer2.0.convbn3",
             "layer2.0.downsample", "layer2", "layer3", "layer4", "avgpool", "fc"]
    shapes = _shapes_of(model, names, torch.empty(2, 3, 64, 64, device="meta"))
    assert shapes == {
        "conv1": (2, 64, 32, 32), "maxpool": (2, 64, 16, 16), "layer1": (2, 256, 16, 16),
        "layer2.0.convbn1": (2, 128, 16, 16),  # 1x1 reduce, stride 1
        "layer2.0.convbn2": (2, 128, 8, 8),  # the stride sits on the 3x3
        "layer2.0.convbn3": (2, 512, 8, 8), "layer2.0.downsample": (2, 512, 8, 8),  # expansion 4
        "layer2": (2, 512, 8, 8), "layer3": (2, 1024, 4, 4), "layer4": (2, 2048, 2, 2),
        "avgpool": (2, 2048, 1, 1), "fc": (2, 10),
    }


def test_stem_is_a_7x7_stride_2_conv_and_a_max_pool():
    model = build_model("resnet18", 10, device="meta")
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((7, 7), (2, 2), (3, 3))
    assert model.conv1.bias is None and model.bn1.eps == 1e-5
    assert (model.maxpool.kernel_size, model.maxpool.stride, model.maxpool.padding) == (3, 2, 1)
    assert isinstance(model.fc, nn.Linear) and model.fc.in_features == 512


@pytest.mark.parametrize("arch, where", [
    ("resnet18", {"layer2.0": 2, "layer3.0": 2, "layer4.0": 2}),
    ("resnet34", {"layer2.0": 2, "layer3.0": 2, "layer4.0": 2}),
    ("resnet50", {"layer1.0": 1, "layer2.0": 2, "layer3.0": 2, "layer4.0": 2}),  # 64 -> 256 already in layer1
])
def test_a_sparse_downsample_only_where_the_shape_changes(arch, where):
    model = build_model(arch, 10, device="meta")
    found = {name: block.downsample.conv.stride[0] for name, block in model.named_modules()
             if isinstance(block, (BasicBlock, Bottleneck)) and block.downsample is not None}
    assert found == where
    for name in where:
        downsample = model.get_submodule(name).downsample
        assert isinstance(downsample, MaxQConvBN) and downsample.conv.kernel_size == (1, 1)


@pytest.mark.parametrize("block, in_ch, width, stride", [
    (BasicBlock, 8, 16, 2), (BasicBlock, 16, 16, 1), (Bottleneck, 8, 4, 2), (Bottleneck, 16, 4, 1),
])
def test_block_forward_by_hand(block, in_ch, width, stride):
    """Folded form: ``relu(convs(x) + shortcut(x))``, ReLU between the convs, the stride on the 3x3."""
    torch.manual_seed(0)
    b = block(FoldedLayers(), in_ch, width, stride).eval()
    x = torch.randn(2, in_ch, 8, 8)
    main = F.relu(_conv(x, b.convbn1))
    if block is Bottleneck:
        assert (b.convbn1.kernel_size, b.convbn2.stride, b.convbn3.out_channels) == ((1, 1), (stride, stride), 4 * width)
        main = F.relu(_conv(main, b.convbn2))
        main = _conv(main, b.convbn3)
    else:
        main = _conv(main, b.convbn2)
    shortcut = x if b.downsample is None else _conv(x, b.downsample)
    assert (b.downsample is None) == (stride == 1 and in_ch == width * block.expansion)
    with torch.no_grad():
        out = b(x)
    assert out.shape == (2, width * block.expansion, 8 // stride, 8 // stride)
    torch.testing.assert_close(out, F.relu(main + shortcut), rtol=1e-5, atol=1e-5)


class _Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class _ZeroedIdentity(FoldedLayers):
    """The INT8 form puts a quantizer here; a zeroing one shows which branch it sits on."""

    def residual_quantizer(self) -> nn.Module:
        return _Scale(0.0)


@pytest.mark.parametrize("block, in_ch, width, stride", [(BasicBlock, 16, 16, 1), (Bottleneck, 8, 4, 2)])
def test_the_residual_quantizer_sits_on_the_shortcut_branch(block, in_ch, width, stride):
    torch.manual_seed(1)
    plain = block(FoldedLayers(), in_ch, width, stride).eval()
    zeroed = block(_ZeroedIdentity(), in_ch, width, stride).eval()
    zeroed.load_state_dict(plain.state_dict())
    x = torch.randn(1, in_ch, 8, 8)
    with torch.no_grad():
        main = plain.convbn2(F.relu(plain.convbn1(x)))
        if block is Bottleneck:
            main = plain.convbn3(F.relu(main))
        torch.testing.assert_close(zeroed(x), F.relu(main))
        assert not torch.allclose(plain(x), zeroed(x))


@pytest.mark.parametrize("block, last", [(BasicBlock, 512), (Bottleneck, 2048)])
def test_add_stages_builds_four_stages_and_returns_the_last_width(block, last):
    holder = nn.Module()
    with torch.device("meta"):
        out = add_stages(holder, MaxQLayers(), block, [1, 2, 1, 1])
    assert out == last
    assert [len(getattr(holder, f"layer{i}")) for i in range(1, 5)] == [1, 2, 1, 1]
    firsts = [getattr(holder, f"layer{i}")[0] for i in range(1, 5)]
    assert [f.convbn1.conv.in_channels for f in firsts] == [64] + [w * block.expansion for w in (64, 128, 256)]
    assert holder.layer2[1].downsample is None  # only the first block of a stage changes the shape
