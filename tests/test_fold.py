"""Folding soft masks and BatchNorm into constant N:M weights: parity, zeros, patterns, round trip."""

from __future__ import annotations

import math
import os

import pytest
import torch

from maxq_deploy.archs import list_archs, state_dict_shapes
from maxq_deploy.load.maxq_checkpoint import load_checkpoint
from maxq_deploy.load.formats import FOLDED_FORMAT
from maxq_deploy.core.errors import InputFileError, OutputPathError, UnfinishedSparsityError
from maxq_deploy.fold import fold_checkpoint, fold_masks_and_bn, load_folded, save_folded
from maxq_deploy.reference import LAYER_TYPES
from maxq_deploy.core.sparsity import NMPattern, check_pattern, groups_along, nonzeros_per_group

SLOW = {"resnet34", "resnet50"}
# the CIFAR ResNets run only near 32x32 (this file's probe is 64x64): tests/test_archs_cifar_resnet.py covers them
ARCHS = [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in list_archs() if not a.startswith("c_resnet")]
FP32_RTOL = 1e-5


def _outputs(model, x):
    with torch.no_grad():
        return model(x)


def _assert_zeros_kept_and_formula(ckpt, result):
    """Per sparse layer: W' == (W * mask) * g exactly where zero, to float rounding elsewhere."""
    state = ckpt.state_dict
    for layer in ckpt.layers:
        weight = state[f"{layer.name}.conv.weight"].double()
        mask = state.get(f"{layer.name}.mask")
        effective = weight * mask.double() if mask is not None else weight
        bn = f"{layer.name}.scale"
        g = state[f"{bn}.weight"].double() / torch.sqrt(state[f"{bn}.running_var"].double() + 1e-5)
        expected_w = (effective * g.view(-1, 1, 1, 1)).float()
        expected_b = (state[f"{bn}.bias"].double() - state[f"{bn}.running_mean"].double() * g).float()
        folded_w, folded_b = result.state_dict[f"{layer.name}.weight"], result.state_dict[f"{layer.name}.bias"]
        assert torch.equal(folded_w == 0, effective == 0), layer.name
        torch.testing.assert_close(folded_w, expected_w, rtol=1e-6, atol=1e-12)
        torch.testing.assert_close(folded_b, expected_b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("layer_type", list(LAYER_TYPES))
def test_fold_parity_every_layer_type(store, probe, reference_net, rel_err, layer_type):
    spec = store.spec(arch="resnet18", layer_type=layer_type)
    path = store.checkpoint(spec)
    ckpt = store.load(spec)
    result = fold_masks_and_bn(ckpt)
    ref = _outputs(reference_net(path, spec), probe)
    assert rel_err(_outputs(result.build_model(), probe), ref) <= FP32_RTOL
    _assert_zeros_kept_and_formula(ckpt, result)
    sparse = result.sparse_layers
    assert len(sparse) == 19
    if LAYER_TYPES[layer_type].masked:
        assert result.nm == "2:4"
        for layer in sparse:
            weight = result.state_dict[f"{layer.name}.weight"]
            assert layer.holds_hardware_pattern is True
            check = check_pattern(weight, "2:4")
            assert check.holds and check.groups == weight.numel() // 4 and check.max_nonzeros == 2
        assert result.summary()["sparse_layers_holding_2_4"] == 19
    else:  # DenseConv2dBN: nothing is pruned, so nothing may claim 2:4
        assert result.nm is None
        assert not any(layer.holds_hardware_pattern for layer in sparse)


@pytest.mark.parametrize("nm", ["2:4", "1:4", "2:8", "1:16"])
def test_fold_every_nm_keeps_trained_and_hardware_pattern(store, probe, reference_net, rel_err, nm):
    spec = store.spec(arch="resnet18", nm=nm)
    path = store.checkpoint(spec)
    ckpt = store.load(spec)
    result = fold_masks_and_bn(ckpt)
    assert rel_err(_outputs(result.build_model(), probe), _outputs(reference_net(path, spec), probe)) <= FP32_RTOL
    pattern = NMPattern.parse(nm)
    assert result.nm == nm
    for layer in result.sparse_layers:
        weight = result.state_dict[f"{layer.name}.weight"]
        assert layer.trained_nm == nm and not layer.projected
        assert check_pattern(weight, pattern).holds
        assert nonzeros_per_group(weight, pattern.m).eq(pattern.n).all()  # exactly N kept: nothing lost
        assert check_pattern(weight, "2:4").holds and layer.holds_hardware_pattern
    _assert_zeros_kept_and_formula(ckpt, result)


@pytest.mark.parametrize("arch", ARCHS)
def test_fold_every_arch_and_round_trip(store, probe, reference_net, rel_err, file_hash, tmp_path, arch):
    spec = store.spec(arch=arch)
    path = store.checkpoint(spec)
    before = file_hash(path)
    result = fold_masks_and_bn(store.load(spec))
    ref = _outputs(reference_net(path, spec), probe)
    assert rel_err(_outputs(result.build_model(), probe), ref) <= FP32_RTOL
    assert all(check_pattern(result.state_dict[f"{l.name}.weight"], "2:4").holds for l in result.sparse_layers)

    out = save_folded(result, tmp_path / "folded.pt")
    assert out == tmp_path / "folded.pt" and result.output == out
    assert sorted(os.listdir(tmp_path)) == ["folded.pt"]  # no temp file left beside it
    raw = torch.load(out, map_location="cpu", weights_only=True)
    assert raw["format"] == FOLDED_FORMAT and raw["arch"] == arch and raw["num_classes"] == 10
    assert raw["hardware_pattern"] == "2:4" and raw["nm"] == "2:4"
    assert raw["provenance"]["source_sha256"] == before and raw["provenance"]["epoch"] == 120
    assert set(raw["state_dict"]) == set(state_dict_shapes(arch, 10, "folded"))
    loaded = load_folded(out)
    assert (loaded.arch, loaded.num_classes, loaded.nm) == (arch, 10, "2:4")
    for key, value in result.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value), key
    assert rel_err(_outputs(loaded.build_model(), probe), ref) <= FP32_RTOL
    assert file_hash(path) == before


