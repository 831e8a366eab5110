"""Writing artifacts safely: atomic writes, hashes, provenance metadata."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from maxq_deploy.errors import InputFileError, OutputPathError


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """Fail early, before any work, when ``path`` cannot be written."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputPathError(f"output folder does not exist: {parent} (create it first)")
    if out.is_dir():
        raise OutputPathError(f"output path is a folder, expected a file: {out}")
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"output folder is not writable: {parent}")
    return out


def check_input_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """Return ``path`` as a Path if it is a readable regular file, else raise InputFileError."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{what} not found: {p}")
    if p.is_dir():
        raise InputFileError(f"{what} is a folder, expected a file: {p}")
    if not os.access(p, os.R_OK):
        raise InputFileError(f"{what} is not readable: {p}")
    return p


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    A failure (or Ctrl-C) leaves no partial file behind and any previous file untouched.
    """
    out = check_output_path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent or ".")
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks so big checkpoints need no extra memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def provenance(source: str | os.PathLike[str] | None, source_sha256: str | None = None) -> dict:
    """Metadata that says where an artifact came from and what made it."""
    from maxq_deploy import __version__

    info: dict = {
        "tool": "maxq-deploy",
        "tool_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if source is not None:
        info["source_path"] = str(source)
        info["source_sha256"] = source_sha256 if source_sha256 else sha256_file(source)
    return info
