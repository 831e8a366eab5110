"""INT8 Q/DQ graph acceptance numbers: INT8 in/out per conv, file size vs fp32, parity, accuracy.

Models: the digits ResNet-18 2:4 (trained on CPU by maxq_deploy.reference, real accuracy) and a
ResNet-50 2:4 reference network (untrained weights from maxq_deploy.reference; its "accuracy"
is only the agreement with the fp32 network, on digits images resized to its input). Each is
folded, PTQ-quantized (max calibrator) and exported fp32 and INT8 by the CLI's library calls.
With ``--before PATH`` (a checkout of the commit before the INT8-weight / pooling-quantizer
change) the same quantized checkpoint is also exported by that code, for the "unchanged" check.

    python benchmarks/qdq_int8_check.py --work /tmp/qdq --out benchmarks/results/qdq_int8_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _cli_steps import write_report
from _fixtures import reference_folded


def _export_before(before: Path, quantized: Path, out: Path, size: int) -> dict:
    code = ("import json,sys; from maxq_deploy.export.tensorrt_form import export_onnx; "
            f"r=export_onnx({str(quantized)!r}, {str(out)!r}, input_size={size}); "
            "print(json.dumps({'parity': r.parity.describe()}))")
    env = dict(os.environ, PYTHONPATH=str(before))
    # a plain interpreter run inside `before`: a venv with this checkout installed editable, or this
    # checkout as the working directory, would import this code instead of `before`
    python = os.environ.get("BEFORE_PYTHON", "python3")
    proc = subprocess.run([python, "-c", code], env=env, cwd=str(before), capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-800:])
    return {"stdout": proc.stdout.strip().splitlines()[-1]}


def _logits(onnx_path: Path, images, batch: int = 64):
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i:i + batch]})[0] for i in range(0, len(images), batch)])


def agreement(fp32_onnx: Path, int8_onnx: Path, test_npz: Path, limit: int = 360) -> dict:
    """Top-1 agreement of the INT8 graph with the fp32 graph on real images (ONNX Runtime, CPU)."""
    import numpy as np

    images = np.load(test_npz)["images"][:limit].astype(np.float32)  # NCHW float32, as `eval` reads them
    a, b = _logits(fp32_onnx, images), _logits(int8_onnx, images)
    return {"images": int(len(images)), "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "max_abs_logit_diff_over_max_abs_logit": float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))}


def run_model(name: str, arch: str, work: Path, size: int, train_npz: Path, test_npz: Path, before: Path | None,
              trained_ckpt: Path | None) -> dict:
    from maxq_deploy.evaluate import evaluate
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.onnx_graph.qdq_check import qdq_conv_checks
    from maxq_deploy.quantize import quantize_ptq
    from maxq_deploy.verify import verify_artifact

    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    folded = reference_folded(arch, d, num_classes=10, checkpoint=trained_ckpt)
    quantized = d / "quantized.pt"
    t = time.perf_counter()
    if not quantized.exists():
        quantize_ptq(folded, quantized, train_npz, calibrator="max", calib_batches=8, batch_size=32, workers=0)
    fp32, int8 = d / "fp32.onnx", d / "int8.onnx"
    r32 = export_onnx(folded, fp32, input_size=size)
    r8 = export_onnx(quantized, int8, input_size=size)
    checks = qdq_conv_checks(int8)
    verdict = verify_artifact(int8)
    row = {
        "arch": arch, "input_size": size,
        "fp32_bytes": fp32.stat().st_size, "int8_bytes": int8.stat().st_size,
        "int8_over_fp32": round(int8.stat().st_size / fp32.stat().st_size, 4),
        "parity_fp32": r32.parity.describe(), "parity_int8": r8.parity.describe(), "parity_int8_passed": r8.parity.passed,
        "convs": len(checks), "convs_int8_in_out": sum(c.ok for c in checks),
        "not_int8": [c.name for c in checks if not c.ok],
        "verify_int8_ok": bool(verdict.ok), "verify_notes": verdict.notes,
        "top1_fp32_torch": evaluate(folded, test_npz, batch_size=128, workers=0).top1,
        "top1_int8_torch": evaluate(quantized, test_npz, batch_size=128, workers=0).top1,
        "top1_int8_onnx": evaluate(int8, test_npz, batch_size=128, workers=0).top1,
        "seconds": round(time.perf_counter() - t, 1),
        "int8_vs_fp32": agreement(fp32, int8, test_npz),
    }
    if before is not None:
        old = d / "int8_before.onnx"
        if not old.exists():
            row["before_export"] = _export_before(before, quantized, old, size)
        old_checks = qdq_conv_checks(old)
        row.update({"before_int8_bytes": old.stat().st_size,
                    "before_convs_int8_in_out": sum(c.ok for c in old_checks),
                    "before_not_int8": [c.name for c in old_checks if not c.ok],
                    "top1_int8_onnx_before": evaluate(old, test_npz, batch_size=128, workers=0).top1,
                    "int8_vs_fp32_before": agreement(fp32, old, test_npz)})
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--before", type=Path, default=None, help="checkout of the previous export code (PYTHONPATH)")
    parser.add_argument("--models", nargs="*", default=["digits", "resnet50"])
    args = parser.parse_args(argv)
    from maxq_deploy.reference.train import prepare_digits_example, save_digits_npz

    args.work.mkdir(parents=True, exist_ok=True)
    results = {}
    if "digits" in args.models:
        ex = prepare_digits_example(args.work / "digits_example")
        results["digits_resnet18"] = run_model("digits", "resnet18", args.work, 32, ex.train_npz, ex.test_npz, args.before, ex.checkpoint)
        results["digits_resnet18"]["trained_top1"] = ex.test_top1
        print(json.dumps(results["digits_resnet18"], indent=1), flush=True)
    if "resnet50" in args.models:
        train64, test64 = save_digits_npz(args.work / "digits64", image_size=64)
        results["resnet50_2of4"] = run_model("resnet50", "resnet50", args.work, 64, train64, test64, args.before, None)
        print(json.dumps(results["resnet50_2of4"], indent=1), flush=True)
    if args.out:
        write_report(results, args.out, indent=1, announce=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
