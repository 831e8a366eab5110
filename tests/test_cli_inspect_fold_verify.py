"""The foundation commands (inspect, fold, verify) end to end, and bad input through the CLI.

Every bad input must end with a non-zero exit, one line on stderr starting with "error:", no
traceback, no output file and no temp file in the output folder, and the input file unchanged.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from maxq_deploy.archs import list_archs
from maxq_deploy.reference import make_checkpoint, save_checkpoint

SUPPORTED = ", ".join(list_archs())


# --- happy paths ----------------------------------------------------------------------------------

def test_inspect_json_fields(cli, store):
    result = cli("inspect", store.checkpoint(arch="resnet18"), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["arch"], data["num_classes"], data["epoch"], data["nm"]) == ("resnet18", 10, 120, "2:4")
    assert data["sparse_layers"] == 19 and data["unfinished_layers"] == 0
    assert len(data["layers"]) == 19
    first = data["layers"][0]
    assert first["name"] == "layer1.0.convbn1" and first["shape"] == [64, 64, 3, 3]
    assert (first["trained_nm"], first["dense_groups"], first["groups"], first["mask_kind"]) == ("2:4", 0, 64 * 64 * 9 // 4, "soft")
    assert data["kept_sparse_params"] * 2 == data["sparse_params"]


def test_inspect_table_and_options(cli, store):
    result = cli("inspect", store.checkpoint(arch="mobilenet_v1", layout="bare", prefix="_orig_mod."), "--arch", "mobilenet-v1", "--nm", "2:4")
    assert result.exit_code == 0, result.stderr
    assert "mobilenet_v1 (from option), 10 classes" in result.stdout
    assert "2:4 (from option)" in result.stdout and "features.12.3" in result.stdout


def test_inspect_mid_training(cli, store, mid_spec):
    data = json.loads(cli("inspect", store.checkpoint(mid_spec), "--json").stdout)
    assert data["unfinished_layers"] == 19
    assert all(layer["dense_groups"] == math.floor(mid_spec.rate * layer["groups"]) for layer in data["layers"])


def test_fold_then_verify(cli, store, tmp_path, file_hash):
    source = store.checkpoint(arch="resnet18")
    before = file_hash(source)
    out = tmp_path / "r18.folded.pt"
    result = cli("fold", source, "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "19 sparse layers, 1 dense conv+BN pairs" in result.stdout
    assert "19 of 19 sparse layers hold 2:4" in result.stdout
    assert os.listdir(tmp_path) == [out.name]
    assert file_hash(source) == before
    verified = cli("verify", out)
    assert verified.exit_code == 0, verified.stdout
    assert "PASS: all 19 sparse layers hold 2:4" in verified.stdout
    data = json.loads(cli("verify", out, "--json").stdout)
    assert data["kind"] == "folded-checkpoint" and data["ok"] is True


def test_fold_json_with_agreeing_nm(cli, store, tmp_path):
    result = cli("fold", store.checkpoint(arch="mobilenet_v1"), "-o", tmp_path / "mb.pt", "--nm", "2:4", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["arch"], data["nm"], data["sparse_layers"], data["sparse_layers_holding_2_4"]) == ("mobilenet_v1", "2:4", 13, 13)
    assert data["output"] == str(tmp_path / "mb.pt") and data["projection_drift"] is None
    assert data["provenance"]["source_sha256"] == store.load(arch="mobilenet_v1").sha256


@pytest.mark.parametrize("nm", ["2:4", "1:4", "2:8", "1:16"])
def test_verify_exit_0_for_every_nm(cli, store, nm):
    for path, kind in ((store.checkpoint(nm=nm), "maxq-checkpoint"), (store.folded(nm=nm), "folded-checkpoint")):
        result = cli("verify", path, "--json")
        assert result.exit_code == 0, result.stdout
        data = json.loads(result.stdout)
        assert (data["kind"], data["pattern"], data["trained_nm"], data["ok"]) == (kind, "2:4", nm, True)
        sparse = [layer for layer in data["layers"] if layer["expected_sparse"]]
        assert len(sparse) == data["sparse_layers"] == 19
        assert all(layer["holds"] and layer["trained_nm"] == nm for layer in sparse)


def test_verify_table_shows_both_patterns(cli, store):
    result = cli("verify", store.folded(nm="1:16"))
    assert result.exit_code == 0
    assert "trained N:M" in result.stdout and "holds 2:4" in result.stdout and "1:16" in result.stdout


def test_mid_training_fold_refused_then_projected(cli, store, mid_spec, tmp_path, file_hash):
    source = store.checkpoint(mid_spec)
    before = file_hash(source)
    out = tmp_path / "out.pt"
    refused = cli("fold", source, "-o", out)
    assert refused.exit_code == 1
    line = _one_error_line(refused)
    assert "incremental sparsity is unfinished in 19 of 19 sparse layers" in line
    groups = 64 * 64 * 9 // 4
    assert f"layer1.0.convbn1 ({math.floor(mid_spec.rate * groups)}/{groups} groups dense)" in line
    assert os.listdir(tmp_path) == []

    verify_ckpt = cli("verify", source, "--json")
    assert verify_ckpt.exit_code == 1
    assert json.loads(verify_ckpt.stdout)["ok"] is False

    projected = cli("fold", source, "-o", out, "--project", "--json")
    assert projected.exit_code == 0, projected.stderr
    data = json.loads(projected.stdout)
    drift = data["projection_drift"]
    assert all(math.isfinite(drift[k]) for k in ("max_abs_error", "relative_l2_error", "top1_agreement"))
    assert drift["max_abs_error"] > 0 and data["projected_layers"] == 19 and data["sparse_layers_holding_2_4"] == 19
    text = cli("fold", source, "-o", tmp_path / "again.pt", "--project")
    assert re.search(r"projected 19 layers to 2:4: output drift .* max abs [0-9.e+-]+, relative L2 [0-9.e+-]+", text.stdout)
    assert cli("verify", out).exit_code == 0
    assert file_hash(source) == before


def test_verify_exit_1_on_edited_folded_file(cli, store, tmp_path):
    raw = torch.load(store.folded(arch="mobilenet_v1"), weights_only=True)
    raw["state_dict"]["features.5.3.weight"][0, :4] = 1.0  # one group of 4 fully dense
    torch.save(raw, tmp_path / "edited.pt")
    result = cli("verify", tmp_path / "edited.pt", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    failing = [layer for layer in data["layers"] if layer["expected_sparse"] and not layer["holds"]]
    assert [(layer["name"], layer["violating_groups"]) for layer in failing] == [("features.5.3", 1)]
    assert cli("verify", tmp_path / "edited.pt").stdout.strip().endswith("FAIL: 1 of 13 sparse layers break 2:4")


def test_version_and_help(cli):
    from maxq_deploy import __version__

    assert cli("--version").stdout.strip() == f"maxq-deploy {__version__}"
    result = cli("--help")
    assert result.exit_code == 0 and all(cmd in result.stdout for cmd in ("inspect", "fold", "verify"))


def test_paths_with_brackets_are_printed_literally(cli, store, tmp_path):
    folder = tmp_path / "run[best]"
    folder.mkdir()
    target = folder / "ckpt[1].pth"
    target.write_bytes(store.checkpoint(arch="mobilenet_v1").read_bytes())
    result = cli("inspect", target)
    assert result.exit_code == 0 and str(target) in result.stdout
    assert cli("fold", target, "-o", folder / "out[2].pt").exit_code == 0
    assert str(folder / "out[2].pt") in cli("verify", folder / "out[2].pt").stdout
    missing = cli("inspect", tmp_path / "a[/]b[bold].pth")
    assert _one_error_line(missing) == f"error: checkpoint not found: {tmp_path / 'a[/]b[bold].pth'}"


# --- bad input ---------------------------------------------------------------------------------------

def _one_error_line(result) -> str:
    assert result.exception is None, repr(result.exception)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


class _WritesMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@dataclass
class BadInput:
    path: Path
    message: str  # regex the error line must match
    args: list[str] = field(default_factory=list)
    commands: tuple[str, ...] = ("inspect", "verify", "fold")
    exit_code: int = 2
    marker: Path | None = None


def _good(store) -> bytes:
    return store.checkpoint(arch="mobilenet_v1").read_bytes()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _saved(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def _shape_mismatch(path: Path) -> Path:
    ckpt = make_checkpoint("mobilenet_v1")
    ckpt["state_dict"]["features.3.3.mask"] = torch.ones(256, 128, 3, 3)
    save_checkpoint(ckpt, path)
    return path


def _vgg(path: Path) -> Path:
    ckpt = make_checkpoint("mobilenet_v1")
    ckpt["arch"] = "vgg16"
    save_checkpoint(ckpt, path)
    return path


def _plain_pickle(path: Path, obj: object) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


BAD_INPUTS = {
    "missing": lambda d, s: BadInput(d / "missing.pth", r"(checkpoint|file) not found: .*missing\.pth$"),
    "folder": lambda d, s: BadInput(d, r"is a folder, expected a file"),
    "empty": lambda d, s: BadInput(_write(d / "empty.pth", b""), r"checkpoint is empty"),
    "text": lambda d, s: BadInput(_write(d / "notes.pth", b"epoch 120, top-1 71.5\n"), r"(cannot be read as|is not) a PyTorch checkpoint"),
    "truncated": lambda d, s: BadInput(_write(d / "half.pth", _good(s)[: len(_good(s)) // 2]), r"truncated or corrupt"),
    "pickled-list": lambda d, s: BadInput(_saved(d / "list.pth", [1, 2, 3]), r"holds a list, not a checkpoint dict"),
    "plain-pickle": lambda d, s: BadInput(_plain_pickle(d / "list.pkl", [1, 2, 3]), r"refused to load|cannot be read|is not a PyTorch checkpoint"),
    "code-pickle": lambda d, s: BadInput(
        _saved(d / "evil.pth", {"state_dict": {"fc.weight": torch.zeros(2, 2)}, "x": _WritesMarker(d / "MARKER")}),
        r"refused to load .*could run code", marker=d / "MARKER"),
    "code-plain-pickle": lambda d, s: BadInput(
        _plain_pickle(d / "evil.pkl", {"x": _WritesMarker(d / "MARKER")}), r"refused to load", marker=d / "MARKER"),
    "arch-vgg16": lambda d, s: BadInput(_vgg(d / "vgg.pth"), rf"unsupported architecture 'vgg16'; supported: {SUPPORTED}"),
    "bare-unknown-keys": lambda d, s: BadInput(
        _saved(d / "unk.pth", {"backbone.0.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(10, 4)}),
        rf"keys match no supported architecture \({SUPPORTED}\)"),
    "bare-no-classifier": lambda d, s: BadInput(
        _saved(d / "nofc.pth", {"backbone.0.weight": torch.zeros(4, 3, 3, 3)}), rf"no classifier 'fc.weight'; supported architectures: {SUPPORTED}"),
    "mask-weight-shapes": lambda d, s: BadInput(_shape_mismatch(d / "shapes.pth"), r"mask and weight have different shapes at 'features\.3\.3\.mask'"),
    "nm-disagrees": lambda d, s: BadInput(_write(d / "mb.pth", _good(s)), r"--nm 1:4 disagrees with the masks: layer features\.0\.3", ["--nm", "1:4"]),
    "nm-not-dividing": lambda d, s: BadInput(_write(d / "mb.pth", _good(s)), r"32 input channels are not divisible by M=64", ["--nm", "2:64"]),
    "nm-malformed": lambda d, s: BadInput(_write(d / "mb.pth", _good(s)), r"N:M must look like 2:4, got '2/4'", ["--nm", "2/4"]),
    "arch-option-unknown": lambda d, s: BadInput(_write(d / "mb.pth", _good(s)), r"unsupported architecture 'vgg16'", ["--arch", "vgg16"]),
    "arch-option-wrong": lambda d, s: BadInput(_write(d / "mb.pth", _good(s)), r"is --arch right\?", ["--arch", "resnet18"]),
    "folded-as-training": lambda d, s: BadInput(
        _write(d / "f.pt", s.folded(arch="mobilenet_v1").read_bytes()), r"maxq-deploy/folded artifact", commands=("inspect", "fold")),
}


def _bad_input_case(case: str, store, tmp_path: Path, file_hash) -> tuple[BadInput, Path, str | None]:
    """The case's bad input under ``tmp_path/in``, an empty ``tmp_path/out`` for outputs, the input's hash (None: not a file)."""
    inputs, out_dir = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out_dir.mkdir()
    bad = BAD_INPUTS[case](inputs, store)
    return bad, out_dir, file_hash(bad.path) if bad.path.is_file() else None


def _assert_refused(result, bad: BadInput, out_dir: Path, before: str | None, file_hash, command: str) -> None:
    """The case's exit code and one error line, nothing on stdout or in ``out_dir``, no pickled code ran, the input unchanged."""
    assert result.exit_code == bad.exit_code, (command, result.stdout, result.stderr)
    line = _one_error_line(result)
    assert re.search(bad.message, line), (command, line)
    assert result.stdout == ""
    assert os.listdir(out_dir) == [], command
    if bad.marker is not None:
        assert not bad.marker.exists(), "the pickle's code ran"
    if before is not None:
        assert file_hash(bad.path) == before


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(cli, store, tmp_path, file_hash, case):
    bad, out_dir, before = _bad_input_case(case, store, tmp_path, file_hash)
    for command in bad.commands:
        extra = ["-o", out_dir / "folded.pt"] if command == "fold" else []
        result = cli(command, bad.path, *bad.args, *extra)
        _assert_refused(result, bad, out_dir, before, file_hash, command)


