"""The 4:8 Fashion-MNIST example projected to 2:4: plain ``--project`` against ``--auto --max-drop``, each then QAT.

Reuses (or trains, like ``maxq-deploy demo --example fashion-4of8``) the MaxQ 4:8 ResNet-18 on
Fashion-MNIST, then through the CLI:

1. ``fold --project`` (every layer to 2:4) and ``fold --project --auto --max-drop X --data VAL``
   (the fewest layers kept dense that hold the measured drop on VAL within X points);
2. sparsity-preserving ``quantize --qat`` of both folds (the best epoch by top-1 on VAL is kept);
3. ONNX Runtime-form ``export onnx --target onnxruntime`` of both QAT checkpoints, and ``eval``
   of the fp32 4:8 network, both folds, both QAT checkpoints and both graphs on all 10,000 test
   images.

VAL is held out from the training split: images of the 60,000 that the 12,000 used for training
do not include, spread evenly, preprocessed like them. The test images are used only by the
final ``eval``. Prints and saves every command, number and time as JSON.

    OMP_NUM_THREADS=1 python benchmarks/fashion_4of8_recovery.py --workdir /tmp/auto48 \\
        --reuse /tmp/fashion-4of8-demo --out benchmarks/results/fashion_4of8_recovery.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from _cli_steps import print_and_save, run_step


def held_out_val(out: Path, train_images: int, count: int) -> Path:
    """``count`` Fashion-MNIST training images outside the ``train_images`` used for training, as an .npz."""
    from maxq_deploy.data.idx import fashion_mnist_files, read_idx, read_idx_labels
    from maxq_deploy.reference.fashion import evenly, fashion_arrays

    path = out / f"fashion32_val_{count}.npz"
    if path.exists():
        return path
    files = fashion_mnist_files()
    images = read_idx(files["train_images"], 3, "images")
    labels = read_idx_labels(files["train_labels"], len(images), str(files["train_images"]))
    unused = np.setdiff1d(np.arange(len(images)), evenly(len(images), train_images))
    keep = unused[evenly(len(unused), count)]
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, images=fashion_arrays(images[keep]), labels=labels[keep].astype(np.int64))
    tmp.rename(path)
    return path


def example_files(workdir: Path, reuse: Path | None, epochs: int) -> tuple[Path, Path, Path, dict]:
    """The 4:8 MaxQ checkpoint and its train/test .npz: copied from ``reuse`` when it holds them, else trained."""
    workdir.mkdir(parents=True, exist_ok=True)
    if reuse is not None:
        for record in sorted(reuse.glob("fashion_resnet18_4of8_*.json")):
            meta = json.loads(record.read_text())
            for key in ("checkpoint", "train_npz", "test_npz"):
                target = workdir / Path(meta[key]).name
                if not target.exists():
                    shutil.copy2(meta[key], target)
            return (workdir / Path(meta["checkpoint"]).name, workdir / Path(meta["train_npz"]).name,
                    workdir / Path(meta["test_npz"]).name, {k: meta[k] for k in ("train_images", "test_top1", "train_seconds")}
                    | {"reused_from": str(record)})
    from maxq_deploy.reference.fashion import prepare_fashion_example

    ex = prepare_fashion_example(workdir, nm="4:8", epochs=epochs)
    return ex.checkpoint, ex.train_npz, ex.test_npz, {"train_images": ex.train_images, "test_top1": ex.test_top1,
                                                      "train_seconds": ex.train_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("work_fashion48"))
    parser.add_argument("--reuse", type=Path, default=None, help="a demo --example fashion-4of8 workdir to copy the trained network from")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs when the network is trained here")
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--val-images", type=int, default=2000)
    parser.add_argument("--auto-limit", type=int, default=1000, help="VAL images --auto measures on")
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--qat-train-batches", type=int, default=375)
    parser.add_argument("--qat-lr", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    work = args.workdir
    ckpt, train, test, trained = example_files(work, args.reuse, args.epochs)
    val = held_out_val(work, trained["train_images"], args.val_images)
    projected, auto = work / "projected.pt", work / "auto.pt"
    qat_projected, qat_auto = work / "projected_qat.pt", work / "auto_qat.pt"
    ort_projected, ort_auto = work / "projected_qat_ort.onnx", work / "auto_qat_ort.onnx"
    for path in (projected, auto, qat_projected, qat_auto, ort_projected, ort_auto):
        path.unlink(missing_ok=True)
    qat = ["--qat", "--train-data", train, "--val-data", val, "--epochs", str(args.qat_epochs), "--train-batches",
           str(args.qat_train_batches), "--lr", str(args.qat_lr), "-j", "0", "--device", "cpu"]
    steps = {
        "fold_project": run_step(["fold", ckpt, "-o", projected, "--project"]),
        "fold_auto": run_step(["fold", ckpt, "-o", auto, "--project", "--auto", "--max-drop", str(args.max_drop),
                               "--data", val, "--limit", str(args.auto_limit)]),
        "qat_project": run_step(["quantize", projected, "-o", qat_projected, *qat]),
        "qat_auto": run_step(["quantize", auto, "-o", qat_auto, *qat]),
        "export_ort_project": run_step(["export", "onnx", qat_projected, "-o", ort_projected, "--target", "onnxruntime"]),
        "export_ort_auto": run_step(["export", "onnx", qat_auto, "-o", ort_auto, "--target", "onnxruntime"]),
        "verify_ort_auto": run_step(["verify", ort_auto], check=False),
        "eval_test": run_step(["eval", ckpt, projected, auto, qat_projected, qat_auto, ort_projected, ort_auto,
                               "--data", test, "-j", "0"]),
    }
    evals = steps["eval_test"]["json"]
    top1 = {Path(r["model"]).name: r["top1"] for r in evals}
    images = {r["images"] for r in evals}
    choice = steps["fold_auto"]["json"]["auto"]
    fp32 = top1[ckpt.name]
    rows = {
        "fp32 4:8 (MaxQ checkpoint)": top1[ckpt.name],
        "fold --project (2:4, fp32)": top1[projected.name],
        "fold --project + QAT int8 (torch fake-quant)": top1[qat_projected.name],
        "fold --project + QAT int8, ONNX Runtime form": top1[ort_projected.name],
        "fold --project --auto (fp32)": top1[auto.name],
        "fold --project --auto + QAT int8 (torch fake-quant)": top1[qat_auto.name],
        "fold --project --auto + QAT int8, ONNX Runtime form": top1[ort_auto.name],
    }
    report = {
        "benchmark": "fashion_4of8_recovery",
        "machine": platform.platform(),
        "trained": trained,
        "test_images": sorted(images),
        "val": {"file": val.name, "images": args.val_images, "auto_limit": args.auto_limit},
        "top1": rows,
        "auto_plus_qat_within_1_point_of_fp32_4of8": {
            "torch": abs(fp32 - top1[qat_auto.name]) <= 1.0, "onnxruntime": abs(fp32 - top1[ort_auto.name]) <= 1.0},
        "kept_dense": choice["kept_dense"],
        "auto": choice,
        "fold_project_groups_changed": steps["fold_project"]["json"]["groups_changed"],
        "fold_auto_groups_changed": steps["fold_auto"]["json"]["groups_changed"],
        "qat": {"project": steps["qat_project"]["json"].get("training"), "auto": steps["qat_auto"]["json"].get("training")},
        "verify_ort_auto": {"exit_code": steps["verify_ort_auto"]["exit_code"],
                            "verdict": (steps["verify_ort_auto"]["json"] or {}).get("verdict")},
        "commands": [s["command"] for s in steps.values()],
        "seconds": {name: s["seconds"] for name, s in steps.items()} | {"total": round(time.perf_counter() - started, 1)},
    }
    print_and_save(report, args.out)


if __name__ == "__main__":
    main()
