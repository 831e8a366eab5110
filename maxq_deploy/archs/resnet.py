"""ResNet-18/34/50 with MaxQ's key names (``convbn1``, ``downsample`` as a conv-bn module)."""

from __future__ import annotations

import torch
from torch import nn

from maxq_deploy.archs.layers import LayerFactory
from maxq_deploy.archs.registry import register_variants


class _Block(nn.Module):
    def add_shortcut(self, f: LayerFactory, in_ch: int, out_ch: int, stride: int) -> None:
        """``relu`` and ``downsample`` (a conv-bn where the shape changes, else None); the CIFAR blocks
        (:mod:`maxq_deploy.archs.cifar_resnet`) are these blocks with their own shortcut."""
        self.relu = nn.ReLU(inplace=True)
        self.downsample = f.sparse_conv_bn(in_ch, out_ch, 1, stride, 0) if stride != 1 or in_ch != out_ch else None


class BasicBlock(_Block):
    expansion = 1

    def __init__(self, f: LayerFactory, in_ch: int, width: int, stride: int):
        super().__init__()
        self.convbn1 = f.sparse_conv_bn(in_ch, width, 3, stride, 1)
        self.convbn2 = f.sparse_conv_bn(width, width, 3, 1, 1)
        self.add_shortcut(f, in_ch, width * self.expansion, stride)
        self.residual_quantizer = f.residual_quantizer()  # INT8 residual input, so Conv+Add fuses in TensorRT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.convbn1(x))
        out = self.convbn2(out)
        return self.relu(out + self.residual_quantizer(identity))


class Bottleneck(_Block):
    expansion = 4

    def __init__(self, f: LayerFactory, in_ch: int, width: int, stride: int):
        super().__init__()
        out_ch = width * self.expansion
        self.convbn1 = f.sparse_conv_bn(in_ch, width, 1, 1, 0)
        self.convbn2 = f.sparse_conv_bn(width, width, 3, stride, 1)
        self.convbn3 = f.sparse_conv_bn(width, out_ch, 1, 1, 0)
        self.add_shortcut(f, in_ch, out_ch, stride)
        self.residual_quantizer = f.residual_quantizer()  # INT8 residual input, so Conv+Add fuses in TensorRT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.convbn1(x))
        out = self.relu(self.convbn2(out))
        out = self.convbn3(out)
        return self.relu(out + self.residual_quantizer(identity))


def add_stages(model: nn.Module, f: LayerFactory, block: type, blocks: list[int], in_ch: int = 64) -> int:
    """``layer1``..``layer4`` of a ResNet (widths 64..512, stride 2 from the second stage on) on
    ``model``; returns the channels the last stage puts out. Shared by the ImageNet and CIFAR nets."""
    for i, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512)), start=1):
        stride = 1 if i == 1 else 2
        layers = []
        for b in range(count):
            layers.append(block(f, in_ch, width, stride if b == 0 else 1))
            in_ch = width * block.expansion
        setattr(model, f"layer{i}", nn.Sequential(*layers))
    return in_ch


class ResNet(nn.Module):
    def __init__(self, f: LayerFactory, block: type, blocks: list[int], num_classes: int):
        super().__init__()
        self.conv1 = f.conv(3, 64, 7, 2, 3)
        self.bn1 = f.bn(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = add_stages(self, f, block, blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


#: name -> (block, blocks per stage), torchvision's layouts.
VARIANTS: dict[str, tuple[type, list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}
register_variants(ResNet, VARIANTS)
