"""CPU INT8: fp32 ONNX vs the ONNX Runtime INT8 target, measured side by side in ONE bench run.

ResNet-50 (reference 2:4 checkpoint with random weights, 1000 classes, 224x224) is folded,
exported to fp32 ONNX (``export_onnx``) and quantized by :func:`maxq_deploy.export.ort_calibrated.export_ort_int8`
in each requested variant; then ``maxq_deploy.bench.benchmark`` measures all graphs interleaved
at batch 1 and 8 with 2 threads. Target: the ONNX Runtime INT8 graph >= 2.5x fp32 at batch 8.

Variants (``--variants``, comma-separated):

- ``qdq``            QDQ, uint8 activations (asymmetric, ReLU-aware), int8 per-channel weights, MinMax
- ``qoperator``      the same in QOperator form (QLinearConv, QLinearAdd, ...)
- ``qdq-pertensor``  per-tensor weights
- ``qdq-reducerange`` 7-bit weights (for CPUs without VNNI)
- ``qdq-percentile`` percentile (99.999) calibration
- ``qdq-entropy``    entropy calibration (slow: histograms of every activation)
- ``qdq-s8s8``       symmetric int8 activations and weights: the TensorRT-style Q/DQ numbers,
                     made by the same quantizer, to show what uint8 activations buy on CPU

Unless ``--no-tensorrt-qdq``, the run also holds the TensorRT-target INT8 graph made the
project's own way: ``maxq_deploy.quantize.quantize_ptq`` (pytorch-quantization, max calibrator, on
the same calibration images) + ``export_onnx`` (symmetric Q/DQ, TensorRT's rules). Skipped with a
note where pytorch-quantization is not installed.

    python benchmarks/cpu_int8_benchmark.py --threads 2 --batch-sizes 1,8 --out cpu_int8.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from _fixtures import add_timing_options, reference_folded

VARIANTS: dict[str, dict] = {
    "qdq": {},
    "qoperator": {"quant_format": "qoperator"},
    "qdq-pertensor": {"per_channel": False},
    "qdq-reducerange": {"reduce_range": True},
    "qdq-percentile": {"calibrate_method": "percentile"},
    "qdq-entropy": {"calibrate_method": "entropy"},
    "qdq-s8s8": {"activation_type": "int8", "activation_symmetric": True},
}
TARGET_SPEEDUP = 2.5


def tensorrt_qdq_onnx(work: Path, folded: Path, calib: np.ndarray, arch: str, size: int) -> Path | None:
    """The quantize stage's symmetric INT8 Q/DQ graph (TensorRT's rules), or None where it cannot run."""
    from maxq_deploy.core.errors import BackendUnavailableError
    from maxq_deploy.export.tensorrt_form import export_onnx

    try:
        from maxq_deploy.quantize import quantize_ptq
    except ImportError as exc:
        print(f"TensorRT-target Q/DQ graph skipped: {exc}")
        return None
    data, quantized, onnx_path = work / "calib.npy", work / f"{arch}.quantized.pt", work / f"{arch}_int8_tensorrt_qdq.onnx"
    np.save(data, calib)
    try:
        quantize_ptq(folded, quantized, data, calibrator="max", calib_batches=len(calib) // 8, batch_size=8, workers=0)
    except BackendUnavailableError as exc:
        print(f"TensorRT-target Q/DQ graph skipped: {exc}")
        return None
    result = export_onnx(quantized, onnx_path, input_size=size)
    print(f"exported tensorrt Q/DQ (quantize_ptq + export_onnx): parity {result.parity.describe()}; {result.pattern_verdict}")
    return onnx_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_options(parser, batch_sizes="1,8", iters=20, warmup=3, what="model")
    parser.add_argument("--variants", default="qdq,qoperator,qdq-s8s8", help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--calib-batch-size", type=int, default=8)
    parser.add_argument("--no-tensorrt-qdq", action="store_true", help="leave out the TensorRT-target Q/DQ graph")
    parser.add_argument("--workdir", type=Path, default=Path("cpu-int8-work"))
    parser.add_argument("--out", type=Path, default=Path("cpu_int8_benchmark.json"))
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"command: {command}", flush=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")

    from maxq_deploy.bench import benchmark, environment_line
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.export.ort_calibrated import OrtQuantOptions, export_ort_int8
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    size = args.input_size
    folded, fp32 = work / f"{args.arch}.folded.pt", work / f"{args.arch}_fp32.onnx"
    reference_folded(args.arch, work)
    if not fp32.exists():
        export_onnx(folded, fp32, input_size=size)
    calib = np.random.default_rng(1).standard_normal((args.calib_batches * args.calib_batch_size, 3, size, size), dtype=np.float32)
    exports = {}
    models = [fp32]
    for name in variants:
        path = work / f"{args.arch}_int8_{name}.onnx"
        started = time.perf_counter()
        result = export_ort_int8(folded, path, calib, args.calib_batches, args.calib_batch_size, input_size=size,
                                 options=OrtQuantOptions(**VARIANTS[name]))
        exports[name] = {
            "path": str(path), "options": result.summary()["options"], "parity": result.summary()["parity"],
            "pattern_verdict": result.pattern_verdict, "op_counts": result.op_counts,
            "export_seconds": round(time.perf_counter() - started, 1), "size_mb": round(result.size_bytes / 1e6, 2),
        }
        p = result.parity
        print(f"exported {name}: top-1 agreement {p.top1_agreement:.1%}, relative error {p.relative_error:.3g}; "
              f"{result.pattern_verdict} ({exports[name]['export_seconds']} s)", flush=True)
        models.append(path)
    if not args.no_tensorrt_qdq:
        trt_path = tensorrt_qdq_onnx(work, folded, calib, args.arch, size)
        if trt_path is not None:
            models.append(trt_path)

    result = benchmark(models, batch_sizes=args.batch_sizes, warmup=args.warmup, iters=args.iters, threads=args.threads,
                       block=args.block, plot_path=args.plot)
    rows = []
    print(f"\n{'model':34} {'batch':>5} {'mean ms':>9} {'p50 ms':>9} {'p90 ms':>9} {'img/s':>8} {'vs fp32':>8}")
    for m in result.measurements:
        s = m.latency
        print(f"{m.model:34} {m.batch:>5} {s.mean_ms:9.2f} {s.p50_ms:9.2f} {s.p90_ms:9.2f} {m.throughput_ips:8.1f} {m.speedup_vs_first:7.2f}x")
        rows.append(m.to_dict())
    last = max(result.settings.batch_sizes)
    headline = {
        m.model: m.speedup_vs_first for m in result.measurements if m.batch == last and m.model_index > 0
    }
    best = max(headline.values(), default=0.0)
    print(f"\nbatch {last} speed-up vs fp32: " + ", ".join(f"{k} {v:.2f}x" for k, v in headline.items()))
    print(f"target >= {TARGET_SPEEDUP}x: {'met' if best >= TARGET_SPEEDUP else 'NOT met'} (best {best:.2f}x)")
    print(f"environment: {environment_line(result.environment)}")
    report = {
        "command": command,
        "arch": args.arch,
        "input_size": size,
        "target_speedup": TARGET_SPEEDUP,
        "speedup_vs_fp32_at_largest_batch": headline,
        "target_met": best >= TARGET_SPEEDUP,
        "exports": exports,
        "bench": result.to_dict(),
    }
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
