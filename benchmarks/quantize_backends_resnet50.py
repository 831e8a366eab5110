"""The two quantize backends side by side on the reference ResNet-50 2:4, plus ModelOpt's ONNX-level PTQ.

The sibling of ``quantize_backends.py`` (digits), sharing its code. The model is the reference
2:4 ResNet-50 of ``_fixtures`` (random weights, 1000 classes), folded, run at ``--size`` pixels.
It is untrained, so accuracy means nothing: every INT8 graph is measured by how far it stays from
the fp32 folded model (torch) on ``--images`` Fashion-MNIST test images (grey to RGB, resized):
top-1 agreement and max / mean |logit difference| over the fp32 logit range (max - min).

Rows: each backend's PTQ per calibrator (calibrated on ``--calib-batches`` x ``--batch-size``
Fashion-MNIST training images, the library's seeded shuffle), exported to the ONNX Runtime form
(run on ONNX Runtime) and the TensorRT-form Q/DQ graph (run on OpenVINO, f32 inference precision
so only quantization moves the logits); and ModelOpt's ONNX-level PTQ
(``modelopt.onnx.quantization.quantize`` on the fp32 graph, the same calibration images), its
Q/DQ graph run on both. Per row: calibration time, checkpoint and graph size, images/s at batch 8
(one interleaved ``bench`` run per runtime, OpenVINO at its default precision). Ranges: largest
relative difference ModelOpt against pytorch-quantization per calibrator (``range_differences``).
No QAT here (random weights, no task to fine-tune for). ``--skip`` drops rows by key (default:
ModelOpt's entropy, which took 138 s on digits' 32x32 ResNet-18).

    python benchmarks/quantize_backends_resnet50.py --out benchmarks/results/quantize_backends_resnet50.json
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _cli_steps import write_report
from _fixtures import reference_folded, reference_onnx
from quantize_backends import (BACKENDS, CALIBRATORS, backend_differences, images_per_second, print_range_table,
                               quantize_and_export, refused_on_cpu)

MODELOPT_ONNX_METHODS = ("max", "entropy")  # what modelopt.onnx offers for INT8
OPENVINO_EXACT = "openvino:f32"  # agreement: no bf16 on top of the quantization error


def logit_agreement(reference: np.ndarray, got: np.ndarray) -> dict:
    """Top-1 agreement (%) of ``got`` with ``reference`` and max / mean |difference| over the reference's logit range."""
    from maxq_deploy.core.compare import compare_outputs

    span = float(reference.max() - reference.min())
    diff = np.abs(got.astype(np.float64) - reference.astype(np.float64))
    return {"top1_agreement": round(100 * compare_outputs(reference, got).top1_agreement, 2),
            "max_diff_over_range": round(float(diff.max()) / span, 5), "mean_diff_over_range": round(float(diff.mean()) / span, 5)}


def logits_of(path: Path, backend: str | None, images: np.ndarray, threads: int, batch: int = 32) -> np.ndarray:
    """``path`` run on ``backend`` (None: by suffix) over ``images`` in batches."""
    from maxq_deploy.runtimes.select import open_runner

    with open_runner(path, backend, threads=threads) as runner:
        return np.concatenate([np.asarray(runner.run(images[i:i + batch]), dtype=np.float32) for i in range(0, len(images), batch)])


def modelopt_onnx_ptq(fp32_onnx: Path, out: Path, calibration: np.ndarray, method: str) -> float:
    """ModelOpt's INT8 ONNX PTQ of ``fp32_onnx`` into ``out`` on the CPU; the seconds it took.

    Stands in for ``export onnx --target tensorrt --calib DATA --quantizer modelopt`` until the library
    has it. ModelOpt writes next to its input, so it works on a copy in a temp folder beside ``out``.
    """
    from modelopt.onnx.quantization import quantize as modelopt_quantize

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".modelopt-onnx-") as tmp:
        source, quantized = Path(tmp) / "model.onnx", Path(tmp) / "model.quant.onnx"
        shutil.copyfile(fp32_onnx, source)
        started = time.perf_counter()
        modelopt_quantize(str(source), quantize_mode="int8", calibration_data=calibration, calibration_method=method,
                          calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=str(quantized), log_level="WARNING")
        seconds = time.perf_counter() - started
        os.replace(quantized, out)
    return round(seconds, 2)


