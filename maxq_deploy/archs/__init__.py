"""Architectures MaxQ trains, each written once for both the trained and the folded form."""

from maxq_deploy.archs import cifar_resnet, mobilenet, resnet  # noqa: F401  (registers the builders)
from maxq_deploy.archs.layers import FoldedLayers, LayerFactory, MaxQConvBN, MaxQLayers
from maxq_deploy.archs.registry import (
    build_model,
    list_archs,
    model_entrypoint,
    normalize_arch,
    register_arch,
    state_dict_shapes,
)

__all__ = [
    "FoldedLayers",
    "LayerFactory",
    "MaxQConvBN",
    "MaxQLayers",
    "build_model",
    "list_archs",
    "model_entrypoint",
    "normalize_arch",
    "register_arch",
    "state_dict_shapes",
]
