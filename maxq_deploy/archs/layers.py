"""Building blocks shared by every architecture, in the two forms the toolchain needs.

An architecture is written once against a :class:`LayerFactory`. ``MaxQLayers`` builds the
network as MaxQ trained it (sparse conv-bn modules holding ``conv``, ``mask`` and ``scale``, so
a MaxQ state dict loads as is); ``FoldedLayers`` builds the deploy form, where every conv has a
bias and every BatchNorm is gone, so a folded state dict loads as is.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

BN_EPS = 1e-5


class MaxQConvBN(nn.Module):
    """Eval-mode MaxQ sparse layer: ``BN(conv2d(x, W * mask))``.

    The key layout (``conv.weight``, ``mask``, ``scale.*``) is the one every MaxQ layer type
    shares, so one module reads them all. The mask is the one stored in the checkpoint.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False)
        weight = self.conv.weight
        # torch.ones, not ones_like: on the meta device (state_dict_shapes) ones_like goes through
        # torch._refs, whose first call imports sympy and costs ~0.7 s in every CLI process
        self.register_buffer("mask", torch.ones(weight.shape, dtype=weight.dtype, device=weight.device))
        self.scale = nn.BatchNorm2d(out_ch, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        y = F.conv2d(x, conv.weight * self.mask, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        return self.scale(y)


class LayerFactory:
    """What an architecture asks for; subclasses decide the concrete modules."""

    def sparse_conv_bn(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Module:
        raise NotImplementedError

    def conv(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, groups: int = 1) -> nn.Module:
        """A dense conv that a BatchNorm from :meth:`bn` follows."""
        raise NotImplementedError

    def bn(self, channels: int) -> nn.Module:
        raise NotImplementedError

    def head_conv(self, in_ch: int, out_ch: int) -> nn.Module:
        """A 1x1 conv classifier with bias and no BatchNorm (the CIFAR ResNets' ``fc``), same in every form."""
        return nn.Conv2d(in_ch, out_ch, 1, bias=True)

    def residual_quantizer(self) -> nn.Module:
        """Applied to the identity branch of a residual Add; a quantizer in the INT8 form (no state here)."""
        return nn.Identity()


class MaxQLayers(LayerFactory):
    """The trained form: MaxQ sparse conv-bn modules, dense convs without bias, BatchNorms."""

    def sparse_conv_bn(self, in_ch, out_ch, kernel, stride=1, padding=0):
        return MaxQConvBN(in_ch, out_ch, kernel, stride, padding)

    def conv(self, in_ch, out_ch, kernel, stride=1, padding=0, groups=1):
        return nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=False)

    def bn(self, channels):
        return nn.BatchNorm2d(channels, eps=BN_EPS)


class FoldedLayers(LayerFactory):
    """The deploy form: every conv carries the folded BatchNorm as its bias."""

    def sparse_conv_bn(self, in_ch, out_ch, kernel, stride=1, padding=0):
        return nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=True)

    def conv(self, in_ch, out_ch, kernel, stride=1, padding=0, groups=1):
        return nn.Conv2d(in_ch, out_ch, kernel, stride, padding, groups=groups, bias=True)

    def bn(self, channels):
        return nn.Identity()
