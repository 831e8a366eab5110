"""Accuracy of every CPU path on the digits example (reference 2:4 ResNet-18): fp32, PTQ and QAT int8.

The built-in example (scikit-learn's handwritten digits, 32x32; ``maxq_deploy.reference.train``)
is folded, quantized with PTQ (percentile calibration on the training split) and with QAT (one
epoch on the training split, no validation split: the last epoch is kept), and every graph is
evaluated on the held-out split on each CPU backend:

- fp32: torch (folded), ONNX Runtime, OpenVINO f32, OpenVINO default precision;
- int8 (PTQ and QAT each): torch fake-quant; ONNX Runtime on the graph made from the checkpoint
  (``export onnx QUANTIZED --target onnxruntime``); OpenVINO on the TensorRT-form Q/DQ graph;
  OpenVINO on the checkpoint-made ONNX Runtime graph; ONNX Runtime on the TensorRT-form graph
  (slow on CPU, shown for accuracy); for PTQ also ONNX Runtime's own quantizer (``--calib``
  route, calibrated again on the training split).

Acceptance: ONNX Runtime (graph from the checkpoint) and OpenVINO (TensorRT-form graph) within
0.5 top-1 points of fp32, for PTQ and QAT; each graph from the checkpoint quantizes with the
checkpoint's ranges (``ranges_match``).

    python benchmarks/cpu_digits_accuracy.py --out benchmarks/results/cpu_digits_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from _cli_steps import write_report
from _fixtures import digits_fp32

MAX_DROP = 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("cpu-digits-work"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--qat-batches", type=int, default=12, help="QAT steps (batches of 32) in its one epoch")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu_digits_accuracy.json"))
    args = parser.parse_args(argv)
    command = shlex.join(["python", *sys.argv])

    from maxq_deploy.data import open_dataset
    from maxq_deploy.evaluate import evaluate
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.export.ort_calibrated import export_ort_int8
    from maxq_deploy.export.ort_from_quantized import export_ort_int8_from_quantized
    from maxq_deploy.quantize import quantize_ptq, quantize_qat

    started = time.perf_counter()
    work = args.workdir
    example, folded, fp32 = digits_fp32(work)
    size = example.image_size
    calib = dict(calibrator="percentile", calib_batches=8, batch_size=32, workers=0)
    quantized = {"ptq": work / "digits.ptq.pt", "qat": work / "digits.qat.pt"}
    if not quantized["ptq"].exists():
        quantize_ptq(folded, quantized["ptq"], example.train_npz, **calib)
    if not quantized["qat"].exists():
        quantize_qat(folded, quantized["qat"], example.train_npz, None, epochs=1, lr=1e-4, train_batches=args.qat_batches, **calib)
    exports = {}
    for mode, path in quantized.items():
        qdq_path, ort = work / f"digits_{mode}_int8_trt_qdq.onnx", work / f"digits_{mode}_int8_ort_ckpt.onnx"
        if not qdq_path.exists():
            export_onnx(path, qdq_path, input_size=size)
        result = export_ort_int8_from_quantized(path, ort, input_size=size)
        exports[mode] = {
            "trt_qdq": str(qdq_path), "ort_ckpt": str(ort), "ranges_match": result.ranges_match,
            "ranges": [r.__dict__ | {"matches": r.matches} for r in result.ranges],
            "float_layers": result.float_layers, "derived_ranges": result.derived_ranges,
            "parity_vs_fake_quant": result.parity.relative_error,
        }
        print(f"{mode}: graph from the checkpoint quantizes with its ranges: {result.ranges_match} "
              f"({sum(r.matches for r in result.ranges)} of {len(result.ranges)} layers)", flush=True)
    calib_route = work / "digits_ptq_int8_ort_calib.onnx"
    if not calib_route.exists():
        export_ort_int8(folded, calib_route, example.train_npz, calib_batches=8, batch_size=32, input_size=size)

    dataset = open_dataset(example.test_npz, require_labels=True)
    rows: list[dict] = []

    def run(precision: str, graph: str, path: Path, backend: str | None) -> None:
        result = evaluate(path, dataset, backend=backend, batch_size=64, workers=0, threads=args.threads)
        rows.append({"precision": precision, "graph": graph, "backend": result.backend, "path": str(path),
                     "top1": round(result.top1, 3), "images": result.images})
        print(f"{precision:9} {graph:42} {result.backend:18} top-1 {result.top1:6.2f}  ({result.images} images)", flush=True)

    run("fp32", "folded checkpoint", folded, "torch")
    run("fp32", "fp32 ONNX", fp32, "onnxruntime")
    run("fp32", "fp32 ONNX", fp32, "openvino:f32")
    run("fp32", "fp32 ONNX", fp32, "openvino:default")
    for mode, path in quantized.items():
        label = f"int8 {mode.upper()}"
        run(label, "quantized checkpoint (fake-quant)", path, "torch")
        run(label, "ORT form from the checkpoint's ranges", Path(exports[mode]["ort_ckpt"]), "onnxruntime")
        run(label, "TensorRT-form Q/DQ", Path(exports[mode]["trt_qdq"]), "openvino:default")
        run(label, "ORT form from the checkpoint's ranges", Path(exports[mode]["ort_ckpt"]), "openvino:default")
        run(label, "TensorRT-form Q/DQ", Path(exports[mode]["trt_qdq"]), "onnxruntime")
        if mode == "ptq":
            run(label, "ORT quantizer, calibrated again (--calib)", calib_route, "onnxruntime")
    fp32_top1 = next(r["top1"] for r in rows if r["graph"] == "fp32 ONNX" and r["backend"] == "onnxruntime")
    checks = {}
    for mode in quantized:
        label = f"int8 {mode.upper()}"
        ort = next(r for r in rows if r["precision"] == label and r["backend"] == "onnxruntime" and "checkpoint's" in r["graph"])
        ov = next(r for r in rows if r["precision"] == label and r["backend"].startswith("openvino") and r["graph"] == "TensorRT-form Q/DQ")
        checks[mode] = {
            "ort_ckpt_drop": round(fp32_top1 - ort["top1"], 3), "ov_trt_qdq_drop": round(fp32_top1 - ov["top1"], 3),
            "within_0.5": fp32_top1 - ort["top1"] <= MAX_DROP and fp32_top1 - ov["top1"] <= MAX_DROP,
            "ranges_match": exports[mode]["ranges_match"],
        }
        print(f"{mode}: drop vs fp32 {fp32_top1:.2f}: ONNX Runtime (checkpoint graph) {checks[mode]['ort_ckpt_drop']:+.2f}, "
              f"OpenVINO (TensorRT-form) {checks[mode]['ov_trt_qdq_drop']:+.2f} -> "
              f"{'within' if checks[mode]['within_0.5'] else 'NOT within'} {MAX_DROP} point")
    report = {"command": command, "data": str(example.test_npz), "images": rows[0]["images"], "fp32_top1": fp32_top1,
              "rows": rows, "acceptance": checks, "exports": exports, "seconds": round(time.perf_counter() - started, 1)}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
