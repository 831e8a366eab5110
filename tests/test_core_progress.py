"""The progress interface (``core.progress``) in-process: silent, disabled, off a terminal, drawing, erased.

``tests/test_progress.py`` runs the CLI on a real pseudo-terminal; here rich is told it writes to a terminal
(``TTY_COMPATIBLE=1``) and stderr is captured, so the bar's counts and its bookkeeping can be asserted.
"""

from __future__ import annotations

import re

import pytest

from maxq_deploy.core import progress
from maxq_deploy.core.progress import SILENT, Progress, RichProgress, erase_progress


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.delenv("FORCE_COLOR", raising=False)


@pytest.fixture
def not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "0")


@pytest.fixture(autouse=True)
def no_bar_left() -> None:
    yield
    assert progress._ACTIVE == []  # no test leaves a bar registered for the CLI to erase


def test_the_silent_default_yields_every_item_once_in_order() -> None:
    assert isinstance(SILENT, Progress)
    assert list(SILENT.track(iter([3, 1, 2]), total=99, description="ignored")) == [3, 1, 2]
    assert list(Progress().track(x * x for x in range(4))) == [0, 1, 4, 9]  # a generator without a length


def test_a_disabled_rich_progress_draws_nothing_even_on_a_terminal(terminal, capsys: pytest.CaptureFixture) -> None:
    assert list(RichProgress(enabled=False).track(range(5), total=5, description="calibrating")) == [0, 1, 2, 3, 4]
    assert capsys.readouterr() == ("", "")


def test_off_a_terminal_rich_progress_yields_everything_and_writes_nothing(not_a_terminal, capsys) -> None:
    """A log or a pipe gets the results, not the bars' last frames."""
    assert list(RichProgress().track(range(3), total=3, description="evaluating")) == [0, 1, 2]
    assert capsys.readouterr() == ("", "")


ERASE_LINE_ABOVE = "\r\x1b[1A\x1b[2K"  # what erasing a one-line bar ends with: cursor up, clear the line
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _frames(err: str) -> list[str]:
    """The bar's frames as plain text (each redraw starts with a carriage return)."""
    return [f.strip() for f in _ANSI.sub("", err).replace("\n", "\r").split("\r") if f.strip()]


def test_on_a_terminal_the_bar_counts_every_item_and_stays(terminal, capsys) -> None:
    seen = []
    for item in RichProgress().track(["a", "b", "c"], total=3, description="calibrating"):
        assert len(progress._ACTIVE) == 1  # registered while drawing, so the CLI can erase it
        seen.append(item)
    assert seen == ["a", "b", "c"]
    err = capsys.readouterr().err
    frames = _frames(err)
    assert frames[0].startswith("calibrating") and "0/3" in frames[0]
    assert frames[-1].startswith("calibrating") and "3/3" in frames[-1]  # all 3 items counted...
    assert not err.endswith(ERASE_LINE_ABOVE)  # ...and the finished bar stays on screen


def test_erase_progress_mid_loop_clears_the_bar_and_the_loop_still_gets_every_item(terminal, capsys) -> None:
    stream = RichProgress().track(range(4), total=4, description="batches")
    assert [next(stream), next(stream)] == [0, 1]
    erase_progress()  # the CLI's call before an error line, while the failed loop still holds the generator
    assert progress._ACTIVE == []
    err = capsys.readouterr().err
    assert err.endswith(ERASE_LINE_ABOVE) and "1/4" in _frames(err)[-1]  # erased where it stood
    assert list(stream) == [2, 3]
    assert capsys.readouterr().err == ""  # an erased bar draws nothing more


def test_an_error_in_the_loop_erases_the_bar_and_passes_the_error_on(terminal, capsys) -> None:
    def failing():
        yield 1
        raise RuntimeError("batch 2 is damaged")

    with pytest.raises(RuntimeError, match="batch 2 is damaged"):
        list(RichProgress().track(failing(), total=2, description="reading"))
    assert capsys.readouterr().err.endswith(ERASE_LINE_ABOVE)  # the error line will stand alone


def test_leaving_the_loop_early_erases_and_unregisters_the_bar(terminal, capsys) -> None:
    stream = RichProgress().track(range(10), total=10, description="early")
    for item in stream:
        if item == 2:
            break
    stream.close()  # what dropping the generator does: GeneratorExit inside track
    assert progress._ACTIVE == []
    assert capsys.readouterr().err.endswith(ERASE_LINE_ABOVE)


def test_erasing_with_nothing_drawing_is_a_no_op() -> None:
    erase_progress()
    assert progress._ACTIVE == []
