"""Loading MaxQ checkpoints: layouts, prefixes, N:M inference, and refusing bad files."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import pytest
import torch

from maxq_deploy.archs import list_archs
from maxq_deploy.load.maxq_checkpoint import load_checkpoint, strip_prefixes, torch_load_safe
from maxq_deploy.core.errors import (
    CheckpointFormatError,
    InputFileError,
    SparsityPatternError,
    UnsupportedArchitectureError,
)
from maxq_deploy.reference import make_checkpoint, save_checkpoint
from maxq_deploy.core.sparsity import NMPattern

LAYER_COUNTS = {"resnet18": 19, "mobilenet_v1": 13}


@pytest.mark.parametrize("layout", ["training", "state_dict", "bare"])
@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod."])
def test_layouts_and_prefixes(store, layout, prefix):
    path = store.checkpoint(arch="mobilenet_v1", layout=layout, prefix=prefix)
    ckpt = load_checkpoint(path)
    assert ckpt.arch == "mobilenet_v1"
    assert ckpt.arch_source == ("file" if layout == "training" else "keys")
    assert ckpt.num_classes == 10
    assert ckpt.nm == NMPattern(2, 4) and ckpt.nm_source == "masks"
    assert ckpt.epoch == (120 if layout == "training" else None)
    assert ckpt.best_acc1 == (pytest.approx(71.5) if layout == "training" else None)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt.state_dict)
    assert "features.0.3.mask" in ckpt.state_dict
    assert len(ckpt.layers) == 13 and not ckpt.unfinished_layers
    assert all(layer.trained_nm == "2:4" and layer.mask_kind == "soft" for layer in ckpt.layers)


def test_nested_prefixes_are_stripped():
    state = {"module._orig_mod.fc.weight": torch.zeros(1), "_orig_mod.module.conv1.weight": torch.zeros(1), "fc.bias": torch.zeros(1)}
    assert set(strip_prefixes(state)) == {"fc.weight", "conv1.weight", "fc.bias"}


def test_bare_resnet_inferred_from_keys(store):
    ckpt = load_checkpoint(store.checkpoint(arch="resnet18", layout="bare", prefix="module."))
    assert (ckpt.arch, ckpt.arch_source) == ("resnet18", "keys")
    assert len(ckpt.layers) == 19


def test_arch_option_overrides(store):
    path = store.checkpoint(arch="mobilenet_v1", layout="bare")
    ckpt = load_checkpoint(path, arch="MobileNet-V1")
    assert (ckpt.arch, ckpt.arch_source) == ("mobilenet_v1", "option")
    with pytest.raises(CheckpointFormatError, match="is --arch right"):
        load_checkpoint(path, arch="resnet18")


@pytest.mark.parametrize("nm", ["2:4", "1:4", "2:8", "1:16"])
def test_nm_inferred_from_masks(store, nm):
    ckpt = load_checkpoint(store.checkpoint(nm=nm))
    pattern = NMPattern.parse(nm)
    assert ckpt.nm == pattern
    for layer in ckpt.layers:
        assert layer.trained_nm == nm
        assert layer.groups == math.prod(layer.shape) // pattern.m
        assert layer.dense_groups == 0
        assert layer.kept == layer.params * pattern.n // pattern.m  # random weights have no exact zeros
    summary = ckpt.summary()
    assert summary["nm"] == nm and summary["sparse_layers"] == 19
    assert summary["kept_sparse_params"] * pattern.m == summary["sparse_params"] * pattern.n


@pytest.mark.parametrize("nm", ["2:4", "1:16"])
def test_nm_option_agreeing(store, nm):
    ckpt = load_checkpoint(store.checkpoint(nm=nm), nm=nm)
    assert ckpt.nm == NMPattern.parse(nm) and ckpt.nm_source == "option"
    assert all(layer.trained_nm == nm and layer.dense_groups == 0 for layer in ckpt.layers)


@pytest.mark.parametrize("trained, given", [("2:4", "1:4"), ("2:4", "2:8"), ("2:4", "1:16"), ("1:4", "1:8"), ("2:8", "1:4"), ("1:16", "1:32")])
def test_nm_option_disagreeing(store, trained, given):
    with pytest.raises(SparsityPatternError, match=rf"--nm {given} disagrees with the masks: layer \S+ keeps up to \d+ of"):
        load_checkpoint(store.checkpoint(nm=trained), nm=given)


def test_nm_m_not_dividing_channels(store):
    """MobileNet's first pointwise layer has C=32: M=64 cannot group it."""
    with pytest.raises(SparsityPatternError, match=r"features\.0\.3: 32 input channels are not divisible by M=64"):
        load_checkpoint(store.checkpoint(arch="mobilenet_v1"), nm="2:64")


