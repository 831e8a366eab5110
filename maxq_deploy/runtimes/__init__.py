"""The runtime wing: every backend that runs a model, behind one contract (``base.Runner``).

* :mod:`~maxq_deploy.runtimes.base` -- ``Runner`` (run/close) and ``ModelInfo`` (what it runs)
* :mod:`~maxq_deploy.runtimes.select` -- ``open_runner(path, backend)``: the backend decided once
* :mod:`~maxq_deploy.runtimes.torch_runner` -- PyTorch eager (any torch artifact)
* :mod:`~maxq_deploy.runtimes.torch_sparse_runner` -- PyTorch CUDA fp16/bf16 with 2:4 semi-structured layers
* :mod:`~maxq_deploy.runtimes.onnxruntime_runner` -- ONNX Runtime sessions
* :mod:`~maxq_deploy.runtimes.tensorrt_api` / :mod:`~maxq_deploy.runtimes.tensorrt_runner` -- the only
  door to ``tensorrt``, and engines

Backend libraries are imported when a model is opened, never with this package.
"""

from maxq_deploy.runtimes.base import ModelInfo, Runner
from maxq_deploy.runtimes.select import BACKENDS, backend_for_file, normalize_backend, open_runner, resolve_backend

__all__ = [
    "BACKENDS",
    "ModelInfo",
    "OnnxRuntimeRunner",
    "Runner",
    "TorchRunner",
    "backend_for_file",
    "normalize_backend",
    "open_runner",
    "resolve_backend",
]


def __getattr__(name: str):
    # Lazy, so importing the package does not load torch or onnxruntime.
    if name == "TorchRunner":
        from maxq_deploy.runtimes.torch_runner import TorchRunner

        return TorchRunner
    if name == "OnnxRuntimeRunner":
        from maxq_deploy.runtimes.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
