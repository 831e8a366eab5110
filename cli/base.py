"""The Typer apps every command registers on, and the options several commands share.

Command modules (``cli/cmd_*.py``) import this module, never ``cli/app.py``, which imports them
all: so the CLI has no import cycle.
"""

from __future__ import annotations

import typer

from maxq_deploy.archs.catalog import arch_names_text

app = typer.Typer(
    name="maxq-deploy",
    help="Deploy MaxQ N:M-sparse CNNs: inspect, fold, verify, quantize, export, benchmark, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
export_app = typer.Typer(help="Export a folded or quantized model to ONNX or a TensorRT engine.", no_args_is_help=True)
app.add_typer(export_app, name="export")

ArchOpt = typer.Option(None, "--arch", help=f"Architecture, when the file does not say ({arch_names_text()}).")
NMOpt = typer.Option(None, "--nm", help="Trained N:M (e.g. 2:4); inferred from the masks when omitted.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")
