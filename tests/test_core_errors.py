"""maxq_deploy.core.errors: one hierarchy, and first_line, the one-line quote of a foreign message."""

from __future__ import annotations

import inspect

from maxq_deploy.core import errors
from maxq_deploy.core.errors import MaxQDeployError, first_line


def test_every_project_error_is_a_maxq_deploy_error():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception) and c.__module__ == errors.__name__]
    assert len(classes) > 10 and all(issubclass(c, MaxQDeployError) for c in classes)
    assert issubclass(errors.ProfileShapeError, errors.OptionError)
    assert issubclass(errors.UnfinishedSparsityError, errors.SparsityPatternError)


def test_first_line_folds_whitespace_and_marks_dropped_lines():
    assert first_line(ValueError("bad   shape\n  traceback follows")) == "bad shape ..."
    assert first_line("one line") == "one line"
    assert first_line(KeyError()) == "KeyError"
    assert first_line("") == ""


def test_first_line_cuts_long_text_at_a_word():
    text = "word " * 100
    out = first_line(text, limit=23)
    assert out == "word word word word ..."
    assert first_line("x" * 50, limit=10) == "x" * 10 + " ..."
