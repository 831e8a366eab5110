"""The architecture registry: every registered architecture, in both forms, with MaxQ's key names."""

from __future__ import annotations

import textwrap

import pytest
import torch

from maxq_deploy.archs.catalog import ARCHS as CATALOG
from maxq_deploy.archs.layers import FoldedLayers, MaxQConvBN
from maxq_deploy.archs.registry import (
    _REGISTRY,
    build_model,
    list_archs,
    model_entrypoint,
    register_arch,
    register_variants,
    state_dict_shapes,
)
from maxq_deploy.core.errors import UnsupportedArchitectureError
from maxq_deploy.fold import fold_masks_and_bn
from maxq_deploy.reference import build_reference_model

SLOW = {"resnet34", "resnet50"}
# the CIFAR ResNets run only near 32x32 (this file's probe is 64x64): tests/test_archs_cifar_resnet.py covers them
ARCHS = [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in list_archs() if not a.startswith("c_resnet")]

#: Sparse conv-bn layers per architecture, counted from the MaxQ format description.
SPARSE_LAYERS = {"resnet18": 8 * 2 + 3, "resnet34": 16 * 2 + 3, "resnet50": 16 * 3 + 4, "mobilenet_v1": 13}


def test_known_architectures_are_registered():
    assert {"resnet18", "resnet34", "resnet50", "mobilenet_v1"} <= set(list_archs())
    assert list_archs() == sorted(list_archs())


def test_register_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_arch("resnet18")(lambda f, n: None)


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="form must be one of"):
        build_model("resnet18", 10, form="quantized")


@pytest.mark.parametrize("arch", ARCHS)
def test_both_forms_build_and_run(arch, probe):
    models = {form: build_model(arch, 7, form) for form in ("maxq", "folded")}
    for model in models.values():
        assert not model.training
        with torch.no_grad():
            out = model(probe)
        assert out.shape == (probe.shape[0], 7)
        assert torch.isfinite(out).all()
    assert sum(isinstance(m, MaxQConvBN) for m in models["maxq"].modules()) == SPARSE_LAYERS[arch]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in models["folded"].modules())


@pytest.mark.parametrize("arch", list_archs())
def test_maxq_form_matches_reference_keys(arch):
    """A MaxQ state dict (as the reference layers write it) loads into the maxq form as is."""
    shapes = state_dict_shapes(arch, 10)
    reference = {k: tuple(v.shape) for k, v in build_reference_model(arch, 10).state_dict().items()}
    assert shapes == reference
    assert all(v.device.type == "meta" for v in build_model(arch, 10, device="meta").state_dict().values())


@pytest.mark.parametrize("arch, keys", [
    ("resnet18", ["conv1.weight", "bn1.running_var", "layer1.0.convbn1.conv.weight", "layer1.0.convbn1.mask",
                  "layer1.0.convbn2.scale.num_batches_tracked", "layer2.0.downsample.conv.weight", "fc.bias"]),
    ("resnet50", ["layer1.0.convbn3.mask", "layer1.0.downsample.mask", "layer4.2.convbn3.scale.weight"]),
    ("mobilenet_v1", ["conv1.0.weight", "conv1.1.running_mean", "features.0.0.weight", "features.0.1.weight",
                      "features.0.3.conv.weight", "features.0.3.mask", "features.12.3.scale.bias", "fc.weight"]),
])
def test_upstream_key_names(arch, keys):
    shapes = state_dict_shapes(arch, 10)
    for key in keys:
        assert key in shapes
    assert "layer1.0.downsample.mask" not in state_dict_shapes("resnet18", 10)  # 64 -> 64: no shortcut conv


def test_upstream_shapes():
    r50 = state_dict_shapes("resnet50", 1000)
    assert r50["layer1.0.convbn1.conv.weight"] == (64, 64, 1, 1)
    assert r50["layer1.0.convbn2.conv.weight"] == (64, 64, 3, 3)
    assert r50["layer1.0.convbn3.conv.weight"] == (256, 64, 1, 1)
    assert r50["layer2.0.downsample.conv.weight"] == (512, 256, 1, 1)
    assert r50["fc.weight"] == (1000, 2048)
    mb = state_dict_shapes("mobilenet_v1", 10)
    assert mb["features.0.0.weight"] == (32, 1, 3, 3)  # depthwise
    assert mb["features.12.3.conv.weight"] == (1024, 1024, 1, 1)
    assert mb["fc.weight"] == (10, 1024)


@pytest.mark.parametrize("arch", ARCHS)
def test_folded_keys_match_fold_output(arch, store):
    ckpt = store.load(arch=arch)
    assert len(ckpt.layers) == SPARSE_LAYERS[arch]
    result = fold_masks_and_bn(ckpt)
    expected = state_dict_shapes(arch, ckpt.num_classes, "folded")
    assert list(result.state_dict) == list(expected)
    assert {k: tuple(v.shape) for k, v in result.state_dict.items()} == expected
    model = build_model(arch, ckpt.num_classes, "folded")
    model.load_state_dict(result.state_dict, strict=True)


