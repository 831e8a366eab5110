"""TensorRT's INT8 Q/DQ graph made by NVIDIA Model Optimizer's ONNX quantizer (``export onnx --quantizer modelopt``).

The checkpoint route (``quantize``, then ``export onnx``) places Q/DQ by this tool's scheme from
a quantized checkpoint. This route lets ModelOpt place them on the graph itself, the way NVIDIA
recommends for TensorRT:

1. export the folded checkpoint to a float32 ONNX in a private scratch folder beside the output
   (:func:`maxq_deploy.export.tensorrt_form.export_onnx`: checkpoint layer names, fp32 parity);
2. ``modelopt.onnx.quantization.quantize(quantize_mode="int8", calibration_eps=["cpu"],
   dq_only=True)`` on it, fed the same preprocessed batches ``quantize`` reads
   (:func:`maxq_deploy.export.ort_calibrated.folded_calibration`); ModelOpt and the ONNX Runtime
   quantizer under it write their temp files into that scratch folder (``tempfile.tempdir``),
   which is removed afterwards, on error too;
3. the ``maxq_deploy.*`` metadata of the float graph (precision int8, target tensorrt, the
   quantizer, and every Conv/Gemm ModelOpt left float with its reason);
4. :func:`maxq_deploy.export.common.check_parity` (INT8 tolerance) and the 2:4 check on the INT8
   weights (:func:`maxq_deploy.verify.onnx.verify_onnx`), then the rename into place.

Parity reference: the float32 folded model (ModelOpt's quantized network exists only as ONNX, so
there is no fake-quantized PyTorch twin as in the checkpoint route). Measured on digits: relative
error 0.066 against the float32 model, the checkpoint route's graph 0.071 on the same batch.

What ModelOpt 0.47 does with these CNNs on a CPU (measured on the digits ResNet-18): weights
symmetric per output channel (axis 0), stored as INT8 initializers with ``dq_only``; activations
symmetric per tensor; Q/DQ on every Conv input, the residual input of each Add, the MaxPool and
GlobalAveragePool inputs and the pooled output; opset 19 at least. It leaves a Conv float when
its channels are under 16 and fail its INT8 exceptions, and a Gemm/MatMul float when N or K is
under 16 or it is a GEMV (batch 1): :func:`why_float` states those rules per layer.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maxq_deploy.core.errors import OptionError, ParityError, QuantizationError, first_line
from maxq_deploy.core.files import ONNX_SUFFIXES, Output, atomic_output, check_input_file, guard_outputs, sha256_file, temp_folder
from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.core.sparsity import HARDWARE_PATTERN
from maxq_deploy.export.common import CalibratedExport, ParityCheck, calibration_record, check_parity, op_counts, scratch_step
from maxq_deploy.onnx_graph import meta as onnx_meta
from maxq_deploy.onnx_graph.index import load_onnx

QUANTIZER = "modelopt"
CALIBRATE_METHODS = ("max", "entropy")  # what modelopt.onnx.quantization offers for int8
#: ModelOpt's INT8 minimum: it raises a lower opset to this.
MODELOPT_MIN_OPSET = 19
#: ModelOpt 0.47's smallest channel count / GEMM dimension it quantizes without an exception.
MIN_CHANNELS = 16
PARITY_BATCH = 2


@dataclass
class QuantizedLayer:
    """One Conv/Gemm of the written graph: INT8 or float, and why float."""

    name: str
    op: str
    int8: bool
    weight_scales: int  # number of weight scales (output channels when per channel), 0 when float
    reason: str = ""  # why ModelOpt left it float


@dataclass
class ModelOptExportResult(CalibratedExport):
    """What ``export onnx --quantizer modelopt`` wrote, and the numbers that say it is right."""

    opset: int
    modelopt_version: str
    calibration: dict  # source, batches, images, batch_size, method, seconds
    float_regions: str
    parity: ParityCheck
    op_counts: dict[str, int]
    sparse_layers: list[str]
    layers: list[QuantizedLayer] = field(default_factory=list)
    target: str = "tensorrt"
    precision: str = "int8"
    quantizer: str = QUANTIZER

    @property
    def float_layers(self) -> list[QuantizedLayer]:
        return [layer for layer in self.layers if not layer.int8]


def require_modelopt_onnx():
    """``modelopt.onnx.quantization``, or the one-line install hint (its ONNX extras included)."""
    from maxq_deploy.quantize import mo_adapter

    mo_adapter.require_modelopt()
    try:
        with mo_adapter._quiet():
            import modelopt.onnx.quantization as moq
    except ImportError as exc:  # its [onnx] pieces (lief, onnx-graphsurgeon, ...) are missing
        raise QuantizationError(f"{mo_adapter.INSTALL_HINT} (ModelOpt's ONNX quantizer: {first_line(exc)})") from None
    return moq


def export_modelopt_int8(
    folded_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    calib_data,
    calib_batches: int = 8,
    batch_size: int = 8,
    preprocess=None,
    input_size: int | None = None,
    calibrate_method: str = "max",
    float_regions: str = "fp32",
    opset: int = 17,
    exporter: str | None = None,
    progress: Progress | None = None,
) -> ModelOptExportResult:
    """Quantize a folded checkpoint's fp32 graph with ModelOpt's ONNX PTQ into TensorRT's INT8 Q/DQ graph.

    Raises :class:`~maxq_deploy.core.errors.ParityError`, writing nothing, when ONNX Runtime's output
    is off the float32 model by more than the INT8 parity tolerance, and the 2:4 result is checked
    on the INT8 weights themselves.
    """
    started = time.perf_counter()
    calibrate_method = str(calibrate_method).lower()
    if calibrate_method not in CALIBRATE_METHODS:
        raise OptionError(f"--calibrate-method {calibrate_method!r} is not offered by ModelOpt's ONNX quantizer; "
                          f"choose one of {', '.join(CALIBRATE_METHODS)}")
    (out,) = guard_outputs([Output(Path(output), ONNX_SUFFIXES, "ONNX output")],
                           [folded_path, calib_data if isinstance(calib_data, (str, os.PathLike)) else None])
    source = check_input_file(folded_path, "folded checkpoint")
    moq = require_modelopt_onnx()
    from maxq_deploy.export.ort_calibrated import folded_calibration
    from maxq_deploy.fold import folded_from_dict, load_folded
    from maxq_deploy.load.formats import FOLDED_FORMAT, QUANTIZED_FORMAT, check_format, format_of
    from maxq_deploy.load.maxq_checkpoint import torch_load_safe

    obj = torch_load_safe(source, "folded checkpoint")
    if format_of(obj) == QUANTIZED_FORMAT:
        raise OptionError(f"{source} is a quantized checkpoint: --quantizer modelopt quantizes a folded one; "
                          "export this file without --quantizer (its own ranges), or give the folded checkpoint")
    if format_of(obj) != FOLDED_FORMAT:
        load_folded(source)  # a MaxQ checkpoint or another file: refused with the fold hint
    folded = folded_from_dict(check_format(obj, FOLDED_FORMAT, source), Path(source))
    batches, calib_source, input_size = folded_calibration(folded, calib_data, calib_batches, batch_size, input_size,
                                                           preprocess, progress)
    module = folded.build_model()
    notes: list[str] = []
    track = progress or SILENT
    with temp_folder(out) as scratch, atomic_output(out) as tmp_out:
        fp32_path, int8_path = Path(scratch) / "fp32.onnx", Path(scratch) / "int8.onnx"
        steps = ["fp32 export", "quantize", "check"]
        for step in track.track(steps, total=len(steps), description="export onnx (modelopt int8)"):
            if step == "fp32 export":
                with scratch_step(fp32_path, out, "the intermediate float32 graph"):
                    fp32 = _export_fp32(source, fp32_path, opset, input_size, obj, exporter)
                del obj
                notes.extend(fp32.notes)
            elif step == "quantize":
                t0 = time.perf_counter()
                _quantize(moq, fp32_path, int8_path, Path(scratch), batches, calibrate_method, float_regions, opset)
                calib_seconds = round(time.perf_counter() - t0, 3)
                model = load_onnx(int8_path)
                layers = layer_report(model, load_onnx(fp32_path, load_external_data=False), len(batches[0]))
                written_opset = _finalize(model, tmp_out, fp32_path, calibrate_method, float_regions, layers, out)
            else:
                parity = check_parity(tmp_out, module, "int8", [PARITY_BATCH, 3, input_size, input_size],
                                      "the float32 PyTorch folded model")
                if not parity.passed:
                    raise ParityError(f"ONNX parity check failed (int8, ModelOpt): {parity.describe()}, ONNX Runtime vs "
                                      f"{parity.reference}{parity.where()}; nothing was written to {out}")
                from maxq_deploy.verify.onnx import verify_onnx

                pattern = verify_onnx(tmp_out, HARDWARE_PATTERN)
                notes.extend(pattern.notes)
    if written_opset != opset:
        notes.append(f"opset {written_opset}: ModelOpt's INT8 quantizer writes at least opset {MODELOPT_MIN_OPSET}")
    notes.extend(f"{layer.name}: {layer.op} left float by ModelOpt ({layer.reason})" for layer in layers if not layer.int8)
    from maxq_deploy.quantize import mo_adapter

    return ModelOptExportResult(
        output=out, source=source, source_sha256=fp32.source_sha256, arch=folded.arch, num_classes=folded.num_classes,
        nm=folded.nm, input_size=input_size, opset=written_opset, modelopt_version=mo_adapter.version(),
        calibration=calibration_record(calib_source, batches, batch_size, method=calibrate_method, seconds=calib_seconds),
        float_regions=float_regions, parity=parity, op_counts=op_counts(model), sparse_layers=list(fp32.sparse_layers),
        layers=layers, pattern_sparse_layers=len(pattern.expected),
        pattern_holding_layers=len(pattern.expected) - len(pattern.failing), pattern_verdict=pattern.verdict,
        onnx_sha256=sha256_file(out), size_bytes=out.stat().st_size, seconds=round(time.perf_counter() - started, 3),
        notes=notes,
    )


def _export_fp32(source: Path, path: Path, opset: int, input_size: int, source_obj: dict, exporter: str | None):
    from maxq_deploy.export.tensorrt_form import export_onnx

    return export_onnx(source, path, precision="fp32", opset=opset, input_size=input_size, source_obj=source_obj,
                       exporter=exporter)


@contextlib.contextmanager
def _temp_files_in(folder: Path):
    """ModelOpt (``tempfile.mkstemp``) and ONNX Runtime's calibrator write temp files: into ``folder``, not /tmp."""
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = before


