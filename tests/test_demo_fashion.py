"""``maxq-deploy demo --example fashion``: a MaxQ 2:4 network trained on real Fashion-MNIST, end to end.

The end-to-end test trains on a small budget (``--train-images``, ``--epochs``) and evaluates on
images spread over the 10,000 test images (``--eval-images``) so it stays within a few minutes on
2 CPU cores; the README records the default run on all 10,000. It skips, with the one line the
demo prints, where the data set is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maxq_deploy.core.errors import DataError
from maxq_deploy.data.idx import fashion_mnist_files

MAX_INT8_DROP = 0.5  # top-1 points an INT8 stage may lose against the folded fp32 network
EVAL_IMAGES = 2000


def _missing_fashion() -> str | None:
    try:
        fashion_mnist_files()
    except DataError as exc:
        return str(exc)
    return None


MISSING = _missing_fashion()


def _demo(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="160")
    return subprocess.run([sys.executable, "-m", "maxq_deploy", "demo", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
def test_fashion_demo_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "work"
    run = _demo(["--example", "fashion", "--workdir", str(work), "--train-images", "3000", "--epochs", "2",
                 "--eval-images", str(EVAL_IMAGES), "--json"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    summary = json.loads(run.stdout)
    assert summary["ok"], [s for s in summary["steps"] if not s["ok"]]
    steps = {step["stage"]: step for step in summary["steps"]}
    assert "on 3000 Fashion-MNIST images" in steps["train (reference layers)"]["detail"]
    for stage in ("verify folded", "verify int8 checkpoint", "verify onnx fp32", "verify onnx int8 Q/DQ (TensorRT)",
                  "verify onnx int8 (ONNX Runtime)"):
        assert steps[stage]["detail"].startswith("PASS: all 19 sparse layers hold 2:4"), (stage, steps[stage]["detail"])
    assert "INT8 weights hold 2:4 in 19/19 layers" in steps["quantize (PTQ int8)"]["detail"]

    rows = {row["stage"]: row for row in summary["accuracy"]}
    assert all(row["images"] == EVAL_IMAGES for row in rows.values()), rows
    top1 = {stage: row["top1"] for stage, row in rows.items()}
    fp32 = top1["folded"]
    assert fp32 >= 60.0, top1  # a network that learned (67% measured on this budget), not chance (10%)
    assert top1["MaxQ checkpoint"] == fp32  # folding is exact
    onnx_forms = ["fp32", "int8 Q/DQ (TensorRT)", "int8 (ONNX Runtime)"]
    runtimes = [""] + ([" on openvino"] if importlib.util.find_spec("openvino") else [])
    expected = {"MaxQ checkpoint", "folded", "int8 fake-quant"} | {f"ONNX {form}{rt}" for form in onnx_forms for rt in runtimes}
    assert set(top1) == expected
    for rt in runtimes:
        assert abs(top1[f"ONNX fp32{rt}"] - fp32) <= 0.1, top1  # the same network, another runtime
    for stage in ["int8 fake-quant"] + [f"ONNX {form}{rt}" for form in onnx_forms[1:] for rt in runtimes]:
        assert top1[stage] >= fp32 - MAX_INT8_DROP, (stage, top1)
    hidden = sorted(p.name for p in work.iterdir() if p.name.startswith("."))
    assert hidden == [], hidden  # no lock or temp file left in the user's folder


def test_fashion_demo_without_the_data_set_is_one_line(tmp_path: Path) -> None:
    work = tmp_path / "work"
    run = _demo(["--example", "fashion", "--workdir", str(work), "--dataset-root", str(tmp_path / "nowhere")], tmp_path)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), run.stderr
    assert "apt-get install dataset-fashion-mnist" in lines[0] and "--dataset-root" in lines[0]
    assert not work.exists()  # nothing made


@pytest.mark.parametrize("args, words", [
    (["--example", "shoes"], "built-in examples: digits, fashion, fashion-4of8"),
    pytest.param(["--example", "fashion", "--train-images", "5"], "--train-images must be a whole number from 128 to 60000",
                 marks=pytest.mark.skipif(MISSING is not None, reason=MISSING or "")),
    (["--train-images", "1000"], "apply to the Fashion-MNIST examples"),
    (["--eval-images", "0"], "--eval-images must be a whole number >= 1"),
])
def test_demo_example_options_refused_in_one_line(tmp_path: Path, args: list[str], words: str) -> None:
    work = tmp_path / "work"
    run = _demo(["--workdir", str(work), *args], tmp_path)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], run.stderr
    assert not work.exists()
