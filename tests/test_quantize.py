"""INT8 quantization that keeps 2:4: accuracy (PyTorch fake-quant and ONNX Runtime), QAT masks, Q/DQ graph, errors.

The accuracy tests use a real network: a MaxQ 2:4 ResNet-18 trained with the reference layers
on scikit-learn's digits (32x32 RGB) for a few CPU epochs (made once per run, shared by the xdist
workers), folded by the pipeline.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from filelock import FileLock
from onnx import numpy_helper

pytest.importorskip("pytorch_quantization")
pytest.importorskip("sklearn")

from maxq_deploy.load.formats import QUANTIZED_FORMAT  # noqa: E402
from maxq_deploy.core.errors import BackendUnavailableError, DataError, InputFileError, OutputPathError, QuantizationError  # noqa: E402
from maxq_deploy.fold import fold_checkpoint  # noqa: E402
from maxq_deploy.quantize import pq_adapter, quantize_ptq, quantize_qat  # noqa: E402
from maxq_deploy.quantize.artifact import int8_weight, load_quantized_checkpoint  # noqa: E402
from maxq_deploy.reference.train import DigitsExample, prepare_digits_example  # noqa: E402
from maxq_deploy.core.sparsity import check_pattern  # noqa: E402

#: PTQ/QAT may lose at most this many top-1 points against the fp32 folded network.
MAX_DROP = 1.0
CALIB = {"calib_batches": 8, "batch_size": 32, "workers": 0}
INPUT = 32


# --- fixtures ------------------------------------------------------------------------------------


def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "maxq_digits"


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> DigitsExample:
    """A MaxQ 2:4 ResNet-18 trained on digits, and the data (trained once per run, file-locked)."""
    example = prepare_digits_example(shared_dir(tmp_path_factory))
    assert example.test_top1 > 90.0, f"the digits network should learn (got {example.test_top1:.1f}% held-out)"
    return example


@pytest.fixture(scope="session")
def folded(digits) -> Path:
    path = digits.workdir / "digits_resnet18.folded.pth"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            fold_checkpoint(digits.checkpoint, path)
    return path


def top1(model_path: Path, data: Path) -> float:
    from maxq_deploy.evaluate import evaluate

    return evaluate(model_path, data, batch_size=128, workers=0).top1


@pytest.fixture(scope="session")
def fp32_top1(folded, digits) -> float:
    return top1(folded, digits.test_npz)


def to_onnx(quantized: Path, out: Path) -> Path:
    from maxq_deploy.export.tensorrt_form import export_onnx

    result = export_onnx(quantized, out, input_size=INPUT)
    assert result.precision == "int8" and result.parity.passed and result.pattern_ok
    return out


def assert_int8_pattern_intact(path: Path, folded_path: Path) -> None:
    """Every 2:4 group of every sparse layer's INT8 weights holds, and every float zero is an INT8 zero."""
    q = load_quantized_checkpoint(path)
    source = torch.load(folded_path, weights_only=True)["state_dict"]
    sparse = [layer for layer in q.layers if layer.role == "sparse"]
    assert len(sparse) == 19
    for layer in sparse:
        w8 = int8_weight(q.state_dict[f"{layer.name}.weight"], q.quantizers[f"{layer.name}._weight_quantizer"])
        assert w8.dtype == torch.int8
        check = check_pattern(w8, "2:4")
        assert check.holds and check.violating_groups == 0, layer.name
        assert bool((w8[source[f"{layer.name}.weight"] == 0] == 0).all()), layer.name


# --- accuracy: PTQ per calibrator, QAT ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("calibrator", ["max", "entropy", "mse", "percentile"])
def test_ptq_keeps_accuracy_in_torch_and_onnxruntime(calibrator, folded, digits, fp32_top1, tmp_path):
    out = tmp_path / f"q_{calibrator}.pth"
    result = quantize_ptq(folded, out, digits.train_npz, calibrator=calibrator, **CALIB)
    assert result.mode == "ptq" and result.written and out.exists()
    assert result.calibration.method == calibrator and result.calibration.images == 256
    assert result.pattern_ok and result.holding_layers == 19
    assert {q.role for q in result.quantizers} == {"input", "weight", "residual"}
    torch_top1 = top1(out, digits.test_npz)
    ort_top1 = top1(to_onnx(out, tmp_path / f"q_{calibrator}.onnx"), digits.test_npz)
    print(f"\nPTQ {calibrator}: fp32 {fp32_top1:.2f}  torch {torch_top1:.2f}  onnxruntime {ort_top1:.2f}")
    assert torch_top1 >= fp32_top1 - MAX_DROP
    assert ort_top1 >= fp32_top1 - MAX_DROP
    assert_int8_pattern_intact(out, folded)


