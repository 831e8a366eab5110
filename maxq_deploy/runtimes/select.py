"""Which runtime runs a model file, decided once: by suffix, or as ``--backend`` says.

:func:`resolve_backend` checks the choice against the file; :func:`open_runner` then calls that
backend's opener (imported only then, so a missing optional backend costs nothing until used).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

from maxq_deploy.core.files import check_input_file
from maxq_deploy.core.errors import BackendUnavailableError, InputFileError, OptionError
from maxq_deploy.runtimes.base import Runner

#: Backend -> "module:function" that opens a file as a Runner: ``function(path, device, threads, **options)``.
OPENERS: dict[str, str] = {
    "torch": "maxq_deploy.runtimes.torch_runner:open_torch_runner",
    "onnxruntime": "maxq_deploy.runtimes.onnxruntime_runner:open_onnxruntime_runner",
    "tensorrt": "maxq_deploy.runtimes.tensorrt_runner:open_tensorrt_runner",
    "openvino": "maxq_deploy.runtimes.openvino:open_openvino_runner",
}
BACKENDS: tuple[str, ...] = tuple(OPENERS)
_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "trt": "tensorrt", "pytorch": "torch", "ov": "openvino"}
#: Suffix -> backends that can run it (the first is the default). ``.pth.tar`` ends in ``.tar``.
SUFFIX_BACKENDS: dict[str, tuple[str, ...]] = {
    ".onnx": ("onnxruntime", "openvino"),
    ".xml": ("openvino",),
    ".engine": ("tensorrt",),
    ".plan": ("tensorrt",),
    ".trt": ("tensorrt",),
    ".pth": ("torch",),
    ".pt": ("torch",),
    ".tar": ("torch",),
    ".ckpt": ("torch",),
}
_WHAT = {"torch": "a PyTorch checkpoint", "onnxruntime": "an ONNX model", "tensorrt": "a TensorRT engine",
         "openvino": "an OpenVINO IR model"}


def normalize_backend(backend: str) -> str:
    """The backend name of ``backend`` (an alias, or a spec such as ``openvino:f32``), or raise."""
    key = str(backend).strip().lower().partition(":")[0]
    key = _ALIASES.get(key, key)
    if key not in OPENERS:
        raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return key


def backend_for_file(path: str | os.PathLike[str]) -> str | None:
    """The default backend a file's suffix calls for, or None when the suffix says nothing."""
    choices = SUFFIX_BACKENDS.get(Path(path).suffix.lower())
    return choices[0] if choices else None


def resolve_backend(path: Path, backend: str | None = None) -> str:
    """The backend that runs ``path``: ``backend`` when it can, else the one its suffix names."""
    choices = SUFFIX_BACKENDS.get(path.suffix.lower(), ())
    if backend is None:
        if not choices:
            raise InputFileError(
                f"cannot tell which runtime runs {path.name} from its suffix {path.suffix or '(none)'!r}; known suffixes: "
                f"{', '.join(SUFFIX_BACKENDS)}; pass --backend {'|'.join(BACKENDS)}"
            )
        return choices[0]
    chosen = normalize_backend(backend)
    if choices and chosen not in choices:
        raise InputFileError(
            f"{path.name} is {_WHAT[choices[0]]}, which the {chosen} backend cannot run; "
            f"use --backend {choices[0]} or leave --backend out"
            + (" (build an engine first: maxq-deploy export trt)" if chosen == "tensorrt" else "")
        )
    return chosen


def opener(backend: str) -> Callable[..., Runner]:
    """The function that opens files for ``backend`` (a one-line error when its package is missing)."""
    module, _, function = OPENERS[backend].partition(":")
    return getattr(importlib.import_module(module), function)


def open_runner(
    path: str | os.PathLike[str],
    backend: str | None = None,
    device: str | None = None,
    threads: int | None = None,
    precision: str | None = None,
) -> Runner:
    """Open ``path`` with the runtime for it (``backend`` None: by suffix).

    ``backend`` may be a spec with its option (``openvino:f32``). ``device`` None means cpu for
    torch, ONNX Runtime and OpenVINO, cuda for TensorRT. ``threads`` sets the CPU intra-op threads
    (torch: process-wide). ``precision`` is OpenVINO's inference precision (f32, bf16, f16,
    default); the other backends refuse it.
    """
    p = check_input_file(path, "model")
    if backend is not None and ":" in backend:  # a spec with its option: openvino:f32
        name, _, option = backend.partition(":")
        backend = normalize_backend(name)
        if backend != "openvino":
            raise OptionError(f"backend {name.strip()!r} takes no option after ':' (only openvino does: openvino:f32)")
        precision = precision or option.strip() or None
    chosen = resolve_backend(p, backend)
    if chosen != "openvino" and precision is not None:  # the options and the backend first: they need no file read
        raise OptionError(f"an inference precision ({precision}) is an OpenVINO option; the {chosen} backend takes none")
    if chosen == "openvino":
        from maxq_deploy.runtimes.openvino import import_openvino

        import_openvino()  # a missing OpenVINO is its install hint, whatever the file
    if p.suffix.lower() == ".onnx":  # NaN weights or a zero Q/DQ scale: refused before any runtime scores them
        from maxq_deploy.onnx_graph.index import check_onnx_numbers, load_onnx

        check_onnx_numbers(load_onnx(p), p)
    if chosen != "openvino":
        return opener(chosen)(p, device=device, threads=threads)
    return opener(chosen)(p, device=device, threads=threads, precision=precision)
