"""``onnx_graph.qdq_check``: per conv of a Q/DQ graph, INT8 in (a DequantizeLinear before it, through
layout ops) and INT8 out (a QuantizeLinear after it, through what TensorRT fuses), and the one line
``verify`` prints with the right words for each violation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from maxq_deploy.onnx_graph.qdq_check import QdqConvCheck, qdq_conv_checks, summary_line
from tensorrt_fixtures import make_onnx

IN_FLOAT = "input float (no DequantizeLinear before it)"
OUT_FLOAT = "output float (no QuantizeLinear after it)"


def _one_conv(before: list[str], after: list[str], in_dq: bool = True, out_q: bool = True) -> onnx.ModelProto:
    """input -> [Q, DQ] -> ``before`` ops -> Conv "conv" -> ``after`` ops -> [Q, DQ] -> output; a second input for Add."""
    n = helper.make_node
    nodes, x = [], "input"
    if in_dq:
        nodes += [n("QuantizeLinear", [x, "s", "z"], ["xq"]), n("DequantizeLinear", ["xq", "s", "z"], ["xd"])]
        x = "xd"
    for i, op in enumerate(before):
        extra = {"Reshape": ["same_shape"], "Pad": ["no_pads"]}.get(op, [])
        attrs = {"Cast": {"to": TensorProto.FLOAT}, "Transpose": {"perm": [0, 1, 2, 3]}}.get(op, {})
        nodes.append(n(op, [x, *extra], [f"b{i}"], **attrs))
        x = f"b{i}"
    nodes += [n("QuantizeLinear", ["w", "sw", "zw"], ["wq"], axis=0), n("DequantizeLinear", ["wq", "sw", "zw"], ["wd"], axis=0),
              n("Conv", [x, "wd"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    x = "c"
    for i, op in enumerate(after):
        inputs = [x, "skip"] if op == "Add" else [x]
        attrs = {"MaxPool": {"kernel_shape": [1, 1]}, "Cast": {"to": TensorProto.FLOAT}}.get(op, {})
        nodes.append(n(op, inputs, [f"a{i}"], **attrs))
        x = f"a{i}"
    if out_q:
        nodes += [n("QuantizeLinear", [x, "s", "z"], ["yq"]), n("DequantizeLinear", ["yq", "s", "z"], ["y"])]
    else:
        nodes.append(n("Identity", [x], ["y"]))
    w = np.random.default_rng(0).standard_normal((4, 4, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.full(4, 0.01, np.float32), "sw"),
             numpy_helper.from_array(np.zeros(4, np.int8), "zw"), numpy_helper.from_array(np.float32(0.05), "s"),
             numpy_helper.from_array(np.int8(0), "z"), numpy_helper.from_array(np.array([1, 4, 6, 6], np.int64), "same_shape"),
             numpy_helper.from_array(np.zeros(8, np.int64), "no_pads")]
    shape = [1, 4, 6, 6]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape),
                                           helper.make_tensor_value_info("skip", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _check(model: onnx.ModelProto) -> tuple[bool, bool]:
    (check,) = qdq_conv_checks("mem.onnx", model=model)
    assert check.name == "conv"
    return check.int8_in, check.int8_out


def test_a_conv_between_dq_and_q_passes() -> None:
    (check,) = qdq_conv_checks("mem.onnx", model=_one_conv([], ["Relu"]))
    assert (check.int8_in, check.int8_out, check.ok, check.describe()) == (True, True, True, "INT8 in, INT8 out")
    assert check.to_dict() == {"name": "conv", "int8_in": True, "int8_out": True, "ok": True}
    assert summary_line([check]) == "Q/DQ: 1 of 1 convs INT8 in and INT8 out"


@pytest.mark.parametrize("before, expected", [
    ([], True), (["Reshape"], True), (["Pad", "Identity"], True), (["Cast", "Transpose", "Identity"], True),
    (["Identity"] * 4, False), (["Relu"], False),
], ids=["direct", "reshape", "pad+identity", "cast+transpose+identity", "4 layout ops: too far", "relu"])
def test_int8_in_means_a_dequantize_linear_before_through_layout_ops(before, expected) -> None:
    assert _check(_one_conv(before, ["Relu"]))[0] is expected


@pytest.mark.parametrize("after, expected", [
    ([], True), (["Relu"], True), (["Add", "Relu"], True), (["MaxPool"], True), (["Clip", "Identity", "Cast"], True),
    (["Relu"] * 4, False), (["Sigmoid", "Softmax"], False),
], ids=["direct", "relu", "residual add+relu", "maxpool", "clip+identity+cast", "4 activations: too far", "softmax"])
def test_int8_out_means_a_quantize_linear_after_through_fused_ops(after, expected) -> None:
    assert _check(_one_conv([], after))[1] is expected


def test_each_violation_is_reported_in_its_words() -> None:
    no_dq = QdqConvCheck("a", *_check(_one_conv([], ["Relu"], in_dq=False)))
    no_q = QdqConvCheck("b", *_check(_one_conv([], ["Relu"], out_q=False)))
    neither = QdqConvCheck("c", False, False)
    assert (no_dq.int8_in, no_dq.int8_out, no_q.int8_in, no_q.int8_out) == (False, True, True, False)
    assert [c.describe() for c in (no_dq, no_q, neither)] == [IN_FLOAT, OUT_FLOAT, f"{IN_FLOAT}; {OUT_FLOAT}"]
    assert not any(c.ok for c in (no_dq, no_q, neither))
    assert summary_line([no_dq, no_q, neither]) == (
        f"Q/DQ: 0 of 3 convs INT8 in and INT8 out; float at a ({IN_FLOAT}), b ({OUT_FLOAT}), c ({IN_FLOAT}; {OUT_FLOAT})")


def test_the_export_shaped_graph_reports_per_conv(tmp_path: Path) -> None:
    checks = qdq_conv_checks(make_onnx(tmp_path / "q.onnx", qdq=True))
    assert [(c.name, c.int8_in, c.int8_out) for c in checks] == [  # convs only: the fc Gemm is not listed
        ("conv1", False, True),  # the network input is float; Relu -> Q after it
        ("layer1.0.convbn1", True, True),
        ("dw", True, False),
        ("layer1.0.convbn2", False, False),
    ]
    assert summary_line(checks) == (
        f"Q/DQ: 1 of 4 convs INT8 in and INT8 out; float at conv1 ({IN_FLOAT}), dw ({OUT_FLOAT}), "
        f"layer1.0.convbn2 ({IN_FLOAT}; {OUT_FLOAT})")
    assert summary_line(checks, on_purpose={"conv1", "layer1.0.convbn2"}) == (
        f"Q/DQ: 1 of 2 convs INT8 in and INT8 out (2 more kept float on purpose); float at dw ({OUT_FLOAT})")


def test_a_graph_without_qdq_has_no_checks(tmp_path: Path) -> None:
    assert qdq_conv_checks(make_onnx(tmp_path / "m.onnx")) is None


def test_summary_names_six_float_convs_at_most() -> None:
    checks = [QdqConvCheck(f"c{i}", True, False) for i in range(8)] + [QdqConvCheck("fine", True, True)]
    line = summary_line(checks)
    assert line.startswith("Q/DQ: 1 of 9 convs INT8 in and INT8 out; float at c0 (")
    assert line.endswith(f"c5 ({OUT_FLOAT})...") and "c6" not in line
