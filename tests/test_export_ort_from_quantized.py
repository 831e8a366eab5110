"""``export onnx QUANTIZED --target onnxruntime``: ONNX Runtime's INT8 form from the checkpoint's own ranges."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_quantization")

from maxq_deploy.core.errors import InputFileError, OptionError  # noqa: E402
from maxq_deploy.export.ort_from_quantized import RELU_RANGES, export_ort_int8_from_quantized  # noqa: E402
from maxq_deploy.quantize import quantize_ptq, quantize_qat  # noqa: E402
from maxq_deploy.quantize.artifact import int8_weight  # noqa: E402

SIZE = 32


def random_npz(path: Path, count: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, images=rng.standard_normal((count, 3, SIZE, SIZE), dtype=np.float32), labels=rng.integers(0, 10, count))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_npz(tmp_path_factory.mktemp("ortckpt_data") / "calib.npz")


@pytest.fixture(scope="module")
def ptq(store, data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ortckpt") / "r18.ptq.pt"
    quantize_ptq(store.folded(arch="resnet18"), out, data, calibrator="max", calib_batches=2, batch_size=16, workers=0)
    return out


@pytest.fixture(scope="module")
def ptq_export(ptq, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ortckpt_out") / "r18_ort.onnx"
    return out, export_ort_int8_from_quantized(ptq, out, input_size=SIZE)


@pytest.fixture(scope="module")
def vnni_export(ptq, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ortckpt_out") / "r18_ort_vnni.onnx"
    return out, export_ort_int8_from_quantized(ptq, out, input_size=SIZE, cpu_isa="vnni")


def consts(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def assert_int8_weight(w8: np.ndarray, weight: torch.Tensor, amax: torch.Tensor) -> None:
    """The graph's int8 weight is QuantizeLinear(weight, float32(amax / 127)) (what the Q/DQ graph and the fake-quantized
    model compute: saturating to [-128, 127], so a QAT weight just past -amax is -128), and the checkpoint's own int8
    weights (``int8_weight``, float64, clamped to +-127) differ from it by one step at most, on ties or that saturation."""
    scale = (amax.float() / 127).reshape(-1, *([1] * (weight.dim() - 1))).numpy()
    expected = np.clip(np.rint(weight.float().numpy() / scale), -128, 127).astype(np.int8)
    np.testing.assert_array_equal(w8, expected)
    reference = int8_weight(weight, amax).numpy().astype(np.int16)
    assert np.abs(w8.astype(np.int16) - reference).max() <= 1 and (w8 != reference).mean() < 1e-4


def assert_7bit_weight(w7: np.ndarray, w_scale: np.ndarray, weight: torch.Tensor, amax: torch.Tensor) -> None:
    """The portable form's weight: the checkpoint's int8 weight re-quantized to [-63, 63] at amax / 63 (round half to even)."""
    scale = (amax.float() / 127).reshape(-1, *([1] * (weight.dim() - 1))).numpy()
    w8 = np.clip(np.rint(weight.float().numpy() / scale), -128, 127)
    assert w7.dtype == np.int8 and np.abs(w7).max() <= 63
    np.testing.assert_array_equal(w7, np.clip(np.rint(w8 * (63 / 127)), -63, 63).astype(np.int8))
    np.testing.assert_allclose(w_scale.astype(np.float64) * 63, amax.double().reshape(-1).numpy(), rtol=1e-6)


@pytest.mark.parametrize("form", ["portable", "vnni"])
def test_graph_is_onnxruntime_form_with_the_checkpoint_ranges(request, ptq, form: str) -> None:
    import onnx

    out, result = request.getfixturevalue("ptq_export" if form == "portable" else "vnni_export")
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["maxq_deploy.cpu_isa"] == form == result.cpu_isa
    assert meta["maxq_deploy.weight_bits"] == ("7" if form == "portable" else "8")
    assert meta["maxq_deploy.target"] == "onnxruntime" and meta["maxq_deploy.precision"] == "int8"
    assert meta["maxq_deploy.ranges_from"] == "quantized checkpoint (ptq)" and meta["maxq_deploy.activation_type"] == "uint8"
    values = consts(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    ckpt = torch.load(ptq, weights_only=True)
    amax = ckpt["quantizers"]
    checked = 0
    for node in (n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.name not in result.float_layers):
        dq_x, dq_w = producers[node.input[0]], producers[node.input[1]]
        assert dq_x.op_type == dq_w.op_type == "DequantizeLinear"
        scale, zp = float(values[dq_x.input[1]]), values[dq_x.input[2]]
        assert zp.dtype == np.uint8  # uint8 activations
        expected = float(amax[f"{node.name}._input_quantizer"])
        # ReLU outputs use [0, amax] in 255 steps; signed inputs keep the int8 grid (zero point 128)
        assert scale * (255 if int(zp) == 0 else 127) == pytest.approx(expected, rel=1e-6), node.name
        assert int(zp) in (0, 128)
        w8 = values[dq_w.input[0]]
        assert w8.dtype == np.int8 and dq_w.input[0] == f"{node.name}.weight"  # the export's INT8 initializer
        weight, w_amax = ckpt["state_dict"][f"{node.name}.weight"], amax[f"{node.name}._weight_quantizer"]
        if form == "vnni":
            assert_int8_weight(w8, weight, w_amax)
        else:
            assert_7bit_weight(w8, values[dq_w.input[1]], weight, w_amax)
        checked += 1
    assert checked == 21  # 20 convs + fc in int8: the pooling input is quantized, so the last conv ends in int8 too
    assert result.float_layers == [] and result.ranges_match
    assert len(result.derived_ranges) == 8 and all(lo < 0 < hi for lo, hi in result.derived_ranges.values())
    assert Counter(n.op_type for n in model.graph.node)["Relu"] == 0  # every ReLU folded into a uint8 Q
    assert result.pattern_ok and result.parity.passed and result.calibration.startswith("none")


def test_onnxruntime_fuses_it_into_integer_kernels(ptq_export, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    out, _ = ptq_export
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    assert ops["QLinearConv"] == 20 and ops["QLinearAdd"] == 8 and ops["Conv"] == 0  # every conv integer
    assert ops["QGemm"] == 1


def test_agrees_with_the_fake_quantized_model(ptq, ptq_export) -> None:
    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.runtimes.onnxruntime_runner import OnnxRuntimeRunner

    out, result = ptq_export
    x = np.random.default_rng(5).standard_normal((8, 3, SIZE, SIZE), dtype=np.float32)
    with torch.no_grad():
        ref = load_torch_model(ptq).module(torch.from_numpy(x)).numpy()
    runner = OnnxRuntimeRunner(out)
    got = runner.run(x)
    runner.close()
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) < 0.1
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.75


def test_signed_relu_range_keeps_the_int8_grid(ptq, tmp_path: Path) -> None:
    import onnx

    assert RELU_RANGES == ("unsigned", "signed")
    out = tmp_path / "signed.onnx"
    result = export_ort_int8_from_quantized(ptq, out, input_size=SIZE, relu_range="signed")
    model = onnx.load(str(out))
    zps = {int(v) for n, v in consts(model).items() if n.endswith("_zero_point") and v.dtype == np.uint8}
    assert zps == {128} and result.ranges_match and result.parity.passed
    assert Counter(n.op_type for n in model.graph.node)["Relu"] == 17  # nothing folded: exact, but float convs
    with pytest.raises(OptionError, match="relu_range 'both'"):
        export_ort_int8_from_quantized(ptq, tmp_path / "x.onnx", input_size=SIZE, relu_range="both")


@pytest.mark.slow
def test_qat_checkpoint_weights_and_ranges_are_the_ones_used(store, data, tmp_path: Path) -> None:
    import onnx

    qat = tmp_path / "qat.pt"
    quantize_qat(store.folded(arch="resnet18"), qat, data, epochs=1, lr=1e-2, train_batches=2, calib_batches=1,
                 batch_size=16, workers=0)
    out = tmp_path / "qat.onnx"
    result = export_ort_int8_from_quantized(qat, out, input_size=SIZE)
    assert result.mode == "qat" and result.ranges_match and result.parity.passed
    ckpt = torch.load(qat, weights_only=True)
    folded = torch.load(store.folded(arch="resnet18"), weights_only=True)["state_dict"]
    name = "layer2.0.convbn1"
    assert not torch.equal(ckpt["state_dict"][f"{name}.weight"], folded[f"{name}.weight"])  # QAT moved the weights
    values = consts(onnx.load(str(out)))
    assert_7bit_weight(values[f"{name}.weight"], _weight_scale(onnx.load(str(out)), name), ckpt["state_dict"][f"{name}.weight"],
                       ckpt["quantizers"][f"{name}._weight_quantizer"])
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["maxq_deploy.ranges_from"] == "quantized checkpoint (qat)"


def _weight_scale(model, layer: str) -> np.ndarray:
    values = consts(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    (node,) = [n for n in model.graph.node if n.name == layer]
    return values[producers[node.input[1]].input[1]]


def test_cli_json(ptq, cli, tmp_path: Path) -> None:
    out = tmp_path / "cli.onnx"
    res = cli("export", "onnx", ptq, "-o", out, "--target", "onnxruntime", "--input-size", SIZE, "--json")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["ranges_match"] is True and summary["pattern_ok"] is True and summary["mode"] == "ptq"
    assert summary["calibration"].startswith("none") and out.is_file()
    assert len(summary["ranges"]) == 21 and summary["float_layers"] == []


def damage(src: Path, dst: Path, edit) -> Path:
    obj = torch.load(src, weights_only=True)
    edit(obj)
    torch.save(obj, dst)
    return dst


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda o: o["quantizers"].__setitem__("layer1.0.convbn1._input_quantizer", torch.tensor(float("nan"))), "NaN or Inf"),
        (lambda o: o["quantizers"].__setitem__("conv1._input_quantizer", torch.tensor(float("inf"))), "NaN or Inf"),
        (lambda o: o["quantizers"].__setitem__("layer1.0.convbn2._input_quantizer", torch.tensor(-1.5)), "is negative"),
        (lambda o: o["quantizers"].__setitem__("layer1.0.convbn1._weight_quantizer", torch.ones(7, 1, 1, 1)), r"shape \[7, 1, 1, 1\]; expected one value or one per output channel \(64\)"),
        (lambda o: o["quantizers"].__setitem__("layer1.0.convbn1._input_quantizer", torch.ones(3)), "an activation range is one value"),
        (lambda o: o["quantizers"].__setitem__("fc._input_quantizer", "big"), "range of fc._input_quantizer is a str, not a tensor"),
        (lambda o: o["quantizers"].__setitem__("layer1.0.convbn1._weight_quantizer",
                                                torch.zeros_like(o["quantizers"]["layer1.0.convbn1._weight_quantizer"])), "is zero"),
        (lambda o: o.__setitem__("format_version", 2), "format version 2 is newer than this maxq-deploy reads"),
        (lambda o: o.__setitem__("format_version", 0), "format_version 0 is not a version number"),
    ],
    ids=["nan", "inf", "negative", "weight-shape", "activation-shape", "not-tensor", "zero-weight-range", "version-2", "version-0"],
)
def test_damaged_checkpoint_is_one_line_error_and_nothing_written(ptq, cli, tmp_path: Path, edit, message) -> None:
    bad = damage(ptq, tmp_path / "bad.pt", edit)
    out = tmp_path / "bad.onnx"
    res = cli("export", "onnx", bad, "-o", out, "--target", "onnxruntime", "--input-size", SIZE)
    assert res.exit_code != 0 and res.exception is None
    assert res.stderr.startswith("error:") and res.stderr.count("\n") == 1, res.stderr
    assert __import__("re").search(message, res.stderr), res.stderr
    assert not out.exists() and not list(tmp_path.glob("*.onnx*"))
    with pytest.raises(InputFileError):
        export_ort_int8_from_quantized(bad, out, input_size=SIZE)


def test_wrong_kind_of_checkpoint_for_each_route(store, ptq, data, cli, tmp_path: Path) -> None:
    out = tmp_path / "x.onnx"
    res = cli("export", "onnx", store.folded(arch="resnet18"), "-o", out, "--target", "onnxruntime", "--input-size", SIZE)
    assert res.exit_code != 0 and "folded checkpoint: quantize it first" in res.stderr and "--calib" in res.stderr
    res = cli("export", "onnx", ptq, "-o", out, "--target", "onnxruntime", "--input-size", SIZE, "--calib", data)
    assert res.exit_code != 0 and "drop --calib" in res.stderr and res.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.slow
def test_mobilenet_depthwise_graph_from_checkpoint(store, data, tmp_path: Path) -> None:
    """No residual Adds, depthwise convs: every conv runs in int8 (the pooling input is quantized, so the last one too)."""
    import onnx

    quantized = tmp_path / "mbv1.ptq.pt"
    quantize_ptq(store.folded(arch="mobilenet_v1"), quantized, data, calibrator="max", calib_batches=1, batch_size=16, workers=0)
    out = tmp_path / "mbv1_ort.onnx"
    result = export_ort_int8_from_quantized(quantized, out, input_size=SIZE)
    assert result.parity.passed and result.ranges_match and result.pattern_ok
    assert result.float_layers == [] and not result.derived_ranges
    assert len(result.int8_layers) == 27 + 1  # conv1, the 26 depthwise/pointwise convs, and fc
    assert Counter(n.op_type for n in onnx.load(str(out)).graph.node)["Relu"] == 0


@pytest.mark.parametrize(
    "extra, message",
    [(["--calib-batches", "3"], "--calib-batches apply to --calib DATA"),
     (["--calibrate-method", "entropy"], "--calibrate-method apply to --calib DATA")],
)
def test_calibration_options_without_calib_are_refused(ptq, cli, tmp_path: Path, extra, message) -> None:
    out = tmp_path / "x.onnx"
    res = cli("export", "onnx", ptq, "-o", out, "--target", "onnxruntime", "--input-size", SIZE, *extra)
    assert res.exit_code == 2 and message in res.stderr and res.stderr.count("\n") == 1
    assert not out.exists()


def test_float_precision_with_calibration_options_is_refused(store, data, cli, tmp_path: Path) -> None:
    """--target onnxruntime --precision fp16 writes the float graph: --calib would be silently dropped."""
    out = tmp_path / "x.onnx"
    res = cli("export", "onnx", store.folded(arch="resnet18"), "-o", out, "--target", "onnxruntime", "--precision", "fp16",
              "--calib", data, "--input-size", SIZE)
    assert res.exit_code == 2 and "--calib calibrate an int8 graph" in res.stderr and res.stderr.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize(
    "extra, message",
    [(["--target", "onnxruntime", "--cpu-isa", "avx9"], "--cpu-isa 'avx9' is not supported; choose one of portable, vnni"),
     (["--cpu-isa", "vnni"], "--cpu-isa does not apply to --target tensorrt")],
)
def test_bad_cpu_isa_is_one_line(ptq, cli, tmp_path: Path, extra, message) -> None:
    out = tmp_path / "x.onnx"
    res = cli("export", "onnx", ptq, "-o", out, "--input-size", SIZE, *extra)
    assert res.exit_code == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert res.exception is None and not out.exists()
