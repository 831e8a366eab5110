"""An INT8 ONNX graph tuned for ONNX Runtime on CPU, made by ONNX Runtime's own quantizer.

The TensorRT target wants symmetric int8 Q/DQ everywhere; ONNX Runtime's CPU kernels want
something else: uint8 activations with a zero point (after a ReLU the range is [0, max], so
asymmetric uint8 spends all 256 steps on it and the ReLU disappears into the quantized range),
int8 per-channel weights, and Conv/Add/pool pairs it can fuse into integer kernels. Its static
quantizer (``onnxruntime.quantization.quantize_static``) knows those rules, so this module
reuses it instead of re-implementing quantization:

1. export the folded checkpoint to a temporary fp32 ONNX (:func:`maxq_deploy.export.tensorrt_form.export_onnx`,
   which names layers after the checkpoint and checks parity);
2. calibrate and quantize it (``quantize_static``; a ``CalibrationDataReader`` over
   ``maxq_deploy.data`` batches or given arrays) into a temporary file;
3. name the quantized Conv/Gemm nodes after the checkpoint layers again and write the
   ``maxq_deploy.*`` metadata (precision int8, target onnxruntime);
4. compare it with the float32 PyTorch model on the calibration batches (top-1 agreement, max
   abs and relative error) and check that every 2:4 layer keeps its zeros in the INT8 weights
   (:func:`maxq_deploy.verify.onnx.verify_onnx`; symmetric weights map 0.0 to 0 exactly);
5. rename it into place.

INT8 parity is reported, not enforced, except when it is grossly off (relative error above
:data:`GROSS_RELATIVE_ERROR`: a wrong scale or a broken graph, not rounding).

Format: QDQ by default. On this project's CPU (AMD EPYC, AVX-512 VNNI, ONNX Runtime 1.31) QDQ
and QOperator ran at the same speed within noise (see benchmarks/cpu_int8_benchmark.py) and ONNX
Runtime recommends QDQ for CPU since 1.11; QOperator stays available (``quant_format``).
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maxq_deploy.core.files import (
    ONNX_SUFFIXES,
    Output,
    atomic_output,
    check_input_file,
    guard_outputs,
    sha256_file,
    temp_folder,
)
from maxq_deploy.core.errors import BackendUnavailableError, DataError, OptionError, ParityError
from maxq_deploy.onnx_graph import meta as onnx_meta
from maxq_deploy.onnx_graph.index import load_onnx
from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.export.common import CalibratedExport, calibration_record, op_counts, scratch_step
from maxq_deploy.core.sparsity import HARDWARE_PATTERN

TARGET = "onnxruntime"
QUANT_FORMATS = ("qdq", "qoperator")
ACTIVATION_TYPES = ("uint8", "int8")
CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
#: Parity that is not rounding any more: max |int8 - fp32| / max |fp32| above this fails.
GROSS_RELATIVE_ERROR = 0.5
_QUANT_SUFFIX = "_quant"  # what QOperator appends to the node names it replaces


@dataclass
class OrtQuantOptions:
    """How ``quantize_static`` is called; validated on creation."""

    quant_format: str = "qdq"
    per_channel: bool = True
    reduce_range: bool = True  # 7-bit weights: exact on every x86 CPU (--cpu-isa portable); False: --cpu-isa vnni
    calibrate_method: str = "minmax"
    percentile: float = 99.999  # for calibrate_method="percentile"
    activation_type: str = "uint8"  # "int8" (symmetric) only to compare with TensorRT-style graphs
    activation_symmetric: bool = False  # False: a zero point, so a ReLU's [0, max] gets all 256 steps
    quantize_bias: bool = True
    opset: int = 17

    def __post_init__(self) -> None:
        self.quant_format = str(self.quant_format).lower()
        if self.quant_format not in QUANT_FORMATS:
            raise OptionError(f"quant_format {self.quant_format!r} is not supported; choose one of {', '.join(QUANT_FORMATS)}")
        self.calibrate_method = str(self.calibrate_method).lower()
        if self.calibrate_method not in CALIBRATE_METHODS:
            raise OptionError(
                f"calibrate_method {self.calibrate_method!r} is not supported; choose one of {', '.join(CALIBRATE_METHODS)}"
            )
        self.activation_type = str(self.activation_type).lower()
        if self.activation_type not in ACTIVATION_TYPES:
            raise OptionError(f"activation_type {self.activation_type!r} is not supported; choose one of {', '.join(ACTIVATION_TYPES)}")
        if not 50.0 < self.percentile <= 100.0:
            raise OptionError(f"percentile {self.percentile} must be in (50, 100]")

    def extra_options(self) -> dict:
        extra = {
            "ActivationSymmetric": self.activation_symmetric,
            "WeightSymmetric": True,  # 2:4 zeros must stay exactly zero
            "QuantizeBias": self.quantize_bias,
        }
        if self.calibrate_method == "percentile":
            extra["CalibPercentile"] = self.percentile
        return extra


@dataclass
class OrtParity:
    """The INT8 graph (ONNX Runtime, CPU) against the float32 PyTorch model on the calibration data."""

    images: int
    top1_agreement: float
    max_abs_error: float
    max_abs_reference: float
    relative_error: float  # max_abs_error / max_abs_reference
    gross_tolerance: float
    passed: bool  # relative_error <= gross_tolerance and the outputs are finite

    def describe(self) -> str:
        return (
            f"top-1 agreement {self.top1_agreement:.1%} on {self.images} images, max abs error {self.max_abs_error:.3g}, "
            f"relative error {self.relative_error:.3g}"
        )


@dataclass
class OrtExportResult(CalibratedExport):
    """What the ONNX Runtime INT8 export wrote, and the numbers that say how good it is."""

    options: OrtQuantOptions
    calibration: dict  # source, batches, images, batch_size
    parity: OrtParity
    op_counts: dict[str, int]
    sparse_layers: list[str]
    target: str = TARGET
    precision: str = "int8"
    weight_type: str = "int8"



# --------------------------------------------------------------------------- calibration data


CalibData = str | os.PathLike | np.ndarray | Sequence[np.ndarray]


def folded_calibration(folded, calib_data: CalibData, calib_batches: int, batch_size: int, input_size: int | None,
                       preprocess=None, progress: Progress | None = None) -> tuple[list[np.ndarray], str, int]:
    """The calibration batches of a folded model, their source, and the input size the export runs at.

    The size is ``input_size`` when given, else, as ``quantize`` does, the size of the data's samples:
    image files are preprocessed by the one rule (:func:`maxq_deploy.load.input_size.preprocess_for`) at
    the size the checkpoint records, arrays keep their own size (refused where the architecture cannot
    run at it).
    """
    from maxq_deploy.load.input_size import preprocess_for, resolve_input_size

    size = resolve_input_size(folded.arch, folded.meta, input_size)
    if preprocess is None:
        preprocess = preprocess_for(folded.arch, size)  # the transform `quantize` uses for this architecture
    batches, source = calibration_batches(calib_data, calib_batches, batch_size, size if input_size is not None else None,
                                          preprocess, progress)
    if input_size is None:
        size = resolve_input_size(folded.arch, None, int(batches[0].shape[-1]), what=f"calibration data {source}")
    return batches, source, size


def calibration_batches(
    calib_data: CalibData, calib_batches: int, batch_size: int, input_size: int | None, preprocess=None,
    progress: Progress | None = None,
) -> tuple[list[np.ndarray], str]:
    """Up to ``calib_batches`` float32 NCHW batches of ``batch_size`` and a description of their source.

    ``calib_data``: a data folder or .npy/.npz (read through :mod:`maxq_deploy.data` with
    ``preprocess``, default the eval transform at ``input_size``), one NCHW array, or a sequence
    of NCHW arrays (each used as one batch). ``input_size`` None: any square size, the same for every batch.
    """
    if calib_batches < 1:
        raise DataError(f"calib_batches must be >= 1, got {calib_batches}")
    if batch_size < 1:
        raise DataError(f"calibration batch size must be >= 1, got {batch_size}")
    if calib_data is None:
        raise DataError("INT8 calibration needs data: pass --calib DATA (an image folder, .npy or .npz)")
    if isinstance(calib_data, (str, os.PathLike)):
        batches = _batches_from_dataset(Path(calib_data), calib_batches, batch_size, input_size, preprocess, progress)
        return batches, str(calib_data)
    if isinstance(calib_data, np.ndarray):
        arrays = [calib_data[i : i + batch_size] for i in range(0, len(calib_data), batch_size)][:calib_batches]
        source = f"array {tuple(calib_data.shape)}"
    else:
        arrays = list(calib_data)[:calib_batches]
        source = f"{len(arrays)} given batches"
    if not arrays:
        raise DataError(f"no calibration images in {source}")
    if input_size is None:  # the data's own size: the first batch's, square
        first = np.shape(arrays[0])
        input_size = int(first[-1]) if len(first) == 4 and first[-1] == first[-2] and first[-1] > 0 else -1
    batches = [_check_batch(np.asarray(a), input_size, source) for a in arrays]
    return batches, source


def _check_batch(batch: np.ndarray, input_size: int, source: str) -> np.ndarray:
    if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[2:] != (input_size, input_size):
        expected = "N x 3 x S x S (square)" if input_size < 1 else f"N x 3 x {input_size} x {input_size}"
        raise DataError(f"calibration data from {source} must be {expected}, got {tuple(batch.shape)}")
    if batch.dtype.kind != "f":
        raise DataError(f"calibration data from {source} must be preprocessed floats, got {batch.dtype}")
    from maxq_deploy.data import check_finite

    check_finite(batch, f"calibration data from {source}")
    return np.ascontiguousarray(batch, dtype=np.float32)


def _batches_from_dataset(path: Path, count: int, batch_size: int, input_size: int | None, preprocess, progress: Progress | None) -> list[np.ndarray]:
    from maxq_deploy.data import check_input_shape, make_loader, open_dataset
    from maxq_deploy.load.input_size import preprocess_for

    if preprocess is None:
        if input_size is None:
            raise DataError("calibration data from files needs an input size or a preprocessing rule")
        preprocess = preprocess_for(None, input_size)  # no architecture known: ImageNet's crop ratio
    dataset = open_dataset(path, preprocess=preprocess)
    check_input_shape(dataset, 3, input_size or dataset.sample_shape[1], "the model")  # None: square at the data's own size
    loader = make_loader(dataset, batch_size=batch_size, workers=0, shuffle=len(dataset) > count * batch_size)
    batches: list[np.ndarray] = []
    total = min(count, -(-len(dataset) // batch_size))
    for images, _ in (progress or SILENT).track(loader, total=total, description="calibration data"):
        if len(images):
            batches.append(np.ascontiguousarray(images.numpy(), dtype=np.float32))
        if len(batches) >= count:
            break
    if not batches:
        raise DataError(f"no readable calibration images in {path}")
    return batches


def data_reader(input_name: str, batches: Sequence[np.ndarray]):
    """ONNX Runtime's ``CalibrationDataReader`` over ``batches``: what ``quantize_static`` and ModelOpt's ONNX
    quantizer read (each batch once per pass; ModelOpt also reads the first one to size its GEMM checks)."""
    from onnxruntime.quantization import CalibrationDataReader

    class BatchReader(CalibrationDataReader):
        """The calibration batches, once each."""

        def __init__(self) -> None:
            self._next = iter(batches)

        def get_next(self) -> dict | None:
            batch = next(self._next, None)
            return None if batch is None else {input_name: batch}

        def get_first(self) -> dict:
            return {input_name: batches[0]}

        def rewind(self) -> None:
            self._next = iter(batches)

    return BatchReader()


# --------------------------------------------------------------------------- the export


def export_ort_int8(
    folded_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    calib_data: CalibData,
    calib_batches: int = 8,
    batch_size: int = 8,
    preprocess=None,
    input_size: int | None = None,
    progress: Progress | None = None,
    *,
    options: OrtQuantOptions | None = None,
    gross_tolerance: float = GROSS_RELATIVE_ERROR,
) -> OrtExportResult:
    """Quantize a folded checkpoint to an ONNX Runtime INT8 graph (uint8 activations, int8 weights).

    Calibrates on ``calib_batches`` batches of ``batch_size`` from ``calib_data`` (see
    :func:`calibration_batches`). The graph has a dynamic batch axis and a fixed
    ``input_size`` (default: the size the folded checkpoint records). Raises
    :class:`~maxq_deploy.core.errors.ParityError`, writing nothing, only when
    the INT8 output is grossly off; otherwise the parity numbers are in the result.
    """
    started = time.perf_counter()
    options = options or OrtQuantOptions()
    (out,) = guard_outputs([Output(Path(output), ONNX_SUFFIXES, "ONNX output")],
                           [folded_path, calib_data if isinstance(calib_data, (str, os.PathLike)) else None])
    source = check_input_file(folded_path, "folded checkpoint")
    try:
        import onnxruntime  # noqa: F401
        from onnxruntime.quantization import quantize_static  # noqa: F401
    except ImportError:
        raise BackendUnavailableError("the ONNX Runtime INT8 target needs onnxruntime: pip install onnxruntime") from None
    from maxq_deploy.load.maxq_checkpoint import torch_load_safe
    from maxq_deploy.fold import folded_from_dict, load_folded
    from maxq_deploy.load.formats import FOLDED_FORMAT, QUANTIZED_FORMAT, check_format, format_of

    obj = torch_load_safe(source, "folded checkpoint")  # read once: the fp32 export below reuses it
    if format_of(obj) == QUANTIZED_FORMAT:
        raise OptionError(
            f"{source} is a quantized checkpoint: it carries its own ranges, so drop --calib (the graph is made from them)"
        )
    if format_of(obj) != FOLDED_FORMAT:
        folded = load_folded(source)  # a MaxQ checkpoint or another file: refused with the fold hint
    folded = folded_from_dict(check_format(obj, FOLDED_FORMAT, source), Path(source))
    batches, calib_source, input_size = folded_calibration(folded, calib_data, calib_batches, batch_size, input_size,
                                                           preprocess, progress)
    module = folded.build_model()
    track = progress or SILENT
    notes: list[str] = []
    with temp_folder(out) as tmp_dir, atomic_output(out) as tmp_out:  # model-sized scratch beside the output
        fp32_path, int8_path = Path(tmp_dir) / "fp32.onnx", Path(tmp_dir) / "int8.onnx"
        steps = ["fp32 export", "quantize", "check"]
        for step in track.track(steps, total=len(steps), description="export onnxruntime int8"):
            if step == "fp32 export":
                with scratch_step(fp32_path, out, "the intermediate float32 graph"):
                    fp32 = _export_fp32(source, fp32_path, options.opset, input_size, obj)
                del obj  # the file was read once, above
                notes.extend(fp32.notes)
            elif step == "quantize":
                _quantize(fp32_path, int8_path, batches, options)
                counts = _finalize(int8_path, tmp_out, fp32_path, options)
            else:
                parity = _parity(tmp_out, module, batches, gross_tolerance)
                if not parity.passed:
                    raise ParityError(
                        f"ONNX Runtime INT8 output is grossly off the float32 model ({parity.describe()}, "
                        f"tolerance {gross_tolerance:g}); nothing was written to {out}"
                    )
                pattern = _verify_pattern(tmp_out)
                notes.extend(pattern.notes)
    return OrtExportResult(
        output=out, source=source, source_sha256=fp32.source_sha256, arch=folded.arch, num_classes=folded.num_classes,
        nm=folded.nm, input_size=input_size, options=options,
        calibration=calibration_record(calib_source, batches, batch_size),
        parity=parity, op_counts=counts, sparse_layers=list(fp32.sparse_layers),
        pattern_sparse_layers=len(pattern.expected), pattern_holding_layers=pattern.holding_layers,
        pattern_verdict=pattern.verdict, onnx_sha256=sha256_file(out), size_bytes=out.stat().st_size,
        seconds=round(time.perf_counter() - started, 3), notes=notes,
    )


def _export_fp32(source: Path, path: Path, opset: int, input_size: int, source_obj: dict):
    from maxq_deploy.export.tensorrt_form import export_onnx

    return export_onnx(source, path, precision="fp32", opset=opset, input_size=input_size, source_obj=source_obj)


def _quantize(fp32_path: Path, int8_path: Path, batches: Sequence[np.ndarray], options: OrtQuantOptions) -> None:
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    input_name = load_onnx(fp32_path, load_external_data=False).graph.input[0].name
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs a pre-processing hint on the root logger
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its histogram calibrators print() progress
            quantize_static(
                str(fp32_path), str(int8_path), data_reader(input_name, batches),
                quant_format=formats[options.quant_format], per_channel=options.per_channel, reduce_range=options.reduce_range,
                activation_type=QuantType.QUInt8 if options.activation_type == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8, calibrate_method=methods[options.calibrate_method],
                extra_options=options.extra_options(),
            )
    finally:
        root.setLevel(level)


def _finalize(int8_path: Path, out_path: Path, fp32_path: Path, options: OrtQuantOptions) -> dict[str, int]:
    """Checkpoint layer names on the quantized nodes, the fp32 graph's metadata + int8/onnxruntime."""
    import onnx

    from maxq_deploy import __version__

    fp32 = load_onnx(fp32_path, load_external_data=False)
    layer_names = {node.name for node in fp32.graph.node if node.op_type in ("Conv", "Gemm")}
    model = load_onnx(int8_path)
    for node in model.graph.node:
        if node.name.endswith(_QUANT_SUFFIX) and node.name[: -len(_QUANT_SUFFIX)] in layer_names:
            node.name = node.name[: -len(_QUANT_SUFFIX)]
    meta = {p.key: p.value for p in fp32.metadata_props if p.key.startswith(onnx_meta.PREFIX)}
    meta.update({
        onnx_meta.PREFIX + "precision": "int8",
        onnx_meta.PREFIX + "target": TARGET,
        onnx_meta.PREFIX + "quant_format": options.quant_format,
        onnx_meta.PREFIX + "quantizer": "onnxruntime.quantization.quantize_static",
        onnx_meta.PREFIX + "activation_type": options.activation_type,
        onnx_meta.PREFIX + "weight_type": "int8",
        onnx_meta.PREFIX + "weight_bits": "7" if options.reduce_range else "8",
        onnx_meta.CPU_ISA: "portable" if options.reduce_range else "vnni",
        onnx_meta.PREFIX + "per_channel": str(options.per_channel).lower(),
        onnx_meta.PREFIX + "calibrate_method": options.calibrate_method,
        onnx_meta.PREFIX + "tool_version": __version__,
    })
    onnx_meta.write_metadata(model, meta)
    model.producer_name, model.producer_version = "maxq-deploy", __version__
    onnx.save(model, str(out_path))
    return op_counts(model)