@contextlib.contextmanager
def _onnxruntime_left_as_found():
    """ModelOpt's ONNX quantizer patches ONNX Runtime's quantization classes in place (``ort_patching``:
    calibrators, ``create_calibrator``, ``QDQQuantizer``...) and never undoes it, so a later
    ``export --target onnxruntime --calib`` in the same process failed ("Quantization parameters are not
    specified"). Every attribute of the ``onnxruntime.quantization`` modules and their classes is put back."""
    import inspect
    import sys

    def snapshot() -> dict:
        found = {}
        for name, module in list(sys.modules.items()):
            if module is None or not name.startswith("onnxruntime.quantization"):
                continue
            found[module] = dict(vars(module))
            for value in vars(module).values():
                if inspect.isclass(value) and value.__module__.startswith("onnxruntime.quantization"):
                    found.setdefault(value, dict(vars(value)))
        return found

    before = snapshot()
    # it also edits the op registries in place (QDQRegistry, QLinearOpsRegistry: ops added and deleted)
    tables = {id(value): (value, dict(value)) for attributes in before.values() for value in attributes.values()
              if type(value) is dict and not isinstance(value, type)}
    try:
        yield
    finally:
        for owner, attributes in before.items():
            for name, value in attributes.items():
                if vars(owner).get(name, value) is not value:
                    setattr(owner, name, value)
        for table, contents in tables.values():
            if table != contents:
                table.clear()
                table.update(contents)


