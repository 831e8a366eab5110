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


def run_model(model, x, output: str | None = None):
    """Run an in-memory ONNX ModelProto on ONNX Runtime (CPU, one thread); its first (or named) output."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x}
    return session.run([output] if output else None, feed)[0]


def tiny_net(seed: int = 0):
    """A three-layer CNN with checkpoint-style names (``stem``, ``block.conv``, ``fc``), in eval mode."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x)) + x

    class TinyNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.block = Block()
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            x = self.block(torch.relu(self.stem(x)))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(seed)
    return TinyNet().eval()
