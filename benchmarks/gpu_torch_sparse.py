"""torch 2:4 semi-structured sparse vs dense on CUDA: ResNet-50 2:4, fp16 and bf16, per batch + per layer.

Same module, same dtype, channels-last: the dense runner and the sparse one differ only by the
swap of the eligible 2:4 layers for semi-structured sparse matmuls (maxq_deploy.runtimes.semi_structured, maxq_deploy.runtimes.torch_sparse_runner),
so their ratio is the sparse gain. Times with CUDA events on device-resident inputs (no host
copies). INT8: the sparse torch runner offers fp16/bf16 only; recorded as not measured.
Fails fast with one line when CUDA is missing.

    python benchmarks/gpu_torch_sparse.py --batches 1,64,256 --out torch_sparse.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _cli_steps import write_report


def time_module(module, x, warmup: int, seconds: float) -> float:
    """Images per second of ``module(x)`` (CUDA events, device-resident input)."""
    import torch

    with torch.inference_mode():
        for _ in range(warmup):
            module(x)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        runs, elapsed = 0, 0.0
        t0 = time.perf_counter()
        start.record()
        while time.perf_counter() - t0 < seconds or runs < 3:
            module(x)
            runs += 1
        end.record()
        torch.cuda.synchronize()
        elapsed = start.elapsed_time(end) / 1000.0
    return runs * x.shape[0] / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batches", default="1,64,256")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(f"error: no CUDA GPU (torch {torch.__version__}, torch.version.cuda={torch.version.cuda}): "
              "this benchmark needs one", file=sys.stderr)
        return 2
    import tempfile

    from maxq_deploy.fold import fold_checkpoint, load_folded
    from maxq_deploy.reference import make_checkpoint, save_checkpoint
    from maxq_deploy.runtimes.torch_sparse_runner import SparseTorchRunner

    tmp = Path(tempfile.mkdtemp(prefix="torch-sparse-"))
    save_checkpoint(make_checkpoint(args.arch, "2:4", num_classes=1000, seed=0), tmp / "ckpt.pth.tar")
    fold_checkpoint(tmp / "ckpt.pth.tar", tmp / "folded.pt")
    folded = load_folded(tmp / "folded.pt")
    results = {"device": torch.cuda.get_device_name(0), "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
               "torch": torch.__version__, "arch": args.arch, "input_size": args.input_size, "runs": [],
               "int8": "not measured: the sparse torch runner offers float16/bfloat16 only"}
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        dense = SparseTorchRunner(folded.build_model(), "cuda", dtype, sparse=False)
        sparse = SparseTorchRunner(folded.build_model(), "cuda", dtype, sparse=True)
        results.setdefault("layers", {})[dtype_name] = sparse.report.to_dict() if sparse.report else None
        for batch in (int(b) for b in args.batches.split(",")):
            x = torch.randn(batch, 3, args.input_size, args.input_size, device="cuda", dtype=dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            d = time_module(dense.module, x, args.warmup, args.seconds)
            s = time_module(sparse.module, x, args.warmup, args.seconds)
            row = {"dtype": dtype_name, "batch": batch, "dense_img_s": round(d, 1), "sparse_img_s": round(s, 1),
                   "speedup": round(s / d, 3)}
            results["runs"].append(row)
            print(json.dumps(row), flush=True)
        dense.close()
        sparse.close()
    if args.out:
        write_report(results, args.out, indent=1, announce=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