def test_mask_fitting_no_pattern(tmp_path):
    """A crafted mask that no N:M explains (not even with dense groups): a clear error, not a crash."""
    state = make_checkpoint("mobilenet_v1", layout="bare")
    row_a = torch.tensor([1.0, 1, 1, 0, 1, 0, 0, 0]).repeat(4)  # groups of 4 keep 3 and 1
    row_b = torch.tensor([1.0, 1, 1, 1, 1, 1, 0, 0]).repeat(4)  # groups of 8 keep 6, row_a's keep 4
    state["features.0.3.mask"] = torch.stack([row_a, row_b] * 32).reshape(64, 32, 1, 1)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(SparsityPatternError, match=r"layer features\.0\.3: .*no consistent N:M pattern.*--nm"):
        load_checkpoint(path)


@pytest.mark.parametrize("layer_type, kind", [
    ("SoftMaxQConv2DBNV2Pro", "soft"), ("HardMaxQConv2DBNV2", "hard"), ("HardSRSTEConv2dBN", "hard"), ("DenseConv2dBN", "none"),
])
def test_mask_kinds(store, layer_type, kind):
    ckpt = load_checkpoint(store.checkpoint(layer_type=layer_type))
    assert {layer.mask_kind for layer in ckpt.layers} == {kind}
    if kind == "none":
        assert ckpt.nm is None and not any(layer.has_mask for layer in ckpt.layers)
        assert ckpt.summary()["sparse_layers"] == 0


def test_mid_training_checkpoint_reports_dense_groups(store, mid_spec):
    ckpt = load_checkpoint(store.checkpoint(mid_spec))
    assert ckpt.nm == NMPattern(2, 4)
    assert len(ckpt.unfinished_layers) == 19
    for layer in ckpt.layers:
        groups = math.prod(layer.shape) // 4
        assert (layer.groups, layer.dense_groups) == (groups, math.floor(mid_spec.rate * groups))
        assert not layer.finished
    assert ckpt.summary()["unfinished_layers"] == 19
    # a user-given N:M that agrees sees the same dense groups
    given = load_checkpoint(store.checkpoint(mid_spec), nm="2:4")
    assert [layer.dense_groups for layer in given.layers] == [layer.dense_groups for layer in ckpt.layers]


def test_build_model_matches_reference(store, probe, reference_net, rel_err):
    spec = store.spec(arch="mobilenet_v1", prefix="module.")
    path = store.checkpoint(spec)
    with torch.no_grad():
        assert rel_err(load_checkpoint(path).build_model()(probe), reference_net(path, spec)(probe)) <= 1e-6


def test_sha256_and_file_untouched(store, file_hash):
    path = store.checkpoint(arch="mobilenet_v1")
    before = file_hash(path)
    ckpt = load_checkpoint(path)
    assert ckpt.sha256 == before == file_hash(path)


# --- bad files ----------------------------------------------------------------------------------

class _WritesMarker:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_code_running_pickle_is_refused_not_run(tmp_path):
    marker = tmp_path / "marker"
    zipped, plain = tmp_path / "evil.pth", tmp_path / "evil.pkl"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "payload": _WritesMarker(marker)}, zipped)
    with open(plain, "wb") as f:
        pickle.dump({"payload": _WritesMarker(marker)}, f, protocol=2)
    for path in (zipped, plain):
        with pytest.raises(InputFileError, match="refused to load"):
            load_checkpoint(path)
        assert not marker.exists()
    # the trap is real: a plain unpickler would have run it
    torch.load(zipped, weights_only=False)
    assert marker.read_text() == "pwned"


