"""Real TensorRT engines of a reference ResNet-18 2:4 network: dense vs sparse, parity with ONNX Runtime.

Runs only where the ``tensorrt`` package imports and torch sees a CUDA GPU; everywhere else the
whole module is skipped with the reason. Tolerances are relative to the largest reference logit:
fp32 engines may use TF32 (10-bit mantissa in the matmuls), fp16 engines run fp16 throughout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def _skip_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - missing package or libraries that do not load
        return f"TensorRT is not importable here ({type(exc).__name__}: {exc}); pip install tensorrt on a CUDA machine"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU: torch.cuda.is_available() is False"
    return None


SKIP_REASON = _skip_reason()
pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]

INPUT_SIZE = 64
#: max |trt - ort| / max |ort| per engine precision.
TOLERANCE = {"fp32": 5e-3, "fp16": 3e-2, "int8": 1e-1}


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from onnx_fixtures import reference_onnx

    work = tmp_path_factory.mktemp("trt")
    fp32, _ = reference_onnx(work, "resnet18", "fp32", INPUT_SIZE)
    paths = {"fp32": fp32}
    try:
        paths["fp16"], _ = reference_onnx(work, "resnet18", "fp16", INPUT_SIZE)
    except Exception:  # noqa: BLE001 - the minimal fallback exporter writes fp32 only
        pass
    return paths


@pytest.fixture(scope="module")
def engines(graphs: dict[str, Path]) -> dict[tuple[str, bool], object]:
    from maxq_deploy.tensorrt.build import build_engine

    built = {}
    for precision, onnx_path in graphs.items():
        for sparse in (False, True):
            out = onnx_path.with_name(f"{onnx_path.stem}.{'sparse' if sparse else 'dense'}.engine")
            built[(precision, sparse)] = build_engine(onnx_path, out, sparse=sparse, min_batch=1, opt_batch=4, max_batch=8,
                                                      workspace_gib=1.0)
    return built


def _ort_logits(onnx_path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_onnxruntime(graphs, engines, precision: str, sparse: bool) -> None:
    from maxq_deploy.runtimes.tensorrt_runner import TensorRTRunner

    if precision not in graphs:
        pytest.skip(f"no {precision} ONNX export available")
    batch = np.random.default_rng(0).standard_normal((4, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    reference = _ort_logits(graphs["fp32"], batch)
    result = engines[(precision, sparse)]
    with TensorRTRunner(result.output) as runner:
        out = runner.run(batch)
        assert out.shape == reference.shape and out.dtype == np.float32
        rel = float(np.abs(out - reference).max() / np.abs(reference).max())
        assert rel < TOLERANCE[precision], f"{precision} {'sparse' if sparse else 'dense'}: relative error {rel:.3g}"
        assert runner.run(batch[:1]).shape == (1, reference.shape[1])


def test_sparse_report_has_eligible_layers(engines) -> None:
    precision = "fp16" if ("fp16", True) in engines else "fp32"
    sparse, dense = engines[(precision, True)], engines[(precision, False)]
    report = sparse.report
    assert report.sparse_build and report.totals()["expected_sparse"] >= 16  # resnet18: 19 sparse conv-bn layers
    assert report.totals()["eligible"] > 0, report.sparsity_log_lines
    assert any(line.startswith("(Sparsity)") or "(Sparsity)" in line for line in report.sparsity_log_lines)
    assert all(layer.checkpoint_layers for layer in report.layers if layer.op == "conv")  # every conv maps back
    assert dense.report.totals()["eligible"] == 0 and not dense.report.sparse_build
    saved = json.loads(Path(sparse.report_path).read_text())
    assert saved["summary"] == report.summary_line()


def test_verify_engines_through_cli(engines) -> None:
    from typer.testing import CliRunner

    from maxq_deploy.cli.app import app

    precision = "fp16" if ("fp16", True) in engines else "fp32"
    runner = CliRunner()
    sparse = runner.invoke(app, ["verify", str(engines[(precision, True)].output), "--json"])
    assert sparse.exit_code in (0, 1), sparse.output
    data = json.loads(sparse.stdout)
    assert data["kind"] == "engine" and data["holding_layers"] > 0
    assert any("re-inspected the engine" in note for note in data["notes"])
    dense = runner.invoke(app, ["verify", str(engines[(precision, False)].output)])
    assert dense.exit_code == 1


def test_runner_rejects_batches_outside_the_profile(engines) -> None:
    from maxq_deploy.core.errors import EngineRunError
    from maxq_deploy.runtimes.tensorrt_runner import TensorRTRunner

    with TensorRTRunner(engines[("fp32", True)].output) as runner:
        with pytest.raises(EngineRunError, match="outside the engine's profile"):
            runner.run(np.zeros((16, 3, INPUT_SIZE, INPUT_SIZE), np.float32))


def test_timing_cache_is_written_and_reused(graphs, tmp_path: Path) -> None:
    from maxq_deploy.tensorrt.build import build_engine

    cache = tmp_path / "timing.cache"
    first = build_engine(graphs["fp32"], tmp_path / "a.engine", timing_cache=cache, min_batch=1, opt_batch=1, max_batch=1)
    assert cache.is_file() and cache.stat().st_size > 0
    second = build_engine(graphs["fp32"], tmp_path / "b.engine", timing_cache=cache, min_batch=1, opt_batch=1, max_batch=1)
    assert second.output.is_file() and first.report.summary_line() == second.report.summary_line()


# ------------------------------------------------------------------ INT8: the product's main artifact

INT8_SIZE = 32  # the digits calibration size: the Q/DQ graph is exported at the size it was calibrated at


@pytest.fixture(scope="module")
def int8_graph(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A reference ResNet-18 2:4, folded, PTQ-quantized on digits and exported as the INT8 Q/DQ graph (fp16 float regions)."""
    from quantize_fixtures import ptq_reference_resnet18, skip_without_ptq_on_digits

    skip_without_ptq_on_digits()
    from maxq_deploy.export.tensorrt_form import export_onnx

    work = tmp_path_factory.mktemp("trt-int8")
    _train, test = ptq_reference_resnet18(work, INT8_SIZE)  # r18.folded.pt, r18.q.pt
    exported = export_onnx(work / "r18.q.pt", work / "r18.int8.onnx", input_size=INT8_SIZE)
    return {"onnx": exported.output, "quantized": work / "r18.q.pt", "test": test, "float_regions": exported.notes}


