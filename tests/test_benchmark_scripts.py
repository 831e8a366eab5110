"""Benchmark scripts parse their options, and the quantize-backends comparison measures what it says."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", ["quantize_backends.py", "quantize_backends_resnet50.py"])
def test_help_parses(script):
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--out" in proc.stdout and "--workdir" in proc.stdout


@pytest.fixture
def resnet50_script(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # its helpers (_fixtures, quantize_backends) sit beside it
    spec = importlib.util.spec_from_file_location("quantize_backends_resnet50", BENCHMARKS / "quantize_backends_resnet50.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_logit_agreement_is_relative_to_the_logit_range(resnet50_script):
    reference = np.array([[0.0, 10.0, 2.0], [4.0, 1.0, 0.0]])
    got = reference + np.array([[0.0, -1.0, 0.0], [0.0, 5.0, 0.0]])  # the second row's top-1 moves
    found = resnet50_script.logit_agreement(reference, got)
    assert found == {"top1_agreement": 50.0, "max_diff_over_range": 0.5, "mean_diff_over_range": 0.1}
    same = resnet50_script.logit_agreement(reference, reference.astype(np.float32))
    assert same == {"top1_agreement": 100.0, "max_diff_over_range": 0.0, "mean_diff_over_range": 0.0}
