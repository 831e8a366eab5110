"""Property-based tests (hypothesis) for the option parsers.

Every parser either returns a value that satisfies its contract or raises a project error
(``MaxQDeployError``): never another exception, whatever text a user types. The N:M arithmetic's
properties are in tests/test_core_sparsity.py.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maxq_deploy.core.errors import MaxQDeployError, first_line

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------ option parsers


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
