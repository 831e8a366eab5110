"""Exporter independence: fp32, fp16 and INT8 Q/DQ through torch's current (dynamo) exporter.

The INT8 graph is made from the quantized checkpoint with every quantizer frozen to a constant
scale (``quantize/frozen.py``): no pytorch-quantization export mode, no TorchScript. The graphs
of the two exporters are compared node for node, and the INT8 one against an exact reference:
ONNX Runtime with its graph optimizations off evaluates Q/DQ in float exactly as ONNX defines
it, which must equal the frozen torch model (fused int8 kernels differ by CPU; see DEPLOY_NOTES).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript")  # the dynamo exporter's own dependency
pytestmark = pytest.mark.slow
SIZE = 32
ROOT = Path(__file__).resolve().parents[1]

from quantize_fixtures import _quantized_dict  # noqa: E402


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2:4 ResNet-18 checkpoint, folded, and a quantized checkpoint made without any backend."""
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    work = tmp_path_factory.mktemp("dynamo")
    save_checkpoint(make_checkpoint("resnet18", "2:4", num_classes=10, seed=0), work / "r18.pth.tar")
    fold_checkpoint(work / "r18.pth.tar", work / "folded.pt")
    torch.save(_quantized_dict(work / "folded.pt"), work / "int8.pt")
    return work


@pytest.fixture(scope="module")
def exported(work: Path) -> dict:
    from maxq_deploy.export.tensorrt_form import export_onnx

    out = {}
    for source, precision in (("folded.pt", "fp32"), ("folded.pt", "fp16"), ("int8.pt", "int8")):
        for exporter in ("dynamo", "torchscript"):
            if precision == "fp16" and exporter == "torchscript":
                continue  # fp16 is converted from the fp32 graph: the exporter comparison is fp32's
            path = work / f"{precision}.{exporter}.onnx"
            out[precision, exporter] = (path, export_onnx(work / source, path, precision=precision, input_size=SIZE, exporter=exporter))
    return out


def test_every_precision_exports_through_the_dynamo_exporter(exported: dict) -> None:
    import onnx

    for precision in ("fp32", "fp16", "int8"):
        path, result = exported[precision, "dynamo"]
        assert result.parity.passed, (precision, result.parity.describe())
        assert result.exporter == "torch.onnx.export (dynamo=True)"
        assert result.pattern_ok and result.pattern_holding_layers == 19
        model = onnx.load(str(path))
        assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17  # converted down, honestly
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["maxq_deploy.precision"] == precision and len(json.loads(meta["maxq_deploy.sparse_layers"])) == 19


def _constant(graph, name: str) -> np.ndarray | None:
    from maxq_deploy.onnx_graph.index import GraphIndex

    return GraphIndex(graph).constant_array(name)