def test_bad_files(tmp_path, store):
    good = store.checkpoint(arch="mobilenet_v1").read_bytes()
    cases = {
        "missing.pth": (None, r"checkpoint not found"),
        "empty.pth": (b"", r"checkpoint is empty"),
        "text.pth": (b"hello, I am not a checkpoint\n", r"(cannot be read as|is not) a PyTorch checkpoint"),
        "half.pth": (good[: len(good) // 2], r"truncated or corrupt"),
        "tail.pth": (good[:-100], r"cannot be read as a PyTorch checkpoint"),
        "junk.pth": (bytes(range(256)) * 10, r"(cannot be read as|is not) a PyTorch checkpoint"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(InputFileError, match=message):
            load_checkpoint(path)
    with pytest.raises(InputFileError, match="is a folder"):
        load_checkpoint(tmp_path)


def test_non_checkpoint_objects(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(InputFileError, match="holds a list, not a checkpoint dict"):
        load_checkpoint(tmp_path / "list.pth")
    torch.save({"epoch": 3, "arch": "resnet18"}, tmp_path / "notensors.pth")
    with pytest.raises(InputFileError, match="no tensors"):
        load_checkpoint(tmp_path / "notensors.pth")
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(InputFileError):
        load_checkpoint(tmp_path / "plain.pkl")


def test_folded_file_is_not_a_training_checkpoint(store):
    with pytest.raises(InputFileError, match="maxq-deploy/folded artifact"):
        load_checkpoint(store.folded(arch="mobilenet_v1"))


def test_unsupported_architecture_named_in_file(tmp_path):
    ckpt = make_checkpoint("mobilenet_v1")
    ckpt["arch"] = "vgg16"
    save_checkpoint(ckpt, tmp_path / "vgg.pth")
    with pytest.raises(UnsupportedArchitectureError, match="unsupported architecture 'vgg16'") as info:
        load_checkpoint(tmp_path / "vgg.pth")
    assert all(arch in str(info.value) for arch in list_archs())


@pytest.mark.parametrize("keys", [
    {"features.0.weight": (8, 3, 3, 3), "classifier.weight": (10, 8)},  # no fc
    {"features.0.weight": (8, 3, 3, 3), "fc.weight": (10, 8), "fc.bias": (10,)},  # fc, but no known body
])
def test_unknown_bare_state_dict_lists_supported(tmp_path, keys):
    torch.save({k: torch.zeros(s) for k, s in keys.items()}, tmp_path / "unknown.pth")
    with pytest.raises(UnsupportedArchitectureError) as info:
        load_checkpoint(tmp_path / "unknown.pth")
    assert all(arch in str(info.value) for arch in list_archs())


def test_mask_and_weight_shapes_differ(tmp_path):
    ckpt = make_checkpoint("mobilenet_v1")
    ckpt["state_dict"]["features.1.3.mask"] = torch.ones(128, 64, 3, 3)
    save_checkpoint(ckpt, tmp_path / "shapes.pth")
    with pytest.raises(CheckpointFormatError, match=r"mask and weight have different shapes at 'features\.1\.3\.mask'"):
        load_checkpoint(tmp_path / "shapes.pth")


def test_missing_and_extra_keys(tmp_path):
    ckpt = make_checkpoint("mobilenet_v1")
    del ckpt["state_dict"]["features.2.3.scale.running_var"]
    save_checkpoint(ckpt, tmp_path / "missing.pth")
    with pytest.raises(CheckpointFormatError, match=r"features\.2\.3\.scale\.running_var' missing"):
        load_checkpoint(tmp_path / "missing.pth")
    ckpt = make_checkpoint("mobilenet_v1")
    ckpt["state_dict"]["head.weight"] = torch.zeros(3)
    save_checkpoint(ckpt, tmp_path / "extra.pth")
    with pytest.raises(CheckpointFormatError, match="'head.weight'"):
        load_checkpoint(tmp_path / "extra.pth")


def test_torch_load_safe_reads_plain_data(tmp_path):
    torch.save({"a": torch.arange(3), "b": {"c": 1.5, "d": "x"}}, tmp_path / "plain.pth")
    obj = torch_load_safe(tmp_path / "plain.pth")
    assert obj["b"] == {"c": 1.5, "d": "x"} and obj["a"].tolist() == [0, 1, 2]
