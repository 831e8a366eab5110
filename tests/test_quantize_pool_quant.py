"""Pooling-input quantizers: which quantizer names belong to a pool (their ranges are checked and exported apart)."""

from __future__ import annotations

import pytest

from maxq_deploy.quantize.pool_quant import POOL_QUANTIZER_SUFFIX, is_pool_quantizer


@pytest.mark.parametrize("name, expected", [
    ("avgpool" + POOL_QUANTIZER_SUFFIX, True),
    ("features.maxpool" + POOL_QUANTIZER_SUFFIX, True),
    ("layer1.0.convbn1" + POOL_QUANTIZER_SUFFIX, False),
    ("avgpool._weight_quantizer", False),
    ("poolside.conv" + POOL_QUANTIZER_SUFFIX, False),
    (POOL_QUANTIZER_SUFFIX, False),
])
def test_is_pool_quantizer(name: str, expected: bool) -> None:
    assert is_pool_quantizer(name) is expected
