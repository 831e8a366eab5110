"""``quantize.modelopt_ptq``: ``quantize --backend modelopt``, NVIDIA Model Optimizer PTQ (and QAT's
calibration) into the same quantized checkpoint: max ranges equal to max |x| of the calibration data,
every slot of the frozen network filled or refused in one line, INT8 weights that keep every 2:4 zero.

The ModelOpt tests need ``nvidia-modelopt`` (the ``[modelopt]`` extra) and skip without it; importing it
takes ~10 s on a CPU, so they are marked slow.
"""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch

from maxq_deploy.core.errors import QuantizationError
from maxq_deploy.core.sparsity import HARDWARE_PATTERN, check_pattern
from maxq_deploy.quantize.modelopt_ptq import check_modelopt_calibrator
from quantize_fixtures import folded_digits

HAS_MODELOPT = importlib.util.find_spec("modelopt") is not None
needs_modelopt = pytest.mark.skipif(not HAS_MODELOPT, reason="nvidia-modelopt is not installed (pip install 'maxq-deploy[modelopt]')")
INPUT = 32


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    pytest.importorskip("sklearn")
    return folded_digits(tmp_path_factory, "digits_resnet18.modelopt-folded.pth")


def test_mse_is_refused_on_a_cpu_only() -> None:
    with pytest.raises(QuantizationError) as info:
        check_modelopt_calibrator("mse", "cpu")
    message = str(info.value)
    assert message.startswith("--backend modelopt --calibrator mse is refused on a CPU: ")
    assert message.endswith("use --calibrator entropy or percentile, or the default backend (pytorch-quantization) for mse")
    for calibrator, device in (("mse", "cuda"), ("mse", torch.device("cuda", 0)), ("entropy", "cpu"), ("percentile", "cpu"),
                               ("max", "cpu")):
        check_modelopt_calibrator(calibrator, device)  # allowed: no error


# --------------------------------------------------------------------------------------------- a small resnet18, random data


@pytest.fixture(scope="module")
def calib(store, tmp_path_factory):
    """(folded checkpoint path, 16 random 32x32 calibration images .npy)."""
    path = tmp_path_factory.mktemp("mo_ptq") / "calib.npy"
    np.save(path, np.random.default_rng(0).standard_normal((16, 3, INPUT, INPUT)).astype(np.float32))
    return store.folded(arch="resnet18"), path


@pytest.fixture(scope="module")
def calibrated(calib):
    """(folded, ModelOpt network calibrated by max on all 16 images, stats, the preprocessed images)."""
    pytest.importorskip("modelopt")
    from maxq_deploy.quantize.artifact import read_folded_input
    from maxq_deploy.quantize.calibrate import CalibrationOptions, model_preprocess, open_data
    from maxq_deploy.quantize.modelopt_ptq import calibrated_model

    folded_path, data = calib
    folded, _ = read_folded_input(folded_path)
    dataset = open_data(data, model_preprocess(folded), "calibration")
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    model, stats = calibrated_model(folded, dataset, CalibrationOptions("max", 99.99, 2, 8), [], workers=0)
    return folded, model, stats, images


@needs_modelopt
@pytest.mark.slow
def test_max_ranges_fill_every_slot_with_the_max_abs_of_the_data(calibrated) -> None:
    from maxq_deploy.quantize.frozen import frozen_skeleton, quantizer_names
    from maxq_deploy.quantize.modelopt_ptq import checked_ranges

    folded, model, stats, images = calibrated
    assert (stats.method, stats.batches, stats.images, stats.input_size, stats.max_calibrated_inputs) == ("max", 2, 16, INPUT, [])
    ranges, report, notes = checked_ranges(model, folded, [])
    assert list(ranges) == quantizer_names(frozen_skeleton(folded.arch, folded.num_classes))  # every slot, in order
    assert notes == ["maxpool.input_quantizer: ModelOpt quantizes it, this tool's INT8 graph has no slot for it: disabled (stays float)"]
    assert float(ranges["conv1._input_quantizer"]) == float(images.abs().max())  # all 16 images seen
    weights = [name for name in ranges if name.endswith("._weight_quantizer")]
    assert len(weights) == 21
    for name in weights:
        w = folded.state_dict[name.rpartition(".")[0] + ".weight"]
        assert torch.equal(ranges[name].flatten(), w.abs().flatten(1).amax(1)), name
    roles = {r.name: (r.role, r.channels) for r in report}
    assert roles["layer1.0.residual_quantizer"] == ("residual", 1) and roles["fc._weight_quantizer"] == ("weight", 10)
    assert roles["layer1.0.convbn1._input_quantizer"] == ("input", 1)


