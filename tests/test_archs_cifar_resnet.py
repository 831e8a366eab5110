"""CIFAR ResNets (c_resnet18..152) through every stage, every upstream N:M, and the road to 2:4.

Fixtures are reference-layer checkpoints in the upstream CIFAR layout (made by code). Parity is
measured at 32x32, the only size these networks were trained at.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from maxq_deploy.archs.catalog import ARCHS as CATALOG
from maxq_deploy.archs.catalog import check_input_size, default_input_size
from maxq_deploy.archs import MaxQConvBN, build_model, list_archs, state_dict_shapes
from maxq_deploy.archs.registry import _REGISTRY
from maxq_deploy.load.maxq_checkpoint import load_checkpoint
from maxq_deploy.core.errors import OptionError, UnsupportedArchitectureError
from maxq_deploy.fold import fold_masks_and_bn, load_folded
from maxq_deploy.core.sparsity import NMPattern, check_pattern, project_to_pattern

CIFAR = ["c_resnet18", "c_resnet34", "c_resnet50", "c_resnet101", "c_resnet152"]
#: Sparse conv-bn layers: 2 or 3 per block plus one shortcut conv per stage whose shape changes.
SPARSE_LAYERS = {"c_resnet18": 8 * 2 + 3, "c_resnet34": 16 * 2 + 3, "c_resnet50": 16 * 3 + 4,
                 "c_resnet101": 33 * 3 + 4, "c_resnet152": 50 * 3 + 4}
#: The big ones use hard masks (fixtures made faster; the fold path is the same) and run as slow tests.
HARD = "HardMaxQConv2DBNV2Pro"
ARCH_PARAMS = [
    "c_resnet18",
    pytest.param("c_resnet34", marks=pytest.mark.slow),
    pytest.param("c_resnet50", marks=pytest.mark.slow),
    pytest.param("c_resnet101", marks=pytest.mark.slow),
    pytest.param("c_resnet152", marks=pytest.mark.slow),
]
#: Every N:M the upstream CIFAR scripts train; the soft V2Pro type for three, the hard one elsewhere.
UPSTREAM_NM = ["1:4", "1:8", "1:16", "2:4", "2:8", "2:16", "4:8", "4:16", "8:16"]
NOT_2_4 = {"4:8", "4:16", "8:16"}
PARITY = 1e-5


@pytest.fixture(scope="module")
def probe32() -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def _random_npz(path, count: int, size: int, classes: int = 10) -> str:
    """Random-ish labelled ``size`` x ``size`` arrays: enough to calibrate, run and evaluate."""
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.standard_normal((count, 3, size, size), dtype=np.float32), labels=rng.integers(0, classes, count))
    return str(path)


@pytest.fixture(scope="module")
def npz32(tmp_path_factory) -> str:
    return _random_npz(tmp_path_factory.mktemp("data") / "rand32.npz", 48, 32)


@pytest.fixture(scope="module")
def npz224(tmp_path_factory) -> str:
    return _random_npz(tmp_path_factory.mktemp("data224") / "rand224.npz", 8, 224)


def _relative(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).abs().max() / ref.abs().max())


# --- the registry ----------------------------------------------------------------------------


def test_catalog_and_builders_are_one_registry():
    assert set(CATALOG) == set(_REGISTRY) == set(list_archs())
    assert set(CIFAR) <= set(list_archs())
    assert all(CATALOG[a].input_size == 32 for a in CIFAR)
    assert all(CATALOG[a].input_size == 224 for a in ("resnet18", "resnet34", "resnet50", "mobilenet_v1"))


def test_upstream_cifar_layout():
    s = state_dict_shapes("c_resnet18", 100)
    assert s["conv1.weight"] == (64, 3, 3, 3) and "bn1.running_var" in s
    assert s["fc.weight"] == (100, 512, 1, 1) and s["fc.bias"] == (100,)
    assert s["layer2.0.shortcut.0.conv.weight"] == (128, 64, 1, 1) and "layer2.0.shortcut.0.mask" in s
    assert not any(k.startswith("layer1.0.shortcut") for k in s)  # identity shortcut: no keys
    assert not any("downsample" in k for k in s)
    s50 = state_dict_shapes("c_resnet50", 10)
    assert s50["layer1.0.shortcut.0.conv.weight"] == (256, 64, 1, 1)  # 64 -> 256 at stride 1
    assert s50["layer4.2.convbn3.conv.weight"] == (2048, 512, 1, 1) and s50["fc.weight"] == (10, 2048, 1, 1)


@pytest.mark.parametrize("arch", CIFAR)
def test_cifar_builds_in_both_forms_at_32(arch):
    models = {form: build_model(arch, 7, form, device="meta") for form in ("maxq", "folded")}
    x = torch.empty(2, 3, 32, 32, device="meta")
    for model in models.values():
        assert model(x).shape == (2, 7)
    assert sum(isinstance(m, MaxQConvBN) for m in models["maxq"].modules()) == SPARSE_LAYERS[arch]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in models["folded"].modules())


def test_input_size_rules():
    assert default_input_size("c_resnet50") == 32 and default_input_size("resnet50") == 224
    for size in (25, 32, 56):
        assert check_input_size("c_resnet18", size) == size
        out = build_model("c_resnet18", 3, "folded", device="meta")(torch.empty(1, 3, size, size, device="meta"))
        assert out.shape == (1, 3)  # the catalog's range is exactly where one prediction per image comes out
    for size in (24, 57, 224):
        with pytest.raises(OptionError, match=r"c_resnet18 cannot run at .*4x4.*25\.\.56"):
            check_input_size("c_resnet18", size)
        if size > 56:
            out = build_model("c_resnet18", 3, "folded", device="meta")(torch.empty(1, 3, size, size, device="meta"))
            assert out.shape != (1, 3)
    with pytest.raises(OptionError, match="resnet18 cannot run at 16x16"):
        check_input_size("resnet18", 16)


# --- fixtures for every CIFAR ResNet: load, infer, fold exactly --------------------------------


@pytest.mark.parametrize("arch", ARCH_PARAMS)
def test_cifar_fold_parity_with_reference(store, reference_net, probe32, arch):
    layer_type = HARD if arch in ("c_resnet101", "c_resnet152") else "SoftMaxQConv2DBNV2Pro"
    spec = store.spec(arch=arch, layer_type=layer_type, layout="bare")  # no 'arch' entry: inferred from keys
    path = store.checkpoint(spec)
    ckpt = load_checkpoint(path)
    assert (ckpt.arch, ckpt.arch_source, ckpt.num_classes, str(ckpt.nm)) == (arch, "keys", 10, "2:4")
    assert len(ckpt.layers) == SPARSE_LAYERS[arch] and not ckpt.unfinished_layers
    result = fold_masks_and_bn(ckpt)
    assert result.input_size == 32
    with torch.no_grad():
        ref = reference_net(path, spec)(probe32)
        out = result.build_model()(probe32)
    assert _relative(out, ref) <= PARITY
    assert all(layer.holds_hardware_pattern for layer in result.sparse_layers)


def test_arch_from_file_entry_and_any_class_count(tmp_path):
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    ckpt = make_checkpoint("c_resnet18", "2:4", HARD, 100)
    ckpt["arch"] = "C-ResNet18"  # spellings normalize
    save_checkpoint(ckpt, tmp_path / "c.pth.tar")
    loaded = load_checkpoint(tmp_path / "c.pth.tar")
    assert (loaded.arch, loaded.arch_source, loaded.num_classes) == ("c_resnet18", "file", 100)


def test_conv_head_of_unknown_layout_lists_the_registry(tmp_path):
    torch.save({"body.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(10, 4, 1, 1), "fc.bias": torch.zeros(10)},
               tmp_path / "x.pth")
    with pytest.raises(UnsupportedArchitectureError) as info:
        load_checkpoint(tmp_path / "x.pth")
    assert all(arch in str(info.value) for arch in list_archs())


# --- every N:M the upstream CIFAR scripts train -----------------------------------------------


def _nm_spec(store, nm: str):
    layer_type = "SoftMaxQConv2DBNV2Pro" if nm in ("2:4", "4:8", "8:16") else HARD
    return store.spec(arch="c_resnet18", nm=nm, layer_type=layer_type)


@pytest.mark.parametrize("nm", [nm if nm in ("2:4", "4:8", "8:16", "1:16") else pytest.param(nm, marks=pytest.mark.slow)
                                for nm in UPSTREAM_NM])
def test_every_upstream_nm_is_inferred_folded_exactly_and_verified(store, reference_net, probe32, nm):
    """Finished incremental schedule (rate 0): N:M from the masks, exact fold, 2:4 verdict as the maths says."""
    from maxq_deploy.verify import verify_artifact

    spec = _nm_spec(store, nm)
    path = store.checkpoint(spec)
    ckpt = load_checkpoint(path)
    assert str(ckpt.nm) == nm and not ckpt.unfinished_layers
    result = fold_masks_and_bn(ckpt)
    with torch.no_grad():
        assert _relative(result.build_model()(probe32), reference_net(path, spec)(probe32)) <= PARITY
    for layer in result.sparse_layers:
        assert check_pattern(result.state_dict[f"{layer.name}.weight"], nm).holds
    report = verify_artifact(path)
    needs_projection = nm in NOT_2_4
    assert NMPattern.parse(nm).implies(NMPattern(2, 4)) is not needs_projection
    assert report.ok is not needs_projection
    advice = [note for note in report.notes if "--project" in note]
    if needs_projection:
        layers, groups, total = ckpt.hardware_pattern_gap()
        assert groups > 0 and layers == len(ckpt.layers)
        assert len(advice) == 1 and f"{groups:,} of {total:,} groups of 4" in advice[0] and "fold" in advice[0]
    else:
        assert not advice


def test_verify_cli_says_4_8_needs_project(cli, store):
    result = cli("verify", store.checkpoint(_nm_spec(store, "4:8")))
    assert result.exit_code == 1
    text = " ".join(result.stdout.split())
    assert "trained 4:8 is not 2:4" in text and "groups of 4 along the input channels break 2:4" in text
    assert "fold" in text and "--project" in text


# --- the road to 2:4: fold --project, PTQ, Q/DQ ONNX ------------------------------------------


def _project_chain(cli, store, tmp_path, nm: str, npz32: str) -> None:
    from maxq_deploy.verify import verify_artifact

    ckpt_path = store.checkpoint(_nm_spec(store, nm))
    ckpt = load_checkpoint(ckpt_path)
    _, breaking, _ = ckpt.hardware_pattern_gap()
    plain = fold_masks_and_bn(ckpt)  # exact fold, for the expected projection
    folded = tmp_path / "projected.pt"
    result = cli("fold", ckpt_path, "-o", folded, "--project", "--data", npz32, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["sparse_layers_holding_2_4"] == summary["sparse_layers"] == len(ckpt.layers)
    assert summary["groups_breaking_2_4"] == 0
    assert summary["groups_changed"] == breaking > 0  # exactly the groups that broke 2:4 were touched
    drift = summary["projection_drift"]
    assert drift["probe_batch"] == [8, 3, 32, 32] and drift["relative_l2_error"] > 0
    assert 0 <= drift["top1_agreement"] <= 1
    acc = summary["projection_accuracy"]
    assert acc["images"] == 48 and 0 <= acc["top1_before"] <= 100 and 0 <= acc["top1_after"] <= 100
    loaded = load_folded(folded)
    assert loaded.meta["input_size"] == 32
    for layer in loaded.layers:
        if layer.role != "sparse":
            continue
        expected = project_to_pattern(plain.state_dict[f"{layer.name}.weight"], "2:4")
        assert torch.equal(loaded.state_dict[f"{layer.name}.weight"], expected), layer.name  # 2 largest of each 4
        assert layer.projected and layer.projected_to == "2:4" and layer.trained_nm == nm
    assert verify_artifact(folded).ok

    int8 = tmp_path / "int8.pt"
    result = cli("quantize", folded, "-o", int8, "--calib", npz32, "--calib-batches", "2", "-b", "16", "-j", "0", "--json")
    assert result.exit_code == 0, result.stderr
    q = json.loads(result.stdout)
    assert q["pattern_ok"] and q["sparse_layers_holding_int8_pattern"] == len(ckpt.layers)
    assert verify_artifact(int8).ok
    onnx_path = tmp_path / "int8.onnx"
    result = cli("export", "onnx", int8, "-o", onnx_path, "--json")  # no --input-size: 32 from the checkpoint
    assert result.exit_code == 0, result.stderr
    exported = json.loads(result.stdout)
    assert exported["input_shape"][2:] == [32, 32] and exported["pattern_ok"]
    report = verify_artifact(onnx_path)
    assert report.ok and len(report.expected) == len(ckpt.layers)


def test_project_4_8_holds_2_4_on_folded_int8_and_onnx(cli, store, tmp_path, npz32):
    _project_chain(cli, store, tmp_path, "4:8", npz32)


@pytest.mark.slow
def test_project_8_16_holds_2_4_on_folded_int8_and_onnx(cli, store, tmp_path, npz32):
    _project_chain(cli, store, tmp_path, "8:16", npz32)


def test_plain_fold_of_4_8_is_exact_and_points_to_project(cli, store, tmp_path):
    result = cli("fold", store.checkpoint(_nm_spec(store, "4:8")), "-o", tmp_path / "f.pt")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "0 of 19 sparse layers hold 2:4" in text and "--project" in text
    result = cli("verify", tmp_path / "f.pt")
    assert result.exit_code == 1 and "--project" in " ".join(result.stdout.split())


def test_fold_data_needs_project(cli, store, tmp_path, npz32):
    result = cli("fold", store.checkpoint(_nm_spec(store, "4:8")), "-o", tmp_path / "f.pt", "--data", npz32)
    assert result.exit_code != 0 and result.stderr.startswith("error:") and "--project" in result.stderr
    assert not (tmp_path / "f.pt").exists()
    result = cli("fold", store.checkpoint(_nm_spec(store, "4:8")), "-o", tmp_path / "f.pt", "--project", "--limit", "5")
    assert result.exit_code == 2 and "apply to --data" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "f.pt").exists()


# --- the default input size through every stage, and the size errors --------------------------


@pytest.fixture(scope="module")
def c18_folded(store) -> str:
    return str(store.folded(_nm_spec(store, "2:4")))


def _one_error_line(result) -> str:
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error:") and "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


def test_folded_and_onnx_record_32(c18_folded, tmp_path):
    import onnx

    from maxq_deploy.export.tensorrt_form import export_onnx

    assert torch.load(c18_folded, weights_only=True)["input_size"] == 32
    result = export_onnx(c18_folded, tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert meta["maxq_deploy.input_size"] == "32" and meta["maxq_deploy.arch"] == "c_resnet18"
    assert result.input_shape[2:] == [32, 32] and result.parity.passed


def test_quantize_records_its_calibration_size_and_export_defaults_to_it(cli, c18_folded, tmp_path):
    rng = np.random.default_rng(1)
    np.save(tmp_path / "c40.npy", rng.standard_normal((32, 3, 40, 40), dtype=np.float32))
    int8 = tmp_path / "int8.pt"
    result = cli("quantize", c18_folded, "-o", int8, "--calib", tmp_path / "c40.npy", "--calib-batches", "2", "-b", "16", "-j", "0")
    assert result.exit_code == 0, result.stderr
    raw = torch.load(int8, weights_only=True)
    assert raw["input_size"] == 40 and raw["calibration"]["input_size"] == 40
    result = cli("export", "onnx", int8, "-o", tmp_path / "q.onnx", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["input_shape"][2:] == [40, 40]


@pytest.mark.parametrize("stage", ["export", "export-ort", "export-ort-32", "eval-option", "eval-data", "bench", "quantize", "fold-data", "demo"])
def test_impossible_size_is_one_line_before_any_work(cli, store, c18_folded, tmp_path, npz32, npz224, stage):
    out = tmp_path / "out"
    args = {
        "export": ["export", "onnx", c18_folded, "-o", tmp_path / "m.onnx", "--input-size", "224"],
        "export-ort": ["export", "onnx", c18_folded, "-o", tmp_path / "m.onnx", "--target", "onnxruntime", "--precision", "int8",
                       "--calib", npz224],
        "export-ort-32": ["export", "onnx", c18_folded, "-o", tmp_path / "m.onnx", "--target", "onnxruntime", "--precision", "int8",
                          "--calib", npz224, "--input-size", "32"],
        "eval-option": ["eval", c18_folded, "--data", npz32, "--image-size", "224"],
        "eval-data": ["eval", c18_folded, "--data", npz224, "-j", "0"],
        "bench": ["bench", c18_folded, "--input-size", "224", "--iters", "1", "--warmup", "0", "--batch-sizes", "1"],
        "quantize": ["quantize", c18_folded, "-o", tmp_path / "q.pt", "--calib", npz224, "-j", "0"],
        "fold-data": ["fold", store.checkpoint(_nm_spec(store, "4:8")), "-o", tmp_path / "f.pt", "--project", "--data", npz224],
        "demo": ["demo", "--checkpoint", store.checkpoint(_nm_spec(store, "2:4")), "--input-size", "224", "--workdir", out],
    }[stage]
    text = _one_error_line(cli(*args))
    if stage == "export-ort-32":  # the graph's input is fixed at the requested 32: the data check names it
        assert "data is 3x224x224 but the model expects 3x32x32" in text
    else:
        assert "c_resnet18 cannot run at 224x224" in text and "25..56" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, no work folder


def test_eval_and_bench_default_to_32(cli, c18_folded, npz32, tmp_path):
    result = cli("eval", c18_folded, "--data", npz32, "-j", "0", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["images"] == 48
    result = cli("bench", c18_folded, "--iters", "2", "--warmup", "1", "--batch-sizes", "1", "--json", tmp_path / "b.json")
    assert result.exit_code == 0, result.stderr
    models = json.loads((tmp_path / "b.json").read_text())["models"]
    assert {m["input_size"] for m in models} == {32}


def test_inspect_and_arch_help_list_the_registry(cli):
    result = cli("inspect", "--list-archs", "--json")
    assert result.exit_code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [a["name"] for a in listed] == list_archs()
    assert {a["name"]: a["input_size"] for a in listed}["c_resnet101"] == 32
    refused = cli("inspect", "--list-archs", "some.pth")  # the registry reads no checkpoint: say so, do not ignore it
    assert refused.exit_code == 2 and "--list-archs" in refused.stderr and refused.stderr.count("\n") == 1
    text = " ".join(cli("fold", "--help").stdout.replace("│", " ").split())
    for arch in list_archs():
        assert arch in text


def test_inspect_shows_input_size_and_projection_advice(cli, store):
    result = cli("inspect", store.checkpoint(_nm_spec(store, "4:8")), "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["arch"] == "c_resnet18" and summary["input_size"] == 32 and summary["nm"] == "4:8"
    assert "--project" in summary["breaks_2_4"]


@pytest.mark.slow
def test_qat_keeps_the_projected_2_4_mask(cli, store, tmp_path, npz32):
    """Sparsity-preserving QAT after --project: the projected zeros stay zeros in the INT8 weights."""
    from maxq_deploy.verify import verify_artifact

    folded = tmp_path / "p.pt"
    assert cli("fold", store.checkpoint(_nm_spec(store, "4:8")), "-o", folded, "--project").exit_code == 0
    int8 = tmp_path / "qat.pt"
    result = cli("quantize", folded, "-o", int8, "--qat", "--train-data", npz32, "--val-data", npz32, "--epochs", "1",
                 "--train-batches", "2", "-b", "16", "--calib-batches", "2", "-j", "0", "--lr", "0.01", "--json", "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    q = json.loads(result.stdout)
    assert q["pattern_ok"] and q["training"]["zeros_reintroduced"] == 0
    assert verify_artifact(int8).ok


@pytest.mark.slow
def test_c_resnet50_100_classes_through_the_cli_without_input_size(cli, tmp_path):
    """Acceptance: fold (exact), verify, PTQ, Q/DQ export, eval and bench, no --input-size anywhere."""
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    save_checkpoint(make_checkpoint("c_resnet50", "2:4", HARD, 100), tmp_path / "c50.pth.tar")
    _random_npz(tmp_path / "d.npz", 32, 32, classes=100)
    steps = [
        ["fold", tmp_path / "c50.pth.tar", "-o", tmp_path / "f.pt"],
        ["verify", tmp_path / "f.pt"],
        ["quantize", tmp_path / "f.pt", "-o", tmp_path / "q.pt", "--calib", tmp_path / "d.npz", "--calib-batches", "2", "-b", "16", "-j", "0"],
        ["export", "onnx", tmp_path / "q.pt", "-o", tmp_path / "q.onnx"],
        ["verify", tmp_path / "q.onnx"],
        ["eval", tmp_path / "q.onnx", tmp_path / "f.pt", "--data", tmp_path / "d.npz", "-j", "0"],
        ["bench", tmp_path / "q.onnx", "--iters", "2", "--warmup", "1", "--batch-sizes", "1"],
    ]
    for args in steps:
        result = cli(*args)
        assert result.exit_code == 0, (args[0], result.stderr, result.stdout[-2000:])
