"""Distributed QAT: ``torchrun --nproc_per_node 2`` on the CPU (gloo), through the real CLI.

Same network as tests/test_quantize.py (the digits ResNet-18, made once per run). Two ranks
calibrate, train a few DDP steps with the 2:4 masks, validate their shards; rank 0 writes and
prints; the result must match a single-process run of the same recipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from filelock import FileLock

pytest.importorskip("pytorch_quantization")
pytest.importorskip("sklearn")

from maxq_deploy.fold import fold_checkpoint  # noqa: E402
from maxq_deploy.quantize import quantize_qat  # noqa: E402
from maxq_deploy.quantize.artifact import int8_weight, load_quantized_checkpoint  # noqa: E402
from maxq_deploy.reference.train import prepare_digits_example  # noqa: E402
from maxq_deploy.core.sparsity import check_pattern  # noqa: E402

RECIPE = ["--epochs", "1", "--lr", "1e-4", "--train-batches", "6", "--batch-size", "16", "--calib-batches", "4", "--workers", "0"]


@pytest.fixture(scope="module")
def digits_folded(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    example = prepare_digits_example((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "maxq_digits")
    folded = example.workdir / "digits_resnet18.folded.pth"
    with FileLock(str(folded) + ".lock"):
        if not folded.exists():
            fold_checkpoint(example.checkpoint, folded)
    return example, folded


def top1(path: Path, data: Path) -> float:
    from maxq_deploy.evaluate import evaluate

    return evaluate(path, data, batch_size=128, workers=0).top1


@pytest.mark.slow
def test_torchrun_two_ranks_on_cpu(digits_folded, tmp_path):
    example, folded = digits_folded
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "qat_ddp.pth"
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200", CUDA_VISIBLE_DEVICES="")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "maxq_deploy", "quantize", str(folded), "-o", str(out), "--qat",
        "--train-data", str(example.train_npz), "--val-data", str(example.test_npz), *RECIPE, "--json",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # one JSON document: only rank 0 prints
    assert summary["written"] and summary["mode"] == "qat" and summary["pattern_ok"]
    training = summary["training"]
    assert training["world_size"] == 2 and training["steps"] == 6 and training["zeros_reintroduced"] == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [out.name]  # written once, no temporary left

    q = load_quantized_checkpoint(out)
    source = torch.load(folded, weights_only=True)["state_dict"]
    for layer in (layer for layer in q.layers if layer.role == "sparse"):
        w8 = int8_weight(q.state_dict[f"{layer.name}.weight"], q.quantizers[f"{layer.name}._weight_quantizer"])
        assert check_pattern(w8, "2:4").holds and bool((w8[source[f"{layer.name}.weight"] == 0] == 0).all())

    single = tmp_path / "qat_single.pth"
    quantize_qat(folded, single, example.train_npz, example.test_npz, epochs=1, lr=1e-4, train_batches=6, batch_size=16,
                 calib_batches=4, workers=0)
    ddp_top1, single_top1 = top1(out, example.test_npz), top1(single, example.test_npz)
    fp32_top1 = top1(folded, example.test_npz)
    print(f"\nQAT fp32 {fp32_top1:.2f}  single process {single_top1:.2f}  torchrun x2 {ddp_top1:.2f}")
    assert abs(ddp_top1 - single_top1) <= 1.0 and ddp_top1 >= fp32_top1 - 1.0
    assert summary["training"]["history"][-1]["val_top1"] is not None
