"""The architecture registry: every registered architecture, in both forms, with MaxQ's key names."""

from __future__ import annotations

import pytest
import torch

from maxq_deploy.archs import MaxQConvBN, build_model, list_archs, normalize_arch, register_arch, state_dict_shapes
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
