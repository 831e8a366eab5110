"""The one ONNX loader and graph index (maxq_deploy.onnx_graph.index), on graphs built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from maxq_deploy.core.errors import InputFileError
from maxq_deploy.onnx_graph.index import GraphIndex, load_onnx


def _qdq_conv_graph() -> onnx.ModelProto:
    """x -> Conv(W) where W = DequantizeLinear(int8 q, per-channel scale) -> Reshape -> Transpose(identity perm)."""
    q = np.array([[[[3]], [[0]], [[-5]], [[0]]], [[[0]], [[7]], [[0]], [[-128]]]], dtype=np.int8)  # [2, 4, 1, 1]
    inits = [
        numpy_helper.from_array(q, "w_q"),
        numpy_helper.from_array(np.array([0.5, 0.25], dtype=np.float32), "w_scale"),
        numpy_helper.from_array(np.array([2, 4, 1, 1], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w_dq"], axis=0, name="dq"),
        helper.make_node("Reshape", ["w_dq", "shape"], ["w_r"], name="reshape"),
        helper.make_node("Transpose", ["w_r"], ["w"], perm=[0, 1, 2, 3], name="transpose"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="conv"),
        helper.make_node("Relu", ["y"], ["out"], name="relu"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 2, 2, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_trace_weight_replays_the_chain_and_keeps_the_int8_values() -> None:
    model = _qdq_conv_graph()
    index = GraphIndex(model.graph)
    traced = index.trace_weight("w")
    assert traced is not None and traced.source == "w_q"
    assert traced.chain == ["Transpose", "Reshape", "DequantizeLinear"]
    assert traced.quantized and traced.dtype == "int8"
    np.testing.assert_array_equal(traced.value, numpy_helper.to_array(model.graph.initializer[0]).astype(np.int32))


def test_producers_and_consumers() -> None:
    index = GraphIndex(_qdq_conv_graph().graph)
    assert index.producers["y"].name == "conv" and index.producers["w"].name == "transpose"
    assert [n.name for n in index.consumers["y"]] == ["relu"]
    assert [n.name for n in index.consumers["x"]] == ["conv"]
    assert "x" not in index.producers  # a graph input has no producer
    assert index.trace_weight("x") is None  # nor is it a constant


def test_load_onnx_reads_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "g.onnx"
    onnx.save(_qdq_conv_graph(), str(path))
    assert [n.name for n in load_onnx(path).graph.node] == ["dq", "reshape", "transpose", "conv", "relu"]


@pytest.mark.parametrize(
    "content, words",
    [
        (b"\x00garbage that is no protobuf", "is not an ONNX model"),
        (b"", "is not an ONNX model"),
    ],
    ids=["garbage", "empty"],
)
def test_load_onnx_refuses_in_one_line(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match=words) as info:
        load_onnx(path)
    assert "\n" not in str(info.value)


def test_load_onnx_names_missing_external_data(tmp_path: Path) -> None:
    model = _qdq_conv_graph()
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
              size_threshold=0)
    (tmp_path / "w.bin").unlink()
    with pytest.raises(InputFileError, match="cannot be read as an ONNX model"):
        load_onnx(path)
    assert load_onnx(path, load_external_data=False).graph.node  # metadata readers skip the weights
