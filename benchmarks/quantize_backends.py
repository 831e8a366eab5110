"""The two quantize backends side by side on digits: pytorch-quantization and NVIDIA Model Optimizer.

The built-in example (scikit-learn's digits, 32x32, a 2:4 ResNet-18; ``maxq_deploy.reference.train``)
is folded once; then each backend quantizes it with PTQ for every calibrator it offers (max,
entropy, mse, percentile: the default backend's own histograms, ModelOpt's HistogramCalibrator)
and with QAT (one epoch of ``--qat-batches`` steps, each backend's default calibrator: percentile,
max). Every checkpoint is exported to both ONNX targets and measured on the held-out split:

- accuracy: fp32 (folded checkpoint in torch, fp32 ONNX on ONNX Runtime and OpenVINO), each INT8
  checkpoint on ONNX Runtime (the ONNX Runtime form made from its ranges) and OpenVINO (the
  TensorRT-form Q/DQ graph);
- per-layer ranges: for each mode both backends ran, the largest relative difference
  ``|a - b| / b`` (b: pytorch-quantization) over every quantizer (and the quantizer it is at), by role;
- checkpoint and ONNX Runtime graph size, calibration time (collection + range computation) and
  whole quantize time;
- speed: images/s at batch 8 on ONNX Runtime (ONNX Runtime form) and OpenVINO (Q/DQ graph),
  every graph of a backend measured in one interleaved ``bench`` run.

    python benchmarks/quantize_backends.py --out benchmarks/results/quantize_backends.json
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from _cli_steps import write_report
from _fixtures import digits_fp32

BACKENDS = {"pq": "pytorch-quantization", "mo": "modelopt"}
CALIBRATORS = ("max", "entropy", "mse", "percentile")
QAT_CALIBRATOR = {"pq": "percentile", "mo": "max"}  # each backend's CLI default


def range_differences(a: dict, b: dict) -> dict:
    """Largest relative difference of ``a`` against ``b`` per role, over the quantizers both hold."""
    worst: dict[str, tuple[float, str]] = {}
    for name in sorted(set(a) & set(b)):
        rel = float(((a[name].float() - b[name].float()).abs() / b[name].float().abs().clamp_min(1e-12)).max())
        role = "weight" if name.endswith("_weight_quantizer") else "residual" if name.endswith("residual_quantizer") else "activation"
        for key in (role, "all"):
            if rel >= worst.get(key, (-1.0, ""))[0]:
                worst[key] = (rel, name)
    only = sorted(set(a) ^ set(b))
    return {key: {"max_rel": round(value, 6), "at": name} for key, (value, name) in worst.items()} | {"not_in_both": only}


def refused_on_cpu(short: str, calibrator: str) -> str | None:
    """Why ``short``'s ``calibrator`` is not run here, or None (see ``modelopt_ptq.check_modelopt_calibrator``)."""
    import torch

    if short == "mo" and calibrator == "mse" and not torch.cuda.is_available():
        return "ModelOpt's histogram mse is wrong on a CPU (fake_tensor_quant)"
    return None


def quantize_and_export(folded: Path, work: Path, key: str, config, size: int) -> tuple[dict, dict]:
    """Quantize ``folded`` with ``config`` into ``<work>/<key>.pt``, export both ONNX forms; the row and the ranges.

    The row holds what does not depend on data: lost 2:4 groups, calibration and quantize time,
    checkpoint and graph sizes, the two graphs' paths (``ort_onnx``: ONNX Runtime form, ``qdq_onnx``:
    TensorRT-form Q/DQ). The ranges are the checkpoint's quantizers (for :func:`range_differences`).
    """
    from maxq_deploy.export.ort_from_quantized import export_ort_int8_from_quantized
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.quantize import quantize
    from maxq_deploy.quantize.artifact import load_quantized_checkpoint

    ckpt = work / f"{key}.pt"
    t0 = time.perf_counter()
    result = quantize(folded, ckpt, config)
    quantize_seconds = round(time.perf_counter() - t0, 2)
    qdq, ort = work / f"{key}_qdq.onnx", work / f"{key}_ort.onnx"
    export_onnx(ckpt, qdq, input_size=size)
    export_ort_int8_from_quantized(ckpt, ort, input_size=size)
    c = result.calibration
    row = {
        "key": key, "backend": result.backend, "mode": "qat" if config.qat else "ptq", "calibrator": config.calibrator,
        "lost_2_4_groups": sum(layer.violating_groups for layer in result.sparse_layers),
        "calibrate_seconds": round(c.collect_seconds + c.ranges_seconds, 2), "quantize_seconds": quantize_seconds,
        "checkpoint_bytes": ckpt.stat().st_size, "ort_onnx_bytes": ort.stat().st_size, "qdq_onnx_bytes": qdq.stat().st_size,
        "ort_onnx": str(ort), "qdq_onnx": str(qdq), "notes": result.notes,
    }
    return row, load_quantized_checkpoint(ckpt).quantizers


