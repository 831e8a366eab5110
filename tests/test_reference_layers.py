"""maxq_deploy.reference.layers: MaxQ's mask rules (local N:M, incremental dense groups, soft terms) and the trainable layer."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from maxq_deploy.core.sparsity import groups_along, nonzeros_per_group
from maxq_deploy.reference import LAYER_TYPES, ReferenceMaxQConvBN, compute_mask, preserve_rate
from maxq_deploy.reference.layers import TAU

LAYER_KEYS = {"conv.weight", "mask", "scale.weight", "scale.bias", "scale.running_mean", "scale.running_var",
              "scale.num_batches_tracked"}


def _weight(shape=(16, 32, 3, 3), seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _term_by_definition(values: torch.Tensor, n: int, m: int, sigmoid: bool) -> torch.Tensor:
    """MAXQ_FORMAT.md's filter/kernel term of one row: the t smallest get 0, the others sigmoid((a - thr)/tau) or 1."""
    t = math.floor((m - n) / m * len(values))
    ascending = sorted(range(len(values)), key=lambda i: float(values[i]))
    threshold = (float(values[ascending[t - 1]]) + float(values[ascending[t]])) / 2
    out = [1.0 / (1.0 + math.exp(-(float(v) - threshold) / 0.01)) if sigmoid else 1.0 for v in values]
    for i in ascending[:t]:
        out[i] = 0.0
    return torch.tensor(out)


def _soft_mask_by_definition(weight: torch.Tensor, n: int, m: int, v1: bool) -> torch.Tensor:
    """The soft mask at preserve rate 0 written from the format description, one group and one row at a time."""
    a = weight.abs()
    k_out, c_in, r_size, s_size = a.shape
    local = torch.zeros_like(a)
    for k in range(k_out):
        for r in range(r_size):
            for s in range(s_size):
                for c0 in range(0, c_in, m):
                    group = [float(a[k, c, r, s]) for c in range(c0, c0 + m)]
                    for i in sorted(range(m), key=lambda i: -group[i])[:n]:
                        local[k, c0 + i, r, s] = 1.0
    filter_term = torch.stack([_term_by_definition(a[k].flatten(), n, m, not v1).reshape(c_in, r_size, s_size)
                               for k in range(k_out)])
    kernel_term = torch.zeros_like(a)
    if r_size * s_size > 1 or v1:
        for r in range(r_size):
            for s in range(s_size):
                kernel_term[:, :, r, s] = _term_by_definition(a[:, :, r, s].flatten(), n, m, not v1).reshape(k_out, c_in)
    return local * (1.0 + filter_term + kernel_term)


# --- moved from tests/test_core_sparsity.py ----------------------------------------------------

def test_incremental_rule_keeps_lowest_l1_groups_dense():
    weight = _weight((8, 16, 1, 1), seed=5)
    mask = compute_mask(weight, 2, 4, "HardMaxQConv2DBNV2Pro", rate=0.5)
    l1 = groups_along(weight.abs(), 4).sum(1)
    dense = nonzeros_per_group(mask, 4) == 4
    assert int(dense.sum()) == 16
    assert float(l1[dense].max()) <= float(l1[~dense].min())


@pytest.mark.parametrize("layer_type", list(LAYER_TYPES))
def test_mask_values_per_layer_type(layer_type):
    rule = LAYER_TYPES[layer_type]
    mask = compute_mask(_weight(), 2, 4, layer_type)
    kept = mask[mask != 0]
    assert int((mask == 0).sum()) == mask.numel() // 2
    if rule.soft:
        assert float(kept.min()) >= 1.0 and float(kept.max()) <= 3.0
        assert float(kept.max()) > 1.0  # really soft: folding must multiply by the mask
    else:
        assert torch.equal(kept, torch.ones_like(kept))


