"""How far outputs moved (``core.compare``): every number against a hand computation, NaN/Inf, shapes, merging."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maxq_deploy.core.compare import OutputDiff, compare_outputs, merge_diffs

INF = float("inf")
#: Two images, three classes; ``GOT`` moves row 0's top class (2 -> 1) and keeps row 1's.
REF = np.array([[1.0, 2.0, 3.0], [4.0, -8.0, 0.0]])
GOT = np.array([[1.5, 2.5, 2.0], [4.0, -8.0, 1.0]])


def test_every_number_against_a_hand_computation() -> None:
    diff = compare_outputs(REF, GOT)
    # |GOT - REF| = [[.5, .5, 1], [0, 0, 1]]; max |REF| = 8; ||REF|| = sqrt(1+4+9+16+64) = sqrt(94)
    assert diff == OutputDiff(
        images=2, max_abs_error=1.0, max_abs_reference=8.0, relative_error=1.0 / 8.0,
        relative_l2_error=pytest.approx(math.sqrt(0.25 + 0.25 + 1 + 1) / math.sqrt(94)), top1_agreement=0.5, finite=True,
    )
    assert diff.to_dict() == {"images": 2, "max_abs_error": 1.0, "max_abs_reference": 8.0, "relative_error": 0.125,
                              "relative_l2_error": diff.relative_l2_error, "top1_agreement": 0.5, "finite": True}


def test_identical_outputs_are_zero_error_full_agreement() -> None:
    diff = compare_outputs(REF, REF.copy())
    assert (diff.max_abs_error, diff.relative_error, diff.relative_l2_error, diff.top1_agreement) == (0.0, 0.0, 0.0, 1.0)


def test_torch_tensors_and_numpy_arrays_give_the_same_numbers() -> None:
    ref = torch.tensor(REF, dtype=torch.float32, requires_grad=True) * 1  # a tensor with a graph: detached, not refused
    got = torch.tensor(GOT, dtype=torch.float16)  # half precision is widened, not compared in float16
    assert compare_outputs(ref, got) == compare_outputs(REF.astype(np.float32), GOT.astype(np.float16).astype(np.float32))
    assert compare_outputs(ref, got).max_abs_error == 1.0


def test_top1_agreement_compares_each_row_flattened() -> None:
    ref = np.zeros((4, 2, 2))
    ref.reshape(4, -1)[np.arange(4), [0, 1, 2, 3]] = 1.0  # [N, ...] outputs: arg-max over the flattened row
    got = ref.copy()
    got[3, 0, 0] = 2.0  # one row of four changes its arg-max
    assert compare_outputs(ref, got).top1_agreement == 0.75


def test_an_all_zero_reference_does_not_divide_by_zero() -> None:
    diff = compare_outputs(np.zeros((2, 3)), np.full((2, 3), 1e-6))
    assert diff.max_abs_reference == 0.0 and diff.relative_error == pytest.approx(1e-6 / 1e-12)
    assert math.isfinite(diff.relative_l2_error) and diff.finite


@pytest.mark.parametrize("bad", [float("nan"), INF, -INF])
@pytest.mark.parametrize("where", ["got", "reference"])
def test_nan_or_inf_in_either_output_is_not_finite_and_infinitely_wrong(bad: float, where: str) -> None:
    spoiled = GOT.copy() if where == "got" else REF.copy()
    spoiled[1, 2] = bad
    ref, got = (REF, spoiled) if where == "got" else (spoiled, GOT)
    diff = compare_outputs(ref, got)
    assert diff.finite is False
    assert diff.max_abs_error == diff.relative_error == diff.relative_l2_error == INF  # never NaN: NaN <= tolerance is False, and max() drops it
    assert diff.max_abs_reference == 8.0  # the largest finite reference value


def test_shape_mismatch_is_refused_naming_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"outputs differ in shape: \(2, 4\) vs reference \(2, 3\)"):
        compare_outputs(REF, np.zeros((2, 4)))
    with pytest.raises(ValueError, match="differ in shape"):
        compare_outputs(REF, REF.T)  # same size, other layout: not silently compared


def test_empty_batch_and_per_image_scalars() -> None:
    empty = compare_outputs(np.zeros((0, 10)), np.zeros((0, 10)))
    assert (empty.images, empty.max_abs_error, empty.max_abs_reference, empty.top1_agreement, empty.finite) == (0, 0.0, 0.0, 1.0, True)
    per_image = compare_outputs(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))  # [N]: one value per image
    assert (per_image.images, per_image.max_abs_error, per_image.relative_error) == (3, 1.0, 1.0 / 3.0)


def test_merge_keeps_the_worst_errors_and_weights_agreement_by_images() -> None:
    a = compare_outputs(REF, GOT)  # 2 images, agreement 0.5, max abs 1, max ref 8
    b = compare_outputs(REF[:1] * 10, REF[:1] * 10 + 3)  # 1 image, agreement 1, max abs 3, max ref 30
    merged = merge_diffs([a, b])
    assert merged.images == 3
    assert merged.max_abs_error == 3.0 and merged.max_abs_reference == 30.0
    assert merged.relative_error == 3.0 / 30.0  # from the merged maxima, not the worst batch's ratio (1/8)
    assert merged.relative_l2_error == max(a.relative_l2_error, b.relative_l2_error)
    assert merged.top1_agreement == pytest.approx((0.5 * 2 + 1.0 * 1) / 3)
    assert merged.finite and merge_diffs([b, a]) == merged
    assert merge_diffs([a]) == a


def test_merge_never_loses_a_batch_whose_reference_held_nan() -> None:
    """A NaN reference batch made the merged result depend on batch order: merged after a good batch, Python's
    ``max`` kept the good numbers and the parity check (finite and relative <= tolerance) passed."""
    good = compare_outputs(REF, GOT)
    nan_ref = REF.copy()
    nan_ref[0, 0] = float("nan")
    spoiled = compare_outputs(nan_ref, GOT)
    for order in ([good, spoiled], [spoiled, good]):
        merged = merge_diffs(order)
        assert merged.finite is False and merged.relative_error == merged.max_abs_error == INF
    assert merge_diffs([good, spoiled]) == merge_diffs([spoiled, good])


def test_merging_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="no output comparisons to merge"):
        merge_diffs([])
