"""``onnx_graph.edit``: each post-processing edit keeps the graph valid (onnx.checker) and, where it
should, its outputs equal on ONNX Runtime; the naming contract (``input``/``output``, Conv/Gemm
nodes and weights after the checkpoint layers) holds whichever way the exporter named things."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from maxq_deploy.onnx_graph.edit import (
    FP16_OPS, _assert_clean_graph, _float32_boundary, _name_io, _rename_layers, canonical_form, graph_to_fp16, rename_value,
)
from onnx_fixtures import run_model, tiny_net

X = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)


def _torchscript(module, input_name: str = "x", output_name: str = "y") -> onnx.ModelProto:
    """The legacy exporter's raw graph (before any edit of this module)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(X),), buffer, dynamo=False, opset_version=17,
                          input_names=[input_name], output_names=[output_name])
    return onnx.load_from_string(buffer.getvalue())


def _reference(module) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(X)).numpy()


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name: str, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


# --------------------------------------------------------------------------------------------- rename_value, _name_io


def test_rename_value_renames_every_use_and_makes_room_for_a_taken_name() -> None:
    c = numpy_helper.from_array(np.full((1, 4), 2.0, np.float32), "c")
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="relu"), helper.make_node("Add", ["y", "c"], ["out"], name="add")],
                   [_vi("x", [1, 4])], [_vi("out", [1, 4])], [c])
    x = np.array([[-1.0, 0.5, 2.0, -3.0]], np.float32)
    before = run_model(model, x)
    rename_value(model.graph, "c", "y")  # "y" is the Relu's output: that tensor moves to "y.orig1"
    onnx.checker.check_model(model, full_check=True)
    relu, add = model.graph.node
    assert list(relu.output) == ["y.orig1"] and list(add.input) == ["y.orig1", "y"]
    assert [i.name for i in model.graph.initializer] == ["y"]
    rename_value(model.graph, "out", "output")
    rename_value(model.graph, "x", "x")  # a rename to itself changes nothing
    assert [v.name for v in model.graph.output] == ["output"] and list(add.output) == ["output"]
    np.testing.assert_array_equal(run_model(model, x), before)
    np.testing.assert_array_equal(before, np.maximum(x, 0) + 2)


def test_rename_value_counts_past_orig_names_already_taken() -> None:
    model = _model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["a.orig1"]),
                    helper.make_node("Add", ["a", "a.orig1"], ["b"])], [_vi("x", [2])], [_vi("b", [2])], [])
    rename_value(model.graph, "b", "a")
    onnx.checker.check_model(model, full_check=True)
    assert [list(n.output) for n in model.graph.node] == [["a.orig2"], ["a.orig1"], ["a"]]
    assert list(model.graph.node[2].input) == ["a.orig2", "a.orig1"]
    x = np.array([-1.0, 3.0], np.float32)
    np.testing.assert_array_equal(run_model(model, x), [0.0, 6.0])


def test_name_io_names_the_one_input_and_output_and_keeps_outputs() -> None:
    net = tiny_net()
    model = _torchscript(net)
    _name_io(model.graph)
    onnx.checker.check_model(model, full_check=True)
    assert [v.name for v in model.graph.input] == ["input"] and [v.name for v in model.graph.output] == ["output"]
    np.testing.assert_allclose(run_model(model, X), _reference(net), rtol=1e-5, atol=1e-5)


def test_name_io_refuses_a_graph_with_two_inputs_as_a_bug() -> None:
    model = _model([helper.make_node("Add", ["a", "b"], ["c"])], [_vi("a", [2]), _vi("b", [2])], [_vi("c", [2])], [])
    with pytest.raises(RuntimeError, match="bug: exported graph has 2 inputs and 1 outputs, expected 1 and 1"):
        _name_io(model.graph)


# --------------------------------------------------------------------------------------------- fp16


def test_graph_to_fp16_and_float32_boundary_keep_outputs_within_fp16_precision() -> None:
    net = tiny_net()
    model = _torchscript(net, "input", "output")
    graph_to_fp16(model.graph)
    assert {i.data_type for i in model.graph.initializer} == {TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    onnx.checker.check_model(model, full_check=True)
    half = run_model(model, X.astype(np.float16))
    assert half.dtype == np.float16
    _float32_boundary(model.graph)
    onnx.checker.check_model(model, full_check=True)
    assert (model.graph.node[0].op_type, model.graph.node[0].name) == ("Cast", "input_to_fp16")
    assert (model.graph.node[-1].op_type, model.graph.node[-1].name) == ("Cast", "output_to_fp32")
    assert [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)] == [TensorProto.FLOAT] * 2
    out = run_model(model, X)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, half.astype(np.float32), rtol=5e-3, atol=1e-3)  # the same fp16 network inside
    np.testing.assert_allclose(out, _reference(net), rtol=2e-2, atol=2e-2)


