"""The CIFAR ResNets of MaxQ's CIFAR-100 scripts (``c_resnet18`` .. ``c_resnet152``).

Differences from the ImageNet ResNets (same block maths, other key names and head): a 3x3
stride-1 dense stem without max-pool, the projection shortcut at ``layerX.Y.shortcut.0`` (an
identity shortcut has no keys), and a head of ``F.avg_pool2d(out, 4)`` then ``fc``, a 1x1 conv
with bias, flattened. The fixed 4x4 pool ties the network to 32x32 inputs (see
:mod:`maxq_deploy.archs.catalog` for the sizes it runs at).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from maxq_deploy.archs.layers import LayerFactory
from maxq_deploy.archs.registry import register_variants
from maxq_deploy.archs.resnet import BasicBlock, Bottleneck, add_stages


class _CifarShortcut:
    """The ImageNet blocks' layers with upstream's CIFAR shortcut and functional ReLU (no ``relu`` module)."""

    def add_shortcut(self, f: LayerFactory, in_ch: int, out_ch: int, stride: int) -> None:
        """``nn.Sequential(conv-bn)`` where the shape changes (keys ``shortcut.0.*``), else an empty one."""
        changes = stride != 1 or in_ch != out_ch
        self.shortcut = nn.Sequential(f.sparse_conv_bn(in_ch, out_ch, 1, stride, 0)) if changes else nn.Sequential()


class CifarBasicBlock(_CifarShortcut, BasicBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.convbn1(x))
        out = self.convbn2(out)
        return F.relu(out + self.residual_quantizer(self.shortcut(x)))


class CifarBottleneck(_CifarShortcut, Bottleneck):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.convbn1(x))
        out = F.relu(self.convbn2(out))
        out = self.convbn3(out)
        return F.relu(out + self.residual_quantizer(self.shortcut(x)))


class CifarResNet(nn.Module):
    def __init__(self, f: LayerFactory, block: type, blocks: list[int], num_classes: int):
        super().__init__()
        self.conv1 = f.conv(3, 64, 3, 1, 1)
        self.bn1 = f.bn(64)
        in_ch = add_stages(self, f, block, blocks)
        self.fc = f.head_conv(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.fc(out).flatten(1)


#: name -> (block, blocks per stage), as upstream MaxQ's CIFAR-100 scripts build them.
VARIANTS: dict[str, tuple[type, list[int]]] = {
    "c_resnet18": (CifarBasicBlock, [2, 2, 2, 2]),
    "c_resnet34": (CifarBasicBlock, [3, 4, 6, 3]),
    "c_resnet50": (CifarBottleneck, [3, 4, 6, 3]),
    "c_resnet101": (CifarBottleneck, [3, 4, 23, 3]),
    "c_resnet152": (CifarBottleneck, [3, 8, 36, 3]),
}
register_variants(CifarResNet, VARIANTS)
