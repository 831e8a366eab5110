"""``maxq-deploy``: each command parses options, calls one library function, renders its result.

Heavy libraries (torch, onnx, TensorRT) are imported inside the commands, so ``--help`` starts
fast and works where TensorRT and CUDA are absent.
"""

from __future__ import annotations

import typer

from maxq_deploy.cli.base import app, export_app  # noqa: F401  (app, export_app: the entry points)
from maxq_deploy.cli.render import console


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


# Every command lives in its own module and registers on ``app``/``export_app`` (from ``cli.base``)
# when imported here (each imports its heavy libraries inside the command, so --help stays fast);
# the import order is the order --help lists them: the pipeline's.
from maxq_deploy.cli import cmd_inspect, cmd_fold, cmd_verify  # noqa: E402,F401
from maxq_deploy.cli import cmd_quantize  # noqa: E402,F401
from maxq_deploy.cli import cmd_export_onnx, cmd_trt  # noqa: E402,F401
from maxq_deploy.cli import cmd_eval, cmd_bench, cmd_demo, cmd_sensitivity  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: SIGTERM/SIGHUP clean up like Ctrl-C; a usage error is one ``error:`` line, exit 2."""
    import sys

    from maxq_deploy.core.files import install_signal_handlers
    from maxq_deploy.cli.render import ClickException, print_error

    install_signal_handlers()
    for stream in (sys.stdout, sys.stderr):
        # PYTHONIOENCODING=ascii (or a latin-1 terminal) and a path such as "ausgabe-ü.pt": the report
        # shows the character as \xfc instead of failing after the work is done
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
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