def _broken(model, slot: str, value) -> torch.nn.Module:
    """A copy of ``model`` whose ModelOpt quantizer ``slot`` (ModelOpt's name) got ``value`` (a function of its amax)."""
    model = copy.deepcopy(model)
    quantizer = model.get_submodule(slot)
    quantizer.amax = value(quantizer.amax.clone())
    return model


@needs_modelopt
@pytest.mark.slow
def test_bad_ranges_are_refused_or_repaired_in_one_line(calibrated) -> None:
    from maxq_deploy.quantize.calibrate import ZERO_CHANNEL_AMAX
    from maxq_deploy.quantize.modelopt_ptq import checked_ranges

    folded, model, _, _ = calibrated
    zero = _broken(model, "layer1.0.residual_quantizer", torch.zeros_like)
    with pytest.raises(QuantizationError, match=r"^quantizer layer1.0.residual_quantizer \(residual\) got a zero range: "
                                                r"every calibration value it saw is 0"):
        checked_ranges(zero, folded, [])
    nan = _broken(model, "layer2.0.convbn1.input_quantizer", lambda a: a * float("nan"))
    with pytest.raises(QuantizationError, match=r"^quantizer layer2.0.convbn1._input_quantizer \(input\) got a non-finite range"):
        checked_ranges(nan, folded, [])

    def dead_channels(amax: torch.Tensor) -> torch.Tensor:
        amax.view(-1)[[0, 3]] = 0
        return amax

    dead = _broken(model, "layer1.0.convbn1.weight_quantizer", dead_channels)
    ranges, report, notes = checked_ranges(dead, folded, [])
    fixed = ranges["layer1.0.convbn1._weight_quantizer"].flatten()
    assert fixed[0] == fixed[3] == ZERO_CHANNEL_AMAX and bool((fixed[1:3] > 0).all())
    assert "layer1.0.convbn1._weight_quantizer: 2 all-zero output channel(s) given range 1.0" in notes
    assert torch.equal(dead.get_submodule("layer1.0.convbn1.weight_quantizer").amax.flatten(), fixed)  # QAT trains with it


@needs_modelopt
@pytest.mark.slow
def test_a_slot_modelopt_left_empty_is_named_unless_kept_float(calibrated) -> None:
    from maxq_deploy.quantize.modelopt_ptq import checked_ranges

    folded, model, _, _ = calibrated
    one = copy.deepcopy(model)
    one.get_submodule("layer3.1.convbn2.input_quantizer").disable()
    with pytest.raises(QuantizationError, match=r"^ModelOpt left layer3.1.convbn2._input_quantizer unquantized "
                                                r"\(layer layer3.1.convbn2: no range\); this tool's INT8 scheme needs it"):
        checked_ranges(one, folded, [])
    plain = copy.deepcopy(model)
    conv = plain.get_submodule("layer3.1.convbn2")
    plain.get_submodule("layer3.1").convbn2 = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                                                              padding=conv.padding, bias=conv.bias is not None)
    with pytest.raises(QuantizationError, match=r"\(layer layer3.1.convbn2: ModelOpt did not convert this layer\)"):
        checked_ranges(plain, folded, [])
    ranges, _, _ = checked_ranges(plain, folded, ["layer3.1.convbn2"])  # --keep-float: its slots are not needed
    assert not any(name.startswith("layer3.1.convbn2.") for name in ranges) and "layer3.1.residual_quantizer" in ranges


