"""One exception hierarchy for everything a user can get wrong.

Every error here means "bad input or missing backend": the CLI prints its message as one line
and exits with ``exit_code``. Any other exception escaping the library is a bug.
"""

from __future__ import annotations


class MaxQDeployError(Exception):
    """Base class: a problem with the user's input or environment, never a bug."""

    exit_code: int = 2


class InputFileError(MaxQDeployError):
    """A file is missing, unreadable, truncated, unsafe, or not of the expected kind."""


class OutputPathError(MaxQDeployError):
    """An output cannot be written where the user asked."""


class UnsupportedArchitectureError(MaxQDeployError):
    """The checkpoint or option names an architecture the registry does not know."""


class CheckpointFormatError(MaxQDeployError):
    """The checkpoint's keys or shapes do not match its architecture."""


class SparsityPatternError(MaxQDeployError):
    """The N:M pattern is wrong, inconsistent, or cannot be determined."""


class UnfinishedSparsityError(SparsityPatternError):
    """Incremental sparsity is not finished: some N:M groups are still dense."""

    exit_code = 1


class PatternViolationError(SparsityPatternError):
    """A verified artifact does not hold the hardware sparsity pattern."""

    exit_code = 1


class ParityError(MaxQDeployError):
    """An exported or transformed model does not reproduce its source within tolerance."""

    exit_code = 1


class DataError(MaxQDeployError):
    """A data set is missing, empty, unlabelled where labels are needed, or mis-shaped."""


class QuantizationError(MaxQDeployError):
    """Quantization cannot proceed or produced unusable ranges."""


class BackendUnavailableError(MaxQDeployError):
    """An optional backend (TensorRT, CUDA, pytorch-quantization) is not installed or usable."""


class OptionError(MaxQDeployError):
    """An option has a value the command cannot use (out of range, contradicting another)."""


class ProfileShapeError(OptionError):
    """TensorRT optimization-profile batches are invalid or do not fit the ONNX graph's input."""


class EngineBuildError(MaxQDeployError):
    """TensorRT rejected the ONNX graph or failed to build an engine from it."""


class EngineRunError(MaxQDeployError):
    """An engine cannot run the given batch (shape outside its profile, execution failure)."""


def first_line(exc: BaseException | str, limit: int = 200) -> str:
    """The first line of an exception's text, whitespace folded, cut at a word with "..." when long.

    Foreign libraries (torch, numpy, ONNX Runtime) raise long multi-line texts; a one-line error
    quotes this instead, so no message ends mid-word without saying it was shortened.
    """
    text = str(exc).strip()
    lines = text.splitlines()
    line = " ".join((lines[0] if lines else "").split())
    if not line:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    if len(line) <= limit:
        return line + (" ..." if len(lines) > 1 else "")
    cut = line[:limit].rsplit(" ", 1)[0] if " " in line[:limit] else line[:limit]
    return cut.rstrip(" ,;:") + " ..."
