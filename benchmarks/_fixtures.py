"""The reference models every benchmark starts from, made once per work folder.

A reference model is a MaxQ checkpoint written by :mod:`maxq_deploy.reference` (random weights,
the upstream layout), folded; its fp32 ONNX export is made from that. Scripts call these instead
of building and folding their own copies, so every benchmark measures the same artifacts.
"""

from __future__ import annotations

from pathlib import Path


def reference_checkpoint(arch: str, work: Path, num_classes: int = 1000, nm: str = "2:4", seed: int = 0,
                         name: str | None = None) -> Path:
    """The MaxQ checkpoint ``<work>/<name or arch>.pth.tar`` (made when absent)."""
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / f"{name or arch}.pth.tar"
    if not ckpt.exists():
        save_checkpoint(make_checkpoint(arch, nm, num_classes=num_classes, seed=seed), ckpt)
    return ckpt


def reference_folded(arch: str, work: Path, num_classes: int = 1000, nm: str = "2:4", seed: int = 0,
                     checkpoint: Path | None = None, name: str | None = None) -> Path:
    """``<work>/<name or arch>.folded.pt``: ``checkpoint`` (default: the reference one) folded, made when absent."""
    from maxq_deploy.fold import fold_checkpoint

    work.mkdir(parents=True, exist_ok=True)
    folded = work / f"{name or arch}.folded.pt"
    if not folded.exists():
        fold_checkpoint(checkpoint or reference_checkpoint(arch, work, num_classes, nm, seed, name), folded)
    return folded


def reference_onnx(arch: str, work: Path, input_size: int, num_classes: int = 1000, seed: int = 0) -> Path:
    """The reference folded model exported to fp32 ONNX at ``input_size`` (made when absent)."""
    from maxq_deploy.export.tensorrt_form import export_onnx

    onnx_path = work / f"{arch}_fp32_{input_size}.onnx"
    if not onnx_path.exists():
        export_onnx(reference_folded(arch, work, num_classes, seed=seed), onnx_path, input_size=input_size)
    return onnx_path


def digits_fp32(work: Path):
    """The trained digits example (:func:`maxq_deploy.reference.train.prepare_digits_example`), folded to
    ``<work>/digits.folded.pt`` and exported to ``<work>/digits_fp32.onnx`` (each made when absent)."""
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.reference.train import prepare_digits_example

    example = prepare_digits_example(work)
    folded = reference_folded(example.arch, work, checkpoint=example.checkpoint, name="digits")
    fp32 = work / "digits_fp32.onnx"
    if not fp32.exists():
        export_onnx(folded, fp32, input_size=example.image_size)
    return example, folded, fp32


def add_timing_options(parser, *, batch_sizes: str, iters: int, warmup: int, what: str) -> None:
    """The options of a CPU timing script over a reference model: which model, threads, batches, iterations,
    and ``--block`` (iterations per ``what`` per turn, so load from other processes hits every row alike)."""
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default=batch_sizes)
    parser.add_argument("--iters", type=int, default=iters)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--block", type=int, default=2, help=f"iterations per {what} per turn")
