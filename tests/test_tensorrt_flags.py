"""Builder flag plans for TensorRT 10 vs 11: weak typing before 10.12, strong typing from 10.12, only flags the installed version exposes."""

from __future__ import annotations

import pytest

from maxq_deploy.core.errors import MaxQDeployError
from maxq_deploy.tensorrt.flags import choose_builder_flags, known_flag_names

# --------------------------------------------------------------------------------------------- flags


@pytest.mark.parametrize("version", ["10.0.1", "10.12.0", "11.1.0"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_flag_plan_invariants(version: str, precision: str) -> None:
    plan = choose_builder_flags(version, known_flag_names(version), precision)
    assert "SPARSE_WEIGHTS" in plan.builder_flags and "--sparsity=enable" in plan.trtexec_flags
    assert not any("force" in f for f in plan.trtexec_flags)
    if plan.strongly_typed:  # strongly typed networks forbid precision flags
        assert not {"FP16", "INT8", "BF16", "FP8"} & set(plan.builder_flags)
        assert not {"--fp16", "--int8"} & set(plan.trtexec_flags)
    if version.startswith("11"):
        assert plan.strongly_typed and plan.network_flags == ()  # always on; the flag is ignored there
        assert plan.builder_flags == ("SPARSE_WEIGHTS",) and plan.trtexec_flags == ("--sparsity=enable",)


@pytest.mark.parametrize("precision, flags, trtexec", [
    ("fp32", ("SPARSE_WEIGHTS",), ("--sparsity=enable",)),
    ("fp16", ("SPARSE_WEIGHTS", "FP16"), ("--sparsity=enable", "--fp16")),
    ("int8", ("SPARSE_WEIGHTS", "INT8", "FP16"), ("--sparsity=enable", "--int8", "--fp16")),
])
def test_flags_before_10_12_use_weak_typing(precision: str, flags: tuple, trtexec: tuple) -> None:
    plan = choose_builder_flags("10.0.1.6", known_flag_names("10.0"), precision)
    assert not plan.strongly_typed and plan.network_flags == ()
    assert plan.builder_flags == flags and plan.trtexec_flags == trtexec


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_flags_from_10_12_are_strongly_typed(precision: str) -> None:
    plan = choose_builder_flags("10.12.0.36", known_flag_names("10.12"), precision)
    assert plan.strongly_typed and plan.network_flags == ("STRONGLY_TYPED",)
    assert plan.builder_flags == ("SPARSE_WEIGHTS",)
    assert plan.trtexec_flags == ("--sparsity=enable", "--stronglyTyped")
    assert any("deprecates" in note for note in plan.notes)


def test_flags_follow_what_the_installed_version_exposes() -> None:
    # An 11.x build (no FP16/INT8 flags at all) and a 10.x one without SPARSE_WEIGHTS.
    plan = choose_builder_flags("11.1.0", {"SPARSE_WEIGHTS", "STRONGLY_TYPED", "TF32"}, "int8", sparse=False)
    assert plan.builder_flags == () and plan.trtexec_flags == () and plan.strongly_typed
    plan = choose_builder_flags("10.3.0", {"FP16", "INT8", "STRONGLY_TYPED"}, "fp16")
    assert plan.builder_flags == ("FP16",) and any("SPARSE_WEIGHTS" in n for n in plan.notes)


def test_flag_plan_rejects_unknown_precision() -> None:
    with pytest.raises(MaxQDeployError, match="graph precision must be one of fp32, fp16, int8, got 'bf8'"):
        choose_builder_flags("10.9", known_flag_names("10.9"), "bf8")
