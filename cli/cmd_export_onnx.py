"""``maxq-deploy export onnx``: parse options, call :func:`maxq_deploy.export.tensorrt_form.export_onnx`, render."""

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
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Square input size in pixels, fixed in the graph (default: the size the checkpoint records: quantized at its calibration size, else 32 for the CIFAR ResNets, 224 for the others; with --calib arrays (.npy/.npz), their size, as quantize takes them)."),
    target: str = typer.Option(
        "tensorrt", "--target",
        help="tensorrt: the graph TensorRT wants (fp32/fp16, or symmetric int8 Q/DQ from a quantized checkpoint); "
             "onnxruntime: ONNX Runtime's fast int8 form (uint8 activations), fastest on CPUs: from a quantized checkpoint "
             "its own ranges (no data), from a folded checkpoint with --calib ONNX Runtime's quantizer.",
    ),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration data for --target onnxruntime with a folded checkpoint (a quantized one carries its ranges)."),
    calib_batches: Optional[int] = typer.Option(None, "--calib-batches", help="Calibration batches (--target onnxruntime; default 8)."),
    calib_batch_size: Optional[int] = typer.Option(None, "--calib-batch-size", help="Images per calibration batch (--target onnxruntime; default 8)."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize the shorter side of calibration images to this (default: input size x 256/224; CIFAR ResNets: the input size)."),
    calibrate_method: Optional[str] = typer.Option(None, "--calibrate-method", help="minmax (default), entropy or percentile (--target onnxruntime)."),
    float_regions: Optional[str] = typer.Option(
        None, "--float-regions",
        help="INT8 Q/DQ graphs (--target tensorrt): fp16 or fp32 for the float parts (stem, epilogue). Default fp16: "
             "TensorRT 11.x and 10.12+ build strongly typed and run them in the graph's type; fp32 only when the "
             "installed TensorRT is a weakly typed 10.x before 10.12.",
    ),
    cpu_isa: Optional[str] = typer.Option(
        None, "--cpu-isa",
        help="int8 CPU form (--target onnxruntime): portable (default: 7-bit weights, exact on every x86 CPU) or vnni "
             "(8-bit weights: fastest on CPUs with AVX-512 VNNI/AVX-VNNI/AMX, saturates on AVX2-only CPUs). Recorded in "
             "the graph's maxq_deploy.cpu_isa metadata.",
    ),
    quantizer: Optional[str] = typer.Option(
        None, "--quantizer",
        help="Who makes the INT8 graph for --target tensorrt: checkpoint (default: a quantized checkpoint's ranges, "
             "maxq-deploy quantize first) or modelopt (NVIDIA ModelOpt's ONNX PTQ on the folded checkpoint's fp32 "
             "graph, calibrated on --calib DATA on the CPU; needs pip install 'maxq-deploy[modelopt]').",
    ),
    exporter: Optional[str] = typer.Option(None, "--exporter", help="torch exporter (--target tensorrt): dynamo (default, torch's current one; writes opset 18, converted down to --opset) or torchscript (the legacy one). Both give the same graph."),
    json_out: bool = JsonOpt,
) -> None:
    """Export to ONNX with checkpoint layer names and metadata; ends with an ONNX Runtime parity check."""
    from maxq_deploy.export import export_model
    from maxq_deploy.export.tensorrt_form import ExportResult
    from maxq_deploy.export.ort_calibrated import OrtExportResult
    from maxq_deploy.export.modelopt_onnx import ModelOptExportResult
    from maxq_deploy.core.progress import RichProgress

    result = export_model(
        model, output, target, precision=precision, opset=opset, batch=batch, dynamic_batch=True if dynamic_batch else None,
        input_size=input_size, calib=calib, calib_batches=calib_batches, calib_batch_size=calib_batch_size, resize=resize,
        calibrate_method=calibrate_method, float_regions=float_regions, cpu_isa=cpu_isa, exporter=exporter,
        **({} if quantizer is None else {"quantizer": quantizer}), progress=RichProgress(enabled=not json_out and sys.stderr.isatty()),
    )
    if json_out:
        return print_json(result.summary())
    if isinstance(result, OrtExportResult):
        return _render_ort_calibrated(result)
    if isinstance(result, ModelOptExportResult):
        return _render_modelopt(result)
    if not isinstance(result, ExportResult):
        return _render_ort_from_checkpoint(result)
    p = result.parity
    shape = "x".join(map(str, result.input_shape))
    rows = [
        ("model", f"{result.arch}, {result.num_classes} classes, trained N:M {result.nm or '-'} ({result.source_kind})"),
        ("precision", f"{result.precision} inside, {result.io_dtype} input/output"),
        ("graph", f"opset {result.opset}, input '{shape}', target {result.target}, {result.exporter}"),
        ("layers", f"{len(result.layers)} Conv/Gemm named after the checkpoint, {len(result.sparse_layers)} sparse"),
        ("parity", f"max abs {p.max_abs_error:.3g}, relative {p.relative_error:.3g} (tolerance {p.tolerance:g}), "
                   f"batch {'x'.join(map(str, p.batch_shape))} vs {p.reference}"),
    ]
    _print_export("export onnx", result, rows, p.passed, f"parity PASS ({p.relative_error:.2g} <= {p.tolerance:g})")
    if not result.pattern_ok:
        console.print(verdict_style(False, f"warning: {result.pattern_verdict}"), highlight=False)


