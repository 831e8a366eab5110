"""``maxq-deploy``: each command parses options, calls one library function, renders its result.

Heavy libraries (torch, onnx, TensorRT) are imported inside the commands, so ``--help`` starts
fast and works where TensorRT and CUDA are absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from maxq_deploy.cli.render import console, handle_errors, print_json, table, verdict_style

app = typer.Typer(
    name="maxq-deploy",
    help="Deploy MaxQ N:M-sparse CNNs: inspect, fold, verify, quantize, export, benchmark, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
export_app = typer.Typer(help="Export a folded or quantized model to ONNX or a TensorRT engine.", no_args_is_help=True)
app.add_typer(export_app, name="export")

ArchOpt = typer.Option(None, "--arch", help="Architecture, when the file does not say (resnet18, resnet34, resnet50, mobilenet_v1).")
NMOpt = typer.Option(None, "--nm", help="Trained N:M (e.g. 2:4); inferred from the masks when omitted.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _version_callback(value: bool) -> None:
    if value:
        from maxq_deploy import __version__

        console.print(f"maxq-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
) -> None:
    """Deploy MaxQ N:M-sparse CNNs."""


@app.command()
@handle_errors
def inspect(
    checkpoint: Path = typer.Argument(..., help="MaxQ checkpoint (.pth / .pth.tar), training dict or bare state dict."),
    arch: Optional[str] = ArchOpt,
    nm: Optional[str] = NMOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Describe a MaxQ checkpoint: architecture, classes, epoch, N:M and every sparse layer."""
    from maxq_deploy.checkpoint import load_checkpoint

    summary = load_checkpoint(checkpoint, arch=arch, nm=nm).summary()
    if json_out:
        return print_json(summary)
    s = summary
    console.print(
        f"[bold]{escape(s['path'])}[/]\n"
        f"  architecture  {s['arch']} (from {s['arch_source']}), {s['num_classes']} classes\n"
        f"  epoch         {s['epoch']}   best acc@1 {_fmt(s['best_acc1'])}\n"
        f"  N:M           {s['nm']} (from {s['nm_source']})\n"
        f"  sparse layers {s['sparse_layers']} ({s['unfinished_layers']} with unfinished incremental sparsity)\n"
        f"  parameters    {s['total_params']:,} total, {s['sparse_params']:,} in sparse layers, "
        f"{s['kept_sparse_params']:,} kept",
        highlight=False,
    )
    rows = [
        (l["name"], "x".join(map(str, l["shape"])), l["mask_kind"], l["trained_nm"], l["dense_groups"], l["groups"], f"{l['kept'] / max(l['params'], 1):.1%}")
        for l in s["layers"]
    ]
    console.print(table("Sparse layers", ["layer", "shape KxCxRxS", "mask", "N:M", "dense groups", "groups", "kept"], rows, ["dense groups", "groups", "kept"]))


@app.command()
@handle_errors
def fold(
    checkpoint: Path = typer.Argument(..., help="MaxQ checkpoint to fold."),
    output: Path = typer.Option(..., "-o", "--output", help="Folded deploy checkpoint to write."),
    arch: Optional[str] = ArchOpt,
    nm: Optional[str] = NMOpt,
    project: bool = typer.Option(False, "--project", help="Re-impose N:M by magnitude on unfinished layers and report the output drift."),
    json_out: bool = JsonOpt,
) -> None:
    """Fold masks and BatchNorm into constant N:M conv weights; write a self-describing checkpoint."""
    from maxq_deploy.fold import fold_checkpoint

    result = fold_checkpoint(checkpoint, output, arch=arch, nm=nm, project=project)
    summary = result.summary()
    if json_out:
        return print_json(summary)
    console.print(
        f"folded {summary['arch']} ({summary['nm']}): {summary['sparse_layers']} sparse layers, "
        f"{summary['dense_layers']} dense conv+BN pairs -> [bold]{escape(summary['output'])}[/]",
        highlight=False,
    )
    if result.drift:
        d = result.drift
        console.print(
            f"projected {summary['projected_layers']} layers to {summary['nm']}: output drift on a probe batch "
            f"{tuple(d.probe_batch)}: max abs {d.max_abs_error:.4g}, relative L2 {d.relative_l2_error:.4g}, "
            f"top-1 agreement {d.top1_agreement:.1%}",
            highlight=False,
        )
    console.print(verdict_style(
        summary["sparse_layers_holding_2_4"] == summary["sparse_layers"],
        f"{summary['sparse_layers_holding_2_4']} of {summary['sparse_layers']} sparse layers hold 2:4",
    ))


@app.command()
@handle_errors
def verify(
    path: Path = typer.Argument(..., help="MaxQ checkpoint, folded or quantized checkpoint, ONNX model or TensorRT engine."),
    pattern: str = typer.Option("2:4", "--pattern", help="Hardware pattern to check (2:4 for NVIDIA sparse tensor cores)."),
    arch: Optional[str] = ArchOpt,
    nm: Optional[str] = NMOpt,
    json_out: bool = JsonOpt,
) -> None:
    """Check the hardware N:M pattern on every sparse layer. Exit 0 when all hold, 1 when not."""
    from maxq_deploy.verify import verify_artifact

    report = verify_artifact(path, pattern=pattern, arch=arch, nm=nm)
    if json_out:
        print_json(report.to_dict())
    else:
        show_notes = any(l.note for l in report.layers)
        rows = [
            (l.name, l.op, "x".join(map(str, l.shape)), l.dtype, "sparse" if l.expected_sparse else "dense",
             l.trained_nm, l.channels, l.channels_divisible, "depthwise" if l.depthwise else ("yes" if l.grouped else "no"),
             f"{l.violating_groups}/{l.groups}", l.holds if l.expected_sparse or l.holds else "-", l.note)[: 12 if show_notes else 11]
            for l in report.layers
        ]
        cols = ["layer", "op", "shape", "dtype", "role", "trained N:M", "C", f"C%{report.pattern.split(':')[1]}==0", "grouped",
                "violating groups", f"holds {report.pattern}", "note"][: 12 if show_notes else 11]
        console.print(table(escape(f"{report.kind}: {path}"), cols, rows, ["C", "violating groups"]))
        for note in report.notes:
            console.print(f"note: {note}", highlight=False)
        console.print(verdict_style(report.ok, report.verdict), highlight=False)
    raise typer.Exit(0 if report.ok else 1)


# Commands of the later stages live in their own modules and register on ``app``/``export_app``
# when imported (each imports its heavy libraries inside the command, so --help stays fast);
# the import order is the order --help lists them: the pipeline's.
from maxq_deploy.cli import cmd_quantize  # noqa: E402,F401
from maxq_deploy.cli import cmd_export_onnx, cmd_trt  # noqa: E402,F401
from maxq_deploy.cli import cmd_eval, cmd_bench, cmd_demo  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: SIGTERM/SIGHUP clean up like Ctrl-C; a usage error is one ``error:`` line, exit 2."""
    import sys

    from maxq_deploy.artifacts import install_signal_handlers
    from maxq_deploy.cli.render import ClickException, print_error

    install_signal_handlers()
    try:
        code = app(args=argv, prog_name="maxq-deploy", standalone_mode=False)
    except ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group or command: its help was printed
            sys.exit(exc.exit_code)
        command = exc.ctx.command_path if getattr(exc, "ctx", None) else "maxq-deploy"
        print_error(f"{exc.format_message()} (see: {command} --help)")
        code = exc.exit_code
    except typer.Abort:
        print_error("aborted")
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
