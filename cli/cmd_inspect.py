"""``maxq-deploy inspect``: what a MaxQ checkpoint holds; ``--list-archs``: the architecture registry."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from maxq_deploy.archs.catalog import ARCHS
from maxq_deploy.cli.base import ArchOpt, JsonOpt, NMOpt, app
from maxq_deploy.cli.render import console, handle_errors, print_json, table, verdict_style


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


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
