"""Float regions of the TensorRT-form INT8 graph: the option is checked before any work, its default follows the installed release, fp16 regions are parity checked and fall back to fp32."""

from __future__ import annotations

import pytest



def test_float_regions_option_is_checked_before_any_work(tmp_path) -> None:
    from maxq_deploy.core.errors import OptionError
    from maxq_deploy.export import export_model
    from maxq_deploy.export.tensorrt_form import ExportOptions

    with pytest.raises(OptionError, match="--float-regions must be fp16 or fp32, got 'fp8'"):
        ExportOptions(float_regions="fp8")
    with pytest.raises(OptionError, match="--float-regions applies to INT8 Q/DQ graphs, not a fp32 export"):
        ExportOptions(float_regions="fp16").resolve_float_regions("fp32")
    with pytest.raises(OptionError, match="--float-regions does not apply to --target onnxruntime"):
        export_model(tmp_path / "x.pt", tmp_path / "x.onnx", "onnxruntime", float_regions="fp16")


@pytest.mark.parametrize("installed, expected", [(None, "fp32"), ("11.0.0.114", "fp16"), ("10.13.3.9", "fp16"),
                                                 ("10.8.0.43", "fp32")])
def test_float_regions_default_follows_the_installed_release(monkeypatch, installed, expected: str) -> None:
    from maxq_deploy.export.tensorrt_form import ExportOptions
    from maxq_deploy.runtimes import tensorrt_api as _trt

    monkeypatch.setattr(_trt, "installed_tensorrt_version", lambda: installed)
    regions, why = ExportOptions().resolve_float_regions("int8")
    assert regions == expected and why


@pytest.mark.slow
def test_int8_export_with_fp16_float_regions_is_parity_checked(tmp_path, monkeypatch) -> None:
    pytest.importorskip("pytorch_quantization")
    import numpy as np
    import onnx
    from onnx import TensorProto, numpy_helper

    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.quantize import quantize_ptq
    from maxq_deploy.reference import make_checkpoint, save_checkpoint
    from maxq_deploy.reference.train import save_digits_npz
    from maxq_deploy.runtimes import tensorrt_api as _trt

    monkeypatch.setattr(_trt, "installed_tensorrt_version", lambda: "11.4.0")  # a strongly typed release: fp16 by default
    train, _test = save_digits_npz(tmp_path, 32)
    save_checkpoint(make_checkpoint("resnet18", "2:4", num_classes=10, seed=0), tmp_path / "r.pth.tar")
    fold_checkpoint(tmp_path / "r.pth.tar", tmp_path / "r.folded.pt")
    quantize_ptq(tmp_path / "r.folded.pt", tmp_path / "r.q.pt", train, calibrator="max", calib_batches=2, batch_size=16, workers=0)
    result = export_onnx(tmp_path / "r.q.pt", tmp_path / "int8.onnx", input_size=32)  # default: fp16 float regions
    assert result.parity.passed and result.opset == 19 and result.io_dtype == "float32"
    assert any("float regions of the Q/DQ graph: fp16" in n for n in result.notes)
    model = onnx.load(str(tmp_path / "int8.onnx"))
    graph = model.graph
    assert [i.type.tensor_type.elem_type for i in (*graph.input, *graph.output)] == [TensorProto.FLOAT, TensorProto.FLOAT]
    inits = {i.name: i for i in graph.initializer}
    inits.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
    assert not any(i.data_type == TensorProto.FLOAT for i in inits.values())
    dq_scales = [inits[n.input[1]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[1] in inits]
    assert dq_scales and all(s.data_type == TensorProto.FLOAT16 for s in dq_scales)
    weights = [inits[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weights and all(w.data_type == TensorProto.INT8 for w in weights)  # the INT8 values are untouched
    assert (graph.node[0].op_type, graph.node[-1].op_type) == ("Cast", "Cast")
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["maxq_deploy.float_regions"] == "fp16" and meta["maxq_deploy.precision"] == "int8"
    assert np.isfinite(numpy_helper.to_array(dq_scales[0]).astype(np.float32)).all()


def test_default_fp16_float_regions_fall_back_to_fp32_when_parity_fails(tmp_path, monkeypatch) -> None:
    """The default never makes an export fail that the fp32 form passes: the fallback is written and said."""
    import onnx

    from maxq_deploy.export import tensorrt_form
    from maxq_deploy.export.tensorrt_form import ExportOptions, _ExportJob

    class Parity:
        def __init__(self, passed: bool) -> None:
            self.passed = passed

        def describe(self) -> str:
            return "relative error 0.3 (> tolerance 0.1)"

    job = _ExportJob(tmp_path / "q.pt", tmp_path / "q.onnx", ExportOptions())
    job.precision, job.options.input_size = "int8", 16
    job.loaded = __import__("types").SimpleNamespace(module=None)
    fp32_model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    fp16_model = onnx.helper.make_model(onnx.helper.make_graph([], "g16", [], []))
    job.model, job.float_regions, job.fallback = fp16_model, "fp16", (fp32_model, ["before"])
    results = iter([Parity(False), Parity(True)])
    monkeypatch.setattr(tensorrt_form, "check_parity", lambda *a, **k: next(results))
    monkeypatch.setattr(job, "_seal", lambda: None)
    job.write_checked()
    assert job.model is fp32_model and job.float_regions == "fp32" and job.fallback is None
    assert job.notes[0] == "before" and "the default fp16 form failed the parity check" in job.notes[-1]
    assert onnx.load(str(tmp_path / "q.onnx")).graph.name == "g"
