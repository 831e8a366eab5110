"""The rewrite of a TensorRT-form Q/DQ graph into ONNX Runtime's integer form, on a two-conv graph built here.

conv1 (ReLU, then a Q/DQ) becomes an integer conv whose ReLU folds into a uint8 [0, amax] range;
conv2 (no QuantizeLinear after it) stays float. Weights become int8 initializers (2:4 zeros stay 0)
and the rewritten graph computes what the original does, within a quantization step.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from maxq_deploy.export.ort_rewrite import rewrite_for_onnxruntime
from quantize_fixtures import _qdq_graph

ort = pytest.importorskip("onnxruntime")


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_report_names_the_integer_and_the_float_conv() -> None:
    model = _qdq_graph()
    report = rewrite_for_onnxruntime(model)
    onnx.checker.check_model(model)
    assert report.int8_convs == ["conv1"] and report.float_convs == ["conv2"]
    assert report.removed_relus == 1
    assert "Relu" not in {node.op_type for node in model.graph.node}


def test_weights_become_int8_initializers_that_keep_the_2_4_zeros() -> None:
    original = _qdq_graph()
    w1 = numpy_helper.to_array(next(i for i in original.graph.initializer if i.name == "conv1.weight"))
    model = _qdq_graph()
    rewrite_for_onnxruntime(model)
    weight_q = [node for node in model.graph.node if node.op_type == "QuantizeLinear" and node.input[0].endswith(".weight")]
    assert weight_q == []
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    w1q = next(v for k, v in inits.items() if k.startswith("conv1.weight") and v.dtype == np.int8 and v.shape == w1.shape)
    assert ((w1q == 0) == (w1 == 0)).all() and int(np.abs(w1q).max()) == 127


def test_the_rewritten_graph_computes_what_the_original_does() -> None:
    x = np.random.default_rng(1).uniform(-3, 3, (2, 4, 6, 6)).astype(np.float32)
    reference = _run(_qdq_graph(), x)
    model = _qdq_graph()
    rewrite_for_onnxruntime(model)
    got = _run(model, x)
    # conv1's output on a 256-step [0, 4] grid instead of the 128-step one, its bias int32: measured 0.34 % apart
    assert np.abs(got - reference).max() <= 0.01 * np.abs(reference).max()


def test_unknown_weight_form_is_refused() -> None:
    with pytest.raises(ValueError, match="weight_form 's4': choose one of s8, u8, s7"):
        rewrite_for_onnxruntime(_qdq_graph(), weight_form="s4")
