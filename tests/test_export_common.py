"""What every export target shares: the seeded parity batch, the parity verdict, op counts."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from maxq_deploy.core.compare import compare_outputs
from maxq_deploy.export.common import PARITY_SEED, op_counts, parity_from_diff, seeded_batch


def test_seeded_batch_is_standard_normal_float32_and_repeatable() -> None:
    a = seeded_batch([4, 3, 8, 8])
    assert a.shape == (4, 3, 8, 8) and a.dtype == np.float32
    np.testing.assert_array_equal(a, seeded_batch((4, 3, 8, 8), seed=PARITY_SEED))
    assert not np.array_equal(a, seeded_batch([4, 3, 8, 8], seed=PARITY_SEED + 1))
    assert abs(float(a.mean())) < 0.2 and 0.8 < float(a.std()) < 1.2


def test_op_counts_count_each_op_type_sorted() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Add", ["a", "x"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    counts = op_counts(helper.make_model(graph))
    assert counts == {"Add": 1, "Relu": 2} and list(counts) == ["Add", "Relu"]


@pytest.mark.parametrize("shift, passed", [(1e-4, True), (1e-2, False), (np.nan, False)])
def test_parity_passes_only_within_tolerance_and_finite(shift: float, passed: bool) -> None:
    reference = np.array([[10.0, -2.0, 1.0], [0.5, 4.0, -10.0]], dtype=np.float32)
    got = reference.copy()
    got[0, 1] += shift * 10.0  # max |reference| is 10: the relative error is ``shift``
    check = parity_from_diff(compare_outputs(reference, got), "torch", (2, 3, 8, 8), 7, tolerance=1e-3)
    assert check.passed is passed
    assert check.batch_shape == [2, 3, 8, 8] and check.seed == 7 and check.tolerance == 1e-3
    if passed:
        assert check.relative_error == pytest.approx(shift, rel=1e-3) and check.max_abs_reference == 10.0
