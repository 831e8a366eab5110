"""The README's main job (``maxq-deploy demo``) and the walkthroughs in examples/, end to end on the CPU.

They share one trained digits example (the file-locked cache of ``prepare_digits_example``),
so the MaxQ network is trained once; the scripts run in order in one folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(argv: list[str], cwd: Path, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    # the example scripts call `python` and `maxq-deploy`: the ones of the interpreter running the tests
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    full_env = dict(os.environ, COLUMNS="160", PATH=path, **(env or {}))
    return subprocess.run(argv, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def test_demo_and_examples_end_to_end(tmp_path: Path) -> None:
    work = tmp_path / "work"
    demo = _run([sys.executable, "-m", "maxq_deploy", "demo", "--workdir", str(work), "--json"], tmp_path)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "Traceback" not in demo.stderr
    summary = json.loads(demo.stdout)
    assert summary["ok"] and all(step["ok"] for step in summary["steps"])
    stages = {step["stage"] for step in summary["steps"]}
    assert {"inspect", "fold", "verify folded", "quantize (PTQ int8)", "export onnx fp32", "export onnx int8 Q/DQ",
            "export onnx int8 (ORT target)", "verify onnx int8 Q/DQ (TensorRT)", "bench onnxruntime (CPU)"} <= stages
    assert all(step["detail"].startswith("PASS") for step in summary["steps"] if step["stage"].startswith("verify"))

    top1 = {row["stage"]: row["top1"] for row in summary["accuracy"]}
    assert top1["MaxQ checkpoint"] >= 90.0  # a real network on real held-out digits
    assert top1["folded"] == top1["MaxQ checkpoint"] == top1["ONNX fp32"]  # folding and export change nothing
    for stage in ("int8 fake-quant", "ONNX int8 Q/DQ (TensorRT)", "ONNX int8 (ONNX Runtime)"):
        assert top1[stage] >= top1["folded"] - 1.0, (stage, top1)

    bench = json.loads((work / "bench.json").read_text())
    assert {(r["model_index"], r["batch"]) for r in bench["results"]} == {(m, b) for m in range(3) for b in (1, 8)}
    assert all(r["throughput_ips"] > 0 for r in bench["results"])
    assert (work / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("--sparsity=enable" in line for line in summary["trtexec"])
    hidden = sorted(p.name for p in work.iterdir() if p.name.startswith("."))
    assert hidden == [], hidden  # no lock file (.digits.lock) or temp file left in the user's folder

    env = {"WORK": str(work)}
    cpu = _run(["bash", str(REPO / "examples" / "cpu_onnxruntime.sh")], tmp_path, env)
    assert cpu.returncode == 0, cpu.stderr[-3000:]
    assert "PASS: all 19 sparse layers hold 2:4" in (work / "verify_int8.txt").read_text()
    assert json.loads((work / "bench.json").read_text())["models"][1]["path"].endswith("int8_ort.onnx")

    trt = _run(["bash", str(REPO / "examples" / "resnet50_int8_sparse_trt.sh")], tmp_path, env)
    assert trt.returncode == 0, trt.stderr[-3000:]
    assert json.loads((work / "verify_onnx.json").read_text())["ok"]
    assert "--sparsity=enable" in trt.stdout  # no TensorRT here: the script prints the build command

    qat = _run(["bash", str(REPO / "examples" / "qat_torchrun.sh")], tmp_path, env | {"EPOCHS": "1"})
    assert qat.returncode == 0, qat.stderr[-3000:]
    assert "PASS: all 19 sparse layers hold 2:4" in qat.stdout
