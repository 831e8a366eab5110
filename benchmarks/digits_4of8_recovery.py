"""The README's road to 2:4 for a 4:8 model, measured on real data (scikit-learn's digits).

Trains a MaxQ 4:8 ResNet-18 with the reference layers on the digits (upscaled to 32x32, the
same recipe as ``examples/make_digits_example.py``), then through the CLI: top-1 of the 4:8
network, ``verify`` (it breaks 2:4), ``fold --project --data`` (top-1 before/after projection),
sparsity-preserving ``quantize --qat`` (the projected mask stays fixed), Q/DQ ``export onnx``,
``verify`` of the ONNX and its top-1 in ONNX Runtime. For comparison also PTQ of the projected
model. Saves every command and number as JSON.

    python benchmarks/digits_4of8_recovery.py --workdir work48 --out benchmarks/results/digits_4of8_recovery.json
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from _cli_steps import print_and_save, run_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("work48"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--qat-lr", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from maxq_deploy.reference.train import prepare_digits_example

    example = prepare_digits_example(args.workdir, arch="resnet18", nm="4:8", epochs=args.epochs)
    ckpt, train, test, work = example.checkpoint, example.train_npz, example.test_npz, args.workdir
    projected, ptq, qat, onnx_path = work / "projected.pt", work / "ptq.pt", work / "qat.pt", work / "qat_int8.onnx"
    for path in (projected, ptq, qat, onnx_path):
        path.unlink(missing_ok=True)
    steps = {
        "eval_4of8": run_step(["eval", ckpt, "--data", test, "-j", "0"]),
        "verify_4of8": run_step(["verify", ckpt], check=False),
        "fold_project": run_step(["fold", ckpt, "-o", projected, "--project", "--data", test]),
        "verify_projected": run_step(["verify", projected]),
        "quantize_ptq": run_step(["quantize", projected, "-o", ptq, "--calib", train, "-j", "0"]),
        "quantize_qat": run_step(["quantize", projected, "-o", qat, "--qat", "--train-data", train, "--val-data", test,
                                  "--epochs", str(args.qat_epochs), "--lr", str(args.qat_lr), "-j", "0", "--device", "cpu"]),
        "export_qdq": run_step(["export", "onnx", qat, "-o", onnx_path]),
        "verify_onnx": run_step(["verify", onnx_path]),
        "eval_all": run_step(["eval", onnx_path, ckpt, projected, ptq, qat, "--data", test, "-j", "0"]),
    }
    top1 = {Path(r["model"]).name: r["top1"] for r in steps["eval_all"]["json"]}
    fold = steps["fold_project"]["json"]
    report = {
        "benchmark": "digits_4of8_recovery",
        "machine": platform.platform(),
        "train": {"arch": "resnet18", "nm": "4:8", "epochs": args.epochs, "held_out_top1_at_training": example.test_top1,
                  "test_images": steps["eval_4of8"]["json"]["images"]},
        "verify_4of8": {"exit_code": steps["verify_4of8"]["exit_code"], "verdict": steps["verify_4of8"]["json"]["verdict"],
                        "notes": steps["verify_4of8"]["json"]["notes"]},
        "top1": {
            "fp32 4:8 (MaxQ checkpoint)": steps["eval_4of8"]["json"]["top1"],
            "after fold --project (2:4, fp32)": fold["projection_accuracy"]["top1_after"],
            "PTQ int8 of the projected model (torch fake-quant)": top1[ptq.name],
            "QAT int8 (torch fake-quant)": top1[qat.name],
            "QAT int8 Q/DQ ONNX (ONNX Runtime)": top1[onnx_path.name],
        },
        "projection": {"groups_changed": fold["groups_changed"], "drift": fold["projection_drift"],
                       "accuracy": fold["projection_accuracy"]},
        "qat": steps["quantize_qat"]["json"]["training"],
        "verify_onnx": steps["verify_onnx"]["json"]["verdict"],
        "commands": [s["command"] for s in steps.values()],
        "seconds": {name: s["seconds"] for name, s in steps.items()},
    }
    print_and_save(report, args.out)


if __name__ == "__main__":
    main()
