"""``maxq-deploy demo``: the whole pipeline on a built-in example (or your checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from maxq_deploy.cli.base import app
from maxq_deploy.cli.render import console, handle_errors, print_json, table, verdict_style


@app.command()
@handle_errors
def demo(
    workdir: Path = typer.Option(Path("maxq-demo"), "--workdir", help="Folder for every artifact of the run."),
    example: str = typer.Option("digits", "--example", help="Built-in example trained when no --checkpoint is given: digits (fastest, no download), fashion (Fashion-MNIST 2:4, all 10,000 test images), fashion-4of8 (trained 4:8, folded with --project to 2:4)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Your MaxQ checkpoint instead of a built-in example."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration data for your checkpoint (image folder or .npy/.npz)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval-data", help="Labelled data to measure accuracy at every stage."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels for --eval-data given as .npy."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Input resolution for your checkpoint (default: its architecture's, 32 for the CIFAR ResNets, 224 for the others)."),
    epochs: int = typer.Option(3, "--epochs", help="Training epochs of the built-in example."),
    train_images: Optional[int] = typer.Option(None, "--train-images", help="Fashion-MNIST examples: training images, spread over the 60,000 (default 12,000: a few minutes on 2 cores)."),
    dataset_root: Optional[Path] = typer.Option(None, "--dataset-root", help="Fashion-MNIST examples: folder of the IDX .gz files (default /usr/share/datasets/fashion-mnist)."),
    eval_images: Optional[int] = typer.Option(None, "--eval-images", help="Evaluate every stage on this many images spread over the test data (default: all; the Fashion-MNIST examples have 10,000)."),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
) -> None:
    """Run inspect, fold, verify, PTQ, ONNX export (fp32, int8), verify, eval and bench in one go."""
    from maxq_deploy.demo import run_demo
    from maxq_deploy.core.progress import RichProgress

    result = run_demo(workdir, checkpoint=checkpoint, calib=calib, eval_data=eval_data, eval_labels=labels,
                      input_size=input_size, epochs=epochs, progress=RichProgress(enabled=not json_out),
                      example=example, train_images=train_images, dataset_root=dataset_root, eval_images=eval_images)
    if json_out:
        print_json(result.summary())
    else:
        console.print(table("Pipeline", ["stage", "artifact", "ok", "result", "s"],
                            [(s.stage, Path(s.artifact).name if s.artifact else None, s.ok, s.detail, f"{s.seconds:.1f}") for s in result.steps],
                            ["s"]))
        if result.accuracy:
            console.print(table("Accuracy at every stage", ["stage", "file", "backend", "top-1 %", "top-5 %", "images"],
                                [(a.stage, a.model, a.backend, f"{a.top1:.2f}", None if a.top5 is None else f"{a.top5:.2f}", a.images)
                                 for a in result.accuracy], ["top-1 %", "top-5 %", "images"]))
        if result.bench:
            rows = [(r["model"], r["batch"], f"{r['mean_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['throughput_ips']:.1f}",
                     f"{r['speedup_vs_first']:.2f}x" if r["speedup_vs_first"] else "-") for r in result.bench["results"]]
            console.print(table("ONNX Runtime on this CPU (interleaved, same inputs)", ["model", "batch", "mean ms", "p90 ms", "img/s", "vs first"],
                                rows, ["batch", "mean ms", "p90 ms", "img/s", "vs first"]))
        console.print("On a GPU machine with TensorRT, build the sparse engines with maxq-deploy export trt, or:")
        for line in result.trtexec:
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        console.print(verdict_style(result.ok, "every stage passed" if result.ok else "some stages failed"), f"artifacts in {result.workdir}")
    raise typer.Exit(0 if result.ok else 1)
