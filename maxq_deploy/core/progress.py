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
    """Progress bars on stderr with rich (used by the CLI)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        if not self.enabled:
            yield from items
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as _P, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        with _P(*columns, console=Console(stderr=True), transient=False) as bar:
            task = bar.add_task(description, total=total)
            for item in items:
                yield item
                bar.advance(task)
