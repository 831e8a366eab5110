"""The sensitivity plot, written by hand as SVG (no plotting dependency): per sparse layer, the
top-1 cost of 2:4 + INT8 (y, points lost) against the share of multiply-adds 2:4 saves (x)."""

from __future__ import annotations

import os
from pathlib import Path
from xml.sax.saxutils import escape

W, H, PAD = 720, 440, 60
COLOURS = {"2:4": "#1f77b4", "int8": "#ff7f0e", "both": "#2ca02c"}


def _points(result) -> list[tuple[str, str, float, float]]:
    out = []
    for layer in result.layers:
        saved = layer.flops_share / 2  # what a 2:4 kernel would skip in this layer
        for variant, delta in (("2:4", layer.delta_2_4), ("int8", layer.delta_int8), ("both", layer.delta_both)):
            if delta is not None:
                out.append((layer.name, variant, saved, -delta))
    return out


def render(result) -> str:
    points = _points(result)
    xmax = max([p[2] for p in points] + [1.0]) * 1.1
    costs = [p[3] for p in points] + [0.0, 1.0]
    ymin, ymax = min(costs), max(costs) * 1.1
    sx = lambda v: PAD + (W - 2 * PAD) * v / xmax  # noqa: E731
    sy = lambda v: H - PAD - (H - 2 * PAD) * (v - ymin) / max(ymax - ymin, 1e-9)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{escape(Path(result.model).name)}: top-1 cost per layer '
             f'(baseline {result.baseline_top1:.2f}% on {result.images} images)</text>',
             f'<line x1="{PAD}" y1="{sy(0):.1f}" x2="{W - PAD}" y2="{sy(0):.1f}" stroke="#999"/>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{PAD}" y2="{PAD}" stroke="black"/>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>',
             f'<text x="{W / 2}" y="{H - 15}" text-anchor="middle">share of the network\'s multiply-adds 2:4 saves in the layer (%)</text>',
             f'<text x="15" y="{H / 2}" transform="rotate(-90 15 {H / 2})" text-anchor="middle">top-1 lost (points)</text>']
    for i in range(5):
        xv, yv = xmax * i / 4, ymin + (ymax - ymin) * i / 4
        parts.append(f'<text x="{sx(xv):.1f}" y="{H - PAD + 15}" text-anchor="middle">{xv:.1f}</text>')
        parts.append(f'<text x="{PAD - 5}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.2f}</text>')
    for name, variant, x, y in points:
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="{COLOURS[variant]}" fill-opacity="0.8">'
                     f'<title>{escape(name)} {variant}: {y:+.2f} points lost, {x:.2f}% saved</title></circle>')
    worst = sorted((p for p in points if p[1] == "both"), key=lambda p: -p[3])[:5]
    for name, _, x, y in worst:
        parts.append(f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 4:.1f}">{escape(name)}</text>')
    for i, (variant, colour) in enumerate(COLOURS.items()):
        parts.append(f'<circle cx="{W - PAD - 60}" cy="{PAD + 15 * i}" r="4" fill="{colour}"/>'
                     f'<text x="{W - PAD - 50}" y="{PAD + 15 * i + 4}">{variant}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_plot(result, path: str | os.PathLike[str]) -> Path:
    from maxq_deploy.core.files import atomic_output

    out = Path(path)
    with atomic_output(out) as tmp:
        tmp.write_text(render(result))
    return out
