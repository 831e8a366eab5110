"""bench.chart: tick steps, and the grouped throughput bars measured on the image itself (heights proportional to
the values, groups by batch size, one colour per model), with infinite and NaN throughputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bench_fixtures import FakeClock, fake_clock, fake_models, settings  # noqa: F401  (fake_clock: a pytest fixture)
from maxq_deploy import bench
from maxq_deploy.bench import PALETTE, measure, nice_ticks, throughput_chart

#: The chart's frame (chart.throughput_chart): the x axis row and the top of the plot area.
AXIS_Y, TOP_Y, PLOT_H = 396, 56, 340


def test_nice_ticks() -> None:
    assert nice_ticks(87.2) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(0.0) == [0.0, 1.0]
    ticks = nice_ticks(12345)
    assert ticks[-1] >= 12345 and len(ticks) <= 8


def test_plot_draws_every_model_colour(tmp_path: Path, fake_clock: FakeClock) -> None:
    from PIL import Image

    models = fake_models(fake_clock, [], costs_ms=(1, 2, 3))
    s = settings(batch_sizes=[1, 8])
    result = bench.BenchResult(models, measure(models, s), s, {})
    result.write_plot(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as image:
        colours = {c for _, c in image.convert("RGB").getcolors(1 << 20)}
    for hex_colour in bench.PALETTE[:3]:
        assert tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)) in colours



@pytest.mark.parametrize("top, ticks", [
    (1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (5.0, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
    (7.0, [0.0, 2.0, 4.0, 6.0, 8.0]),
    (2400.0, [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0]),
    (0.03, [0.0, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03]),
])
def test_nice_ticks_by_hand(top: float, ticks: list[float]) -> None:
    """Step = the first of 1, 2, 5, 10 x 10^k at least top/6; ticks run from 0 to the first multiple >= top."""
    assert nice_ticks(top) == pytest.approx(ticks)


@pytest.mark.parametrize("top", [-3.0, math.nan, math.inf])
def test_nice_ticks_of_no_usable_top(top: float) -> None:
    assert nice_ticks(top) == [0.0, 1.0]


@pytest.mark.parametrize("top", [0.7, 3.3, 9.99, 10.0, 123.0, 4e6])
def test_nice_ticks_cover_the_top_in_a_few_even_steps(top: float) -> None:
    ticks = nice_ticks(top)
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 5))
    assert ticks[0] == 0 and ticks[-1] >= top and ticks[-2] < top and 4 <= len(ticks) <= 13
    assert np.allclose(np.diff(ticks), step)


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _bars(image, colour: str) -> list[tuple[int, int]]:
    """(left x, height in pixels) of each bar of ``colour`` in the plot area, left to right."""
    pixels = np.asarray(image.convert("RGB"))[: AXIS_Y + 1]
    mask = np.all(pixels == _rgb(colour), axis=2)
    columns = mask.any(axis=0)
    bars, x = [], 0
    while x < len(columns):
        if columns[x]:
            start = x
            while x < len(columns) and columns[x]:
                x += 1
            mid = (start + x) // 2
            rows = np.flatnonzero(mask[:, mid])
            bars.append((start, AXIS_Y - int(rows.min())))
        x += 1
    return bars


def test_bar_heights_are_proportional_to_throughput() -> None:
    """Values 100, 50 | 25, 75 on a 0..100 axis 340 px high: 340, 170, 85 and 255 px."""
    image = throughput_chart([1, 8], [("a", [100.0, 50.0]), ("b", [25.0, 75.0])], "t")
    a, b = _bars(image, PALETTE[0]), _bars(image, PALETTE[1])
    assert len(a) == len(b) == 2
    for (_, height), value in zip(a + b, [100, 50, 25, 75]):
        assert abs(height - PLOT_H * value / 100) <= 1
    (a1, _), (a8, _) = a
    (b1, _), (b8, _) = b
    assert a1 < b1 < a8 < b8  # groups are batch sizes, bars within a group are the models in order


def test_chart_size_grows_with_the_legend() -> None:
    one = throughput_chart([1], [("a", [1.0])], "t")
    three = throughput_chart([1, 2, 4], [(f"m{i}", [1.0, 2.0, 3.0]) for i in range(3)], "t")
    assert one.size == (960, 460 + 22 + 16) and three.size == (960, 460 + 3 * 22 + 16)


def test_eleven_models_reuse_the_palette_in_order() -> None:
    series = [(f"m{i}", [float(i + 1)]) for i in range(11)]
    image = throughput_chart([1], series, "t")
    first = _bars(image, PALETTE[0])
    assert [h for _, h in first] == [pytest.approx(PLOT_H * 1 / 12, abs=1), pytest.approx(PLOT_H * 11 / 12, abs=1)]


def test_infinite_throughput_is_a_full_bar_and_leaves_the_axis_to_the_finite_values() -> None:
    """A 0 ms mean is an infinite throughput: its bar is clipped at the top, the axis still fits the 10 img/s bar."""
    image = throughput_chart([1], [("a", [math.inf]), ("b", [10.0]), ("c", [5.0])], "t")
    assert [h for _, h in _bars(image, PALETTE[0])] == [PLOT_H]
    assert abs(_bars(image, PALETTE[1])[0][1] - PLOT_H) <= 1  # nice_ticks(10) ends at 10
    assert abs(_bars(image, PALETTE[2])[0][1] - PLOT_H / 2) <= 1


@pytest.mark.parametrize("bad", [math.nan, -5.0])
def test_nan_or_negative_throughput_draws_no_bar_instead_of_failing(bad: float) -> None:
    """Pillow refuses a NaN or upside-down rectangle; such a value gets an empty bar, the others keep the scale."""
    image = throughput_chart([1, 2], [("a", [bad, 20.0]), ("b", [10.0, 20.0])], "t")
    heights = [h for _, h in _bars(image, PALETTE[0])]
    assert heights[-1] == pytest.approx(PLOT_H, abs=1) and all(h <= 1 for h in heights[:-1])
    assert [h for _, h in _bars(image, PALETTE[1])] == [pytest.approx(PLOT_H / 2, abs=1), pytest.approx(PLOT_H, abs=1)]


def test_all_zero_throughput_keeps_a_unit_axis() -> None:
    image = throughput_chart([1], [("a", [0.0])], "t")
    assert all(h <= 1 for _, h in _bars(image, PALETTE[0]))
