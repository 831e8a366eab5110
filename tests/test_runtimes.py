"""Runners (torch, ONNX Runtime) and the choice of runtime for a model file."""

from __future__ import annotations

import subprocess
import sys


def test_importing_runtimes_loads_neither_onnxruntime_nor_tensorrt() -> None:
    code = (
        "import sys, maxq_deploy.runtimes, maxq_deploy.evaluate, maxq_deploy.data; "
        "print(sorted(m for m in ('onnxruntime', 'tensorrt') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
