"""The small interface every runtime implements, so eval and bench treat them alike."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runner(Protocol):
    """Runs one model: NCHW float32 batch in, logits out (both numpy, on the host)."""

    name: str  # "torch", "onnxruntime", "tensorrt"
    device: str  # "cpu" or "cuda"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Run synchronously; the returned array is complete when this returns."""
        ...

    def close(self) -> None:
        """Release sessions, contexts and device memory."""
        ...
