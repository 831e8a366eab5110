"""ONNX graphs of reference MaxQ networks, for the TensorRT GPU tests and the sparse benchmark.

A reference 2:4 checkpoint (:func:`maxq_deploy.reference.make_checkpoint`) is folded and
exported by the project's exporter (:func:`maxq_deploy.export_onnx.export_onnx`); where that
stage is absent, a minimal ``torch.onnx.export`` keeps its naming contract (Conv/Gemm nodes
named after the checkpoint layer, ``maxq_deploy.*`` metadata).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def reference_onnx(
    workdir: str | os.PathLike[str], arch: str = "resnet18", precision: str = "fp32", input_size: int = 64,
    num_classes: int = 10, seed: int = 0,
) -> tuple[Path, Path]:
    """(ONNX path, folded checkpoint path) of a reference ``arch`` 2:4 network with a dynamic batch."""
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    ckpt, folded = work / f"{arch}_2of4.pth.tar", work / f"{arch}_2of4.folded.pt"
    if not folded.exists():
        save_checkpoint(make_checkpoint(arch, "2:4", num_classes=num_classes, seed=seed), ckpt)
        fold_checkpoint(ckpt, folded)
    onnx_path = work / f"{arch}_2of4_{precision}_{input_size}.onnx"
    if onnx_path.exists():
        return onnx_path, folded
    try:
        from maxq_deploy.export_onnx import export_onnx
    except ModuleNotFoundError as exc:
        if exc.name != "maxq_deploy.export_onnx":
            raise
        _export_minimal(folded, onnx_path, input_size)
    else:
        export_onnx(folded, onnx_path, precision=precision, input_size=input_size)
    return onnx_path, folded


def _export_minimal(folded: Path, onnx_path: Path, input_size: int) -> None:
    """fp32 export with the naming contract, for when the export stage is not installed."""
    import onnx
    import torch

    from maxq_deploy.fold import load_folded

    loaded = load_folded(folded)
    model = loaded.build_model()
    x = torch.randn(1, 3, input_size, input_size)
    torch.onnx.export(model, x, str(onnx_path), input_names=["input"], output_names=["output"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, dynamo=False)
    graph = onnx.load(str(onnx_path))
    for node in graph.graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 1 and node.input[1].endswith(".weight"):
            node.name = node.input[1][: -len(".weight")]
    meta = {"arch": loaded.arch, "nm": loaded.nm or "unknown", "precision": "fp32", "input_size": str(input_size),
            "sparse_layers": json.dumps([layer.name for layer in loaded.layers if layer.role == "sparse"])}
    for key, value in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = f"maxq_deploy.{key}", value
    onnx.save(graph, str(onnx_path))
