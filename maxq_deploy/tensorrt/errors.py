"""TensorRT-stage errors: subclasses of the project's one hierarchy (``maxq_deploy.errors``)."""

from __future__ import annotations

from maxq_deploy.errors import BackendUnavailableError, InputFileError, MaxQDeployError

__all__ = ["BackendUnavailableError", "EngineBuildError", "EngineRunError", "InputFileError", "ProfileShapeError"]


class ProfileShapeError(MaxQDeployError):
    """Optimization-profile batches are invalid or do not fit the ONNX graph's input."""


class EngineBuildError(MaxQDeployError):
    """TensorRT rejected the ONNX graph or failed to build an engine from it."""


class EngineRunError(MaxQDeployError):
    """An engine cannot run the given batch (shape outside its profile, execution failure)."""
