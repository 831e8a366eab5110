"""``maxq-deploy bench``: parse options, call :func:`maxq_deploy.bench.benchmark`, render the A/B table."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from maxq_deploy.cli.base import app
from maxq_deploy.cli.render import console, handle_errors, table


@app.command("bench")
@handle_errors
def bench_command(
    models: List[Path] = typer.Argument(..., help="ONNX files, TensorRT engines or folded/quantized checkpoints; the first is the baseline."),
    backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime, openvino[:f32|bf16|default], tensorrt or torch, or a comma-separated list (e.g. onnxruntime,openvino): every model on each, in one interleaved run (default: from each file's suffix)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    batch_sizes: str = typer.Option("1,8,32", "--batch-sizes", help="Comma-separated batch sizes."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed runs per model and batch size."),
    iters: Optional[int] = typer.Option(None, "--iters", help="Timed runs per model and batch size (default 30)."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Measured seconds per model and batch size (instead of --iters)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU intra-op threads (default: the runtime's own)."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Input size for checkpoints (default: the size each records, 32 for the CIFAR ResNets, 224 for the others); ONNX files use their own."),
    sparse: bool = typer.Option(False, "--sparse", help="torch on CUDA: fp16 dense vs fp16 with 2:4 layers as semi-structured sparse matmuls."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write the results as CSV here (one row per model and batch size)."),
    plot_path: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG bar chart of throughput per batch size."),
) -> None:
    """Latency and throughput of one or more models, measured interleaved, as an A/B table against the first.

    On CPU the torch backend measures each checkpoint in NCHW and channels-last.
    """
    from maxq_deploy.bench import benchmark, environment_line
    from maxq_deploy.core.progress import RichProgress

    result = benchmark(
        models, backend=backend, device=device, batch_sizes=batch_sizes, warmup=warmup, iters=iters, seconds=seconds,
        threads=threads, input_size=input_size, sparse=sparse, json_path=json_path, plot_path=plot_path,
        csv_path=csv_path, progress=RichProgress(),
    )
    rows = []
    for m in result.measurements:
        model = result.models[m.model_index]
        s = m.latency
        ratio = "baseline" if m.model_index == 0 else f"{m.speedup_vs_first:.2f}x"
        inside = model.options.get("inference_precision")
        precision = (model.precision or "-") + (f" ({inside} inside)" if inside and inside != model.precision else "")
        rows.append((escape(m.model), model.backend, precision, m.batch, f"{s.mean_ms:.3f}", f"{s.p50_ms:.3f}", f"{s.p90_ms:.3f}",
                     f"{s.p99_ms:.3f}", f"{s.std_ms:.3f}", s.iterations, f"{m.throughput_ips:,.1f}", ratio))
    cols = ["model", "backend", "precision", "batch", "mean ms", "p50 ms", "p90 ms", "p99 ms", "std ms", "iters", "img/s", "vs first"]
    settings = result.settings
    timing = f"{settings.iters} iters" if settings.seconds is None else f"{settings.seconds:g} s"
    title = f"bench on {settings.device}: {timing} per model and batch size after {settings.warmup} warm-up, interleaved"
    console.print(table(title, cols, rows, cols[3:]))
    for model in result.models:
        if model.warning:
            console.print(f"[yellow]{escape(model.warning)}[/]", highlight=False)
        for note in model.notes:
            console.print(f"note: {escape(model.label)}: {escape(note)}", highlight=False)
    console.print(f"environment: {escape(environment_line(result.environment))}", highlight=False)
    for kind, path in result.outputs.items():
        console.print(f"wrote {kind}: {escape(path)}", highlight=False)
