"""The output guard, temp names and stale-temp cleanup of maxq_deploy.core.files (in-process, fast)."""

from __future__ import annotations

import os
import subprocess
import sys

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
            assert tmp.name.startswith(f".maxq-deploy-{os.getpid()}.") and tmp.name.endswith("-o.pt.tmp")
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


def _held_lock(path) -> subprocess.Popen:
    """Another process (as if in another container: its pid means nothing here) holding the lock on ``path``."""
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX); "
            "print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_stale_temps_are_those_whose_lock_is_free(tmp_path):
    from maxq_deploy.core.files import _host, _pid_namespace

    host, ns = _host(), _pid_namespace()
    dead = 2**22 + 12345  # above the usual pid_max: in this namespace no such process, yet maybe alive elsewhere
    stale_file = tmp_path / f".maxq-deploy-{dead}.{ns}.{host}-0-f.pt.tmp"
    stale_file.write_bytes(b"x")
    stale_dir = tmp_path / f".maxq-deploy-{dead}.{ns}.{host}-1-o.onnx.tmp.d"
    stale_dir.mkdir()
    (stale_dir / "fp32.onnx").write_bytes(b"x")
    other_container = tmp_path / f".maxq-deploy-{dead}.{ns + 1}.{host}-2-live.pt.tmp"  # its pid looks dead here
    other_container.write_bytes(b"in use")
    other_dir = tmp_path / f".maxq-deploy-{dead}.{ns + 1}.{host}-3-live.onnx.tmp.d"
    other_dir.mkdir()
    other_host = tmp_path / f".maxq-deploy-{dead}.{ns}.elsewhere_{host}-4-nfs.pt.tmp"  # never judged from here
    other_host.write_bytes(b"maybe in use")
    mine = tmp_path / f".maxq-deploy-{os.getpid()}.{ns}.{host}-0-mine.pt.tmp"
    mine.write_bytes(b"in use")
    old_style = tmp_path / f".maxq-deploy-{dead}-0-old.pt.tmp"  # an older version's name: cannot be judged, kept
    old_style.write_bytes(b"x")
    victim = tmp_path / "precious.pt"
    victim.write_bytes(b"keep")
    link = tmp_path / f".maxq-deploy-{dead}.{ns}.{host}-5-evil.tmp"
    link.symlink_to(victim)  # named like ours but a link: never followed, never removed
    other = tmp_path / "user.tmp"
    other.write_bytes(b"not ours")
    holders = [_held_lock(other_container), _held_lock(other_dir)]
    try:
        removed = remove_stale_temps(tmp_path)
    finally:
        for proc in holders:
            proc.kill()
            proc.wait()
    assert sorted(p.name for p in removed) == sorted([stale_file.name, stale_dir.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in [other_container, other_dir, other_host, mine, old_style, victim, link, other])
    assert victim.read_bytes() == b"keep"
    # the owners are gone now (their locks went with them): the next sweep removes their temps
    assert sorted(p.name for p in remove_stale_temps(tmp_path)) == sorted([other_container.name, other_dir.name])


def test_a_live_temp_is_locked_by_its_owner(tmp_path):
    """While a write is under way its temp file is locked (another sweep keeps it); renamed into place, the lock goes."""
    import fcntl

    with atomic_output(tmp_path / "o.pt") as tmp:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        tmp.write_bytes(b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["o.pt"]


def test_rename_failure_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from maxq_deploy.core import files as artifacts
    def refuse(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(artifacts.os, "replace", refuse)
    with pytest.raises(OutputPathError, match="cannot move the finished output into place"):
        with artifacts.atomic_output(tmp_path / "o.pt") as tmp:
            tmp.write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("folder", [True, False])
def test_a_signal_right_after_creating_a_temp_leaves_no_init_behind(tmp_path, monkeypatch, folder):
    """Ctrl-C/SIGTERM landing between creating ``<temp>.init`` and opening it (seen in CI: a scratch
    folder's ``.init`` was left after SIGTERM) removes it like any other failure."""
    import os as os_module

    from maxq_deploy.core import files

    real_open = os_module.open

    def interrupted_open(path, flags, *args, **kwargs):
        if str(path).endswith(".init") and (folder or os_module.path.exists(path)):
            raise KeyboardInterrupt
        fd = real_open(path, flags, *args, **kwargs)
        if str(path).endswith(".init"):  # a file: created, then the signal lands before the lock
            os_module.close(fd)
            raise KeyboardInterrupt
        return fd

    monkeypatch.setattr(files.os, "open", interrupted_open)
    with pytest.raises(KeyboardInterrupt):
        files._claim_temp(tmp_path / "m.onnx", folder=folder)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def _raised(make) -> BaseException:
    try:
        make()
    except BaseException as exc:  # noqa: BLE001 - the exception itself is what is examined
        return exc
    raise AssertionError("nothing raised")


def _wrapped(inner: BaseException, keep_cause: bool):
    def make():
        try:
            raise inner
        except BaseException as exc:  # noqa: BLE001 - a library wrapping an interrupt in its own error
            if keep_cause:
                raise RuntimeError("export failed") from exc
            raise RuntimeError("export failed") from None  # the cause hidden; still its __context__

    return make


def test_interrupting_signal_finds_an_interrupt_however_it_was_wrapped(monkeypatch):
    import signal

    from maxq_deploy.core import files

    monkeypatch.setattr(files, "_received", None)
    assert files.interrupting_signal(ValueError("x")) is None
    assert files.interrupting_signal(KeyboardInterrupt()) == signal.SIGINT
    assert files.interrupting_signal(files.Terminated(signal.SIGHUP)) == signal.SIGHUP
    for keep_cause in (True, False):
        assert files.interrupting_signal(_raised(_wrapped(files.Terminated(signal.SIGTERM), keep_cause))) == signal.SIGTERM
        assert files.interrupting_signal(_raised(_wrapped(KeyboardInterrupt(), keep_cause))) == signal.SIGINT
        assert files.interrupting_signal(_raised(_wrapped(ValueError("x"), keep_cause))) is None
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a  # a cycle ends the walk
    assert files.interrupting_signal(a) is None
    monkeypatch.setattr(files, "_received", signal.SIGTERM)  # a SIGTERM being handled: the error that follows is it
    assert files.interrupting_signal(ValueError("the interrupt dropped")) == signal.SIGTERM


_WRAPPING_COMMAND = """
import os, signal, sys, time
import typer
from maxq_deploy.cli.render import handle_errors
from maxq_deploy.core.files import install_signal_handlers

install_signal_handlers()

@handle_errors
def command():
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    except BaseException:  # noqa: BLE001 - as a library that turns every failure into its own error
        if sys.argv[1] == "drop":
            pass
        else:
            raise RuntimeError("Failed to export the model with torch.export") from None
    raise RuntimeError("Failed to export the model with torch.export")

try:
    command()
except typer.Exit as done:  # what the Typer app does with it
    sys.exit(done.exit_code)
"""


@pytest.mark.parametrize("how", ["wrap", "drop"])
def test_sigterm_that_a_library_turns_into_its_own_error_still_ends_as_sigterm(how):
    """torch.onnx.export (dynamo) hit by SIGTERM ended in 'internal error TorchExportError', exit 70: the signal was
    inside its error. Wrapped or dropped, the run ends as an interrupt: one line, exit 128 + 15."""
    import signal

    done = subprocess.run([sys.executable, "-c", _WRAPPING_COMMAND, how], capture_output=True, text=True, timeout=120)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert done.stderr.strip() == "error: interrupted by SIGTERM; unfinished outputs were removed"
