"""``maxq-deploy``: each command parses options, calls one library function, renders its result.

Heavy libraries (torch, onnx, TensorRT) are imported inside the commands, so ``--help`` starts
fast and works where TensorRT and CUDA are absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from maxq_deploy.archs.catalog import ARCHS
from maxq_deploy.cli.render import console, handle_errors, print_json, table, verdict_style

from maxq_deploy.cli.base import ArchOpt, JsonOpt, NMOpt, app, export_app  # noqa: F401  (app, export_app: the entry points)


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
    checkpoint: Optional[Path] = typer.Argument(None, help="MaxQ checkpoint (.pth / .pth.tar), training dict or bare state dict."),
    arch: Optional[str] = ArchOpt,
    nm: Optional[str] = NMOpt,
    list_archs: bool = typer.Option(False, "--list-archs", help="List the architecture registry (input sizes included) and exit."),
    json_out: bool = JsonOpt,
) -> None:
    """Describe a MaxQ checkpoint: architecture, classes, epoch, N:M and every sparse layer."""
    if list_archs:
        if checkpoint is not None or arch is not None or nm is not None:
            from maxq_deploy.core.errors import OptionError

            raise OptionError("--list-archs lists the registry and reads no checkpoint: drop the CHECKPOINT (or --list-archs)")
        return _print_archs(json_out)
    if checkpoint is None:
        from maxq_deploy.core.errors import OptionError

        raise OptionError("give a CHECKPOINT to inspect, or --list-archs for the architecture registry")
    from maxq_deploy.load.maxq_checkpoint import load_checkpoint

    summary = load_checkpoint(checkpoint, arch=arch, nm=nm).summary()
    if json_out:
        return print_json(summary)
    s = summary
    console.print(
        f"[bold]{escape(s['path'])}[/]\n"
        f"  architecture  {s['arch']} (from {s['arch_source']}), {s['num_classes']} classes\n"
        f"  epoch         {s['epoch']}   best acc@1 {_fmt(s['best_acc1'])}\n"
        f"  input size    {s['input_size']}x{s['input_size']} (the architecture's; export, eval and bench default to it)\n"
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
    if s.get("breaks_2_4"):
        console.print(verdict_style(False, s["breaks_2_4"]), highlight=False)


def _print_archs(json_out: bool) -> None:
    specs = [ARCHS[name] for name in sorted(ARCHS)]
    if json_out:
        return print_json([spec.to_dict() for spec in specs])
    rows = [(spec.name, spec.family, spec.blocks, spec.input_size, spec.sizes_text()) for spec in specs]
    console.print(table("Architecture registry", ["arch", "family", "blocks", "input size", "runs at"], rows, ["input size"]))


@app.command()
@handle_errors
def fold(
    checkpoint: Path = typer.Argument(..., help="MaxQ checkpoint to fold."),
    output: Path = typer.Option(..., "-o", "--output", help="Folded deploy checkpoint to write."),
    arch: Optional[str] = ArchOpt,
    nm: Optional[str] = NMOpt,
    project: bool = typer.Option(
        False, "--project",
        help="Project to 2:4 by magnitude: finish unfinished incremental N:M, then keep the 2 largest of every aligned "
             "group of 4 along the input channels where a layer breaks 2:4 (4:8, 4:16, 8:16, ...); reports the output drift.",
    ),
    data: Optional[Path] = typer.Option(None, "--data", help="With --project: labelled images (folder, .npy/.npz or IDX *-idx3-ubyte[.gz]) to measure top-1 before and after."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="Labels for --data given as a flat folder, .npy or IDX (*-idx1-ubyte[.gz])."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="With --data: use only N images, spread evenly."),
    keep_dense: Optional[str] = typer.Option(None, "--keep-dense", help="With --project: comma-separated sparse layers left out of the 2:4 projection (they keep their N:M and run dense; see maxq-deploy sensitivity). Recorded in the checkpoint; verify reports them as kept dense."),
    json_out: bool = JsonOpt,
) -> None:
    """Fold masks and BatchNorm into constant N:M conv weights; write a self-describing checkpoint."""
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.core.progress import RichProgress

    result = fold_checkpoint(checkpoint, output, arch=arch, nm=nm, project=project, data=data, labels=labels, limit=limit,
                             keep_dense=[keep_dense] if keep_dense else [], progress=RichProgress(enabled=not json_out))
    summary = result.summary()
    if json_out:
        return print_json(summary)
    console.print(
        f"folded {summary['arch']} ({summary['nm']}, input {summary['input_size']}x{summary['input_size']}): "
        f"{summary['sparse_layers']} sparse layers, "
        f"{summary['dense_layers']} dense conv+BN pairs -> [bold]{escape(summary['output'])}[/]",
        highlight=False,
    )
    projected = [layer for layer in result.sparse_layers if layer.projected]
    if projected:
        rows = [(l.name, "x".join(map(str, l.shape)), l.projected_to, f"{l.groups_changed}/{l.hardware_groups}",
                 f"{l.groups_changed / max(l.hardware_groups, 1):.1%}") for l in projected]
        console.print(table("--project: groups of 4 (along C) changed per layer", ["layer", "shape", "projected to", "groups changed", "share"],
                            rows, ["groups changed", "share"]))
    if summary["kept_dense"]:
        console.print(f"kept dense on purpose (--keep-dense, not projected to 2:4): {escape(', '.join(summary['kept_dense']))}", highlight=False)
    if result.drift:
        d = result.drift
        console.print(
            f"projected {summary['projected_layers']} layers to {', '.join(sorted({l.projected_to for l in projected}))}: output drift "
            f"on a probe batch {tuple(d.probe_batch)}: max abs {d.max_abs_error:.4g}, relative L2 {d.relative_l2_error:.4g}, "
            f"top-1 agreement {d.top1_agreement:.1%}; {summary['groups_changed']:,} groups of 4 changed",
            highlight=False,
        )
    if result.accuracy:
        a = result.accuracy
        console.print(
            f"top-1 on {a.images} images of {escape(a.data)}: {a.top1_before:.2f}% before --project (MaxQ network), "
            f"{a.top1_after:.2f}% after (folded, projected); predictions agree on {a.agreement:.2f}%",
            highlight=False,
        )
    console.print(verdict_style(
        summary["sparse_layers_holding_2_4"] == summary["sparse_layers"],
        f"{summary['sparse_layers_holding_2_4']} of {summary['sparse_layers']} sparse layers hold 2:4",
    ))
    if summary["groups_breaking_2_4"] and not project:
        console.print(
            f"{summary['groups_breaking_2_4']:,} groups of 4 break 2:4 (trained {summary['nm']}): sparse tensor cores need "
            f"2:4; run maxq-deploy fold {escape(checkpoint.name)} -o OUT --project to keep the 2 largest of each group of 4",
            highlight=False,
        )


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
# (from ``cli.base``) when imported here (each imports its heavy libraries inside the command, so
# --help stays fast); the import order is the order --help lists them: the pipeline's.
from maxq_deploy.cli import cmd_quantize  # noqa: E402,F401
from maxq_deploy.cli import cmd_export_onnx, cmd_trt  # noqa: E402,F401
from maxq_deploy.cli import cmd_eval, cmd_bench, cmd_demo, cmd_sensitivity  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: SIGTERM/SIGHUP clean up like Ctrl-C; a usage error is one ``error:`` line, exit 2."""
    import sys

    from maxq_deploy.core.files import install_signal_handlers
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
