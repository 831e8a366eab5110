"""Class labels for data sets: a ``.npy`` array or a text file of one integer per line, checked strictly.

Integer-safe: a text line must be digits (``int()`` alone would read ``1_0`` as 10), a uint64
label of 2**64-1 is refused rather than wrapped to -1, float labels must be finite whole numbers,
and every label is a class index from 0 to :data:`MAX_LABEL`. A labels path that is a FIFO or a
folder is named as such, not "not found".
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from maxq_deploy.core.errors import DataError

_INTEGER_LINE = re.compile(r"-?[0-9]+", re.ASCII)
#: The largest class index a label may hold (no classifier has more classes; int64 stays exact).
MAX_LABEL = 2**31 - 1


def read_labels(path: Path, count: int, what: str) -> np.ndarray:
    """Integer labels from a .npy array or a text file (one per line), checked against ``count``."""
    if not path.exists():
        raise DataError(f"labels file not found: {path}")
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a FIFO, device or socket)"
        raise DataError(f"labels file {path} is {kind}: give a .npy array or a text file of one integer per line")
    if path.suffix.lower() == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable .npy labels array ({exc})") from None
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: a labels text file needs one integer per line ({exc})") from None
        values = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line:
                continue
            if not _INTEGER_LINE.fullmatch(line):  # int() would read "1_0" as 10 and " ٣" as 3
                raise DataError(f"{path} line {number}: {line[:40]!r} is not a class index (one integer per line, digits 0-9 only)")
            if len(line.lstrip("-")) > 18:
                raise DataError(f"{path} line {number}: {line[:40]} is far too large for a class index")
            values.append(int(line))
        raw = np.asarray(values, dtype=np.int64)
    return check_labels(raw, count, f"{path}", what)


def check_labels(raw: np.ndarray, count: int, source: str, what: str) -> np.ndarray:
    if raw.ndim != 1:
        hint = " (one-hot? store class indices: labels.argmax(1))" if raw.ndim == 2 else ""
        raise DataError(f"labels in {source} must be a 1-D array of class indices, got shape {raw.shape}{hint}")
    if raw.dtype.kind not in "iuf" or (raw.dtype.kind == "f" and raw.size and not np.all(np.isfinite(raw) & (raw == np.round(raw)))):
        raise DataError(f"labels in {source} must be integers, got dtype {raw.dtype}")
    if len(raw) != count:
        raise DataError(f"{len(raw)} labels in {source} but {count} {what}: counts must match")
    if raw.size and raw.min() < 0:  # compared in the array's own type: a uint64 never wraps to -1 here
        raise DataError(f"labels in {source} must be >= 0, found {raw.min()}")
    if raw.size and raw.max() > MAX_LABEL:
        raise DataError(f"labels in {source} must be class indices below {MAX_LABEL + 1:,}, found {int(raw.max()) if raw.dtype.kind != 'f' else raw.max()}")
    return raw.astype(np.int64)
