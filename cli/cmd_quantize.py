"""``maxq-deploy quantize``: INT8 PTQ (calibration) or QAT (calibration + mask-preserving fine-tuning)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from maxq_deploy.cli.base import JsonOpt, app
from maxq_deploy.cli.render import console, handle_errors, parse_floats, print_json, table, verdict_style


@app.command("quantize")
@handle_errors
def quantize_command(
    folded: Path = typer.Argument(..., help="Folded checkpoint (from maxq-deploy fold)."),
    output: Path = typer.Option(..., "-o", "--output", help="Quantized checkpoint to write."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration images: ImageFolder tree, flat image folder, .npy/.npz NCHW float32 arrays or IDX *-idx3-ubyte[.gz] (labels not needed; IDX labels are read from the *-labels-idx1-ubyte file beside). QAT: defaults to --train-data."),
    calibrator: Optional[str] = typer.Option(None, "--calibrator", help="Activation ranges: max, entropy, mse or percentile (weights: per-channel max). Default: percentile (pytorch-quantization), max (modelopt)."),
    percentile: float = typer.Option(99.99, "--percentile", help="Percentile of |x| kept by --calibrator percentile."),
    calib_batches: int = typer.Option(16, "--calib-batches", min=1, help="Calibration batches (a seeded shuffle of the data)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Images per batch (calibration and QAT)."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize the shorter side to this many pixels (image files only; default: crop size x 256/224, CIFAR ResNets: the crop size)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Center crop size (image files only; default: the folded checkpoint's input size)."),
    mean: Optional[str] = typer.Option(None, "--mean", help="Normalization mean R,G,B (default ImageNet)."),
    std: Optional[str] = typer.Option(None, "--std", help="Normalization std R,G,B (default ImageNet)."),
    workers: int = typer.Option(2, "--workers", "-j", min=0, help="Image decoding worker processes."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    qat: bool = typer.Option(False, "--qat", help="Quantization-aware training after calibration (keeps every 2:4 zero)."),
    train_data: Optional[Path] = typer.Option(None, "--train-data", help="QAT: labelled training images."),
    val_data: Optional[Path] = typer.Option(None, "--val-data", help="QAT: labelled validation images; the best epoch (by top-1) is kept."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="QAT epochs."),
    lr: float = typer.Option(1e-4, "--lr", help="QAT learning rate (cosine schedule)."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="QAT optimizer: sgd (momentum 0.9) or adamw."),
    train_batches: Optional[int] = typer.Option(None, "--train-batches", min=1, help="QAT: at most this many batches per epoch (per process)."),
    keep_float: Optional[str] = typer.Option(None, "--keep-float", help="Comma-separated conv layers left without quantizers: float in the checkpoint, without Q/DQ in its ONNX graphs (see maxq-deploy sensitivity). Recorded as kept_float; verify reports them as kept float."),
    backend: str = typer.Option("pytorch-quantization", "--backend", help="Quantization backend: pytorch-quantization (default) or modelopt (NVIDIA Model Optimizer, pip install 'maxq-deploy[modelopt]'; PTQ and --qat; --calibrator max, entropy, percentile, and mse on a GPU). Same checkpoint either way."),
    json_out: bool = JsonOpt,
) -> None:
    """INT8-quantize a folded checkpoint keeping 2:4: PTQ with a calibrator, or --qat. Runs under torchrun for distributed QAT."""
    from maxq_deploy.core.distributed import is_main_process
    from maxq_deploy.load.input_size import artifact_input_size
    from maxq_deploy.core.progress import RichProgress
    from maxq_deploy.quantize import QuantizeConfig, quantize

    main_rank = is_main_process()
    found = artifact_input_size(folded)
    image_size = found.resolve(image_size, "--image-size")
    preprocess = found.preprocess(image_size, resize, parse_floats(mean, "--mean"), parse_floats(std, "--std"))
    if calibrator is None:
        calibrator = "max" if backend.strip().lower() == "modelopt" else "percentile"
    config = QuantizeConfig(
        qat=qat, calib_data=calib, calibrator=calibrator, percentile=percentile, calib_batches=calib_batches,
        batch_size=batch_size, preprocess=preprocess, workers=workers, device=device, train_data=train_data,
        val_data=val_data, epochs=epochs, lr=lr, optimizer=optimizer, train_batches=train_batches,
        keep_float=keep_float or (), backend=backend,
    )
    result = quantize(folded, output, config, progress=RichProgress(enabled=not json_out and main_rank))
    if not main_rank:
        return  # torchrun: rank 0 reports
    if json_out:
        return print_json(result.summary())
    _render(result)


def _render(result) -> None:
    c = result.calibration
    method = c.method + (f" {c.percentile:g}" if c.percentile is not None else "")
    console.print(
        f"{result.mode.upper()} {result.arch} ({result.nm}) with {escape(result.backend)}: {method} calibration on "
        f"{c.images} images in {c.batches} batches ({c.collect_seconds + c.ranges_seconds:.1f} s) -> "
        f"[bold]{escape(str(result.output))}[/]",
        highlight=False,
    )
    if c.max_calibrated_inputs:
        console.print(f"network input calibrated by max: {', '.join(c.max_calibrated_inputs)}", highlight=False)
    by_name = {q.name: q for q in result.quantizers}

    def amax(name: str) -> str | None:
        q = by_name.get(name)
        if q is None:
            return None
        return f"{q.amax_max:.4g}" if q.channels == 1 else f"{q.amax_min:.3g}..{q.amax_max:.3g} ({q.channels})"

    rows = [
        (layer.name, layer.role, "x".join(map(str, layer.shape)), amax(f"{layer.name}._input_quantizer"),
         amax(f"{layer.name}._weight_quantizer"), f"{layer.violating_groups}/{layer.groups}",
         layer.holds if layer.role == "sparse" or layer.holds else "-")
        for layer in result.layers
    ]
    for name in sorted({q.name.rpartition("._")[0] for q in result.quantizers if q.role != "residual"} - {l.name for l in result.layers}):
        rows.append((name, "dense", "linear", amax(f"{name}._input_quantizer"), amax(f"{name}._weight_quantizer"), "-", "-"))
    console.print(table(
        "INT8 layers: ranges (amax) and the 2:4 pattern on the INT8 weights",
        ["layer", "role", "shape", "input amax", "weight amax (channels)", "violating groups", f"holds {result.pattern}"],
        rows, ["violating groups"],
    ))
    residual = [(q.name.removesuffix(".residual_quantizer"), f"{q.amax_max:.4g}") for q in result.quantizers if q.role == "residual"]
    if residual:
        console.print(table("Residual-branch quantizers (Conv+Add fuses in INT8)", ["block", "amax"], residual, ["amax"]))
    if result.training is not None:
        t = result.training
        hist = [(e.epoch, f"{e.lr:.3g}" if e.epoch else "-", e.loss, e.train_top1, e.val_top1, e.seconds) for e in t.history]
        console.print(table(f"QAT ({t.optimizer}, {t.world_size} process(es), {t.steps} steps)",
                            ["epoch", "lr", "loss", "train top-1 %", "val top-1 %", "s"], hist,
                            ["epoch", "loss", "train top-1 %", "val top-1 %", "s"]))
        kept = f"kept epoch {t.best_epoch}" + (" (the calibrated start)" if t.best_epoch == 0 else "") + f" by {t.selected_by}"
        console.print(f"{kept}; {t.fixed_zeros:,} 2:4 zeros held by fixed masks in {t.masked_layers} layers, {t.zeros_reintroduced} revived", highlight=False)
    if result.kept_float:
        console.print(f"kept float on purpose (--keep-float, no quantizers): {escape(', '.join(result.kept_float))}", highlight=False)
    if result.kept_dense:
        console.print(f"kept dense on purpose (fold --keep-dense, not expected to hold {result.pattern}): "
                      f"{escape(', '.join(result.kept_dense))}", highlight=False)
    for note in result.notes:
        console.print(f"note: {escape(note)}", highlight=False)
    sparse = result.sparse_layers
    violating = sum(layer.violating_groups for layer in sparse)
    console.print(verdict_style(
        result.pattern_ok,
        f"{result.holding_layers} of {len(sparse)} sparse layers hold {result.pattern} on their INT8 weights "
        f"({violating} violating groups)",
    ), highlight=False)
