"""Verification of the hardware 2:4 pattern on MaxQ checkpoints and folded files."""

from __future__ import annotations

import json
import math

import pytest
import torch

from maxq_deploy.core.errors import InputFileError
from maxq_deploy.verify import verify_artifact

NM_PATTERNS = ["2:4", "1:4", "2:8", "1:16"]


@pytest.mark.parametrize("nm", NM_PATTERNS)
def test_finished_checkpoint_and_folded_file_pass_2_4(store, nm):
    """1:4, 2:8 and 1:16 models satisfy 2:4 too; trained and hardware pattern are both reported."""
    for path, kind in ((store.checkpoint(nm=nm), "maxq-checkpoint"), (store.folded(nm=nm), "folded-checkpoint")):
        report = verify_artifact(path)
        assert report.kind == kind
        assert report.ok, report.verdict
        assert report.verdict == "PASS: all 19 sparse layers hold 2:4"
        assert (report.pattern, report.trained_nm) == ("2:4", nm)
        assert len(report.expected) == 19 and not report.failing
        for layer in report.expected:
            assert layer.trained_nm == nm and layer.holds and layer.violating_groups == 0
            assert layer.channels_divisible and layer.groups == math.prod(layer.shape) // 4
        data = json.loads(json.dumps(report.to_dict()))
        assert data["ok"] is True and data["holding_layers"] == data["sparse_layers"] == 19


@pytest.mark.parametrize("nm", ["1:4", "1:16"])
def test_trained_pattern_can_be_verified_too(store, nm):
    assert verify_artifact(store.folded(nm=nm), pattern=nm).ok
    strict = verify_artifact(store.folded(nm="2:4"), pattern=nm)  # a 2:4 model is not 1:4 / 1:16
    assert not strict.ok and len(strict.failing) == 19
    m = int(nm.split(":")[1])
    assert all(layer.violating_groups == layer.groups == math.prod(layer.shape) // m for layer in strict.failing)


def test_mid_training_checkpoint_fails(store, mid_spec):
    report = verify_artifact(store.checkpoint(mid_spec))
    assert not report.ok
    assert report.verdict == "FAIL: 19 of 19 sparse layers break 2:4"
    assert report.notes == ["19 layers have unfinished incremental sparsity"]
    for layer in report.failing:
        dense = math.floor(mid_spec.rate * (math.prod(layer.shape) // 4))
        assert layer.violating_groups == dense  # every still-dense group keeps 4 of 4
        assert f"{dense} of {layer.groups} N:M groups still dense" == layer.note


def test_projected_mid_training_passes(store, mid_spec):
    report = verify_artifact(store.folded(mid_spec))
    assert report.ok and all(layer.note == "projected by magnitude" for layer in report.expected)


def _break_folded(store, tmp_path, broken: dict[str, int]):
    """A copy of the folded resnet18 whose listed layers get that many groups made fully dense."""
    raw = torch.load(store.folded(nm="2:4"), map_location="cpu", weights_only=True)
    for name, count in broken.items():
        weight = raw["state_dict"][f"{name}.weight"].clone()
        for k in range(count):
            weight[k, 0:4, 0, 0] = 0.5  # group (k, c0-3, r0, s0): 4 of 4
        raw["state_dict"][f"{name}.weight"] = weight
    path = tmp_path / "edited.pt"
    torch.save(raw, path)
    return path


def test_edited_folded_file_fails(store, tmp_path):
    path = _break_folded(store, tmp_path, {"layer1.0.convbn1": 1, "layer3.1.convbn2": 3})
    report = verify_artifact(path)
    assert not report.ok
    assert {layer.name: layer.violating_groups for layer in report.failing} == {"layer1.0.convbn1": 1, "layer3.1.convbn2": 3}
    assert report.verdict == "FAIL: 2 of 19 sparse layers break 2:4"


def test_folded_dense_layers_are_not_expected_sparse(store):
    report = verify_artifact(store.folded(arch="mobilenet_v1"))
    assert report.ok and len(report.expected) == 13
    by_name = {layer.name: layer for layer in report.layers}
    depthwise = by_name["features.0.0"]
    assert depthwise.depthwise and depthwise.grouped and not depthwise.expected_sparse and not depthwise.holds
    assert not by_name["conv1.0"].expected_sparse and not by_name["conv1.0"].channels_divisible  # C = 3
    assert by_name["fc"].op == "linear" and not by_name["fc"].expected_sparse
    assert len(report.layers) == 13 + 14 + 1


def test_dense_model_has_nothing_to_verify(store):
    report = verify_artifact(store.checkpoint(layer_type="DenseConv2dBN"))
    assert not report.ok and report.verdict == "FAIL: no sparse layers found to hold 2:4"


def test_verify_refuses_unknown_formats(tmp_path):
    torch.save({"format": "somebody/else", "x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(InputFileError, match="artifact format 'somebody/else' cannot be verified"):
        verify_artifact(tmp_path / "other.pt")
    with pytest.raises(InputFileError, match="not found"):
        verify_artifact(tmp_path / "missing.pt")
