"""The package's front: its names load their torch modules (and register every builder) only when first asked for."""

from __future__ import annotations

import importlib
import textwrap

import pytest

import maxq_deploy.archs as archs
from maxq_deploy.archs import catalog

#: The public names and the module each lives in.
EXPORTS = {
    "FoldedLayers": "layers", "LayerFactory": "layers", "MaxQConvBN": "layers", "MaxQLayers": "layers",
    "build_model": "registry", "list_archs": "registry", "model_entrypoint": "registry", "normalize_arch": "registry",
    "register_arch": "registry", "state_dict_shapes": "registry",
}


def test_all_lists_the_public_names_sorted():
    assert archs.__all__ == sorted(EXPORTS)


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_each_name_is_the_object_of_its_module(name):
    module = importlib.import_module(f"maxq_deploy.archs.{EXPORTS[name]}")
    assert getattr(archs, name) is getattr(module, name)


def test_normalize_arch_is_the_catalogs_one():
    assert archs.normalize_arch is catalog.normalize_arch


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match=r"^module 'maxq_deploy\.archs' has no attribute 'build_models'$"):
        archs.build_models  # noqa: B018
    assert not hasattr(archs, "register_model")
    with pytest.raises(ImportError):
        from maxq_deploy.archs import create_model  # noqa: F401


def test_importing_the_package_loads_no_torch_until_a_name_is_used(fresh_python):
    found = fresh_python(textwrap.dedent("""
        import json, sys
        import maxq_deploy.archs as archs
        from maxq_deploy.archs import catalog
        before = {'torch': 'torch' in sys.modules, 'registry': 'maxq_deploy.archs.registry' in sys.modules,
                  'size': catalog.default_input_size('resnet50')}
        archs.MaxQConvBN
        from maxq_deploy.archs.registry import _REGISTRY
        after = {'torch': 'torch' in sys.modules, 'registered': sorted(_REGISTRY), 'cached': 'MaxQConvBN' in vars(archs)}
        print(json.dumps({'before': before, 'after': after}))
    """))
    assert found["before"] == {"torch": False, "registry": False, "size": 224}
    # a layers name, not a registry one, still registers every builder the catalog names
    assert found["after"] == {"torch": True, "registered": sorted(catalog.ARCHS), "cached": True}
