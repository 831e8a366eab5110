"""verify on a quantized checkpoint: the 2:4 pattern is checked on the INT8 weights computed from the stored ranges."""

from __future__ import annotations

from pathlib import Path

import torch

from maxq_deploy.verify import verify_artifact
from quantize_fixtures import _quantized_dict


def test_int8_weights_of_a_2_4_checkpoint_pass(store, tmp_path: Path) -> None:
    path = tmp_path / "int8.pt"
    torch.save(_quantized_dict(store.folded(nm="2:4")), path)
    report = verify_artifact(path)
    assert report.kind == "quantized-checkpoint" and report.ok, report.verdict
    assert report.verdict == "PASS: all 19 sparse layers hold 2:4"
    assert all(layer.dtype == "int8" for layer in report.expected)
    fc = [layer for layer in report.layers if layer.name == "fc"]
    assert len(fc) == 1 and fc[0].dtype == "int8" and fc[0] not in report.expected


def test_a_dense_group_in_the_stored_weights_fails_on_the_int8_values(store, tmp_path: Path) -> None:
    ckpt = _quantized_dict(store.folded(nm="2:4"))
    weight = ckpt["state_dict"]["layer2.0.convbn1.weight"].clone()
    weight[0, 0:4, 0, 0] = 0.5  # one group of 4 with 4 non-zeros
    ckpt["state_dict"]["layer2.0.convbn1.weight"] = weight
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    report = verify_artifact(path)
    assert not report.ok
    assert {layer.name: layer.violating_groups for layer in report.failing} == {"layer2.0.convbn1": 1}
