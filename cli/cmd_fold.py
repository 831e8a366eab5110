"""``maxq-deploy fold``: masks and BatchNorm into constant N:M weights (``--project``: to 2:4)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from maxq_deploy.cli.base import ArchOpt, JsonOpt, NMOpt, app
from maxq_deploy.cli.render import console, handle_errors, print_json, table, verdict_style


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
    auto: bool = typer.Option(False, "--auto", help="With --project and --data: choose the layers to keep dense greedily from the sensitivity report, the fewest that keep the measured top-1 drop within --max-drop."),
    max_drop: Optional[float] = typer.Option(None, "--max-drop", help="With --auto: the top-1 points the projection may cost on --data (e.g. 1.0)."),
    json_out: bool = JsonOpt,
) -> None:
    """Fold masks and BatchNorm into constant N:M conv weights; write a self-describing checkpoint."""
    from maxq_deploy.core.errors import OptionError
    from maxq_deploy.core.progress import RichProgress

    if auto or max_drop is not None:
        if not (auto and max_drop is not None and project):
            raise OptionError("--auto needs --project and --max-drop POINTS (and --data); --max-drop needs --auto")
        if keep_dense:
            raise OptionError("--auto chooses the layers to keep dense: drop --keep-dense (or drop --auto)")
        return _auto(checkpoint, output, arch, nm, data, labels, limit, max_drop, json_out)
    from maxq_deploy.fold import fold_checkpoint

    result = fold_checkpoint(checkpoint, output, arch=arch, nm=nm, project=project, data=data, labels=labels, limit=limit,
                             keep_dense=[keep_dense] if keep_dense else [], progress=RichProgress(enabled=not json_out))
    _render(result, checkpoint, project, json_out)


def _auto(checkpoint, output, arch, nm, data, labels, limit, max_drop, json_out) -> None:
    from maxq_deploy.core.progress import RichProgress
    from maxq_deploy.sensitivity.auto import auto_keep_dense

    choice = auto_keep_dense(checkpoint, output, data, labels, max_drop=max_drop, limit=limit or 1000, arch=arch, nm=nm,
                             progress=RichProgress(enabled=not json_out))
    if json_out:
        return print_json(choice.fold.summary() | {"auto": choice.to_dict()})
    rows = [(str(len(s.kept_dense)), escape(", ".join(s.kept_dense) or "-"), f"{s.top1:.2f}", f"{s.drop:+.2f}",
             f"{s.sparse_flops_share:.1f}", f"{s.sparse_params_share:.1f}") for s in choice.steps]
    console.print(table(f"--auto --max-drop {choice.max_drop:g}: measured on {choice.images} images (MaxQ network "
                        f"{choice.baseline_top1:.2f}%)", ["kept", "layers kept dense", "top-1 %", "drop", "FLOPs % in 2:4 layers",
                        "params % in 2:4 layers"], rows, ["kept", "top-1 %", "drop", "FLOPs % in 2:4 layers", "params % in 2:4 layers"]))
    console.print(verdict_style(choice.within_budget, f"kept dense: {', '.join(choice.kept_dense) or 'none'}; measured drop "
                                f"{choice.drop:+.2f} points (budget {choice.max_drop:g})"), highlight=False)
    _render(choice.fold, checkpoint, True, False)


def _render(result, checkpoint, project, json_out) -> None:
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
