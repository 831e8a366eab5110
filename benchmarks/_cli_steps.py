"""Run ``maxq-deploy`` steps as child processes and keep what each printed with ``--json``; save a run's report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run_step(args: list[str | Path], *, json_out: bool = True, check: bool = True) -> dict:
    """One CLI call: its command line, exit code, wall seconds and parsed ``--json`` output."""
    cmd = [sys.executable, "-m", "maxq_deploy", *map(str, args)] + (["--json"] if json_out else [])
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200")
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = round(time.perf_counter() - started, 2)
    shown = "maxq-deploy " + " ".join(map(str, args))
    print(f"$ {shown}  -> exit {proc.returncode} in {seconds} s", flush=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"step failed: {shown}\n{proc.stderr[-3000:]}")
    data = None
    if json_out and proc.stdout.strip():
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            data = None
    return {"command": shown, "exit_code": proc.returncode, "seconds": seconds, "json": data,
            "stderr_tail": proc.stderr.strip().splitlines()[-1:] if proc.returncode else []}


def print_and_save(report: dict, out: Path | None) -> None:
    """Print the run's report as JSON, and write it to ``out`` too when given (its folder made)."""
    print(json.dumps(report, indent=2))
    if out:
        write_report(report, out, announce=False)


def write_report(report: dict, out: Path, *, indent: int = 2, announce: bool = True) -> None:
    """Write ``report`` as JSON to ``out`` (its folder made; what JSON cannot hold as text), and say so."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=indent, default=str) + "\n")
    if announce:
        print(f"wrote {out}")