@pytest.mark.parametrize("prefix, layout", [("module.", "training"), ("_orig_mod.", "bare"), ("", "state_dict")])
def test_fold_prefixes_and_layouts(store, probe, reference_net, rel_err, prefix, layout):
    spec = store.spec(arch="mobilenet_v1", prefix=prefix, layout=layout)
    path = store.checkpoint(spec)
    result = fold_masks_and_bn(load_checkpoint(path))
    assert rel_err(_outputs(result.build_model(), probe), _outputs(reference_net(path, spec), probe)) <= FP32_RTOL
    assert result.source["epoch"] == (120 if layout == "training" else None)


def test_dense_conv_bn_pairs_are_folded(store):
    mb = fold_masks_and_bn(store.load(arch="mobilenet_v1"))
    dense = [layer for layer in mb.layers if layer.role == "dense"]
    assert [layer.name for layer in dense][:2] == ["conv1.0", "features.0.0"]
    assert len(dense) == 1 + 13
    assert [layer.groups for layer in dense[1:]] == [layer.shape[0] for layer in dense[1:]]  # depthwise
    r18 = fold_masks_and_bn(store.load(arch="resnet18"))
    assert [layer.name for layer in r18.layers if layer.role == "dense"] == ["conv1"]
    assert set(r18.state_dict["conv1.bias"].shape) == {64}


# --- unfinished incremental sparsity ------------------------------------------------------------

