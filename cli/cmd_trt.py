"""``maxq-deploy export trt``: ONNX -> sparse (or dense baseline) TensorRT engine + layer report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from maxq_deploy.cli.base import JsonOpt, export_app
from maxq_deploy.cli.render import console, err_console, handle_errors, print_json, table, verdict_style


@export_app.command("trt")
@handle_errors
def export_trt(
    onnx_model: Path = typer.Argument(..., help="ONNX graph from `maxq-deploy export onnx` (fp32, fp16 or INT8 Q/DQ)."),
    output: Path = typer.Option(..., "-o", "--output", help="Engine to write; its layer report goes beside it as ENGINE.json."),
    dense: bool = typer.Option(False, "--dense", help="Build the dense baseline of the same graph (no SPARSE_WEIGHTS)."),
    min_batch: Optional[int] = typer.Option(None, "--min-batch", help="Smallest batch of the optimization profile (default 1)."),
    opt_batch: Optional[int] = typer.Option(None, "--opt-batch", help="Batch TensorRT tunes for (default 8)."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Largest batch of the profile (default 32)."),
    workspace: float = typer.Option(4.0, "--workspace", help="Builder workspace limit in GiB."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Timing cache to reuse and update (faster rebuilds); a cache TensorRT rejects (other version/GPU) is reported and replaced."),
    pin_timing_cache: bool = typer.Option(False, "--pin-timing-cache", help="Reuse --timing-cache as is for a reproducible build: never rewrite it; a mismatch is an error."),
    trtexec: bool = typer.Option(False, "--trtexec", help="Print the equivalent trtexec command instead of building (no TensorRT needed)."),
    trt_version: Optional[str] = typer.Option(None, "--trt-version", help="With --trtexec: write the command for TensorRT 10 or 11 (default: installed, else 10)."),
    json_out: bool = JsonOpt,
) -> None:
    """Build a TensorRT engine with sparse weights enabled and report which layers run sparse."""
    if trt_version is not None and not trtexec:
        raise typer.BadParameter("--trt-version only applies with --trtexec (a build uses the installed TensorRT)")
    batches = {"min_batch": min_batch, "opt_batch": opt_batch, "max_batch": max_batch}
    if trtexec:
        from maxq_deploy.tensorrt.trtexec import trtexec_for_onnx

        command = trtexec_for_onnx(onnx_model, output, sparse=not dense, trt_version=trt_version,
                                   workspace_gib=workspace, timing_cache=timing_cache, **batches)
        if json_out:
            return print_json(command.to_dict())
        console.print(command.command_line, markup=False, highlight=False, soft_wrap=True)
        for note in command.notes:
            err_console.print(f"note: {note}", markup=False, highlight=False)
        return None

    from maxq_deploy.core.progress import RichProgress
    from maxq_deploy.tensorrt.build import build_engine

    result = build_engine(onnx_model, output, sparse=not dense, workspace_gib=workspace, timing_cache=timing_cache,
                          progress=RichProgress(enabled=not json_out), pin_timing_cache=pin_timing_cache, **batches)
    summary = result.summary()
    if json_out:
        return print_json(summary)
    kind = "sparse" if result.plan.sparse else "dense"
    typing = "strongly typed" if result.plan.strongly_typed else "flags " + ",".join(result.plan.builder_flags)
    p = result.profile
    console.print(
        f"built {kind} engine with TensorRT {result.trt_version} ({result.plan.graph_precision} graph, {typing}; "
        f"batch {p.min_batch}/{p.opt_batch}/{p.max_batch}) in {result.build_seconds:.1f} s -> [bold]{escape(str(result.output))}[/]\n"
        f"layer report -> {escape(str(result.report_path))}",
        highlight=False,
    )
    render_engine_layers(result.report)


def render_engine_layers(report) -> None:  # report: maxq_deploy.tensorrt.report.EngineReport
    rows = [
        (escape(", ".join(l.checkpoint_layers) or "-"), escape(l.trt_name), l.precision, f"{l.input_dtype}->{l.output_dtype}",
         l.in_channels, l.out_channels, "x".join(map(str, l.kernel)) or "-", "sparse" if l.expected_sparse else "dense",
         l.eligible, l.sparse_tactic, escape(l.reason))
        for l in report.layers
    ]
    cols = ["checkpoint layer", "TensorRT layer", "precision", "in->out", "C", "K", "kernel", "role", "eligible",
            "sparse tactic", "why not sparse"]
    console.print(table("conv/gemm layers", cols, rows, ["C", "K"]))
    t = report.totals()
    ok = t["expected_sparse"] > 0 and t["expected_eligible"] == t["expected_sparse"] and not t["missing_layers"]
    console.print(verdict_style(ok, (
        f"{report.summary_line()} of {t['conv_gemm_layers']} conv/gemm layers; "
        f"expected sparse {t['expected_sparse']}: {t['expected_eligible']} eligible, {t['expected_sparse_tactic']} run sparse"
    )), highlight=False)
    for note in report.notes:
        console.print(f"note: {escape(note)}", highlight=False)
