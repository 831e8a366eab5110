#!/usr/bin/env python3
"""Sparse vs dense TensorRT engines of the SAME graph, INT8 and fp16: throughput per batch and sparse-tactic share.

    python benchmarks/trt_sparse_benchmark.py [--onnx MODEL.onnx ...] [--batches 1,8,64,256] [--out result.json]

Without ``--onnx`` a reference ResNet-50 2:4 checkpoint (random weights: speed only, its accuracy
means nothing) is made, folded and exported twice: the INT8 Q/DQ graph (PTQ ``max`` calibration on
random images, fp16 float regions; needs pytorch-quantization) and the fp16 graph. Each graph
gives two engines built with the same profile (``--dense`` differs only by
``BuilderFlag.SPARSE_WEIGHTS``), timed on device-resident inputs with CUDA events (no host copies)
at batch 1, 8, 64 and 256, and reported with the share of eligible layers that got a sparse
tactic and whether they run INT8 in and out. The first lines say what was exported and how. For
the INT8 number of a real model pass the ONNX written by ``maxq-deploy quantize`` + ``maxq-deploy
export onnx``. Needs TensorRT and a CUDA GPU; elsewhere it exits with one line saying what is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, action="append",
                        help="ONNX graph to benchmark (repeatable; default: reference ResNet-50 2:4 INT8 Q/DQ and fp16 exports)")
    parser.add_argument("--arch", default="resnet50", help="reference architecture when --onnx is not given")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batches", default="1,8,64,256", help="comma-separated batch sizes")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs per batch")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per engine and batch")
    parser.add_argument("--workspace", type=float, default=8.0, help="builder workspace in GiB")
    parser.add_argument("--workdir", type=Path, default=Path("trt-sparse-bench"))
    parser.add_argument("--timing-cache", type=Path, help="timing cache shared by both builds")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def prepare_onnx(args: argparse.Namespace) -> list[tuple[Path, str]]:
    """[(ONNX path, what it is and how it was made)]: the given graphs, else the reference INT8 and fp16 exports."""
    if args.onnx:
        return [(path, "given") for path in args.onnx]
    import numpy as np

    from maxq_deploy.core.files import atomic_output
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    args.workdir.mkdir(parents=True, exist_ok=True)
    stem = f"{args.arch}_2of4"
    ckpt, folded = args.workdir / f"{stem}.pth.tar", args.workdir / f"{stem}.folded.pt"
    if not folded.exists():
        save_checkpoint(make_checkpoint(args.arch, "2:4", num_classes=1000), ckpt)
        fold_checkpoint(ckpt, folded)
    graphs = []
    int8_onnx = args.workdir / f"{stem}_int8_{args.input_size}.onnx"
    try:
        import pytorch_quantization  # noqa: F401 - only whether it imports
    except ImportError:
        print("note: pytorch-quantization is not installed: no INT8 Q/DQ graph, fp16 only "
              "(pip install pytorch-quantization==2.1.3, or pass --onnx with an INT8 export)", file=sys.stderr)
    else:
        if not int8_onnx.exists():
            from maxq_deploy.quantize import quantize_ptq

            calib = args.workdir / f"calib_random_{args.input_size}.npz"
            images = np.random.default_rng(0).standard_normal((32, 3, args.input_size, args.input_size)).astype(np.float32)
            with atomic_output(calib) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, images=images, labels=np.zeros(len(images), np.int64))
            quantized = args.workdir / f"{stem}.int8.pt"
            quantize_ptq(folded, quantized, calib, calibrator="max", calib_batches=2, batch_size=16, workers=0)
            export_onnx(quantized, int8_onnx, input_size=args.input_size, float_regions="fp16")
        graphs.append((int8_onnx, "reference INT8 Q/DQ: PTQ max calibration on 32 random images, fp16 float regions"))
    fp16_onnx = args.workdir / f"{stem}_fp16_{args.input_size}.onnx"
    if not fp16_onnx.exists():
        export_onnx(folded, fp16_onnx, precision="fp16", input_size=args.input_size)
    graphs.append((fp16_onnx, "reference fp16 (folded, all fp16 inside, float32 I/O)"))
    for path, origin in graphs:
        print(f"exported: {path} ({origin})", file=sys.stderr)
    return graphs


def time_engine(runner, batch: int, input_size: int, warmup: int, min_seconds: float) -> dict:
    import torch

    x = torch.randn(batch, 3, input_size, input_size, device="cuda")
    for _ in range(warmup):
        runner.run_device(x)
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    iterations, elapsed_ms, wall = 0, 0.0, time.perf_counter()
    while elapsed_ms < min_seconds * 1000 or iterations < 10:
        start.record()
        for _ in range(10):
            runner.run_device(x)
        stop.record()
        stop.synchronize()
        elapsed_ms += start.elapsed_time(stop)
        iterations += 10
        if time.perf_counter() - wall > 10 * max(min_seconds, 1):
            break
    latency_ms = elapsed_ms / iterations
    return {"batch": batch, "iterations": iterations, "latency_ms": latency_ms, "images_per_s": batch * 1000.0 / latency_ms}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from maxq_deploy.core.errors import MaxQDeployError
    from maxq_deploy.runtimes import tensorrt_api as _trt

    try:
        trt = _trt.import_tensorrt()
        _trt.require_cuda_gpu("the sparse TensorRT benchmark", need_torch_cuda=True)
    except MaxQDeployError as exc:
        print(f"trt_sparse_benchmark: {exc}", file=sys.stderr)
        return 2
    try:
        batches = sorted({int(b) for b in args.batches.split(",") if b.strip()})
        if not batches or batches[0] < 1:
            raise ValueError
    except ValueError:
        print(f"trt_sparse_benchmark: --batches must be positive integers like 1,8,64,256, got {args.batches!r}", file=sys.stderr)
        return 2

    try:
        args.workdir.mkdir(parents=True, exist_ok=True)
        results = [bench_graph(args, onnx_path, origin, batches) for onnx_path, origin in prepare_onnx(args)]
    except MaxQDeployError as exc:
        print(f"trt_sparse_benchmark: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    gpu = _trt.gpu_identity()
    summary = {"trt_version": str(trt.__version__), "gpu": gpu, "input_size": args.input_size, "graphs": results}
    print(f"{gpu.get('name') or 'unknown GPU'}, TensorRT {trt.__version__}, CUDA driver {gpu.get('cuda_driver_version')}")
    for result in results:
        print(f"\n{result['graph_precision']} graph ({result['origin']}): {result['onnx']}")
        print(f"sparse engine: {result['sparse_layers']} ({result['sparse_tactic_share_of_eligible']:.0%} of eligible layers "
              f"run a sparse tactic; {result['eligible_int8_in_out']} of {result['totals']['eligible']} eligible INT8 in and out)")
        print(f"{'batch':>6} {'dense img/s':>12} {'sparse img/s':>13} {'speedup':>8}")
        for row in result["rows"]:
            print(f"{row['batch']:>6} {row['dense']['images_per_s']:>12.1f} {row['sparse']['images_per_s']:>13.1f} {row['speedup']:>7.2f}x")
    if args.out:
        from maxq_deploy.core.files import atomic_output

        with atomic_output(args.out) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"results -> {args.out}")
    return 0


def bench_graph(args: argparse.Namespace, onnx_path: Path, origin: str, batches: list[int]) -> dict:
    """Dense and sparse engines of one graph, timed at every batch."""
    from maxq_deploy.runtimes.tensorrt_runner import TensorRTRunner
    from maxq_deploy.tensorrt.build import build_engine

    opt = batches[len(batches) // 2]
    engines = {}
    for kind in ("dense", "sparse"):
        out = args.workdir / f"{onnx_path.stem}.{kind}.engine"
        print(f"building {kind} engine from {onnx_path} (batch {batches[0]}..{batches[-1]}) ...", file=sys.stderr)
        engines[kind] = build_engine(onnx_path, out, sparse=kind == "sparse", min_batch=batches[0], opt_batch=opt,
                                     max_batch=batches[-1], workspace_gib=args.workspace, timing_cache=args.timing_cache)
    rows = []
    runners = {kind: TensorRTRunner(result.output) for kind, result in engines.items()}
    try:
        for batch in batches:
            timing = {kind: time_engine(runners[kind], batch, args.input_size, args.warmup, args.min_seconds)
                      for kind in ("dense", "sparse")}
            rows.append({"batch": batch, "dense": timing["dense"], "sparse": timing["sparse"],
                         "speedup": timing["sparse"]["images_per_s"] / timing["dense"]["images_per_s"]})
    finally:
        for runner in runners.values():
            runner.close()
    report = engines["sparse"].report
    totals = report.totals()
    eligible = [layer for layer in report.layers if layer.eligible]
    return {
        "onnx": str(onnx_path), "origin": origin, "graph_precision": engines["sparse"].plan.graph_precision,
        "float_regions": report.reproducibility.get("float_regions"),
        "sparse_layers": report.summary_line(), "totals": totals,
        "sparse_tactic_share_of_eligible": totals["sparse"] / totals["eligible"] if totals["eligible"] else 0.0,
        "eligible_int8_in_out": sum((l.input_dtype, l.output_dtype) == ("int8", "int8") for l in eligible),
        "dense_flags": list(engines["dense"].plan.builder_flags), "sparse_flags": list(engines["sparse"].plan.builder_flags),
        "rows": rows,
        "not_sparse": [{"layer": ", ".join(l.checkpoint_layers) or l.trt_name, "reason": l.reason}
                       for l in report.layers if l.expected_sparse and not l.sparse_tactic],
    }


if __name__ == "__main__":
    sys.exit(main())
