"""MobileNet V1 with MaxQ's key names: dense depthwise 3x3, sparse pointwise 1x1 conv-bn."""

from __future__ import annotations

import torch
from torch import nn

from maxq_deploy.archs.layers import LayerFactory
from maxq_deploy.archs.registry import register_arch

# (output channels, depthwise stride) of each depthwise-separable block.
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


class MobileNetV1(nn.Module):
    def __init__(self, f: LayerFactory, num_classes: int):
        super().__init__()
        self.conv1 = nn.Sequential(f.conv(3, 32, 3, 2, 1), f.bn(32), nn.ReLU(inplace=True))
        blocks, in_ch = [], 32
        for out_ch, stride in _BLOCKS:
            blocks.append(
                nn.Sequential(
                    f.conv(in_ch, in_ch, 3, stride, 1, groups=in_ch),
                    f.bn(in_ch),
                    nn.ReLU(inplace=True),
                    f.sparse_conv_bn(in_ch, out_ch, 1, 1, 0),
                    nn.ReLU(inplace=True),
                )
            )
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.conv1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_arch("mobilenet_v1")
def mobilenet_v1(f: LayerFactory, num_classes: int) -> nn.Module:
    return MobileNetV1(f, num_classes)