@pytest.mark.parametrize("ask", [
    lambda: model_entrypoint("mobilenet_v2"),
    lambda: build_model("vgg16", 10),
    lambda: build_model("vgg16", 10, form="folded", device="meta"),
    lambda: state_dict_shapes("efficientnet_b0", 10),
])
def test_an_unknown_architecture_is_refused_with_the_known_ones(ask):
    with pytest.raises(UnsupportedArchitectureError, match="^unsupported architecture '") as info:
        ask()
    assert str(info.value).endswith("supported: " + ", ".join(list_archs()))


def test_registering_an_undeclared_name_is_refused_and_registers_nothing():
    before = dict(_REGISTRY)
    with pytest.raises(ValueError, match=r"^architecture 'resnet200' is not declared in maxq_deploy\.archs\.catalog$"):
        register_arch("resnet200")(lambda f, n: None)
    with pytest.raises(ValueError, match="'mobilenet_v2' is not declared"):
        register_variants(lambda f, n: None, {"mobilenet_v2": ()})
    assert _REGISTRY == before


def test_the_module_each_catalog_entry_names_registers_it(fresh_python):
    """Imported on its own (fresh registry), the module a catalog entry names registers that entry."""
    added = fresh_python(textwrap.dedent("""
        import importlib, json, sys
        from maxq_deploy.archs.catalog import ARCHS
        from maxq_deploy.archs.registry import _REGISTRY
        builders = sorted({s.module for s in ARCHS.values()})
        added = {}
        for module in builders:
            _REGISTRY.clear()
            for name in builders:
                sys.modules.pop(name, None)
            importlib.import_module(module)
            added[module] = sorted(_REGISTRY)
        print(json.dumps(added))
    """))
    assert added == {
        "maxq_deploy.archs.cifar_resnet": ["c_resnet101", "c_resnet152", "c_resnet18", "c_resnet34", "c_resnet50",
                                           "resnet18", "resnet34", "resnet50"],  # it builds on the ImageNet blocks
        "maxq_deploy.archs.mobilenet": ["mobilenet_v1"],
        "maxq_deploy.archs.resnet": ["resnet18", "resnet34", "resnet50"],
    }
    assert all(name in added[spec.module] for name, spec in CATALOG.items())


@pytest.mark.parametrize("spelling, name", [("ResNet-18", "resnet18"), ("MobileNetV1", "mobilenet_v1"),
                                            ("C-ResNet50", "c_resnet50")])
def test_any_accepted_spelling_finds_the_same_builder(spelling, name):
    assert model_entrypoint(spelling) is model_entrypoint(name) is _REGISTRY[name]
    assert state_dict_shapes(spelling, 3) == state_dict_shapes(name, 3)


def test_a_builder_takes_the_callers_layer_factory_and_class_count():
    model = model_entrypoint("resnet18")(FoldedLayers(), 5)
    assert model.training  # the entrypoint leaves modes to its caller; build_model sets eval
    assert model.fc.out_features == 5
    assert isinstance(model.layer1[0].convbn1, torch.nn.Conv2d) and model.layer1[0].convbn1.bias is not None


@pytest.mark.parametrize("form", ["maxq", "folded"])
def test_build_model_puts_every_submodule_in_eval_mode_on_the_device_asked(form):
    model = build_model("mobilenet_v1", 4, form, device="meta")
    assert not any(m.training for m in model.modules())
    assert {p.device.type for p in model.state_dict().values()} == {"meta"}
    assert model(torch.empty(2, 3, 64, 64, device="meta")).shape == (2, 4)


def test_state_dict_shapes_hands_out_a_fresh_dict():
    """The shapes are cached per (arch, classes, form); a caller that edits its copy changes no one else's."""
    first = state_dict_shapes("resnet18", 10)
    first.clear()
    again = state_dict_shapes("resnet18", 10)
    assert len(again) == 6 + 7 * SPARSE_LAYERS["resnet18"] + 2  # stem conv + bn1, 7 keys per sparse layer, fc
    assert again["fc.weight"] == (10, 512)
    assert state_dict_shapes("resnet18", 1000)["fc.weight"] == (1000, 512)  # the class count is part of the key


def test_folded_shapes_drop_masks_and_batchnorms_and_add_biases():
    maxq, folded = state_dict_shapes("resnet18", 10), state_dict_shapes("resnet18", 10, "folded")
    assert not any(k.endswith(".mask") or ".scale." in k or k.startswith("bn1.") for k in folded)
    assert folded["layer1.0.convbn1.weight"] == maxq["layer1.0.convbn1.conv.weight"] == (64, 64, 3, 3)
    assert folded["layer1.0.convbn1.bias"] == (64,) and folded["conv1.bias"] == (64,)
    assert "conv1.bias" not in maxq
