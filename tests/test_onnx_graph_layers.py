"""``onnx_graph.layers``: the layer table read from an ONNX graph (names, kinds, checkpoint-layout
shapes, 2:4 counted against the weights themselves, Q/DQ around each layer, metadata)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from maxq_deploy.core.errors import InputFileError
from maxq_deploy.onnx_graph.layers import OnnxLayer, read_onnx_graph
from tensorrt_fixtures import make_onnx


def test_read_onnx_graph_fp32(tmp_path: Path) -> None:
    g = read_onnx_graph(make_onnx(tmp_path / "m.onnx"))
    assert (g.input_name, g.input_shape, g.precision, g.nm) == ("input", [None, 3, 16, 16], "fp32", "2:4")
    assert set(g.layers) == {"conv1", "layer1.0.convbn1", "dw", "layer1.0.convbn2", "fc"}
    assert g.layers["layer1.0.convbn1"].holds_2_4 and not g.layers["layer1.0.convbn2"].holds_2_4
    dw = g.layers["dw"]
    assert (dw.groups, dw.in_channels, dw.shape) == (8, 8, [8, 1, 3, 3])
    assert (g.layers["fc"].op, g.layers["fc"].shape, g.layers["fc"].in_channels) == ("gemm", [10, 8], 8)
    assert g.aliases["layer1.0.convbn1.weight"] == "layer1.0.convbn1"
    assert g.expected_sparse == ["layer1.0.convbn1", "layer1.0.convbn2"]


def test_read_onnx_graph_qdq(tmp_path: Path) -> None:
    g = read_onnx_graph(make_onnx(tmp_path / "q.onnx", qdq=True, sparse_meta=False))
    assert g.precision == "int8"
    layer = g.layers["layer1.0.convbn1"]
    assert layer.weight == "layer1.0.convbn1.weight" and layer.weight_dtype == "int8" and layer.holds_2_4
    assert layer.input_quantized and layer.output_quantized  # DQ in, Relu -> Q out
    assert not g.layers["layer1.0.convbn2"].input_quantized
    assert g.sparse_layers is None and g.expected_sparse == ["layer1.0.convbn1"]  # fallback: weights holding 2:4


def test_read_onnx_graph_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(InputFileError, match="is not an ONNX model"):  # the one loader's words, as `verify` says them
        read_onnx_graph(bad)


# --------------------------------------------------------------------------------------------- built here


def _two_four(shape, rng: np.random.Generator) -> np.ndarray:
    """Random nonzero weights [K, C, ...] with exactly the 2 largest of every aligned group of 4 along C kept."""
    w = (rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)
    moved = np.moveaxis(w, 1, -1)
    groups = moved.reshape(-1, 4)
    drop = np.argsort(np.abs(groups), axis=1)[:, :2]
    np.put_along_axis(groups, drop, 0.0, axis=1)
    return np.moveaxis(groups.reshape(moved.shape), -1, 1).copy()


def _violations(w: np.ndarray) -> tuple[int, int]:
    """(groups of 4 along axis 1 with more than 2 nonzeros, groups): counted here, independently of the library."""
    groups = np.moveaxis(w, 1, -1).reshape(-1, 4)
    return int(((groups != 0).sum(axis=1) > 2).sum()), len(groups)


def _model(nodes, inits, metadata: dict[str, str] | None = None, input_shape=(2, 8, 4, 4), input_type=TensorProto.FLOAT,
           outputs=("y",)) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", input_type, list(input_shape))],
        [helper.make_tensor_value_info(name, input_type, None) for name in outputs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model


def test_2_4_is_counted_against_the_weights_themselves() -> None:
    rng = np.random.default_rng(0)
    good = _two_four((8, 8, 3, 3), rng)
    bad = good.copy()
    bad[0, 0:4, 0, 0] = [1.0, 2.0, 3.0, 0.0]  # 3 nonzeros in one group
    bad[5, 4:8, 2, 1] = [1.0, 2.0, 3.0, 4.0]  # 4 in another
    nodes = [helper.make_node("Conv", ["input", "good.weight"], ["a"], name="good", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "bad.weight"], ["y"], name="bad", pads=[1, 1, 1, 1])]
    g = read_onnx_graph("mem.onnx", model=_model(nodes, [numpy_helper.from_array(good, "good.weight"),
                                                          numpy_helper.from_array(bad, "bad.weight")]))
    assert _violations(good) == (0, 144) and _violations(bad) == (2, 144)
    for name, weight in (("good", good), ("bad", bad)):
        layer = g.layers[name]
        assert (layer.holds_2_4, layer.violating_groups, layer.nm_groups) == (_violations(weight)[0] == 0, *_violations(weight))
        assert (layer.op, layer.shape, layer.kernel, layer.in_channels, layer.out_channels) == ("conv", [8, 8, 3, 3], [3, 3], 8, 8)
        assert (layer.weight, layer.weight_dtype, layer.input_quantized, layer.output_quantized) == (f"{name}.weight", "float32", False, False)
    assert g.expected_sparse == ["good"] and g.precision == "fp32" and g.input_shape == [2, 8, 4, 4]


def test_gemm_and_matmul_weights_are_read_in_checkpoint_layout() -> None:
    """[out, in] whatever the graph stores: 2:4 is along the input features of each output."""
    rng = np.random.default_rng(1)
    w = _two_four((6, 8), rng)  # checkpoint layout [out=6, in=8], 2:4 along in
    assert _violations(w.T.copy())[0] > 0  # stored transposed, the pattern would not show along axis 1
    nodes = [helper.make_node("Flatten", ["input"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "wt"], ["g1"], name="plain_gemm"),  # B is [in, out]
             helper.make_node("Gemm", ["f", "w"], ["g2"], name="gemm_transB", transB=1),  # B is [out, in]
             helper.make_node("MatMul", ["f", "wt"], ["y"], name="matmul")]
    g = read_onnx_graph("mem.onnx", model=_model(nodes, [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w.T.copy(), "wt")],
                                                 input_shape=(2, 8)))
    for name, op in (("plain_gemm", "gemm"), ("gemm_transB", "gemm"), ("matmul", "matmul")):
        layer = g.layers[name]
        assert (layer.op, layer.shape, layer.in_channels, layer.out_channels) == (op, [6, 8], 8, 6), name
        assert (layer.holds_2_4, layer.violating_groups, layer.nm_groups) == (True, 0, 12), name
    assert "flat" not in g.layers


def test_weights_traced_through_qdq_and_cast_and_computed_weights_left_unknown() -> None:
    rng = np.random.default_rng(2)
    w = _two_four((8, 8, 1, 1), rng)
    scale = (np.abs(w).reshape(8, -1).max(1) / 127).astype(np.float32)
    wq = np.round(w / scale[:, None, None, None]).astype(np.int8)
    n = helper.make_node
    nodes = [
        n("DequantizeLinear", ["wq", "ws", "wz"], ["w_dq"], axis=0), n("Identity", ["w_dq"], ["w_id"]),
        n("Conv", ["input", "w_id"], ["a"], name="traced"),
        n("Constant", [], ["w_const"], value=numpy_helper.from_array(w.astype(np.float16), "c")),
        n("Cast", ["w_const"], ["w_cast"], to=TensorProto.FLOAT), n("Conv", ["a", "w_cast"], ["b"], name="from_constant"),
        n("Mul", ["w_cast", "two"], ["w_mul"]), n("Conv", ["b", "w_mul"], ["y"]),  # no name; its weight is computed
    ]
    inits = [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(scale, "ws"), numpy_helper.from_array(np.zeros(8, np.int8), "wz"),
             numpy_helper.from_array(np.float32(2.0), "two")]
    g = read_onnx_graph("mem.onnx", model=_model(nodes, inits))
    assert list(g.layers) == ["traced", "from_constant", "Conv_7"]  # an unnamed node is named after its op and place
    traced = g.layers["traced"]
    assert (traced.weight, traced.weight_dtype, traced.shape, traced.holds_2_4) == ("wq", "int8", [8, 8, 1, 1], True)
    constant = g.layers["from_constant"]
    assert (constant.weight, constant.weight_dtype, constant.holds_2_4) == ("w_const", "float16", True)
    computed = g.layers["Conv_7"]
    assert (computed.weight, computed.shape, computed.weight_dtype, computed.holds_2_4) == (None, [], "unknown", None)
    assert g.precision == "int8"  # any Q/DQ node
    assert g.aliases["wq"] == "traced" and g.aliases["w_id"] == "traced" and g.aliases["Conv_7"] == "Conv_7"


def test_a_weight_shared_by_two_layers_is_no_alias() -> None:
    w = _two_four((8, 8, 1, 1), np.random.default_rng(3))
    nodes = [helper.make_node("Conv", ["input", "shared"], ["a"], name="first"),
             helper.make_node("Conv", ["a", "shared"], ["y"], name="second")]
    g = read_onnx_graph("mem.onnx", model=_model(nodes, [numpy_helper.from_array(w, "shared")]))
    assert g.layers["first"].weight == g.layers["second"].weight == "shared"
    assert "shared" not in g.aliases and g.aliases["first"] == "first" and g.aliases["second"] == "second"


@pytest.mark.parametrize("size, shape", [("24", [None, 3, 24, 24]), ("[20, 28]", [None, 3, 20, 28]),
                                         ("not json", [None, 3, None, None]), (None, [None, 3, None, None])])
def test_dynamic_height_and_width_come_from_the_recorded_input_size(size, shape) -> None:
    w = np.ones((4, 3, 1, 1), np.float32)
    meta = {"maxq_deploy.input_size": size} if size is not None else {}
    model = _model([helper.make_node("Conv", ["input", "w"], ["y"], name="c")], [numpy_helper.from_array(w, "w")], meta,
                   input_shape=("batch", 3, "h", "w"))
    assert read_onnx_graph("mem.onnx", model=model).input_shape == shape


def test_precision_from_types_and_the_exporters_word() -> None:
    conv = [helper.make_node("Conv", ["input", "w"], ["y"], name="c")]
    half = [numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float16), "w")]
    assert read_onnx_graph("m", model=_model(conv, half, input_type=TensorProto.FLOAT16, input_shape=(1, 3, 2, 2))).precision == "fp16"
    single = [numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")]
    assert read_onnx_graph("m", model=_model(conv, single, input_shape=(1, 3, 2, 2))).precision == "fp32"
    declared = _model(conv, single, {"maxq_deploy.precision": "fp16"}, input_shape=(1, 3, 2, 2))
    assert read_onnx_graph("m", model=declared).precision == "fp16"  # e.g. fp16 inside a float32 boundary
    qdq = [helper.make_node("QuantizeLinear", ["input", "s"], ["q"]), helper.make_node("DequantizeLinear", ["q", "s"], ["d"]),
           helper.make_node("Conv", ["d", "w"], ["y"], name="c")]
    lying = _model(qdq, [*single, numpy_helper.from_array(np.float32(0.1), "s")], {"maxq_deploy.precision": "fp32"},
                   input_shape=(1, 3, 2, 2))
    info = read_onnx_graph("m", model=lying)
    assert info.precision == "int8" and info.layers["c"].input_quantized  # Q/DQ nodes always mean int8


@pytest.mark.parametrize("raw, words", [("[not json", "is not a JSON list"), ('{"a": 1}', "is not a JSON list of layer names"),
                                        ("[1, 2]", "is not a JSON list of layer names")])
def test_bad_sparse_layers_metadata_is_an_input_file_error(raw, words) -> None:
    model = _model([helper.make_node("Conv", ["input", "w"], ["y"], name="c")], [numpy_helper.from_array(np.ones((4, 8, 1, 1), np.float32), "w")],
                   {"maxq_deploy.sparse_layers": raw})
    with pytest.raises(InputFileError, match=f"^m.onnx: metadata maxq_deploy.sparse_layers {words}$"):
        read_onnx_graph("m.onnx", model=model)


def test_a_graph_whose_only_input_is_an_initializer_has_no_input() -> None:
    w = numpy_helper.from_array(np.ones((4, 8, 1, 1), np.float32), "input")  # the one graph input is a constant
    model = _model([helper.make_node("Relu", ["input"], ["y"])], [w])
    with pytest.raises(InputFileError, match="^m.onnx: the ONNX graph has no input$"):
        read_onnx_graph("m.onnx", model=model)


def test_external_weights_are_read_beside_the_file_or_left_unchecked(tmp_path: Path) -> None:
    w = _two_four((8, 8, 1, 1), np.random.default_rng(4))
    model = _model([helper.make_node("Conv", ["input", "c.weight"], ["y"], name="c")], [numpy_helper.from_array(w, "c.weight")])
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
                    size_threshold=0)
    external = onnx.load(str(path), load_external_data=False)
    layer = read_onnx_graph(path, model=external).layers["c"]
    assert (layer.holds_2_4, layer.shape, layer.weight_dtype) == (True, [8, 8, 1, 1], "float32")
    (tmp_path / "ext.data").unlink()
    layer = read_onnx_graph(path, model=external).layers["c"]
    assert (layer.holds_2_4, layer.shape, layer.weight_dtype) == (None, [8, 8, 1, 1], "unknown")


def test_the_table_round_trips_through_dicts(tmp_path: Path) -> None:
    g = read_onnx_graph(make_onnx(tmp_path / "q.onnx", qdq=True))
    data = json.loads(json.dumps(g.to_dict()))
    assert (data["precision"], data["sparse_layers"], data["input_shape"]) == ("int8", ["layer1.0.convbn1", "layer1.0.convbn2"], [None, 3, 16, 16])
    layers = [OnnxLayer.from_dict(d | {"added_by_a_later_version": 1}) for d in data["layers"]]  # unknown keys are ignored
    assert {layer.name: layer for layer in layers} == g.layers
