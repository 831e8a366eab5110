"""Pick the runtime for a model file: by suffix, or as ``backend`` says (checked against the file)."""

from __future__ import annotations

import os
from pathlib import Path

from maxq_deploy.artifacts import check_input_file
from maxq_deploy.errors import BackendUnavailableError, InputFileError, OptionError
from maxq_deploy.runtimes.base import Runner

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt", "openvino")
_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "trt": "tensorrt", "pytorch": "torch", "ov": "openvino"}
#: Suffix -> backend that runs it. ``.pth.tar`` ends in ``.tar``.
SUFFIX_BACKENDS: dict[str, str] = {
    ".onnx": "onnxruntime",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".trt": "tensorrt",
    ".pth": "torch",
    ".pt": "torch",
    ".tar": "torch",
    ".ckpt": "torch",
    ".xml": "openvino",
}
#: Backends that also run files whose suffix calls for another backend (OpenVINO reads ONNX).
ALSO_RUNS: dict[str, tuple[str, ...]] = {"openvino": ("onnxruntime",)}
_WHAT = {"torch": "a PyTorch checkpoint", "onnxruntime": "an ONNX model", "tensorrt": "a TensorRT engine",
         "openvino": "an OpenVINO IR model"}


def normalize_backend(backend: str) -> str:
    """The backend name of ``backend`` (an alias, or a spec such as ``openvino:f32``), or raise."""
    key = backend.strip().lower().partition(":")[0]
    key = _ALIASES.get(key, key)
    if key not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return key


def backend_for_file(path: str | os.PathLike[str]) -> str | None:
    """The backend a file's suffix calls for, or None when the suffix says nothing."""
    return SUFFIX_BACKENDS.get(Path(path).suffix.lower())


def runner_for(
    path: str | os.PathLike[str],
    backend: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    precision: str | None = None,
) -> Runner:
    """Open ``path`` with the runtime for it.

    ``device`` None means cpu for torch and ONNX Runtime, cuda for TensorRT. ``threads`` sets
    the CPU intra-op threads (torch: process-wide). ``precision`` is OpenVINO's inference
    precision (f32, bf16, f16, default); other backends refuse it.
    """
    p = check_input_file(path, "model")
    if backend is not None and ":" in backend:  # a spec with its option, e.g. openvino:f32
        from maxq_deploy.runtimes.backends import parse_backend

        spec = parse_backend(backend)
        backend, precision = spec.name, precision or spec.precision
    from_suffix = backend_for_file(p)
    chosen = normalize_backend(backend) if backend is not None else from_suffix
    if chosen is None:
        raise InputFileError(
            f"cannot tell which runtime runs {p.name} from its suffix {p.suffix or '(none)'!r}; known suffixes: "
            f"{', '.join(SUFFIX_BACKENDS)}; pass --backend {'|'.join(BACKENDS)}"
        )
    if precision is not None and chosen != "openvino":
        raise OptionError(f"an inference precision ({precision}) is an OpenVINO option; the {chosen} backend takes none")
    if from_suffix is not None and chosen != from_suffix and from_suffix not in ALSO_RUNS.get(chosen, ()):
        raise InputFileError(
            f"{p.name} is {_WHAT[from_suffix]}, which the {chosen} backend cannot run; "
            f"use --backend {from_suffix} or leave --backend out"
            + (" (build an engine first: maxq-deploy export trt)" if chosen == "tensorrt" else "")
        )
    if chosen == "openvino":
        from maxq_deploy.runtimes.openvino import OpenVINORunner

        return OpenVINORunner(p, device=device, threads=threads, precision=precision)
    if chosen == "torch":
        from maxq_deploy.runtimes.torch_runner import torch_runner_from_path

        return torch_runner_from_path(p, device=device or "cpu", threads=threads)
    if chosen == "onnxruntime":
        from maxq_deploy.runtimes.onnxruntime_runner import OnnxRuntimeRunner

        dev = (device or "cpu").split(":")[0]
        if dev not in ("cpu", "cuda"):
            raise BackendUnavailableError(f"unsupported device {device!r}; use cpu or cuda")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if dev == "cuda" else ["CPUExecutionProvider"]
        return OnnxRuntimeRunner(p, threads=threads, providers=providers)
    return _tensorrt_runner(p, device or "cuda")


def _tensorrt_runner(path: Path, device: str) -> Runner:
    if not device.startswith("cuda"):
        raise BackendUnavailableError(f"TensorRT runs on CUDA devices only, not {device!r}; use --device cuda")
    try:
        from maxq_deploy.tensorrt.runner import TensorRTRunner
    except ModuleNotFoundError as exc:
        if exc.name in ("tensorrt", "pycuda", "cuda") or (exc.name or "").startswith(("tensorrt.", "cuda.")):
            raise BackendUnavailableError(
                f"the TensorRT backend needs the {exc.name!r} package: pip install tensorrt (on a machine with CUDA)"
            ) from None
        if exc.name in ("maxq_deploy.tensorrt.runner", "maxq_deploy.tensorrt"):
            raise BackendUnavailableError("this build of maxq-deploy has no TensorRT runner") from None
        raise
    return TensorRTRunner(path, device=device)
