"""Optimization profiles: defaults, options, validation, and a fixed-batch graph admitting only its batch."""

from __future__ import annotations

import pytest

from maxq_deploy.core.errors import ProfileShapeError
from maxq_deploy.tensorrt.profiles import ProfileShapes, check_profile_fits, resolve_profile

# --------------------------------------------------------------------------------------------- profiles


def test_profile_defaults_and_options() -> None:
    dyn = [None, 3, 64, 64]
    p = resolve_profile("input", dyn)
    assert (p.min_shape, p.opt_shape, p.max_shape) == ((1, 3, 64, 64), (8, 3, 64, 64), (32, 3, 64, 64))
    assert resolve_profile("input", dyn, opt_batch=64).max_batch == 64
    assert resolve_profile("input", dyn, max_batch=4).opt_batch == 4
    assert resolve_profile("input", dyn, min_batch=16).opt_batch == 16
    assert resolve_profile("input", dyn, 2, 4, 256).trtexec_spec("max") == "input:256x3x64x64"


@pytest.mark.parametrize("batches, match", [
    ((8, 4, 16), "min <= opt <= max, got min_batch=8, opt_batch=4, max_batch=16"),
    ((1, 64, 32), "min <= opt <= max"),
    ((0, 1, 2), "min_batch must be an integer >= 1, got 0"),
])
def test_profile_validation(batches: tuple, match: str) -> None:
    with pytest.raises(ProfileShapeError, match=match.replace("(", r"\(").replace(")", r"\)")):
        resolve_profile("input", [None, 3, 64, 64], *batches)


def test_fixed_batch_graph_admits_only_its_batch() -> None:
    p = resolve_profile("input", [4, 3, 32, 32])
    assert (p.min_batch, p.opt_batch, p.max_batch) == (4, 4, 4)
    assert resolve_profile("input", [4, 3, 32, 32], opt_batch=4).opt_batch == 4
    with pytest.raises(ProfileShapeError, match="fixed batch of 4 .* got max_batch=32"):
        resolve_profile("input", [4, 3, 32, 32], max_batch=32)
    with pytest.raises(ProfileShapeError, match="fixed C, H, W"):
        resolve_profile("input", [None, 3, None, None])
    with pytest.raises(ProfileShapeError, match="C, H, W 3x64x64 do not match the ONNX input 3x32x32"):
        check_profile_fits(ProfileShapes("input", 4, 4, 4, (3, 64, 64)), "input", [4, 3, 32, 32])
