"""CPU backends side by side: ONNX Runtime and OpenVINO, fp32 and int8, ResNet-50 2:4, ONE interleaved run.

The model is the reference 2:4 ResNet-50 (random weights, 1000 classes, 224x224), folded, and
quantized with PTQ (max calibrator) on a few synthetic batches: speed does not depend on the
values. Every (graph, backend) pair below is opened once and measured in the same interleaved
schedule (``maxq_deploy.bench``: per batch size, warm-up, then rounds over all pairs), so load
from other processes hits every row alike:

- ``ort-fp32``            ONNX Runtime, fp32 graph (the baseline of every ratio)
- ``ort-int8-ckpt``       ONNX Runtime, ``export onnx QUANTIZED --target onnxruntime``: its fast
                          form made from the checkpoint's ranges (no data)
- ``ort-int8-ckpt-qop``   ONNX Runtime, the same graph in QOperator form (QLinearConv, QLinearAdd: what
                          ONNX Runtime's own fusion makes of the QDQ graph, saved offline): QDQ vs QOperator
- ``ort-int8-calib``      ONNX Runtime, ``export onnx FOLDED --target onnxruntime --calib``: its own
                          quantizer, calibrated again on the same synthetic batches
- ``ort-int8-trt-qdq``    ONNX Runtime, the TensorRT-form Q/DQ graph (to show why it needs its own form)
- ``ov-fp32-f32``         OpenVINO, fp32 graph, inference precision f32
- ``ov-fp32-default``     OpenVINO, fp32 graph, the device's default precision (bf16 where the CPU has it)
- ``ov-int8-trt-qdq``     OpenVINO, the TensorRT-form Q/DQ graph
- ``ov-int8-ckpt``        OpenVINO, the ONNX Runtime form made from the checkpoint

Targets (batch 8): best int8 >= 3.5x ``ort-fp32``; ``ort-int8-ckpt`` >= 2.5x. The machine's load
(``os.getloadavg``) before and after is saved with the numbers.

    python benchmarks/cpu_backends_benchmark.py --threads 2 --batch-sizes 1,8,32 \\
        --out benchmarks/results/cpu_backends_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from _cli_steps import write_report
from _fixtures import add_timing_options, reference_folded

PAIRS: dict[str, tuple[str, str]] = {  # name -> (graph, backend spec)
    "ort-fp32": ("fp32", "onnxruntime"),
    "ort-int8-ckpt": ("int8-ckpt", "onnxruntime"),
    "ort-int8-ckpt-qop": ("int8-ckpt-qop", "onnxruntime"),
    "ort-int8-calib": ("int8-calib", "onnxruntime"),
    "ort-int8-trt-qdq": ("int8-trt-qdq", "onnxruntime"),
    "ov-fp32-f32": ("fp32", "openvino:f32"),
    "ov-fp32-default": ("fp32", "openvino:default"),
    "ov-int8-trt-qdq": ("int8-trt-qdq", "openvino:default"),
    "ov-int8-ckpt": ("int8-ckpt", "openvino:default"),
}
TARGET_BEST, TARGET_ORT_CKPT = 3.5, 2.5


def make_graphs(work: Path, arch: str, size: int, calib_batches: int, calib_batch_size: int) -> dict[str, Path]:
    """The four graphs, made once per work folder (each step skipped when its file exists)."""
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.export.ort_calibrated import export_ort_int8
    from maxq_deploy.export.ort_from_quantized import export_ort_int8_from_quantized
    from maxq_deploy.quantize import quantize_ptq

    work.mkdir(parents=True, exist_ok=True)
    folded, quantized, calib = (work / f"{arch}.folded.pt", work / f"{arch}.ptq.pt",
                                      work / "calib.npy")
    graphs = {name: work / f"{arch}_{name}.onnx" for name in ("fp32", "int8-ckpt", "int8-ckpt-qop", "int8-calib", "int8-trt-qdq")}
    reference_folded(arch, work)
    if not calib.exists():
        np.save(calib, np.random.default_rng(1).standard_normal((calib_batches * calib_batch_size, 3, size, size), dtype=np.float32))
    if not quantized.exists():
        quantize_ptq(folded, quantized, calib, calibrator="max", calib_batches=calib_batches, batch_size=calib_batch_size, workers=0)
    steps = {
        "fp32": lambda out: export_onnx(folded, out, input_size=size),
        "int8-trt-qdq": lambda out: export_onnx(quantized, out, input_size=size),
        "int8-ckpt": lambda out: export_ort_int8_from_quantized(quantized, out, input_size=size),
        "int8-ckpt-qop": lambda out: qoperator_form(graphs["int8-ckpt"], out),
        "int8-calib": lambda out: export_ort_int8(folded, out, np.load(calib), calib_batches, calib_batch_size, input_size=size),
    }
    for name, make in steps.items():
        if not graphs[name].exists():
            started = time.perf_counter()
            make(graphs[name])
            print(f"made {graphs[name].name} in {time.perf_counter() - started:.0f} s", flush=True)
    return graphs


def qoperator_form(qdq: Path, out: Path) -> None:
    """ONNX Runtime's own QOperator form of a QDQ graph: its fused graph (basic + extended levels, no
    hardware-specific layout), saved offline. Same kernels; this measures whether the form matters."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(qdq), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_timing_options(parser, batch_sizes="1,8,32", iters=10, warmup=2, what="pair")
    parser.add_argument("--pairs", default=",".join(PAIRS), help=f"any of {', '.join(PAIRS)} (the first is the baseline)")
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--calib-batch-size", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path("cpu-backends-work"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_backends_benchmark.json"))
    args = parser.parse_args(argv)
    command = shlex.join(["python", *sys.argv])
    names = [n.strip() for n in args.pairs.split(",") if n.strip()]
    unknown = [n for n in names if n not in PAIRS]
    if unknown:
        parser.error(f"unknown pair(s) {', '.join(unknown)}; known: {', '.join(PAIRS)}")

    from maxq_deploy.bench import BenchModel, BenchSettings, collect_environment, environment_line, measure, parse_batch_sizes
    from maxq_deploy.core.progress import RichProgress
    from maxq_deploy.runtimes.backends import backend_label, open_pair, parse_backend

    graphs = make_graphs(args.workdir, args.arch, args.input_size, args.calib_batches, args.calib_batch_size)
    settings = BenchSettings(backend=None, device="cpu", batch_sizes=list(parse_batch_sizes(args.batch_sizes)), warmup=args.warmup,
                             iters=args.iters, seconds=None, block=args.block, threads=args.threads, input_size=args.input_size,
                             sparse=False)
    models: list[BenchModel] = []
    infos = {}
    try:
        for name in names:
            graph, spec = PAIRS[name]
            runner = open_pair(graphs[graph], parse_backend(spec), threads=args.threads)
            info = runner.info.to_dict() if hasattr(runner, "info") else {"backend": runner.name, "options": {"threads": args.threads}}
            infos[name] = info
            models.append(BenchModel(name, str(graphs[graph]), graph, backend_label(runner), runner.device, args.input_size,
                                     variant=spec, threads=args.threads, runner=runner))
        load_before = os.getloadavg()
        started = time.perf_counter()
        measurements = measure(models, settings, RichProgress())
        seconds = time.perf_counter() - started
        load_after = os.getloadavg()
    finally:
        for m in models:
            m.runner.close()
    print(f"\n{'pair':18} {'backend':16} {'batch':>5} {'mean ms':>9} {'p50 ms':>9} {'img/s':>8} {'vs ' + names[0]:>14}")
    for m in measurements:
        s = m.latency
        print(f"{m.model:18} {models[m.model_index].backend:16} {m.batch:>5} {s.mean_ms:9.1f} {s.p50_ms:9.1f} "
              f"{m.throughput_ips:8.1f} {m.speedup_vs_first:13.2f}x")
    winners = {}
    for batch in settings.batch_sizes:
        rows = [m for m in measurements if m.batch == batch]
        best = max(rows, key=lambda m: m.throughput_ips)
        winners[batch] = {"pair": best.model, "backend": models[best.model_index].backend, "img_s": best.throughput_ips,
                          "vs_baseline": best.speedup_vs_first}
        print(f"batch {batch}: fastest {best.model} ({models[best.model_index].backend}), {best.speedup_vs_first:.2f}x {names[0]}")
    at8 = {m.model: m.speedup_vs_first for m in measurements if m.batch == 8}
    targets = {}
    if at8:
        int8 = {k: v for k, v in at8.items() if "int8" in k}
        best_int8 = max(int8.values(), default=0.0)
        targets = {
            "best_int8_at_batch8": best_int8, "best_int8_target": TARGET_BEST, "best_int8_met": best_int8 >= TARGET_BEST,
            "ort_int8_ckpt_at_batch8": at8.get("ort-int8-ckpt"), "ort_int8_ckpt_target": TARGET_ORT_CKPT,
            "ort_int8_ckpt_met": (at8.get("ort-int8-ckpt") or 0.0) >= TARGET_ORT_CKPT,
        }
        print(f"batch 8: best int8 {best_int8:.2f}x (target {TARGET_BEST}x: {'met' if targets['best_int8_met'] else 'NOT met'}); "
              f"ort-int8-ckpt {at8.get('ort-int8-ckpt', float('nan')):.2f}x (target {TARGET_ORT_CKPT}x: "
              f"{'met' if targets['ort_int8_ckpt_met'] else 'NOT met'})")
    environment = collect_environment(args.threads)
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}; measured {seconds:.0f} s")
    print(f"environment: {environment_line(environment)}")
    report = {
        "command": command,
        "arch": args.arch,
        "input_size": args.input_size,
        "settings": {"threads": args.threads, "batch_sizes": settings.batch_sizes, "iters": args.iters, "warmup": args.warmup,
                     "block": args.block, "interleaved": True},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "measured_seconds": round(seconds, 1),
        "pairs": {m.label: {"graph": m.kind, "path": m.path, "spec": m.variant, "backend": m.backend, "info": infos[m.label]}
                  for m in models},
        "results": [m.to_dict() | {"backend": models[m.model_index].backend} for m in measurements],
        "fastest_per_batch": winners,
        "targets": targets,
        "environment": environment,
    }
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
