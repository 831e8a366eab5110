"""Property-based tests (hypothesis) for the option parsers and the N:M arithmetic.

Every parser either returns a value that satisfies its contract or raises a project error
(``MaxQDeployError``): never another exception, whatever text a user types.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from maxq_deploy.core.errors import MaxQDeployError, SparsityPatternError, first_line
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

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
patterns = st.integers(min_value=2, max_value=32).flatmap(lambda m: st.tuples(st.integers(1, m - 1), st.just(m)))


# ------------------------------------------------------------------------------ option parsers


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


@FAST
@given(st.text(max_size=30))
def test_parse_floats_returns_floats_or_a_project_error(text):
    from maxq_deploy.cli.render import parse_floats

    try:
        values = parse_floats(text, "--mean")
    except MaxQDeployError:
        return
    assert isinstance(values, tuple) and all(isinstance(v, float) for v in values)


@FAST
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=5),
       st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=5))
def test_preprocess_accepts_only_three_finite_means_and_positive_stds(mean, std):
    from maxq_deploy.data import Preprocess

    ok = len(mean) == 3 and len(std) == 3 and all(map(math.isfinite, mean + std)) and min(std or [0]) > 0
    if ok:
        p = Preprocess(mean=tuple(mean), std=tuple(std))
        assert p.mean == tuple(float(v) for v in mean)
    else:
        with pytest.raises(MaxQDeployError):
            Preprocess(mean=tuple(mean), std=tuple(std))


@FAST
@given(st.text(max_size=20))
def test_batch_sizes_text(text):
    from maxq_deploy.bench import parse_batch_sizes

    try:
        sizes = parse_batch_sizes(text)
    except MaxQDeployError:
        return
    assert sizes and all(isinstance(s, int) and s >= 1 for s in sizes)
    assert len(set(sizes)) == len(sizes)


@FAST
@given(st.lists(st.integers(-3, 10_000), max_size=6))
def test_batch_sizes_list(values):
    from maxq_deploy.bench import parse_batch_sizes

    ok = bool(values) and min(values) >= 1 and len(set(values)) == len(values)
    if ok:
        assert parse_batch_sizes(values) == tuple(values)
    else:
        with pytest.raises(MaxQDeployError):
            parse_batch_sizes(values)


@FAST
@given(st.text(max_size=400))
def test_short_reason_is_one_line_and_never_ends_mid_word_unmarked(text):
    out = first_line(text, 60)
    assert "\n" not in out
    first = " ".join((text.strip().splitlines() or [""])[0].split())
    assert len(out) <= 64 or out == first
    if out.endswith(" ..."):
        assert first.startswith(out[:-4].rstrip(" ,;:")[:1]) or not out[:-4]
    else:
        assert out == first or (not first and out == "")


# ------------------------------------------------------------------------------ N:M arithmetic


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