@pytest.mark.parametrize("schedule, mid", [("linear", 0.5), ("cubic", 0.125), ("cos", math.cos(math.pi / 4)), ("exp", None)])
def test_preserve_rate_schedules(schedule, mid):
    assert preserve_rate(0, 10, 30, schedule) == 1.0
    assert preserve_rate(10, 10, 30, schedule) == pytest.approx(1.0)
    assert preserve_rate(30, 10, 30, schedule) == pytest.approx(0.0, abs=1e-12)
    assert preserve_rate(99, 10, 30, schedule) == pytest.approx(0.0, abs=1e-12)
    values = [preserve_rate(t, 10, 30, schedule) for t in range(10, 31)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    if mid is not None:
        assert preserve_rate(20, 10, 30, schedule) == pytest.approx(mid)


def test_preserve_rate_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        preserve_rate(5, 0, 10, "step")


# --- the mask rules against hand computations and the format description --------------------------

def test_preserve_rate_without_a_schedule_window_is_a_step():
    """end <= start: every group dense before ``end``, none from it on (no division by a zero-length window)."""
    assert preserve_rate(4, 5, 5) == 1.0
    assert preserve_rate(5, 5, 5) == 0.0
    assert preserve_rate(2, 10, 3, "linear") == 1.0 and preserve_rate(3, 10, 3, "linear") == 0.0


def test_preserve_rate_exp_by_hand():
    u = 0.25
    expected = (math.exp(-5 * u) - math.exp(-5)) / (1 - math.exp(-5))
    assert preserve_rate(15, 10, 30, "exp") == pytest.approx(expected)


def test_hard_mask_keeps_the_two_largest_magnitudes_by_hand():
    weight = torch.tensor([0.1, -3.0, 2.0, 0.5, -0.7, 0.6, 0.0, 0.65]).reshape(1, 8, 1, 1)
    mask = compute_mask(weight, 2, 4, "HardMaxQConv2DBNV2")
    assert mask.flatten().tolist() == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    one_of_four = compute_mask(weight, 1, 4, "HardSRSTEConv2dBN")
    assert one_of_four.flatten().tolist() == [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_soft_mask_of_a_1x1_layer_by_hand():
    """[0.1, 0.2, -0.205, 3]: 2:4 keeps -0.205 and 3; the filter threshold is (0.2 + 0.205) / 2."""
    weight = torch.tensor([0.1, 0.2, -0.205, 3.0]).reshape(1, 4, 1, 1)
    threshold = (0.2 + 0.205) / 2
    sigmoid = 1 / (1 + math.exp(-(0.205 - threshold) / TAU))  # 0.562: not saturated
    v2 = compute_mask(weight, 2, 4, "SoftMaxQConv2DBNV2").flatten().tolist()
    assert v2 == pytest.approx([0.0, 0.0, 1.0 + sigmoid, 2.0], abs=1e-6)  # 1x1: no kernel term in V2
    v1 = compute_mask(weight, 2, 4, "SoftMaxQConv2DBNV1").flatten().tolist()
    assert v1 == [0.0, 0.0, 3.0, 3.0]  # V1: 0/1 terms, and a kernel term even for 1x1


@pytest.mark.parametrize("shape", [(4, 8, 3, 3), (4, 8, 1, 1)])
@pytest.mark.parametrize("nm", ["2:4", "1:4", "2:8"])
@pytest.mark.parametrize("layer_type", ["SoftMaxQConv2DBNV2", "SoftMaxQConv2DBNV1"])
def test_soft_mask_matches_the_format_description(shape, nm, layer_type):
    n, m = (int(x) for x in nm.split(":"))
    weight = _weight(shape, seed=2)
    got = compute_mask(weight, n, m, layer_type)
    expected = _soft_mask_by_definition(weight, n, m, v1=layer_type.endswith("V1"))
    torch.testing.assert_close(got, expected.to(got.dtype), atol=1e-5, rtol=1e-5)  # float32 against Python doubles


@pytest.mark.parametrize("layer_type", ["SoftMaxQConv2DBNV2", "HardMaxQConv2DBNV2", "SoftSRSTEConv2dBN", "HardSRSTEConv2dBN"])
def test_types_without_the_incremental_rule_ignore_the_preserve_rate(layer_type):
    weight = _weight((8, 16, 3, 3), seed=1)
    assert torch.equal(compute_mask(weight, 2, 4, layer_type, rate=0.9), compute_mask(weight, 2, 4, layer_type))
    assert nonzeros_per_group(compute_mask(weight, 2, 4, layer_type, rate=0.9), 4).eq(2).all()


def test_descending_rule_keeps_highest_l1_groups_dense():
    weight = _weight((8, 16, 1, 1), seed=5)
    mask = compute_mask(weight, 2, 4, "SoftMaxQConv2DBNV2ProInverse", rate=0.25)
    l1 = groups_along(weight.abs(), 4).sum(1)
    dense = nonzeros_per_group(mask, 4) == 4
    assert int(dense.sum()) == math.floor(0.25 * 32)
    assert float(l1[dense].min()) >= float(l1[~dense].max())


def test_random_rule_draws_the_dense_groups_from_the_generator():
    weight = _weight((8, 16, 3, 3), seed=4)
    groups = weight.numel() // 4

    def dense(seed: int) -> torch.Tensor:
        mask = compute_mask(weight, 2, 4, "SoftMaxQConv2DBNV2ProRandom", 0.3, torch.Generator().manual_seed(seed))
        counts = nonzeros_per_group(mask, 4)
        assert bool(((counts == 2) | (counts == 4)).all())
        return counts == 4

    assert int(dense(0).sum()) == math.floor(0.3 * groups)
    assert torch.equal(dense(0), dense(0))
    assert not torch.equal(dense(0), dense(1))


def test_full_preserve_rate_leaves_every_group_dense():
    mask = compute_mask(_weight((8, 16, 3, 3)), 2, 4, "HardMaxQConv2DBNV2Pro", rate=1.0)
    assert torch.equal(mask, torch.ones_like(mask))


@pytest.mark.parametrize("layer_type", ["SoftRandomConv2dBN", "HardRandomConv2dBN"])
def test_random_local_rule_keeps_n_per_group_chosen_by_the_generator(layer_type):
    weight = _weight((8, 16, 3, 3), seed=6)

    def mask(seed: int) -> torch.Tensor:
        return compute_mask(weight, 2, 4, layer_type, generator=torch.Generator().manual_seed(seed))

    assert nonzeros_per_group(mask(0), 4).eq(2).all()
    assert torch.equal(mask(0), mask(0)) and not torch.equal(mask(0) != 0, mask(1) != 0)
    by_magnitude = compute_mask(weight, 2, 4, "HardMaxQConv2DBNV2") != 0
    assert not torch.equal(mask(0) != 0, by_magnitude)  # not the largest magnitudes


# --- the trainable layer -----------------------------------------------------------------------

def test_unknown_layer_type_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown layer type 'SoftMaxQConv2DBNV3'; known: SoftMaxQConv2DBNV1, .*DenseConv2dBN"):
        ReferenceMaxQConvBN(8, 8, 3, layer_type="SoftMaxQConv2DBNV3")


def test_layer_keys_follow_the_upstream_layout():
    assert set(ReferenceMaxQConvBN(8, 16, 3, 1, 1).state_dict()) == LAYER_KEYS
    dense = ReferenceMaxQConvBN(8, 16, 3, 1, 1, layer_type="DenseConv2dBN")
    assert set(dense.state_dict()) == LAYER_KEYS - {"mask"}  # DenseConv2dBN stores no mask
    assert dense.mask is None


def test_update_mask_stores_compute_mask_in_place():
    layer = ReferenceMaxQConvBN(8, 16, 3, 1, 1, layer_type="SoftMaxQConv2DBNV2Pro", n=1, m=4)
    buffer = layer.mask
    assert torch.equal(buffer, torch.ones_like(buffer))  # dense until the first update
    layer.update_mask(0.5)
    assert layer.mask is buffer
    assert torch.equal(buffer, compute_mask(layer.conv.weight, 1, 4, "SoftMaxQConv2DBNV2Pro", 0.5))
    dense = ReferenceMaxQConvBN(8, 16, 3, layer_type="DenseConv2dBN")
    dense.update_mask(0.0)  # nothing to update
    assert dense.mask is None


@pytest.mark.parametrize("layer_type", ["SoftMaxQConv2DBNV2Pro", "DenseConv2dBN"])
def test_eval_forward_is_batchnorm_of_the_masked_convolution(layer_type):
    torch.manual_seed(0)
    layer = ReferenceMaxQConvBN(8, 16, 3, 2, 1, layer_type=layer_type)
    layer.update_mask(0.0)
    bn = layer.scale
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 1.5)
    layer.eval()
    x = torch.randn(2, 8, 9, 9)
    weight = layer.conv.weight * (layer.mask if layer.mask is not None else 1.0)
    conv = F.conv2d(x, weight, None, 2, 1)
    expected = (conv - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    expected = expected * bn.weight[:, None, None] + bn.bias[:, None, None]
    with torch.no_grad():
        out = layer(x)
    assert out.shape == (2, 16, 5, 5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
