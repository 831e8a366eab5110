"""maxq_deploy.reference.checkpoints: MaxQ checkpoints in the upstream layout, as the deploy loader reads them back."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

from maxq_deploy.core.errors import SparsityPatternError, UnsupportedArchitectureError
from maxq_deploy.core.sparsity import nonzeros_per_group
from maxq_deploy.load.maxq_checkpoint import load_checkpoint
from maxq_deploy.reference import ReferenceMaxQConvBN, build_reference_model, make_checkpoint, save_checkpoint, set_preserve_rate
from maxq_deploy.reference.checkpoints import randomize_bn, sparse_layers

TRAINING_KEYS = {"epoch", "arch", "state_dict", "best_acc1", "optimizer"}
LAYER_SUFFIXES = {"conv.weight", "mask", "scale.weight", "scale.bias", "scale.running_mean", "scale.running_var",
                  "scale.num_batches_tracked"}


def test_training_layout_is_what_the_training_script_saves(tiny_reference_net):
    model = tiny_reference_net()
    ckpt = make_checkpoint("MobileNet-V1", model=model, epoch=7)
    assert set(ckpt) == TRAINING_KEYS
    assert ckpt["arch"] == "mobilenet_v1" and ckpt["epoch"] == 7  # the architecture's canonical name
    assert ckpt["best_acc1"].shape == () and float(ckpt["best_acc1"]) == pytest.approx(71.5)
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert isinstance(ckpt["state_dict"], OrderedDict)
    assert list(ckpt["state_dict"]) == list(model.state_dict())
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod."])
def test_state_dict_and_bare_layouts_with_prefixes(tiny_reference_net, prefix):
    model = tiny_reference_net()
    names = [prefix + k for k in model.state_dict()]
    wrapped = make_checkpoint(model=model, layout="state_dict", prefix=prefix)
    assert list(wrapped) == ["state_dict"] and list(wrapped["state_dict"]) == names
    bare = make_checkpoint(model=model, layout="bare", prefix=prefix)
    assert isinstance(bare, OrderedDict) and list(bare) == names


def test_unknown_layout_is_refused(tiny_reference_net):
    with pytest.raises(ValueError, match="layout must be training, state_dict or bare, got 'flat'"):
        make_checkpoint(model=tiny_reference_net(), layout="flat")


def test_checkpoint_holds_copies_not_the_live_parameters(tiny_reference_net):
    model = tiny_reference_net()
    ckpt = make_checkpoint(model=model, layout="bare")
    before = ckpt["0.conv.weight"].clone()
    with torch.no_grad():
        model[0].conv.weight.add_(1.0)
    assert torch.equal(ckpt["0.conv.weight"], before)
    assert not ckpt["0.conv.weight"].requires_grad


def test_save_checkpoint_writes_a_weights_only_file(tiny_reference_net, tmp_path):
    ckpt = make_checkpoint("resnet18", model=tiny_reference_net(), epoch=3)
    path = tmp_path / "checkpoint.resnet18.pth.tar"
    save_checkpoint(ckpt, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp file left beside it
    back = torch.load(path, map_location="cpu", weights_only=True)
    assert set(back) == TRAINING_KEYS and back["epoch"] == 3 and back["arch"] == "resnet18"
    assert list(back["state_dict"]) == list(ckpt["state_dict"])
    assert all(torch.equal(back["state_dict"][k], v) for k, v in ckpt["state_dict"].items())


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_set_preserve_rate_leaves_that_share_of_groups_dense(tiny_reference_net, rate):
    model = tiny_reference_net("HardMaxQConv2DBNV2Pro", "1:4")
    set_preserve_rate(model, rate, seed=0)
    for layer in sparse_layers(model):
        counts = nonzeros_per_group(layer.mask, 4)
        assert int((counts == 4).sum()) == math.floor(rate * counts.numel())
        assert int((counts == 1).sum()) == counts.numel() - math.floor(rate * counts.numel())


def test_set_preserve_rate_is_seeded_for_random_rules(tiny_reference_net):
    def masks(seed: int) -> list[torch.Tensor]:
        model = tiny_reference_net("HardRandomConv2dBN")
        set_preserve_rate(model, 0.0, seed)
        return [layer.mask.clone() for layer in sparse_layers(model)]

    assert all(torch.equal(a, b) for a, b in zip(masks(0), masks(0)))
    assert not all(torch.equal(a, b) for a, b in zip(masks(0), masks(1)))


def test_randomize_bn_gives_seeded_non_trivial_statistics(tiny_reference_net):
    def bns(seed: int) -> list[torch.nn.BatchNorm2d]:
        model = tiny_reference_net()
        randomize_bn(model, seed)
        return [layer.scale for layer in sparse_layers(model)]

    for bn in bns(0):
        gamma = bn.weight.detach()
        assert 0.5 <= float(gamma.min()) and float(gamma.max()) < 1.5
        assert 0.5 <= float(bn.running_var.min()) and float(bn.running_var.max()) < 1.5
        assert float(bn.running_mean.abs().max()) > 0 and float(bn.bias.detach().abs().max()) > 0
        assert int(bn.num_batches_tracked) == 100
    assert all(torch.equal(a.running_mean, b.running_mean) for a, b in zip(bns(0), bns(0)))
    assert not torch.equal(bns(0)[0].running_mean, bns(1)[0].running_mean)


def test_build_reference_model_is_the_architecture_in_reference_layers():
    model = build_reference_model("mobilenet_v1", 7, "1:4", "HardSRSTEConv2dBN")
    layers = sparse_layers(model)
    assert model.training and len(layers) == 13
    assert {(layer.layer_type, layer.n, layer.m) for layer in layers} == {("HardSRSTEConv2dBN", 1, 4)}
    assert model.fc.out_features == 7
    assert all(isinstance(layer, ReferenceMaxQConvBN) for layer in layers)


@pytest.mark.parametrize("args, error, words", [
    (("mobilenet_v1", 10, "4:2"), SparsityPatternError, "0 < N < M"),
    (("mobilenet_v1", 10, "2:4", "SoftMaxQ"), ValueError, "unknown layer type 'SoftMaxQ'"),
    (("vgg16", 10), UnsupportedArchitectureError, "mobilenet_v1"),
])
def test_build_reference_model_refuses_bad_names(args, error, words):
    with pytest.raises(error, match=words):
        build_reference_model(*args)


def test_same_seed_same_checkpoint_other_seed_other_weights():
    """DenseConv2dBN: the weights and BatchNorms of a whole architecture without the cost of its masks."""
    first, again, other = (make_checkpoint("mobilenet_v1", layer_type="DenseConv2dBN", seed=s, layout="bare") for s in (3, 3, 4))
    assert list(first) == list(again) == list(other)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["features.0.3.conv.weight"], other["features.0.3.conv.weight"])
    assert not torch.equal(first["features.0.3.scale.running_var"], other["features.0.3.scale.running_var"])
    assert not any(k.endswith(".mask") for k in first)  # the dense type stores no mask


@pytest.mark.slow  # alone: the fixture checkpoint's soft masks take seconds (other files share it in a full run)
def test_every_sparse_layer_has_the_upstream_keys_and_a_2_of_4_soft_mask(store):
    """The default checkpoint against docs/MAXQ_FORMAT.md's table, and against what the loader finds."""
    path = store.checkpoint(arch="mobilenet_v1")
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    layers = sorted(k.removesuffix(".mask") for k in state if k.endswith(".mask"))
    assert len(layers) == 13
    assert sorted(layer.name for layer in load_checkpoint(path).layers) == layers
    for name in layers:
        assert {k.removeprefix(name + ".") for k in state if k.startswith(name + ".")} == LAYER_SUFFIXES
        weight, mask = state[f"{name}.conv.weight"], state[f"{name}.mask"]
        assert weight.shape == mask.shape and weight.shape[2:] == (1, 1)
        assert nonzeros_per_group(mask, 4).eq(2).all()
        kept = mask[mask != 0]
        assert 1.0 <= float(kept.min()) and float(kept.max()) <= 3.0 and float(kept.max()) > 1.0
        assert int(state[f"{name}.scale.num_batches_tracked"]) == 100
