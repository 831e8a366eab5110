"""The output guard, temp names and stale-temp cleanup of maxq_deploy.core.files (in-process, fast)."""

from __future__ import annotations

import os

import pytest

from maxq_deploy.core.files import (
    JSON_SUFFIXES,
    TORCH_SUFFIXES,
    Output,
    atomic_output,
    guard_bench_outputs,
    guard_outputs,
    remove_stale_temps,
    temp_folder,
    temp_path_for,
)
from maxq_deploy.core.errors import OutputPathError


def test_guard_refuses_input_by_path_symlink_and_hardlink(tmp_path):
    src = tmp_path / "in.pth"
    src.write_bytes(b"weights")
    (tmp_path / "sym.pth").symlink_to(src)
    os.link(src, tmp_path / "hard.pth")
    for out in (src, tmp_path / "sym.pth", tmp_path / "hard.pth", tmp_path / "sub" / ".." / "in.pth"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputPathError, match="refusing to overwrite an input"):
            guard_outputs([Output(out, TORCH_SUFFIXES)], [src])
    assert src.read_bytes() == b"weights"


def test_guard_refuses_two_outputs_on_one_file_and_wrong_suffixes(tmp_path):
    with pytest.raises(OutputPathError, match="are the same file"):
        guard_outputs([tmp_path / "a.json", tmp_path / "." / "a.json"])
    with pytest.raises(OutputPathError, match=r"would hold JSON but its name ends in \.csv"):
        guard_outputs([Output(tmp_path / "a.csv", JSON_SUFFIXES)])
    with pytest.raises(OutputPathError, match="would hold a PNG image"):
        guard_bench_outputs(tmp_path / "r.json", tmp_path / "r.json", [])  # --plot onto the JSON: refused
    assert guard_outputs([Output(tmp_path / "m.PTH", TORCH_SUFFIXES), None]) == [tmp_path / "m.PTH"]


def test_guard_refuses_read_only_and_special_files(tmp_path):
    ro = tmp_path / "ro.pt"
    ro.write_bytes(b"keep")
    ro.chmod(0o444)
    with pytest.raises(OutputPathError, match="read-only"):
        guard_outputs([ro])
    os.mkfifo(tmp_path / "p.pt")
    with pytest.raises(OutputPathError, match="not a regular file"):
        guard_outputs([tmp_path / "p.pt"])
    with pytest.raises(OutputPathError, match="not a regular file"):
        guard_outputs(["/dev/null"])


def test_guard_protects_the_data_inside_an_input_folder(tmp_path):
    from maxq_deploy.core.files import _DATA_SUFFIXES
    from maxq_deploy.data import ARRAY_SUFFIXES, IMAGE_SUFFIXES

    assert set(_DATA_SUFFIXES) == set(IMAGE_SUFFIXES + ARRAY_SUFFIXES)  # the two lists stay in step
    data = tmp_path / "data"
    (data / "cls").mkdir(parents=True)
    (data / "cls" / "img.png").write_bytes(b"png")
    for out in (data / "cls" / "img.png", data / "cls" / "plot.png"):  # replaced or added, both change the data set
        with pytest.raises(OutputPathError, match="a data file inside the input folder"):
            guard_outputs([out], [data])
    (data / "q.pt").write_bytes(b"old")
    assert guard_outputs([data / "q.pt", data / "r.json"], [data]) == [data / "q.pt", data / "r.json"]  # not data: fine


def test_guard_checks_names_only_for_commands_run_elsewhere(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    missing_folder = tmp_path / "elsewhere" / "m.engine"
    assert guard_outputs([missing_folder], [onnx], check_writable=False) == [missing_folder]
    with pytest.raises(OutputPathError):
        guard_outputs([onnx], [onnx], check_writable=False)


def test_atomic_output_names_its_temp_and_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "o.pt"
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            assert tmp.name.startswith(f".maxq-deploy-{os.getpid()}-") and tmp.name.endswith("-o.pt.tmp")
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(out) as tmp:
        tmp.write_bytes(b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["o.pt"] and out.read_bytes() == b"whole"
    with temp_folder(out) as scratch:
        (scratch / "big.onnx").write_bytes(b"x")
        assert scratch.parent == tmp_path and scratch.name.endswith(".tmp.d")
    assert [p.name for p in tmp_path.iterdir()] == ["o.pt"]


def test_long_output_names_get_short_temp_names(tmp_path):
    name = "x" * 250 + ".pth"
    assert len(temp_path_for(tmp_path / name).name.encode()) < 255


def test_stale_temps_of_dead_processes_are_removed_others_kept(tmp_path):
    dead = 2**22 + 12345  # above the usual pid_max of 4194304: no such process
    stale_file = tmp_path / f".maxq-deploy-{dead}-0-f.pt.tmp"
    stale_file.write_bytes(b"x")
    stale_dir = tmp_path / f".maxq-deploy-{dead}-1-o.onnx.tmp.d"
    stale_dir.mkdir()
    (stale_dir / "fp32.onnx").write_bytes(b"x")
    mine = tmp_path / f".maxq-deploy-{os.getpid()}-0-mine.pt.tmp"
    mine.write_bytes(b"in use")
    victim = tmp_path / "precious.pt"
    victim.write_bytes(b"keep")
    link = tmp_path / f".maxq-deploy-{dead}-2-evil.tmp"
    link.symlink_to(victim)  # named like ours but a link: never followed, never removed
    other = tmp_path / "user.tmp"
    other.write_bytes(b"not ours")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stale_file.name, stale_dir.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, victim.name, link.name, other.name])
    assert victim.read_bytes() == b"keep"
