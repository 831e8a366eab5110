"""ONNX Runtime INT8 target: quantize_static on a folded checkpoint, parity, 2:4 in the INT8 weights."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from maxq_deploy.core.errors import DataError, InputFileError, MaxQDeployError, OutputPathError, ParityError
from maxq_deploy.export.ort_calibrated import OrtQuantOptions, calibration_batches, export_ort_int8

SIZE = 32  # the smallest input every architecture takes; keeps calibration fast


def calib_arrays(count: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, SIZE, SIZE), dtype=np.float32)


@pytest.fixture(scope="module")
def qdq_export(store, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("ort_int8") / "r18_int8.onnx"
    result = export_ort_int8(store.folded(arch="resnet18"), out, calib_arrays(), calib_batches=2, batch_size=8, input_size=SIZE)
    return out, result


def test_qdq_export_written_and_described(qdq_export) -> None:
    import onnx
    import onnx.numpy_helper

    out, result = qdq_export
    assert out.is_file() and result.output == out and result.size_bytes == out.stat().st_size
    assert not list(out.parent.glob(".*.tmp"))
    model = onnx.load(str(out))
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0 and ops["Conv"] == 20
    assert ops == Counter(result.op_counts)
    assert "Relu" not in ops  # ReLU-aware uint8 ranges absorb every ReLU
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["maxq_deploy.precision"] == "int8" and meta["maxq_deploy.target"] == "onnxruntime"
    assert meta["maxq_deploy.quant_format"] == "qdq" and meta["maxq_deploy.input_size"] == str(SIZE)
    assert "maxq_deploy.sparse_layers" in meta and meta["maxq_deploy.arch"] == "resnet18"
    conv_names = {node.name for node in model.graph.node if node.op_type == "Conv"}
    assert {"conv1", "layer1.0.convbn1", "layer4.1.convbn2"} <= conv_names  # checkpoint layer names
    inits = {init.name: init for init in model.graph.initializer}
    assert inits["layer1.0.convbn1.weight_quantized"].data_type == onnx.TensorProto.INT8
    activation_zps = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert activation_zps and all(zp.data_type == onnx.TensorProto.UINT8 for zp in activation_zps)  # uint8 activations
    relu_zps = [onnx.numpy_helper.to_array(zp) for zp in activation_zps if "relu" in zp.name.lower()]
    assert relu_zps and all(int(zp) == 0 for zp in relu_zps)  # ReLU outputs use the whole [0, 255] range
    summary = result.summary()
    assert summary["calibration"] == {"source": f"array {(16, 3, SIZE, SIZE)}", "batches": 2, "images": 16, "batch_size": 8}
    assert summary["options"]["quant_format"] == "qdq" and summary["pattern_ok"] is True


def test_qdq_export_runs_and_agrees_with_fp32(qdq_export, store) -> None:
    import torch

    from maxq_deploy.fold import load_folded
    from maxq_deploy.runtimes.onnxruntime_runner import OnnxRuntimeRunner

    out, result = qdq_export
    assert result.parity.passed and result.parity.images == 16
    assert result.parity.top1_agreement >= 0.9
    assert result.parity.relative_error < 0.2
    x = calib_arrays(6, seed=7)  # fresh data, and a batch size the calibration never saw
    runner = OnnxRuntimeRunner(out)
    got = runner.run(x)
    runner.close()
    with torch.no_grad():
        ref = load_folded(store.folded(arch="resnet18")).build_model()(torch.from_numpy(x)).numpy()
    assert got.shape == (6, 10)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.8


def test_2_4_zeros_survive_in_int8_weights(qdq_export) -> None:
    from maxq_deploy.verify.onnx import verify_onnx

    out, result = qdq_export
    report = verify_onnx(out)
    assert report.ok and len(report.expected) == 19 == result.pattern_sparse_layers == result.pattern_holding_layers
    assert all(layer.dtype == "int8" for layer in report.expected)


@pytest.mark.slow
def test_qoperator_from_an_image_folder(store, tmp_path: Path) -> None:
    import onnx
    from PIL import Image

    images = tmp_path / "calib"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "q.onnx"
    result = export_ort_int8(store.folded(arch="resnet18"), out, images, calib_batches=3, batch_size=4, input_size=SIZE,
                             options=OrtQuantOptions(quant_format="qoperator"))
    assert result.calibration["images"] == 10 and result.calibration["batches"] == 3
    model = onnx.load(str(out))
    ops = Counter(node.op_type for node in model.graph.node)
    assert ops["QLinearConv"] == 20 and ops["Conv"] == 0
    assert "layer1.0.convbn1" in {node.name for node in model.graph.node}  # "_quant" suffix removed
    assert result.pattern_ok and result.parity.passed


@pytest.mark.slow
def test_gross_parity_failure_writes_nothing(store, tmp_path: Path) -> None:
    out = tmp_path / "never.onnx"
    with pytest.raises(ParityError, match="nothing was written"):
        export_ort_int8(store.folded(arch="resnet18"), out, calib_arrays(8), calib_batches=1, batch_size=8, input_size=SIZE,
                        gross_tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(calib_data=None), DataError, "calibration needs data"),
        (dict(calib_data=np.zeros((4, 3, 16, 16), np.float32)), DataError, "N x 3 x 32 x 32"),
        (dict(calib_data=np.zeros((4, 3, SIZE, SIZE), np.uint8)), DataError, "preprocessed floats"),
        (dict(calib_batches=0), DataError, "calib_batches"),
        (dict(output="model.bin"), OutputPathError, ".onnx"),
        (dict(output="no/such/dir/m.onnx"), OutputPathError, "does not exist"),
    ],
)
def test_bad_input_is_a_project_error(store, tmp_path: Path, kwargs: dict, error: type, message: str) -> None:
    args = dict(folded_path=store.folded(arch="resnet18"), output=tmp_path / "m.onnx", calib_data=calib_arrays(8),
                calib_batches=1, batch_size=8, input_size=SIZE)
    if "output" in kwargs:
        kwargs = dict(kwargs, output=tmp_path / kwargs["output"])
    with pytest.raises(error, match=message):
        export_ort_int8(**(args | kwargs))
    assert not (tmp_path / "m.onnx").exists()


def test_maxq_training_checkpoint_is_refused(store, tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="fold"):
        export_ort_int8(store.checkpoint(arch="resnet18"), tmp_path / "m.onnx", calib_arrays(8), 1, 8, input_size=SIZE)


@pytest.mark.parametrize("kw", [dict(quant_format="qint"), dict(calibrate_method="mse"), dict(percentile=10.0)])
def test_option_validation(kw: dict) -> None:
    with pytest.raises(MaxQDeployError):
        OrtQuantOptions(**kw)


def test_calibration_batches_from_arrays() -> None:
    batches, source = calibration_batches(calib_arrays(20), calib_batches=2, batch_size=8, input_size=SIZE)
    assert [b.shape[0] for b in batches] == [8, 8] and "array" in source
    batches, _ = calibration_batches([calib_arrays(3), calib_arrays(5)], calib_batches=8, batch_size=8, input_size=SIZE)
    assert [b.shape[0] for b in batches] == [3, 5]
    assert all(b.dtype == np.float32 and b.flags.c_contiguous for b in batches)


def test_extra_options_keep_weights_symmetric() -> None:
    extra = OrtQuantOptions(calibrate_method="percentile", percentile=99.99).extra_options()
    assert extra["WeightSymmetric"] is True and extra["ActivationSymmetric"] is False and extra["CalibPercentile"] == 99.99


def test_calibration_takes_the_size_of_array_data_as_quantize_does(store, cli, tmp_path) -> None:
    """A folded ResNet-18 records 224; 32x32 arrays calibrate and export it at 32 without --input-size (``quantize``
    takes the same file the same way). Images, a size the model cannot run at, and non-square arrays: as before."""
    import onnx

    from maxq_deploy.core.errors import OptionError
    from maxq_deploy.export.ort_calibrated import folded_calibration
    from maxq_deploy.fold import load_folded

    folded = load_folded(store.folded(arch="resnet18"))
    assert folded.meta.get("input_size") in (None, 224)
    npz = tmp_path / "calib32.npz"
    np.savez(npz, images=calib_arrays(16))
    batches, source, size = folded_calibration(folded, npz, 2, 8, None)
    assert size == SIZE and [b.shape for b in batches] == [(8, 3, SIZE, SIZE)] * 2 and source == str(npz)
    np.testing.assert_array_equal(np.concatenate(batches), calib_arrays(16))  # arrays are taken as they are
    assert folded_calibration(folded, calib_arrays(16), 2, 8, None)[2] == SIZE  # in-memory arrays: the same rule
    with pytest.raises(DataError, match="expects 3x64x64"):
        folded_calibration(folded, npz, 2, 8, 64)  # a size asked for is still checked against the data
    np.savez(tmp_path / "odd.npz", images=np.zeros((16, 3, 16, 16), np.float32))
    with pytest.raises(OptionError, match="cannot run at 16x16"):
        folded_calibration(folded, tmp_path / "odd.npz", 2, 8, None)
    np.savez(tmp_path / "wide.npz", images=np.zeros((16, 3, 32, 64), np.float32))
    with pytest.raises(DataError, match="3x32x64"):
        folded_calibration(folded, tmp_path / "wide.npz", 2, 8, None)
    with pytest.raises(DataError, match="square"):
        folded_calibration(folded, np.zeros((16, 3, 32, 64), np.float32), 2, 8, None)

    out = tmp_path / "r18.onnx"
    res = cli("export", "onnx", store.folded(arch="resnet18"), "-o", out, "--target", "onnxruntime", "--calib", npz,
              "--calib-batches", 2, "--calib-batch-size", 8, "--json")
    assert res.exit_code == 0, res.stderr
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[1:]]
    assert dims == [3, SIZE, SIZE]
