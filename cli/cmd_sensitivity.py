"""``maxq-deploy sensitivity``: per sparse layer, what 2:4 and INT8 cost in top-1 (:mod:`maxq_deploy.sensitivity`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from maxq_deploy.cli.base import JsonOpt, app
from maxq_deploy.cli.render import console, handle_errors, parse_floats, print_json, table


def _delta(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


@app.command("sensitivity")
@handle_errors
def sensitivity_command(
    model: Path = typer.Argument(..., help="MaxQ checkpoint or folded checkpoint."),
    data: Path = typer.Option(..., "--data", help="Labelled images: ImageFolder tree, flat folder with --labels, .npy/.npz arrays or IDX (*-idx3-ubyte[.gz])."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels for a flat folder, .npy or IDX images (.npy, text or *-idx1-ubyte[.gz])."),
    limit: int = typer.Option(1000, "--limit", help="Images used, spread evenly over the data set (every variant runs on the same ones)."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Images per batch."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize the shorter side to this many pixels (image files and IDX; default: the crop size)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Center crop size (default: the model's input size)."),
    mean: Optional[str] = typer.Option(None, "--mean", help="Normalization mean R,G,B (default ImageNet)."),
    std: Optional[str] = typer.Option(None, "--std", help="Normalization std R,G,B (default ImageNet)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write an SVG plot: top-1 lost per layer against the multiply-adds 2:4 saves in it."),
    json_out: bool = JsonOpt,
) -> None:
    """Per sparse layer: top-1 change when only it is projected to 2:4, INT8, or both; its share of FLOPs and
    parameters; whether TensorRT can run it sparse. Reuses every block's input: at most 2 x layers + 1 evaluations."""
    from maxq_deploy.core.errors import OptionError
    from maxq_deploy.core.progress import RichProgress
    from maxq_deploy.data import IMAGENET_MEAN, IMAGENET_STD, Preprocess
    from maxq_deploy.load.input_size import artifact_input_size
    from maxq_deploy.sensitivity import analyze

    if limit < 1 or batch_size < 1:
        raise OptionError(f"--limit and --batch-size must be >= 1, got {limit} and {batch_size}")
    found = artifact_input_size(model)
    size = found.resolve(image_size, "--image-size")
    preprocess = Preprocess(resize=resize or size, image_size=size, mean=parse_floats(mean, "--mean") or IMAGENET_MEAN,  # type: ignore[arg-type]
                            std=parse_floats(std, "--std") or IMAGENET_STD)  # type: ignore[arg-type]
    result = analyze(model, data, labels, limit=limit, batch_size=batch_size, preprocess=preprocess,
                     progress=RichProgress(enabled=not json_out), plot=plot)
    if json_out:
        return print_json(result.to_dict())
    console.print(f"{escape(result.model)}: {result.arch}, N:M {result.nm}, baseline top-1 {result.baseline_top1:.2f}% "
                  f"on {result.images} images of {escape(result.data)}", highlight=False)
    rows = [(escape(l.name), "x".join(map(str, l.shape)), "yes" if l.holds_2_4 else "no", _delta(l.delta_2_4), _delta(l.delta_int8),
             _delta(l.delta_both), f"{l.flops_share:.1f}", f"{l.params_share:.1f}",
             ("yes" if l.trt_sparse else "no") + (f" ({escape(l.trt_reason)})" if l.trt_reason else ""))
            for l in result.layers]
    console.print(table("Top-1 change (points) when only this layer changes", ["layer", "shape", "2:4 now", "2:4", "int8", "both",
                        "FLOPs %", "params %", "TensorRT sparse"], rows, ["2:4", "int8", "both", "FLOPs %", "params %"]))
    front = result.pareto()
    if len(front) > 1:
        rows = [(str(len(p["kept_dense"])), escape(", ".join(p["kept_dense"]) or "-"), f"{p['estimated_drop']:.2f}",
                 f"{p['flops_saved_share']:.1f}", f"{p['params_saved_share']:.1f}") for p in front]
        console.print(table("Trade-off: keep the costliest layers dense (drop estimated as the sum of single-layer 2:4 costs; "
                            "fold --auto measures it)", ["kept", "layers kept dense", "est. drop", "FLOPs saved %", "params saved %"],
                            rows, ["kept", "est. drop", "FLOPs saved %", "params saved %"]))
    ratio = result.seconds / max(result.baseline_seconds, 1e-9)
    console.print(f"cost: {result.evaluations} variant passes = {result.evaluation_equivalents:.1f} evaluations of the "
                  f"{result.images} images (budget {result.budget}); {result.seconds:.1f} s in all, one plain pass "
                  f"{result.baseline_seconds:.2f} s ({ratio:.0f}x), reading the images {result.data_seconds:.1f} s", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if result.plot:
        console.print(f"plot: {escape(result.plot)}", highlight=False)
