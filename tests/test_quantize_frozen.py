"""FixedQuantizer: eager fake quantization is exactly ONNX's QuantizeLinear + DequantizeLinear (symmetric int8, constant scale)."""

from __future__ import annotations

import torch

from maxq_deploy.quantize.frozen import BOUND, FixedQuantizer


def test_without_a_range_it_is_the_identity() -> None:
    x = torch.randn(4, 5)
    q = FixedQuantizer(None)
    assert q(x) is x and q.extra_repr() == "disabled"


def test_per_tensor_rounds_half_to_even_and_saturates() -> None:
    q = FixedQuantizer(torch.tensor(127.0))  # scale 1.0: the int8 grid is the integers
    assert q.scale == 1.0 and q.axis is None
    x = torch.tensor([0.0, 0.5, 1.5, 2.5, -2.5, 126.6, 200.0, -200.0])
    assert q(x).tolist() == [0.0, 0.0, 2.0, 2.0, -2.0, 127.0, 127.0, -128.0]


def test_per_channel_scales_along_the_axis_and_keeps_zeros() -> None:
    amax = torch.tensor([BOUND * 0.5, BOUND * 2.0])  # scales 0.5 and 2.0
    q = FixedQuantizer(amax, axis=0)
    w = torch.tensor([[0.0, 0.74, -0.26, 1000.0], [0.0, 2.9, -5.0, 3.0]])
    out = q(w)
    assert out.tolist() == [[0.0, 0.5, -0.5, 63.5], [0.0, 2.0, -4.0, 4.0]]
    assert (out[w == 0] == 0).all()  # 2:4 zeros survive fake quantization


def test_held_int8_weight_dequantizes_to_the_same_values() -> None:
    amax = torch.tensor([1.0, 3.0])
    q = FixedQuantizer(amax, axis=0)
    w = torch.tensor([[0.3, -1.0, 0.0, 0.01], [2.9, 0.0, -3.0, 0.5]])
    expected = q(w)
    q.hold_weight(w)
    assert q.int8_weight.dtype == torch.int8 and int(q.int8_weight.abs().max()) <= BOUND
    torch.testing.assert_close(q(w), expected, rtol=0, atol=0)
