"""The TensorRT stage package: importing it never imports TensorRT (nor initialises CUDA)."""

from __future__ import annotations

import subprocess
import sys


# --------------------------------------------------------------------------------------------- import hygiene


def test_importing_the_package_never_imports_tensorrt() -> None:
    code = (
        "import sys; import maxq_deploy.tensorrt, maxq_deploy.tensorrt.verify, maxq_deploy.cli.cmd_trt; "
        "import maxq_deploy.tensorrt.build, maxq_deploy.runtimes.tensorrt_runner; "
        "assert 'tensorrt' not in sys.modules, 'tensorrt imported'; "
        "import torch; assert not torch.cuda.is_initialized(), 'CUDA initialised'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
