"""The only door to the ``tensorrt`` module: lazy import, version and GPU checks, log capture.

Everything else in this package works on plain data (strings, dicts, ONNX protos), so the
tool starts, tests run and reports are read on machines without TensorRT or a GPU. Only the
functions here import ``tensorrt``, and only when called.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
from typing import Any

from maxq_deploy.core.errors import BackendUnavailableError, first_line

INSTALL_HINT = "pip install tensorrt (10.x or 11.x) on a machine with an NVIDIA GPU and driver"
MISSING_MESSAGE = f"TensorRT is not installed: {INSTALL_HINT}"
SUPPORTED_MAJORS = (10, 11)
#: Distributions that provide the ``tensorrt`` module (the meta package and its CUDA-specific wheels).
_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt_cu13", "tensorrt_cu12")


def import_tensorrt() -> Any:
    """``import tensorrt``, or one line saying what is missing and how to install it."""
    try:
        trt = importlib.import_module("tensorrt")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] != "tensorrt":
            raise BackendUnavailableError(f"TensorRT is installed but broken (missing module {exc.name}): {INSTALL_HINT}") from None
        raise BackendUnavailableError(MISSING_MESSAGE) from None
    except ImportError as exc:  # present, but its shared libraries (libnvinfer, CUDA) do not load
        detail = first_line(exc)
        raise BackendUnavailableError(f"TensorRT is installed but cannot be loaded ({detail}): {INSTALL_HINT}") from None
    version = str(getattr(trt, "__version__", "0"))
    if parse_version(version)[0] not in SUPPORTED_MAJORS:
        raise BackendUnavailableError(f"TensorRT {version} is not supported: {INSTALL_HINT}")
    return trt


def installed_tensorrt_version() -> str | None:
    """The installed TensorRT version from package metadata, without importing it (None: absent)."""
    for dist in _DISTRIBUTIONS:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def parse_version(version: str) -> tuple[int, int]:
    """``"10.12.0.36"`` -> ``(10, 12)``; anything unparsable -> ``(0, 0)``."""
    parts = []
    for piece in str(version).strip().split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        parts.append(int(digits) if digits else 0)
    while len(parts) < 2:
        parts.append(0)
    return parts[0], parts[1]


def require_cuda_gpu(purpose: str = "TensorRT", need_torch_cuda: bool = True) -> None:
    """Fail with one line when no CUDA GPU is usable.

    ``need_torch_cuda``: the caller keeps device buffers as torch CUDA tensors (the runner), so a
    CPU-only torch build is as fatal as a missing GPU. Engine builds only need TensorRT's own
    CUDA, so with a CPU-only torch they go ahead and let TensorRT report (see :func:`make_builder`).
    """
    import torch

    if torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        if need_torch_cuda:
            raise BackendUnavailableError(
                f"{purpose} needs a CUDA build of torch (this torch {torch.__version__} is CPU-only): "
                "install torch for your CUDA version on a machine with an NVIDIA GPU"
            )
        return
    raise BackendUnavailableError(
        f"no CUDA GPU is available (torch.cuda.is_available() is False): {purpose} needs an NVIDIA GPU and driver"
    )


#: Shared libraries asked for CUDA facts, in order: the driver API (ships with the NVIDIA driver) and
#: the runtime TensorRT links against (the CUDA 12 or 13 runtime wheels, or the toolkit).
_CUDA_DRIVER_LIBS = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")
_CUDA_RUNTIME_LIBS = ("libcudart.so.13", "libcudart.so.12", "libcudart.so", "cudart64_13.dll", "cudart64_12.dll")
#: cuDeviceGetAttribute: CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR (cuda.h).
_CC_MAJOR, _CC_MINOR = 75, 76


def _load_first(names: tuple[str, ...]) -> tuple[Any, str] | tuple[None, None]:
    import ctypes

    for name in names:
        try:
            return ctypes.CDLL(name), name
        except OSError:
            continue
    return None, None


def _version_text(value: int) -> str:
    """CUDA's integer versions: 13000 -> "13.0", 12080 -> "12.8"."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def cuda_facts(device: int = 0) -> dict:
    """GPU name, compute capability, CUDA driver and runtime versions from CUDA's own queries (ctypes), not torch.

    Driver API (``libcuda``): ``cuInit``, ``cuDriverGetVersion``, ``cuDeviceGet``, ``cuDeviceGetName``,
    ``cuDeviceGetAttribute``; runtime (``libcudart``): ``cudaRuntimeGetVersion``. A fact that cannot be
    read is None and ``notes`` says why; this never raises (a report field, not a reason to fail a build).
    """
    import ctypes

    facts: dict = {"name": None, "compute_capability": None, "cuda_driver_version": None,
                   "cuda_runtime_version": None, "device": device, "source": "CUDA driver/runtime API (ctypes)",
                   "notes": []}
    try:
        drv, drv_name = _load_first(_CUDA_DRIVER_LIBS)
        if drv is None:
            facts["notes"].append("no CUDA driver library (libcuda) here: GPU name and driver version unknown")
        elif drv.cuInit(0) != 0:
            facts["notes"].append(f"{drv_name}: cuInit failed (no usable GPU or driver): GPU name unknown")
        else:
            version = ctypes.c_int(0)
            if drv.cuDriverGetVersion(ctypes.byref(version)) == 0:
                facts["cuda_driver_version"] = _version_text(version.value)
            handle = ctypes.c_int(0)
            if drv.cuDeviceGet(ctypes.byref(handle), device) == 0:
                buf = ctypes.create_string_buffer(256)
                if drv.cuDeviceGetName(buf, 256, handle) == 0:
                    facts["name"] = buf.value.decode(errors="replace")
                major, minor = ctypes.c_int(0), ctypes.c_int(0)
                if (drv.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, handle) == 0
                        and drv.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, handle) == 0):
                    facts["compute_capability"] = f"{major.value}.{minor.value}"
            else:
                facts["notes"].append(f"{drv_name}: no CUDA device {device}")
        rt, rt_name = _load_first(_CUDA_RUNTIME_LIBS)
        if rt is None:
            facts["notes"].append("no CUDA runtime library (libcudart) on the loader path: runtime version unknown")
        else:
            version = ctypes.c_int(0)
            if rt.cudaRuntimeGetVersion(ctypes.byref(version)) == 0:
                facts["cuda_runtime_version"] = _version_text(version.value)
            else:
                facts["notes"].append(f"{rt_name}: cudaRuntimeGetVersion failed")
    except Exception as exc:  # noqa: BLE001 - a report field, never a reason to fail a build
        facts["notes"].append(f"CUDA query failed: {first_line(exc)}")
    return facts


