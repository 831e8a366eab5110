"""Run an ONNX model (or OpenVINO IR ``.xml``) with OpenVINO behind the runner contract.

Why OpenVINO: on x86 CPUs it runs the TensorRT-form symmetric Q/DQ graph (the one that carries
the quantized checkpoint's ranges, PTQ or QAT) in INT8 kernels, where ONNX Runtime falls back to
float; and it runs fp32 graphs in bf16 on CPUs that have it (its default ``INFERENCE_PRECISION_HINT``).
The precision actually used is read back from the compiled model and recorded in
``info.precision`` and ``info.options``, so every table and JSON record shows it.

``openvino`` is optional (``pip install 'maxq-deploy[openvino]'``) and imported only when a
runner is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from maxq_deploy.onnx_graph import meta as onnx_meta
from maxq_deploy.core.files import check_input_file
from maxq_deploy.core.errors import BackendUnavailableError, DataError, InputFileError, OptionError
from maxq_deploy.onnx_graph.cpu_isa import seven_bit_weights
from maxq_deploy.runtimes.base import ModelInfo, Runner

INSTALL_HINT = "the OpenVINO backend needs the openvino package: pip install 'maxq-deploy[openvino]'"
#: What ``precision`` accepts -> OpenVINO's ``INFERENCE_PRECISION_HINT`` value (None: the device's default).
PRECISIONS: dict[str, str | None] = {"default": None, "f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}
#: OpenVINO's names of element types -> the project's precision names.
_PROJECT_NAMES = {"f32": "fp32", "float32": "fp32", "bf16": "bf16", "bfloat16": "bf16", "f16": "fp16", "float16": "fp16"}
#: The device capability (``OPTIMIZATION_CAPABILITIES``) each explicit hint needs.
_CAPABILITY = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}
SUFFIXES = (".onnx", ".xml")


def import_openvino():
    """``openvino``, or the one-line install hint."""
    try:
        import openvino
    except ImportError:
        raise BackendUnavailableError(INSTALL_HINT) from None
    return openvino


_CORE: list = []  # the process's one ov.Core (see shared_core)


def shared_core():
    """The one ``ov.Core`` of this process, made on first use and kept until exit.

    One Core, not one per runner: OpenVINO's CPU plugin gives each thread that compiles a model
    an alternate signal stack of its own (room for AMX state) and, when its Core is released, puts
    back the stack it found and unmaps its own. Two Cores released in the order they were made
    (first in, first out: two runners side by side, closed in turn) leave the thread's alternate
    stack pointing at unmapped memory, and the next signal a Python handler catches (every Python
    handler runs on that stack; torch's DataLoader sets one for SIGCHLD) kills the process with
    SIGSEGV, or writes its frame over whatever was mapped there since. A Core kept for the
    process's life never puts a stack back out of order (``tests/test_runtimes_openvino.py`` shows both).
    """
    if not _CORE:
        _CORE.append(import_openvino().Core())
    return _CORE[0]


def openvino_version() -> str:
    ov = import_openvino()
    return str(getattr(ov, "__version__", "unknown")).split("-")[0]


def _one_line(exc: BaseException) -> str:
    """OpenVINO's messages are multi-line stacks of 'Exception from src/...'; keep the informative lines."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("Exception from ")]
    return " ".join(" ".join(lines).split())[:300] or type(exc).__name__


def normalize_precision(precision: str | None) -> str:
    """``f32``/``fp32``, ``bf16``, ``f16``/``fp16`` or ``default`` (None) -> the canonical key of :data:`PRECISIONS`."""
    key = "default" if precision is None else str(precision).strip().lower()
    if key not in PRECISIONS:
        raise OptionError(
            f"OpenVINO inference precision {precision!r} is not supported; choose one of f32, bf16, f16 or default "
            "(the device's own, e.g. bf16 on CPUs with AMX/AVX-512 BF16)"
        )
    return "default" if PRECISIONS[key] is None else PRECISIONS[key]  # type: ignore[return-value]


def resolve_device(core, device: str | None) -> str:
    """``cpu`` -> ``CPU``; any device OpenVINO reports (``core.available_devices``), case-insensitive."""
    available = list(core.available_devices)
    wanted = (device or "CPU").strip()
    for name in available:
        if name.upper() == wanted.upper():
            return name
    raise BackendUnavailableError(
        f"OpenVINO device {device!r} is not available here; available: {', '.join(available) or 'none'}"
    )


class OpenVINORunner(Runner):
    """One OpenVINO compiled model and infer request over a one-input, one-output classifier.

    ``threads`` sets ``INFERENCE_NUM_THREADS`` (None: OpenVINO's default); one stream and the
    latency hint, so a batch is one synchronous request, as eval and bench expect.
    ``precision`` sets ``INFERENCE_PRECISION_HINT`` (``default``: leave the device's choice).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str | None = None,
        threads: int | None = None,
        precision: str | None = None,
    ):
        import_openvino()  # the one-line install hint before anything else
        p = check_input_file(path, "model")
        if p.suffix.lower() not in SUFFIXES:
            raise InputFileError(f"OpenVINO runs ONNX (.onnx) or OpenVINO IR (.xml) files, not {p.name}")
        if threads is not None and threads < 1:
            raise OptionError(f"threads must be >= 1, got {threads}")
        hint = normalize_precision(precision)
        core = shared_core()
        dev = resolve_device(core, device)
        if hint != "default":
            capabilities = {str(c).upper() for c in core.get_property(dev, "OPTIMIZATION_CAPABILITIES")}
            if _CAPABILITY[hint] not in capabilities:
                raise OptionError(
                    f"OpenVINO device {dev} cannot compute in {hint} (its capabilities: {', '.join(sorted(capabilities))}); "
                    "choose another precision or default"
                )
        metadata = _onnx_metadata(p) if p.suffix.lower() == ".onnx" else {}
        int8_weights = None
        try:
            if _needs_seven_bit_weights(metadata, dev):
                from maxq_deploy.onnx_graph.index import load_onnx

                proto = load_onnx(p)
                int8_weights = f"7-bit in memory ({seven_bit_weights(proto)} layers; this CPU has no VNNI)"
                model = core.read_model(proto.SerializeToString(), b"")
            else:
                model = core.read_model(str(p))
        except RuntimeError as exc:
            raise InputFileError(f"{p} cannot be loaded by OpenVINO: {_one_line(exc)}") from None
        inputs, outputs = model.inputs, model.outputs
        if len(inputs) != 1 or len(outputs) != 1:
            raise InputFileError(
                f"{p}: expected a classifier with one input and one output, found {len(inputs)} input(s) and {len(outputs)} output(s)"
            )
        in_shape = inputs[0].get_partial_shape()
        if in_shape.rank.is_dynamic or in_shape.rank.get_length() != 4:
            raise InputFileError(f"{p}: input must be NCHW (rank 4), got {in_shape}")
        dims = [d.get_length() if d.is_static else None for d in in_shape]
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if hint != "default":
            config["INFERENCE_PRECISION_HINT"] = hint
        try:
            self._compiled = core.compile_model(model, dev, config)
        except RuntimeError as exc:
            raise InputFileError(f"OpenVINO ({dev}) cannot compile {p.name}: {_one_line(exc)}") from None
        self._request = self._compiled.create_infer_request()
        used = _precision_name(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        graph_precision = metadata.get(onnx_meta.PRECISION)
        out_shape = outputs[0].get_partial_shape()
        last = out_shape[out_shape.rank.get_length() - 1] if out_shape.rank.is_static else None
        num_classes = last.get_length() if last is not None and last.is_static else None
        batch = dims[0]
        self.info = ModelInfo(
            backend="openvino",
            backend_version=openvino_version(),
            device=dev,
            model_kind=f"onnx-{graph_precision}" if graph_precision else ("onnx" if p.suffix.lower() == ".onnx" else "openvino-ir"),
            path=p,
            # an int8 graph stays int8 (its float parts run in ``inference_precision``); a float graph runs in it
            precision="int8" if graph_precision == "int8" else used,
            arch=metadata.get(onnx_meta.ARCH),
            num_classes=num_classes,
            input_name=inputs[0].get_any_name(),
            input_shape=(dims[1], dims[2], dims[3]),
            input_dtype=np.dtype(np.float32),
            batch_range=(batch, batch) if batch is not None else (1, None),
            metadata=metadata,
            options={
                "inference_precision": used,
                "precision_hint": hint,
                "threads": int(self._compiled.get_property("INFERENCE_NUM_THREADS")) or threads,
                "streams": int(self._compiled.get_property("NUM_STREAMS")),
                **({"int8_weights": int8_weights} if int8_weights else {}),
            },
        )
        self.session = None  # bench probes ``session`` for ONNX Runtime's static batch; the batch is in info

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(batch), dtype=np.float32)
        try:
            self._request.infer({0: x})
        except RuntimeError as exc:  # a shape the model does not take: bad input, not a bug
            name = self.info.path.name if self.info.path else "the model"
            raise DataError(f"{name} rejected a batch of shape {x.shape} on OpenVINO: {_one_line(exc)}") from None
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def close(self) -> None:
        self._request = None
        self._compiled = None


def _precision_name(element_type: Any) -> str:
    """OpenVINO's ``Type`` (``f32``, ``bf16``, ...) -> fp32, bf16, fp16."""
    getter = getattr(element_type, "get_type_name", None)
    name = str(getter() if callable(getter) else element_type).lower()
    return _PROJECT_NAMES.get(name, name)


def _needs_seven_bit_weights(metadata: dict[str, str], device: str) -> bool:
    """An int8 graph whose form saturates on this CPU (not ``portable``; no VNNI): OpenVINO's u8 x s8
    kernels sum pairs in int16 there too (measured: the digits TensorRT-form graph lost 3-5 points);
    its 8-bit weights are re-quantized to 7 bits in memory (:func:`maxq_deploy.onnx_graph.cpu_isa.seven_bit_weights`)."""
    from maxq_deploy.onnx_graph.cpu_isa import PORTABLE, int8_saturates

    return (metadata.get(onnx_meta.PRECISION) == "int8" and metadata.get(onnx_meta.CPU_ISA) != PORTABLE
            and device.upper().startswith("CPU") and int8_saturates())


def _onnx_metadata(path: Path) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` (the export's ``maxq_deploy.*`` keys)."""
    from maxq_deploy.core.errors import MaxQDeployError
    from maxq_deploy.onnx_graph.index import load_onnx

    try:
        model = load_onnx(path, load_external_data=False)
    except MaxQDeployError:  # OpenVINO read it already; metadata is optional
        return {}
    return {p.key: p.value for p in model.metadata_props}


def open_openvino_runner(path: Path, device: str | None = None, threads: int | None = None,
                         precision: str | None = None) -> OpenVINORunner:
    """``open_runner``'s opener for ``.onnx`` (with ``--backend openvino``) and ``.xml`` files."""
    return OpenVINORunner(path, device=device, threads=threads, precision=precision)
