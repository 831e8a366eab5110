"""Time ``export onnx`` end to end (load, export, post-process, write + parity check, N:M check).

Default: ResNet-50, 1000 classes, 224x224, fp32, the CPU ONNX Runtime parity check on a batch
of 2. The folded checkpoint is made first with the reference MaxQ layers and ``fold`` (timed
separately; pass ``--folded`` to reuse one). Prints a table and writes JSON with ``--out``.

    python benchmarks/export_benchmark.py --out export_benchmark.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from _cli_steps import write_report
from _fixtures import reference_folded

T = TypeVar("T")


class StepTimer:
    """A :class:`maxq_deploy.core.progress.Progress` that records how long each step of a loop takes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        for item in items:
            start = time.perf_counter()
            yield item
            self.seconds[getattr(item, "__name__", str(item))] = round(time.perf_counter() - start, 3)


def make_folded(arch: str, classes: int, workdir: Path) -> tuple[Path, float]:
    start = time.perf_counter()
    folded = reference_folded(arch, workdir, classes)
    return folded, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    parser.add_argument("--repeat", type=int, default=3, help="exports to time (the table shows each, JSON min and median)")
    parser.add_argument("--folded", type=Path, help="reuse this folded checkpoint instead of making one")
    parser.add_argument("--workdir", type=Path, help="where checkpoints and ONNX files go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = parser.parse_args(argv)

    import onnx
    import onnxruntime
    import torch

    from maxq_deploy import __version__
    from maxq_deploy.export.tensorrt_form import export_onnx

    with tempfile.TemporaryDirectory(prefix="maxq-export-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        prepare = None
        folded = args.folded
        if folded is None:
            folded, prepare = make_folded(args.arch, args.classes, workdir)
            print(f"made folded {args.arch} checkpoint in {prepare:.1f} s (not part of the export time)")
        runs = []
        for i in range(args.repeat):
            timer = StepTimer()
            start = time.perf_counter()
            result = export_onnx(folded, workdir / f"{args.arch}.{args.precision}.onnx", precision=args.precision,
                                 input_size=args.input_size, progress=timer)
            total = time.perf_counter() - start
            runs.append({"seconds": round(total, 3), "steps": timer.seconds})
            steps = ", ".join(f"{name} {sec:.2f}" for name, sec in timer.seconds.items())
            print(f"run {i + 1}: {total:6.2f} s  ({steps})")

    totals = [run["seconds"] for run in runs]
    report = {
        "benchmark": "export onnx",
        "arch": args.arch,
        "num_classes": args.classes,
        "input_size": args.input_size,
        "precision": args.precision,
        "parity_batch": result.parity.batch_shape,
        "seconds_min": min(totals),
        "seconds_median": statistics.median(totals),
        "target_seconds": 60,
        "runs": runs,
        "prepare_folded_seconds": round(prepare, 3) if prepare is not None else None,
        "parity": {
            "max_abs_error": result.parity.max_abs_error,
            "relative_error": result.parity.relative_error,
            "tolerance": result.parity.tolerance,
            "passed": result.parity.passed,
        },
        "pattern_verdict": result.pattern_verdict,
        "onnx_megabytes": round(result.size_bytes / 1e6, 1),
        "environment": {
            "maxq_deploy": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
    }
    print(
        f"{args.arch} {args.precision} {args.input_size}px export: min {report['seconds_min']:.2f} s, "
        f"median {report['seconds_median']:.2f} s over {len(runs)} run(s) (target < 60 s); parity rel "
        f"{result.parity.relative_error:.3g} <= {result.parity.tolerance:g}; {result.pattern_verdict}; "
        f"{report['onnx_megabytes']} MB"
    )
    if args.out:
        write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
