"""Eval throughput of a folded ResNet-50 (1000 classes, 224x224): ONNX Runtime vs PyTorch eager, CPU.

Both runtimes evaluate the same images through :func:`maxq_deploy.evaluate.evaluate_runner`
(the code path of ``maxq-deploy eval``), with the same batch size and CPU thread count, in
alternating rounds after a warm-up pass each, so background load hits both alike. Weights are
random (a reference MaxQ checkpoint folded by the real pipeline): throughput does not depend on
them. Prints a table and writes JSON:

    python benchmarks/eval_benchmark.py --out eval_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from _fixtures import reference_folded


def make_models(workdir: Path, arch: str, num_classes: int, size: int) -> tuple[Path, Path, str]:
    """(folded checkpoint, ONNX model, exporter used), made once per work folder."""
    import torch

    folded, onnx_path = workdir / f"{arch}.folded.pt", workdir / f"{arch}.onnx"
    reference_folded(arch, workdir, num_classes)
    exporter = "maxq_deploy.export.tensorrt_form"
    if not onnx_path.exists():
        try:
            from maxq_deploy.export.tensorrt_form import export_onnx
        except ImportError:
            from maxq_deploy.load.torch_model import load_torch_model

            exporter = "torch.onnx.export (TorchScript, opset 17)"
            torch.onnx.export(
                load_torch_model(folded).module, (torch.zeros(1, 3, size, size),), str(onnx_path),
                input_names=["input"], output_names=["output"], opset_version=17, dynamo=False,
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )
        else:
            export_onnx(folded, onnx_path, input_size=size)
    return folded, onnx_path, exporter


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("eval_benchmark.json"), help="JSON report to write")
    parser.add_argument("--workdir", type=Path, default=None, help="keep models and data here (default: a temp folder)")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per runtime, alternating")
    parser.add_argument("--channels-last", action="store_true", help="also time PyTorch eager with channels_last")
    args = parser.parse_args(argv)

    import onnxruntime
    import torch

    from maxq_deploy.core.files import atomic_output, check_output_path
    from maxq_deploy.data import open_dataset
    from maxq_deploy.evaluate import evaluate_runner
    from maxq_deploy.runtimes import open_runner
    from maxq_deploy.runtimes.torch_runner import open_torch_runner

    check_output_path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        folded, onnx_path, exporter = make_models(workdir, args.arch, args.num_classes, args.image_size)
        rng = np.random.default_rng(0)
        np.save(workdir / "images.npy", rng.standard_normal((args.images, 3, args.image_size, args.image_size), dtype=np.float32))
        np.save(workdir / "labels.npy", rng.integers(0, args.num_classes, args.images))
        dataset = open_dataset(workdir / "images.npy", labels=workdir / "labels.npy", require_labels=True)

        runners = {
            "torch": open_runner(folded, backend="torch", threads=args.threads),
            "onnxruntime": open_runner(onnx_path, backend="onnxruntime", threads=args.threads),
        }
        if args.channels_last:  # eager with NHWC activations: oneDNN's preferred CPU layout
            runners["torch-channels-last"] = open_torch_runner(folded, threads=args.threads, channels_last=True)
        results: dict[str, list] = {name: [] for name in runners}
        for name, runner in runners.items():  # warm-up: kernel selection, page-in of mapped weights
            evaluate_runner(runner, dataset, batch_size=args.batch_size, workers=0)
        for round_ in range(args.rounds):
            order = list(runners) if round_ % 2 == 0 else list(reversed(runners))
            for name in order:
                results[name].append(evaluate_runner(runners[name], dataset, batch_size=args.batch_size, workers=0))
        for runner in runners.values():
            runner.close()

    per_backend = {}
    for name, runs in results.items():
        rates = [r.images_per_second for r in runs]
        per_backend[name] = {
            "images_per_second_median": statistics.median(rates),
            "images_per_second_best": max(rates),
            "images_per_second_rounds": rates,
            "ms_per_batch_median": 1000.0 * args.batch_size / statistics.median(rates),
            "top1": runs[-1].top1,
            "model_kind": runs[-1].model_kind,
        }
    agreement = results["onnxruntime"][-1].agreement(results["torch"][-1])
    ort_rate = per_backend["onnxruntime"]["images_per_second_median"]
    ratio = ort_rate / per_backend["torch"]["images_per_second_median"]
    best_torch = max(v["images_per_second_median"] for k, v in per_backend.items() if k.startswith("torch"))
    report = {
        "benchmark": "eval throughput, ONNX Runtime vs PyTorch eager (CPU)",
        "model": f"{args.arch} folded, {args.num_classes} classes, random weights",
        "input": [args.batch_size, 3, args.image_size, args.image_size],
        "images": args.images,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "onnx_exporter": exporter,
        "results": per_backend,
        "onnxruntime_over_torch": ratio,
        "onnxruntime_over_best_torch": ort_rate / best_torch,
        "top1_agreement_percent": agreement,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
    }
    print(f"{report['model']}, batch {args.batch_size}, {args.threads} threads, {args.images} images x {args.rounds} rounds")
    print(f"{'runtime':<20} {'img/s median':>13} {'img/s best':>11} {'ms/batch':>9}")
    for name, row in per_backend.items():
        print(f"{name:<20} {row['images_per_second_median']:>13.2f} {row['images_per_second_best']:>11.2f} {row['ms_per_batch_median']:>9.1f}")
    print(f"ONNX Runtime / PyTorch eager: {ratio:.2f}x (vs best torch variant {ort_rate / best_torch:.2f}x)   "
          f"top-1 agreement: {agreement}%")
    with atomic_output(args.out) as tmp_out:
        tmp_out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