@needs_modelopt
@pytest.mark.slow
def test_ptq_writes_int8_weights_that_keep_every_2_4_zero(calib, tmp_path) -> None:
    from maxq_deploy.quantize.artifact import load_quantized_checkpoint
    from maxq_deploy.quantize.modelopt_ptq import quantize_ptq_modelopt

    folded_path, data = calib
    with pytest.raises(QuantizationError, match="--calibrator mse is refused on a CPU"):
        quantize_ptq_modelopt(folded_path, tmp_path / "m.pt", data, calibrator="mse", device="cpu", workers=0)
    assert not (tmp_path / "m.pt").exists()
    out = tmp_path / "q.pt"
    result = quantize_ptq_modelopt(folded_path, out, data, calib_batches=2, batch_size=8, workers=0, device="cpu")
    assert result.backend.startswith("nvidia-modelopt ") and result.mode == "ptq" and result.pattern_ok
    assert result.calibration.images == 16
    ckpt = load_quantized_checkpoint(out)
    state = torch.load(folded_path, weights_only=True)["state_dict"]
    sparse = [layer.name for layer in result.sparse_layers]
    assert len(sparse) == 19 and sum(layer.violating_groups for layer in result.sparse_layers) == 0
    for name in sparse:
        w = state[f"{name}.weight"]
        amax = ckpt.quantizers[f"{name}._weight_quantizer"].reshape(-1, *([1] * (w.dim() - 1)))
        int8 = torch.round(w * 127 / amax).clamp(-127, 127)
        assert torch.equal(int8 == 0, w == 0) or bool((int8[w == 0] == 0).all()), name
        assert check_pattern(int8, HARDWARE_PATTERN, axis=1).holds, name
        assert int(int8.abs().amax()) == 127, name  # max calibration: each channel's largest weight is +-127


@needs_modelopt
@pytest.mark.slow
def test_modelopt_ptq_keeps_2_4_and_accuracy_and_exports_like_any_checkpoint(digits, tmp_path):
    from maxq_deploy.evaluate import evaluate
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.quantize import QuantizeConfig, quantize
    from maxq_deploy.quantize.artifact import load_quantized_checkpoint
    from maxq_deploy.quantize.frozen import frozen_skeleton, quantizer_names
    from maxq_deploy.verify import verify_artifact

    example, folded = digits
    out = tmp_path / "mo.pt"
    result = quantize(folded, out, QuantizeConfig(calib_data=example.train_npz, calibrator="max", calib_batches=8, batch_size=32,
                                                   workers=0, backend="modelopt"))
    assert result.backend.startswith("nvidia-modelopt") and result.pattern_ok
    assert sum(layer.violating_groups for layer in result.sparse_layers) == 0 and len(result.sparse_layers) == 19
    ckpt = load_quantized_checkpoint(out)  # the same format and checks as the default backend
    assert set(ckpt.quantizers) == set(quantizer_names(frozen_skeleton(ckpt.arch, ckpt.num_classes)))
    assert verify_artifact(out).ok
    fp32 = evaluate(folded, example.test_npz, batch_size=128, workers=0).top1
    int8 = evaluate(out, example.test_npz, batch_size=128, workers=0).top1
    assert int8 >= fp32 - 0.5, (int8, fp32)
    exported = export_onnx(out, tmp_path / "mo.onnx", input_size=INPUT)
    assert exported.parity.passed and exported.pattern_ok and exported.pattern_holding_layers == 19
    assert "Q/DQ: 20 of 20 convs INT8 in and INT8 out" in exported.notes
    assert torch.load(out, weights_only=True)["scheme"]["backend"].startswith("nvidia-modelopt")


