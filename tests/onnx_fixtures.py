"""ONNX graphs of reference MaxQ networks, for the TensorRT tests (a test helper, not a fixture file).

A reference 2:4 checkpoint (:func:`maxq_deploy.reference.make_checkpoint`) is folded and
exported by the project's exporter (:func:`maxq_deploy.export.tensorrt_form.export_onnx`).
"""

from __future__ import annotations

import os
from pathlib import Path


def reference_onnx(
    workdir: str | os.PathLike[str], arch: str = "resnet18", precision: str = "fp32", input_size: int = 64,
    num_classes: int = 10, seed: int = 0,
) -> tuple[Path, Path]:
    """(ONNX path, folded checkpoint path) of a reference ``arch`` 2:4 network with a dynamic batch."""
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, folded = work / f"{arch}_2of4.pth.tar", work / f"{arch}_2of4.folded.pt"
    if not folded.exists():
        save_checkpoint(make_checkpoint(arch, "2:4", num_classes=num_classes, seed=seed), ckpt)
        fold_checkpoint(ckpt, folded)
    onnx_path = work / f"{arch}_2of4_{precision}_{input_size}.onnx"
    if onnx_path.exists():
        return onnx_path, folded
    from maxq_deploy.export.tensorrt_form import export_onnx

    export_onnx(folded, onnx_path, precision=precision, input_size=input_size)
    return onnx_path, folded
