"""The architecture catalog: names, spellings, input sizes, readable without torch."""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap

import pytest

from maxq_deploy.archs.catalog import (
    ARCHS,
    MIN_IMAGENET_INPUT,
    arch_names,
    arch_names_text,
    check_input_size,
    default_input_size,
    default_resize,
    normalize_arch,
    spec,
)
from maxq_deploy.archs.registry import list_archs
from maxq_deploy.core.errors import MaxQDeployError, OptionError, UnsupportedArchitectureError

IMAGENET = ["mobilenet_v1", "resnet18", "resnet34", "resnet50"]
CIFAR = ["c_resnet18", "c_resnet34", "c_resnet50", "c_resnet101", "c_resnet152"]


@pytest.mark.parametrize("spelling, name", [
    ("resnet50", "resnet50"), ("ResNet50", "resnet50"), ("RESNET18", "resnet18"), (" resnet34 ", "resnet34"),
    ("mobilenet_v1", "mobilenet_v1"), ("mobilenet-v1", "mobilenet_v1"), ("MobileNetV1", "mobilenet_v1"),
])
def test_normalize_arch_spellings(spelling, name):
    assert normalize_arch(spelling) == name


@pytest.mark.parametrize("name", ["vgg16", "mobilenet_v2", "resnet", ""])
def test_unknown_arch_lists_supported(name):
    with pytest.raises(UnsupportedArchitectureError) as info:
        normalize_arch(name)
    for arch in list_archs():
        assert arch in str(info.value)


def test_catalog_imports_without_torch(fresh_python):
    """CLI help and size checks read the catalog in processes that never load torch."""
    found = fresh_python(textwrap.dedent("""
        import json, sys
        from maxq_deploy.archs import catalog
        sizes = {a: catalog.default_input_size(a) for a in catalog.arch_names()}
        catalog.check_input_size('c_resnet18', 32)
        print(json.dumps({'torch': 'torch' in sys.modules, 'sizes': sizes, 'name': catalog.normalize_arch('ResNet-50')}))
    """))
    assert found == {"torch": False, "sizes": dict.fromkeys(IMAGENET, 224) | dict.fromkeys(CIFAR, 32),
                     "name": "resnet50"}


def test_the_catalog_lists_exactly_the_nine_architectures_sorted():
    assert arch_names() == sorted(IMAGENET + CIFAR)
    assert arch_names_text() == ", ".join(sorted(IMAGENET + CIFAR))
    assert all(name == s.name for name, s in ARCHS.items())


@pytest.mark.parametrize("arch", IMAGENET)
def test_imagenet_networks_default_to_224_and_take_any_size_from_32(arch):
    s = spec(arch)
    assert (s.family, s.input_size, s.min_input, s.max_input) == ("imagenet", 224, MIN_IMAGENET_INPUT, None)
    assert MIN_IMAGENET_INPUT == 32 and s.sizes_text() == ">= 32"
    assert s.resize_ratio == pytest.approx(256 / 224)
    assert [s.runs_at(n) for n in (31, 32, 224, 4096)] == [False, True, True, True]


@pytest.mark.parametrize("arch", CIFAR)
def test_cifar_networks_default_to_32_and_run_at_25_to_56(arch):
    s = spec(arch)
    assert (s.family, s.input_size, s.min_input, s.max_input, s.resize_ratio) == ("cifar", 32, 25, 56, 1.0)
    assert s.module == "maxq_deploy.archs.cifar_resnet" and s.sizes_text() == "25..56"
    assert [s.runs_at(n) for n in (24, 25, 32, 56, 57)] == [False, True, True, True, False]


@pytest.mark.parametrize("arch, module, blocks", [
    ("resnet18", "maxq_deploy.archs.resnet", "BasicBlock [2, 2, 2, 2]"),
    ("resnet34", "maxq_deploy.archs.resnet", "BasicBlock [3, 4, 6, 3]"),
    ("resnet50", "maxq_deploy.archs.resnet", "Bottleneck [3, 4, 6, 3]"),
    ("mobilenet_v1", "maxq_deploy.archs.mobilenet", "depthwise-separable x13"),
    ("c_resnet101", "maxq_deploy.archs.cifar_resnet", "Bottleneck [3, 4, 23, 3]"),
    ("c_resnet152", "maxq_deploy.archs.cifar_resnet", "Bottleneck [3, 8, 36, 3]"),
])
def test_each_entry_names_its_builder_module_and_blocks(arch, module, blocks):
    assert (spec(arch).module, spec(arch).blocks) == (module, blocks)