def gpu_identity() -> dict:
    """What the engine report records about the GPU and CUDA (:func:`cuda_facts` of device 0; never torch)."""
    return cuda_facts(0)


def available_flag_names(trt: Any) -> set[str]:
    """Names of ``BuilderFlag`` and ``NetworkDefinitionCreationFlag`` members of this TensorRT."""
    names: set[str] = set()
    for enum_name in ("BuilderFlag", "NetworkDefinitionCreationFlag"):
        enum = getattr(trt, enum_name, None)
        members = getattr(enum, "__members__", None) or {}
        names.update(str(name) for name in members)
    return names


#: The build log lines that say which layers TensorRT found eligible for / ran with sparse math.
SPARSITY_PREFIX = "(Sparsity)"


#: Messages a shared logger keeps; older ones are dropped (marks stay valid: they count from the start).
_LOG_LIMIT = 20000


def make_capture_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that keeps warnings, errors and every "(Sparsity)" line it is given.

    TensorRT calls ``log`` from its own threads and ``log`` must not raise (it is noexcept on
    the C++ side), so it only appends under a lock. Callers read what one build logged through
    :meth:`mark`: ``start = logger.mark(); ...; logger.errors(start)``. Use :func:`shared_logger`
    rather than calling this: TensorRT keeps the first logger of a process.
    """

    class CaptureLogger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.lock = threading.Lock()
            self.messages: list[tuple[str, str]] = []  # (severity, message), INFO and worse
            self.dropped = 0  # messages dropped from the front (see _LOG_LIMIT)

        def log(self, severity: Any, msg: str) -> None:
            try:
                level = int(severity)
                text = str(msg)
                if level > 3 and SPARSITY_PREFIX not in text:  # VERBOSE (4): skip cheaply
                    return
                name = getattr(severity, "name", str(severity)).split(".")[-1]
                with self.lock:
                    self.messages.append((name, text))
                    if len(self.messages) > _LOG_LIMIT:
                        cut = len(self.messages) // 2
                        del self.messages[:cut]
                        self.dropped += cut
            except BaseException:  # noqa: BLE001 - must never propagate into TensorRT
                pass

        def mark(self) -> int:
            """A position in the log; pass it to the readers to see only what came after."""
            with self.lock:
                return self.dropped + len(self.messages)

        def _since(self, since: int) -> list[tuple[str, str]]:
            with self.lock:
                return list(self.messages[max(since - self.dropped, 0):])

        def errors(self, since: int = 0) -> list[str]:
            return [m for sev, m in self._since(since) if sev in ("ERROR", "INTERNAL_ERROR")]

        def warnings(self, since: int = 0) -> list[str]:
            return [m for sev, m in self._since(since) if sev == "WARNING"]

        def sparsity_lines(self, since: int = 0) -> list[str]:
            return [m.strip() for _sev, m in self._since(since) if SPARSITY_PREFIX in m]

    return CaptureLogger()


_SHARED_LOCK = threading.Lock()
_SHARED: list[tuple[Any, Any]] = []  # (tensorrt module, its logger)


def shared_logger(trt: Any) -> Any:
    """The process's one capture logger for this ``tensorrt`` module.

    TensorRT registers the first logger handed to a builder or runtime and warns ("The logger
    passed into createInferRuntime differs from one already provided ...") when another one
    comes later, then keeps logging to the first: a logger per build or runner would both warn
    and lose the later builds' "(Sparsity)" lines.
    """
    with _SHARED_LOCK:
        for module, logger in _SHARED:
            if module is trt:
                return logger
        logger = make_capture_logger(trt)
        _SHARED.append((trt, logger))
        return logger


def make_builder(trt: Any, logger: Any) -> Any:
    """``trt.Builder(logger)``; a builder that cannot start means no usable GPU or driver."""
    since = logger.mark() if hasattr(logger, "mark") else 0
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # noqa: BLE001 - TensorRT raises plain TypeError/RuntimeError here
        builder, detail = None, first_line(exc)
    else:
        detail = ""
    if builder is None:
        errors = "; ".join(logger.errors(since)[-2:]) if hasattr(logger, "errors") else ""
        raise BackendUnavailableError(
            "TensorRT could not start a builder (no usable NVIDIA GPU, driver or CUDA runtime?)"
            + (f": {detail or errors}" if (detail or errors) else "")
        )
    return builder
