"""Shared quantize test helpers: a quantized checkpoint made without any quantization backend; a two-conv TensorRT-form Q/DQ graph;
a reference ResNet-18 2:4 PTQ-quantized on digits (needs pytorch-quantization and scikit-learn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from maxq_deploy.core.sparsity import project_to_pattern

SIZE = 32


def _quantized_dict(folded_path: Path) -> dict:
    """A quantized checkpoint with max ranges from a few random batches (backend-free, deterministic)."""
    from maxq_deploy.core.files import provenance
    from maxq_deploy.quantize.artifact import check_int8_layers, read_folded_input
    from maxq_deploy.quantize.calibrate import CalibrationStats
    from maxq_deploy.quantize.frozen import frozen_skeleton, quantizer_names
    from maxq_deploy.quantize.result import checkpoint_dict

    folded, _ = read_folded_input(folded_path)
    probe = frozen_skeleton(folded.arch, folded.num_classes, folded.state_dict)
    names = quantizer_names(probe)
    seen: dict[str, float] = {}
    hooks = [probe.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: seen.__setitem__(n, max(seen.get(n, 0.0), float(a[0].abs().max())))) for n in names]
    with torch.no_grad():
        probe(torch.randn(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)))
    for h in hooks:
        h.remove()
    ranges = {}
    for n in names:
        if n.endswith("._weight_quantizer"):
            w = folded.state_dict[n.rpartition(".")[0] + ".weight"]
            ranges[n] = w.abs().flatten(1).amax(1).reshape(-1, *([1] * (w.dim() - 1))).float()
        else:
            ranges[n] = torch.tensor(seen[n])
    stats = CalibrationStats("max", None, 1, 8, None, 0, 0.0, 0.0, [], SIZE)
    checks = check_int8_layers(folded.layers, folded.state_dict, ranges)
    return checkpoint_dict(folded, folded.state_dict, ranges, stats, checks, provenance(folded.path), "test (random max ranges)")


def skip_without_ptq_on_digits() -> None:
    """Skip the calling test module (or fixture) where PTQ on the digits images cannot run, naming what to install."""
    pytest.importorskip("pytorch_quantization", reason="INT8 needs pytorch-quantization (pip install pytorch-quantization==2.1.3)")
    pytest.importorskip("sklearn", reason="the digits calibration set needs scikit-learn")


def ptq_reference_resnet18(work: Path, size: int) -> tuple[Path, Path]:
    """A reference ResNet-18 2:4 (10 classes, seed 0) folded and PTQ-quantized (max ranges) on digits at ``size``.

    Writes ``r18.pth.tar``, ``r18.folded.pt`` and ``r18.q.pt`` in ``work``; returns the digits (train, test) npz paths.
    """
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.quantize import quantize_ptq
    from maxq_deploy.reference import make_checkpoint, save_checkpoint
    from maxq_deploy.reference.train import save_digits_npz

    train, test = save_digits_npz(work, size)
    save_checkpoint(make_checkpoint("resnet18", "2:4", num_classes=10, seed=0), work / "r18.pth.tar")
    fold_checkpoint(work / "r18.pth.tar", work / "r18.folded.pt")
    quantize_ptq(work / "r18.folded.pt", work / "r18.q.pt", train, calibrator="max", calib_batches=2, batch_size=16, workers=0)
    return train, test


def _qdq_graph() -> onnx.ModelProto:
    import torch

    rng = np.random.default_rng(0)
    w1 = project_to_pattern(torch.from_numpy(rng.standard_normal((8, 4, 3, 3)).astype(np.float32)), "2:4", axis=1).numpy()
    w2 = project_to_pattern(torch.from_numpy(rng.standard_normal((4, 8, 1, 1)).astype(np.float32)), "2:4", axis=1).numpy()
    inits = [
        numpy_helper.from_array(w1, "conv1.weight"), numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "conv1.bias"),
        numpy_helper.from_array(w2, "conv2.weight"), numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv2.bias"),
        numpy_helper.from_array(np.float32(3.0 / 127), "sx"), numpy_helper.from_array(np.float32(4.0 / 127), "sy"),
        numpy_helper.from_array(np.int8(0), "z"),
        numpy_helper.from_array((np.abs(w1).reshape(8, -1).max(1) / 127).astype(np.float32), "sw1"),
        numpy_helper.from_array(np.zeros(8, np.int8), "zw1"),
        numpy_helper.from_array((np.abs(w2).reshape(4, -1).max(1) / 127).astype(np.float32), "sw2"),
        numpy_helper.from_array(np.zeros(4, np.int8), "zw2"),
    ]
    n = helper.make_node
    nodes = [
        n("QuantizeLinear", ["x", "sx", "z"], ["xq"], name="x_q"), n("DequantizeLinear", ["xq", "sx", "z"], ["xd"], name="x_dq"),
        n("QuantizeLinear", ["conv1.weight", "sw1", "zw1"], ["w1q"], name="w1_q", axis=0),
        n("DequantizeLinear", ["w1q", "sw1", "zw1"], ["w1d"], name="w1_dq", axis=0),
        n("Conv", ["xd", "w1d", "conv1.bias"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"], name="relu1"),
        n("QuantizeLinear", ["r1", "sy", "z"], ["rq"], name="r_q"), n("DequantizeLinear", ["rq", "sy", "z"], ["rd"], name="r_dq"),
        n("QuantizeLinear", ["conv2.weight", "sw2", "zw2"], ["w2q"], name="w2_q", axis=0),
        n("DequantizeLinear", ["w2q", "sw2", "zw2"], ["w2d"], name="w2_dq", axis=0),
        n("Conv", ["rd", "w2d", "conv2.bias"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def folded_digits(tmp_path_factory, name: str):
    """(the digits example, its checkpoint folded to ``name`` in the example's folder); shared by xdist workers."""
    import os

    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.reference.train import prepare_digits_example

    base = tmp_path_factory.getbasetemp()
    example = prepare_digits_example((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "maxq_digits")
    folded = example.workdir / name
    if not folded.exists():
        fold_checkpoint(example.checkpoint, folded)
    return example, folded