@pytest.mark.slow
def test_qat_loses_no_more_than_ptq_and_keeps_every_2_4_group(folded, digits, fp32_top1, tmp_path):
    ptq_out, qat_out = tmp_path / "ptq.pth", tmp_path / "qat.pth"
    quantize_ptq(folded, ptq_out, digits.train_npz, calibrator="percentile", **CALIB)
    result = quantize_qat(
        folded, qat_out, digits.train_npz, digits.test_npz, epochs=1, lr=1e-4, train_batches=12, calibrator="percentile", **CALIB
    )
    t = result.training
    assert result.mode == "qat" and t.world_size == 1 and t.steps == 12 and t.selected_by == "val_top1"
    assert [e.epoch for e in t.history] == [0, 1] and t.fixed_zeros > 0 and t.zeros_reintroduced == 0
    ptq_top1, qat_top1 = top1(ptq_out, digits.test_npz), top1(qat_out, digits.test_npz)
    from maxq_deploy.export.ort_from_quantized import export_ort_int8_from_quantized

    # ONNX Runtime runs its own form (portable: exact on CPUs with or without VNNI), made from the QAT ranges
    export_ort_int8_from_quantized(qat_out, tmp_path / "qat_ort.onnx", input_size=INPUT)
    ort_top1 = top1(tmp_path / "qat_ort.onnx", digits.test_npz)
    print(f"\nQAT: fp32 {fp32_top1:.2f}  PTQ {ptq_top1:.2f}  QAT torch {qat_top1:.2f}  onnxruntime {ort_top1:.2f}")
    assert qat_top1 >= ptq_top1 and qat_top1 >= fp32_top1 - MAX_DROP
    assert ort_top1 >= fp32_top1 - MAX_DROP
    assert_int8_pattern_intact(qat_out, folded)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_qat_masks_hold_zeros_under_aggressive_updates(optimizer, folded, digits, tmp_path):
    """A large learning rate with weight decay moves every weight it may: the 2:4 zeros must not move."""
    out = tmp_path / "qat.pth"
    result = quantize_qat(folded, out, digits.train_npz, epochs=1, lr=5e-2, optimizer=optimizer, weight_decay=1e-2,
                          train_batches=3, calib_batches=1, batch_size=16, workers=0)
    assert result.training.selected_by == "last" and result.training.best_epoch == 1
    trained = load_quantized_checkpoint(out).state_dict
    source = torch.load(folded, weights_only=True)["state_dict"]
    changed = sum(int((trained[k] != source[k]).sum()) for k in source)
    assert changed > 1000  # it did train
    assert_int8_pattern_intact(out, folded)
    from maxq_deploy.verify import verify_artifact

    report = verify_artifact(out)
    assert report.ok and report.kind == "quantized-checkpoint" and {l.dtype for l in report.layers} == {"int8"}


# --- the quantized network and its Q/DQ graph ------------------------------------------------------


