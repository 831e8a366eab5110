"""``quantize --keep-float``: chosen layers get no quantizers (float in the quantized checkpoint,
recorded as ``kept_float``), their convs have no Q/DQ in the TensorRT-form and ONNX Runtime
graphs, and ``verify`` reports kept-float and kept-dense layers as chosen on purpose, not failures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_quantization")

from maxq_deploy.core.errors import OptionError  # noqa: E402
from maxq_deploy.fold import fold_checkpoint  # noqa: E402
from maxq_deploy.quantize import QuantizeConfig, quantize_ptq  # noqa: E402
from maxq_deploy.quantize.artifact import load_quantized_checkpoint  # noqa: E402
from maxq_deploy.verify import verify_artifact  # noqa: E402

SIZE = 32
KEEP_DENSE = ["layer1.0.convbn1"]
KEEP_FLOAT = ["layer2.0.convbn1", "conv1"]  # the folded checkpoint's layer order: sparse layers, then dense


@pytest.fixture(autouse=True)
def ort_reference_kernels(monkeypatch):
    """Parity checks on ONNX Runtime's reference kernels (graph optimizations off).

    On this AVX2-only CPU ONNX Runtime's fused INT8 kernels miss the fake-quantized model by
    more than the export tolerance on every Q/DQ graph, kept layers or not (fixed separately);
    what this file tests is where the Q/DQ nodes are and what verify says.
    """
    import onnxruntime as ort

    real = ort.SessionOptions

    def options():
        o = real()
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return o

    monkeypatch.setattr(ort, "SessionOptions", options)


@pytest.fixture(scope="module")
def folded(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("keepfloat") / "folded.pt"
    fold_checkpoint(store.checkpoint(arch="resnet18", nm="4:8"), out, project=True, keep_dense=KEEP_DENSE)
    return out


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("keepfloat_data") / "calib.npz"
    np.savez(path, images=rng.standard_normal((32, 3, SIZE, SIZE), dtype=np.float32), labels=rng.integers(0, 10, 32))
    return path


@pytest.fixture(scope="module")
def quantized(folded, calib) -> Path:
    out = folded.with_name("q.pt")
    result = quantize_ptq(folded, out, calib, calibrator="max", calib_batches=2, batch_size=16, workers=0,
                          keep_float=[",".join(KEEP_FLOAT)])
    assert result.kept_float == KEEP_FLOAT and result.kept_dense == KEEP_DENSE
    assert result.pattern_ok and len(result.sparse_layers) == 18  # 19 sparse layers, 1 kept dense
    return out


@pytest.mark.slow
def test_quantized_checkpoint_keeps_them_float(quantized, folded) -> None:
    from maxq_deploy.fold import load_folded

    ckpt = load_quantized_checkpoint(quantized)
    assert ckpt.kept_float == KEEP_FLOAT and ckpt.meta["kept_float"] == KEEP_FLOAT and ckpt.kept_dense == KEEP_DENSE
    for name in KEEP_FLOAT:
        assert f"{name}._weight_quantizer" not in ckpt.quantizers and f"{name}._input_quantizer" not in ckpt.quantizers
        assert torch.equal(ckpt.state_dict[f"{name}.weight"], load_folded(folded).state_dict[f"{name}.weight"])
    assert "layer2.0.convbn2._weight_quantizer" in ckpt.quantizers
    report = verify_artifact(quantized)
    assert report.ok and report.verdict == "PASS: all 18 sparse layers hold 2:4"
    by_name = {layer.name: layer for layer in report.layers}
    assert not by_name["layer1.0.convbn1"].expected_sparse and "kept dense on purpose" in by_name["layer1.0.convbn1"].note
    assert by_name["layer2.0.convbn1"].expected_sparse and by_name["layer2.0.convbn1"].holds
    assert by_name["layer2.0.convbn1"].dtype == "float32" and "kept float on purpose" in by_name["layer2.0.convbn1"].note
    assert any("kept float on purpose" in n for n in report.notes) and any("kept dense on purpose" in n for n in report.notes)


@pytest.mark.slow
def test_qdq_and_onnxruntime_graphs_leave_them_float(quantized, tmp_path) -> None:
    from maxq_deploy.export.ort_from_quantized import export_ort_int8_from_quantized
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.onnx_graph.index import GraphIndex, load_onnx

    qdq = export_onnx(quantized, tmp_path / "q.onnx", input_size=SIZE)
    assert qdq.pattern_verdict == "PASS: all 18 sparse layers hold 2:4"
    ort_result = export_ort_int8_from_quantized(quantized, tmp_path / "q_ort.onnx", input_size=SIZE, cpu_isa="vnni")  # the checkpoint's own 8-bit weights
    assert set(KEEP_FLOAT) <= set(ort_result.float_layers)
    for path in (tmp_path / "q.onnx", tmp_path / "q_ort.onnx"):
        model = load_onnx(path)
        meta = {p.key: p.value for p in model.metadata_props}
        assert json.loads(meta["maxq_deploy.kept_float"]) == KEEP_FLOAT
        assert json.loads(meta["maxq_deploy.kept_dense"]) == KEEP_DENSE
        assert "layer1.0.convbn1" not in json.loads(meta["maxq_deploy.sparse_layers"])
        index = GraphIndex(model.graph)
        convs = {n.name: n for n in model.graph.node if n.op_type == "Conv"}
        for name in KEEP_FLOAT:
            x, w = (index.producers.get(i) for i in convs[name].input[:2])
            assert x is None or x.op_type != "DequantizeLinear", (path.name, name)
            assert w is None and index.initializers[convs[name].input[1]].data_type == 1, (path.name, name)  # float
        x = index.producers.get(convs["layer2.0.convbn2"].input[0])
        assert x is not None and x.op_type == "DequantizeLinear"
        report = verify_artifact(path)
        assert report.ok and report.verdict == "PASS: all 18 sparse layers hold 2:4", path.name
        assert any("kept float on purpose" in n for n in report.notes)
        assert any("kept dense on purpose" in n for n in report.notes)


def test_bad_keep_float_is_one_line(store, calib, tmp_path, capsys) -> None:
    from maxq_deploy.cli.app import main

    folded = store.folded(arch="resnet18")
    for value, expected in (("layer9.0.convbn1", "no conv layer named 'layer9.0.convbn1'"), ("conv1,fc", "no conv layer named 'fc'")):
        with pytest.raises(SystemExit) as info:
            main(["quantize", str(folded), "-o", str(tmp_path / "q.pt"), "--calib", str(calib), "--keep-float", value])
        err = capsys.readouterr().err
        assert info.value.code != 0 and len(err.strip().splitlines()) == 1 and err.startswith("error:") and expected in err, err
        assert not (tmp_path / "q.pt").exists()
    with pytest.raises(OptionError):
        quantize_ptq(folded, tmp_path / "q.pt", calib, keep_float=["nope"])
    assert QuantizeConfig(keep_float="conv1, layer1.0.convbn1,conv1").keep_float == ("conv1", "layer1.0.convbn1")
