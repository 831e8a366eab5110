"""Is ``maxq-deploy fold`` cheap next to merely loading the checkpoint?

Makes a ResNet-50 MaxQ 2:4 checkpoint with 1000 classes (weights + masks, about 190 MB) in a
temporary folder, then times whole processes, side by side and interleaved round by round
(best of ``--repeats``):

- ``load``: ``python -c "import torch; torch.load(CKPT, weights_only=True)"``, the floor;
- ``fold``: ``maxq-deploy fold CKPT -o OUT`` (it already checks 2:4 on every folded layer);
- ``verify``: ``maxq-deploy verify OUT`` (the separate check a user may run afterwards);
- ``fold+verify``: the two above, summed per round;
- ``import torch``: ``python -c "import torch"``, the start-up cost every process pays.

Per command: wall time, CPU time (user + sys, less sensitive to a busy machine) and peak RSS of
the child (``os.wait4``'s rusage, one child at a time). Targets: fold wall time <= 3x the load
process, fold peak RSS < 3x the checkpoint size.

``--compare-rev REV`` also benchmarks the package as committed at git revision REV (exported
into the temp folder and run with ``python -m maxq_deploy``), interleaved with the working tree,
so a before/after of a performance change is measured under the same load.

    python benchmarks/fold_benchmark.py --out benchmarks/results/fold_benchmark.json
    python benchmarks/fold_benchmark.py --compare-rev HEAD
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_WALL_RATIO = 3.0
TARGET_RSS_RATIO = 3.0


@dataclass
class Sample:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float


@dataclass
class Measurement:
    name: str
    command: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def best(self) -> Sample:
        return min(self.samples, key=lambda s: s.wall_s)

    def summary(self) -> dict:
        walls = [s.wall_s for s in self.samples]
        return {
            "name": self.name,
            "command": self.command,
            "best_wall_s": round(self.best.wall_s, 3),
            "median_wall_s": round(statistics.median(walls), 3),
            "best_cpu_s": round(min(s.cpu_s for s in self.samples), 3),
            "peak_rss_mb": round(max(s.peak_rss_mb for s in self.samples), 1),
            "samples": [asdict(s) for s in self.samples],
        }


def run_child(argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Sample:
    """Run one child to completion; wall time, CPU time and peak RSS of that child alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(argv)}\n{stderr.decode(errors='replace')}")
    return Sample(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, peak_rss_mb=usage.ru_maxrss / 1024)