def _describe(path: Path) -> dict:
    """What must be the same whichever exporter wrote the graph: nodes, weights, scales, names, metadata."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}

    def qdq(name: str):  # the chain feeding a tensor: (op, scale, zero point, axis) back to a non-Q/DQ producer
        chain = []
        node = producers.get(name)
        while node is not None and node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            axis = next((a.i for a in node.attribute if a.name == "axis"), None)
            chain.append((node.op_type, _constant(graph, node.input[1]).tolist(), _constant(graph, node.input[2]).tolist(), axis))
            if _constant(graph, node.input[0]) is not None:
                chain.append(("initializer", _constant(graph, node.input[0]).dtype.name, _constant(graph, node.input[0]).tobytes()))
                break
            node = producers.get(node.input[0])
        chain.append(node.op_type if node is not None else "graph input")
        return chain

    layers = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm", "Add", "GlobalAveragePool", "Flatten"):
            bias = _constant(graph, node.input[2]).tobytes() if node.op_type in ("Conv", "Gemm") and len(node.input) > 2 else None
            attrs = sorted((a.name, onnx.helper.get_attribute_value(a)) for a in node.attribute)
            key = node.name if node.op_type in ("Conv", "Gemm") else f"{node.op_type}#{sum(1 for k in layers if k.startswith(node.op_type))}"
            layers[key] = (node.op_type, [qdq(i) for i in node.input[:2]], bias, repr(attrs))
    ops = Counter(n.op_type for n in graph.node)
    meta = {p.key: p.value for p in model.metadata_props}
    return {"ops": ops, "layers": layers, "meta": meta, "inputs": [i.name for i in graph.input], "outputs": [o.name for o in graph.output]}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_both_exporters_write_the_same_graph_node_for_node(exported: dict, precision: str) -> None:
    dynamo, torchscript = _describe(exported[precision, "dynamo"][0]), _describe(exported[precision, "torchscript"][0])
    assert dynamo["ops"] == torchscript["ops"]
    assert dynamo["layers"].keys() == torchscript["layers"].keys()
    for name in dynamo["layers"]:
        assert dynamo["layers"][name] == torchscript["layers"][name], name
    assert dynamo["meta"] == torchscript["meta"] and dynamo["inputs"] == torchscript["inputs"] == ["input"]
    if precision == "int8":
        ops = dynamo["ops"]
        assert ops["Conv"] == 20 and ops["Gemm"] == 1 and ops["DequantizeLinear"] > ops["QuantizeLinear"] > 0
        convs = [v for k, v in dynamo["layers"].items() if v[0] in ("Conv", "Gemm")]
        for op, (x, w), _bias, _attrs in convs:  # INT8 in (activation Q/DQ) and INT8 weight initializer + DequantizeLinear
            assert [step[0] for step in x[:2]] == ["DequantizeLinear", "QuantizeLinear"]
            assert w[0][0] == "DequantizeLinear" and w[1][:2] == ("initializer", "int8") and w[0][3] == 0


def test_int8_graph_equals_the_frozen_model_and_the_checkpoint(work: Path, exported: dict) -> None:
    """An exact reference: ONNX's Q/DQ semantics (ONNX Runtime with no graph optimization) vs the frozen model."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from maxq_deploy.quantize.artifact import int8_weight, load_quantized_checkpoint, weight_quantizer_name
    from maxq_deploy.quantize.frozen import frozen_from_checkpoint

    ckpt = load_quantized_checkpoint(work / "int8.pt")
    module = frozen_from_checkpoint(ckpt)
    x = np.random.default_rng(0).standard_normal((8, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    for exporter in ("dynamo", "torchscript"):
        path = exported["int8", exporter][0]
        got = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(["output"], {"input": x})[0]
        # Per image: equal to float rounding, unless a value sat within float error of a rounding
        # step (torch's and ONNX Runtime's convs sum in another order) and one INT8 step flipped,
        # which moves that image by a few % (a wrong scale, axis or missing Q/DQ moves every image).
        per_image = np.abs(got - ref).max(1) / np.abs(ref).max()
        assert (per_image < 1e-5).sum() >= 5 and per_image.max() < 0.1, (exporter, per_image)
        inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}
        for layer in ckpt.layers:
            expected = int8_weight(ckpt.state_dict[f"{layer.name}.weight"], ckpt.quantizers[weight_quantizer_name(layer.name)]).numpy()
            got_w = inits[f"{layer.name}.weight"]
            assert got_w.dtype == np.int8 and np.array_equal(got_w == 0, expected == 0), layer.name  # 2:4 zeros kept
            assert np.abs(got_w.astype(np.int32) - expected).max() <= 1, layer.name  # float32 vs float64 ties
    size_ts, size_dyn = exported["int8", "torchscript"][1].size_bytes, exported["int8", "dynamo"][1].size_bytes
    assert abs(size_ts - size_dyn) < 0.01 * size_ts and size_dyn <= 0.35 * exported["fp32", "dynamo"][1].size_bytes


def test_verify_passes_on_the_dynamo_int8_graph(exported: dict) -> None:
    from maxq_deploy.onnx_graph.qdq_check import qdq_conv_checks
    from maxq_deploy.verify.onnx import verify_onnx

    path = exported["int8", "dynamo"][0]
    report = verify_onnx(path, "2:4")
    assert report.ok and {layer.dtype for layer in report.expected} == {"int8"}
    checks = qdq_conv_checks(path)
    assert len(checks) == 20 and [c.name for c in checks if not c.ok] == []


def test_opset_below_the_dynamo_floor_is_converted_or_refused(work: Path, tmp_path: Path, monkeypatch) -> None:
    import onnx

    from maxq_deploy.core.errors import OptionError
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.onnx_graph import from_torch

    result = export_onnx(work / "folded.pt", tmp_path / "o18.onnx", opset=18, input_size=SIZE)
    assert next(o.version for o in onnx.load(str(tmp_path / "o18.onnx")).opset_import if o.domain == "") == 18 == result.opset

    def failing(model, opset):
        raise RuntimeError("no adapter for ReduceMean 18 -> 17")

    monkeypatch.setattr("onnx.version_converter.convert_version", failing)
    with pytest.raises(OptionError, match=r"--opset 17: the dynamo exporter wrote opset 18 .*--exporter torchscript") as info:
        export_onnx(work / "folded.pt", tmp_path / "o17.onnx", input_size=SIZE)
    assert "\n" not in str(info.value) and not (tmp_path / "o17.onnx").exists()
    assert from_torch.DYNAMO_MIN_OPSET == 18


def test_no_command_prints_the_legacy_exporter_warning(work: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "default"}
    for source, extra in (("int8.pt", []), ("folded.pt", ["--exporter", "torchscript"])):
        out = tmp_path / f"{source}.onnx"
        proc = subprocess.run(
            [sys.executable, "-m", "maxq_deploy", "export", "onnx", str(work / source), "-o", str(out), "--input-size", str(SIZE), *extra],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        for text in (proc.stderr, proc.stdout):
            assert "legacy" not in text.lower() and "TorchScript-based" not in text, text
            assert "[torch.onnx]" not in text and "torchvision is not installed" not in text, text  # the exporter's prints and logs


def test_int8_export_and_eval_need_no_quantization_backend(work: Path, tmp_path: Path) -> None:
    """With pytorch-quantization unimportable, a quantized checkpoint still loads (frozen), exports and verifies."""
    code = (
        "import sys; sys.modules['pytorch_quantization'] = None; sys.modules['modelopt'] = None\n"
        "from maxq_deploy.load.torch_model import load_torch_model\n"
        "from maxq_deploy.export.tensorrt_form import export_onnx\n"
        f"loaded = load_torch_model({str(work / 'int8.pt')!r})\n"
        "assert type(loaded.module).__name__ == 'ResNet' and 'FixedQuantizer' in repr(loaded.module)\n"
        f"r = export_onnx({str(work / 'int8.pt')!r}, {str(tmp_path / 'nb.onnx')!r}, input_size={SIZE}, exporter='torchscript')\n"
        "assert r.pattern_ok and r.precision == 'int8', r\n"
        "print('ok', r.parity.relative_error)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stdout + proc.stderr