@pytest.fixture(scope="session")
def ptq_checkpoint(folded, digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ptq") / "q.pth"
    quantize_ptq(folded, out, digits.train_npz, calibrator="max", calib_batches=2, batch_size=16, workers=0)
    return out


def test_quantized_checkpoint_is_plain_data_with_one_range_per_quantizer(ptq_checkpoint, folded):
    obj = torch.load(ptq_checkpoint, weights_only=True)
    assert obj["format"] == QUANTIZED_FORMAT and obj["format_version"] == 1
    assert obj["arch"] == "resnet18" and obj["num_classes"] == 10 and obj["nm"] == "2:4"
    assert obj["calibration"]["method"] == "max" and obj["calibration"]["batches"] == 2
    assert obj["provenance"]["source_path"] == str(folded) and len(obj["provenance"]["source_sha256"]) == 64
    assert set(obj["state_dict"]) == set(torch.load(folded, weights_only=True)["state_dict"])
    names = set(obj["quantizers"])
    assert len([n for n in names if n.endswith("residual_quantizer")]) == 8  # every BasicBlock's Add
    assert len([n for n in names if n.endswith("_weight_quantizer")]) == 21  # 20 convs + fc
    assert obj["quantizers"]["layer1.0.convbn1._weight_quantizer"].shape == (64, 1, 1, 1)  # per output channel
    assert obj["quantizers"]["conv1._input_quantizer"].numel() == 1  # per tensor
    assert obj["int8_pattern"]["holding_layers"] == obj["int8_pattern"]["sparse_layers"] == 19


def test_quantizers_fed_the_same_tensor_share_one_range(ptq_checkpoint):
    q = torch.load(ptq_checkpoint, weights_only=True)["quantizers"]
    assert torch.equal(q["layer1.0.residual_quantizer"], q["layer1.0.convbn1._input_quantizer"])  # identity = x
    assert torch.equal(q["layer2.0.downsample._input_quantizer"], q["layer2.0.convbn1._input_quantizer"])


def test_loaded_quantized_model_is_the_fake_quant_network(ptq_checkpoint, folded, digits):
    from pytorch_quantization import nn as quant_nn

    from maxq_deploy.load.torch_model import load_torch_model

    loaded = load_torch_model(ptq_checkpoint)
    assert loaded.kind == "quantized-checkpoint" and loaded.arch == "resnet18" and not loaded.module.training
    assert isinstance(loaded.module.layer1[0].convbn1, quant_nn.QuantConv2d) and isinstance(loaded.module.fc, quant_nn.QuantLinear)
    with np.load(digits.test_npz) as data:
        x = torch.from_numpy(data["images"][:16])
    with torch.no_grad():
        out, ref = loaded.module(x), load_torch_model(folded).module(x)
    assert not torch.equal(out, ref)  # quantized...
    assert float((out - ref).abs().max() / ref.abs().max()) < 0.1  # ...but close


def test_qdq_graph_is_what_tensorrt_wants(ptq_checkpoint, tmp_path):
    import onnxruntime as ort
    from pytorch_quantization.nn import TensorQuantizer

    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.quantize.export import export_qdq_onnx

    loaded = load_torch_model(ptq_checkpoint)
    path = tmp_path / "raw.onnx"
    summary = export_qdq_onnx(loaded, torch.zeros(1, 3, INPUT, INPUT), path, 17, True)
    assert TensorQuantizer.use_fb_fake_quant is False  # global state restored
    model = onnx.load(str(path))
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node if n.op_type == "Constant"})
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    # activations only: weights are INT8 initializers read by a DequantizeLinear (21 per-channel ones)
    # one Q/DQ pair per quantized tensor and scale (quantizers sharing a calibrated input share it)
    assert summary.quantize_nodes >= 22 and summary.dequantize_nodes >= 43 and summary.per_channel == 21
    for node in qdq:
        zp = consts[node.input[2]]
        assert zp.dtype == np.int8 and not zp.any()
        scale = consts[node.input[1]]
        if scale.ndim == 1:  # per-channel weight scales, on axis 0
            assert {a.name: a.i for a in node.attribute}.get("axis", 1) == 0
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["output"]
    convs = [n for n in graph.node if n.op_type == "Conv"]
    producers = {o: n for n in graph.node for o in n.output}
    assert all(producers[c.input[0]].op_type == "DequantizeLinear" and producers[c.input[1]].op_type == "DequantizeLinear" for c in convs)
    adds = [n for n in graph.node if n.op_type == "Add"]
    assert len(adds) == 8 and all(any(producers[i].op_type == "DequantizeLinear" for i in a.input) for a in adds)
    assert all(producers[n.input[0]].op_type in ("Conv", "Add") for n in graph.node if n.op_type == "Relu")  # BN folded, no Q/DQ
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(["output"], {"input": np.random.default_rng(0).standard_normal((3, 3, INPUT, INPUT)).astype(np.float32)})[0]
    assert out.shape == (3, 10) and np.isfinite(out).all()


