"""The quantized checkpoint's INT8 weights: symmetric rounding keeps every zero and the [-127, 127] range."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytorch_quantization")
pytest.importorskip("sklearn")

from maxq_deploy.quantize.artifact import int8_weight  # noqa: E402


def test_int8_weights_keep_zeros_and_range():
    w = torch.tensor([[0.0, 0.5, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0], [0.001, 0.0, 0.0, 2.0]])
    q = int8_weight(w, torch.tensor([[1.0], [0.0], [2.0]]))
    assert q.dtype == torch.int8
    assert q.tolist() == [[0, 64, 0, -127], [0, 0, 0, 0], [0, 0, 0, 127]]
