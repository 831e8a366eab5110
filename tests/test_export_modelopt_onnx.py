"""``export onnx --target tensorrt --quantizer modelopt``: ModelOpt's ONNX PTQ on the folded fp32 graph.

The digits test needs ``nvidia-modelopt`` with its ONNX pieces and skips without it; the option
refusals, the per-layer reasons and the scratch clean-up run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from quantize_fixtures import folded_digits

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
HAS_MODELOPT = importlib.util.find_spec("modelopt") is not None


def _one_error_line(result) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, lines)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in result.stdout + result.stderr and result.exception is None
    return lines[0]


@pytest.fixture(scope="module")
def calib_npy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mo_calib") / "calib.npy"
    np.save(path, np.random.default_rng(0).standard_normal((16, 3, SIZE, SIZE)).astype(np.float32))
    return path


@pytest.mark.parametrize("extra, expected", [
    ([], r"--quantizer modelopt calibrates the folded float32 graph: pass --calib DATA"),
    (["--calib", "{calib}", "--target", "onnxruntime"], r"does not apply to --target onnxruntime"),
    (["--calib", "{calib}", "--quantizer", "tensorrt-ptq"], r"--quantizer 'tensorrt-ptq' is not supported; choose one of checkpoint, modelopt"),
    (["--calib", "{calib}", "--cpu-isa", "vnni"], r"--cpu-isa does not apply to --quantizer modelopt"),
    (["--calib", "{calib}", "--batch", "4"], r"--batch does not apply to --quantizer modelopt"),
    (["--calib", "{calib}", "--precision", "fp16"], r"writes an int8 graph, not --precision fp16"),
    (["--calib", "{calib}", "--calibrate-method", "percentile"], r"not offered by ModelOpt's ONNX quantizer; choose one of max, entropy"),
])
def test_bad_options_are_one_error_line(cli, store, calib_npy, tmp_path, extra, expected) -> None:
    import re

    args = [a.replace("{calib}", str(calib_npy)) for a in extra]
    if "--quantizer" not in args:
        args += ["--quantizer", "modelopt"]
    out = tmp_path / "m.onnx"
    line = _one_error_line(cli("export", "onnx", store.folded(arch="resnet18"), "-o", out, "--input-size", SIZE, *args))
    assert re.search(expected, line), line
    assert not out.exists() and os.listdir(tmp_path) == []


def test_default_quantizer_is_the_checkpoint_route(cli, store, tmp_path) -> None:
    """``--quantizer checkpoint`` is what export did before the option: the same --json, byte for byte."""
    folded = store.folded(arch="resnet18")
    plain = cli("export", "onnx", folded, "-o", tmp_path / "a.onnx", "--input-size", SIZE, "--exporter", "torchscript", "--json")
    named = cli("export", "onnx", folded, "-o", tmp_path / "b.onnx", "--input-size", SIZE, "--exporter", "torchscript", "--json",
                "--quantizer", "checkpoint")
    assert plain.exit_code == named.exit_code == 0, plain.stderr + named.stderr
    a, b = json.loads(plain.stdout), json.loads(named.stdout)
    for data in (a, b):
        data.pop("output"), data.pop("seconds")
    assert a == b and (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_missing_modelopt_is_one_line_with_its_install_hint(store, calib_npy, tmp_path) -> None:
    code = ("import sys; sys.modules['modelopt'] = None\n"
            "from maxq_deploy.cli.app import main; sys.argv = ['maxq-deploy', *sys.argv[1:]]; main()")
    out = tmp_path / "m.onnx"
    proc = subprocess.run([sys.executable, "-c", code, "export", "onnx", str(store.folded(arch="resnet18")), "-o", str(out),
                           "--quantizer", "modelopt", "--calib", str(calib_npy), "--input-size", str(SIZE)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "COLUMNS": "200"})
    lines = [line for line in proc.stderr.splitlines() + proc.stdout.splitlines() if line.strip()]
    assert proc.returncode != 0 and lines == ["error: nvidia-modelopt is not installed: pip install 'maxq-deploy[modelopt]'"], lines
    assert os.listdir(tmp_path) == []


def test_a_failing_quantizer_leaves_no_scratch_and_no_output(store, calib_npy, tmp_path, monkeypatch) -> None:
    from maxq_deploy.core.errors import QuantizationError
    from maxq_deploy.export import modelopt_onnx

    seen = []

    def failing(moq, fp32_path, int8_path, scratch, *args):
        seen.append(sorted(p.name for p in scratch.iterdir()))
        raise QuantizationError("ModelOpt's ONNX quantizer failed on fp32.onnx: simulated")

    monkeypatch.setattr(modelopt_onnx, "require_modelopt_onnx", lambda: None)
    monkeypatch.setattr(modelopt_onnx, "_quantize", failing)
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    with pytest.raises(QuantizationError, match="simulated"):
        modelopt_onnx.export_modelopt_int8(store.folded(arch="resnet18"), out, calib_npy, calib_batches=1, input_size=SIZE)
    assert seen == [["fp32.onnx"]]  # the fp32 graph was made in the private scratch folder
    assert os.listdir(out.parent) == []  # scratch and temp output both gone


@pytest.mark.parametrize("op, shape, group, kernel, first, batch, float_", [
    ("Conv", (64, 3, 7, 7), 1, [7, 7], True, 8, False),  # the stem: Cout % 8 and the graph input
    ("Conv", (64, 64, 3, 3), 1, [3, 3], False, 8, False),
    ("Conv", (12, 3, 3, 3), 1, [3, 3], True, 8, True),  # Cout 12, Cin 3: neither a multiple of 8
    ("Conv", (8, 8, 3, 3), 1, [3, 3], False, 8, True),  # both under 16, not the first layer
    ("Conv", (8, 1, 3, 3), 8, [3, 3], False, 8, False),  # depthwise, Cout % 8, 3x3
    ("Gemm", (10, 512), 1, [], False, 8, True),  # N 10 < 16
    ("Gemm", (1000, 512), 1, [], False, 1, True),  # GEMV at batch 1
    ("Gemm", (1000, 512), 1, [], False, 8, False),
])
def test_why_float_states_modelopts_rules(op, shape, group, kernel, first, batch, float_) -> None:
    from maxq_deploy.export.modelopt_onnx import why_float

    assert bool(why_float(op, shape, group, kernel, first, batch)) is float_


# --------------------------------------------------------------------------- digits, with ModelOpt


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return folded_digits(tmp_path_factory, "digits_resnet18.mo-onnx-folded.pth")


def _layers(path: Path) -> dict[str, tuple[bool, int]]:
    """Conv/Gemm name -> (INT8, number of weight scales) of a Q/DQ graph."""
    from maxq_deploy.export.modelopt_onnx import layer_report
    from maxq_deploy.onnx_graph.index import load_onnx

    model = load_onnx(path)
    return {layer.name: (layer.int8, layer.weight_scales) for layer in layer_report(model, model, 8)}


@pytest.mark.slow
def test_modelopt_route_on_digits_keeps_2_4_accuracy_and_matches_the_checkpoint_route(cli, digits, tmp_path) -> None:
    pytest.importorskip("modelopt")
    pytest.importorskip("lief")  # ModelOpt's ONNX side imports it
    pytest.importorskip("pytorch_quantization")
    import onnx.numpy_helper
    import torch

    from maxq_deploy.evaluate import evaluate
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.onnx_graph.index import load_onnx
    from maxq_deploy.quantize import QuantizeConfig, quantize
    from maxq_deploy.verify import verify_artifact

    example, folded = digits
    out = tmp_path / "mo.onnx"
    run = cli("export", "onnx", folded, "-o", out, "--quantizer", "modelopt", "--calib", example.train_npz,
              "--calib-batch-size", 32, "--input-size", SIZE, "--json")
    assert run.exit_code == 0, run.stdout + run.stderr
    assert sorted(os.listdir(tmp_path)) == ["mo.onnx"]  # ModelOpt's files stayed in the removed scratch folder
    summary = json.loads(run.stdout)
    assert summary["quantizer"] == "modelopt" and summary["precision"] == "int8" and summary["target"] == "tensorrt"
    assert summary["parity"]["passed"] and summary["parity"]["tolerance"] == 0.1
    assert summary["pattern_ok"] and summary["pattern_holding_layers"] == 19
    assert summary["calibration"]["images"] == 256 and summary["calibration"]["method"] == "max"
    floats = {layer["name"]: layer["reason"] for layer in summary["layers"] if not layer["int8"]}
    assert list(floats) == ["fc"] and "N 10" in floats["fc"]  # 10 classes: ModelOpt's small-GEMM rule
    assert any(note.startswith("fc: Gemm left float by ModelOpt") for note in summary["notes"])
    assert verify_artifact(out).ok

    # 2:4 in the INT8 weights themselves: every zero of the folded weights is 0 in INT8, every group of 4 has 2 zeros
    model = load_onnx(out)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    state = torch.load(folded, weights_only=True)["state_dict"]
    sparse = json.loads({p.key: p.value for p in model.metadata_props}["maxq_deploy.sparse_layers"])
    assert len(sparse) == 19
    for name in sparse:
        w8, ref = inits[f"{name}.weight"], state[f"{name}.weight"].numpy()
        assert w8.dtype == np.int8 and w8.shape == ref.shape, name
        assert np.array_equal(w8 == 0, ref == 0) or bool((w8[ref == 0] == 0).all()), name
        groups = np.moveaxis(w8, 1, -1).reshape(-1, 4)
        ref_groups = np.moveaxis(ref, 1, -1).reshape(-1, 4)
        assert int(((groups == 0).sum(1) >= 2).sum()) == int(((ref_groups == 0).sum(1) >= 2).sum()) == len(groups), name

    # the checkpoint route on the same data: same convs INT8, per-channel weights; the named difference is fc
    quantized = tmp_path / "q.pt"
    quantize(folded, quantized, QuantizeConfig(calib_data=example.train_npz, calibrator="max", calib_batches=8, batch_size=32,
                                                workers=0))
    export_onnx(quantized, tmp_path / "q.onnx", input_size=SIZE)
    ours, theirs = _layers(out), _layers(tmp_path / "q.onnx")
    assert set(ours) == set(theirs)
    convs = [name for name in ours if name != "fc"]
    assert len(convs) == 20 and all(ours[n][0] and theirs[n][0] for n in convs)
    assert all(ours[n][1] == theirs[n][1] > 1 for n in convs)  # per output channel in both
    assert theirs["fc"][0] and not ours["fc"][0]
    counts = {p: {op: sum(n.op_type == op for n in load_onnx(p).graph.node) for op in ("QuantizeLinear", "DequantizeLinear")}
              for p in (out, tmp_path / "q.onnx")}
    assert counts == {out: {"QuantizeLinear": 23, "DequantizeLinear": 43},
                      tmp_path / "q.onnx": {"QuantizeLinear": 22, "DequantizeLinear": 43}}, counts

    fp32 = evaluate(folded, example.test_npz, batch_size=128, workers=0).top1
    tops = {p.name: evaluate(p, example.test_npz, backend="onnxruntime", batch_size=128, workers=0, threads=1).top1
            for p in (out, tmp_path / "q.onnx")}
    assert tops["mo.onnx"] >= fp32 - 0.5, (fp32, tops)


@pytest.mark.slow
def test_onnxruntime_quantizer_works_after_a_modelopt_export_in_the_same_process(store, calib_npy, tmp_path) -> None:
    """ModelOpt patches ONNX Runtime's quantization classes and never undoes it: an ``--target onnxruntime --calib``
    export after a ModelOpt one in the same process failed ("Quantization parameters are not specified", seen in CI)."""
    pytest.importorskip("modelopt")
    pytest.importorskip("lief")
    from onnxruntime.quantization import calibrate, registry

    from maxq_deploy.export import modelopt_onnx
    from maxq_deploy.export.ort_calibrated import export_ort_int8

    folded = store.folded(arch="resnet18")
    before = calibrate.CalibraterBase.__init__
    qdq_ops, qlinear_ops = dict(registry.QDQRegistry), dict(registry.QLinearOpsRegistry)
    modelopt_onnx.export_modelopt_int8(folded, tmp_path / "mo.onnx", calib_npy, calib_batches=1, batch_size=8, input_size=SIZE)
    assert calibrate.CalibraterBase.__init__ is before
    assert registry.QDQRegistry == qdq_ops and registry.QLinearOpsRegistry == qlinear_ops  # ModelOpt edits them in place
    result = export_ort_int8(folded, tmp_path / "ort.onnx", calib_npy, calib_batches=1, batch_size=8, input_size=SIZE)
    assert result.parity.passed and (tmp_path / "ort.onnx").is_file()
    assert "Relu" not in result.op_counts  # ONNX Runtime's own QDQ rules again (ReLU absorbed)