@pytest.fixture(scope="module")
def int8_engines(int8_graph: dict) -> dict[bool, object]:
    from maxq_deploy.tensorrt.build import build_engine

    onnx_path = int8_graph["onnx"]
    return {sparse: build_engine(onnx_path, onnx_path.with_name(f"r18.int8.{'sparse' if sparse else 'dense'}.engine"),
                                 sparse=sparse, min_batch=1, opt_batch=8, max_batch=16, workspace_gib=1.0)
            for sparse in (False, True)}


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_int8_engine_matches_the_fake_quantized_model(int8_graph, int8_engines, sparse: bool) -> None:
    import torch

    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.runtimes.tensorrt_runner import TensorRTRunner

    data = np.load(int8_graph["test"])
    batch = np.ascontiguousarray(data["images"][:16].astype(np.float32))
    module = load_torch_model(int8_graph["quantized"]).module.eval()
    with torch.no_grad():
        reference = module(torch.from_numpy(batch)).float().numpy()
    with TensorRTRunner(int8_engines[sparse].output) as runner:
        out = runner.run(batch)
    rel = float(np.abs(out - reference).max() / np.abs(reference).max())
    assert rel < TOLERANCE["int8"], f"int8 {'sparse' if sparse else 'dense'}: relative error {rel:.3g} vs the fake-quantized model"
    agree = float((out.argmax(1) == reference.argmax(1)).mean())
    assert agree >= 0.9, f"top-1 agreement with the fake-quantized model {agree:.2%}"


def test_int8_sparse_engine_runs_eligible_convs_int8_in_and_out(int8_engines) -> None:
    report = int8_engines[True].report
    assert report.graph_precision == "int8" and report.sparse_build
    eligible = [layer for layer in report.layers if layer.op == "conv" and layer.eligible]
    assert eligible, f"no eligible conv: {report.sparsity_log_lines}"
    not_int8 = [(layer.trt_name, layer.input_dtype, layer.output_dtype) for layer in eligible
                if (layer.input_dtype, layer.output_dtype) != ("int8", "int8")]
    assert not_int8 == [], f"eligible convs not INT8 in and out: {not_int8}"
    assert all(layer.precision == "int8" for layer in eligible)
    assert report.reproducibility["float_regions"] == "fp16"
    assert int8_engines[False].report.totals()["eligible"] == 0
