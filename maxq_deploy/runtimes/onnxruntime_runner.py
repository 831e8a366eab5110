"""Run an ONNX model with ONNX Runtime behind the Runner interface."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from maxq_deploy.artifacts import check_input_file
from maxq_deploy.errors import BackendUnavailableError, DataError, InputFileError

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _ort_errors() -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception classes (they derive from Exception directly)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoSuchFile", "NoModel",
             "NotImplemented", "RuntimeException", "EPFail", "ModelLoadCanceled")
    return tuple(getattr(state, n) for n in names if isinstance(getattr(state, n, None), type))


def _one_line(exc: BaseException) -> str:
    from maxq_deploy.errors import short_reason

    return short_reason(" ".join(str(exc).split()), 300)


class OnnxRuntimeRunner:
    """An ONNX Runtime session (graph optimization level ALL) over a one-input, one-output model.

    The batch is cast to the graph's input type (float16 graphs take float16) and the output
    comes back as float32. ``threads`` sets the session's intra-op threads (None: ORT's default).
    ``providers`` defaults to the CPU provider; pass e.g. ``["CUDAExecutionProvider"]`` for GPU.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        threads: int | None = None,
        providers: list[str] | None = None,
    ):
        import onnxruntime as ort

        self.path = check_input_file(path, "ONNX model")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        available = ort.get_available_providers()
        providers = list(providers) if providers else ["CPUExecutionProvider"]
        missing = [p for p in providers if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"ONNX Runtime provider(s) {', '.join(missing)} not available here (available: {', '.join(available)}); "
                "CUDA needs the onnxruntime-gpu package"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: keep ORT's warnings off the CLI output
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except _ort_errors() as exc:
            raise InputFileError(f"{self.path} cannot be loaded by ONNX Runtime: {_one_line(exc)}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise InputFileError(
                f"{self.path}: expected a classifier with one input and one output, "
                f"found {len(inputs)} input(s) and {len(outputs)} output(s)"
            )
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        if inputs[0].type not in _NUMPY_TYPES:
            raise InputFileError(f"{self.path}: input {self.input_name!r} is {inputs[0].type}; only float and float16 inputs are supported")
        self.input_dtype = np.dtype(_NUMPY_TYPES[inputs[0].type])
        shape = inputs[0].shape
        if len(shape) != 4:
            raise InputFileError(f"{self.path}: input {self.input_name!r} has rank {len(shape)}, expected NCHW (rank 4)")
        # Named or unknown dims are dynamic: None.
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else None for d in shape[1:])
        out_shape = outputs[0].shape
        last = out_shape[-1] if out_shape else None
        self.num_classes: int | None = last if isinstance(last, int) and last > 0 else None
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.arch = self.metadata.get("maxq_deploy.arch")
        precision = self.metadata.get("maxq_deploy.precision")
        self.model_kind = f"onnx-{precision}" if precision else "onnx"
        self.providers = self.session.get_providers()
        self.device = "cuda" if self.providers and self.providers[0] != "CPUExecutionProvider" else "cpu"

    def run(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(batch), dtype=self.input_dtype)
        try:
            (out,) = self.session.run([self.output_name], {self.input_name: x})
        except _ort_errors() as exc:  # InvalidArgument for a wrong shape: bad input, not a bug
            raise DataError(f"{Path(self.path).name} rejected a batch of shape {x.shape}: {_one_line(exc)}") from None
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]
