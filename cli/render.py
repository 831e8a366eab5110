"""Rendering helpers shared by every command: tables, JSON, one-line errors."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Wide tables when output goes to a file or pipe (rich would otherwise squeeze them to 80 columns).
def _width(stream) -> int | None:
    """The terminal's width; 160 columns when writing to a file or pipe (logs keep whole tables)."""
    return None if stream.isatty() else 160


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))
F = TypeVar("F", bound=Callable[..., Any])
try:  # Typer >= 0.24 vendors Click as typer._click
    from typer._click import ClickException
except ImportError:  # pragma: no cover - older Typer on top of Click
    from click import ClickException


def print_error(text: str) -> None:
    """The one ``error:`` line on stderr (whitespace folded, markup escaped)."""
    # escape: a path such as "ckpt[best].pth" is text, not rich markup
    message = escape(" ".join(str(text).split()))
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def handle_errors(fn: F) -> F:
    """Turn project errors, signals and out-of-memory into one line and a non-zero exit; never a traceback.

    Ctrl-C, SIGTERM and SIGHUP exit with 128 + the signal number after the temp files are removed.
    Any other exception is a bug: one line naming it (the traceback with MAXQ_DEPLOY_DEBUG=1).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import os
        import signal

        from maxq_deploy.core.files import Terminated, interrupting_signal, remove_live_temps
        from maxq_deploy.core.errors import MaxQDeployError

        try:
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                _erase_progress()  # no half-drawn bar above the error line
                signum = interrupting_signal(exc)
                if signum is not None and not isinstance(exc, (KeyboardInterrupt, typer.Exit, typer.Abort, ClickException)):
                    raise Terminated(signum) from exc  # an interrupt a library wrapped in its own error
                raise
        except MaxQDeployError as exc:
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt as exc:
            remove_live_temps()
            signum = int(getattr(exc, "signum", signal.SIGINT))
            print_error(f"interrupted by {signal.Signals(signum).name}; unfinished outputs were removed")
            raise typer.Exit(128 + signum) from None
        except MemoryError:
            remove_live_temps()
            print_error("out of memory: use a smaller --batch-size / --input-size or a machine with more memory")
            raise typer.Exit(1) from None
        except (typer.Exit, typer.Abort, ClickException):
            raise
        except OSError as exc:
            if exc.errno in _machine_errnos() and not os.environ.get("MAXQ_DEPLOY_DEBUG"):
                # the machine failed (a full disk, an I/O error) where no writer turned it into one line
                removed = remove_live_temps()
                if exc.filename:
                    what = f" ({exc.filename}): the machine could not read or write a file"
                else:  # no file named: the report itself (stdout or stderr on a full disk, /dev/full)
                    what = ": the machine could not write a file or the report"
                # say what is true: a write that fails after every output was finished removed nothing
                done = "unfinished outputs were removed" if removed else "every output file written is complete"
                print_error(f"{exc.strerror or os.strerror(exc.errno)}{what}; {done}")
                raise typer.Exit(1) from None
            _internal_error(exc)
        except Exception as exc:  # noqa: BLE001 - the last net: a bug still gets one line
            _internal_error(exc)

    return wrapper  # type: ignore[return-value]


def _erase_progress() -> None:
    from maxq_deploy.core.progress import erase_progress

    try:
        erase_progress()
    except Exception:  # noqa: BLE001 - stderr itself may be what failed; the error line still comes
        pass


def _machine_errnos() -> frozenset[int]:
    from maxq_deploy.core.files import WRITE_ERRNOS

    return WRITE_ERRNOS


def _internal_error(exc: Exception) -> None:
    """A bug: one line naming it, exit 70 (the traceback with MAXQ_DEPLOY_DEBUG=1)."""
    import os

    from maxq_deploy.core.errors import first_line
    from maxq_deploy.core.files import remove_live_temps

    remove_live_temps()
    if os.environ.get("MAXQ_DEPLOY_DEBUG"):
        raise exc
    first = first_line(exc, 300)
    print_error(f"internal error {type(exc).__name__}: {first} (a bug in maxq-deploy: please report it; "
                "MAXQ_DEPLOY_DEBUG=1 shows the traceback)")
    raise typer.Exit(70) from None


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """``"0.485,0.456,0.406"`` -> a tuple (the --mean/--std options); None stays None."""
    if text is None:
        return None
    from maxq_deploy.core.errors import DataError

    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise DataError(f"{option} takes 3 comma-separated numbers (R,G,B), got {text!r}") from None


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (nothing else is printed there with --json)."""
    from maxq_deploy.core.files import json_text

    sys.stdout.write(json_text(data, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    from pathlib import Path

    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], justify_right: Sequence[str] = ()) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        t.add_column(col, justify="right" if col in justify_right else "left")
    for row in rows:
        t.add_row(*[_cell(v) for v in row])
    return t


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "[green]yes[/]" if value else "[red]no[/]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def verdict_style(ok: bool, text: str) -> str:
    return f"[bold green]{text}[/]" if ok else f"[bold red]{text}[/]"
