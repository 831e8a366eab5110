"""The throughput chart: a grouped bar chart drawn with Pillow (no matplotlib dependency)."""

from __future__ import annotations

import math
from collections.abc import Sequence


#: Bar colours (matplotlib's "tab10"), one per model.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def nice_ticks(top: float, target: int = 6) -> list[float]:
    """0, step, 2*step, ... covering ``top``, with step 1, 2 or 5 times a power of ten."""
    if not top > 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    count = math.ceil(top / step - 1e-9)
    return [i * step for i in range(count + 1)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def throughput_chart(batch_sizes: Sequence[int], series: Sequence[tuple[str, Sequence[float]]], title: str):
    """A grouped bar chart (Pillow image): groups = batch sizes, bars = models, y = images/s."""
    from PIL import Image, ImageDraw

    font, small, bold = _font(14), _font(11), _font(16)
    width, left, right, top, plot_h = 960, 80, 24, 56, 340
    legend_top = top + plot_h + 64
    height = legend_top + 22 * len(series) + 16
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 16), title, fill="black", font=bold)

    values = [v for _, vals in series for v in vals if math.isfinite(v)]
    ticks = nice_ticks(max(values, default=1.0))
    y_max = ticks[-1] or 1.0
    x0, x1, y0, y1 = left, width - right, top + plot_h, top  # y0 is the axis (bottom), y1 the top

    def y_of(value: float) -> float:
        value = value if value > 0 else 0.0  # NaN or negative: an empty bar (Pillow refuses NaN / upside-down boxes)
        return y0 - (y0 - y1) * min(value, y_max) / y_max

    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0
    for tick in ticks:
        y = y_of(tick)
        draw.line([(x0, y), (x1, y)], fill="#dddddd")
        label = f"{tick:,.{decimals}f}"
        w = draw.textlength(label, font=small)
        draw.text((x0 - 8 - w, y - 7), label, fill="black", font=small)
    draw.line([(x0, y1), (x0, y0), (x1, y0)], fill="black", width=1)

    groups = max(len(batch_sizes), 1)
    group_w = (x1 - x0) / groups
    bar_w = group_w * 0.8 / max(len(series), 1)
    for g, batch in enumerate(batch_sizes):
        gx = x0 + g * group_w + group_w * 0.1
        for s, (_, vals) in enumerate(series):
            value = vals[g]
            bx = gx + s * bar_w
            draw.rectangle([bx + 1, y_of(value), bx + bar_w - 1, y0], fill=PALETTE[s % len(PALETTE)])
            text = _fmt(value)
            tw = draw.textlength(text, font=small)
            if tw <= bar_w + 6:
                draw.text((bx + (bar_w - tw) / 2, y_of(value) - 15), text, fill="black", font=small)
        label = f"batch {batch}"
        lw = draw.textlength(label, font=font)
        draw.text((x0 + g * group_w + (group_w - lw) / 2, y0 + 8), label, fill="black", font=font)

    axis_title = "batch size"
    draw.text(((x0 + x1 - draw.textlength(axis_title, font=font)) / 2, y0 + 32), axis_title, fill="black", font=font)
    y_title = "throughput (images/s)"
    tw = int(draw.textlength(y_title, font=font)) + 4
    label_img = Image.new("RGB", (tw, 20), "white")
    ImageDraw.Draw(label_img).text((2, 2), y_title, fill="black", font=font)
    rotated = label_img.rotate(90, expand=True)
    image.paste(rotated, (8, int((y0 + y1) / 2 - rotated.height / 2)))

    for s, (name, _) in enumerate(series):
        ly = legend_top + 22 * s
        draw.rectangle([x0, ly + 2, x0 + 14, ly + 16], fill=PALETTE[s % len(PALETTE)])
        draw.text((x0 + 22, ly + 1), name, fill="black", font=font)
    return image
