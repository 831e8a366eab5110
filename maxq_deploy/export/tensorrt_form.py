"""ONNX export of folded (fp32, fp16) and quantized (INT8 Q/DQ) models, ending in a parity check.

The pipeline of one export:

1. load the model (:func:`maxq_deploy.load.torch_model.load_torch_model`); a MaxQ training checkpoint is
   refused, because its soft masks and BatchNorm must be folded into constants first;
2. produce the raw graph for the target: a torch exporter (dynamo by default) for folded models,
   the quantize stage's frozen Q/DQ network (``quantize.export.qdq_model``) for quantized ones;
3. post-process it with the onnx API: I/O named ``input``/``output``, fp16 boundary casts,
   Conv/Gemm nodes and their weight initializers renamed after the checkpoint layers,
   ``maxq_deploy.*`` metadata, ``onnx.checker``;
4. write it to a temporary file, run ONNX Runtime (CPU) against the PyTorch model on a seeded
   random batch, and rename it into place only if the check passes;
5. measure the hardware N:M pattern on the written graph (:mod:`maxq_deploy.verify.onnx`).

Exporter: :func:`maxq_deploy.onnx_graph.from_torch.torch_to_onnx`, torch's current (dynamo)
exporter by default, the TorchScript one with ``exporter="torchscript"``; both graphs are reduced
to one canonical form (the same nodes, compared in ``tests/test_export_dynamo.py``). The dynamo
exporter writes opset 18; ``--opset 17`` (the default, parsed by TensorRT 10 and 11) is reached
by ``onnx.version_converter`` and refused in one line where that fails. INT8: the quantized
network with every quantizer frozen to a constant scale (:mod:`maxq_deploy.quantize.frozen`),
which both exporters write as QuantizeLinear/DequantizeLinear; no quantization backend runs.
Measured on the digits ResNet-18 (2 shared cores): TorchScript ~3 s, dynamo ~8 s (fp32) and
~15-27 s (int8, most of it onnxscript's optimizer); the written graphs are the same.

FP16 typing: the graph computes in fp16 (fp16 weights, fp16 activations), with a Cast at each
boundary, so ``input`` and ``output`` stay float32 for every precision. It is made from the fp32
graph by converting its float initializers and types (:func:`graph_to_fp16`), not by tracing a
``.half()`` copy: torch's CPU fp16 depthwise convolution makes that trace 10-50x slower. TensorRT 11 builds it
strongly typed without builder flags (the Casts make the fp16 region explicit); runners, data
loading, eval and bench feed the same float32 NCHW batch to every precision, as
:class:`maxq_deploy.runtimes.base.Runner` promises; the two Casts cost a negligible elementwise
pass over the input image and the logits.

Parity: :func:`maxq_deploy.export.common.check_parity` (tolerances per precision there).

Targets (:data:`maxq_deploy.export.EXPORT_TARGETS`, run by :func:`maxq_deploy.export.export_model`): ``tensorrt`` is this module
(explicit symmetric Q/DQ, TensorRT's rules; INT8 weights stored as INT8 initializers); ``onnxruntime``
(:mod:`maxq_deploy.export.ort_calibrated`) builds on it. Graph post-processing lives in
:mod:`maxq_deploy.onnx_graph.edit`, the metadata keys in :mod:`maxq_deploy.onnx_graph.meta`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from maxq_deploy import __version__

from maxq_deploy.onnx_graph import meta as onnx_meta
from maxq_deploy.onnx_graph.index import load_onnx
from maxq_deploy.core.files import ONNX_SUFFIXES, Output, atomic_output, check_input_file, guard_outputs, sha256_file, temp_folder
from maxq_deploy.core.errors import BackendUnavailableError, InputFileError, OptionError, ParityError
from maxq_deploy.onnx_graph.edit import (  # noqa: F401  (graph post-processing, part of the export API)
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
from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.export.common import PARITY_TOLERANCE, ExportSummary, ParityCheck, check_parity  # noqa: F401  (part of this module's API)
from maxq_deploy.core.sparsity import HARDWARE_PATTERN
from maxq_deploy.onnx_graph.from_torch import DEFAULT_EXPORTER, EXPORTERS, exporter_name, torch_to_onnx

DEFAULT_OPSET = 17  # parsed by TensorRT 10 and 11; per-channel Q/DQ needs >= 13
OPSET_RANGE = (13, 20)
FOLDED_PRECISIONS = ("fp32", "fp16")
QUANTIZED_PRECISION = "int8"
TARGETS = ("tensorrt",)
BATCH_DIM = "batch"


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
    #: INT8 Q/DQ graphs: "fp16" or "fp32" float regions (stem, epilogue); None: see resolve_float_regions
    float_regions: str | None = None
    exporter: str = DEFAULT_EXPORTER  # "dynamo" (torch's current exporter) or "torchscript"

    def __post_init__(self) -> None:
        self.exporter = str(self.exporter or DEFAULT_EXPORTER).lower()
        if self.exporter not in EXPORTERS:
            raise OptionError(f"--exporter {self.exporter!r} is not supported; choose one of {', '.join(EXPORTERS)}")
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
        from maxq_deploy.export.float_regions import check_float_regions

        self.float_regions = check_float_regions(self.float_regions)

    def resolve_float_regions(self, precision: str) -> tuple[str | None, str]:
        """(float regions, why) for a graph of ``precision``: only INT8 Q/DQ graphs have float regions to choose.

        Default fp16: strongly typed builds (TensorRT 11.x, 10.12+) run the float regions in the
        graph's type; fp32 only where the installed TensorRT is a weakly typed 10.x (< 10.12),
        whose FP16 flag lets it pick fp16 there itself.
        """
        if precision != QUANTIZED_PRECISION:
            if self.float_regions is not None:
                raise OptionError(f"--float-regions applies to INT8 Q/DQ graphs, not a {precision} export")
            return None, ""
        if self.float_regions is not None:
            return self.float_regions, f"--float-regions {self.float_regions}"
        from maxq_deploy.runtimes.tensorrt_api import installed_tensorrt_version, parse_version

        installed = installed_tensorrt_version()
        if installed is not None and parse_version(installed)[0] == 10 and parse_version(installed) < (10, 12):
            return "fp32", (f"default for the installed TensorRT {installed} (weakly typed: its FP16 flag picks fp16 "
                            "for the float regions)")
        if installed is None:  # the graph will run on CPU runtimes here (OpenVINO refuses fp16 float regions)
            return "fp32", "default without TensorRT installed; pass --float-regions fp16 for a TensorRT 11.x / 10.12+ build"
        return "fp16", "default: TensorRT 11.x and 10.12+ build strongly typed and run the float regions in the graph's type"

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
    float_regions: str | None = None,
    source_obj: dict | None = None,
    exporter: str | None = None,
) -> ExportResult:
    """Export a folded (fp32/fp16) or quantized (int8) checkpoint to ONNX, parity-checked.

    ``precision`` None means the model's own: fp32 for folded, int8 for quantized checkpoints.
    ``batch`` fixes the batch size; otherwise the batch axis is dynamic (``dynamic_batch``
    False gives a fixed batch of 1). Spatial size is fixed at ``input_size`` (default: the size
    the checkpoint records, else its architecture's; one the architecture cannot run at is
    refused before the export). ``exporter``: ``dynamo`` (default) or ``torchscript``. Raises
    :class:`~maxq_deploy.core.errors.ParityError`, writing nothing, when ONNX Runtime disagrees with
    PyTorch beyond :data:`PARITY_TOLERANCE`. ``source_obj``: the artifact dict of ``model_path``
    where the caller has read it already (the file is then not read again).
    """
    options = ExportOptions(precision, opset, batch, dynamic_batch, input_size, target, parity_batch, float_regions,
                            exporter or DEFAULT_EXPORTER)
    (out,) = guard_outputs([Output(Path(output), ONNX_SUFFIXES, "ONNX output")], [model_path])
    check_input_file(model_path, "model")
    job = _ExportJob(Path(model_path), out, options, source_obj)
    steps: list[Callable[[], None]] = [job.load, job.export_raw_graph, job.finalize_graph, job.write_checked, job.verify_pattern]
    for step in (progress or SILENT).track(steps, total=len(steps), description="export onnx"):
        step()
    return job.result()


# --- the steps -------------------------------------------------------------------------------


class _ExportJob:
    """State passed between the steps of one export."""

    def __init__(self, source: Path, output: Path, options: ExportOptions, source_obj: dict | None = None):
        self.source, self.output, self.options, self.source_obj = source, output, options, source_obj
        self.started = time.perf_counter()
        self.notes: list[str] = []
        self.float_regions: str | None = None
        self.fallback: tuple | None = None  # (fp32-float-region model, notes) while the default fp16 form is unchecked

    def load(self) -> None:
        from maxq_deploy.load.formats import is_tool_artifact
        from maxq_deploy.load.maxq_checkpoint import torch_load_safe
        from maxq_deploy.load.input_size import resolve_input_size
        from maxq_deploy.load.torch_model import load_torch_model

        obj = torch_load_safe(self.source, "model") if self.source_obj is None else self.source_obj
        if not is_tool_artifact(obj):
            raise InputFileError(
                f"{self.source} is a MaxQ training checkpoint (or not a maxq-deploy model): its masks and BatchNorm "
                f"must be folded into constant weights first: maxq-deploy fold {self.source.name} -o folded.pth, "
                "then export folded.pth"
            )
        self.loaded = load_torch_model(self.source, loaded=obj)  # the file is read once
        if self.loaded.kind == "quantized-checkpoint":  # exported and checked as frozen (constant scales)
            from dataclasses import replace

            from maxq_deploy.quantize.export import frozen_module

            module = frozen_module(self.loaded.module, self.loaded.arch, self.loaded.num_classes,
                                   self.loaded.meta.get("kept_float") or ())
            self.loaded = replace(self.loaded, module=module)
        del obj
        self.source_obj = None
        self.options.input_size = resolve_input_size(self.loaded.arch, self.loaded.meta, self.options.input_size)
        self.precision = self.options.resolve_precision(self.loaded.kind, self.source)
        self.source_sha256 = sha256_file(self.source)
        self.sparse_layers = _sparse_layer_names(self.loaded.meta)
        if self.sparse_layers is None:
            self.notes.append(f"{self.source} lists no sparse layers; {onnx_meta.SPARSE_LAYERS} is omitted")

    def export_raw_graph(self) -> None:
        producer = RAW_GRAPH_PRODUCERS[(self.options.target, self.precision == QUANTIZED_PRECISION)]
        with temp_folder(self.output) as scratch:  # model-sized scratch stays beside the output
            self.model = producer(self.loaded, self.options, self.precision, scratch)

    def finalize_graph(self) -> None:
        graph = self.model.graph
        _name_io(graph)
        if self.precision == "fp16":
            graph_to_fp16(graph)
            _float32_boundary(graph)
        self.layers = _rename_layers(graph, self.loaded.module, set(self.sparse_layers or ()), self.notes)
        self.float_regions, why = self.options.resolve_float_regions(self.precision)
        if self.float_regions == "fp16":
            import copy

            from maxq_deploy.export.float_regions import float_regions_to_fp16

            if self.options.float_regions is None:  # the default: fp32 float regions remain the fallback
                self.fallback = (copy.deepcopy(self.model), list(self.notes))
            self.notes.extend(float_regions_to_fp16(self.model))
        if self.float_regions:
            self.notes.append(f"float regions of the Q/DQ graph: {self.float_regions} ({why})")
        self._seal()

    def _seal(self) -> None:
        """Producer, doc string and metadata on the final graph, then the full ONNX check."""
        import onnx

        graph = self.model.graph
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
        if self.float_regions:
            meta["float_regions"] = self.float_regions
        if self.sparse_layers is not None:
            meta["sparse_layers"] = json.dumps(self.sparse_layers)
        for name in ("kept_dense", "kept_float"):  # choices made on purpose: verify reports them as such
            kept = _kept_layers(self.loaded.meta, name)
            if kept:
                meta[name] = json.dumps(kept)
        origin = self.loaded.meta.get("provenance") if isinstance(self.loaded.meta, dict) else None
        if isinstance(origin, dict) and origin.get("source_sha256"):
            meta["checkpoint_sha256"] = str(origin["source_sha256"])
        return {onnx_meta.key(name): value for name, value in meta.items()}

    def write_checked(self) -> None:
        import onnx

        from maxq_deploy.core.errors import InputFileError
        from maxq_deploy.onnx_graph.index import check_onnx_numbers

        try:  # the writer refuses what every reader refuses (fp16 overflowing to Inf, a zero Q/DQ scale)
            check_onnx_numbers(self.model, self.output)
        except InputFileError as exc:
            detail = str(exc).removeprefix(f"{self.output}: ").removesuffix("; re-export it from its checkpoint")
            raise InputFileError(f"refusing to write {self.output}: the graph would be a {detail}") from None
        with atomic_output(self.output) as tmp:
            onnx.save(self.model, str(tmp))
            size = self.options.input_size
            self.parity = check_parity(tmp, self.loaded.module, self.precision, [self.options.check_batch, 3, size, size], self._reference())
            if not self.parity.passed and self.fallback is not None:
                # default fp16 float regions that fail parity: the fp32 form (what weakly typed builds get) instead
                failed = self.parity.describe()
                self.model, self.notes = self.fallback
                self.fallback, self.float_regions = None, "fp32"
                self.notes.append(f"float regions of the Q/DQ graph: fp32 (the default fp16 form failed the parity check: "
                                  f"{failed}; --float-regions fp16 to insist)")
                self._seal()
                onnx.save(self.model, str(tmp))
                self.parity = check_parity(tmp, self.loaded.module, self.precision, [self.options.check_batch, 3, size, size],
                                           self._reference())
            if not self.parity.passed:
                raise ParityError(
                    f"ONNX parity check failed ({self.precision}): {self.parity.describe()}, ONNX Runtime vs "
                    f"{self.parity.reference}{self.parity.where()}; nothing was written to {self.output}"
                )
        self.onnx_sha256 = sha256_file(self.output)
        self.size_bytes = self.output.stat().st_size

    def _reference(self) -> str:
        if self.precision == QUANTIZED_PRECISION:
            return "the fake-quantized PyTorch model (constant scales)"
        return "the float32 PyTorch folded model"

    def verify_pattern(self) -> None:
        from maxq_deploy.verify.onnx import verify_onnx

        report = verify_onnx(self.output, HARDWARE_PATTERN)
        self.pattern_sparse = len(report.expected)
        self.pattern_holding = report.holding_layers
        self.pattern_verdict = report.verdict
        self.notes.extend(report.notes)

    def result(self) -> ExportResult:
        shape: list = [BATCH_DIM if self.options.is_dynamic else self.options.export_batch, 3, self.options.input_size, self.options.input_size]
        return ExportResult(
            output=self.output, source=self.source, source_kind=self.loaded.kind, source_sha256=self.source_sha256,
            arch=self.loaded.arch, num_classes=self.loaded.num_classes, nm=self.loaded.nm, precision=self.precision,
            target=self.options.target, opset=self._written_opset(), exporter=self._exporter_name(), input_shape=shape,
            io_dtype="float32", sparse_layers=list(self.sparse_layers or []), layers=self.layers, parity=self.parity,
            pattern_sparse_layers=self.pattern_sparse, pattern_holding_layers=self.pattern_holding,
            pattern_verdict=self.pattern_verdict, onnx_sha256=self.onnx_sha256, size_bytes=self.size_bytes,
            seconds=round(time.perf_counter() - self.started, 3), notes=self.notes,
        )

    def _written_opset(self) -> int:
        """The default-domain opset of the file written (fp16 float regions raise 17 to 19)."""
        for opset in getattr(self.model, "opset_import", []):
            if opset.domain in ("", "ai.onnx"):
                return int(opset.version)
        return self.options.opset

    def _exporter_name(self) -> str:
        return exporter_name(self.options.exporter)


def _sparse_layer_names(meta: dict) -> list[str] | None:
    """Names of the checkpoint's sparse layers from the artifact's metadata, None if it has none.

    Folded checkpoints carry ``layers`` (FoldedLayer dicts with ``role``); a quantized
    checkpoint may carry the same ``layers`` or a plain ``sparse_layers`` name list.
    """
    if not isinstance(meta, dict):
        return None
    layers = meta.get("layers")
    if isinstance(layers, list) and all(isinstance(layer, dict) and "name" in layer for layer in layers):
        # a layer fold kept dense on purpose keeps its trained N:M and runs dense: not expected to hold 2:4
        return [str(layer["name"]) for layer in layers if layer.get("role") == "sparse" and not layer.get("kept_dense")]
    names = meta.get("sparse_layers")
    if isinstance(names, list) and all(isinstance(name, str) for name in names):
        return list(names)
    return None


def _kept_layers(meta: dict, key: str) -> list[str]:
    """``kept_dense`` / ``kept_float`` of a folded or quantized checkpoint's metadata ([] when absent)."""
    names = meta.get(key) if isinstance(meta, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else []


# --- raw graphs (one producer per target and kind) -------------------------------------------


def _dummy_input(options: ExportOptions) -> torch.Tensor:
    size = options.input_size
    return torch.zeros(options.export_batch, 3, size, size)


def raw_graph_from_torch(loaded, options: ExportOptions, precision: str, scratch: Path):
    """A folded model through the chosen torch exporter (fp32; fp16 is converted afterwards)."""
    return torch_to_onnx(loaded.module, _dummy_input(options), options.opset, options.is_dynamic, options.exporter)


def raw_graph_from_quantized(loaded, options: ExportOptions, precision: str, scratch: Path):
    """The quantize stage makes the raw Q/DQ graph (frozen scales); post-processing and parity are shared."""
    try:
        from maxq_deploy.quantize.export import qdq_model
    except ImportError:
        raise BackendUnavailableError(
            "exporting a quantized checkpoint needs the quantize stage (maxq_deploy.quantize.export); reinstall maxq-deploy"
        ) from None
    model, _summary = qdq_model(loaded, _dummy_input(options), options.opset, options.is_dynamic, options.exporter)
    return model


#: (target, quantized) -> producer of the raw graph, called with the export's scratch folder
#: (beside its output) for model-sized temp files.
RAW_GRAPH_PRODUCERS: dict[tuple[str, bool], Callable] = {
    ("tensorrt", False): raw_graph_from_torch,
    ("tensorrt", True): raw_graph_from_quantized,
}
