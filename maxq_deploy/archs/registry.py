"""The architecture registry: ``@register_arch``, ``list_archs``, ``model_entrypoint``, ``build_model``.

To add an architecture, write one module in this package whose builder takes a
:class:`~maxq_deploy.archs.layers.LayerFactory` and a class count, decorate it with
``@register_arch("name")`` and import the module in ``archs/__init__.py``. Loading, folding,
verification and export then work from key names alone.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from maxq_deploy.archs.layers import FoldedLayers, LayerFactory, MaxQLayers
from maxq_deploy.errors import UnsupportedArchitectureError

Builder = Callable[[LayerFactory, int], nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register_arch(name: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = builder
        return builder

    return wrap


def list_archs() -> list[str]:
    return sorted(_REGISTRY)


def normalize_arch(name: str) -> str:
    """Map spellings such as ``ResNet50`` or ``mobilenet-v1`` to a registered name, or raise."""
    key = str(name).strip().lower().replace("-", "_")
    if key in _REGISTRY:
        return key
    squashed = key.replace("_", "")
    for known in _REGISTRY:
        if known.replace("_", "") == squashed:
            return known
    raise UnsupportedArchitectureError(
        f"unsupported architecture {name!r}; supported: {', '.join(list_archs())}"
    )


def model_entrypoint(arch: str) -> Builder:
    """The builder registered for ``arch`` (any accepted spelling): ``builder(layers, num_classes)``.

    Stages that build the architecture from their own layers (quantized, reference MaxQ layers)
    call this with their :class:`LayerFactory`.
    """
    return _REGISTRY[normalize_arch(arch)]


def build_model(arch: str, num_classes: int, form: str = "maxq", device: str | torch.device = "cpu") -> nn.Module:
    """Build ``arch`` in ``form`` "maxq" (trained layout) or "folded" (deploy layout), eval mode."""
    factories = {"maxq": MaxQLayers, "folded": FoldedLayers}
    if form not in factories:
        raise ValueError(f"form must be one of {sorted(factories)}, got {form!r}")
    with torch.device(device):
        model = model_entrypoint(arch)(factories[form](), num_classes)
    return model.eval()


def state_dict_shapes(arch: str, num_classes: int, form: str = "maxq") -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``arch``'s state dict, built on the meta device (no memory, no time)."""
    model = build_model(arch, num_classes, form, device="meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
