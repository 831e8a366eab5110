"""Architectures MaxQ trains, each written once for both the trained and the folded form.

``catalog`` (names, input sizes; no torch) is importable on its own, so CLI help lists the
architectures without loading torch; every other name here imports the torch builders (and
registers them) on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FoldedLayers": "layers",
    "LayerFactory": "layers",
    "MaxQConvBN": "layers",
    "MaxQLayers": "layers",
    "build_model": "registry",
    "list_archs": "registry",
    "model_entrypoint": "registry",
    "normalize_arch": "registry",
    "register_arch": "registry",
    "state_dict_shapes": "registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from maxq_deploy.archs.registry import register_builders

    register_builders()
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
