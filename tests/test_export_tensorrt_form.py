"""ONNX export: parity with the MaxQ reference network, graph contract, N:M in ONNX, bad inputs, CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, numpy_helper
from typer.testing import CliRunner

from maxq_deploy.export import tensorrt_form as export_module
from maxq_deploy.load.maxq_checkpoint import MaxQCheckpoint, load_checkpoint

from maxq_deploy.cli.app import app
from maxq_deploy.core.errors import InputFileError, MaxQDeployError, OutputPathError, ParityError
from maxq_deploy.export.tensorrt_form import ExportResult, export_onnx
from maxq_deploy.fold import fold_masks_and_bn, save_folded
from maxq_deploy.verify.onnx import verify_onnx
from maxq_deploy.reference import make_checkpoint, save_checkpoint

SIZE = 64  # every architecture downsamples by 32: 64 keeps a 2x2 final map and the tests fast
SMALL = 32  # for tests about options and errors, where the numbers do not matter
CLASSES = 10
#: Soft masks (kept values in [1, 3]) are what make folding non-trivial; resnet18 and mobilenet_v1
#: cover them. The deep slow ones use hard 0/1 masks, whose reference layers are ~2x cheaper to make.
SLOW_ARCH_LAYER_TYPE = {"resnet34": "HardMaxQConv2DBNV2Pro", "resnet50": "HardMaxQConv2DBNV2Pro"}
runner = CliRunner()


@dataclass
class Made:
    ckpt_path: Path  # the MaxQ training checkpoint
    folded_path: Path
    ckpt: MaxQCheckpoint  # loaded once: its build_model() is the MaxQ reference network


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """arch -> checkpoint and folded checkpoint, made once per module by the reference code."""
    cache: dict[str, Made] = {}
    root = tmp_path_factory.mktemp("ckpts")

    def get(arch: str) -> Made:
        if arch not in cache:
            ckpt_path, folded = root / f"{arch}.pth.tar", root / f"{arch}.folded.pth"
            layer_type = SLOW_ARCH_LAYER_TYPE.get(arch, "SoftMaxQConv2DBNV2Pro")
            save_checkpoint(make_checkpoint(arch, layer_type=layer_type, num_classes=CLASSES, seed=1), ckpt_path)
            ckpt = load_checkpoint(ckpt_path)
            save_folded(fold_masks_and_bn(ckpt), folded)  # what fold_checkpoint does, sharing the load
            cache[arch] = Made(ckpt_path, folded, ckpt)
        return cache[arch]

    return get


@pytest.fixture(scope="module")
def exported(made, tmp_path_factory):
    """(arch, precision) -> (ONNX path, ExportResult), exported once per module."""
    cache: dict[tuple[str, str], tuple[Path, ExportResult]] = {}
    root = tmp_path_factory.mktemp("onnx")

    def get(arch: str, precision: str) -> tuple[Path, ExportResult]:
        if (arch, precision) not in cache:
            out = root / f"{arch}.{precision}.onnx"
            cache[arch, precision] = (out, export_onnx(made(arch).folded_path, out, precision=precision, input_size=SIZE))
        return cache[arch, precision]

    return get


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x.numpy()})[0]


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def conv_gemm_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if node.op_type in ("Conv", "Gemm")]


ARCHS = [
    "resnet18",
    "mobilenet_v1",
    pytest.param("resnet34", marks=pytest.mark.slow),
    pytest.param("resnet50", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("arch", ARCHS)
def test_fp32_and_fp16_match_the_maxq_reference_network(made, exported, arch):
    reference = made(arch).ckpt.build_model()  # the MaxQ eval network: masks applied, BatchNorm separate
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref = reference(x).numpy()
    for precision, tolerance in (("fp32", 1e-4), ("fp16", 1e-2)):
        out, result = exported(arch, precision)
        assert result.parity.passed and result.parity.relative_error <= tolerance
        assert relative_error(run_onnx(out, x), ref) <= tolerance  # batch 3: the batch axis is dynamic
        report = verify_onnx(out, "2:4")
        assert report.ok, report.verdict
        assert result.pattern_ok and result.pattern_holding_layers == len(result.sparse_layers)


def test_graph_contract_names_metadata_and_constant_weights(made, exported):
    out, result = exported("resnet18", "fp32")
    model = onnx.load(str(out))
    graph = model.graph
    ops = {node.op_type for node in graph.node}
    assert "BatchNormalization" not in ops and "Mul" not in ops

    expected_sparse = [layer.name for layer in made("resnet18").ckpt.layers if layer.has_mask]
    names = [node.name for node in conv_gemm_nodes(model)]
    assert set(expected_sparse) <= set(names) and {"conv1", "fc", "layer2.0.downsample"} <= set(names)
    initializers = {init.name: init for init in graph.initializer}
    for node in conv_gemm_nodes(model):
        assert node.input[1] == f"{node.name}.weight" and node.input[1] in initializers  # a constant, not computed
        assert node.input[2] == f"{node.name}.bias" and node.input[2] in initializers

    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["maxq_deploy.arch"] == "resnet18" and meta["maxq_deploy.nm"] == "2:4"
    assert meta["maxq_deploy.precision"] == "fp32" and meta["maxq_deploy.input_size"] == str(SIZE)
    assert json.loads(meta["maxq_deploy.sparse_layers"]) == expected_sparse == result.sparse_layers
    assert meta["maxq_deploy.source_sha256"] == result.source_sha256 and meta["maxq_deploy.tool_version"]

    (inp,), (outp,) = graph.input, graph.output
    assert (inp.name, outp.name) == ("input", "output")
    assert inp.type.tensor_type.elem_type == outp.type.tensor_type.elem_type == TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 3, SIZE, SIZE]
    assert model.opset_import[0].version == 17
    summary = result.summary()
    assert json.loads(json.dumps(summary))["parity"]["passed"] is True
    assert isinstance(result, ExportResult) and summary["output"] == str(out)


def test_fp16_is_fp16_inside_with_float32_boundary(exported):
    out, result = exported("mobilenet_v1", "fp16")
    model = onnx.load(str(out))
    graph = model.graph
    assert {init.data_type for init in graph.initializer} == {TensorProto.FLOAT16}
    assert graph.node[0].op_type == "Cast" and graph.node[0].input[0] == "input"
    assert graph.node[-1].op_type == "Cast" and graph.node[-1].output[0] == "output"
    assert graph.input[0].type.tensor_type.elem_type == graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert {layer.dtype for layer in result.layers} == {"float16"} and result.io_dtype == "float32"
    assert {p.key: p.value for p in model.metadata_props}["maxq_deploy.precision"] == "fp16"


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_verify_flags_a_graph_whose_weights_were_edited(exported, tmp_path, precision):
    out, _ = exported("mobilenet_v1", precision)
    model = onnx.load(str(out))
    target = "features.3.3.weight"
    init = next(i for i in model.graph.initializer if i.name == target)
    weight = numpy_helper.to_array(init).copy()
    weight[0, 0:4, 0, 0] = 0.5  # one group of four fully dense
    init.CopyFrom(numpy_helper.from_array(weight, target))
    edited = tmp_path / "edited.onnx"
    onnx.save(model, str(edited))

    report = verify_onnx(edited, "2:4")
    assert [layer.name for layer in report.failing] == ["features.3.3"]
    assert report.failing[0].violating_groups == 1 and not report.ok
    cli = runner.invoke(app, ["verify", str(edited)])
    assert cli.exit_code == 1 and "FAIL: 1 of 13 sparse layers break 2:4" in cli.output


def test_static_batch_and_opset(made, tmp_path):
    out = tmp_path / "static.onnx"
    with pytest.raises(MaxQDeployError, match=r"--opset 13: the dynamo exporter wrote opset 18 .*--exporter torchscript"):
        export_onnx(made("mobilenet_v1").folded_path, out, batch=3, opset=13, input_size=SMALL)  # onnx cannot convert it
    result = export_onnx(made("mobilenet_v1").folded_path, out, batch=3, opset=13, input_size=SMALL, exporter="torchscript")
    model = onnx.load(str(out))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [3, 3, SMALL, SMALL]
    assert model.opset_import[0].version == 13 and result.parity.batch_shape == [3, 3, SMALL, SMALL]
    assert result.input_shape == [3, 3, SMALL, SMALL]


# --- bad input -----------------------------------------------------------------------------


def test_unfolded_maxq_checkpoint_is_refused_with_fold_hint(made, tmp_path):
    with pytest.raises(InputFileError, match="maxq-deploy fold"):
        export_onnx(made("mobilenet_v1").ckpt_path, tmp_path / "x.onnx", input_size=SMALL)
    assert not (tmp_path / "x.onnx").exists()


def test_output_problems_fail_before_any_work(made, tmp_path, monkeypatch):
    folded = made("mobilenet_v1").folded_path
    monkeypatch.setattr("maxq_deploy.load.torch_model.load_torch_model", lambda *a, **k: pytest.fail("loaded before checking output"))
    with pytest.raises(OutputPathError, match="does not exist"):
        export_onnx(folded, tmp_path / "missing" / "x.onnx")
    with pytest.raises(OutputPathError, match=r"\.onnx"):
        export_onnx(folded, tmp_path / "x.pth")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"precision": "int4"}, "precision"),
        ({"precision": "int8"}, "quantize"),
        ({"opset": 12}, "13..20"),
        ({"input_size": 16}, "input-size"),
        ({"batch": 2, "dynamic_batch": True}, "either"),
        ({"target": "coreml"}, "target"),
    ],
)
def test_bad_options_are_one_line_errors(made, tmp_path, options, message):
    folded = made("mobilenet_v1").folded_path
    with pytest.raises(MaxQDeployError, match=message) as info:
        export_onnx(folded, tmp_path / "x.onnx", **options)
    assert "\n" not in str(info.value) and not (tmp_path / "x.onnx").exists()


def corrupt_fc_bias(monkeypatch) -> None:
    """Make the exporter produce a wrong graph: fc bias + 1 (what a broken export would look like)."""
    original = export_module.raw_graph_from_torch

    def broken(loaded, options, precision, scratch):
        model = original(loaded, options, precision, scratch)
        init = next(i for i in model.graph.initializer if i.name == "fc.bias")
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 1.0, init.name))
        return model

    monkeypatch.setitem(export_module.RAW_GRAPH_PRODUCERS, ("tensorrt", False), broken)


def test_failed_parity_check_writes_nothing(made, tmp_path, monkeypatch):
    out = tmp_path / "x.onnx"
    out.write_bytes(b"previous file")
    corrupt_fc_bias(monkeypatch)
    with pytest.raises(ParityError, match=r"relative error \S+ \(> tolerance 0.0001\).*nothing was written"):
        export_onnx(made("mobilenet_v1").folded_path, out, input_size=SMALL)
    assert out.read_bytes() == b"previous file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.onnx"]  # no temporary file left


# --- INT8: a real quantized checkpoint (the backend-free export is tests/test_export_dynamo.py) ----


@pytest.mark.slow
def test_int8_export_of_a_real_ptq_checkpoint(made, tmp_path):
    """The quantize stage for real: pytorch-quantization PTQ, its Q/DQ hook, this post-processing."""
    pytest.importorskip("pytorch_quantization")
    from maxq_deploy.quantize import quantize_ptq

    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((16, 3, SMALL, SMALL)).astype(np.float32))
    quantized = tmp_path / "mb.quant.pth"
    quantize_ptq(made("mobilenet_v1").folded_path, quantized, calib, calib_batches=1, batch_size=16, workers=0)
    out = tmp_path / "mb.int8.onnx"
    result = export_onnx(quantized, out, input_size=SMALL)
    assert result.precision == "int8" and result.parity.passed and result.pattern_ok
    report = verify_onnx(out, "2:4")
    assert report.ok and {layer.dtype for layer in report.expected} == {"int8"}
    assert {layer.name for layer in report.expected} == set(result.sparse_layers)


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_export_prints_parity_and_json(made, tmp_path):
    folded = made("mobilenet_v1").folded_path
    out = tmp_path / "cli.onnx"
    cli = runner.invoke(app, ["export", "onnx", str(folded), "-o", str(out), "--input-size", str(SMALL)])
    assert cli.exit_code == 0, cli.output
    assert "parity PASS" in cli.output and "PASS: all 13 sparse layers hold 2:4" in cli.output

    cli = runner.invoke(app, ["export", "onnx", str(folded), "-o", str(out), "--input-size", str(SMALL), "--precision", "fp16", "--json"])
    assert cli.exit_code == 0
    summary = json.loads(cli.stdout)
    assert summary["precision"] == "fp16" and summary["parity"]["passed"] and summary["io_dtype"] == "float32"

    cli = runner.invoke(app, ["verify", str(out)])
    assert cli.exit_code == 0 and "PASS: all 13 sparse layers hold 2:4" in cli.output


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["{ckpt}", "-o", "{tmp}/x.onnx"], 2, "maxq-deploy fold"),
        (["{folded}", "-o", "{tmp}/no/x.onnx"], 2, "output folder does not exist"),
        (["{folded}", "-o", "{tmp}/x.onnx", "--opset", "21"], 2, "--opset 21 is out of range"),
        (["{folded}", "-o", "{tmp}/x.onnx", "--batch", "4", "--dynamic-batch"], 2, "either --batch"),
        (["{tmp}/absent.pth", "-o", "{tmp}/x.onnx"], 2, "not found"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(made, tmp_path, args, code, message):
    argv = [a.format(ckpt=made("mobilenet_v1").ckpt_path, folded=made("mobilenet_v1").folded_path, tmp=tmp_path) for a in args]
    cli = runner.invoke(app, ["export", "onnx", *argv])
    assert cli.exit_code == code
    assert message in cli.stderr and "Traceback" not in cli.output
    assert len(cli.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_cli_parity_failure_exits_1(made, tmp_path, monkeypatch):
    corrupt_fc_bias(monkeypatch)
    folded = made("mobilenet_v1").folded_path
    cli = runner.invoke(app, ["export", "onnx", str(folded), "-o", str(tmp_path / "x.onnx"), "--input-size", str(SMALL)])
    assert cli.exit_code == 1 and "parity check failed" in cli.stderr and "Traceback" not in cli.output
    assert not (tmp_path / "x.onnx").exists()


def test_export_targets_are_registered_and_refuse_options_they_do_not_take(made, tmp_path):
    from maxq_deploy.export import EXPORT_TARGETS, export_model

    assert set(EXPORT_TARGETS) == {"tensorrt", "onnxruntime"}
    folded = made("resnet18").folded_path
    with pytest.raises(MaxQDeployError, match="--calib does not apply to --target tensorrt"):
        export_model(folded, tmp_path / "x.onnx", "tensorrt", input_size=SMALL, calib=tmp_path / "c.npz")
    with pytest.raises(MaxQDeployError, match="choose one of tensorrt, onnxruntime"):
        export_model(folded, tmp_path / "x.onnx", "tflite", input_size=SMALL)
    result = export_model(folded, tmp_path / "y.onnx", "onnxruntime", precision="fp32", input_size=SMALL, calib=None)
    assert result.parity.passed and result.output == tmp_path / "y.onnx"  # fp32: the same graph for both targets
    assert not (tmp_path / "x.onnx").exists()