@needs_modelopt
@pytest.mark.slow
def test_modelopt_qat_keeps_every_2_4_zero_and_deploys_on_onnxruntime_and_openvino(digits, tmp_path):
    """QAT with ModelOpt's quantizers: the folded zeros stay zeros, INT8 within 0.5 point, both ONNX targets run."""
    pytest.importorskip("openvino")
    from maxq_deploy.data import open_dataset
    from maxq_deploy.evaluate import evaluate
    from maxq_deploy.export.ort_from_quantized import export_ort_int8_from_quantized
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.quantize import QuantizeConfig, quantize
    from maxq_deploy.quantize.artifact import load_quantized_checkpoint
    from maxq_deploy.quantize.frozen import frozen_skeleton, quantizer_names
    from maxq_deploy.verify import verify_artifact

    example, folded = digits
    out = tmp_path / "mo_qat.pt"
    result = quantize(folded, out, QuantizeConfig(
        qat=True, train_data=example.train_npz, epochs=1, lr=1e-4, train_batches=12, calibrator="max", calib_batches=8,
        batch_size=32, workers=0, backend="modelopt"))
    assert result.mode == "qat" and result.backend.startswith("nvidia-modelopt") and result.pattern_ok
    assert result.training.masked_layers == 19 and result.training.zeros_reintroduced == 0 and result.training.steps == 12
    assert sum(layer.violating_groups for layer in result.sparse_layers) == 0 and len(result.sparse_layers) == 19
    assert any("maxpool.input_quantizer" in note and "disabled" in note for note in result.notes), result.notes
    ckpt = load_quantized_checkpoint(out)
    assert set(ckpt.quantizers) == set(quantizer_names(frozen_skeleton(ckpt.arch, ckpt.num_classes)))
    trained = torch.load(out, weights_only=True)
    assert trained["scheme"]["backend"].startswith("nvidia-modelopt") and trained["training"]["steps"] == 12
    start = torch.load(folded, weights_only=True)
    moved = [k for k, v in start["state_dict"].items() if k.endswith(".weight") and not torch.equal(v, trained["state_dict"][k])]
    assert moved, "QAT changed no weight"
    for layer in result.sparse_layers:  # every folded zero is still exactly 0 after fine-tuning
        before, after = start["state_dict"][f"{layer.name}.weight"], trained["state_dict"][f"{layer.name}.weight"]
        assert bool((after[before == 0] == 0).all()), layer.name
    assert verify_artifact(out).ok

    test = open_dataset(example.test_npz, require_labels=True)
    fp32 = evaluate(folded, test, batch_size=128, workers=0).top1
    qdq = export_onnx(out, tmp_path / "mo_qat_qdq.onnx", input_size=INPUT)
    assert qdq.parity.passed and qdq.pattern_ok and qdq.pattern_holding_layers == 19
    ort = export_ort_int8_from_quantized(out, tmp_path / "mo_qat_ort.onnx", input_size=INPUT)
    assert ort.ranges_match
    for graph in (tmp_path / "mo_qat_qdq.onnx", tmp_path / "mo_qat_ort.onnx"):
        assert verify_artifact(graph).ok, graph
    tops = {(graph, backend): evaluate(tmp_path / graph, test, backend=backend, batch_size=128, workers=0, threads=1).top1
            for graph, backend in (("mo_qat_ort.onnx", "onnxruntime"), ("mo_qat_qdq.onnx", "openvino"))}
    assert all(top1 >= fp32 - 0.5 for top1 in tops.values()), (fp32, tops)


@needs_modelopt
@pytest.mark.slow
def test_modelopt_histogram_calibrators_percentile_runs_and_mse_is_refused_on_a_cpu(digits, tmp_path):
    from maxq_deploy.core.errors import QuantizationError
    from maxq_deploy.evaluate import evaluate
    from maxq_deploy.quantize import QuantizeConfig, quantize

    example, folded = digits
    calib = dict(calib_data=example.train_npz, calib_batches=8, batch_size=32, workers=0, backend="modelopt")
    result = quantize(folded, tmp_path / "p.pt", QuantizeConfig(calibrator="percentile", **calib))
    assert result.pattern_ok and result.calibration.method == "percentile" and result.calibration.percentile == 99.99
    assert result.calibration.max_calibrated_inputs == ["conv1._input_quantizer"]  # the network input stays max
    fp32 = evaluate(folded, example.test_npz, batch_size=128, workers=0).top1
    assert evaluate(tmp_path / "p.pt", example.test_npz, batch_size=128, workers=0).top1 >= fp32 - 0.5
    if not torch.cuda.is_available():
        with pytest.raises(QuantizationError, match="--calibrator mse is refused on a CPU"):
            quantize(folded, tmp_path / "m.pt", QuantizeConfig(calibrator="mse", **calib))
        assert not (tmp_path / "m.pt").exists()