def backend_differences(ranges: dict[tuple[str, str], dict]) -> dict:
    """``range_differences`` of ModelOpt against pytorch-quantization for every mode both ran (keys: (short, mode))."""
    return {mode: range_differences(ranges[("mo", mode)], pq_ranges)
            for (short, mode), pq_ranges in ranges.items() if short == "pq" and ("mo", mode) in ranges}


def images_per_second(graphs: dict[str, list[Path]], iters: int, threads: int, batch: int = 8,
                      input_size: int | None = None) -> tuple[dict[str, dict[str, float]], dict]:
    """Images/s of every graph, keyed by file stem then backend: one interleaved ``bench`` run per backend.

    ``graphs`` maps a backend to the graphs it runs (the first one is keyed ``fp32``); also returns
    the environment of the last run.
    """
    from maxq_deploy.bench import benchmark

    speed: dict[str, dict[str, float]] = {}
    environment: dict = {}
    for backend, models in graphs.items():
        bench = benchmark(models, backend=backend, batch_sizes=[batch], iters=iters, threads=threads, input_size=input_size)
        for m in bench.measurements:
            speed.setdefault(models[m.model_index].stem if m.model_index else "fp32", {})[backend] = round(m.throughput_ips, 1)
        environment = bench.environment
    return speed, environment


