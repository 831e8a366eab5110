"""The one call of torch's ONNX exporters: a module to an ONNX graph in its canonical form.

Two exporters, one result (:func:`maxq_deploy.onnx_graph.edit.canonical_form` reduces both to
the same nodes):

- ``dynamo`` (the default): ``torch.onnx.export(..., dynamo=True)``, torch's current exporter
  (``torch.export`` + onnxscript). It writes opset 18 at least; an older ``opset`` is reached by
  ``onnx.version_converter`` after canonicalization, and refused in one line if that fails
  (never silently ignored, as the exporter's own down-conversion does).
- ``torchscript``: ``torch.onnx.export(..., dynamo=False)``, the legacy exporter torch 2.13
  deprecates; its deprecation warning is swallowed here, so no command prints it.

Quantized networks are exported frozen (:mod:`maxq_deploy.quantize.frozen`): constant scales,
which both exporters turn into QuantizeLinear/DequantizeLinear.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import torch
from torch import nn

from maxq_deploy.core.errors import OptionError
from maxq_deploy.onnx_graph.edit import INPUT_NAME, OUTPUT_NAME, canonical_form

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_EXPORTER = "dynamo"
#: The dynamo exporter writes this opset at least.
DYNAMO_MIN_OPSET = 18
BATCH_DIM = "batch"


def exporter_name(exporter: str) -> str:
    return "torch.onnx.export (dynamo=True)" if exporter == "dynamo" else "torch.onnx.export (TorchScript, dynamo=False)"


@contextlib.contextmanager
def _quiet() -> object:
    """No warning, log line or progress print of the exporters reaches the user."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # TorchScript deprecation, tracer and dynamo warnings
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def torch_to_onnx(module: nn.Module, dummy: torch.Tensor, opset: int, dynamic_batch: bool, exporter: str = DEFAULT_EXPORTER):
    """Export ``module`` (eval mode) to an ONNX ModelProto: input ``input``, output ``output``, canonical form."""
    import onnx

    if exporter not in EXPORTERS:
        raise OptionError(f"--exporter {exporter!r} is not supported; choose one of {', '.join(EXPORTERS)}")
    module.eval()
    with _quiet(), torch.no_grad():
        if exporter == "dynamo":
            shapes = ({0: torch.export.Dim(BATCH_DIM)},) if dynamic_batch else None
            program = torch.onnx.export(
                module, (dummy,), dynamo=True, opset_version=max(opset, DYNAMO_MIN_OPSET), input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=shapes, optimize=True, verbose=False, external_data=False,
            )
            model = program.model_proto
        else:
            buffer = io.BytesIO()
            axes = {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}} if dynamic_batch else None
            torch.onnx.export(
                module, (dummy,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True, export_params=True,
                keep_initializers_as_inputs=False,
            )
            model = onnx.load_from_string(buffer.getvalue())
    canonical_form(model)
    if dynamic_batch:
        _name_batch_axis(model)
    return _to_opset(model, opset, exporter)


def _name_batch_axis(model) -> None:
    """The dynamic batch axis is ``batch`` in the graph I/O whatever the exporter called it."""
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH_DIM


def onnx_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _to_opset(model, opset: int, exporter: str):
    """Convert the dynamo exporter's opset 18 down to ``opset``; refuse in one line when onnx cannot."""
    from onnx import version_converter

    found = onnx_opset(model)
    if found == opset:
        return model
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises assorted errors; one line says which
        raise OptionError(
            f"--opset {opset}: the {exporter} exporter wrote opset {found} and onnx could not convert it "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); use --opset {found} or --exporter torchscript"
        ) from None
    if onnx_opset(converted) != opset:
        raise OptionError(f"--opset {opset}: the {exporter} exporter wrote opset {found}; use --opset {found} or --exporter torchscript")
    return converted
