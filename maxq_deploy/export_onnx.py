"""ONNX export of folded (fp32, fp16) and quantized (INT8 Q/DQ) models, ending in a parity check.

The pipeline of one export:

1. load the model (:func:`maxq_deploy.models.load_torch_model`); a MaxQ training checkpoint is
   refused, because its soft masks and BatchNorm must be folded into constants first;
2. produce the raw graph for the target: torch's TorchScript exporter for folded models,
   the quantize stage's ``export_qdq_onnx`` hook for quantized ones;
3. post-process it with the onnx API: I/O named ``input``/``output``, fp16 boundary casts,
   Conv/Gemm nodes and their weight initializers renamed after the checkpoint layers,
   ``maxq_deploy.*`` metadata, ``onnx.checker``;
4. write it to a temporary file, run ONNX Runtime (CPU) against the PyTorch model on a seeded
   random batch, and rename it into place only if the check passes;
5. measure the hardware N:M pattern on the written graph (:mod:`maxq_deploy.onnx_sparsity`).

Exporter: ``torch.onnx.export(..., dynamo=False)``. torch 2.13 defaults to the dynamo exporter,
but that one cannot emit opset < 18 (it keeps 18 and logs a failed down-conversion, so
``--opset 17`` would be silently ignored), takes ~3x longer, and pytorch-quantization's
fake-quant modules only export through TorchScript anyway. The TorchScript exporter gives a
clean graph for these CNNs: Conv weights and biases as constant initializers named after the
parameters, Gemm(transB=1) for ``fc``, no BatchNormalization (fold removed it), no mask Mul.

FP16 typing: the graph computes in fp16 (fp16 weights, fp16 activations), with a Cast at each
boundary, so ``input`` and ``output`` stay float32 for every precision. It is made from the fp32
graph by converting its float initializers and types (:func:`graph_to_fp16`), not by tracing a
``.half()`` copy: torch's CPU fp16 depthwise convolution makes that trace 10-50x slower. TensorRT 11 builds it
strongly typed without builder flags (the Casts make the fp16 region explicit); runners, data
loading, eval and bench feed the same float32 NCHW batch to every precision, as
:class:`maxq_deploy.runtimes.base.Runner` promises; the two Casts cost a negligible elementwise
pass over the input image and the logits.

Parity tolerances (relative error = max |onnx - torch| / max |torch|): fp32 1e-4 (observed
~1e-6: only summation order differs); fp16 1e-2 against the float32 PyTorch model (observed
~5e-4: 10-bit mantissa through ~50 layers); int8 1e-1 against the fake-quantized PyTorch model
(observed 5e-3 to 5.3e-2 on random batches): ONNX Runtime and torch may round an activation
that sits on a step boundary differently, and one flipped INT8 step (1/127 of that tensor's
range) propagates through the layers after it; a wrong scale, axis or missing Q/DQ gives
errors of order 1, far above it.

Targets (:data:`EXPORT_TARGETS`, run by :func:`export_model`): ``tensorrt`` is this module
(explicit symmetric Q/DQ, TensorRT's rules; INT8 weights stored as INT8 initializers); ``onnxruntime``
(:mod:`maxq_deploy.export_ort`) builds on it. Graph post-processing lives in
:mod:`maxq_deploy.onnx_edit`, the metadata keys in :mod:`maxq_deploy.onnx_meta`.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maxq_deploy import __version__, onnx_meta
from maxq_deploy.artifacts import ONNX_SUFFIXES, Output, atomic_output, check_input_file, guard_outputs, sha256_file, temp_folder
from maxq_deploy.compare import compare_outputs
from maxq_deploy.errors import BackendUnavailableError, InputFileError, OptionError, ParityError
from maxq_deploy.onnx_edit import (  # noqa: F401  (graph post-processing, part of the export API)
    INPUT_NAME,
    OUTPUT_NAME,
    ExportedLayer,
    _assert_clean_graph,
    _float32_boundary,
    _name_io,
    _rename_layers,
    graph_to_fp16,
    rename_value,
)
from maxq_deploy.progress import SILENT, Progress
from maxq_deploy.sparsity import HARDWARE_PATTERN

DEFAULT_OPSET = 17  # parsed by TensorRT 10 and 11; per-channel Q/DQ needs >= 13
OPSET_RANGE = (13, 20)
FOLDED_PRECISIONS = ("fp32", "fp16")
QUANTIZED_PRECISION = "int8"
TARGETS = ("tensorrt",)
BATCH_DIM = "batch"
#: max |onnx - torch| / max |torch| allowed per precision (see the module docstring).
PARITY_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 1e-1}
PARITY_SEED = 0
EXPORTER = "torch.onnx.export (TorchScript, dynamo=False)"


@dataclass
class ExportOptions:
    """What to export; validated on creation, each message names the option, value and choices."""

    precision: str | None = None  # None: fp32 for folded models, int8 for quantized ones
    opset: int = DEFAULT_OPSET
    batch: int | None = None  # a fixed batch size; None: see dynamic_batch
    dynamic_batch: bool | None = None  # None: dynamic unless batch is given
    input_size: int | None = None  # None: what the model records (quantized: its calibration size), else its arch's
    target: str = "tensorrt"
    parity_batch: int = 2

    def __post_init__(self) -> None:
        if self.precision is not None:
            self.precision = str(self.precision).lower()
            allowed = (*FOLDED_PRECISIONS, QUANTIZED_PRECISION)
            if self.precision not in allowed:
                raise OptionError(f"--precision {self.precision!r} is not supported; choose one of {', '.join(allowed)}")
        if not isinstance(self.opset, int) or not OPSET_RANGE[0] <= self.opset <= OPSET_RANGE[1]:
            raise OptionError(
                f"--opset {self.opset} is out of range; use {OPSET_RANGE[0]}..{OPSET_RANGE[1]} "
                f"({DEFAULT_OPSET} is parsed by TensorRT 10 and 11)"
            )
        if self.batch is not None and (not isinstance(self.batch, int) or self.batch < 1):
            raise OptionError(f"--batch {self.batch} must be a positive integer")
        if self.batch is not None and self.dynamic_batch:
            raise OptionError("use either --batch N (a fixed batch size) or --dynamic-batch, not both")
        if self.input_size is not None:
            if isinstance(self.input_size, bool) or not isinstance(self.input_size, int) or self.input_size < 1:
                raise OptionError(f"--input-size {self.input_size} must be a positive number of pixels")
            from maxq_deploy.data import MAX_IMAGE_SIDE, check_batch_memory

            if self.input_size > MAX_IMAGE_SIDE:
                raise OptionError(f"--input-size {self.input_size} is too large; at most {MAX_IMAGE_SIDE} pixels")
            check_batch_memory(max(self.batch or 1, self.parity_batch), (3, self.input_size, self.input_size),
                               "the export and parity batch")
        if self.target not in TARGETS:
            raise OptionError(f"--target {self.target!r} is not supported; choose one of {', '.join(TARGETS)}")
        if not isinstance(self.parity_batch, int) or self.parity_batch < 1:
            raise OptionError(f"parity_batch {self.parity_batch} must be a positive integer")

    @property
    def is_dynamic(self) -> bool:
        return self.batch is None and self.dynamic_batch is not False

    @property
    def export_batch(self) -> int:
        return self.batch or 1

    @property
    def check_batch(self) -> int:
        """Batch of the parity run: a dynamic graph is checked at a batch other than the traced 1."""
        return self.parity_batch if self.is_dynamic else self.export_batch

    def resolve_precision(self, kind: str, path: Path) -> str:
        if kind == "quantized-checkpoint":
            if self.precision not in (None, QUANTIZED_PRECISION):
                raise OptionError(
                    f"{path} is a quantized checkpoint: it exports as an INT8 Q/DQ graph, not {self.precision}; "
                    "drop --precision (or export the folded checkpoint for fp32/fp16)"
                )
            return QUANTIZED_PRECISION
        if self.precision == QUANTIZED_PRECISION:
            raise OptionError(
                f"--precision int8 needs a quantized checkpoint; run maxq-deploy quantize on {path} first and export its output"
            )
        return self.precision or "fp32"


@dataclass
class ParityCheck:
    """ONNX Runtime (CPU) against the PyTorch model on one seeded random batch."""

    reference: str  # what the ONNX output was compared with
    batch_shape: list[int]
    seed: int
    max_abs_error: float
    max_abs_reference: float
    relative_error: float  # max_abs_error / max_abs_reference
    tolerance: float  # on relative_error
    passed: bool
    arithmetic: str = "optimized"  # ONNX Runtime's kernels, or its reference Q/DQ arithmetic (see check_parity)
    note: str = ""
    divergence: dict | None = None  # INT8 failure: the first layer off by more than one quantization step

    def where(self) -> str:
        """``"; first layer ..."`` for a failed INT8 check (empty otherwise)."""
        from maxq_deploy.int8_divergence import describe_divergence

        return "" if self.divergence is None else "; " + describe_divergence(self.divergence)

    def describe(self) -> str:
        return (
            f"max abs error {self.max_abs_error:.3g}, relative error {self.relative_error:.3g} "
            f"({'<=' if self.passed else '>'} tolerance {self.tolerance:g}) on a random batch {tuple(self.batch_shape)}"
        )


@dataclass(kw_only=True)
class ExportSummary:
    """What every ONNX export result shares: the written file, the 2:4 verdict in the graph, notes,
    and the JSON form. The fields are keyword-only, so each result lists its own fields first."""

    pattern: str = HARDWARE_PATTERN
    pattern_sparse_layers: int = 0  # layers the ONNX verifier expects to be sparse
    pattern_holding_layers: int = 0
    pattern_verdict: str = ""
    onnx_sha256: str = ""
    size_bytes: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def pattern_ok(self) -> bool:
        return self.pattern_sparse_layers > 0 and self.pattern_holding_layers == self.pattern_sparse_layers

    def summary(self) -> dict:
        """JSON-ready description (what ``export onnx --json`` prints)."""
        data = asdict(self)
        data["output"], data["source"] = str(self.output), str(self.source)
        data["pattern_ok"] = self.pattern_ok
        return data


@dataclass
class ExportResult(ExportSummary):
    """What ``export onnx`` wrote, and the numbers that say it is right."""

    output: Path
    source: Path
    source_kind: str
    source_sha256: str
    arch: str
    num_classes: int
    nm: str | None
    precision: str
    target: str
    opset: int
    exporter: str
    input_shape: list  # ints, "batch" for the dynamic axis
    io_dtype: str
    sparse_layers: list[str]
    layers: list[ExportedLayer]
    parity: ParityCheck

#: Export targets: name -> "module:function" called as ``function(model, output, **options)``; each
#: returns an :class:`ExportSummary`. ``tensorrt``: the graph TensorRT wants (fp32/fp16, or
#: symmetric INT8 Q/DQ); ``onnxruntime``: the form ONNX Runtime's CPU kernels run fastest.
EXPORT_TARGETS: dict[str, str] = {
    "tensorrt": "maxq_deploy.export_onnx:export_onnx",
    "onnxruntime": "maxq_deploy.export_ort:export_for_onnxruntime",
}


def export_model(model_path: str | os.PathLike[str], output: str | os.PathLike[str], target: str = "tensorrt",
                 **options) -> ExportSummary:
    """Export ``model_path`` for ``target`` (see :data:`EXPORT_TARGETS`); what ``export onnx`` runs."""
    import importlib
    import inspect

    key = str(target).strip().lower()
    if key not in EXPORT_TARGETS:
        raise OptionError(f"--target {target!r} is not supported; choose one of {', '.join(EXPORT_TARGETS)}")
    module, _, function = EXPORT_TARGETS[key].partition(":")
    export = getattr(importlib.import_module(module), function)
    accepted = inspect.signature(export).parameters
    for name, value in list(options.items()):
        if name not in accepted:
            if value is not None:
                raise OptionError(f"--{name.replace('_', '-')} does not apply to --target {key}")
            del options[name]  # an option left unset
    return export(model_path, output, **options)


def export_onnx(
    model_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    precision: str | None = None,
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
    dynamic_batch: bool | None = None,
    input_size: int | None = None,
    progress: Progress | None = None,
    *,
    target: str = "tensorrt",
    parity_batch: int = 2,
) -> ExportResult:
    """Export a folded (fp32/fp16) or quantized (int8) checkpoint to ONNX, parity-checked.

    ``precision`` None means the model's own: fp32 for folded, int8 for quantized checkpoints.
    ``batch`` fixes the batch size; otherwise the batch axis is dynamic (``dynamic_batch``
    False gives a fixed batch of 1). Spatial size is fixed at ``input_size`` (default: the size
    the checkpoint records, else its architecture's; one the architecture cannot run at is
    refused before the export). Raises
    :class:`~maxq_deploy.errors.ParityError`, writing nothing, when ONNX Runtime disagrees with
    PyTorch beyond :data:`PARITY_TOLERANCE`.
    """
    options = ExportOptions(precision, opset, batch, dynamic_batch, input_size, target, parity_batch)
    (out,) = guard_outputs([Output(Path(output), ONNX_SUFFIXES, "ONNX output")], [model_path])
    check_input_file(model_path, "model")
    job = _ExportJob(Path(model_path), out, options)
    steps: list[Callable[[], None]] = [job.load, job.export_raw_graph, job.finalize_graph, job.write_checked, job.verify_pattern]
    for step in (progress or SILENT).track(steps, total=len(steps), description="export onnx"):
        step()
    return job.result()


# --- the steps -------------------------------------------------------------------------------


class _ExportJob:
    """State passed between the steps of one export."""

    def __init__(self, source: Path, output: Path, options: ExportOptions):
        self.source, self.output, self.options = source, output, options
        self.started = time.perf_counter()
        self.notes: list[str] = []

    def load(self) -> None:
        from maxq_deploy.checkpoint import torch_load_safe
        from maxq_deploy.input_size import resolve_input_size
        from maxq_deploy.models import load_torch_model

        obj = torch_load_safe(self.source, "model")
        fmt = obj.get("format") if isinstance(obj, dict) else None
        if not (isinstance(fmt, str) and fmt.startswith("maxq-deploy/")):
            raise InputFileError(
                f"{self.source} is a MaxQ training checkpoint (or not a maxq-deploy model): its masks and BatchNorm "
                f"must be folded into constant weights first: maxq-deploy fold {self.source.name} -o folded.pth, "
                "then export folded.pth"
            )
        del obj
        self.loaded = load_torch_model(self.source)
        self.options.input_size = resolve_input_size(self.loaded.arch, self.loaded.meta, self.options.input_size)
        self.precision = self.options.resolve_precision(self.loaded.kind, self.source)
        self.source_sha256 = sha256_file(self.source)
        self.sparse_layers = _sparse_layer_names(self.loaded.meta)
        if self.sparse_layers is None:
            self.notes.append(f"{self.source} lists no sparse layers; {onnx_meta.SPARSE_LAYERS} is omitted")

    def export_raw_graph(self) -> None:
        producer = RAW_GRAPH_PRODUCERS[(self.options.target, self.precision == QUANTIZED_PRECISION)]
        with temp_folder(self.output) as scratch:  # model-sized scratch stays beside the output
            _SCRATCH.append(scratch)
            try:
                self.model = producer(self.loaded, self.options, self.precision)
            finally:
                _SCRATCH.pop()

    def finalize_graph(self) -> None:
        import onnx

        graph = self.model.graph
        _name_io(graph)
        if self.precision == "fp16":
            graph_to_fp16(graph)
            _float32_boundary(graph)
        self.layers = _rename_layers(graph, self.loaded.module, set(self.sparse_layers or ()), self.notes)
        _assert_clean_graph(graph)
        self.model.producer_name = "maxq-deploy"
        self.model.producer_version = __version__
        self.model.doc_string = (
            f"maxq-deploy export of {self.loaded.arch} ({self.precision}) from {self.source.name}; "
            f"input/output float32 NCHW, input size {self.options.input_size}"
        )
        onnx_meta.write_metadata(self.model, self._metadata())
        onnx.checker.check_model(self.model, full_check=True)  # a failure here is a bug in this module

    def _metadata(self) -> dict[str, str]:
        meta = {
            "arch": self.loaded.arch,
            "nm": self.loaded.nm or "unknown",
            "precision": self.precision,
            "input_size": str(self.options.input_size),
            "source_sha256": self.source_sha256,
            "tool_version": __version__,
            "num_classes": str(self.loaded.num_classes),
            "io_dtype": "float32",
            "target": self.options.target,
            "source_kind": self.loaded.kind,
        }
        if self.sparse_layers is not None:
            meta["sparse_layers"] = json.dumps(self.sparse_layers)
        origin = self.loaded.meta.get("provenance") if isinstance(self.loaded.meta, dict) else None
        if isinstance(origin, dict) and origin.get("source_sha256"):
            meta["checkpoint_sha256"] = str(origin["source_sha256"])
        return {onnx_meta.key(name): value for name, value in meta.items()}

    def write_checked(self) -> None:
        import onnx

        with atomic_output(self.output) as tmp:
            onnx.save(self.model, str(tmp))
            size = self.options.input_size
            self.parity = check_parity(tmp, self.loaded.module, self.precision, [self.options.check_batch, 3, size, size], self._reference())
            if not self.parity.passed:
                raise ParityError(
                    f"ONNX parity check failed ({self.precision}): {self.parity.describe()}, ONNX Runtime vs "
                    f"{self.parity.reference}{self.parity.where()}; nothing was written to {self.output}"
                )
        self.onnx_sha256 = sha256_file(self.output)
        self.size_bytes = self.output.stat().st_size

    def _reference(self) -> str:
        if self.precision == QUANTIZED_PRECISION:
            return "the fake-quantized PyTorch model"
        return "the float32 PyTorch folded model"

    def verify_pattern(self) -> None:
        from maxq_deploy.onnx_sparsity import verify_onnx

        report = verify_onnx(self.output, HARDWARE_PATTERN)
        self.pattern_sparse = len(report.expected)
        self.pattern_holding = len(report.expected) - len(report.failing)
        self.pattern_verdict = report.verdict
        self.notes.extend(report.notes)

    def result(self) -> ExportResult:
        shape: list = [BATCH_DIM if self.options.is_dynamic else self.options.export_batch, 3, self.options.input_size, self.options.input_size]
        return ExportResult(
            output=self.output, source=self.source, source_kind=self.loaded.kind, source_sha256=self.source_sha256,
            arch=self.loaded.arch, num_classes=self.loaded.num_classes, nm=self.loaded.nm, precision=self.precision,
            target=self.options.target, opset=self.options.opset, exporter=self._exporter_name(), input_shape=shape,
            io_dtype="float32", sparse_layers=list(self.sparse_layers or []), layers=self.layers, parity=self.parity,
            pattern_sparse_layers=self.pattern_sparse, pattern_holding_layers=self.pattern_holding,
            pattern_verdict=self.pattern_verdict, onnx_sha256=self.onnx_sha256, size_bytes=self.size_bytes,
            seconds=round(time.perf_counter() - self.started, 3), notes=self.notes,
        )

    def _exporter_name(self) -> str:
        if self.precision == QUANTIZED_PRECISION:
            return "maxq_deploy.quantize.export_qdq_onnx"
        return EXPORTER


def _sparse_layer_names(meta: dict) -> list[str] | None:
    """Names of the checkpoint's sparse layers from the artifact's metadata, None if it has none.

    Folded checkpoints carry ``layers`` (FoldedLayer dicts with ``role``); a quantized
    checkpoint may carry the same ``layers`` or a plain ``sparse_layers`` name list.
    """
    if not isinstance(meta, dict):
        return None
    layers = meta.get("layers")
    if isinstance(layers, list) and all(isinstance(layer, dict) and "name" in layer for layer in layers):
        return [str(layer["name"]) for layer in layers if layer.get("role") == "sparse"]
    names = meta.get("sparse_layers")
    if isinstance(names, list) and all(isinstance(name, str) for name in names):
        return list(names)
    return None


# --- raw graphs (one producer per target and kind) -------------------------------------------


def _dummy_input(options: ExportOptions) -> torch.Tensor:
    size = options.input_size
    return torch.zeros(options.export_batch, 3, size, size)


def raw_graph_from_torch(loaded, options: ExportOptions, precision: str):
    """A folded model through the TorchScript exporter (fp32; fp16 is converted afterwards)."""
    import onnx

    module: nn.Module = loaded.module
    dynamic_axes = {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}} if options.is_dynamic else None
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(
            module, (_dummy_input(options),), buffer, dynamo=False, opset_version=options.opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
            do_constant_folding=True, export_params=True, keep_initializers_as_inputs=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def raw_graph_from_quantized(loaded, options: ExportOptions, precision: str):
    """The quantize stage writes the raw Q/DQ graph; post-processing and parity are shared."""
    import onnx

    try:
        from maxq_deploy.quantize import export_qdq_onnx
    except ImportError:
        raise BackendUnavailableError(
            "exporting a quantized checkpoint needs the quantize stage (maxq_deploy.quantize.export_qdq_onnx) "
            "and pytorch-quantization: pip install 'maxq-deploy[quant]'"
        ) from None
    with tempfile.TemporaryDirectory(prefix=".maxq-deploy-qdq-", dir=_SCRATCH[-1] if _SCRATCH else None) as tmp:
        raw = Path(tmp) / "raw.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_qdq_onnx(loaded, _dummy_input(options), raw, options.opset, options.is_dynamic)
        return onnx.load(str(raw))


#: Scratch folder of the export in progress (beside its output): producers put model-sized temp files there.
_SCRATCH: list[Path] = []
#: (target, quantized) -> producer of the raw graph. A new target registers here.
RAW_GRAPH_PRODUCERS: dict[tuple[str, bool], Callable] = {
    ("tensorrt", False): raw_graph_from_torch,
    ("tensorrt", True): raw_graph_from_quantized,
}




# --- parity ------------------------------------------------------------------------------------


@torch.no_grad()
def check_parity(
    onnx_path: str | os.PathLike[str], module: nn.Module, precision: str, batch_shape: list[int], reference: str = "PyTorch",
    seed: int = PARITY_SEED, cpu_isa: str | None = None,
) -> ParityCheck:
    """Run ONNX Runtime (CPU) and ``module`` on one seeded normal batch; compare the outputs.

    INT8: the TensorRT-form graph (``cpu_isa`` None) and a ``vnni`` graph on a CPU without VNNI are
    run with ONNX Runtime's graph optimizations off, i.e. its reference Q/DQ arithmetic (the graph's
    ONNX meaning, what TensorRT computes), not its u8 x s8 kernels that saturate on such CPUs
    (:mod:`maxq_deploy.cpu_isa`). A failed INT8 check names the first layer that diverges
    (:func:`maxq_deploy.int8_divergence.first_divergence`).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("the parity check needs ONNX Runtime: pip install onnxruntime") from None
    from maxq_deploy.cpu_isa import PORTABLE, int8_saturates

    x = torch.randn(batch_shape, generator=torch.Generator().manual_seed(seed))
    ref = module(x).float().cpu().numpy()
    session_options = ort.SessionOptions()
    session_options.log_severity_level = 3
    note, arithmetic = "", "optimized"
    if precision == QUANTIZED_PRECISION and cpu_isa != PORTABLE and (cpu_isa is None or int8_saturates()):
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        arithmetic = "reference Q/DQ (graph optimizations off)"
        if cpu_isa is not None:
            note = ("parity checked with ONNX Runtime's reference Q/DQ arithmetic: this CPU has no VNNI, where the "
                    f"'{cpu_isa}' form saturates; run it on a CPU with VNNI/AMX, or export with --cpu-isa portable")
    session = ort.InferenceSession(str(onnx_path), session_options, providers=["CPUExecutionProvider"])
    got = np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0], dtype=np.float32)
    tolerance = PARITY_TOLERANCE[precision]
    if got.shape != ref.shape:
        return ParityCheck(reference, list(batch_shape), seed, float("inf"), float(np.abs(ref).max()), float("inf"), tolerance, False)
    diff = compare_outputs(ref, got)
    max_abs, ref_max, relative = diff.max_abs_error, diff.max_abs_reference, diff.relative_error
    passed = diff.finite and relative <= tolerance
    check = ParityCheck(reference, list(batch_shape), seed, max_abs, ref_max, relative, tolerance, passed, arithmetic, note)
    if not passed and precision == QUANTIZED_PRECISION:
        from maxq_deploy.int8_divergence import first_divergence

        check.divergence = first_divergence(onnx_path, module, x, session_options)
    return check