def _parity(path: Path, module, batches: Sequence[np.ndarray], gross_tolerance: float) -> OrtParity:
    from maxq_deploy.export.common import onnx_vs_reference

    diff = onnx_vs_reference(path, module, batches)
    return OrtParity(diff.images, diff.top1_agreement, diff.max_abs_error, diff.max_abs_reference, diff.relative_error,
                     gross_tolerance, diff.finite and diff.relative_error <= gross_tolerance)


def _verify_pattern(path: Path):
    from maxq_deploy.verify.onnx import verify_onnx

    return verify_onnx(path, HARDWARE_PATTERN)


def export_for_onnxruntime(
    model: str | os.PathLike[str],
    output: str | os.PathLike[str],
    precision: str | None = None,
    opset: int = 17,
    input_size: int | None = None,
    calib=None,
    calib_batches: int | None = None,
    calib_batch_size: int | None = None,
    resize: int | None = None,
    calibrate_method: str | None = None,
    cpu_isa: str | None = None,
    progress: Progress | None = None,
):
    """The ``onnxruntime`` export target: the graph ONNX Runtime's CPU kernels run fastest.

    fp32/fp16: the same graph as the TensorRT target. int8 from a quantized checkpoint: its own
    ranges (:func:`maxq_deploy.export.ort_from_quantized.export_ort_int8_from_quantized`, no data);
    from a folded checkpoint with ``calib``: ONNX Runtime's static quantizer (:func:`export_ort_int8`).
    ``cpu_isa``: ``portable`` (default: 7-bit weights, exact on every x86 CPU) or ``vnni`` (8-bit
    weights: fastest on VNNI/AMX CPUs, saturates on others); see :mod:`maxq_deploy.onnx_graph.cpu_isa`.
    """
    from maxq_deploy.onnx_graph.cpu_isa import VNNI, check_cpu_isa
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.load.input_size import artifact_input_size

    if (precision or "int8").lower() != "int8" and cpu_isa is not None:
        raise OptionError(f"--cpu-isa chooses an int8 form; --precision {precision} writes a float graph: drop it")
    cpu_isa = check_cpu_isa(cpu_isa)

    calibration = {"--calib-batches": calib_batches, "--calib-batch-size": calib_batch_size, "--resize": resize,
                   "--calibrate-method": calibrate_method}
    if (precision or "int8").lower() != "int8":  # fp32/fp16 graphs are the same for both targets
        given = [name for name, value in {"--calib": calib, **calibration}.items() if value is not None]
        if given:
            raise OptionError(f"{', '.join(given)} calibrate an int8 graph; --precision {precision} writes a float graph "
                              "(the same for both targets): drop them, or export int8")
        return export_onnx(model, output, precision=precision, opset=opset, input_size=input_size, progress=progress)
    found = artifact_input_size(model)
    requested, input_size = input_size, found.resolve(input_size, "--input-size")
    if calib is None:  # a quantized checkpoint carries its ranges (a folded one is refused with the --calib hint)
        given = [name for name, value in calibration.items() if value is not None]
        if given:
            raise OptionError(f"{', '.join(given)} apply to --calib DATA (a folded checkpoint calibrated by ONNX Runtime); "
                              "a quantized checkpoint brings its own ranges: drop them")
        from maxq_deploy.export.ort_from_quantized import export_ort_int8_from_quantized

        return export_ort_int8_from_quantized(model, output, input_size=input_size, opset=opset, progress=progress, cpu_isa=cpu_isa)
    from maxq_deploy.export.common import calibration_counts

    calib_batches, calib_batch_size = calibration_counts(calib_batches, calib_batch_size)
    preprocess = found.preprocess(input_size, resize)
    return export_ort_int8(model, output, calib, calib_batches=calib_batches, batch_size=calib_batch_size,
                           preprocess=preprocess, input_size=requested, progress=progress,  # unset: the data's size
                           options=OrtQuantOptions(calibrate_method=calibrate_method or "minmax", opset=opset,
                                                   reduce_range=cpu_isa != VNNI))
