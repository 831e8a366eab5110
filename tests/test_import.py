"""Importing the package and starting the CLI stay light: no TensorRT, no CUDA, no torch for --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _probe(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_import_pulls_in_neither_torch_nor_tensorrt():
    found = _probe(
        "import json, sys\n"
        "import maxq_deploy, maxq_deploy.cli.app\n"
        "heavy = ('torch', 'tensorrt', 'onnx', 'onnxruntime', 'pytorch_quantization')\n"
        "print(json.dumps({m: m in sys.modules for m in heavy}))\n"
    )
    assert found == {"torch": False, "tensorrt": False, "onnx": False, "onnxruntime": False, "pytorch_quantization": False}


def test_library_import_does_not_touch_cuda_or_tensorrt():
    found = _probe(
        "import json, sys\n"
        "import maxq_deploy, maxq_deploy.cli.app, maxq_deploy.load.maxq_checkpoint, maxq_deploy.fold, maxq_deploy.verify\n"
        "import maxq_deploy.archs, maxq_deploy.reference, maxq_deploy.core.sparsity, maxq_deploy.load.torch_model\n"
        "import torch\n"
        "print(json.dumps({'tensorrt': 'tensorrt' in sys.modules, 'cuda_initialized': torch.cuda.is_initialized()}))\n"
    )
    assert found == {"tensorrt": False, "cuda_initialized": False}


def test_fold_and_verify_do_not_touch_cuda(store, tmp_path):
    source = store.checkpoint(arch="mobilenet_v1")
    found = _probe(
        "import json, sys, torch\n"
        "from maxq_deploy.fold import fold_checkpoint\n"
        "from maxq_deploy.verify import verify_artifact\n"
        f"fold_checkpoint({str(source)!r}, {str(tmp_path / 'f.pt')!r})\n"
        f"ok = verify_artifact({str(tmp_path / 'f.pt')!r}).ok\n"
        "print(json.dumps({'ok': ok, 'tensorrt': 'tensorrt' in sys.modules, 'cuda_initialized': torch.cuda.is_initialized()}))\n"
    )
    assert found == {"ok": True, "tensorrt": False, "cuda_initialized": False}


@pytest.mark.parametrize("args", [["--help"], ["fold", "--help"], ["verify", "--help"], ["inspect", "--help"]])
def test_help_runs_without_torch(args):
    found = _probe(
        "import json, sys, contextlib, io\n"
        f"sys.argv = ['maxq-deploy', *{args!r}]\n"
        "from maxq_deploy.cli.app import main\n"
        "out = io.StringIO()\n"
        "code = 0\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as exc:\n"
        "        code = exc.code or 0\n"
        "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, 'usage': 'Usage' in out.getvalue()}))\n"
    )
    assert found == {"code": 0, "torch": False, "usage": True}


def test_console_script_help(cli_subprocess):
    result = cli_subprocess("--help")
    assert result.exit_code == 0, result.stderr
    assert all(cmd in result.stdout for cmd in ("inspect", "fold", "verify"))
    assert "Traceback" not in result.stderr
