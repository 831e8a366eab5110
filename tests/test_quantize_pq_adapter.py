"""The pytorch-quantization adapter: its single-pass calibrators collect what upstream collects; sampled histograms give nearly the same ranges."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytorch_quantization")
pytest.importorskip("sklearn")

from maxq_deploy.quantize import histogram as histogram_maths, pq_adapter  # noqa: E402


def test_single_pass_calibrators_collect_what_upstream_collects():
    from pytorch_quantization import calib

    pq_adapter.require_pytorch_quantization()
    histogram, maximum = pq_adapter._single_pass_calibrators()
    generator = torch.Generator().manual_seed(0)
    for signed in (False, True):
        refs = calib.HistogramCalibrator(8, None, False), calib.MaxCalibrator(8, None, False)
        news = histogram(8, None, False), maximum(8, None, False)
        for i in range(4):
            x = torch.randn(2, 8, 16, 16, generator=generator) * (1 + i)  # growing range: bins are added
            x = x if signed else x.relu()
            for calibrator in (*refs, *news):
                calibrator.collect(x)
        assert torch.equal(refs[0]._calib_hist, news[0]._calib_hist) and torch.equal(refs[0]._calib_bin_edges, news[0]._calib_bin_edges)
        assert torch.equal(refs[1].compute_amax(), news[1].compute_amax())


def test_sampled_histograms_give_nearly_the_same_ranges():
    """Large tensors are binned from a fixed-stride sample (counts scaled back): ranges barely move."""
    pq_adapter.require_pytorch_quantization()
    histogram, _ = pq_adapter._single_pass_calibrators()
    full, sampled = histogram(8, None, False), histogram(8, None, False)
    sampled.max_samples = pq_adapter.HISTOGRAM_SAMPLES
    generator = torch.Generator().manual_seed(0)
    for i in range(3):
        x = (torch.randn(8, 256, 56, 56, generator=generator) * (1 + 0.2 * i) + 0.3).relu() ** 1.5  # 6.4M values
        full.collect(x)
        sampled.collect(x)
    assert histogram_maths.sample_stride(x.numel(), pq_adapter.HISTOGRAM_SAMPLES) == 11
    assert torch.equal(full._calib_bin_edges, sampled._calib_bin_edges)  # the range comes from every value
    assert float(sampled._calib_hist.sum()) == pytest.approx(float(full._calib_hist.sum()), rel=1e-3)
    p_full, p_sampled = (float(c.compute_amax("percentile", percentile=99.99)) for c in (full, sampled))
    assert p_sampled == pytest.approx(p_full, rel=0.02)
    for method, tolerance in (("mse", 0.02), ("entropy", 0.1)):  # entropy's KL minimum is flat: it moves as much between calibration sets
        amax = [histogram_maths.histogram_amax(c._calib_hist.numpy(), c._calib_bin_edges.numpy(), method) for c in (full, sampled)]
        assert amax[1] == pytest.approx(amax[0], rel=tolerance), method
