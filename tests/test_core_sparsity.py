"""N:M arithmetic: parsing, grouping along the input-channel axis, checks, inference, projection."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from maxq_deploy.core.errors import SparsityPatternError
from maxq_deploy.reference import compute_mask
from maxq_deploy.core.sparsity import (
    CANDIDATE_M,
    NMPattern,
    check_pattern,
    dense_groups_for,
    groups_along,
    infer_mask_pattern,
    mask_agrees,
    nonzeros_per_group,
    project_to_pattern,
)

TRAINED_PATTERNS = ["2:4", "1:4", "2:8", "1:16"]


def _weight(shape=(16, 32, 3, 3), seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


# --- NMPattern -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, n, m", [("2:4", 2, 4), (" 1:16 ", 1, 16), ("2:8", 2, 8), ("1:4", 1, 4)])
def test_parse_valid(text, n, m):
    pattern = NMPattern.parse(text)
    assert (pattern.n, pattern.m) == (n, m)
    assert str(pattern) == f"{n}:{m}"
    assert NMPattern.parse(pattern) is pattern
    assert pattern.density == pytest.approx(n / m)


@pytest.mark.parametrize("text, fragment", [
    ("2-4", "must look like 2:4"), ("abc", "must look like 2:4"), ("2:4:8", "must look like 2:4"),
    ("", "must look like 2:4"), ("-1:4", "must look like 2:4"),
    ("4:2", "0 < N < M"), ("0:4", "0 < N < M"), ("4:4", "0 < N < M"),
])
def test_parse_invalid_names_value(text, fragment):
    with pytest.raises(SparsityPatternError, match=fragment) as info:
        NMPattern.parse(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("trained, hardware, expected", [
    ("2:4", "2:4", True), ("1:4", "2:4", True), ("2:8", "2:4", True), ("1:16", "2:4", True),
    ("1:2", "2:4", True), ("4:8", "2:4", False), ("3:8", "2:4", False), ("2:4", "1:4", False),
    ("2:4", "4:8", True), ("3:4", "2:4", False), ("1:3", "2:4", False),
])
def test_implies(trained, hardware, expected):
    assert NMPattern.parse(trained).implies(NMPattern.parse(hardware)) is expected


@pytest.mark.parametrize("trained", ["1:4", "2:8", "1:16", "4:8", "3:8"])
def test_implies_agrees_with_worst_case_tensor(trained):
    """Brute check of ``implies`` on the worst tensor: all N non-zeros packed at a group's start."""
    t = NMPattern.parse(trained)
    row = torch.zeros(t.m)
    row[: t.n] = 1.0
    worst = row.repeat(4, 1).reshape(4, t.m)  # [out, in] Linear-like, groups along axis 1
    assert check_pattern(worst, "2:4").holds is t.implies(NMPattern(2, 4))


# --- grouping ------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [4, 8, 16])
def test_groups_follow_maxq_axis(m):
    """Groups are cut along input channels exactly as MaxQ does: W.permute(0, 2, 3, 1).reshape(-1, M)."""
    w = _weight((8, 32, 3, 3))
    assert torch.equal(groups_along(w, m), w.permute(0, 2, 3, 1).reshape(-1, m))
    assert groups_along(w, m).shape == (8 * 3 * 3 * 32 // m, m)


def test_groups_for_linear_weight_run_along_input_features():
    w = torch.arange(24.0).reshape(2, 12)
    groups = groups_along(w, 4)
    assert groups.tolist()[0] == [0.0, 1.0, 2.0, 3.0]
    assert groups.shape == (6, 4)


def test_groups_need_channels_divisible_by_m():
    with pytest.raises(SparsityPatternError, match=r"6 values, not divisible by M=4"):
        groups_along(torch.ones(8, 6, 3, 3), 4)


def test_nonzeros_per_group_counts():
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0]])
    assert nonzeros_per_group(w, 4).tolist() == [2, 1]


# --- check_pattern ------------------------------------------------------------------------

def test_check_pattern_counts_violations():
    w = torch.zeros(2, 8, 1, 1)
    w[0, 0:2] = 1.0  # group (k=0, c0-3): 2 non-zeros
    w[0, 4:7] = 1.0  # group (k=0, c4-7): 3 non-zeros -> violates 2:4
    w[1, 0:4] = 1.0  # group (k=1, c0-3): 4 non-zeros -> violates
    check = check_pattern(w, "2:4")
    assert (check.applicable, check.groups, check.violating_groups, check.max_nonzeros) == (True, 4, 2, 4)
    assert not check.holds
    assert check_pattern(w, "4:8").holds is False  # k=1: 4 of 8 ok; k=0: 5 of 8 not
    assert check_pattern(w, "3:4").violating_groups == 1