def test_graph_to_fp16_converts_constant_nodes_and_lets_overflow_become_inf() -> None:
    big = helper.make_tensor("big", TensorProto.FLOAT, [2], [1e6, 0.25])
    model = _model([helper.make_node("Constant", [], ["k"], value=big), helper.make_node("Mul", ["x", "k"], ["y"])],
                   [_vi("x", [2])], [_vi("y", [2])], [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflow is silent here: the writer's finite check refuses it later
        graph_to_fp16(model.graph)
    value = numpy_helper.to_array(model.graph.node[0].attribute[0].t)
    assert value.dtype == np.float16 and np.isinf(value[0]) and value[1] == np.float16(0.25)


def test_graph_to_fp16_refuses_an_op_it_does_not_know() -> None:
    assert "Softplus" not in FP16_OPS
    model = _model([helper.make_node("Softplus", ["x"], ["y"]), helper.make_node("LRN", ["y"], ["z"], size=3)],
                   [_vi("x", [1, 2, 2, 2])], [_vi("z", [1, 2, 2, 2])], [])
    with pytest.raises(RuntimeError, match="fp16 conversion does not know LRN, Softplus; check and add to FP16_OPS"):
        graph_to_fp16(model.graph)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # nothing half-converted


# --------------------------------------------------------------------------------------------- layer names


def _anonymize(model: onnx.ModelProto, nodes: bool, weights: bool) -> None:
    """Make the exporter's names useless: Conv/Gemm node names without scopes, weights without module names."""
    for i, node in enumerate(model.graph.node):
        if node.op_type in ("Conv", "Gemm"):
            if nodes:
                node.name = f"node_{node.op_type}_{i}"
            if weights:
                rename_value(model.graph, node.input[1], f"onnx::{node.op_type}_{i}")
                rename_value(model.graph, node.input[2], f"onnx::{node.op_type}_{i}_b")


@pytest.mark.parametrize("nodes, weights", [(False, False), (False, True), (True, False), (True, True)],
                         ids=["names", "scope", "source", "values"])
def test_rename_layers_names_nodes_and_weights_after_the_checkpoint(nodes, weights) -> None:
    net = tiny_net()
    model = _torchscript(net)
    _anonymize(model, nodes, weights)
    notes: list[str] = []
    layers = _rename_layers(model.graph, net, {"block.conv"}, notes)
    onnx.checker.check_model(model, full_check=True)
    assert notes == []
    assert [(l.name, l.op, l.weight, l.bias, l.dtype, l.sparse) for l in layers] == [
        ("stem", "Conv", "stem.weight", "stem.bias", "float32", False),
        ("block.conv", "Conv", "block.conv.weight", "block.conv.bias", "float32", True),
        ("fc", "Gemm", "fc.weight", "fc.bias", "float32", False),
    ]
    assert [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm")] == ["stem", "block.conv", "fc"]
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name, param in net.state_dict().items():
        np.testing.assert_array_equal(inits[name], param.numpy())
    np.testing.assert_allclose(run_model(model, X), _reference(net), rtol=1e-5, atol=1e-5)


def test_rename_layers_keeps_a_name_it_cannot_map_and_says_so() -> None:
    net = tiny_net()
    with torch.no_grad():
        net.block.conv.weight.copy_(torch.ones(8, 8, 3, 3))
    twin = torch.nn.Conv2d(8, 8, 3)  # a second module with the same weight values: the values are no proof
    with torch.no_grad():
        twin.weight.copy_(torch.ones(8, 8, 3, 3))
    net.twin = twin
    model = _torchscript(net)
    _anonymize(model, nodes=True, weights=True)
    notes: list[str] = []
    layers = _rename_layers(model.graph, net, set(), notes)
    assert [l.name for l in layers] == ["stem", "node_Conv_2", "fc"]
    assert notes == ["Conv node 'node_Conv_2' could not be mapped to a checkpoint layer; name kept"]
    assert layers[1].weight == "onnx::Conv_2" and layers[1].bias == "onnx::Conv_2_b"
    np.testing.assert_allclose(run_model(model, X), _reference(net), rtol=1e-5, atol=1e-5)


def test_assert_clean_graph_refuses_batchnorm_as_a_bug() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.from_numpy(X),), buffer, dynamo=False, opset_version=17, do_constant_folding=False,
                          training=torch.onnx.TrainingMode.PRESERVE)
    model = onnx.load_from_string(buffer.getvalue())
    assert "BatchNormalization" in [n.op_type for n in model.graph.node]
    with pytest.raises(RuntimeError, match="still has BatchNormalization nodes"):
        _assert_clean_graph(model.graph)
    _assert_clean_graph(_torchscript(tiny_net()).graph)  # a clean graph passes


# --------------------------------------------------------------------------------------------- canonical_form


def _untidy_graph() -> onnx.ModelProto:
    """One graph with every spelling canonical_form removes, around a real computation."""
    rng = np.random.default_rng(1)
    n = helper.make_node
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.float32(0.05), "s"), numpy_helper.from_array(np.int8(0), "z"),
        numpy_helper.from_array(np.int8(-128), "lo"), numpy_helper.from_array(np.int8(127), "hi"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
        numpy_helper.from_array(np.zeros(7, np.float32), "unused"),
    ]
    nodes = [
        n("Constant", [], ["b"], value=numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")),
        n("Identity", ["b"], ["b_id"]),
        n("QuantizeLinear", ["x", "s", "z"], ["q1"], axis=1), n("QuantizeLinear", ["x", "s", "z"], ["q2"]),
        n("Clip", ["q1", "lo", "hi"], ["q1c"]),  # int8 already lies in [-128, 127]: a no-op
        n("DequantizeLinear", ["q1c", "s", "z"], ["d1"]), n("DequantizeLinear", ["q2", "s", "z"], ["d2"]),
        n("Conv", ["d1", "w", "b_id"], ["c1"], auto_pad="NOTSET", pads=[1, 1, 1, 1]),
        n("Conv", ["d2", "w", "b_id"], ["c2"], pads=[1, 1, 1, 1]),
        n("Add", ["c1", "c2"], ["sum"]),
        n("ReduceMean", ["sum", "axes"], ["pooled"], keepdims=1),
        n("Reshape", ["pooled", "shape"], ["output"]),
        n("Relu", ["sum"], ["dead"]),  # nobody reads it
    ]
    return _model(nodes, [_vi("x", [2, 3, 8, 8])], [_vi("output", [2, 4])], inits, opset=18)


def test_canonical_form_rewrites_every_spelling_and_keeps_the_outputs() -> None:
    model = _untidy_graph()
    onnx.checker.check_model(model, full_check=True)
    before = run_model(model, X)
    canonical_form(model)
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(run_model(model, X), before, rtol=1e-6, atol=1e-6)  # pooling may sum in another order
    assert [n.op_type for n in model.graph.node] == [
        "QuantizeLinear", "DequantizeLinear", "Conv", "Conv", "Add", "GlobalAveragePool", "Flatten"]
    q, dq, conv1, conv2 = model.graph.node[:4]
    assert list(dq.input[:1]) == list(q.output) and conv1.input[0] == conv2.input[0] == dq.output[0]  # one Q/DQ pair left
    assert conv1.input[2] == "b"  # the Constant is an initializer, read without the Identity
    assert [a.name for a in conv1.attribute] == ["pads"] and [a.name for a in q.attribute] == []  # defaults implicit
    assert list(model.graph.node[-1].attribute) == []  # Flatten(axis=1): the default, left implicit
    assert sorted(i.name for i in model.graph.initializer) == ["b", "s", "w", "z"]


def test_canonical_form_keeps_a_clip_that_clips_and_a_reshape_that_is_not_a_flatten() -> None:
    n = helper.make_node
    inits = [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.int8(0), "z"),
             numpy_helper.from_array(np.int8(0), "lo"), numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
             numpy_helper.from_array(np.array([2, 3, 1], np.int64), "shape")]
    nodes = [n("QuantizeLinear", ["x", "s", "z"], ["q"]), n("Clip", ["q", "lo"], ["qc"]),  # a ReLU in int8: not a no-op
             n("DequantizeLinear", ["qc", "s", "z"], ["d"]), n("ReduceMean", ["d", "axes"], ["m"], keepdims=1),
             n("Reshape", ["m", "shape"], ["output"])]
    model = _model(nodes, [_vi("x", [2, 3, 8, 8])], [_vi("output", [2, 3, 1])], inits, opset=18)
    before = run_model(model, X)
    assert (before >= 0).all()
    canonical_form(model)
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["QuantizeLinear", "Clip", "DequantizeLinear", "GlobalAveragePool", "Reshape"]
    np.testing.assert_allclose(run_model(model, X), before, rtol=1e-6, atol=1e-6)  # pooling may sum in another order


def test_canonical_form_keeps_a_reduce_mean_that_is_not_a_global_pool() -> None:
    n = helper.make_node
    inits = [numpy_helper.from_array(np.array([3], np.int64), "axes")]
    model = _model([n("ReduceMean", ["x", "axes"], ["output"], keepdims=1)], [_vi("x", [2, 3, 8, 8])],
                   [_vi("output", [2, 3, 8, 1])], inits, opset=18)
    canonical_form(model)
    assert [n.op_type for n in model.graph.node] == ["ReduceMean"]
    np.testing.assert_allclose(run_model(model, X), X.mean(axis=3, keepdims=True), rtol=1e-5, atol=1e-6)