def test_qdq_export_leaves_the_backend_alone_and_refuses_old_opsets(ptq_checkpoint, tmp_path, monkeypatch):
    """The export freezes the quantizers (constant scales): pytorch-quantization's export mode is never switched on."""
    from pytorch_quantization.nn import TensorQuantizer

    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.quantize.export import export_qdq_onnx

    loaded = load_torch_model(ptq_checkpoint)

    def broken_export(*args, **kwargs):
        assert TensorQuantizer.use_fb_fake_quant is False
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="exploded"):
        export_qdq_onnx(loaded, torch.zeros(1, 3, INPUT, INPUT), tmp_path / "x.onnx", 17, False)
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(QuantizationError, match="opset 13"):
        export_qdq_onnx(loaded, torch.zeros(1, 3, INPUT, INPUT), tmp_path / "x.onnx", 12, False)


def test_verify_reads_the_int8_weights(ptq_checkpoint, tmp_path):
    from maxq_deploy.verify import verify_artifact

    report = verify_artifact(ptq_checkpoint)
    assert report.kind == "quantized-checkpoint" and report.ok
    assert {layer.dtype for layer in report.layers} == {"int8"} and len(report.expected) == 19
    # break one group in the stored float weights: the INT8 verdict must see it
    obj = torch.load(ptq_checkpoint, weights_only=True)
    w = obj["state_dict"]["layer2.0.convbn1.weight"]
    w[0, :4, 0, 0] = w.abs().max()
    broken = tmp_path / "broken.pth"
    torch.save(obj, broken)
    report = verify_artifact(broken)
    assert not report.ok and [layer.name for layer in report.failing] == ["layer2.0.convbn1"]


# --- bad input: clear errors, nothing written ------------------------------------------------------


def small_npz(path: Path, count: int, labels: bool = True, size: int = INPUT) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"images": rng.standard_normal((count, 3, size, size)).astype(np.float32)}
    if labels:
        arrays["labels"] = rng.integers(0, 10, count)
    np.savez(path, **arrays)
    return path


def test_no_calibration_data(folded, tmp_path):
    out = tmp_path / "q.pth"
    with pytest.raises(DataError, match="no calibration data"):
        quantize_ptq(folded, out, None)
    with pytest.raises(DataError, match="not found"):
        quantize_ptq(folded, out, tmp_path / "missing")
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("count, batch_size", [(8, 8), (20, 32)])
def test_too_few_calibration_images(folded, tmp_path, count, batch_size):
    data = small_npz(tmp_path / "few.npz", count)
    out = tmp_path / "q.pth"
    with pytest.raises(DataError, match=f"has {count} image"):
        quantize_ptq(folded, out, data, batch_size=batch_size, workers=0)
    assert not out.exists()


def test_qat_needs_labels(folded, tmp_path):
    data = small_npz(tmp_path / "unlabelled.npz", 32, labels=False)
    out = tmp_path / "q.pth"
    with pytest.raises(DataError, match="no labels"):
        quantize_qat(folded, out, data, batch_size=16, workers=0)
    assert not out.exists()


def test_unfolded_or_already_quantized_input(digits, ptq_checkpoint, tmp_path):
    data = small_npz(tmp_path / "calib.npz", 16)
    out = tmp_path / "q.pth"
    with pytest.raises(InputFileError, match="fold it first"):
        quantize_ptq(digits.checkpoint, out, data, batch_size=16, workers=0)
    with pytest.raises(InputFileError, match="already quantized"):
        quantize_ptq(ptq_checkpoint, out, data, batch_size=16, workers=0)
    with pytest.raises(InputFileError, match="fold it first"):
        quantize_qat(digits.checkpoint, out, data, batch_size=16, workers=0)
    assert not out.exists()


