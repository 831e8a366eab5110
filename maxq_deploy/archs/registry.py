"""The architecture registry: ``@register_arch``, ``list_archs``, ``model_entrypoint``, ``build_model``.

To add an architecture, declare it in :mod:`maxq_deploy.archs.catalog` (its default input size
and the sizes it runs at; readable without torch, so CLI help lists it), write one module in
this package whose builder takes a :class:`~maxq_deploy.archs.layers.LayerFactory` and a class
count, decorate it with ``@register_arch("name")`` and name the module in its catalog entry
(``ArchSpec.module``). Loading, folding, verification and export then work from key names alone.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import nn

from maxq_deploy.archs.layers import FoldedLayers, LayerFactory, MaxQLayers
from maxq_deploy.archs.catalog import ARCHS, arch_names
from maxq_deploy.archs.catalog import normalize_arch as normalize_arch

Builder = Callable[[LayerFactory, int], nn.Module]
_REGISTRY: dict[str, Builder] = {}


def register_arch(name: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        if name not in ARCHS:
            raise ValueError(f"architecture {name!r} is not declared in maxq_deploy.archs.catalog")
        _REGISTRY[name] = builder
        return builder

    return wrap


def register_variants(net: Callable[..., nn.Module], variants: dict[str, tuple]) -> None:
    """Register ``name -> net(layers, *args, num_classes)`` for every ``name: args`` of ``variants``."""
    for name, args in variants.items():
        register_arch(name)(_variant_builder(net, args))


def _variant_builder(net: Callable[..., nn.Module], args: tuple) -> Builder:
    def build(f: LayerFactory, num_classes: int) -> nn.Module:
        return net(f, *args, num_classes)

    return build


def register_builders() -> None:
    """Import the builder modules the catalog names (each registers its architectures once)."""
    import importlib

    for module in sorted({spec.module for spec in ARCHS.values()}):
        importlib.import_module(module)


def list_archs() -> list[str]:
    """The registered architectures (the catalog's names; every one has a builder)."""
    return arch_names()


def model_entrypoint(arch: str) -> Builder:
    """The builder registered for ``arch`` (any accepted spelling): ``builder(layers, num_classes)``.

    Stages that build the architecture from their own layers (quantized, reference MaxQ layers)
    call this with their :class:`LayerFactory`.
    """
    register_builders()
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
    """Key -> shape of ``arch``'s state dict, built on the meta device (no memory, little time)."""
    return dict(_state_dict_shapes(normalize_arch(arch), int(num_classes), form))


@lru_cache(maxsize=64)
def _state_dict_shapes(arch: str, num_classes: int, form: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    model = build_model(arch, num_classes, form, device="meta")
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())