def _quantize(moq, fp32_path: Path, int8_path: Path, scratch: Path, batches, method: str, float_regions: str,
              opset: int) -> None:
    from maxq_deploy.export.ort_calibrated import data_reader
    from maxq_deploy.quantize import mo_adapter

    input_name = load_onnx(fp32_path, load_external_data=False).graph.input[0].name

    work = scratch / "modelopt"
    work.mkdir()
    try:
        with mo_adapter._quiet(), _temp_files_in(work), _onnxruntime_left_as_found():
            moq.quantize(
                str(fp32_path), quantize_mode="int8", calibration_data_reader=data_reader(input_name, batches),
                calibration_method=method, calibration_eps=["cpu"], output_path=str(int8_path), high_precision_dtype=float_regions, dq_only=True,
                log_level="ERROR", opset=max(opset, MODELOPT_MIN_OPSET),
            )
    except (AssertionError, ValueError, RuntimeError, TypeError, KeyError, ImportError) as exc:
        raise QuantizationError(f"ModelOpt's ONNX quantizer failed on {fp32_path.name}: {first_line(exc)}") from None
    if not int8_path.is_file():
        raise QuantizationError("ModelOpt's ONNX quantizer wrote no graph")


def why_float(op: str, weight_shape: tuple[int, ...], group: int, kernel: list[int], first_layer: bool,
              batch: int) -> str:
    """ModelOpt 0.47's reason for leaving this Conv/Gemm float, or "" where its rules quantize it.

    Convs (``graph_utils.find_nodes_from_convs_to_exclude``): Cout or Cin under 16 is float unless
    (group 1, Cout or Cin a multiple of 8, the first layer or one of them >= 16, a square kernel)
    or (grouped, Cout a multiple of 8, every kernel side >= 3). Gemm/MatMul
    (``find_nodes_from_matmul_to_exclude``): N or K under 16, or a GEMV (calibration batch 1).
    """
    if op == "Conv":
        cout, cin = weight_shape[0], weight_shape[1]
        if cout >= MIN_CHANNELS and cin >= MIN_CHANNELS:
            return ""
        if group == 1 and (cout % 8 == 0 or cin % 8 == 0) and (first_layer or max(cout, cin) >= MIN_CHANNELS) \
                and len(set(kernel)) <= 1:
            return ""
        if group > 1 and cout % 8 == 0 and all(k >= 3 for k in kernel):
            return ""
        return (f"Cout {cout}, Cin {cin}: ModelOpt's INT8 conv rule wants both >= {MIN_CHANNELS}, or a multiple of 8 "
                "with a square kernel (group 1) or kernel >= 3 (grouped)")
    n, k = weight_shape[0], weight_shape[1]  # Gemm weight [out, in] (transB=1 in this tool's graphs)
    if batch == 1:
        return "a GEMV at calibration batch 1: ModelOpt leaves it float (no Tensor Core benefit)"
    if n < MIN_CHANNELS or k < MIN_CHANNELS:
        return f"N {n}, K {k}: ModelOpt leaves a GEMM with N or K under {MIN_CHANNELS} float (TensorRT INT8 kernels want >= 16)"
    return ""