def print_range_table(differences: dict, console) -> None:
    """The table of :func:`backend_differences`."""
    from rich.table import Table

    diff_table = Table(title="ranges: ModelOpt against pytorch-quantization, largest relative difference |mo - pq| / pq")
    for column in ("mode", "weights", "activations", "residual", "worst quantizer"):
        diff_table.add_column(column)
    for mode, d in differences.items():
        diff_table.add_row(mode, *(f"{d[k]['max_rel']:.4g}" if k in d else "-" for k in ("weight", "activation", "residual")), d["all"]["at"])
    console.print(diff_table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("quantize-backends-work"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calib-batches", type=int, default=8, help="calibration batches of 32 (training split)")
    parser.add_argument("--qat-batches", type=int, default=12, help="QAT steps (batches of 32) in its one epoch")
    parser.add_argument("--iters", type=int, default=30, help="timed iterations per graph in the speed runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quantize_backends.json"))
    args = parser.parse_args(argv)
    command = shlex.join(["python", *sys.argv])

    import torch
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(args.threads)
    from maxq_deploy.bench import environment_line
    from maxq_deploy.data import open_dataset
    from maxq_deploy.evaluate import evaluate
    from maxq_deploy.quantize import QuantizeConfig

    started = time.perf_counter()
    work = args.workdir
    example, folded, fp32 = digits_fp32(work)
    size = example.image_size
    test = open_dataset(example.test_npz, require_labels=True)

    def top1(path: Path, backend: str) -> float:
        return round(evaluate(path, test, backend=backend, batch_size=64, workers=0, threads=args.threads).top1, 3)

    fp32_row = {"torch": round(evaluate(folded, test, batch_size=64, workers=0).top1, 3),
                "onnxruntime": top1(fp32, "onnxruntime"), "openvino": top1(fp32, "openvino")}
    print(f"fp32: {fp32_row}", flush=True)

    runs: list[dict] = []
    refused: list[dict] = []
    ranges: dict[tuple[str, str], dict] = {}
    for short, backend in BACKENDS.items():
        modes = [("ptq", c) for c in CALIBRATORS] + [("qat", QAT_CALIBRATOR[short])]
        for mode, calibrator in modes:
            key = f"{short}_{mode}_{calibrator}"
            reason = refused_on_cpu(short, calibrator)
            if reason:
                refused.append({"key": key, "backend": backend, "mode": mode, "calibrator": calibrator, "refused": reason})
                print(f"{key}: refused on a CPU", flush=True)
                continue
            config = QuantizeConfig(calib_data=example.train_npz, calibrator=calibrator, calib_batches=args.calib_batches,
                                    batch_size=32, workers=0, backend=backend, qat=mode == "qat",
                                    **({"train_data": example.train_npz, "epochs": 1, "lr": 1e-4, "train_batches": args.qat_batches}
                                       if mode == "qat" else {}))
            row, ranges[(short, f"{mode}_{calibrator}" if mode == "ptq" else "qat")] = quantize_and_export(folded, work, key, config, size)
            row |= {"top1_torch": round(evaluate(work / f"{key}.pt", test, batch_size=64, workers=0).top1, 3),
                    "top1_onnxruntime": top1(Path(row["ort_onnx"]), "onnxruntime"), "top1_openvino": top1(Path(row["qdq_onnx"]), "openvino")}
            runs.append(row)
            print(f"{key}: ORT {row['top1_onnxruntime']:.2f}  OpenVINO {row['top1_openvino']:.2f}  calibrate "
                  f"{row['calibrate_seconds']:.1f} s  quantize {row['quantize_seconds']:.1f} s  lost 2:4 groups {row['lost_2_4_groups']}",
                  flush=True)

    differences = backend_differences(ranges)
    # QAT starts from calibration with different calibrators (percentile / max): compare the same calibrator instead
    differences["qat_vs_ptq_same_calibrator"] = {
        short: range_differences(ranges[(short, "qat")], ranges[(short, f"ptq_{QAT_CALIBRATOR[short]}")]) for short in BACKENDS
    }

    speed, environment = images_per_second({"onnxruntime": [fp32] + [Path(r["ort_onnx"]) for r in runs],
                                            "openvino": [fp32] + [Path(r["qdq_onnx"]) for r in runs]}, args.iters, args.threads)

    table = Table(title=f"quantize backends on digits ({len(test)} test images, 32x32, 2:4 ResNet-18); batch 8, {args.threads} thread(s)")
    for column in ("backend", "mode", "calibrator", "top-1 ORT", "top-1 OpenVINO", "lost 2:4", "calibrate s", "quantize s",
                   "ckpt MB", "ORT onnx MB", "ORT img/s", "OpenVINO img/s"):
        table.add_column(column, justify="left" if column in ("backend", "mode", "calibrator") else "right")
    table.add_row("fp32", "", "", f"{fp32_row['onnxruntime']:.2f}", f"{fp32_row['openvino']:.2f}", "", "", "", "", "",
                  f"{speed['fp32']['onnxruntime']:.0f}", f"{speed['fp32']['openvino']:.0f}")
    for r in runs:
        s = speed[f"{r['key']}_ort"]["onnxruntime"], speed[f"{r['key']}_qdq"]["openvino"]
        r["images_per_s_onnxruntime"], r["images_per_s_openvino"] = s
        table.add_row(r["backend"], r["mode"], r["calibrator"], f"{r['top1_onnxruntime']:.2f}", f"{r['top1_openvino']:.2f}",
                      str(r["lost_2_4_groups"]), f"{r['calibrate_seconds']:.1f}", f"{r['quantize_seconds']:.1f}",
                      f"{r['checkpoint_bytes'] / 1e6:.2f}", f"{r['ort_onnx_bytes'] / 1e6:.2f}", f"{s[0]:.0f}", f"{s[1]:.0f}")
    console = Console(width=200)
    console.print(table)
    print_range_table({k: v for k, v in differences.items() if k != "qat_vs_ptq_same_calibrator"}, console)
    print(f"environment: {environment_line(environment)}")
    report = {"command": command, "data": str(example.test_npz), "images": len(test), "fp32_top1": fp32_row, "runs": runs,
              "refused": refused, "range_differences": differences, "images_per_s": speed, "environment": environment,
              "seconds": round(time.perf_counter() - started, 1)}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