def make_checkpoint_file(workdir: Path) -> Path:
    """Written by a child process: this process must stay small, because a child's peak-RSS
    counter starts from its parent's resident size at fork, and would inflate every number."""
    path = workdir / "checkpoint.resnet50.bench.pth.tar"
    code = (
        "import sys\n"
        "from maxq_deploy.reference import make_checkpoint, save_checkpoint\n"
        "save_checkpoint(make_checkpoint('resnet50', '2:4', num_classes=1000), sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return path


def maxq_deploy_argv() -> list[str]:
    """This interpreter's console script (not a pyenv shim, whose bash start-up would be timed)."""
    beside = Path(sys.executable).with_name("maxq-deploy")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("maxq-deploy")
    return [found] if found else [sys.executable, "-m", "maxq_deploy"]


def export_revision(rev: str, dest: Path) -> Path:
    """The package at git ``rev`` as an importable tree (cli/ installed as maxq_deploy/cli)."""
    archive = dest / "rev.tar"
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", str(REPO), "archive", rev, "maxq_deploy", "cli"], stdout=f, check=True)
    root = dest / f"rev-{rev.replace('/', '_')}"
    root.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    (root / "cli").rename(root / "maxq_deploy" / "cli")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fold_benchmark.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare-rev", default=None, help="also time the package as committed at this git revision")
    parser.add_argument("--workdir", type=Path, default=None, help="keep files here instead of a temp folder")
    args = parser.parse_args()

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="fold-bench-")
    workdir = args.workdir or Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        print(f"making a ResNet-50 2:4 checkpoint (1000 classes) in {workdir} ...", flush=True)
        ckpt = make_checkpoint_file(workdir)
        size_mb = ckpt.stat().st_size / 2**20

        env = dict(os.environ)
        variants: list[tuple[str, list[str], dict[str, str]]] = [("", maxq_deploy_argv(), env)]
        if args.compare_rev:
            tree = export_revision(args.compare_rev, workdir)
            rev_env = dict(env, PYTHONPATH=str(tree))
            check = subprocess.run([sys.executable, "-c", "import maxq_deploy; print(maxq_deploy.__file__)"],
                                   env=rev_env, cwd=workdir, capture_output=True, text=True, check=True)
            assert check.stdout.strip().startswith(str(tree)), check.stdout
            variants.append((f"@{args.compare_rev}", [sys.executable, "-m", "maxq_deploy"], rev_env))

        load_code = f"import torch; torch.load({str(ckpt)!r}, weights_only=True)"
        plan: list[tuple[str, list[str], dict[str, str]]] = [
            ("import torch", [sys.executable, "-c", "import torch"], env),
            ("load", [sys.executable, "-c", load_code], env),
        ]
        for label, tool, venv in variants:
            folded = workdir / f"folded{label.replace('@', '_')}.pt"
            plan.append((f"fold{label}", [*tool, "fold", str(ckpt), "-o", str(folded)], venv))
            plan.append((f"verify{label}", [*tool, "verify", str(folded)], venv))
        results = {name: Measurement(name, " ".join(argv)) for name, argv, _ in plan}

        for round_no in range(args.repeats):
            order = plan if round_no % 2 == 0 else plan[::-1]  # neither side always goes first
            for name, argv, venv in order:
                if name.startswith("verify"):
                    continue  # needs this round's fold output: run right after its fold below
                results[name].samples.append(run_child(argv, venv, workdir))
                if name.startswith("fold"):
                    verify_name = "verify" + name[len("fold"):]
                    verify_argv = next(a for n, a, _ in plan if n == verify_name)
                    results[verify_name].samples.append(run_child(verify_argv, venv, workdir))
            print(f"round {round_no + 1}/{args.repeats} done", flush=True)

        for label, _, _ in variants:
            fold_m, verify_m = results[f"fold{label}"], results[f"verify{label}"]
            both = Measurement(f"fold+verify{label}", f"{fold_m.command} && {verify_m.command}")
            both.samples = [
                Sample(f.wall_s + v.wall_s, f.cpu_s + v.cpu_s, max(f.peak_rss_mb, v.peak_rss_mb))
                for f, v in zip(fold_m.samples, verify_m.samples)
            ]
            results[both.name] = both

        load = results["load"].best
        rows = []
        for m in results.values():
            best = m.best
            rows.append({
                **m.summary(),
                "wall_vs_load": round(best.wall_s / load.wall_s, 2),
                "cpu_vs_load": round(min(s.cpu_s for s in m.samples) / min(s.cpu_s for s in results["load"].samples), 2),
                "rss_vs_file": round(max(s.peak_rss_mb for s in m.samples) / size_mb, 2),
            })
        fold_row = next(r for r in rows if r["name"] == "fold")
        report = {
            "benchmark": "fold vs torch.load, whole processes",
            "checkpoint": {"arch": "resnet50", "nm": "2:4", "num_classes": 1000, "size_mb": round(size_mb, 1)},
            "repeats": args.repeats,
            "targets": {"fold_wall_vs_load_max": TARGET_WALL_RATIO, "fold_rss_vs_file_max": TARGET_RSS_RATIO},
            "fold_meets_wall_target": fold_row["wall_vs_load"] <= TARGET_WALL_RATIO,
            "fold_meets_rss_target": fold_row["rss_vs_file"] < TARGET_RSS_RATIO,
            "machine": {
                "python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "benchmark_process_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            },
            "results": rows,
        }

        print(f"\ncheckpoint: ResNet-50 2:4, 1000 classes, {size_mb:.1f} MiB; best of {args.repeats} "
              f"(load average now {report['machine']['load_average_at_end']})")
        header = f"{'command':<18}{'best wall s':>12}{'median s':>10}{'cpu s':>8}{'peak RSS MiB':>14}{'wall/load':>11}{'cpu/load':>10}{'RSS/file':>10}"
        print(header)
        print("-" * len(header))
        for r in rows:
            print(f"{r['name']:<18}{r['best_wall_s']:>12.2f}{r['median_wall_s']:>10.2f}{r['best_cpu_s']:>8.2f}"
                  f"{r['peak_rss_mb']:>14.0f}{r['wall_vs_load']:>11.2f}{r['cpu_vs_load']:>10.2f}{r['rss_vs_file']:>10.2f}")
        print(f"\nfold wall <= {TARGET_WALL_RATIO}x load: {'yes' if report['fold_meets_wall_target'] else 'NO'}; "
              f"fold peak RSS < {TARGET_RSS_RATIO}x file: {'yes' if report['fold_meets_rss_target'] else 'NO'}")

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"saved {args.out}")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
