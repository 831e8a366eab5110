"""Ranges from histograms (pure numpy): the vectorized entropy and MSE searches give pytorch-quantization's own amax."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_quantization")
pytest.importorskip("sklearn")

from maxq_deploy.quantize import histogram as histogram_maths  # noqa: E402


def test_vectorized_entropy_and_mse_match_pytorch_quantization():
    from pytorch_quantization.calib.histogram import _compute_amax_entropy, _compute_amax_percentile
    from pytorch_quantization.tensor_quant import fake_tensor_quant

    def upstream_mse(hist, edges):  # upstream's _compute_amax_mse without its .cuda()
        counts, e = torch.from_numpy(hist).float(), torch.from_numpy(edges).float()
        centers = (e[1:] + e[:-1]) / 2
        mses = [((fake_tensor_quant(centers, centers[i], 8, False) - centers) ** 2 * counts).mean() for i in range(128, len(centers))]
        return float(centers[128 + int(np.argmin(mses))])

    rng = np.random.default_rng(0)
    for trial in range(4):
        x = np.abs(rng.standard_normal(20000) * (1 + trial)) ** (0.7 + 0.3 * trial)
        if trial % 2:
            x = np.concatenate([x, np.zeros(5000)])  # ReLU zeros
        hist, edges = np.histogram(x, bins=int(rng.integers(200, 500)))
        assert histogram_maths.histogram_amax(hist, edges, "entropy") == pytest.approx(float(_compute_amax_entropy(hist.copy(), edges, 8, False)), rel=1e-6)
        assert histogram_maths.histogram_amax(hist, edges, "mse") == pytest.approx(upstream_mse(hist, edges), rel=1e-5)
        assert float(_compute_amax_percentile(hist, edges, 99.9)) <= edges[-1]
