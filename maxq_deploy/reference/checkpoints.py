"""Make MaxQ checkpoints in the upstream layout with the reference layers."""

from __future__ import annotations

import os
from collections import OrderedDict

import torch
from torch import nn

from maxq_deploy.archs.layers import MaxQLayers
from maxq_deploy.archs import model_entrypoint, normalize_arch
from maxq_deploy.core.files import atomic_output
from maxq_deploy.reference.layers import ReferenceMaxQConvBN
from maxq_deploy.core.sparsity import NMPattern


class ReferenceLayers(MaxQLayers):
    """Trained-form factory whose sparse layers are trainable reference MaxQ layers."""

    def __init__(self, layer_type: str, n: int, m: int):
        self.layer_type, self.n, self.m = layer_type, n, m

    def sparse_conv_bn(self, in_ch, out_ch, kernel, stride=1, padding=0):
        return ReferenceMaxQConvBN(in_ch, out_ch, kernel, stride, padding, layer_type=self.layer_type, n=self.n, m=self.m)


def build_reference_model(arch: str, num_classes: int, nm: str = "2:4", layer_type: str = "SoftMaxQConv2DBNV2Pro") -> nn.Module:
    """An untrained MaxQ network of ``arch`` made of reference layers (train mode)."""
    pattern = NMPattern.parse(nm)
    return model_entrypoint(arch)(ReferenceLayers(layer_type, pattern.n, pattern.m), num_classes)


def sparse_layers(model: nn.Module) -> list[ReferenceMaxQConvBN]:
    return [mod for mod in model.modules() if isinstance(mod, ReferenceMaxQConvBN)]


@torch.no_grad()
def set_preserve_rate(model: nn.Module, rate: float, seed: int = 0) -> None:
    """Recompute every reference layer's mask with ``rate`` of its groups still dense."""
    generator = torch.Generator().manual_seed(seed)
    for layer in sparse_layers(model):
        layer.update_mask(rate, generator)


@torch.no_grad()
def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics, so folding is tested for real."""
    generator = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.weight.copy_(0.5 + torch.rand(c, generator=generator))
            mod.bias.copy_(0.1 * torch.randn(c, generator=generator))
            mod.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
            mod.running_var.copy_(0.5 + torch.rand(c, generator=generator))
            mod.num_batches_tracked.fill_(100)


def make_checkpoint(
    arch: str = "resnet18",
    nm: str = "2:4",
    layer_type: str = "SoftMaxQConv2DBNV2Pro",
    num_classes: int = 10,
    *,
    rate: float = 0.0,
    prefix: str = "",
    layout: str = "training",
    seed: int = 0,
    model: nn.Module | None = None,
    epoch: int = 120,
) -> dict:
    """A checkpoint as MaxQ's training script writes it.

    ``layout``: "training" (epoch/arch/state_dict/best_acc1/optimizer), "state_dict" (only the
    "state_dict" entry) or "bare" (the state dict itself). ``prefix``: "", "module." or
    "_orig_mod.". ``rate`` > 0 leaves that share of groups dense (unfinished incremental
    sparsity). Pass ``model`` to save a trained reference network instead of a random one.
    """
    if model is None:
        torch.manual_seed(seed)
        model = build_reference_model(arch, num_classes, nm, layer_type)
        randomize_bn(model, seed)
        set_preserve_rate(model, rate, seed)
    state = OrderedDict((prefix + k, v.detach().clone()) for k, v in model.state_dict().items())
    if layout == "bare":
        return state
    if layout == "state_dict":
        return {"state_dict": state}
    if layout != "training":
        raise ValueError(f"layout must be training, state_dict or bare, got {layout!r}")
    return {
        "epoch": epoch,
        "arch": normalize_arch(arch),
        "state_dict": state,
        "best_acc1": torch.tensor(71.5),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-5, "params": []}]},
    }


def save_checkpoint(checkpoint: dict, path: str | os.PathLike[str]) -> None:
    with atomic_output(path) as tmp:
        torch.save(checkpoint, tmp)
