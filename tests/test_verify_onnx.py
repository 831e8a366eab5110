"""N:M verification inside ONNX graphs, on tiny handmade graphs (no export needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from maxq_deploy import verify
from maxq_deploy.core.errors import InputFileError
from maxq_deploy.verify.onnx import verify_onnx
from maxq_deploy.core.sparsity import project_to_pattern


def sparse_2_4(shape: tuple[int, ...], axis: int, seed: int = 0) -> np.ndarray:
    """A random float32 tensor holding 2:4 along ``axis`` (and nowhere else by construction)."""
    dense = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return project_to_pattern(dense, "2:4", axis).numpy()


def save_model(path: Path, nodes, initializers, inputs, outputs, metadata: dict[str, str] | None = None) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def vec(name: str, *shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def gemm_model(path: Path, weight: np.ndarray, trans_b: int) -> Path:
    out_features = weight.shape[0] if trans_b else weight.shape[1]
    in_features = weight.shape[1] if trans_b else weight.shape[0]
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=trans_b)
    return save_model(path, [node], [numpy_helper.from_array(weight, "w")], [vec("x", 2, in_features)], [vec("y", 2, out_features)])


def only_layer(report: verify.VerifyReport, name: str) -> verify.LayerVerdict:
    return next(layer for layer in report.layers if layer.name == name)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_reduction_axis_follows_transB(tmp_path, trans_b):
    w_out_in = sparse_2_4((8, 16), axis=1)  # Linear layout [out, in], 2:4 along in
    weight = w_out_in if trans_b else np.ascontiguousarray(w_out_in.T)  # transB=0: B is [in, out]
    layer = only_layer(verify_onnx(gemm_model(tmp_path / "g.onnx", weight, trans_b), "2:4"), "fc")
    assert layer.op == "gemm" and layer.channels == 16 and layer.holds and layer.expected_sparse
    # The same numbers read with the other transB put the groups on the output axis: broken.
    wrong = gemm_model(tmp_path / "w.onnx", np.ascontiguousarray(w_out_in.T) if trans_b else w_out_in, trans_b)
    assert not only_layer(verify_onnx(wrong, "2:4"), "fc").holds


def test_matmul_through_transpose_uses_perm(tmp_path):
    stored = sparse_2_4((8, 16), axis=1)  # [out, in] on disk, 2:4 along in
    nodes = [
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),  # -> [in, out], MatMul B reduces axis 0
        helper.make_node("MatMul", ["x", "wt"], ["y"], name="proj"),
    ]
    path = save_model(tmp_path / "m.onnx", nodes, [numpy_helper.from_array(stored, "w")], [vec("x", 2, 16)], [vec("y", 2, 8)])
    layer = only_layer(verify_onnx(path, "2:4"), "proj")
    assert layer.op == "matmul" and layer.shape == [16, 8] and layer.channels == 16 and layer.holds
    assert "Transpose" in layer.note

    # Without the Transpose the stored [out, in] tensor is read as B=[K=8, N=16]: groups cross outputs.
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="proj")]
    path = save_model(tmp_path / "n.onnx", nodes, [numpy_helper.from_array(stored, "w")], [vec("x", 2, 8)], [vec("y", 2, 16)])
    assert not only_layer(verify_onnx(path, "2:4"), "proj").holds


def test_cast_and_reshape_chain_from_fp16_initializer(tmp_path):
    w = sparse_2_4((8, 16), axis=1).astype(np.float16)
    nodes = [
        helper.make_node("Cast", ["w"], ["w32"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["w32", "shape"], ["w4"]),
        helper.make_node("Conv", ["x", "w4"], ["y"], name="pointwise"),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([8, 16, 1, 1], dtype=np.int64), "shape")]
    path = save_model(tmp_path / "c.onnx", nodes, inits, [vec("x", 1, 16, 4, 4)], [vec("y", 1, 8, 4, 4)])
    layer = only_layer(verify_onnx(path, "2:4"), "pointwise")
    assert layer.shape == [8, 16, 1, 1] and layer.holds and "Cast" in layer.note and "Reshape" in layer.note


def qdq_conv_model(path: Path, weight_nodes, inits, out_ch: int, in_ch: int) -> Path:
    nodes = [*weight_nodes, helper.make_node("Conv", ["x", "wq"], ["y"], name="layer1.0.convbn1")]
    return save_model(path, nodes, inits, [vec("x", 1, in_ch, 4, 4)], [vec("y", 1, out_ch, 4, 4)])


def test_dequantize_linear_checks_int8_initializer(tmp_path):
    q = np.round(sparse_2_4((8, 16, 3, 3), axis=1) * 40).clip(-127, 127).astype(np.int8)
    scale = np.full(8, 0.01, dtype=np.float32)
    inits = [numpy_helper.from_array(q, "w_int8"), numpy_helper.from_array(scale, "s"),
             numpy_helper.from_array(np.zeros(8, dtype=np.int8), "zp")]
    dq = helper.make_node("DequantizeLinear", ["w_int8", "s", "zp"], ["wq"], axis=0)
    layer = only_layer(verify_onnx(qdq_conv_model(tmp_path / "q.onnx", [dq], inits, 8, 16), "2:4"), "layer1.0.convbn1")
    assert layer.dtype == "int8" and layer.holds and layer.note.split("; ")[0] == "INT8 values via DQ"

    q_broken = q.copy()
    q_broken[0, 0:4, 0, 0] = [1, 2, 3, 4]
    inits[0] = numpy_helper.from_array(q_broken, "w_int8")
    layer = only_layer(verify_onnx(qdq_conv_model(tmp_path / "b.onnx", [dq], inits, 8, 16), "2:4"), "layer1.0.convbn1")
    assert not layer.holds and layer.violating_groups == 1


def test_float_weight_quantized_in_graph_is_checked_on_int8_values(tmp_path):
    """initializer -> QuantizeLinear -> DequantizeLinear: tiny non-zeros round to 0 as TensorRT folds them."""
    w = sparse_2_4((8, 16, 1, 1), axis=1)
    w[w == 0] = 1e-6  # float 2:4 is broken, INT8 2:4 holds (|1e-6| / scale rounds to 0)
    scale = (np.abs(w).reshape(8, -1).max(axis=1) / 127).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(scale, "s"),
             numpy_helper.from_array(np.zeros(8, dtype=np.int8), "zp_shared")]
    weight_nodes = [
        helper.make_node("Identity", ["zp_shared"], ["zp"]),  # how torch shares deduplicated initializers
        helper.make_node("QuantizeLinear", ["w", "s", "zp"], ["wq8"], axis=0),
        helper.make_node("DequantizeLinear", ["wq8", "s", "zp"], ["wq"], axis=0),
    ]
    report = verify_onnx(qdq_conv_model(tmp_path / "qdq.onnx", weight_nodes, inits, 8, 16), "2:4")
    layer = only_layer(report, "layer1.0.convbn1")
    assert layer.dtype == "int8" and layer.holds and layer.note.split("; ")[0] == "INT8 values via DQ<-Q"


def test_metadata_decides_expected_layers_and_foreign_graphs_use_zero_share(tmp_path):
    sparse = sparse_2_4((8, 16, 1, 1), axis=1)
    dense = np.random.default_rng(0).standard_normal((8, 8, 1, 1)).astype(np.float32)
    broken = sparse_2_4((8, 16, 1, 1), axis=1, seed=1)
    broken[0, 0:4, 0, 0] = 1.0  # 1 group of 32 broken: still ~48 % zeros
    nodes = [
        helper.make_node("Conv", ["x", "w_sparse"], ["a"], name="good"),
        helper.make_node("Conv", ["a", "w_dense"], ["b"], name="dense"),
        helper.make_node("Conv", ["x", "w_broken"], ["c"], name="bad"),
    ]
    inits = [numpy_helper.from_array(sparse, "w_sparse"), numpy_helper.from_array(dense, "w_dense"),
             numpy_helper.from_array(broken, "w_broken")]
    outputs = [vec("b", 1, 8, 4, 4), vec("c", 1, 8, 4, 4)]

    foreign = verify_onnx(save_model(tmp_path / "f.onnx", nodes, inits, [vec("x", 1, 16, 4, 4)], outputs), "2:4")
    assert [layer.name for layer in foreign.expected] == ["good", "bad"]
    assert [layer.name for layer in foreign.failing] == ["bad"] and not foreign.ok
    assert any("sparse_layers" in note for note in foreign.notes)

    meta = {"maxq_deploy.sparse_layers": json.dumps(["good", "missing.layer"]), "maxq_deploy.nm": "2:4"}
    ours = verify_onnx(save_model(tmp_path / "m.onnx", nodes, inits, [vec("x", 1, 16, 4, 4)], outputs, meta), "2:4")
    assert [layer.name for layer in ours.expected] == ["good"] and ours.ok
    assert ours.trained_nm == "2:4" and any("missing.layer" in note for note in ours.notes)


def test_registered_for_onnx_suffix(tmp_path):
    path = gemm_model(tmp_path / "g.onnx", sparse_2_4((8, 16), axis=1), 1)
    report = verify.verify_artifact(path)
    assert report.kind == "onnx" and report.ok
    assert verify.FILE_VERIFIERS[".onnx"] is verify_onnx


@pytest.mark.parametrize("content", [b"", b"certainly not a protobuf \xff\xfe", b"PK\x03\x04" + b"\x00" * 64])
def test_non_onnx_file_is_one_line_input_error(tmp_path, content):
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match="not an ONNX model") as info:
        verify_onnx(path)
    assert "\n" not in str(info.value)


def test_missing_file_and_graph_without_weights(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        verify_onnx(tmp_path / "absent.onnx")
    relu = save_model(tmp_path / "r.onnx", [helper.make_node("Relu", ["x"], ["y"])], [], [vec("x", 1, 4)], [vec("y", 1, 4)])
    with pytest.raises(InputFileError, match="no Conv, Gemm or MatMul"):
        verify_onnx(relu)
