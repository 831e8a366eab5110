"""ONNX Runtime's INT8 graphs next to an exact integer emulation, layer by layer (tests/int8_emulation.py).

What must hold on any x86 CPU, VNNI or not:
- the ``portable`` graph (7-bit weights) runs in ONNX Runtime exactly as the emulation computes it
  (every layer input within one quantization step: a rounding tie), and no pair of its products
  can leave int16, so the emulation of the non-VNNI kernel gives the very same integers;
- the ``vnni`` graph (8-bit weights) is exact with 32-bit accumulation, and the emulation of the
  non-VNNI kernel (int16 pair sums with saturation) moves it by many steps: the failure this form
  has on AVX2-only CPUs, shown on every machine;
- on this CPU, ONNX Runtime runs the ``vnni`` graph as the emulation of this CPU's kernel
  (saturating when /proc/cpuinfo has no VNNI flag, exact otherwise).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from quantize_fixtures import skip_without_ptq_on_digits

skip_without_ptq_on_digits()

from int8_emulation import run_graph  # noqa: E402

pytestmark = pytest.mark.slow
IMAGES = 4


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from maxq_deploy.export.ort_from_quantized import export_ort_int8_from_quantized
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.quantize import quantize_ptq
    from maxq_deploy.reference.train import prepare_digits_example

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "maxq_digits"  # as tests/test_quantize.py
    example = prepare_digits_example(shared)
    work = tmp_path_factory.mktemp("emulation")
    folded = work / "folded.pt"
    fold_checkpoint(example.checkpoint, folded)
    quantized = work / "ptq.pt"
    quantize_ptq(folded, quantized, example.train_npz, calibrator="percentile", calib_batches=4, batch_size=32, workers=0)
    out = {}
    for form in ("portable", "vnni"):
        out[form] = work / f"{form}.onnx"
        export_ort_int8_from_quantized(quantized, out[form], input_size=example.image_size, cpu_isa=form)
    images = np.load(example.test_npz)["images"][:IMAGES].astype(np.float32)
    return {"paths": out, "x": images}


def layer_inputs(path: Path) -> list[tuple[str, str]]:
    """(layer, the quantized tensor its input is dequantized from) for every integer Conv/Gemm."""
    import onnx

    from maxq_deploy.export.int8_divergence import _layer_inputs

    return [(layer, tensor) for layer, tensor, _, _ in _layer_inputs(onnx.load(str(path)))]


def ort_layer_inputs(path: Path, x: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """ONNX Runtime (all optimizations, the kernels that run) with each layer's quantized input as an extra output."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    for _, tensor in layer_inputs(path):
        model.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.UINT8, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {"input": x})))
    return values, values["output"]


def steps_apart(a: dict, b: dict, path: Path) -> dict[str, int]:
    return {layer: int(np.abs(a[t].astype(np.int32) - b[t].astype(np.int32)).max()) for layer, t in layer_inputs(path)}


def test_extra_outputs_do_not_change_the_kernels(graphs: dict) -> None:
    import onnxruntime as ort

    path, x = graphs["paths"]["portable"], graphs["x"]
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    _, with_outputs = ort_layer_inputs(path, x)
    np.testing.assert_array_equal(plain, with_outputs)


def test_portable_graph_is_exact_on_any_cpu(graphs: dict) -> None:
    import onnx

    path, x = graphs["paths"]["portable"], graphs["x"]
    model = onnx.load(str(path))
    exact, saturated = run_graph(model, x), run_graph(model, x, saturate_int16=True)
    assert steps_apart(exact, saturated, path) == {layer: 0 for layer, _ in layer_inputs(path)}  # no pair can saturate
    np.testing.assert_array_equal(exact["output"], saturated["output"])
    got, logits = ort_layer_inputs(path, x)
    apart = steps_apart(got, exact, path)
    assert len(apart) == 21 and max(apart.values()) <= 1, apart  # ONNX Runtime = the exact integer graph, layer by layer
    assert np.abs(logits - exact["output"]).max() <= 0.05 * np.abs(exact["output"]).max()
    assert (logits.argmax(1) == exact["output"].argmax(1)).all()


def test_vnni_graph_saturates_without_vnni_and_ort_runs_this_cpus_kernel(graphs: dict) -> None:
    import onnx

    from maxq_deploy.onnx_graph.cpu_isa import int8_saturates

    path, x = graphs["paths"]["vnni"], graphs["x"]
    model = onnx.load(str(path))
    exact, saturated = run_graph(model, x), run_graph(model, x, saturate_int16=True)
    apart = steps_apart(exact, saturated, path)
    assert max(apart.values()) > 8, apart  # the non-VNNI kernel computes another function
    got, _ = ort_layer_inputs(path, x)
    expected = saturated if int8_saturates() else exact
    first = next(layer for layer, steps in apart.items() if steps > 1)
    near = steps_apart(got, expected, path)
    layers = [layer for layer, _ in layer_inputs(path)]
    # up to the first layer that saturates, ONNX Runtime is this CPU's kernel exactly (after it, one flipped
    # saturated sum can move everything downstream, so only the first diverging layer is compared)
    for layer in layers[: layers.index(first) + 1]:
        assert near[layer] <= 1, (layer, near)
