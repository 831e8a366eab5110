"""The INT8 Q/DQ graph TensorRT gets: INT8 weight initializers, every conv INT8 in and INT8 out.

A reference MaxQ 2:4 ResNet-18 (maxq_deploy.reference) is folded, PTQ-quantized on digits images
and exported through the library, then checked on the ONNX file itself: weights are INT8
initializers read by DequantizeLinear (no QuantizeLinear on a weight), the file is at most 35 % of
the fp32 graph, parity holds, ``verify`` passes on the INT8 values and reports every conv INT8
in and out (the last conv feeds Add -> ReLU -> a quantized GlobalAveragePool input).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from quantize_fixtures import ptq_reference_resnet18, skip_without_ptq_on_digits

skip_without_ptq_on_digits()

pytestmark = pytest.mark.slow
SIZE = 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from maxq_deploy.export.tensorrt_form import export_onnx

    work = tmp_path_factory.mktemp("qdq")
    ptq_reference_resnet18(work, SIZE)  # r18.folded.pt, r18.q.pt
    fp32 = export_onnx(work / "r18.folded.pt", work / "fp32.onnx", input_size=SIZE)
    int8 = export_onnx(work / "r18.q.pt", work / "int8.onnx", input_size=SIZE, float_regions="fp32")  # the fp32-region form
    return {"work": work, "fp32": fp32, "int8": int8}


def test_weights_are_int8_initializers_behind_dequantize(exported: dict) -> None:
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(exported["work"] / "int8.onnx"))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(layers) == 21  # 20 convs + fc
    for node in layers:
        dq = producers[node.input[1]]
        assert dq.op_type == "DequantizeLinear", node.name
        weight = inits[dq.input[0]]
        assert weight.name == f"{node.name}.weight" and weight.data_type == TensorProto.INT8, node.name
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in inits for n in graph.node)
    size32, size8 = (exported["work"] / "fp32.onnx").stat().st_size, (exported["work"] / "int8.onnx").stat().st_size
    assert size8 <= 0.35 * size32, (size8, size32)
    assert exported["int8"].parity.passed and exported["int8"].parity.relative_error < 0.05


def test_int8_values_equal_the_quantized_checkpoint(exported: dict) -> None:
    import onnx
    from onnx import numpy_helper

    from maxq_deploy.quantize.artifact import int8_weight, load_quantized_checkpoint, weight_quantizer_name

    ckpt = load_quantized_checkpoint(exported["work"] / "r18.q.pt")
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(exported["work"] / "int8.onnx")).graph.initializer}
    for name in ("layer1.0.convbn1", "layer4.1.convbn2", "fc"):
        expected = int8_weight(ckpt.state_dict[f"{name}.weight"], ckpt.quantizers[weight_quantizer_name(name)]).numpy()
        got = inits[f"{name}.weight"]
        diff = np.abs(got.astype(np.int32) - expected.astype(np.int32))
        # the export rounds w / float32(scale) like TensorRT; the checkpoint check uses float64: ties may differ by 1
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-4, (name, int(diff.max()), float((diff > 0).mean()))
        assert np.array_equal(got == 0, expected == 0), name  # the 2:4 zeros are exactly the same


def test_every_conv_is_int8_in_and_out_and_verify_says_so(exported: dict) -> None:
    from typer.testing import CliRunner

    from maxq_deploy.cli.app import app
    from maxq_deploy.onnx_graph.qdq_check import qdq_conv_checks
    from maxq_deploy.onnx_graph.layers import read_onnx_graph

    path = exported["work"] / "int8.onnx"
    checks = qdq_conv_checks(path)
    assert len(checks) == 20 and [c.name for c in checks if not c.ok] == []
    last = read_onnx_graph(path).layers["layer4.1.convbn2"]  # -> Add -> ReLU -> Q -> GlobalAveragePool
    assert last.input_quantized and last.output_quantized
    result = CliRunner().invoke(app, ["verify", str(path), "--json"])
    assert result.exit_code == 0, result.output
    import json

    data = json.loads(result.stdout)
    assert data["ok"] and "Q/DQ: 20 of 20 convs INT8 in and INT8 out" in data["notes"]
    assert qdq_conv_checks(exported["work"] / "fp32.onnx") is None


def test_checkpoint_without_a_pool_range_still_exports(exported: dict, tmp_path: Path) -> None:
    """Quantized checkpoints made before pooling inputs were quantized load with that quantizer off."""
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.onnx_graph.qdq_check import qdq_conv_checks

    obj = torch.load(exported["work"] / "r18.q.pt", weights_only=True)
    assert "avgpool._input_quantizer" in obj["quantizers"]
    del obj["quantizers"]["avgpool._input_quantizer"]
    torch.save(obj, tmp_path / "old.q.pt")
    result = export_onnx(tmp_path / "old.q.pt", tmp_path / "old.onnx", input_size=SIZE)
    assert result.parity.passed
    assert [c.name for c in qdq_conv_checks(tmp_path / "old.onnx") if not c.ok] == ["layer4.1.convbn2"]
