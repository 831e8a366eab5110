"""ONNX export: one entry (:func:`export_model`), one module per target, one parity check.

- :mod:`.tensorrt_form`: the graph TensorRT wants (fp32/fp16, or symmetric INT8 Q/DQ from a
  quantized checkpoint);
- :mod:`.ort_calibrated`: ONNX Runtime's int8 form from a folded checkpoint and data (its own
  static quantizer); :mod:`.ort_from_quantized` + :mod:`.ort_rewrite`: the same form from a
  quantized checkpoint's own ranges;
- :mod:`.modelopt_onnx`: TensorRT's INT8 Q/DQ graph from a folded checkpoint and data, placed and
  calibrated by NVIDIA ModelOpt's ONNX quantizer (``--quantizer modelopt``);
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

#: ``--quantizer``: who makes the INT8 graph. ``checkpoint`` (the default): a quantized checkpoint's
#: ranges (``maxq-deploy quantize`` first); ``modelopt``: ModelOpt's ONNX PTQ on the folded fp32 graph.
QUANTIZERS = ("checkpoint", "modelopt")
#: The options ``--quantizer modelopt`` takes (``--target tensorrt`` only).
MODELOPT_OPTIONS = frozenset({"precision", "opset", "dynamic_batch", "input_size", "calib", "calib_batches", "calib_batch_size",
                              "resize", "calibrate_method", "float_regions", "exporter", "progress"})


def export_model(model_path: str | os.PathLike[str], output: str | os.PathLike[str], target: str = "tensorrt",
                 **options) -> ExportSummary:
    """Export ``model_path`` for ``target`` (see :data:`EXPORT_TARGETS`); what ``export onnx`` runs.

    An option the target does not take is refused when given (not None) and dropped when unset.
    ``quantizer`` (None: ``checkpoint``, see :data:`QUANTIZERS`) ``modelopt`` runs
    :func:`maxq_deploy.export.modelopt_onnx.export_for_tensorrt_with_modelopt`.
    """
    key = str(target).strip().lower()
    if key not in EXPORT_TARGETS:
        raise OptionError(f"--target {target!r} is not supported; choose one of {', '.join(EXPORT_TARGETS)}")
    quantizer = options.pop("quantizer", None)
    if quantizer is not None and str(quantizer).strip().lower() not in QUANTIZERS:
        raise OptionError(f"--quantizer {quantizer!r} is not supported; choose one of {', '.join(QUANTIZERS)}")
    if quantizer is not None and str(quantizer).strip().lower() == "modelopt":
        if key != "tensorrt":
            raise OptionError(f"--quantizer modelopt makes TensorRT's INT8 Q/DQ graph; it does not apply to --target {key} "
                              "(use --target tensorrt, or --target onnxruntime --calib DATA for ONNX Runtime's own quantizer)")
        from maxq_deploy.export.modelopt_onnx import export_for_tensorrt_with_modelopt

        return export_for_tensorrt_with_modelopt(model_path, output, **_options_for("--quantizer modelopt", MODELOPT_OPTIONS, options))
    options = _options_for(f"--target {key}", EXPORT_TARGETS[key], options)
    if key == "tensorrt":
        from maxq_deploy.export.tensorrt_form import export_onnx

        return export_onnx(model_path, output, **options)
    from maxq_deploy.export.ort_calibrated import export_for_onnxruntime

    return export_for_onnxruntime(model_path, output, **options)


def _options_for(route: str, allowed: frozenset[str], options: dict) -> dict:
    """The ``options`` a route takes: one it does not take is refused when given, dropped when unset (None)."""
    for name, value in options.items():
        if name not in allowed and value is not None:
            raise OptionError(f"--{name.replace('_', '-')} does not apply to {route}")
    return {name: value for name, value in options.items() if name in allowed}
