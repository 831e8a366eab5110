"""One of each: one parity check, one ONNX loader, one graph index, one range validator, one
input-size/preprocessing rule. Each rule is checked by name over the library's source (so a
second copy fails here), and the preprocessing rule by what two stages actually read."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "maxq_deploy"


def _sources() -> dict[str, ast.AST]:
    return {str(p.relative_to(ROOT)): ast.parse(p.read_text()) for p in sorted(LIBRARY.rglob("*.py"))}


def _defined(name: str) -> list[str]:
    """Modules defining a function or class called ``name``."""
    return [path for path, tree in _sources().items()
            for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name]


def _calls(attr: str, owner: str | None = None) -> list[str]:
    """Modules calling ``owner.attr(...)`` (any owner when None) or a bare ``attr(...)``."""
    found = []
    for path, tree in _sources().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == attr and (
                    owner is None or (isinstance(func.value, ast.Name) and func.value.id == owner)):
                found.append(path)
            elif owner is None and isinstance(func, ast.Name) and func.id == attr:
                found.append(path)
    return sorted(set(found))


def test_one_parity_computation() -> None:
    assert _defined("onnx_vs_reference") == ["maxq_deploy/export/common.py"]
    assert _defined("check_parity") == ["maxq_deploy/export/common.py"]
    # every export compares outputs only through it; sessions come from the ONNX Runtime runner module
    assert [p for p in _calls("compare_outputs") if p.startswith("maxq_deploy/export/")] == ["maxq_deploy/export/common.py"]
    assert [p for p in _calls("InferenceSession") if p.startswith("maxq_deploy/export/")] == []


def test_one_onnx_loader() -> None:
    assert _calls("load", owner="onnx") == ["maxq_deploy/onnx_graph/index.py"]
    assert _defined("load_onnx") == ["maxq_deploy/onnx_graph/index.py"]


def test_one_graph_index() -> None:
    assert _defined("GraphIndex") == ["maxq_deploy/onnx_graph/index.py"]
    producer_maps = [path for path, tree in _sources().items() for node in ast.walk(tree)
                     if isinstance(node, ast.DictComp) and any(
                         isinstance(gen.iter, ast.Attribute) and gen.iter.attr == "output" for gen in node.generators)]
    assert producer_maps == ["maxq_deploy/onnx_graph/index.py"]


def test_one_openvino_core() -> None:
    """A second ov.Core can leave a thread's signal stack on unmapped memory (runtimes.openvino.shared_core)."""
    assert _calls("Core") == ["maxq_deploy/runtimes/openvino.py"]
    elsewhere = [str(p.relative_to(ROOT)) for folder in ("benchmarks", "tests", "examples", "tools")
                 for p in sorted((ROOT / folder).rglob("*.py"))
                 if p.name != "test_one_of_each.py" and any(f"{name}.Core()" in p.read_text() for name in ("ov", "openvino"))]
    assert elsewhere == []


def test_one_quantizer_range_validator() -> None:
    assert _defined("check_quantizer_ranges") == ["maxq_deploy/load/checks.py"]
    assert _calls("check_quantizer_ranges") == ["maxq_deploy/quantize/artifact.py"]  # through the format's one reader


def test_one_input_size_and_preprocess_rule() -> None:
    assert _defined("resolve_input_size") == ["maxq_deploy/load/input_size.py"]
    assert _defined("preprocess_for") == ["maxq_deploy/load/input_size.py"]
    built = [p for p in _calls("Preprocess") if not p.startswith("maxq_deploy/data/")]
    assert built == ["maxq_deploy/load/input_size.py"]
    ratios = [str(p.relative_to(ROOT)) for p in LIBRARY.rglob("*.py") if "256 / 224" in p.read_text()]
    assert ratios == ["maxq_deploy/archs/catalog.py"]


@pytest.fixture(scope="module")
def cifar_images(tmp_path_factory) -> Path:
    """Labelled 40x48 images: a CIFAR ResNet takes them without the 256/224 enlargement."""
    from PIL import Image

    root = tmp_path_factory.mktemp("cifar_calib")
    rng = np.random.default_rng(7)
    for cls in ("a", "b"):
        (root / cls).mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


@pytest.mark.parametrize("through", ["cli", "library"])
def test_onnxruntime_calibration_sees_what_quantize_sees_on_a_cifar_resnet(store, cli, cifar_images, tmp_path, monkeypatch, through):
    """``export onnx --target onnxruntime --calib`` and ``quantize`` read the same tensors from the same images,
    through the CLI and through the library's defaults (no preprocessing given)."""
    pytest.importorskip("pytorch_quantization")
    import maxq_deploy.data as data

    folded = store.folded(arch="c_resnet18")
    seen: dict[str, list] = {"quantize": [], "export": []}
    stage = ["quantize"]
    real_open = data.open_dataset

    def spying_open(*args, **kwargs):
        dataset = real_open(*args, **kwargs)
        seen[stage[0]].append(np.stack([dataset[i][0].numpy() for i in range(len(dataset))]))
        return dataset

    monkeypatch.setattr(data, "open_dataset", spying_open)
    if through == "cli":
        res = cli("quantize", folded, "-o", tmp_path / "q.pt", "--calib", cifar_images, "--calib-batches", 2, "--batch-size", 8)
        assert res.exit_code == 0, res.stderr
        stage[0] = "export"
        res = cli("export", "onnx", folded, "-o", tmp_path / "ort.onnx", "--target", "onnxruntime", "--calib", cifar_images,
                  "--calib-batches", 2, "--calib-batch-size", 8)
        assert res.exit_code == 0, res.stderr
    else:
        from maxq_deploy.export.ort_calibrated import export_ort_int8
        from maxq_deploy.quantize import QuantizeConfig, quantize

        quantize(folded, tmp_path / "q.pt", QuantizeConfig(calib_data=cifar_images, calib_batches=2, batch_size=8))
        stage[0] = "export"
        export_ort_int8(folded, tmp_path / "ort.onnx", cifar_images, calib_batches=2, batch_size=8)
    (quantize_tensors,), (export_tensors,) = seen["quantize"], seen["export"]
    assert quantize_tensors.shape == (16, 3, 32, 32)
    np.testing.assert_array_equal(quantize_tensors, export_tensors)
