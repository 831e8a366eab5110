"""The one contract every runtime meets, so eval and bench treat them alike.

A runner is opened from a file by its backend's loader (``runtimes.open_runner``) and then only
runs: ``run(batch) -> logits`` and ``close()``. What eval and bench need to know about the
model (its input, classes, precision, where it runs) is in ``runner.info``, a :class:`ModelInfo`
filled once by the loader, so no caller has to probe a runner's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class ModelInfo:
    """What a runner runs and how.

    ``input_shape`` is (C, H, W) with None for a dynamic dim; ``batch_range`` is the (min, max)
    batch sizes the model accepts (max None: unbounded); ``options`` holds backend settings that
    change results or speed (threads, inference precision, providers) and is shown in every
    table and JSON record.
    """

    backend: str  # "torch", "torch-2:4", "onnxruntime", "openvino", "tensorrt"
    backend_version: str
    device: str  # "cpu", "cuda", "cuda:1", or an OpenVINO device name
    model_kind: str  # "maxq-checkpoint", "folded-checkpoint", "quantized-checkpoint", "onnx-int8", "tensorrt-engine", ...
    path: Path | None = None
    precision: str | None = None  # "fp32", "fp16", "int8"; None: not known
    arch: str | None = None
    num_classes: int | None = None
    input_name: str = "input"
    input_shape: tuple[int | None, int | None, int | None] = (3, None, None)
    input_dtype: np.dtype = field(default_factory=lambda: np.dtype(np.float32))
    batch_range: tuple[int, int | None] = (1, None)
    metadata: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    warning: str | None = None  # one line eval and bench print (e.g. an int8 form that saturates on this CPU)

    @property
    def fixed_batch(self) -> int | None:
        """The one batch size a static-batch model accepts, else None."""
        lo, hi = self.batch_range
        return lo if hi is not None and lo == hi else None

    @property
    def input_size(self) -> int | None:
        """The square spatial size the model is fixed to, else None."""
        _, h, w = self.input_shape
        return h if h is not None and h == w else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "backend_version": self.backend_version,
            "device": self.device,
            "model_kind": self.model_kind,
            "path": str(self.path) if self.path is not None else None,
            "precision": self.precision,
            "arch": self.arch,
            "num_classes": self.num_classes,
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "input_dtype": str(self.input_dtype),
            "batch_range": list(self.batch_range),
            "options": {k: v for k, v in self.options.items()},
        }


class Runner:
    """Runs one model: an NCHW batch in (numpy), float32 logits out (numpy, on the host).

    Subclasses set ``self.info`` in ``__init__`` and implement ``run`` and ``close``. The read-only
    properties below are shorthands for ``info`` fields.
    """

    info: ModelInfo

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run synchronously; the returned array is complete when this returns."""
        raise NotImplementedError

    def close(self) -> None:
        """Release sessions, contexts and device memory."""
        raise NotImplementedError

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def name(self) -> str:
        return self.info.backend

    @property
    def device(self) -> str:
        return self.info.device

    @property
    def model_kind(self) -> str:
        return self.info.model_kind

    @property
    def num_classes(self) -> int | None:
        return self.info.num_classes

    @property
    def arch(self) -> str | None:
        return self.info.arch

    @property
    def input_name(self) -> str:
        return self.info.input_name

    @property
    def input_shape(self) -> tuple[int | None, int | None, int | None]:
        return self.info.input_shape

    @property
    def input_dtype(self) -> np.dtype:
        return self.info.input_dtype

    @property
    def metadata(self) -> Mapping[str, str]:
        return self.info.metadata

    @property
    def path(self) -> Path | None:
        return self.info.path
