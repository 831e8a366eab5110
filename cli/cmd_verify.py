"""``maxq-deploy verify``: the hardware N:M pattern on every sparse layer of any artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from maxq_deploy.cli.base import ArchOpt, JsonOpt, NMOpt, app
from maxq_deploy.cli.render import console, handle_errors, print_json, table, verdict_style


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