def _render_ort_calibrated(result) -> None:
    rows = [
        ("model", f"{result.arch}, {result.num_classes} classes, trained N:M {result.nm or '-'}"),
        ("precision", f"int8 weights (per channel), {result.options.activation_type} activations, {result.options.quant_format.upper()} format"),
        ("calibration", f"{result.calibration.get('images')} images, {result.options.calibrate_method}"),
        ("parity vs fp32", result.parity.describe()),
    ]
    _print_export("export onnx (target onnxruntime)", result, rows, result.parity.passed and result.pattern_ok,
                  "int8 graph written for ONNX Runtime")


def _render_ort_from_checkpoint(result) -> None:
    p = result.parity
    matching = sum(r.matches for r in result.ranges)
    rows = [
        ("model", f"{result.arch}, {result.num_classes} classes, trained N:M {result.nm or '-'}"),
        ("precision", f"int8 weights (per channel), uint8 activations, QDQ format, ReLU outputs {result.relu_range}"),
        ("cpu form", "portable: 7-bit weights, exact on every x86 CPU" if result.cpu_isa == "portable"
         else "vnni: 8-bit weights, fastest with VNNI/AMX, saturates on CPUs without them"),
        ("ranges", f"the checkpoint's ({result.mode.upper()}), no calibration: {matching} of {len(result.ranges)} layers "
                   f"quantize with its amax; {len(result.derived_ranges)} conv outputs before a residual Add get a derived range"),
        ("layers", f"{len(result.int8_layers)} Conv/Gemm in int8, {len(result.float_layers)} float ({', '.join(result.float_layers) or '-'})"),
        ("parity", f"{p.describe()} vs {p.reference}; top-1 agreement {result.top1_agreement:.0%}"),
    ]
    _print_export("export onnx (target onnxruntime)", result, rows, p.passed and result.pattern_ok and result.ranges_match,
                  "int8 graph written for ONNX Runtime")


def _render_modelopt(result) -> None:
    p, c = result.parity, result.calibration
    int8 = [layer for layer in result.layers if layer.int8]
    per_channel = sum(layer.weight_scales > 1 for layer in int8)
    qdq = f"{result.op_counts.get('QuantizeLinear', 0)} QuantizeLinear, {result.op_counts.get('DequantizeLinear', 0)} DequantizeLinear"
    rows = [
        ("model", f"{result.arch}, {result.num_classes} classes, trained N:M {result.nm or '-'} (folded checkpoint)"),
        ("quantizer", f"NVIDIA ModelOpt {result.modelopt_version} ONNX PTQ (int8, CPU calibration, {c['method']})"),
        ("precision", f"int8 Q/DQ: weights int8 per channel ({per_channel} of {len(int8)} layers), activations per tensor; "
                      f"float regions {result.float_regions}"),
        ("graph", f"opset {result.opset}, input 'batchx3x{result.input_size}x{result.input_size}', target tensorrt, {qdq}"),
        ("calibration", escape(f"{c['images']} images in {c['batches']} batches from {c['source']}, {c['seconds']:.1f} s")),
        ("layers", f"{len(int8)} of {len(result.layers)} Conv/Gemm int8; float: "
                   + (", ".join(layer.name for layer in result.float_layers) or "-")),
        ("parity", f"{p.describe()} vs {p.reference}"),
    ]
    _print_export("export onnx (quantizer modelopt)", result, rows, p.passed and result.pattern_ok,
                  "int8 Q/DQ graph written for TensorRT (ModelOpt)")


def _print_export(title: str, result, rows: list[tuple[str, str]], passed: bool, verdict: str) -> None:
    """One export's table (its output and size first; the 2:4 verdict and the time last), its notes, its verdict line."""
    rows = [("output", escape(f"{result.output} ({result.size_bytes / 1e6:.1f} MB)")), *rows,
            (f"{result.pattern} in ONNX", result.pattern_verdict), ("time", f"{result.seconds:.1f} s")]
    console.print(table(escape(f"{title}: {result.source} -> {result.output}"), ["", "result"], rows))
    for note in result.notes:
        console.print(escape(f"note: {note}"), highlight=False)
    console.print(verdict_style(passed, verdict), highlight=False)
