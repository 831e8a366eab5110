"""``maxq-deploy eval``: top-1/top-5 of one or more models on a labelled data set."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from maxq_deploy.cli.base import JsonOpt, app
from maxq_deploy.cli.render import console, handle_errors, parse_floats, print_json, table


@app.command("eval")
@handle_errors
def eval_command(
    models: List[Path] = typer.Argument(..., metavar="MODEL", help="Model(s): MaxQ/folded/quantized checkpoint, ONNX model or TensorRT engine. Several are evaluated on the same data and shown side by side."),
    data: Path = typer.Option(..., "--data", help="ImageFolder tree (class sub-folders), flat image folder with --labels, .npy/.npz preprocessed NCHW float32 arrays, or IDX images (*-idx3-ubyte[.gz], grey as RGB; labels: --labels *-idx1-ubyte[.gz] or the file beside it)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels for a flat folder or .npy images: .npy array or one integer per line."),
    backend: Optional[str] = typer.Option(None, "--backend", help="torch, onnxruntime, openvino[:f32|bf16|default] (OpenVINO inference precision) or tensorrt, or a comma-separated list to compare runtimes on the same images (default: from the file suffix)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cpu; cuda for TensorRT)."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Images per batch."),
    workers: int = typer.Option(2, "--workers", "-j", min=0, help="Image decoding worker processes (0: decode in this process)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch / ONNX Runtime (default: theirs)."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize the shorter side to this many pixels (image files only; default: crop size x 256/224, CIFAR ResNets: the crop size)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Center crop size (image files only; default: the first model's input size, 32 for the CIFAR ResNets, 224 for the others)."),
    mean: Optional[str] = typer.Option(None, "--mean", help="Normalization mean R,G,B (default ImageNet 0.485,0.456,0.406)."),
    std: Optional[str] = typer.Option(None, "--std", help="Normalization std R,G,B (default ImageNet 0.229,0.224,0.225)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate only N images, spread evenly over the data set."),
    json_out: bool = JsonOpt,
) -> None:
    """Top-1 / top-5 accuracy on a labelled data set. With several MODELs, a side-by-side table (same images)."""
    from maxq_deploy.data import open_dataset
    from maxq_deploy.core.distributed import is_main_process
    from maxq_deploy.evaluate import evaluate_models
    from maxq_deploy.load.input_size import artifact_input_size
    from maxq_deploy.core.progress import RichProgress

    found = artifact_input_size(models[0])
    image_size = found.resolve(image_size, "--image-size")
    preprocess = found.preprocess(image_size, resize, parse_floats(mean, "--mean"), parse_floats(std, "--std"))
    dataset = open_dataset(data, labels, preprocess, require_labels=True)
    progress = RichProgress(enabled=not json_out)
    results = evaluate_models(models, dataset, backends=backend, batch_size=batch_size, workers=workers, device=device,
                              limit=limit, progress=progress, threads=threads)
    if not is_main_process():
        return  # torchrun: every rank holds the same totals; rank 0 prints them
    if json_out:
        return print_json(results[0].summary() if len(results) == 1 else [r.summary() for r in results])

    first = results[0]
    console.print(f"data: {escape(dataset.describe())}", highlight=False)
    columns = ["model", "kind", "backend", "precision", "images", "top-1 %", "top-5 %", "img/s"]
    if len(results) > 1:
        columns.append(f"agrees with {escape(Path(first.model).name)} %")
    rows = []
    for r in results:
        row = [escape(Path(r.model).name), r.model_kind, f"{r.backend} ({r.device})", _precision(r.precision, r.options), r.images,
               f"{r.top1:.2f}", None if r.top5 is None else f"{r.top5:.2f}", f"{r.images_per_second:.1f}"]
        if len(results) > 1:
            agreement = r.agreement(first)
            row.append(None if agreement is None else f"{agreement:.2f}")
        rows.append(row)
    console.print(table("Accuracy", columns, rows, [c for c in columns if c not in ("model", "kind", "backend", "precision")]))
    for warning in dict.fromkeys(r.warning for r in results if r.warning):
        console.print(f"[yellow]{escape(warning)}[/]", highlight=False)
    for r in results:
        if r.non_finite:
            console.print(f"[yellow]{escape(Path(r.model).name)} ({r.backend}): {r.non_finite} of {r.images} images gave NaN or Inf "
                          "outputs, counted as wrong answers[/]", highlight=False)
    skipped = max(r.skipped_corrupt for r in results)
    if skipped:
        example = f", e.g. {escape(first.skipped_files[0])}" if first.skipped_files else ""
        console.print(f"[yellow]skipped {skipped} unreadable image(s)[/]{example}", highlight=False)


def _precision(precision: str | None, options: dict) -> str:
    """The model's precision, and the runtime's own inference precision where it sets one."""
    inside = options.get("inference_precision")
    text = precision or "-"
    return f"{text} ({inside} inside)" if inside and inside != precision else text
