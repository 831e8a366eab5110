"""PTQ calibration time per calibrator vs plain fp32 forward passes over the same batches.

    python benchmarks/calibration_benchmark.py                       # ResNet-50, 224, 4 batches of 8
    python benchmarks/calibration_benchmark.py --out calib.json --repeats 5 --modes maxq

Calibration = the forward passes that feed the calibrators (histograms for entropy / mse /
percentile, running max for max) + turning what they collected into ranges. The baseline is
the folded fp32 network's forward passes over the same batches. Everything runs after a warm-up
pass, interleaved, in one process with one thread count; the minimum of the repeats is kept
(wall and process CPU time: the machines this runs on are often shared). Target: calibration
<= 2x the fp32 passes. ``--modes upstream maxq`` times pytorch-quantization's own collectors
(before) next to this package's (after: one-pass min/max, histograms of tensors shared by
several quantizers collected once, large tensors binned from a fixed-stride sample).
The network is a random MaxQ 2:4 checkpoint folded by the pipeline; the images are random
(ranges do not matter for time). Prints a table and, with --out, writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from _cli_steps import write_report
from _fixtures import reference_folded


def _folded_checkpoint(arch: str, folder: Path) -> Path:
    return reference_folded(arch, folder)


class _Clock:
    """Wall and process CPU time of a block (CPU time is steadier on a shared, loaded machine)."""

    def __enter__(self) -> "_Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


@torch.no_grad()
def _fp32_pass(model: torch.nn.Module, batches: list[torch.Tensor]) -> _Clock:
    with _Clock() as clock:
        for x in batches:
            model(x)
    return clock


@contextlib.contextmanager
def _collection(mode: str) -> Iterator[None]:
    """``maxq``: this package's calibration. ``upstream``: pytorch-quantization's own collectors
    (HistogramCalibrator / MaxCalibrator on every value, one per quantizer, no sharing); the
    ranges are computed the same way in both (upstream's entropy loop takes seconds per
    quantizer and its mse needs CUDA, so they could not be timed here)."""
    if mode == "maxq":
        yield
        return
    from pytorch_quantization import calib

    from maxq_deploy.quantize import pq_adapter

    with mock.patch.object(pq_adapter, "_single_pass_calibrators", lambda: (calib.HistogramCalibrator, calib.MaxCalibrator)), \
            mock.patch.object(pq_adapter, "share_calibrators", lambda model, sharing: None):
        yield


def _calibration(folded, dataset, method: str, batches: int, batch_size: int, mode: str) -> tuple[_Clock, object]:
    from maxq_deploy.quantize import pq_adapter
    from maxq_deploy.quantize.calibrate import CalibrationOptions, calibrate

    with _collection(mode):
        model = pq_adapter.build_quant_model(folded.arch, folded.num_classes, method)
        pq_adapter.load_weights(model, folded.state_dict)
        options = CalibrationOptions(method, batches=batches, batch_size=batch_size)
        with _Clock() as clock:
            stats = calibrate(model, dataset, options, workers=0)
    return clock, stats


def run(arch: str, image_size: int, batches: int, batch_size: int, calibrators: list[str], repeats: int, threads: int | None,
        modes: list[str]) -> dict:
    from maxq_deploy.data import open_dataset
    from maxq_deploy.fold import load_folded
    from maxq_deploy.quantize import quantize_ptq

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="maxq-calib-bench-") as tmp:
        folder = Path(tmp)
        folded_path = _folded_checkpoint(arch, folder)
        folded = load_folded(folded_path)
        images = np.random.default_rng(0).standard_normal((batches * batch_size, 3, image_size, image_size)).astype(np.float32)
        np.save(folder / "calib.npy", images)
        dataset = open_dataset(folder / "calib.npy")
        tensors = [torch.from_numpy(images[i * batch_size:(i + 1) * batch_size]) for i in range(batches)]
        fp32_model = folded.build_model()
        _fp32_pass(fp32_model, tensors[:1])  # warm-up: oneDNN primitives for these shapes
        fp32: list[_Clock] = []
        calib: dict[tuple[str, str], list[tuple[_Clock, object]]] = {(m, c): [] for m in modes for c in calibrators}
        for _ in range(repeats):  # interleaved, so load changes hit every side
            fp32.append(_fp32_pass(fp32_model, tensors))
            for mode, method in calib:
                calib[mode, method].append(_calibration(folded, dataset, method, batches, batch_size, mode))
        base_wall, base_cpu = min(c.wall for c in fp32), min(c.cpu for c in fp32)
        rows = []
        for (mode, method), runs in calib.items():
            best = min(runs, key=lambda r: r[0].cpu)
            stats = best[1]
            wall, cpu = min(r[0].wall for r in runs), min(r[0].cpu for r in runs)
            with _Clock() as total, _collection(mode):
                result = quantize_ptq(folded_path, folder / f"q_{method}.pth", dataset, calibrator=method, calib_batches=batches,
                                      batch_size=batch_size, workers=0)
            rows.append({
                "collection": mode,
                "calibrator": method,
                "calibration_wall_s": round(wall, 3), "calibration_cpu_s": round(cpu, 3),
                "collect_wall_s": stats.collect_seconds, "ranges_wall_s": stats.ranges_seconds,
                "fp32_forward_wall_s": round(base_wall, 3), "fp32_forward_cpu_s": round(base_cpu, 3),
                "ratio_wall": round(wall / base_wall, 3), "ratio_cpu": round(cpu / base_cpu, 3),
                "quantize_ptq_total_wall_s": round(total.wall, 3), "quantizers": len(result.quantizers),
            })
    return {
        "benchmark": "calibration",
        "arch": arch, "image_size": image_size, "batches": batches, "batch_size": batch_size, "repeats": repeats,
        "statistic": "min over repeats", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.machine(), "target_ratio": 2.0, "results": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--calibrators", nargs="+", default=["entropy", "mse", "percentile", "max"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--modes", nargs="+", default=["upstream", "maxq"], choices=["upstream", "maxq"],
                        help="upstream: pytorch-quantization's collectors (before); maxq: this package's (after)")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = parser.parse_args(argv)
    report = run(args.arch, args.image_size, args.batches, args.batch_size, args.calibrators, args.repeats, args.threads, args.modes)
    print(f"{report['arch']} {report['image_size']}x{report['image_size']}, {report['batches']} batches of {report['batch_size']}, "
          f"{report['threads']} threads, min of {report['repeats']} (wall and process CPU seconds)")
    head = ["collection", "calibrator", "calib wall", "calib cpu", "fp32 wall", "fp32 cpu", "ratio wall", "ratio cpu", "ranges wall", "ptq total"]
    print("  ".join(f"{h:>11}" for h in head))
    for row in report["results"]:
        values = [row["collection"], row["calibrator"], row["calibration_wall_s"], row["calibration_cpu_s"], row["fp32_forward_wall_s"],
                  row["fp32_forward_cpu_s"], row["ratio_wall"], row["ratio_cpu"], row["ranges_wall_s"], row["quantize_ptq_total_wall_s"]]
        print("  ".join(f"{v:>11}" if isinstance(v, str) else f"{v:>11.3f}" for v in values))
    if args.out:
        write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
