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


def handle_errors(fn: F) -> F:
    """Turn project errors into one line on stderr and a non-zero exit; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from maxq_deploy.errors import MaxQDeployError

        try:
            return fn(*args, **kwargs)
        except MaxQDeployError as exc:
            # escape: a path such as "ckpt[best].pth" is text, not rich markup
            message = escape(" ".join(str(exc).split()))
            err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """``"0.485,0.456,0.406"`` -> a tuple (the --mean/--std options); None stays None."""
    if text is None:
        return None
    from maxq_deploy.errors import DataError

    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise DataError(f"{option} takes 3 comma-separated numbers (R,G,B), got {text!r}") from None


def print_json(data: Any) -> None:
    """Machine-readable output on stdout (nothing else is printed there with --json)."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


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
