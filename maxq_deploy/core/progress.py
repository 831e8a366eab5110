"""A tiny progress interface so library loops can report without depending on the CLI.

Library functions take ``progress: Progress | None``; the CLI passes a rich-backed one, tests
and API users get the silent default.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Progress:
    """Silent progress: ``track`` just yields the items."""

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        yield from items


SILENT = Progress()


class RichProgress(Progress):
    """Progress bars on stderr with rich (used by the CLI), drawn only when stderr is a terminal."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        from rich.console import Console

        console = Console(stderr=True) if self.enabled else None
        if console is None or not console.is_terminal:
            # off a terminal (a log, a pipe) rich would print only each bar's last frame: lines that
            # end up above a failed run's one error line; a log gets the results, not the bars
            yield from items
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as _P, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        with _P(*columns, console=console, transient=False) as bar:
            task = bar.add_task(description, total=total)
            _ACTIVE.append(bar)
            try:
                for item in items:
                    yield item
                    bar.advance(task)
            except BaseException:  # an error, Ctrl-C, or the caller's loop ended early (GeneratorExit)
                _erase(bar)  # the error line stands alone
                raise
            finally:
                if bar in _ACTIVE:
                    _ACTIVE.remove(bar)


#: The rich bars drawing now (the CLI erases them before it prints an error line).
_ACTIVE: list = []


def erase_progress() -> None:
    """Stop and erase every bar still drawing: a failed run shows its one error line, no half-drawn bar.

    An exception raised in the loop that consumes ``track`` keeps the generator (and its bar) alive
    until the exception is dropped, so the CLI calls this before it prints the error.
    """
    while _ACTIVE:
        _erase(_ACTIVE.pop())


def _erase(bar) -> None:
    """Stop a rich bar and erase what it drew (``Progress.stop`` would add a blank line off a terminal)."""
    bar.live.transient = True
    bar.live.stop()
    bar.disable = True  # its ``with`` block ends later: nothing more to draw