def test_check_pattern_not_applicable_when_axis_too_short():
    check = check_pattern(torch.ones(4, 6, 1, 1), "2:4")
    assert not check.applicable and not check.holds
    assert check_pattern(torch.ones(4), "2:4").applicable is False


# --- masks made by the reference layers ---------------------------------------------------

@pytest.mark.parametrize("nm", TRAINED_PATTERNS)
@pytest.mark.parametrize("layer_type", ["SoftMaxQConv2DBNV2Pro", "HardMaxQConv2DBNV2Pro", "SoftMaxQConv2DBNV1", "SoftRandomConv2dBN"])
def test_infer_finished_mask(nm, layer_type):
    pattern = NMPattern.parse(nm)
    mask = compute_mask(_weight((16, 32, 3, 3)), pattern.n, pattern.m, layer_type)
    found = infer_mask_pattern(mask)
    assert found.pattern == pattern
    assert found.groups == mask.numel() // pattern.m
    assert found.dense_groups == 0
    assert nonzeros_per_group(mask, pattern.m).eq(pattern.n).all()
    assert mask_agrees(mask, pattern)
    assert dense_groups_for(mask, pattern) == (mask.numel() // pattern.m, 0)


@pytest.mark.parametrize("nm", TRAINED_PATTERNS)
def test_infer_mid_training_mask_counts_dense_groups(nm):
    pattern = NMPattern.parse(nm)
    weight = _weight((16, 64, 3, 3), seed=3)
    mask = compute_mask(weight, pattern.n, pattern.m, "SoftMaxQConv2DBNV2Pro", rate=0.25)
    groups = weight.numel() // pattern.m
    found = infer_mask_pattern(mask)
    assert found.pattern == pattern
    assert (found.groups, found.dense_groups) == (groups, math.floor(0.25 * groups))
    assert dense_groups_for(mask, pattern) == (groups, math.floor(0.25 * groups))
    assert mask_agrees(mask, pattern)


def test_all_dense_mask_has_no_pattern():
    found = infer_mask_pattern(torch.ones(8, 16, 1, 1))
    assert found.pattern is None and found.groups == found.dense_groups == 8 * 16 // 2


def test_inconsistent_mask_is_an_error():
    mask = torch.zeros(2, 8, 1, 1)
    mask[0, :3] = 1.0  # groups of 8 keep 3 and 1; groups of 4 or 2 keep nothing somewhere
    mask[1, :1] = 1.0
    with pytest.raises(SparsityPatternError, match="no consistent N:M pattern"):
        infer_mask_pattern(mask)


def test_mask_agrees_rejects_denser_groups():
    mask = compute_mask(_weight(), 2, 4, "HardSRSTEConv2dBN")
    assert mask_agrees(mask, NMPattern(2, 4))
    assert mask_agrees(mask, NMPattern(4, 8))  # 4 of every 8: weaker, still agrees
    assert not mask_agrees(mask, NMPattern(1, 4))
    assert not mask_agrees(mask, NMPattern(2, 8))


# --- projection -------------------------------------------------------------------------------

@pytest.mark.parametrize("nm", TRAINED_PATTERNS)
def test_project_keeps_largest_magnitudes(nm):
    pattern = NMPattern.parse(nm)
    w = _weight((8, 32, 3, 3), seed=7)
    out = project_to_pattern(w, pattern)
    assert out.shape == w.shape and out.is_contiguous()
    assert check_pattern(out, pattern).holds
    groups_in, groups_out = groups_along(w, pattern.m), groups_along(out, pattern.m)
    kept = groups_out != 0
    assert kept.sum(1).eq(pattern.n).all()
    # every kept value is unchanged and at least as large as every dropped one of its group
    assert torch.equal(groups_out[kept], groups_in[kept])
    smallest_kept = groups_in.abs().masked_fill(~kept, float("inf")).min(1).values
    largest_dropped = groups_in.abs().masked_fill(kept, -1.0).max(1).values
    assert (smallest_kept >= largest_dropped).all()


def test_project_is_identity_on_sparse_tensor_and_works_on_linear_axis():
    w = project_to_pattern(_weight(), "2:4")
    assert torch.equal(project_to_pattern(w, "2:4"), w)
    lin = torch.tensor([[4.0, -5.0, 1.0, 0.5, 0.0, 0.25, -0.5, 3.0]])
    assert project_to_pattern(lin, "2:4").tolist() == [[4.0, -5.0, 0.0, 0.0, 0.0, 0.0, -0.5, 3.0]]


# --- the fast paths agree with the plain definitions -------------------------------------------------

def _infer_by_definition(mask: torch.Tensor):
    """infer_mask_pattern's rule written plainly: one full count per candidate M."""
    from maxq_deploy.core.sparsity import CANDIDATE_M, MaskPattern

    best = None
    for m in (m for m in CANDIDATE_M if mask.shape[1] % m == 0):
        counts = (mask.permute(0, 2, 3, 1).reshape(-1, m) != 0).sum(1)
        n = int(counts.min())
        if 0 < n < m and bool(((counts == n) | (counts == m)).all()):
            if best is None or (n / m, m) < (best.pattern.n / best.pattern.m, best.pattern.m):
                best = MaskPattern(NMPattern(n, m), counts.numel(), int((counts == m).sum()))
    if best is None:
        m = next(m for m in CANDIDATE_M if mask.shape[1] % m == 0)
        if bool(((mask.permute(0, 2, 3, 1).reshape(-1, m) != 0).sum(1) == m).all()):
            return MaskPattern(None, mask.numel() // m, mask.numel() // m)
        return "error"
    return best


def test_infer_matches_definition_on_many_masks():
    g = torch.Generator().manual_seed(11)
    cases = 0
    for c in (2, 4, 8, 12, 16, 24, 32, 48, 64):
        for nm in ("1:2", "2:4", "1:4", "2:8", "4:8", "1:16", "3:4"):
            pattern = NMPattern.parse(nm)
            for rate in (0.0, 0.4, 1.0):
                if c % pattern.m:
                    continue
                weight = torch.randn(6, c, 3, 3, generator=g)
                masks = [compute_mask(weight, pattern.n, pattern.m, "HardMaxQConv2DBNV2Pro", rate, g)]
                masks.append((torch.rand(6, c, 1, 1, generator=g) < 0.5).float())
                for mask in masks:
                    try:
                        got = infer_mask_pattern(mask)
                    except SparsityPatternError:
                        got = "error"
                    assert got == _infer_by_definition(mask), (c, nm, rate)
                    cases += 1
    assert cases > 100


def test_check_pattern_counts_beyond_one_byte():
    wide = torch.ones(2, 512)
    wide[1, 300:] = 0.0
    check = check_pattern(wide, "299:512")
    assert (check.groups, check.violating_groups, check.max_nonzeros) == (2, 2, 512)
    assert nonzeros_per_group(wide, 512).tolist() == [512, 300]


# --- properties (hypothesis): parsing, implication, projection, counts, inference ----------------------

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
patterns = st.integers(min_value=2, max_value=32).flatmap(lambda m: st.tuples(st.integers(1, m - 1), st.just(m)))


@FAST
@given(st.text(max_size=12))
def test_nm_parse_any_text_is_a_pattern_or_a_project_error(text):
    try:
        p = NMPattern.parse(text)
    except SparsityPatternError:
        return
    assert 0 < p.n < p.m
    assert NMPattern.parse(str(p)) == p
    left, right = text.strip().split(":")
    assert (int(left), int(right)) == (p.n, p.m)


@FAST
@given(patterns, st.sampled_from(["{}:{}", " {}:{} ", "{} : {}", "0{}:{}"]))
def test_nm_parse_round_trip(nm, form):
    n, m = nm
    assert NMPattern.parse(form.format(n, m)) == NMPattern(n, m)


@FAST
@given(st.integers(-5, 40), st.integers(-5, 40))
def test_nm_pattern_needs_0_lt_n_lt_m(n, m):
    if 0 < n < m:
        assert NMPattern(n, m).density == n / m
    else:
        with pytest.raises(SparsityPatternError):
            NMPattern(n, m)


@FAST
@given(patterns, patterns)
def test_implies_is_sound(a, b):
    """If a implies b, every tensor holding a holds b: check on the worst case for a (its densest groups)."""
    pa, pb = NMPattern(*a), NMPattern(*b)
    if not pa.implies(pb):
        return
    length = math.lcm(pa.m, pb.m)
    assume(length <= 256)
    row = torch.zeros(length)
    for start in range(0, length, pa.m):  # n non-zeros at the front of every group of a
        row[start : start + pa.n] = 1.0
    for shift in range(pa.m):  # and every rotation of that layout
        rolled = torch.roll(row, shift).reshape(1, -1)
        assert check_pattern(rolled, pb).holds or check_pattern(rolled, pa).violating_groups > 0


@st.composite
def weights(draw, max_groups: int = 6, ms: tuple[int, ...] | None = None):
    m = draw(st.sampled_from(ms) if ms else st.integers(2, 16))
    n = draw(st.integers(1, m - 1))
    k = draw(st.integers(1, 4))
    c = m * draw(st.integers(1, max_groups))
    rs = draw(st.sampled_from([(1, 1), (3, 3), (1, 2)]))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, c, *rs, generator=g)
    zero_share = draw(st.sampled_from([0.0, 0.3, 0.9]))
    w = w * (torch.rand(w.shape, generator=g) >= zero_share)
    return NMPattern(n, m), w


@FAST
@given(weights())
def test_projection_holds_the_pattern_and_keeps_the_largest(case):
    pattern, w = case
    p = project_to_pattern(w, pattern)
    assert p.shape == w.shape
    assert check_pattern(p, pattern).holds
    gw, gp = groups_along(w, pattern.m), groups_along(p, pattern.m)
    kept = gp != 0
    assert torch.equal(gp[kept], gw[kept])  # kept values are untouched
    # no dropped value is larger than the smallest kept one of its group
    dropped_max = torch.where(kept, torch.zeros_like(gw), gw.abs()).max(dim=1).values
    kept_min = torch.where(kept, gw.abs(), torch.full_like(gw, float("inf"))).min(dim=1).values
    has_kept = kept.any(dim=1)
    assert bool((dropped_max[has_kept] <= kept_min[has_kept]).all())
    assert torch.equal(project_to_pattern(p, pattern), p)  # idempotent


@FAST
@given(weights())
def test_check_counts_agree_with_nonzeros_per_group(case):
    pattern, w = case
    counts = nonzeros_per_group(w, pattern.m)
    c = check_pattern(w, pattern)
    assert c.groups == counts.numel() == w.numel() // pattern.m
    assert c.violating_groups == int((counts > pattern.n).sum())
    assert c.max_nonzeros == int(counts.max())
    assert dense_groups_for(w, pattern) == (c.groups, c.violating_groups)


@FAST
@given(weights(ms=tuple(m for m in CANDIDATE_M if m <= 16)), st.sampled_from([0.0, 0.5, 1.0]), st.integers(0, 2**16))
def test_inferred_pattern_of_a_maxq_mask(case, dense_share, seed):
    """A MaxQ mask (N kept per sparse group, all M in a dense group) infers its own N:M, or a sparser
    equivalent fitting every group, and the dense groups are counted exactly."""
    pattern, w = case
    g = torch.Generator().manual_seed(seed)
    groups = groups_along(torch.ones_like(w), pattern.m)
    scores = torch.rand(groups.shape, generator=g)
    mask = torch.zeros_like(groups)
    mask.scatter_(1, scores.topk(pattern.n, dim=1).indices, 1.0)
    dense = torch.rand(groups.shape[0], generator=g) < dense_share
    mask[dense] = 1.0
    moved = w.movedim(1, -1).shape
    full = mask.reshape(moved).movedim(-1, 1).contiguous()
    found = infer_mask_pattern(full)
    if bool(dense.all()):
        assert found.pattern is None and found.dense_groups == found.groups
        return
    assert found.pattern is not None
    assert found.pattern.density <= pattern.density
    assert mask_agrees(full, found.pattern)
    if found.pattern == pattern:
        assert found.dense_groups == int(dense.sum())


@FAST
@given(st.integers(1, 64), st.integers(2, 32))
def test_groups_along_refuses_indivisible_axes(c, m):
    w = torch.zeros(2, c, 1, 1)
    if c % m:
        with pytest.raises(SparsityPatternError):
            groups_along(w, m)
        assert not check_pattern(w, NMPattern(1, m)).applicable
    else:
        assert groups_along(w, m).shape == (2 * c // m, m)
