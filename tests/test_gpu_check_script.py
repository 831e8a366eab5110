"""benchmarks/gpu_check.sh on a machine without a CUDA GPU: one error line, exit 2, a log under $OUT.

The script itself is meant for a lent GPU machine; this only checks its CPU-side behaviour
(syntax, fail-fast, where the log goes), so a broken script is caught before a GPU is spent on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_gpu_check_script_parses() -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    proc = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_gpu_check_fails_fast_without_cuda(tmp_path: Path) -> None:
    import torch

    if shutil.which("bash") is None or shutil.which("tee") is None:
        pytest.skip("no bash/tee")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: run the script itself")
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no CUDA GPU visible to torch" in errors[0]
    assert "error: no CUDA GPU" in (tmp_path / "out" / "gpu_check.log").read_text()


def test_torch_sparse_benchmark_fails_fast_without_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_torch_sparse.py")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: no CUDA GPU") and "Traceback" not in proc.stderr


def test_gpu_check_installs_offline_before_the_cuda_check() -> None:
    text = SCRIPT.read_text()
    install = text.index('pip install --quiet --no-build-isolation --no-deps --no-index -e .')
    assert install < text.index("torch.cuda.is_available()")


def test_gpu_check_refuses_a_setuptools_too_old_to_install_offline(tmp_path: Path) -> None:
    """Outside an installed checkout, with setuptools 60: one line naming it, exit 2, no pip run."""
    if shutil.which("bash") is None or shutil.which("tee") is None:
        pytest.skip("no bash/tee")
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "benchmarks" / SCRIPT.name)
    fake = tmp_path / "fake"
    (fake / "setuptools").mkdir(parents=True)
    (fake / "setuptools" / "__init__.py").write_text("__version__ = '60.0.0'\n")
    env = dict(os.environ, OUT=str(tmp_path / "out"), PYTHON=sys.executable, PYTHONPATH=str(fake))
    proc = subprocess.run(["bash", str(repo / "benchmarks" / SCRIPT.name)], capture_output=True, text=True, env=env,
                          timeout=120)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stdout + proc.stderr
    assert "setuptools 60.0.0 < 64" in errors[0] and not (tmp_path / "out" / "pip_install.log").exists()