def layer_report(model, fp32_model, batch: int) -> list[QuantizedLayer]:
    """Every Conv/Gemm of the quantized ``model``: INT8 (both inputs from DequantizeLinear) or float, and why."""
    from maxq_deploy.onnx_graph.index import GraphIndex

    fp32_nodes = {n.name: n for n in fp32_model.graph.node if n.op_type in ("Conv", "Gemm")}
    fp32_inits = GraphIndex(fp32_model.graph).initializers
    graph_input = fp32_model.graph.input[0].name
    index = GraphIndex(model.graph)
    producer = index.producers
    layers = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        weight_dq, input_dq = producer.get(node.input[1]), producer.get(node.input[0])
        int8 = bool(weight_dq is not None and weight_dq.op_type == "DequantizeLinear"
                    and input_dq is not None and input_dq.op_type == "DequantizeLinear")
        scales = 0
        scale = index.constant_array(weight_dq.input[1]) if int8 else None
        if scale is not None:
            scales = int(np.asarray(scale).size)
        reason = ""
        if not int8:
            original = fp32_nodes.get(node.name)
            weight = fp32_inits.get(original.input[1]) if original is not None else None
            if weight is not None:
                attrs = {a.name: a for a in original.attribute}
                group = int(attrs["group"].i) if "group" in attrs else 1
                kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else list(weight.dims[2:])
                reason = why_float(node.op_type, tuple(weight.dims), group, kernel, original.input[0] == graph_input, batch)
            reason = reason or "ModelOpt's Q/DQ placement put no Q/DQ on it"
        layers.append(QuantizedLayer(node.name, node.op_type, int8, scales, reason))
    return layers