@pytest.mark.parametrize("spelling, name", [
    ("C-ResNet18", "c_resnet18"), ("c_resnet_101", "c_resnet101"), ("cresnet152", "c_resnet152"),
    ("mobilenetv1", "mobilenet_v1"), ("Resnet-34", "resnet34"), ("\tRESNET_50\n", "resnet50"),
])
def test_separators_and_case_do_not_matter(spelling, name):
    assert normalize_arch(spelling) == name
    assert spec(spelling) is ARCHS[name]
    assert default_input_size(spelling) == ARCHS[name].input_size


@pytest.mark.parametrize("call", [spec, default_input_size, lambda a: check_input_size(a, 224),
                                  lambda a: default_resize(a, 224)])
def test_every_lookup_refuses_an_unknown_name_with_the_supported_list(call):
    with pytest.raises(UnsupportedArchitectureError, match=r"unsupported architecture 'resnet-101'; supported: ") as info:
        call("resnet-101")
    assert str(info.value).endswith(arch_names_text())
    assert isinstance(info.value, MaxQDeployError)


def test_check_input_size_returns_a_size_the_arch_runs_at():
    assert check_input_size("resnet50", 32) == 32
    assert check_input_size("mobilenet_v1", 1000) == 1000
    assert check_input_size("C-ResNet50", 56) == 56


def test_an_imagenet_network_below_32_pixels_is_refused_in_one_line():
    with pytest.raises(OptionError) as info:
        check_input_size("mobilenet_v1", 31, what="the calibration data")
    assert str(info.value) == (
        "mobilenet_v1 cannot run at 31x31 inputs (the calibration data): it downsamples by 32; it runs at >= 32 pixels "
        "(trained at 224, the default)"
    )


def test_a_cifar_network_names_its_fixed_pool_and_range():
    with pytest.raises(OptionError) as info:
        check_input_size("c_resnet34", 64)
    message = str(info.value)
    assert message.startswith("c_resnet34 cannot run at 64x64 inputs (--input-size): its head averages a fixed 4x4 window")
    assert message.endswith("it runs at 25..56 pixels (trained at 32, the default)") and "\n" not in message


@pytest.mark.parametrize("size", [True, 32.0, "32", None])
def test_a_size_that_is_not_a_whole_number_is_refused(size):
    with pytest.raises(OptionError, match="^" + re.escape(f"--size must be a whole number of pixels, got {size!r}") + "$"):
        check_input_size("resnet18", size, what="--size")


@pytest.mark.parametrize("arch, size, resize", [
    ("resnet50", 224, 256),  # ImageNet's resize 256, crop 224
    ("mobilenet_v1", 112, 128),
    ("resnet18", 100, 114),  # round(114.29)
    ("c_resnet18", 32, 32),  # CIFAR: no enlargement
    ("c_resnet50", 40, 40),
    (None, 224, 256),  # no architecture known: the ImageNet rule
    (None, 32, 37),
])
def test_default_resize_enlarges_by_the_arch_ratio(arch, size, resize):
    assert default_resize(arch, size) == resize


def test_spec_to_dict_carries_every_field_and_the_size_text():
    d = spec("c_resnet50").to_dict()
    assert d == {"name": "c_resnet50", "family": "cifar", "blocks": "Bottleneck [3, 4, 6, 3]",
                 "module": "maxq_deploy.archs.cifar_resnet", "input_size": 32, "min_input": 25, "max_input": 56,
                 "resize_ratio": 1.0, "sizes": "25..56"}
    assert json.loads(json.dumps(spec("resnet18").to_dict()))["sizes"] == ">= 32"


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec("resnet18").input_size = 64
