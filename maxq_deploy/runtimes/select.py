"""Pick the runtime for a model file: by suffix, or as ``backend`` says (checked against the file)."""

from __future__ import annotations

import os
from pathlib import Path

from maxq_deploy.artifacts import check_input_file
from maxq_deploy.errors import BackendUnavailableError, InputFileError
from maxq_deploy.runtimes.base import Runner

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "trt": "tensorrt", "pytorch": "torch"}
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
}
_WHAT = {"torch": "a PyTorch checkpoint", "onnxruntime": "an ONNX model", "tensorrt": "a TensorRT engine"}


def normalize_backend(backend: str) -> str:
    key = backend.strip().lower()
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
) -> Runner:
    """Open ``path`` with the runtime for it.

    ``device`` None means cpu for torch and ONNX Runtime, cuda for TensorRT. ``threads`` sets
    the CPU intra-op threads (torch: process-wide).
    """
    p = check_input_file(path, "model")
    from_suffix = backend_for_file(p)
    chosen = normalize_backend(backend) if backend is not None else from_suffix
    if chosen is None:
        raise InputFileError(
            f"cannot tell which runtime runs {p.name} from its suffix {p.suffix or '(none)'!r}; known suffixes: "
            f"{', '.join(SUFFIX_BACKENDS)}; pass --backend {'|'.join(BACKENDS)}"
        )
    if from_suffix is not None and chosen != from_suffix:
        raise InputFileError(
            f"{p.name} is {_WHAT[from_suffix]}, which the {chosen} backend cannot run; "
            f"use --backend {from_suffix} or leave --backend out"
            + (" (build an engine first: maxq-deploy export trt)" if chosen == "tensorrt" else "")
        )
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
