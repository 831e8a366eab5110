"""assert_pattern_kept: INT8 weights must keep what the float weights had, or nothing is written."""

from __future__ import annotations

import pytest

from maxq_deploy.core.errors import PatternViolationError
from maxq_deploy.quantize.artifact import Int8LayerCheck
from maxq_deploy.quantize.result import assert_pattern_kept


def _check(name: str, *, holds: bool, fp32_holds: bool, zeros_kept: bool = True, violating: int = 0) -> Int8LayerCheck:
    return Int8LayerCheck(name, "sparse", [8, 8, 3, 3], groups=144, violating_groups=violating, holds=holds,
                          fp32_holds=fp32_holds, zeros_kept=zeros_kept, new_zeros=0)


def test_layers_that_keep_the_pattern_or_never_had_it_pass() -> None:
    assert_pattern_kept([_check("a", holds=True, fp32_holds=True), _check("b", holds=False, fp32_holds=False, violating=3)])


def test_a_layer_that_lost_the_pattern_in_int8_is_named_with_its_groups() -> None:
    with pytest.raises(PatternViolationError) as info:
        assert_pattern_kept([_check("ok", holds=True, fp32_holds=True),
                             _check("layer2.0.convbn1", holds=False, fp32_holds=True, violating=5)])
    assert str(info.value).startswith("INT8 weights of layer2.0.convbn1 break 2:4 (5 of 144 groups)")


def test_a_float_zero_that_is_not_an_int8_zero_is_refused() -> None:
    with pytest.raises(PatternViolationError, match="INT8 weights of fc"):
        assert_pattern_kept([_check("fc", holds=True, fp32_holds=True, zeros_kept=False)])
