"""The torch artifacts maxq-deploy writes, and the one check of what a loaded file is.

Each artifact is a dict with ``format`` and ``format_version`` entries. A stage that can turn
an artifact into a runnable model registers a loader here by name ("module:function"), imported
only when such a file is opened, so that ``models`` needs no import of the stages above it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from maxq_deploy.core.errors import InputFileError

FOLDED_FORMAT = "maxq-deploy/folded"
QUANTIZED_FORMAT = "maxq-deploy/quantized"
PREFIX = "maxq-deploy/"


@dataclass(frozen=True)
class ArtifactFormat:
    """One artifact kind: its ``format`` string, the newest version this tool reads, its loader."""

    name: str
    version: int
    kind: str  # what eval/bench call a model of this format
    model_loader: str  # "module:function", called as function(path, obj) -> models.LoadedModel
    make_hint: str  # the command that makes one

    def header(self, arch: str, num_classes: int, nm: str | None) -> dict:
        """The keys an artifact of this format starts with: what :func:`check_format` reads, and the network."""
        from maxq_deploy.core.sparsity import HARDWARE_PATTERN  # imports torch: not for CLI start-up

        return {"format": self.name, "format_version": self.version, "arch": arch, "num_classes": num_classes, "nm": nm,
                "hardware_pattern": HARDWARE_PATTERN}

    def load_model(self, path: Path, obj: dict) -> Any:
        module, _, function = self.model_loader.partition(":")
        loader: Callable[[Path, dict], Any] = getattr(importlib.import_module(module), function)
        return loader(path, obj)


FORMATS: dict[str, ArtifactFormat] = {
    FOLDED_FORMAT: ArtifactFormat(
        FOLDED_FORMAT, 1, "folded-checkpoint", "maxq_deploy.fold:loaded_model_from_dict", "maxq-deploy fold CKPT -o OUT"
    ),
    QUANTIZED_FORMAT: ArtifactFormat(
        QUANTIZED_FORMAT, 1, "quantized-checkpoint", "maxq_deploy.quantize.artifact:load_quantized_model",
        "maxq-deploy quantize FOLDED -o OUT --calib DATA",
    ),
}


def format_of(obj: object) -> str | None:
    """The ``format`` entry of a loaded artifact, or None (a MaxQ training checkpoint, or not a dict)."""
    if isinstance(obj, dict):
        fmt = obj.get("format")
        if isinstance(fmt, str):
            return fmt
    return None


def is_tool_artifact(obj: object) -> bool:
    """Whether ``obj`` claims to be written by maxq-deploy (any version, any kind)."""
    fmt = format_of(obj)
    return fmt is not None and fmt.startswith(PREFIX)


def check_format(obj: object, expected: str, path: str | os.PathLike[str]) -> dict:
    """``obj`` as a dict of format ``expected`` at a version this tool reads, else one-line error."""
    spec = FORMATS[expected]
    found = format_of(obj)
    what = spec.kind.replace("-", " ")
    if found != expected:
        shown = found if found is not None else (type(obj).__name__ if not isinstance(obj, dict) else None)
        raise InputFileError(f"{path} is not a {what} (format {shown!r}); make one with: {spec.make_hint}")
    assert isinstance(obj, dict)
    version = obj.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InputFileError(
            f"{path}: damaged {what} (format_version {version!r} is not a version number; this maxq-deploy reads "
            f"version {spec.version})"
        )
    if version > spec.version:
        raise InputFileError(
            f"{path}: {what} format version {version} is newer than this maxq-deploy reads (version {spec.version}); "
            "upgrade maxq-deploy"
        )
    return obj


def artifact_format(obj: object, path: str | os.PathLike[str]) -> ArtifactFormat | None:
    """The registered format of a tool artifact (checked), None for a foreign file; unknown tool formats fail."""
    found = format_of(obj)
    if found is None:
        return None
    if found not in FORMATS:
        raise InputFileError(f"{path}: artifact format {found!r} is not a model this version of maxq-deploy can read")
    check_format(obj, found, path)
    return FORMATS[found]
