"""Runtimes that execute a model on a batch: torch, ONNX Runtime, TensorRT (lazy).

``runner_for(path)`` picks one from the file; the torch and ONNX Runtime runners load their
libraries on use, the TensorRT runner only when an engine is opened.
"""

from maxq_deploy.runtimes.base import Runner
from maxq_deploy.runtimes.select import BACKENDS, backend_for_file, normalize_backend, runner_for

__all__ = ["BACKENDS", "OnnxRuntimeRunner", "Runner", "TorchRunner", "backend_for_file", "normalize_backend", "runner_for"]


def __getattr__(name: str):
    # Lazy, so importing the package does not load onnxruntime.
    if name == "TorchRunner":
        from maxq_deploy.runtimes.torch_runner import TorchRunner

        return TorchRunner
    if name == "OnnxRuntimeRunner":
        from maxq_deploy.runtimes.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
