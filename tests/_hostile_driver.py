"""Runs many hostile CLI cases in ONE process (torch is imported once) and records, per case,
everything the properties need: exit code, stdout, stderr, input hashes and folder listings
before and after. ``python tests/_hostile_driver.py CASES.json RESULTS.json``.

Each case calls the real entry point ``maxq_deploy.cli.app.main(argv)`` (the console script's),
with stdout/stderr captured; an exception escaping it is recorded as a traceback (a failure).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
import traceback


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def listing(folder: str) -> list[str]:
    """Every name under ``folder`` (links not followed), hidden ones included."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = os.path.relpath(dirpath, folder)
        found += [os.path.normpath(os.path.join(rel, n)) for n in dirnames + filenames]
    return sorted(found)


def hashes(paths: list[str]) -> dict[str, str]:
    out = {}
    for p in paths:
        if os.path.isfile(p) and not os.path.islink(p):
            from stat import S_ISREG

            if S_ISREG(os.stat(p).st_mode):
                out[p] = sha256(p)
    return out


def run_case(case: dict) -> dict:
    from maxq_deploy.cli.app import main

    watch = case["watch"]
    before = {"hashes": hashes(case["inputs"]), "listing": {w: listing(w) for w in watch}}
    out, err = io.StringIO(), io.StringIO()
    code: int | None = None
    cwd = os.getcwd()
    os.chdir(case["cwd"])
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(case["argv"])
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - recorded: the test fails on it
        err.write(traceback.format_exc())
        code = -1
    finally:
        os.chdir(cwd)
    after = {"hashes": hashes(case["inputs"]), "listing": {w: listing(w) for w in watch}}
    return {"name": case["name"], "code": code, "stdout": out.getvalue(), "stderr": err.getvalue(),
            "before": before, "after": after}


def main() -> None:
    cases_path, results_path = sys.argv[1], sys.argv[2]
    with open(cases_path) as f:
        cases = json.load(f)
    os.environ.setdefault("NO_COLOR", "1")
    results = []
    for case in cases:
        results.append(run_case(case))
        with open(results_path, "w") as f:  # written after each case: a crash still leaves the others
            json.dump({"tempdir": tempfile.gettempdir(), "results": results}, f)


if __name__ == "__main__":
    main()
