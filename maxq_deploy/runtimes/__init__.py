"""Runtimes that execute a model on a batch: torch, ONNX Runtime, TensorRT (lazy)."""

from maxq_deploy.runtimes.base import Runner

__all__ = ["Runner"]
