"""ONNX Runtime: a session loaded from an ``.onnx`` file, and the runner over it.

:func:`session_from_onnx` opens (file -> ``InferenceSession``, providers, threads);
:class:`OnnxRuntimeRunner` reads the session's input, output and ``maxq_deploy.*`` metadata
once into its :class:`ModelInfo` and then only runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from maxq_deploy.onnx_graph import meta as onnx_meta
from maxq_deploy.core.files import check_input_file
from maxq_deploy.core.errors import BackendUnavailableError, DataError, InputFileError, OptionError, first_line
from maxq_deploy.onnx_graph.cpu_isa import saturation_warning
from maxq_deploy.runtimes.base import ModelInfo, Runner

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
CPU_PROVIDER = "CPUExecutionProvider"


def ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception classes (they derive from Exception directly)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NoModel",
             "NotImplemented", "RuntimeException", "EPFail", "ModelLoadCanceled")
    return tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))


def providers_for(device: str | None) -> list[str]:
    """Execution providers for ``cpu`` or ``cuda[:N]``."""
    dev = (device or "cpu").split(":")[0]
    if dev not in ("cpu", "cuda"):
        raise BackendUnavailableError(f"unsupported device {device!r} for ONNX Runtime; use cpu or cuda")
    return ["CUDAExecutionProvider", CPU_PROVIDER] if dev == "cuda" else [CPU_PROVIDER]


def session_from_onnx(path: str | os.PathLike[str], threads: int | None = None, providers: list[str] | None = None, *,
                      reference_arithmetic: bool = False, model: bytes | None = None) -> Any:
    """An ``InferenceSession`` (graph optimization level ALL) over ``path``.

    ``threads`` sets the intra-op threads (None: ONNX Runtime's default); ``providers`` defaults
    to the CPU provider. A missing provider or an unloadable graph is a one-line error.
    ``reference_arithmetic``: graph optimizations off, so Q/DQ runs as ONNX defines it (what
    TensorRT computes), not through the u8 x s8 kernels that saturate on CPUs without VNNI
    (:mod:`maxq_deploy.onnx_graph.cpu_isa`). ``model``: the serialized graph to run instead of the
    file (an edited copy of ``path``, which then only names it in messages).
    """
    import onnxruntime as ort

    p = check_input_file(path, "ONNX model") if model is None else Path(path)
    if threads is not None and threads < 1:
        raise OptionError(f"threads must be >= 1, got {threads}")
    available = ort.get_available_providers()
    providers = list(providers) if providers else [CPU_PROVIDER]
    missing = [name for name in providers if name not in available]
    if missing:
        raise BackendUnavailableError(
            f"ONNX Runtime provider(s) {', '.join(missing)} not available here (available: {', '.join(available)}); "
            "CUDA needs the onnxruntime-gpu package"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if reference_arithmetic
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: keep ORT's warnings off the CLI output
    try:
        return ort.InferenceSession(str(p) if model is None else model, sess_options=options, providers=providers)
    except ort_errors() as exc:
        raise InputFileError(f"{p} cannot be loaded by ONNX Runtime: {first_line(exc, 300)}") from None


class OnnxRuntimeRunner(Runner):
    """Runs a one-input classifier session; the batch is cast to the graph's input type (float16
    graphs take float16) and the output comes back as float32.

    ``source`` is an ``.onnx`` path (opened with :func:`session_from_onnx`) or an open session.
    """

    def __init__(self, source: str | os.PathLike[str] | Any, threads: int | None = None, providers: list[str] | None = None):
        import onnxruntime as ort

        if isinstance(source, (str, os.PathLike)):
            path: Path | None = Path(source)
            self.session = session_from_onnx(source, threads, providers)
        else:
            path, self.session = None, source
        where = path or "the ONNX model"
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise InputFileError(
                f"{where}: expected a classifier with one input and one output, "
                f"found {len(inputs)} input(s) and {len(outputs)} output(s)"
            )
        self.output_name = outputs[0].name
        if inputs[0].type not in _NUMPY_TYPES:
            raise InputFileError(f"{where}: input {inputs[0].name!r} is {inputs[0].type}; only float and float16 inputs are supported")
        shape = inputs[0].shape
        if len(shape) != 4:
            raise InputFileError(f"{where}: input {inputs[0].name!r} has rank {len(shape)}, expected NCHW (rank 4)")
        # Named or unknown dims are dynamic: None.
        dims = tuple(d if isinstance(d, int) and d > 0 else None for d in shape)
        last = outputs[0].shape[-1] if outputs[0].shape else None
        metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        precision = metadata.get(onnx_meta.PRECISION)
        used = self.session.get_providers()
        self.info = ModelInfo(
            backend="onnxruntime",
            backend_version=ort.__version__,
            device="cuda" if used and used[0] != CPU_PROVIDER else "cpu",
            model_kind=f"onnx-{precision}" if precision else "onnx",
            path=path,
            precision=precision,
            arch=metadata.get(onnx_meta.ARCH),
            num_classes=last if isinstance(last, int) and last > 0 else None,
            input_name=inputs[0].name,
            input_shape=dims[1:],  # type: ignore[arg-type]
            input_dtype=np.dtype(_NUMPY_TYPES[inputs[0].type]),
            batch_range=(dims[0], dims[0]) if dims[0] is not None else (1, None),
            metadata=metadata,
            options={"threads": threads, "providers": ",".join(used)},
            warning=saturation_warning(metadata, "onnxruntime", path.name if path else "the ONNX model")
            if used and used[0] == CPU_PROVIDER else None,
        )

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(batch), dtype=self.info.input_dtype)
        try:
            (out,) = self.session.run([self.output_name], {self.info.input_name: x})
        except ort_errors() as exc:  # InvalidArgument for a wrong shape: bad input, not a bug
            name = self.info.path.name if self.info.path else "the ONNX model"
            raise DataError(f"{name} rejected a batch of shape {x.shape}: {first_line(exc, 300)}") from None
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self.session = None


def open_onnxruntime_runner(path: Path, device: str | None = None, threads: int | None = None) -> OnnxRuntimeRunner:
    """``open_runner``'s opener for ``.onnx`` files."""
    return OnnxRuntimeRunner(path, threads=threads, providers=providers_for(device))