def _finalize(model, out_path: Path, fp32_path: Path, method: str, float_regions: str, layers: list[QuantizedLayer],
              output: Path) -> int:
    """The float graph's ``maxq_deploy.*`` metadata + int8/tensorrt/modelopt, the numeric check, the save."""
    import onnx

    from maxq_deploy import __version__
    from maxq_deploy.onnx_graph.index import check_onnx_numbers

    fp32 = load_onnx(fp32_path, load_external_data=False)
    meta = {p.key: p.value for p in fp32.metadata_props if p.key.startswith(onnx_meta.PREFIX)}
    meta.update({
        onnx_meta.PRECISION: "int8",
        onnx_meta.TARGET: "tensorrt",
        onnx_meta.key("source_kind"): "folded-checkpoint",
        onnx_meta.key("quantizer"): "modelopt.onnx.quantization.quantize",
        onnx_meta.key("calibrate_method"): method,
        onnx_meta.key("float_regions"): float_regions,
        onnx_meta.key("modelopt_float_layers"): json.dumps({layer.name: layer.reason for layer in layers if not layer.int8}),
        onnx_meta.TOOL_VERSION: __version__,
    })
    onnx_meta.write_metadata(model, meta)
    model.producer_name, model.producer_version = "maxq-deploy", __version__
    model.doc_string = f"maxq-deploy export (int8, ModelOpt ONNX PTQ) of {meta.get(onnx_meta.ARCH, '?')} from a folded checkpoint"
    check_onnx_numbers(model, output)
    onnx.save(model, str(out_path))
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    return MODELOPT_MIN_OPSET


def export_for_tensorrt_with_modelopt(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    calib=None,  # the calibration data and how it is read
    calib_batches: int | None = None,
    calib_batch_size: int | None = None,
    resize: int | None = None,
    calibrate_method: str | None = None,
    precision: str | None = None,  # the graph
    input_size: int | None = None,
    dynamic_batch: bool | None = None,
    opset: int = 17,
    float_regions: str | None = None,
    exporter: str | None = None,
    progress: Progress | None = None,
) -> ModelOptExportResult:
    """``export onnx --target tensorrt --quantizer modelopt``: the options checked, then :func:`export_modelopt_int8`.

    The graph has a dynamic batch axis (``dynamic_batch`` can only confirm it). Float regions
    (``float_regions``) default as in the checkpoint route
    (:meth:`maxq_deploy.export.tensorrt_form.ExportOptions.resolve_float_regions`); they become
    ModelOpt's ``high_precision_dtype``.
    """
    from maxq_deploy.export.common import calibration_counts
    from maxq_deploy.export.tensorrt_form import ExportOptions
    from maxq_deploy.load.input_size import artifact_input_size

    if precision is not None and str(precision).lower() != "int8":
        raise OptionError(f"--quantizer modelopt writes an int8 graph, not --precision {precision}: drop --precision "
                          "(or export without --quantizer for fp32/fp16)")
    if calib is None:
        raise OptionError("--quantizer modelopt calibrates the folded float32 graph: pass --calib DATA "
                          "(an image folder, .npy or .npz)")
    calib_batches, calib_batch_size = calibration_counts(calib_batches, calib_batch_size)
    checked = ExportOptions(opset=opset, input_size=input_size, float_regions=float_regions, exporter=exporter)
    regions, why = checked.resolve_float_regions("int8")
    found = artifact_input_size(model)
    size = found.resolve(input_size, "--input-size")  # image files are preprocessed at it; arrays keep their own size
    result = export_modelopt_int8(
        model, output, calib, calib_batches=calib_batches, batch_size=calib_batch_size, preprocess=found.preprocess(size, resize),
        input_size=input_size, calibrate_method=calibrate_method or "max", float_regions=regions, opset=opset,
        exporter=checked.exporter, progress=progress,
    )
    result.notes.append(f"float regions of the Q/DQ graph: {regions} ({why})")
    return result