@pytest.mark.parametrize("value, message", [(float("nan"), "non-finite range"), (0.0, "zero range")])
def test_unusable_calibrated_ranges_name_the_quantizer(folded, tmp_path, monkeypatch, value, message):
    monkeypatch.setattr(pq_adapter, "histogram_amax", lambda *args, **kwargs: value)  # what the entropy calibrator returns
    data = small_npz(tmp_path / "calib.npz", 16)
    out = tmp_path / "q.pth"
    with pytest.raises(QuantizationError, match=rf"quantizer layer1\.0\.convbn1\._input_quantizer \(input\) got a {message}"):
        quantize_ptq(folded, out, data, calibrator="entropy", batch_size=16, workers=0)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz"]


def test_max_calibrator_that_saw_inf_is_refused(folded, tmp_path, monkeypatch):
    from pytorch_quantization.calib import MaxCalibrator

    monkeypatch.setattr(MaxCalibrator, "compute_amax", lambda self: torch.tensor(float("inf")))
    out = tmp_path / "q.pth"
    with pytest.raises(QuantizationError, match=r"quantizer \S+_quantizer .*non-finite range"):
        quantize_ptq(folded, out, small_npz(tmp_path / "calib.npz", 16), calibrator="max", batch_size=16, workers=0)
    assert not out.exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"calibrator": "minmax"}, "max, entropy, mse, percentile"), ({"percentile": 0}, "--percentile"),
     ({"calib_batches": 0}, "--calib-batches"), ({"batch_size": -1}, "--batch-size")],
)
def test_bad_options_are_named(folded, tmp_path, kwargs, message):
    with pytest.raises(QuantizationError, match=message):
        quantize_ptq(folded, tmp_path / "q.pth", small_npz(tmp_path / "c.npz", 16), **kwargs)


@pytest.mark.parametrize("kwargs, message", [({"lr": 0.0}, "--lr"), ({"epochs": 0}, "--epochs"), ({"optimizer": "lamb"}, "sgd, adamw")])
def test_bad_qat_options_are_named(folded, tmp_path, kwargs, message):
    with pytest.raises(QuantizationError, match=message):
        quantize_qat(folded, tmp_path / "q.pth", small_npz(tmp_path / "c.npz", 16), **kwargs)


def test_output_folder_is_checked_before_any_work(folded, tmp_path):
    with pytest.raises(OutputPathError):
        quantize_ptq(folded, tmp_path / "missing" / "q.pth", None)


def test_missing_backend_is_a_one_line_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_quantization", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'maxq-deploy\[quant\]'"):
        pq_adapter.require_pytorch_quantization()


def test_importing_the_package_needs_neither_backend_nor_cuda():
    import subprocess

    code = ("import sys, maxq_deploy.quantize, maxq_deploy.quantize.pq_adapter, maxq_deploy.cli.cmd_quantize; "
            "assert 'pytorch_quantization' not in sys.modules; import torch; assert not torch.cuda.is_initialized()")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- CLI -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_quantize_table_and_json(folded, digits, tmp_path):
    from typer.testing import CliRunner

    from maxq_deploy.cli.app import app

    runner = CliRunner()
    out = tmp_path / "q.pth"
    args = ["quantize", str(folded), "-o", str(out), "--calib", str(digits.train_npz), "--calibrator", "entropy",
            "--calib-batches", "2", "--batch-size", "16", "--workers", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "19 of 19 sparse layers hold 2:4 on their INT8 weights" in result.stdout
    assert "layer4.1.convbn2" in result.stdout and "Residual" in result.stdout
    result = runner.invoke(app, args + ["--json"])
    data = json.loads(result.stdout)
    assert data["pattern_ok"] and data["calibration"]["method"] == "entropy" and data["mode"] == "ptq"
    result = runner.invoke(app, ["quantize", str(folded), "-o", str(tmp_path / "x.pth"), "--calibrator", "foo", "--calib", str(digits.train_npz)])
    assert result.exit_code == 2 and "error:" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(app, ["quantize", str(folded), "-o", str(tmp_path / "x.pth"), "--qat", "--calib", str(digits.train_npz)])
    assert result.exit_code == 2 and "--train-data" in result.stderr
    assert not (tmp_path / "x.pth").exists()
