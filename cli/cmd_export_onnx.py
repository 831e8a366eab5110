"""``maxq-deploy export onnx``: parse options, call :func:`maxq_deploy.export_onnx.export_onnx`, render."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from maxq_deploy.cli.base import JsonOpt, export_app
from maxq_deploy.cli.render import console, handle_errors, print_json, table, verdict_style


@export_app.command("onnx")
@handle_errors
def export_onnx_command(
    model: Path = typer.Argument(..., help="Folded checkpoint (maxq-deploy fold) or quantized checkpoint (maxq-deploy quantize)."),
    output: Path = typer.Option(..., "-o", "--output", help="ONNX file to write (.onnx)."),
    precision: Optional[str] = typer.Option(
        None, "--precision", help="fp32 (default) or fp16 for folded models; quantized checkpoints export as int8 Q/DQ."
    ),
    opset: int = typer.Option(17, "--opset", help="ONNX opset, 13..20 (17 is parsed by TensorRT 10 and 11)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Fixed batch size (default: dynamic batch axis)."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Dynamic batch axis (the default unless --batch is given)."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Square input size in pixels, fixed in the graph (default: the size the checkpoint records: quantized at its calibration size, else 32 for the CIFAR ResNets, 224 for the others)."),
    target: str = typer.Option(
        "tensorrt", "--target",
        help="tensorrt: the graph TensorRT wants (fp32/fp16, or symmetric int8 Q/DQ from a quantized checkpoint); "
             "onnxruntime: ONNX Runtime's fast int8 form (uint8 activations), fastest on CPUs: from a quantized checkpoint "
             "its own ranges (no data), from a folded checkpoint with --calib ONNX Runtime's quantizer.",
    ),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration data for --target onnxruntime with a folded checkpoint (a quantized one carries its ranges)."),
    calib_batches: int = typer.Option(8, "--calib-batches", help="Calibration batches (--target onnxruntime)."),
    calib_batch_size: int = typer.Option(8, "--calib-batch-size", help="Images per calibration batch (--target onnxruntime)."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize the shorter side of calibration images to this (default: input size x 256/224; CIFAR ResNets: the input size)."),
    calibrate_method: str = typer.Option("minmax", "--calibrate-method", help="minmax, entropy or percentile (--target onnxruntime)."),
    json_out: bool = JsonOpt,
) -> None:
    """Export to ONNX with checkpoint layer names and metadata; ends with an ONNX Runtime parity check."""
    from maxq_deploy.export_onnx import export_onnx
    from maxq_deploy.progress import RichProgress

    target = target.strip().lower()
    if target not in ("tensorrt", "onnxruntime"):
        from maxq_deploy.errors import OptionError

        raise OptionError(f"--target {target!r} is not supported; choose tensorrt or onnxruntime")
    if target == "onnxruntime":
        return _export_for_onnxruntime(model, output, precision, calib, calib_batches, calib_batch_size, resize, input_size,
                                       calibrate_method, opset, json_out)
    result = export_onnx(
        model, output, precision=precision, opset=opset, batch=batch, dynamic_batch=True if dynamic_batch else None,
        input_size=input_size, progress=RichProgress(enabled=not json_out and sys.stderr.isatty()), target=target,
    )
    if json_out:
        return print_json(result.summary())
    p = result.parity
    shape = "x".join(map(str, result.input_shape))
    rows = [
        ("output", escape(f"{result.output} ({result.size_bytes / 1e6:.1f} MB)")),
        ("model", f"{result.arch}, {result.num_classes} classes, trained N:M {result.nm or '-'} ({result.source_kind})"),
        ("precision", f"{result.precision} inside, {result.io_dtype} input/output"),
        ("graph", f"opset {result.opset}, input '{shape}', target {result.target}"),
        ("layers", f"{len(result.layers)} Conv/Gemm named after the checkpoint, {len(result.sparse_layers)} sparse"),
        ("parity", f"max abs {p.max_abs_error:.3g}, relative {p.relative_error:.3g} (tolerance {p.tolerance:g}), "
                   f"batch {'x'.join(map(str, p.batch_shape))} vs {p.reference}"),
        (f"{result.pattern} in ONNX", result.pattern_verdict),
        ("time", f"{result.seconds:.1f} s"),
    ]
    console.print(table(escape(f"export onnx: {result.source} -> {result.output}"), ["", "result"], rows))
    for note in result.notes:
        console.print(escape(f"note: {note}"), highlight=False)
    console.print(verdict_style(p.passed, f"parity PASS ({p.relative_error:.2g} <= {p.tolerance:g})"), highlight=False)
    if not result.pattern_ok:
        console.print(verdict_style(False, f"warning: {result.pattern_verdict}"), highlight=False)


def _export_for_onnxruntime(model: Path, output: Path, precision: Optional[str], calib: Optional[Path], calib_batches: int,
                            calib_batch_size: int, resize: Optional[int], input_size: Optional[int], calibrate_method: str, opset: int,
                            json_out: bool) -> None:
    from maxq_deploy.data import Preprocess
    from maxq_deploy.export_onnx import export_onnx
    from maxq_deploy.export_ort import OrtQuantOptions, export_ort_int8
    from maxq_deploy.progress import RichProgress

    progress = RichProgress(enabled=not json_out and sys.stderr.isatty())
    if (precision or "int8").lower() != "int8":  # fp32/fp16 graphs are the same for both targets
        result = export_onnx(model, output, precision=precision, opset=opset, input_size=input_size, progress=progress)
        return print_json(result.summary()) if json_out else console.print(f"wrote {escape(str(result.output))}: {result.parity.describe()}")
    from maxq_deploy.input_size import artifact_input_size

    found = artifact_input_size(model)
    input_size = found.resolve(input_size, "--input-size")
    if calib is None:  # a quantized checkpoint carries its ranges (a folded one is refused with the --calib hint)
        return _export_ort_from_checkpoint(model, output, input_size, opset, progress, json_out)
    preprocess = Preprocess(resize=found.resize(input_size, resize), image_size=input_size)
    result = export_ort_int8(model, output, calib, calib_batches=calib_batches, batch_size=calib_batch_size,
                             preprocess=preprocess, input_size=input_size, progress=progress,
                             options=OrtQuantOptions(calibrate_method=calibrate_method, opset=opset))
    if json_out:
        return print_json(result.summary())
    rows = [
        ("output", escape(f"{result.output} ({result.size_bytes / 1e6:.1f} MB)")),
        ("model", f"{result.arch}, {result.num_classes} classes, trained N:M {result.nm or '-'}"),
        ("precision", f"int8 weights (per channel), {result.options.activation_type} activations, {result.options.quant_format.upper()} format"),
        ("calibration", f"{result.calibration.get('images')} images, {result.options.calibrate_method}"),
        ("parity vs fp32", result.parity.describe()),
        (f"{result.pattern} in ONNX", result.pattern_verdict),
        ("time", f"{result.seconds:.1f} s"),
    ]
    console.print(table(escape(f"export onnx (target onnxruntime): {result.source} -> {result.output}"), ["", "result"], rows))
    for note in result.notes:
        console.print(escape(f"note: {note}"), highlight=False)
    console.print(verdict_style(result.parity.passed and result.pattern_ok, "int8 graph written for ONNX Runtime"), highlight=False)


def _export_ort_from_checkpoint(model: Path, output: Path, input_size: int, opset: int, progress, json_out: bool) -> None:
    from maxq_deploy.export_ort import export_ort_int8_from_quantized

    result = export_ort_int8_from_quantized(model, output, input_size=input_size, opset=opset, progress=progress)
    if json_out:
        return print_json(result.summary())
    p = result.parity
    matching = sum(r.matches for r in result.ranges)
    rows = [
        ("output", escape(f"{result.output} ({result.size_bytes / 1e6:.1f} MB)")),
        ("model", f"{result.arch}, {result.num_classes} classes, trained N:M {result.nm or '-'}"),
        ("precision", f"int8 weights (per channel), uint8 activations, QDQ format, ReLU outputs {result.relu_range}"),
        ("ranges", f"the checkpoint's ({result.mode.upper()}), no calibration: {matching} of {len(result.ranges)} layers "
                   f"quantize with its amax; {len(result.derived_ranges)} conv outputs before a residual Add get a derived range"),
        ("layers", f"{len(result.int8_layers)} Conv/Gemm in int8, {len(result.float_layers)} float ({', '.join(result.float_layers) or '-'})"),
        ("parity", f"{p.describe()} vs {p.reference}; top-1 agreement {result.top1_agreement:.0%}"),
        (f"{result.pattern} in ONNX", result.pattern_verdict),
        ("time", f"{result.seconds:.1f} s"),
    ]
    console.print(table(escape(f"export onnx (target onnxruntime): {result.source} -> {result.output}"), ["", "result"], rows))
    for note in result.notes:
        console.print(escape(f"note: {note}"), highlight=False)
    console.print(verdict_style(p.passed and result.pattern_ok and result.ranges_match, "int8 graph written for ONNX Runtime"),
                  highlight=False)
