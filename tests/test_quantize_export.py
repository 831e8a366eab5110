"""summarize_qdq: the check every Q/DQ export ends with (symmetric int8 zero points, per-channel weight scales)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from maxq_deploy.quantize.export import QdqSummary, summarize_qdq
from quantize_fixtures import _qdq_graph


def test_counts_the_q_dq_nodes_and_the_per_channel_weights() -> None:
    assert summarize_qdq(_qdq_graph()) == QdqSummary(quantize_nodes=4, dequantize_nodes=4, per_channel=2, zero_points="int8 zeros")


def test_a_nonzero_or_uint8_zero_point_is_named() -> None:
    model = _qdq_graph()
    z = next(i for i in model.graph.initializer if i.name == "z")
    z.CopyFrom(numpy_helper.from_array(np.uint8(128), "z"))
    with pytest.raises(RuntimeError, match="bug: QuantizeLinear 'x_q' zero point is not int8 zeros"):
        summarize_qdq(model)


def test_a_graph_without_q_dq_is_refused() -> None:
    model = _qdq_graph()
    keep = [n for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    with pytest.raises(RuntimeError, match="m.onnx has no QuantizeLinear/DequantizeLinear nodes"):
        summarize_qdq(model, "m.onnx")
