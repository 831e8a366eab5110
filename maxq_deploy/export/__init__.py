"""ONNX export: one entry (:func:`export_model`), one module per target, one parity check.

- :mod:`.tensorrt_form`: the graph TensorRT wants (fp32/fp16, or symmetric INT8 Q/DQ from a
  quantized checkpoint);
- :mod:`.ort_calibrated`: ONNX Runtime's int8 form from a folded checkpoint and data (its own
  static quantizer); :mod:`.ort_from_quantized` + :mod:`.ort_rewrite`: the same form from a
  quantized checkpoint's own ranges;
- :mod:`.common`: the parity check every target ends with, the fields every result shares.
"""

from __future__ import annotations

import os

from maxq_deploy.core.errors import OptionError
from maxq_deploy.export.common import ExportSummary

#: Export targets: name -> the options ``export onnx`` may pass it (anything else given is refused).
#: ``tensorrt``: symmetric Q/DQ, TensorRT's rules; ``onnxruntime``: the form ONNX Runtime's CPU kernels run fastest.
EXPORT_TARGETS: dict[str, frozenset[str]] = {
    "tensorrt": frozenset({"precision", "opset", "batch", "dynamic_batch", "input_size", "float_regions", "exporter", "progress"}),
    "onnxruntime": frozenset({"precision", "opset", "input_size", "calib", "calib_batches", "calib_batch_size", "resize",
                              "calibrate_method", "cpu_isa", "progress"}),
}


def export_model(model_path: str | os.PathLike[str], output: str | os.PathLike[str], target: str = "tensorrt",
                 **options) -> ExportSummary:
    """Export ``model_path`` for ``target`` (see :data:`EXPORT_TARGETS`); what ``export onnx`` runs.

    An option the target does not take is refused when given (not None) and dropped when unset.
    """
    key = str(target).strip().lower()
    if key not in EXPORT_TARGETS:
        raise OptionError(f"--target {target!r} is not supported; choose one of {', '.join(EXPORT_TARGETS)}")
    for name, value in list(options.items()):
        if name not in EXPORT_TARGETS[key]:
            if value is not None:
                raise OptionError(f"--{name.replace('_', '-')} does not apply to --target {key}")
            del options[name]  # an option left unset
    if key == "tensorrt":
        from maxq_deploy.export.tensorrt_form import export_onnx

        return export_onnx(model_path, output, **options)
    from maxq_deploy.export.ort_calibrated import export_for_onnxruntime

    return export_for_onnxruntime(model_path, output, **options)