def test_unreadable_file(cli, store, tmp_path):
    path = tmp_path / "secret.pth"
    path.write_bytes(store.checkpoint(arch="mobilenet_v1").read_bytes())
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions do not stop reading")
        line = _one_error_line(cli("inspect", path))
        assert "is not readable" in line
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("where, message", [
    ("missing-folder", r"output folder does not exist: .*missing \(create it first\)"),
    ("folder", r"output path is a folder, expected a file"),
])
def test_bad_output_path(cli, store, tmp_path, file_hash, where, message):
    source = store.checkpoint(arch="mobilenet_v1")
    before = file_hash(source)
    out = tmp_path / "missing" / "out.pt" if where == "missing-folder" else tmp_path
    result = cli("fold", source, "-o", out)
    assert result.exit_code == 2
    assert re.search(message, _one_error_line(result))
    assert os.listdir(tmp_path) == []
    assert file_hash(source) == before


# --- the real program, as a child process -----------------------------------------------------------

@pytest.mark.parametrize("case", ["missing", "truncated", "code-pickle", "bare-unknown-keys"])
def test_bad_input_real_process(cli_subprocess, store, tmp_path, file_hash, case):
    bad, out_dir, before = _bad_input_case(case, store, tmp_path, file_hash)
    result = cli_subprocess("fold", bad.path, "-o", out_dir / "folded.pt", *bad.args)
    _assert_refused(result, bad, out_dir, before, file_hash, "fold")


def test_real_process_mid_training_and_missing_output_folder(cli_subprocess, store, mid_spec, tmp_path):
    refused = cli_subprocess("fold", store.checkpoint(mid_spec), "-o", tmp_path / "out.pt")
    assert refused.exit_code == 1
    assert "groups dense" in _one_error_line(refused)
    missing = cli_subprocess("fold", store.checkpoint(arch="mobilenet_v1"), "-o", tmp_path / "nope" / "out.pt")
    assert missing.exit_code == 2
    assert "output folder does not exist" in _one_error_line(missing)
    assert os.listdir(tmp_path) == []
