"""Acceptance run: 100-class CIFAR ResNets through the CLI with no ``--input-size`` anywhere.

For each of c_resnet18, c_resnet34, c_resnet50 a reference-layer 2:4 checkpoint with 100 classes
(random weights, hard V2Pro masks, random BN statistics: real upstream layout, no training) goes
through ``fold`` (exactness measured against the MaxQ network), ``verify``, PTQ ``quantize``,
Q/DQ ``export onnx``, ``verify`` of the ONNX, ``eval`` (ONNX Runtime and torch) and ``bench``.
The data are random-ish normalized 32x32 arrays with random labels: they exercise every stage
and the 32x32 default, they say nothing about accuracy. Saves the numbers as JSON.

    python benchmarks/cifar_pipeline_benchmark.py --out benchmarks/results/cifar_pipeline_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from _cli_steps import print_and_save, run_step

ARCHS = ("c_resnet18", "c_resnet34", "c_resnet50")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--images", type=int, default=128)
    args = parser.parse_args()

    from maxq_deploy.load.maxq_checkpoint import load_checkpoint
    from maxq_deploy.fold import load_folded
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    results = []
    with tempfile.TemporaryDirectory(prefix="maxq-cifar-") as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        data = work / "rand32.npz"
        np.savez(data, images=rng.standard_normal((args.images, 3, 32, 32), dtype=np.float32),
                 labels=rng.integers(0, 100, args.images))
        for arch in args.archs.split(","):
            ckpt = work / f"{arch}.pth.tar"
            save_checkpoint(make_checkpoint(arch, "2:4", "HardMaxQConv2DBNV2Pro", 100), ckpt)
            folded, int8, onnx_path = work / f"{arch}.folded.pt", work / f"{arch}.int8.pt", work / f"{arch}.int8.onnx"
            steps = {
                "inspect": run_step(["inspect", ckpt]),
                "fold": run_step(["fold", ckpt, "-o", folded]),
                "verify_folded": run_step(["verify", folded]),
                "quantize_ptq": run_step(["quantize", folded, "-o", int8, "--calib", data, "--calib-batches", "4", "-b", "32", "-j", "0"]),
                "export_qdq": run_step(["export", "onnx", int8, "-o", onnx_path]),
                "verify_onnx": run_step(["verify", onnx_path]),
                "eval": run_step(["eval", onnx_path, folded, "--data", data, "-j", "0"]),
                "bench": run_step(["bench", folded, onnx_path, "--batch-sizes", "1,8", "--iters", "10", "--warmup", "2",
                                   "--threads", "1", "--json", work / f"{arch}.bench.json"], json_out=False),
            }
            bench = json.loads((work / f"{arch}.bench.json").read_text())
            # exactness of fold: folded network vs the MaxQ network on a probe batch at 32x32
            x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
            with torch.no_grad():
                ref = load_checkpoint(ckpt).build_model()(x)
                out = load_folded(folded).build_model()(x)
            fold_rel = float((out - ref).abs().max() / ref.abs().max())
            e = steps["eval"]["json"]
            results.append({
                "arch": arch,
                "num_classes": steps["inspect"]["json"]["num_classes"],
                "input_size_inspect": steps["inspect"]["json"]["input_size"],
                "fold_relative_max_error_vs_maxq": fold_rel,
                "verify_folded": steps["verify_folded"]["json"]["verdict"],
                "ptq": {"pattern_ok": steps["quantize_ptq"]["json"]["pattern_ok"],
                        "holding": steps["quantize_ptq"]["json"]["sparse_layers_holding_int8_pattern"],
                        "sparse_layers": steps["quantize_ptq"]["json"]["sparse_layers"]},
                "onnx_input_shape": steps["export_qdq"]["json"]["input_shape"],
                "onnx_parity": steps["export_qdq"]["json"]["parity"],
                "verify_onnx": steps["verify_onnx"]["json"]["verdict"],
                "eval_random_data": [{"model": Path(r["model"]).name, "top1": r["top1"], "images": r["images"]} for r in e],
                "bench": [{"model": bench["models"][m["model_index"]]["label"], "input_size": bench["models"][m["model_index"]]["input_size"],
                           "batch": m["batch"], "mean_ms": m["mean_ms"], "throughput_ips": m["throughput_ips"]} for m in bench["results"]],
                "seconds": {name: s["seconds"] for name, s in steps.items()},
                "commands": [s["command"] for s in steps.values()],
            })
            for path in (ckpt, folded, int8, onnx_path):
                path.unlink()
    report = {"benchmark": "cifar_pipeline", "machine": platform.platform(), "torch": torch.__version__, "results": results}
    print_and_save(report, args.out)


if __name__ == "__main__":
    main()
