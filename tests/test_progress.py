"""Progress bars: drawn on a terminal, erased when the run fails there, never written off a terminal.

A failed run must leave one ``error:`` line, not a half-drawn bar above it. The terminal cases run
the real CLI on a pseudo-terminal (stderr is a pty) and replay what it wrote on a tiny terminal
model (carriage return, erase line, cursor up), so the test sees the screen a user would see.
"""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BAR = "\u2501"
_ESC = re.compile(r"\x1b\[(\??[0-9;]*)([A-Za-z])")


def _screen(raw: str) -> list[str]:
    """The lines left on a terminal after ``raw`` (enough of VT100 for rich's live display)."""
    lines, row, col = [""], 0, 0
    i = 0
    while i < len(raw):
        m = _ESC.match(raw, i)
        if m:
            arg, op = m.groups()
            if op == "K":  # erase line (rich uses 2: the whole line)
                lines[row] = ""
                col = 0 if arg == "2" else col
            elif op == "A":  # cursor up
                row = max(0, row - int(arg or 1))
            i = m.end()
            continue
        ch = raw[i]
        if ch == "\n":
            row, col = row + 1, 0
            if row == len(lines):
                lines.append("")
        elif ch == "\r":
            col = 0
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + ch + line[col + 1:]
            col += 1
        i += 1
    return [line.rstrip() for line in lines if line.strip()]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), COLUMNS="120")
    env.pop("NO_COLOR", None)
    return env


def _run_with_stderr_on_a_pty(argv: list[str]) -> tuple[int, str]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=slave, env=_env())
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:  # the pty buffer is small: read while the process draws
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the process closed its side
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    code = proc.wait(timeout=300)
    reader.join(timeout=30)
    os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    import onnx
    from onnx import TensorProto, helper

    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    d = tmp_path_factory.mktemp("progress")
    save_checkpoint(make_checkpoint("mobilenet_v1", num_classes=10), d / "mb.pth")
    fold_checkpoint(d / "mb.pth", d / "folded.pt")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, d / "identity.onnx")  # runs, but is not a classifier: eval fails after the first batch
    rng = np.random.default_rng(0)
    np.savez(d / "data.npz", images=rng.standard_normal((64, 3, 32, 32)).astype(np.float32), labels=rng.integers(0, 10, 64))
    (d / "corrupt" / "c").mkdir(parents=True)
    (d / "corrupt" / "c" / "x.png").write_bytes(b"\x89PNG not really" * 20)
    return d


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "maxq_deploy", *map(str, args)]


def test_a_successful_eval_on_a_terminal_keeps_its_finished_bar(models):
    code, raw = _run_with_stderr_on_a_pty(_cli("eval", models / "folded.pt", "--data", models / "data.npz"))
    assert code == 0, raw
    bars = [line for line in _screen(raw) if BAR in line]
    assert len(bars) == 1 and "2/2" in bars[0], _screen(raw)


def test_a_failing_eval_on_a_terminal_erases_its_bar_and_leaves_one_error_line(models):
    code, raw = _run_with_stderr_on_a_pty(_cli("eval", models / "identity.onnx", "--data", models / "data.npz"))
    assert code == 2, raw
    assert BAR in raw  # the bar was drawn while the run went on ...
    screen = _screen(raw)
    assert len(screen) == 1 and screen[0].startswith("error:") and "not a classifier" in screen[0], screen  # ... and erased


@pytest.mark.parametrize("data", ["data.npz", "corrupt"])
def test_off_a_terminal_stderr_holds_no_bar(models, data):
    """A log gets results and errors, not bars: a run that fails after its loop finished (every image
    unreadable) shows the error line alone, and a successful run writes nothing on stderr."""
    model = "identity.onnx" if data == "data.npz" else "folded.pt"
    done = subprocess.run(_cli("eval", models / model, "--data", models / data, "--workers", "0"),
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()] and done.stderr.startswith("error:"), done.stderr
    ok = subprocess.run(_cli("eval", models / "folded.pt", "--data", models / "data.npz"),
                        capture_output=True, text=True, env=_env(), timeout=300)
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
