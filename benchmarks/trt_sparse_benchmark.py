#!/usr/bin/env python3
"""Sparse vs dense TensorRT engines of the SAME graph: throughput per batch and sparse-tactic share.

    python benchmarks/trt_sparse_benchmark.py [--onnx MODEL.onnx] [--batches 1,8,64,256] [--out result.json]

Without ``--onnx`` a reference ResNet-50 2:4 checkpoint is made, folded and exported: INT8 Q/DQ
where the quantize stage offers ``maxq_deploy.quantize.quantize_checkpoint``, fp16 otherwise.
For the INT8 number of a real model pass the ONNX written by ``maxq-deploy quantize`` +
``maxq-deploy export onnx``. Both engines are built from that one file with the same profile
(``--dense`` differs only by ``BuilderFlag.SPARSE_WEIGHTS``), timed on device-resident inputs
with CUDA events (no host copies), and reported with the share of eligible layers that got a
sparse tactic. Needs TensorRT and a CUDA GPU; elsewhere it exits with one line saying what is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, help="ONNX graph to benchmark (default: a reference ResNet-50 2:4 export)")
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


def prepare_onnx(args: argparse.Namespace) -> tuple[Path, str]:
    """(ONNX path, how it was made)."""
    if args.onnx is not None:
        return args.onnx, "given"
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    args.workdir.mkdir(parents=True, exist_ok=True)
    ckpt, folded = args.workdir / f"{args.arch}_2of4.pth.tar", args.workdir / f"{args.arch}_2of4.folded.pt"
    fp16_onnx = args.workdir / f"{args.arch}_2of4_fp16_{args.input_size}.onnx"
    if not fp16_onnx.exists():
        save_checkpoint(make_checkpoint(args.arch, "2:4", num_classes=1000), ckpt)
        fold_checkpoint(ckpt, folded)
        export_onnx(folded, fp16_onnx, precision="fp16", input_size=args.input_size)
    print("note: benchmarking the reference fp16 graph (pass --onnx with an INT8 Q/DQ export for INT8)", file=sys.stderr)
    return fp16_onnx, "reference fp16"


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

    from maxq_deploy.tensorrt.build import build_engine
    from maxq_deploy.runtimes.tensorrt_runner import TensorRTRunner

    try:
        args.workdir.mkdir(parents=True, exist_ok=True)
        onnx_path, origin = prepare_onnx(args)
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
    except MaxQDeployError as exc:
        print(f"trt_sparse_benchmark: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2

    report = engines["sparse"].report
    totals = report.totals()
    share = totals["sparse"] / totals["eligible"] if totals["eligible"] else 0.0
    import torch

    result = {
        "onnx": str(onnx_path), "origin": origin, "graph_precision": engines["sparse"].plan.graph_precision,
        "trt_version": str(trt.__version__), "gpu": torch.cuda.get_device_name(), "input_size": args.input_size,
        "sparse_layers": report.summary_line(), "totals": totals, "sparse_tactic_share_of_eligible": share,
        "dense_flags": list(engines["dense"].plan.builder_flags), "sparse_flags": list(engines["sparse"].plan.builder_flags),
        "rows": rows,
        "not_sparse": [{"layer": ", ".join(l.checkpoint_layers) or l.trt_name, "reason": l.reason}
                       for l in report.layers if l.expected_sparse and not l.sparse_tactic],
    }
    print(f"{result['gpu']}, TensorRT {result['trt_version']}, {result['graph_precision']} graph ({origin}): {onnx_path}")
    print(f"sparse engine: {report.summary_line()} ({share:.0%} of eligible layers run a sparse tactic)")
    print(f"{'batch':>6} {'dense img/s':>12} {'sparse img/s':>13} {'speedup':>8}")
    for row in rows:
        print(f"{row['batch']:>6} {row['dense']['images_per_s']:>12.1f} {row['sparse']['images_per_s']:>13.1f} {row['speedup']:>7.2f}x")
    if args.out:
        from maxq_deploy.core.files import atomic_output

        with atomic_output(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
