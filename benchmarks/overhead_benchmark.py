"""How much does ``maxq-deploy bench``'s own timing loop add to a bare ``session.run`` loop?

Both loops run the SAME ONNX Runtime session on the same pre-allocated batch, side by side in
one process, interleaved in blocks (ABBA order per round, so neither always goes first):

- tool: ``maxq_deploy.bench.collect_samples`` (the loop behind ``benchmark``) over an
  ``OnnxRuntimeRunner``: the runner's ``run`` wrapper, the per-iteration ``perf_counter_ns``
  pair, the schedule, warm-up bookkeeping and the synchronization check;
- bare: ``t0 = perf_counter_ns(); session.run([out], {name: x}); perf_counter_ns() - t0``.

Reported per loop: mean and median per-iteration latency, and wall time per iteration of whole
blocks (which also counts the loop's own bookkeeping). The overhead is (tool - bare) / bare.
Because a shared machine adds noise far larger than the loop's cost, the script also times both
loops around a no-op "model", which measures the added nanoseconds per iteration directly.

    python benchmarks/overhead_benchmark.py --arch resnet18 --batch 8 --threads 2 --out overhead.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _fixtures as fixtures



def reference_onnx(workdir: Path, arch: str, input_size: int) -> Path:
    """A folded reference 2:4 checkpoint (random weights, 1000 classes) exported to fp32 ONNX."""
    return fixtures.reference_onnx(arch, workdir, input_size)


def bare_block(session, output: str, feed: dict, count: int) -> list[int]:
    """The loop a user would write by hand around ``session.run``."""
    samples = [0] * count
    clock = time.perf_counter_ns
    for i in range(count):
        t0 = clock()
        session.run([output], feed)
        samples[i] = clock() - t0
    return samples


def tool_block(bench, model, settings, inputs: dict) -> list[int]:
    """One call of the tool's measuring loop (``bench.collect_samples``, what ``measure`` times with).

    ``inputs`` hands it the bare loop's batch, so neither block pays for making one.
    """
    return bench.collect_samples([model], settings, inputs=inputs)[(0, settings.batch_sizes[0])]


def compare(run_tool, run_bare, rounds: int) -> dict:
    """Interleave tool and bare blocks ABBA; per-iteration latencies, block wall times, paired ratios.

    The paired ratio compares the two blocks of one round, which ran seconds apart; its median
    over rounds is the estimate least moved by bursts of other work on a shared machine.
    """
    samples: dict[str, list[int]] = {"tool": [], "bare": []}
    wall: dict[str, list[float]] = {"tool": [], "bare": []}
    block_mean: dict[str, list[float]] = {"tool": [], "bare": []}
    for r in range(rounds):
        for which in (("tool", "bare") if r % 2 == 0 else ("bare", "tool")):
            t0 = time.perf_counter_ns()
            got = run_tool() if which == "tool" else run_bare()
            wall[which].append((time.perf_counter_ns() - t0) / len(got))
            samples[which].extend(got)
            block_mean[which].append(statistics.fmean(got))

    def describe(which: str) -> dict:
        return {
            "iterations": len(samples[which]),
            "mean_ms": statistics.fmean(samples[which]) / 1e6,
            "median_ms": statistics.median(samples[which]) / 1e6,
            "wall_per_iter_ms": statistics.fmean(wall[which]) / 1e6,
            "block_means_ms": [round(v / 1e6, 4) for v in block_mean[which]],
        }

    tool, bare = describe("tool"), describe("bare")
    paired = [t / b for t, b in zip(block_mean["tool"], block_mean["bare"])]
    return {
        "tool": tool,
        "bare": bare,
        "overhead_mean_pct": 100 * (tool["mean_ms"] / bare["mean_ms"] - 1),
        "overhead_median_pct": 100 * (tool["median_ms"] / bare["median_ms"] - 1),
        "overhead_wall_pct": 100 * (tool["wall_per_iter_ms"] / bare["wall_per_iter_ms"] - 1),
        "overhead_paired_median_pct": 100 * (statistics.median(paired) - 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=12, help="ABBA rounds of one tool block and one bare block")
    parser.add_argument("--block", type=int, default=5, help="iterations per block")
    parser.add_argument("--workdir", type=Path, default=None, help="where the model is made (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=Path("overhead_benchmark.json"))
    args = parser.parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"command: {command}")

    from maxq_deploy import bench
    from maxq_deploy.bench import BenchModel, BenchSettings
    from maxq_deploy.runtimes.onnxruntime_runner import OnnxRuntimeRunner

    with tempfile.TemporaryDirectory(prefix="maxq-overhead-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model_path = reference_onnx(workdir, args.arch, args.input_size)
        runner = OnnxRuntimeRunner(model_path, threads=args.threads)
        x = bench.make_input(args.batch, args.input_size)
        feed = {runner.input_name: x}
        settings = BenchSettings(backend=None, device="cpu", batch_sizes=[args.batch], warmup=0, iters=args.block, seconds=None,
                                 block=args.block, threads=args.threads, input_size=None, sparse=False)
        model = BenchModel(model_path.name, str(model_path), "onnx", "onnxruntime", "cpu", args.input_size, runner=runner)
        for _ in range(3):
            runner.run(x)  # warm-up, shared by both loops
        inputs = {(args.batch, args.input_size): x}
        real = compare(lambda: tool_block(bench, model, settings, inputs),
                       lambda: bare_block(runner.session, runner.output_name, feed, args.block), args.rounds)

        class NullSession:
            def run(self, output, feed):
                return None

        class NullRunner:
            name, device = "null", "cpu"

            def run(self, batch):
                return None

            def close(self):
                pass

        null_iters = 20000
        null_settings = BenchSettings(backend=None, device="cpu", batch_sizes=[args.batch], warmup=0, iters=null_iters,
                                      seconds=None, block=null_iters, threads=None, input_size=None, sparse=False)
        null_model = BenchModel("null", None, "null", "null", "cpu", args.input_size, runner=NullRunner())
        null = compare(lambda: tool_block(bench, null_model, null_settings, inputs),
                       lambda: bare_block(NullSession(), "out", feed, null_iters), 6)
        runner.close()

    added_ns = (null["tool"]["wall_per_iter_ms"] - null["bare"]["wall_per_iter_ms"]) * 1e6
    bound_pct = 100 * added_ns / (real["bare"]["median_ms"] * 1e6)
    report = {
        "command": command,
        "model": f"{args.arch} fp32 ONNX, batch {args.batch}, {args.input_size}x{args.input_size}, {args.threads} threads",
        "rounds": args.rounds,
        "block": args.block,
        "real_model": real,
        "null_model": null,
        "added_ns_per_iteration": added_ns,
        "overhead_bound_pct": bound_pct,
        "environment": bench.collect_environment(args.threads),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    t, b = real["tool"], real["bare"]
    print(report["model"])
    print(f"  tool loop: mean {t['mean_ms']:.3f} ms, median {t['median_ms']:.3f} ms, wall/iter {t['wall_per_iter_ms']:.3f} ms ({t['iterations']} its)")
    print(f"  bare loop: mean {b['mean_ms']:.3f} ms, median {b['median_ms']:.3f} ms, wall/iter {b['wall_per_iter_ms']:.3f} ms ({b['iterations']} its)")
    print(f"  overhead: mean {real['overhead_mean_pct']:+.2f}%, median {real['overhead_median_pct']:+.2f}%, "
          f"wall {real['overhead_wall_pct']:+.2f}%, median of paired rounds {real['overhead_paired_median_pct']:+.2f}% "
          "(noise of a shared CPU included)")
    print(f"  no-op model: the tool adds {added_ns:.0f} ns per iteration = {bound_pct:.4f}% of this model's median latency")
    print(f"  load average {report['environment']['load_average']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
