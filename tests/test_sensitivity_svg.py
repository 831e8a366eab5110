"""sensitivity.svg: the hand-written SVG plot parses as XML, puts each (layer, variant) point at coordinates
proportional to its saved share (x) and top-1 cost (y), escapes layer and model names, labels the five worst
layers, and is written atomically."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from maxq_deploy.core.errors import MaxQDeployError
from maxq_deploy.sensitivity import LayerSensitivity, SensitivityResult
from maxq_deploy.sensitivity.svg import COLOURS, H, PAD, W, render, write_plot

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = 'blocks<1>&"stem"'


def _layer(name: str, flops_share: float, d24: float | None, d8: float | None, both: float | None) -> LayerSensitivity:
    return LayerSensitivity(name, [8, 8, 3, 3], 1, d24 is None, 100, flops_share, 1.0, d24, d8, both)


def _result(layers: list[LayerSensitivity], model: str = "/ckpt/net.pt") -> SensitivityResult:
    return SensitivityResult(model, "resnet18", "2:4", "data.npz", 40, 91.25, layers)


LAYERS = [
    _layer(HOSTILE, 20.0, -1.0, -0.5, -2.0),  # saves 10 %, costs 1, 0.5 and 2 points
    _layer("layer2", 40.0, None, -0.25, -0.25),  # already 2:4: no "2:4" point
    _layer("layer3", 10.0, 0.5, 0.0, -1.0),  # projecting it gains half a point (a negative cost)
]


def _circles(root: ET.Element) -> dict[str, tuple[float, float]]:
    """Data points by their tooltip's '<layer> <variant>' -> (cx, cy); legend circles have no tooltip."""
    out = {}
    for circle in root.iter(f"{SVG}circle"):
        title = circle.find(f"{SVG}title")
        if title is not None:
            out[title.text.split(": ", 1)[0]] = (float(circle.get("cx")), float(circle.get("cy")))
    return out


def test_renders_well_formed_svg_with_one_point_per_known_delta() -> None:
    root = ET.fromstring(render(_result(LAYERS)))
    assert root.tag == f"{SVG}svg" and (root.get("width"), root.get("height")) == (str(W), str(H))
    points = _circles(root)
    assert sorted(points) == sorted([f"{HOSTILE} 2:4", f"{HOSTILE} int8", f"{HOSTILE} both", "layer2 int8", "layer2 both",
                                     "layer3 2:4", "layer3 int8", "layer3 both"])
    legend = [c for c in root.iter(f"{SVG}circle") if c.find(f"{SVG}title") is None]
    assert [c.get("fill") for c in legend] == list(COLOURS.values())
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"2:4", "int8", "both"} <= set(texts)


def test_point_colours_follow_the_variant() -> None:
    root = ET.fromstring(render(_result(LAYERS)))
    for circle in root.iter(f"{SVG}circle"):
        title = circle.find(f"{SVG}title")
        if title is not None:
            variant = title.text.split(": ", 1)[0].rsplit(" ", 1)[1]
            assert circle.get("fill") == COLOURS[variant]


def test_x_is_proportional_to_the_saved_share_and_y_to_the_cost() -> None:
    """x from the left axis grows as half the layer's multiply-adds; y from the zero line as the points lost."""
    root = ET.fromstring(render(_result(LAYERS)))
    points = _circles(root)
    zero = next(float(line.get("y1")) for line in root.iter(f"{SVG}line") if line.get("stroke") == "#999")
    saved = {HOSTILE: 10.0, "layer2": 20.0, "layer3": 5.0}
    cost = {f"{HOSTILE} 2:4": 1.0, f"{HOSTILE} int8": 0.5, f"{HOSTILE} both": 2.0, "layer2 int8": 0.25,
            "layer2 both": 0.25, "layer3 2:4": -0.5, "layer3 int8": 0.0, "layer3 both": 1.0}
    x_per_percent = (points["layer2 int8"][0] - PAD) / 20.0
    y_per_point = (zero - points[f"{HOSTILE} both"][1]) / 2.0
    assert x_per_percent > 0 and y_per_point > 0
    for key, (cx, cy) in points.items():
        assert cx - PAD == pytest.approx(x_per_percent * saved[key.rsplit(" ", 1)[0]], abs=0.15), key
        assert zero - cy == pytest.approx(y_per_point * cost[key], abs=0.15), key
    assert points["layer3 2:4"][1] > zero  # a gain plots below the zero line
    assert PAD <= min(cx for cx, _ in points.values()) and max(cx for cx, _ in points.values()) <= W - PAD
    assert PAD <= min(cy for _, cy in points.values()) and max(cy for _, cy in points.values()) <= H - PAD


def test_tooltip_text_by_hand() -> None:
    root = ET.fromstring(render(_result(LAYERS)))
    titles = {t.text for t in root.iter(f"{SVG}title")}
    assert f"{HOSTILE} both: +2.00 points lost, 10.00% saved" in titles
    assert "layer3 2:4: -0.50 points lost, 2.50% saved" not in titles  # layer3 saves half of its 10 %
    assert "layer3 2:4: -0.50 points lost, 5.00% saved" in titles


def test_names_with_markup_characters_are_escaped() -> None:
    """Layer and model names with < & > " go through as text: the file parses and shows them unchanged."""
    text = render(_result(LAYERS, model='/ckpt/a<b>&"c".pt'))
    assert "<1>" not in text and "&amp;" in text
    root = ET.fromstring(text)
    heading = next(t.text for t in root.iter(f"{SVG}text"))
    assert heading == 'a<b>&"c".pt: top-1 cost per layer (baseline 91.25% on 40 images)'
    assert HOSTILE in [t.text for t in root.iter(f"{SVG}text")]  # its label among the worst


def test_only_the_five_costliest_layers_are_labelled() -> None:
    """Labels go to the 5 layers whose 2:4 + INT8 ('both') costs most; a layer without 'both' is never one."""
    layers = [_layer(f"l{i}", 5.0 + i, -0.1 * i, -0.1, -0.3 * i) for i in range(7)]
    layers.append(_layer("no_both", 5.0, -9.0, -9.0, None))
    root = ET.fromstring(render(_result(layers)))
    labelled = [t.text for t in root.iter(f"{SVG}text") if t.text in {layer.name for layer in layers}]
    assert labelled == ["l6", "l5", "l4", "l3", "l2"]


def test_no_layers_still_draws_axes_and_legend() -> None:
    root = ET.fromstring(render(_result([])))
    assert _circles(root) == {}
    assert len(list(root.iter(f"{SVG}circle"))) == len(COLOURS)
    ticks = [t.text for t in root.iter(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert ticks == ["0.00", "0.28", "0.55", "0.83", "1.10"]  # the unit y range 0..1, padded by 10 %


def test_coordinates_are_finite_numbers() -> None:
    root = ET.fromstring(render(_result(LAYERS)))
    for element in root.iter():
        for attribute in ("x", "y", "cx", "cy", "x1", "y1", "x2", "y2"):
            if element.get(attribute) is not None:
                assert math.isfinite(float(element.get(attribute))), (element.tag, attribute)


def test_write_plot_writes_the_rendering(tmp_path: Path) -> None:
    result = _result(LAYERS)
    out = write_plot(result, tmp_path / "s.svg")
    assert out == tmp_path / "s.svg" and out.read_text() == render(result)
    assert [p.name for p in tmp_path.iterdir()] == ["s.svg"]  # the temp file was renamed into place


def test_write_plot_into_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MaxQDeployError, match="does not exist"):
        write_plot(_result(LAYERS), tmp_path / "no" / "s.svg")
    assert list(tmp_path.iterdir()) == []
