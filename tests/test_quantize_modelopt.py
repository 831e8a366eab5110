"""``quantize --backend modelopt``: NVIDIA Model Optimizer PTQ into the same quantized checkpoint.

The ModelOpt tests need ``nvidia-modelopt`` (the ``[modelopt]`` extra) and skip without it; the
missing-backend message is tested everywhere (ModelOpt made unimportable).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
ROOT = Path(__file__).resolve().parents[1]
HAS_MODELOPT = importlib.util.find_spec("modelopt") is not None
needs_modelopt = pytest.mark.skipif(not HAS_MODELOPT, reason="nvidia-modelopt is not installed (pip install 'maxq-deploy[modelopt]')")
INPUT = 32


def _cli(*args: str, block_modelopt: bool = False) -> subprocess.CompletedProcess:
    prefix = "import sys; sys.modules['modelopt'] = None; " if block_modelopt else ""
    code = prefix + "from maxq_deploy.cli.app import main; sys.argv = ['maxq-deploy', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", "import sys\n" + code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=900, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.reference.train import prepare_digits_example

    base = tmp_path_factory.getbasetemp()
    example = prepare_digits_example((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "maxq_digits")
    folded = example.workdir / "digits_resnet18.modelopt-folded.pth"
    if not folded.exists():
        fold_checkpoint(example.checkpoint, folded)
    return example, folded


def test_missing_backend_is_one_line_with_its_install_hint(tmp_path):
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    save_checkpoint(make_checkpoint("resnet18", "2:4", num_classes=10, seed=0), tmp_path / "r.pth.tar")
    fold_checkpoint(tmp_path / "r.pth.tar", tmp_path / "f.pt")
    calib = tmp_path / "c.npy"
    import numpy as np

    np.save(calib, np.random.default_rng(0).standard_normal((32, 3, INPUT, INPUT)).astype(np.float32))
    proc = _cli("quantize", str(tmp_path / "f.pt"), "-o", str(tmp_path / "q.pt"), "--calib", str(calib), "--backend", "modelopt",
                block_modelopt=True)
    assert proc.returncode != 0 and not (tmp_path / "q.pt").exists()
    lines = [line for line in proc.stderr.splitlines() + proc.stdout.splitlines() if line.strip()]
    assert lines == ["error: nvidia-modelopt is not installed: pip install 'maxq-deploy[modelopt]'"], lines
    proc = _cli("quantize", str(tmp_path / "f.pt"), "-o", str(tmp_path / "q.pt"), "--calib", str(calib), "--backend", "modelopt",
                "--qat", "--train-data", str(calib), block_modelopt=True)
    lines = [line for line in proc.stderr.splitlines() + proc.stdout.splitlines() if line.strip()]
    assert proc.returncode != 0 and lines == ["error: nvidia-modelopt is not installed: pip install 'maxq-deploy[modelopt]'"], lines


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
