"""N:M verification inside ONNX graphs: the weights as TensorRT will see them.

For every Conv, Gemm and MatMul (and the ONNX Runtime integer forms ConvInteger, QLinearConv,
MatMulInteger, QLinearMatMul) the weight is followed back through DequantizeLinear,
QuantizeLinear, Cast, Transpose, Reshape and Identity to its initializer or Constant node, and
the chain is then replayed forward in numpy. The pattern is checked on the result, on the
reduction axis TensorRT uses for that consumer: Conv W axis 1; Gemm B axis 1 when transB=1,
else axis 0; MatMul B axis -2. Replaying the chain, instead of mapping the axis back through
it, handles every Transpose perm and Reshape for free.

Q/DQ weights are checked on their INT8 values: a DequantizeLinear yields ``q - zero_point``
(integers), and a float initializer quantized in the graph (initializer -> QuantizeLinear ->
DequantizeLinear) is first quantized with its scale exactly as TensorRT folds it
(round half to even, saturate). Polygraphy's ``inspect sparsity`` skips INT8 initializers;
this does not.

Which layers are meant to be sparse: the ``maxq_deploy.sparse_layers`` metadata that
``export onnx`` writes (node names there are checkpoint layer names). A foreign graph without
it: a non-grouped layer whose reduction axis is a multiple of M and whose weight is at least
:data:`FOREIGN_ZERO_SHARE` x (M-N)/M exactly zero (40 % for 2:4). A dense layer has almost no
exact zeros and a 2:4 layer has at least half, so this also catches a 2:4 layer with a few
broken groups (it then fails instead of passing as "dense").
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from maxq_deploy.onnx_graph import meta as onnx_meta
from maxq_deploy import verify
from maxq_deploy.core.files import check_input_file
from maxq_deploy.core.errors import InputFileError, first_line
from maxq_deploy.core.sparsity import NMPattern
from maxq_deploy.onnx_graph.index import ConstantWeight, GraphIndex, attributes, check_onnx_numbers, load_onnx  # noqa: F401  (GraphIndex: part of this module's API)

#: metadata_props keys written by ``export onnx`` (see DEVELOPING.md).
META_SPARSE_LAYERS = onnx_meta.SPARSE_LAYERS
META_NM = onnx_meta.NM
#: Foreign graphs: a layer is taken as meant-to-be-sparse when at least this share of the
#: pattern's zero fraction ((M-N)/M) of its weight is exactly zero.
FOREIGN_ZERO_SHARE = 0.8


@dataclass(frozen=True)
class WeightInput:
    """Where a consumer op reads a weight and which axis of it is the reduction axis."""

    index: int
    role: str  # "W", "A" or "B"


# op type -> weight inputs to try in order (the usual one first).
_WEIGHT_INPUTS: dict[str, tuple[WeightInput, ...]] = {
    "Conv": (WeightInput(1, "W"),),
    "ConvInteger": (WeightInput(1, "W"),),
    "QLinearConv": (WeightInput(3, "W"),),
    "Gemm": (WeightInput(1, "B"), WeightInput(0, "A")),
    "MatMul": (WeightInput(1, "B"), WeightInput(0, "A")),
    "MatMulInteger": (WeightInput(1, "B"), WeightInput(0, "A")),
    "QLinearMatMul": (WeightInput(3, "B"), WeightInput(0, "A")),
}
WEIGHT_OPS = frozenset(_WEIGHT_INPUTS)
_SHORT_OP = {"DequantizeLinear": "DQ", "QuantizeLinear": "Q"}
_OP_LABEL = {"Conv": "conv", "ConvInteger": "conv", "QLinearConv": "conv", "Gemm": "gemm"}


@dataclass
class WeightLayer:
    """One consumer op with a constant weight, and how to read it."""

    name: str
    node_name: str
    op_type: str
    weight: ConstantWeight
    axis: int  # reduction axis of ``weight.value``
    conv_groups: int
    weight_input: int


def find_weight_layers(graph) -> list[WeightLayer]:
    """Every Conv/Gemm/MatMul of ``graph`` whose weight traces back to a constant."""
    index = GraphIndex(graph)
    layers: list[WeightLayer] = []
    seen: set[str] = set()
    for position, node in enumerate(graph.node):
        if node.op_type not in _WEIGHT_INPUTS:
            continue
        attrs = attributes(node)
        for spec in _WEIGHT_INPUTS[node.op_type]:
            if len(node.input) <= spec.index or not node.input[spec.index]:
                continue
            weight = index.trace_weight(node.input[spec.index])
            if weight is None or weight.value.ndim == 0:
                continue
            axis = _reduction_axis(node.op_type, spec.role, weight.value.ndim, attrs)
            name = node.name or _name_from_source(weight.source) or f"{node.op_type}_{position}"
            if name in seen:
                name = f"{name}#{position}"
            seen.add(name)
            groups = int(attrs.get("group", 1)) if spec.role == "W" else 1
            layers.append(WeightLayer(name, node.name, node.op_type, weight, axis, groups, spec.index))
            break
    return layers


def _reduction_axis(op_type: str, role: str, ndim: int, attrs: dict) -> int:
    """The axis TensorRT reduces over (and groups for sparse math) for this weight."""
    if role == "W":
        return 1
    if op_type == "Gemm":
        if role == "B":
            return 1 if attrs.get("transB", 0) else 0
        return 0 if attrs.get("transA", 0) else 1
    # MatMul family: B is [..., K, N], A is [..., M, K].
    if role == "B":
        return max(ndim - 2, 0)
    return ndim - 1


def _name_from_source(source: str) -> str:
    return source[: -len(".weight")] if source.endswith(".weight") else ""


def metadata(model) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def _listed_sparse_layers(meta: dict[str, str]) -> tuple[set[str] | None, str | None]:
    """(layer names, problem) from ``maxq_deploy.sparse_layers``; (None, None) when absent."""
    raw = meta.get(META_SPARSE_LAYERS)
    if raw is None:
        return None, None
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        return None, f"metadata {META_SPARSE_LAYERS} is not JSON; expected-sparse layers inferred from zeros"
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None, f"metadata {META_SPARSE_LAYERS} is not a list of names; expected-sparse layers inferred from zeros"
    return set(names), None


def verify_onnx(path: str | os.PathLike[str], pattern: NMPattern | str = "2:4") -> verify.VerifyReport:
    """Check ``pattern`` on every Conv/Gemm/MatMul weight of an ONNX graph (same report as checkpoints)."""
    pattern = NMPattern.parse(pattern)
    p = Path(path)
    model = load_onnx(p)
    check_onnx_numbers(model, p)  # NaN weights, a zero or NaN Q/DQ scale: damaged, whatever the pattern says
    layers = find_weight_layers(model.graph)
    if not layers:
        raise InputFileError(
            f"{p}: the ONNX graph has no Conv, Gemm or MatMul with a constant weight; nothing to verify"
        )
    meta = metadata(model)
    listed, problem = _listed_sparse_layers(meta)
    trained_nm = meta.get(META_NM) or None
    if trained_nm == "unknown":
        trained_nm = None
    report = verify.VerifyReport(str(p), "onnx", str(pattern), trained_nm)
    if problem:
        report.notes.append(problem)
    kept_dense, kept_float = _listed_names(meta, onnx_meta.KEPT_DENSE), _listed_names(meta, onnx_meta.KEPT_FLOAT)
    if listed is None:
        report.notes.append(
            f"no {META_SPARSE_LAYERS} metadata (not written by maxq-deploy export): layers with at least "
            f"{FOREIGN_ZERO_SHARE * (pattern.m - pattern.n) / pattern.m:.0%} exact zeros are taken as meant to be sparse"
        )
    for layer in layers:
        w = layer.weight
        integer = w.quantized or np.issubdtype(w.value.dtype, np.integer)
        tensor = torch.from_numpy(np.ascontiguousarray(w.value.astype(np.int32 if integer else np.float32)))
        if listed is not None:
            expected = layer.name in listed
        else:
            expected = _looks_sparse(tensor, layer, pattern)
        note_parts = []
        if layer.name in kept_dense:
            note_parts.append("kept dense on purpose (fold --keep-dense): runs dense")
        if layer.name in kept_float:
            note_parts.append("kept float on purpose (quantize --keep-float)")
        if w.quantized:
            note_parts.append("INT8 values")
        if w.chain:
            note_parts.append("via " + "<-".join(_SHORT_OP.get(op, op) for op in w.chain))
        report.layers.append(
            verify.weight_verdict(
                layer.name, tensor, pattern, op=_OP_LABEL.get(layer.op_type, "matmul"), axis=layer.axis,
                expected_sparse=expected, trained_nm=trained_nm if expected else None,
                conv_groups=layer.conv_groups, dtype=w.dtype, note=" ".join(note_parts),
            )
        )
    _add_qdq_report(report, p, model, set(kept_float))
    if kept_dense:
        report.notes.append(f"{len(kept_dense)} sparse layer(s) kept dense on purpose (fold --keep-dense), not checked for "
                            f"{pattern}: {', '.join(kept_dense)}")
    if kept_float:
        report.notes.append(f"{len(kept_float)} layer(s) kept float on purpose (quantize --keep-float), no Q/DQ: {', '.join(kept_float)}")
    skipped = sum(node.op_type in WEIGHT_OPS for node in model.graph.node) - len(layers)
    if skipped:
        report.notes.append(f"{skipped} Conv/Gemm/MatMul node(s) without a constant weight were skipped")
    if listed is not None:
        missing = sorted(listed - {layer.name for layer in layers})
        if missing:
            report.notes.append(
                f"{len(missing)} layer(s) listed in {META_SPARSE_LAYERS} are not node names of the graph "
                f"(renamed by an optimizer?), e.g. {missing[0]}"
            )
    return report


def _listed_names(meta: dict[str, str], key: str) -> list[str]:
    """A JSON list of layer names from the metadata ([] when absent or not a list of names)."""
    try:
        names = json.loads(meta.get(key, "[]"))
    except json.JSONDecodeError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _add_qdq_report(report: verify.VerifyReport, path: Path, model, kept_float: set[str] = frozenset()) -> None:
    """Q/DQ graphs: per conv whether it reads and writes INT8 (sparse INT8 kernels want both)."""
    from maxq_deploy.onnx_graph.qdq_check import qdq_conv_checks, summary_line

    checks = qdq_conv_checks(path, model=model)
    if checks is None:
        return
    by_name = {c.name: c for c in checks}
    for verdict in report.layers:
        check = by_name.get(verdict.name)
        if check is not None:
            verdict.note = "; ".join(p for p in (verdict.note, check.describe()) if p)
    report.notes.append(summary_line(checks, on_purpose=kept_float))


def _looks_sparse(tensor: torch.Tensor, layer: WeightLayer, pattern: NMPattern) -> bool:
    if layer.conv_groups > 1 or tensor.shape[layer.axis] % pattern.m:
        return False
    zeros = float((tensor == 0).float().mean())
    return zeros >= FOREIGN_ZERO_SHARE * (pattern.m - pattern.n) / pattern.m


verify.FILE_VERIFIERS[".onnx"] = verify_onnx
