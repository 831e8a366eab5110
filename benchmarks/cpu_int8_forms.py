"""Every int8 CPU graph form, accuracy and speed, next to fp32, in one run on this CPU.

The digits example (reference 2:4 ResNet-18, 32x32, 360 held-out images) is folded, quantized
(PTQ percentile; QAT one short epoch) and exported in each form; each graph is evaluated and
timed on ONNX Runtime and OpenVINO (f32 hint: the int8 parts run int8, the rest in f32):

- ``fp32``: the float graph;
- ``tensorrt``: the TensorRT-form symmetric Q/DQ graph (int8 activations, 8-bit weights);
- ``ort-vnni``: ``--target onnxruntime --cpu-isa vnni`` (uint8 activations, 8-bit int8 weights: u8s8);
- ``ort-portable``: ``--target onnxruntime`` (default ``--cpu-isa portable``: 7-bit weights, ``reduce_range``);
- ``ort-u8u8``: the same graph with the checkpoint's 8-bit weights as uint8 (zero point 128: U8U8 kernels),
  made by :func:`maxq_deploy.export.ort_rewrite.rewrite_for_onnxruntime` with ``weight_form="u8"`` (a measured
  candidate, not an export option).

OpenVINO is also given each non-portable graph as written (``raw``), bypassing the runner's
in-memory 7-bit weights on CPUs without VNNI, to show what that fix changes.

    python benchmarks/cpu_int8_forms.py --out benchmarks/results/cpu_int8_forms.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("cpu-int8-forms-work"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_int8_forms.json"))
    args = parser.parse_args(argv)

    import onnx
    import onnxruntime as ort
    import openvino as ov

    from maxq_deploy.onnx_graph.cpu_isa import VNNI_FLAGS, cpu_flags, int8_saturates
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.export.ort_from_quantized import export_ort_int8_from_quantized
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.export.ort_rewrite import rewrite_for_onnxruntime
    from maxq_deploy.quantize import quantize_ptq, quantize_qat
    from maxq_deploy.reference.train import prepare_digits_example
    from maxq_deploy.runtimes.openvino import OpenVINORunner, shared_core

    started = time.perf_counter()
    work = args.workdir
    example = prepare_digits_example(work)
    folded = work / "folded.pt"
    if not folded.exists():
        fold_checkpoint(example.checkpoint, folded)
    data = np.load(example.test_npz)
    x_all, labels = data["images"].astype(np.float32), data["labels"]
    calib = {"calibrator": "percentile", "calib_batches": 8, "batch_size": 32, "workers": 0}
    graphs: dict[str, Path] = {"fp32": work / "fp32.onnx"}
    export_onnx(folded, graphs["fp32"], input_size=example.image_size)
    for mode in ("ptq", "qat"):
        q = work / f"{mode}.pt"
        if mode == "ptq":
            quantize_ptq(folded, q, example.train_npz, **calib)
        else:
            quantize_qat(folded, q, example.train_npz, None, epochs=1, lr=1e-4, train_batches=12, **calib)
        graphs[f"{mode}/tensorrt"] = work / f"{mode}_tensorrt.onnx"
        export_onnx(q, graphs[f"{mode}/tensorrt"], input_size=example.image_size)
        for form in ("vnni", "portable"):
            graphs[f"{mode}/ort-{form}"] = work / f"{mode}_ort_{form}.onnx"
            export_ort_int8_from_quantized(q, graphs[f"{mode}/ort-{form}"], input_size=example.image_size, cpu_isa=form)
        model = onnx.load(str(graphs[f"{mode}/tensorrt"]))
        rewrite_for_onnxruntime(model, weight_form="u8")
        graphs[f"{mode}/ort-u8u8"] = work / f"{mode}_ort_u8u8.onnx"
        onnx.save(model, str(graphs[f"{mode}/ort-u8u8"]))

    core = shared_core()  # one Core per process (see shared_core)
    ov_config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY",
                 "NUM_STREAMS": 1}

    def runners(path: Path) -> dict:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = args.threads, 1, 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        fixed = OpenVINORunner(path, threads=args.threads, precision="f32")  # the runner: 7-bit weights where needed
        raw = core.compile_model(str(path), "CPU", ov_config)
        out = {"onnxruntime": lambda x: session.run(None, {"input": x})[0], "openvino": fixed.run}
        if fixed.info.options.get("int8_weights"):
            out["openvino (raw)"] = lambda x: raw(x)[0]
        return out

    def top1(run) -> float:
        logits = np.concatenate([run(x_all[i:i + 60]) for i in range(0, len(x_all), 60)])
        return round(100.0 * float((logits.argmax(1) == labels).mean()), 2)

    opened = {name: runners(path) for name, path in graphs.items()}
    accuracy = {name: {rt: top1(run) for rt, run in rts.items()} for name, rts in opened.items()}
    for name, row in accuracy.items():
        print(f"top-1 {name:20s} " + "  ".join(f"{rt} {v:.2f}" for rt, v in row.items()), flush=True)
    # speed: interleaved, every (graph, runtime) pair once per round, best-of-rounds median
    batches = [int(b) for b in args.batch_sizes.split(",")]
    speed: dict = {}
    for b in batches:
        x = np.ascontiguousarray(x_all[:b]) if b <= len(x_all) else np.repeat(x_all[:1], b, 0)
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(3):
            for name, rts in opened.items():
                for rt, run in rts.items():
                    if rt == "openvino (raw)":
                        continue
                    run(x)
                    t = time.perf_counter()
                    for _ in range(args.iters):
                        run(x)
                    times.setdefault((name, rt), []).append((time.perf_counter() - t) / args.iters)
        for (name, rt), ts in times.items():
            ips = b / min(ts)
            speed.setdefault(name, {}).setdefault(rt, {})[str(b)] = round(ips, 1)
        for name in opened:
            fp = speed["fp32"]["onnxruntime"][str(b)]
            print(f"batch {b:3d} {name:20s} " + "  ".join(
                f"{rt} {v[str(b)]:8.1f} img/s ({v[str(b)] / fp:.2f}x ORT fp32)" for rt, v in speed[name].items()), flush=True)
    flags = cpu_flags() or set()
    result = {
        "command": shlex.join(["python", *sys.argv]),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                           if ln.startswith("model name")), None) if Path("/proc/cpuinfo").exists() else None,
        "int8_flags": sorted(f for f in flags if f in {"avx2", "avx512f", "avx512bw", "ssse3", *VNNI_FLAGS}),
        "vnni": not int8_saturates(flags) if flags else None,
        "threads": args.threads, "iters": args.iters, "images": int(len(x_all)),
        "versions": {"onnxruntime": ort.__version__, "openvino": ov.__version__},
        "accuracy_top1": accuracy, "images_per_second": speed,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"cpu int8 flags: {' '.join(result['int8_flags'])} (VNNI: {result['vnni']}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
