"""INT8 quantization that keeps 2:4: PTQ with calibrators, mask-preserving QAT, Q/DQ ONNX.

``quantize(folded, out, QuantizeConfig(...))`` is the one entry: PTQ calibrates the ranges of a
folded checkpoint; QAT (``qat=True``) calibrates and then fine-tunes with fake quantization
while a fixed mask keeps every N:M zero at exactly 0. Both write a ``maxq-deploy/quantized``
checkpoint whose INT8 weights are checked for 2:4. pytorch-quantization is used only inside
:mod:`maxq_deploy.quantize.pq_adapter`, imported lazily: importing this package needs neither
it nor CUDA.

Modules: ``config`` (options), ``calibrate`` (the collection loop and checked ranges),
``histogram`` (ranges from histograms, pure numpy), ``ptq`` / ``qat`` (the two modes),
``artifact`` (the quantized checkpoint), ``result``, ``export`` (Q/DQ ONNX), ``verify``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

__all__ = [
    "CALIBRATORS",
    "QuantizeConfig",
    "QuantizeResult",
    "export_qdq_onnx",
    "int8_weight",
    "load_quantized_checkpoint",
    "load_quantized_model",
    "quantize",
    "quantize_ptq",
    "quantize_qat",
]

if TYPE_CHECKING:
    from maxq_deploy.quantize.artifact import int8_weight, load_quantized_checkpoint, load_quantized_model
    from maxq_deploy.quantize.config import CALIBRATORS, QuantizeConfig
    from maxq_deploy.quantize.export import export_qdq_onnx
    from maxq_deploy.quantize.ptq import quantize_ptq
    from maxq_deploy.quantize.qat import quantize_qat
    from maxq_deploy.quantize.result import QuantizeResult

_LAZY = {
    "CALIBRATORS": "maxq_deploy.quantize.config",
    "QuantizeConfig": "maxq_deploy.quantize.config",
    "QuantizeResult": "maxq_deploy.quantize.result",
    "export_qdq_onnx": "maxq_deploy.quantize.export",
    "int8_weight": "maxq_deploy.quantize.artifact",
    "load_quantized_checkpoint": "maxq_deploy.quantize.artifact",
    "load_quantized_model": "maxq_deploy.quantize.artifact",
    "quantize_ptq": "maxq_deploy.quantize.ptq",
    "quantize_qat": "maxq_deploy.quantize.qat",
}



def quantize(folded: str | os.PathLike[str], output: str | os.PathLike[str], config: QuantizeConfig, progress: Any = None) -> QuantizeResult:
    """Quantize a folded checkpoint as ``config`` says and write the quantized checkpoint."""
    if config.qat:
        from maxq_deploy.quantize.qat import quantize_qat

        return quantize_qat(folded, output, config.train_data, config.val_data, progress=progress, **config.arguments("qat"))
    if config.backend == "modelopt":
        from maxq_deploy.quantize.modelopt_ptq import quantize_ptq_modelopt

        return quantize_ptq_modelopt(folded, output, config.calib_data, progress=progress, **config.arguments("modelopt"))
    from maxq_deploy.quantize.ptq import quantize_ptq

    return quantize_ptq(folded, output, config.calib_data, progress=progress, **config.arguments("ptq"))


def __getattr__(name: str):
    """Import the stage's modules on first use (keeps ``import maxq_deploy.quantize`` light)."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