def test_mid_training_fold_is_refused(store, mid_spec):
    ckpt = store.load(mid_spec)
    with pytest.raises(UnfinishedSparsityError) as info:
        fold_masks_and_bn(ckpt)
    message = str(info.value)
    assert info.value.exit_code == 1
    assert "incremental sparsity is unfinished in 19 of 19 sparse layers" in message and "--project" in message
    for layer in ckpt.layers:
        groups = math.prod(layer.shape) // 4
        assert f"{layer.name} ({math.floor(mid_spec.rate * groups)}/{groups} groups dense)" in message


def test_mid_training_fold_refused_before_writing(store, mid_spec, tmp_path):
    with pytest.raises(UnfinishedSparsityError):
        fold_checkpoint(store.checkpoint(mid_spec), tmp_path / "out.pt")
    assert os.listdir(tmp_path) == []


def test_project_folds_and_reports_drift(store, mid_spec, probe, tmp_path):
    ckpt = store.load(mid_spec)
    result = fold_masks_and_bn(ckpt, project=True)
    drift = result.drift
    assert drift is not None
    for value in (drift.max_abs_error, drift.relative_l2_error, drift.top1_agreement):
        assert math.isfinite(value)
    assert drift.max_abs_error > 0 and 0 < drift.relative_l2_error < 10 and 0 <= drift.top1_agreement <= 1
    assert drift.probe_batch == [8, 3, 64, 64]
    assert result.summary()["projected_layers"] == 19
    for layer in result.sparse_layers:
        assert layer.projected and layer.trained_nm == "2:4" and layer.dense_groups > 0
        weight = result.state_dict[f"{layer.name}.weight"]
        assert check_pattern(weight, "2:4").holds and layer.holds_hardware_pattern
        # groups that were already 2:4 come through untouched; only the dense ones were projected
        state = ckpt.state_dict
        mask = state[f"{layer.name}.mask"]
        bn = f"{layer.name}.scale"
        g = state[f"{bn}.weight"].double() / torch.sqrt(state[f"{bn}.running_var"].double() + 1e-5)
        unprojected = ((state[f"{layer.name}.conv.weight"] * mask).double() * g.view(-1, 1, 1, 1)).float()
        sparse_groups = nonzeros_per_group(mask, 4) == 2
        assert torch.equal(groups_along(weight, 4)[sparse_groups], groups_along(unprojected, 4)[sparse_groups])
    out = save_folded(result, tmp_path / "projected.pt")
    assert load_folded(out).meta["projection_drift"]["max_abs_error"] == drift.max_abs_error


# --- writing --------------------------------------------------------------------------------------

def test_failed_save_leaves_previous_file_and_no_temp(store, tmp_path, monkeypatch):
    result = fold_masks_and_bn(store.load(arch="mobilenet_v1"))
    out = tmp_path / "folded.pt"
    out.write_bytes(b"previous")

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_folded(result, out)
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["folded.pt"]


def test_output_folder_checked_before_work(store, tmp_path, monkeypatch):
    import maxq_deploy.load.maxq_checkpoint as checkpoint_module

    def must_not_load(*args, **kwargs):
        raise AssertionError("loaded the checkpoint before checking the output path")

    monkeypatch.setattr(checkpoint_module, "load_checkpoint", must_not_load)
    with pytest.raises(OutputPathError, match="output folder does not exist"):
        fold_checkpoint(store.checkpoint(arch="mobilenet_v1"), tmp_path / "missing" / "out.pt")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(OutputPathError, match="is a folder"):
        fold_checkpoint(store.checkpoint(arch="mobilenet_v1"), tmp_path)


def test_load_folded_refuses_other_files(store, tmp_path):
    with pytest.raises(InputFileError, match="not a folded checkpoint"):
        load_folded(store.checkpoint(arch="mobilenet_v1"))
    raw = torch.load(store.folded(arch="mobilenet_v1"), weights_only=True)
    raw["state_dict"]["fc.weight"] = torch.zeros(3, 3)
    torch.save(raw, tmp_path / "damaged.pt")
    with pytest.raises(InputFileError, match="do not match mobilenet_v1"):
        load_folded(tmp_path / "damaged.pt")