def dataset_images(dataset, count: int, batch_size: int, shuffle: bool) -> np.ndarray:
    """The first ``count`` images of ``dataset`` as the library's loader yields them (seeded shuffle: calibration's order)."""
    from maxq_deploy.data import make_loader

    loader = make_loader(dataset, batch_size, 0, shuffle=shuffle, seed=0)
    images, seen = [], 0
    for batch, _ in loader:
        images.append(batch.numpy())
        seen += len(batch)
        if seen >= count:
            break
    return np.concatenate(images)[:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("quantize-backends-resnet50-work"))
    parser.add_argument("--size", type=int, default=64, help="input size in pixels (ResNet-50 runs at multiples of 32)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--calib-batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="calibration batch size")
    parser.add_argument("--images", type=int, default=128, help="Fashion-MNIST test images the agreement is measured on")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per graph in the speed runs")
    parser.add_argument("--skip", default="mo_ptq_entropy", help="comma-separated row keys not to run ('' runs all)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quantize_backends_resnet50.json"))
    args = parser.parse_args(argv)
    command = shlex.join(["python", *sys.argv])
    skip = {k.strip() for k in args.skip.split(",") if k.strip()}

    import torch
    from rich.console import Console
    from rich.table import Table

    torch.set_num_threads(args.threads)
    from maxq_deploy.bench import environment_line
    from maxq_deploy.data import Preprocess, open_dataset
    from maxq_deploy.data.idx import fashion_mnist_files
    from maxq_deploy.quantize import QuantizeConfig

    started = time.perf_counter()
    work, size = args.workdir, args.size
    folded = reference_folded("resnet50", work)
    fp32 = reference_onnx("resnet50", work, input_size=size)
    files = fashion_mnist_files()
    preprocess = Preprocess(resize=size, image_size=size)
    images = dataset_images(open_dataset(files["test_images"], preprocess=preprocess), args.images, 32, shuffle=False)
    calibration = dataset_images(open_dataset(files["train_images"], preprocess=preprocess),
                                 args.calib_batches * args.batch_size, args.batch_size, shuffle=True)
    reference = logits_of(folded, None, images, args.threads)
    fp32_row = {"onnxruntime": logit_agreement(reference, logits_of(fp32, "onnxruntime", images, args.threads)),
                "openvino": logit_agreement(reference, logits_of(fp32, OPENVINO_EXACT, images, args.threads))}
    print(f"fp32 graph against the folded model: {fp32_row}", flush=True)

    def agreement(row: dict, ort_graph: Path, openvino_graph: Path) -> dict:
        return row | {"onnxruntime": logit_agreement(reference, logits_of(ort_graph, "onnxruntime", images, args.threads)),
                      "openvino": logit_agreement(reference, logits_of(openvino_graph, OPENVINO_EXACT, images, args.threads))}

    def report_row(row: dict) -> None:
        o, v = row["onnxruntime"], row["openvino"]
        print(f"{row['key']}: agreement ORT {o['top1_agreement']:.1f}% OpenVINO {v['top1_agreement']:.1f}%  "
              f"calibrate {row['calibrate_seconds']:.1f} s", flush=True)

    runs: list[dict] = []
    dropped: list[dict] = []
    ranges: dict[tuple[str, str], dict] = {}
    for short, backend in BACKENDS.items():
        for calibrator in CALIBRATORS:
            key = f"{short}_ptq_{calibrator}"
            reason = refused_on_cpu(short, calibrator) or ("--skip" if key in skip else None)
            if reason:
                dropped.append({"key": key, "backend": backend, "calibrator": calibrator, "why": reason})
                print(f"{key}: not run ({reason})", flush=True)
                continue
            config = QuantizeConfig(calib_data=files["train_images"], preprocess=preprocess, calibrator=calibrator,
                                    calib_batches=args.calib_batches, batch_size=args.batch_size, workers=0, backend=backend)
            row, ranges[(short, f"ptq_{calibrator}")] = quantize_and_export(folded, work, key, config, size)
            runs.append(agreement(row, Path(row["ort_onnx"]), Path(row["qdq_onnx"])))
            report_row(runs[-1])
    for method in MODELOPT_ONNX_METHODS:
        key = f"moonnx_ptq_{method}"
        if key in skip:
            dropped.append({"key": key, "backend": "modelopt onnx", "calibrator": method, "why": "--skip"})
            continue
        graph = work / f"{key}.onnx"
        seconds = modelopt_onnx_ptq(fp32, graph, calibration, method)
        row = {"key": key, "backend": "modelopt.onnx", "mode": "ptq", "calibrator": method, "calibrate_seconds": seconds,
               "quantize_seconds": seconds, "checkpoint_bytes": None, "ort_onnx_bytes": graph.stat().st_size,
               "qdq_onnx_bytes": graph.stat().st_size, "ort_onnx": str(graph), "qdq_onnx": str(graph), "notes": []}
        runs.append(agreement(row, graph, graph))
        report_row(runs[-1])

    differences = backend_differences(ranges)
    speed, environment = images_per_second({"onnxruntime": [fp32] + [Path(r["ort_onnx"]) for r in runs],
                                            "openvino": [fp32] + [Path(r["qdq_onnx"]) for r in runs]},
                                           args.iters, args.threads, input_size=size)

    table = Table(title=f"quantize backends on the reference ResNet-50 2:4 ({size}x{size}); agreement with the fp32 folded model "
                        f"on {len(images)} Fashion-MNIST test images; batch 8, {args.threads} thread(s)")
    for column in ("backend", "calibrator", "top-1 agree ORT %", "max/mean diff ORT", "top-1 agree OV %", "max/mean diff OV",
                   "calibrate s", "ckpt MB", "onnx MB", "ORT img/s", "OpenVINO img/s"):
        table.add_column(column, justify="left" if column in ("backend", "calibrator") else "right")

    def cells(row: dict) -> list[str]:
        return [f"{row[b]['top1_agreement']:.1f}" if i == 0 else f"{row[b]['max_diff_over_range']:.4f} / {row[b]['mean_diff_over_range']:.4f}"
                for b in ("onnxruntime", "openvino") for i in (0, 1)]

    table.add_row("fp32 graph", "", *cells(fp32_row), "", "", f"{fp32.stat().st_size / 1e6:.1f}",
                  f"{speed['fp32']['onnxruntime']:.1f}", f"{speed['fp32']['openvino']:.1f}")
    for r in runs:
        s = speed[Path(r["ort_onnx"]).stem]["onnxruntime"], speed[Path(r["qdq_onnx"]).stem]["openvino"]
        r["images_per_s_onnxruntime"], r["images_per_s_openvino"] = s
        sizes = f"{r['ort_onnx_bytes'] / 1e6:.1f}" if r["ort_onnx"] == r["qdq_onnx"] else \
            f"{r['ort_onnx_bytes'] / 1e6:.1f} / {r['qdq_onnx_bytes'] / 1e6:.1f}"
        table.add_row(r["backend"], r["calibrator"], *cells(r), f"{r['calibrate_seconds']:.1f}",
                      f"{r['checkpoint_bytes'] / 1e6:.1f}" if r["checkpoint_bytes"] else "-", sizes, f"{s[0]:.1f}", f"{s[1]:.1f}")
    console = Console(width=220)
    console.print(table)
    print_range_table(differences, console)
    print(f"environment: {environment_line(environment)}")
    report = {"command": command, "model": "reference resnet50 2:4 (random weights), folded", "input_size": size,
              "agreement_images": f"{files['test_images']} first {len(images)}", "calibration_images": len(calibration),
              "fp32_graph": fp32_row, "runs": runs, "dropped": dropped, "range_differences": differences, "images_per_s": speed,
              "load_average_end": os.getloadavg(), "environment": environment, "seconds": round(time.perf_counter() - started, 1)}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
