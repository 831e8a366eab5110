"""``sensitivity``: per-layer top-1 change of 2:4 / INT8 / both, reusing block inputs within the
(layers x 2 + 1) evaluation budget, and the same numbers as full passes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maxq_deploy.core.errors import MaxQDeployError
from maxq_deploy.sensitivity import analyze, fake_quant_weight

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sens")
    rng = np.random.default_rng(0)
    path = folder / "data.npz"
    np.savez(path, images=rng.standard_normal((48, 3, SIZE, SIZE)).astype(np.float32), labels=rng.integers(0, 10, 48))
    return path


def test_fake_quant_keeps_zeros_and_channel_max():
    w = torch.randn(8, 4, 3, 3)
    w[:, 0] = 0
    q = fake_quant_weight(w)
    assert torch.equal(q[:, 0], torch.zeros_like(q[:, 0]))
    assert torch.allclose(q.abs().amax((1, 2, 3)), w.abs().amax((1, 2, 3)))
    assert (q - w).abs().max() <= w.abs().max() / 127 / 2 + 1e-6


@pytest.mark.slow
def test_2_4_model_costs_one_pass_per_layer_and_matches_full_passes(store, data, tmp_path):
    ckpt = store.checkpoint(arch="resnet18", nm="2:4")
    plot = tmp_path / "s.svg"
    fast = analyze(ckpt, data, limit=40, batch_size=16, plot=plot)
    layers = len(fast.layers)
    assert layers == 19 and fast.images == 40 and fast.reuse
    assert all(l.holds_2_4 and l.delta_2_4 is None and l.delta_both == l.delta_int8 for l in fast.layers)
    assert fast.evaluations == layers  # (a) n/a and (c) == (b): one variant pass per layer
    assert fast.evaluation_equivalents <= fast.budget == 2 * layers + 1
    assert abs(sum(l.flops_share for l in fast.layers) - 100) < 20  # the stem and fc hold the rest
    assert plot.read_text().startswith("<svg") and "layer1.0.convbn1" in plot.read_text()
    full = analyze(ckpt, data, limit=40, batch_size=16, reuse=False)
    assert not full.reuse and full.evaluation_equivalents == 1 + layers
    assert [l.delta_int8 for l in fast.layers] == [l.delta_int8 for l in full.layers]
    assert fast.baseline_top1 == full.baseline_top1
    json.dumps(fast.to_dict())


@pytest.mark.slow
def test_4_8_model_projects_each_layer_within_budget(store, data):
    result = analyze(store.checkpoint(arch="resnet18", nm="4:8"), data, limit=16, batch_size=16)
    layers = len(result.layers)
    assert not any(l.holds_2_4 for l in result.layers)
    assert all(l.delta_2_4 is not None and l.delta_both is not None for l in result.layers)
    assert result.evaluations == 3 * layers
    assert result.evaluation_equivalents <= 2 * layers + 1  # suffix passes only
    assert all(l.trt_sparse for l in result.layers)  # after projection, every ungrouped C % 4 layer can


def test_trt_shape_rules():
    from torch import nn

    from maxq_deploy.sensitivity import trt_sparse_shape

    assert trt_sparse_shape(nn.Conv2d(32, 32, 3, groups=32), True) == (False, "depthwise conv: never sparse")
    ok, why = trt_sparse_shape(nn.Conv2d(6, 8, 3), True)
    assert not ok and "C=6 is not a multiple of 4" in why
    assert trt_sparse_shape(nn.Conv2d(512, 512, 3), True) == (True, "")


def test_bad_input_is_one_line(store, data, tmp_path, capsys):
    from maxq_deploy.cli.app import main

    ckpt = store.checkpoint(arch="resnet18", nm="2:4")
    for args in (["--limit", "0"], ["--plot", str(tmp_path / "p.png")], ["--plot", str(data).replace(".npz", ".svg"), "--labels", str(tmp_path / "no.npy")]):
        with pytest.raises(SystemExit) as info:
            main(["sensitivity", str(ckpt), "--data", str(data), *args])
        err = capsys.readouterr().err
        assert info.value.code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert err.startswith("error:")
    with pytest.raises(MaxQDeployError):
        analyze(ckpt, data, limit=0)
