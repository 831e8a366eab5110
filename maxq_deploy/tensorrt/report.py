"""Which layers of an engine run sparse, and why the others do not: the engine layer report.

Input: the engine inspector's JSON (``IEngineInspector.get_engine_information(
LayerInformationFormat.JSON)`` of an engine built with ``ProfilingVerbosity.DETAILED``), the
build log's two "(Sparsity)" lines, and the ONNX graph's Conv/Gemm facts. Output: one
:class:`EngineLayer` per conv/gemm layer with its checkpoint layer name(s), precision,
``HasSparseWeights`` (eligible), whether the picked tactic is a sparse kernel, and a likely
reason when an expected-sparse layer is not. Everything here is pure data: no TensorRT.

Both JSON shapes (10.x ``Bindings`` + ``Format/Datatype``; 11.x ``I/O Tensors`` + separate
``Format`` and ``DataType``) are read by :mod:`maxq_deploy.tensorrt.inspector_json`.

Per layer (detailed): ``Name``, ``LayerType``, ``ParameterType``, ``Inputs``/``Outputs`` (each
with ``Name``, ``Dimensions`` and the tensor type: 10.x writes one ``Format/Datatype`` string,
e.g. ``"Thirty-two wide channel vectorized row major Int8 format"``; 11.x splits it into
``Format`` and ``DataType`` (11.0 migration guide, "Migrating IEngineInspector Usage": its example
writes ``"DataType": "Float"`` and ``"Format": "Row major linear FP32 format (kLINEAR)"``);
:func:`tensor_dtype` reads either, and 11.x I/O tensors' ``ProfileInfo[].Format``), ``Kernel``, ``Groups``, ``OutMaps``,
``Weights`` (``Type``, ``Count``), ``HasSparseWeights`` (``ConvHasSparseWeights`` inside fused
``ConvActPool`` layers), ``TacticName``, ``TacticValue``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maxq_deploy.core.files import atomic_output, json_text, check_input_file
from maxq_deploy.core.errors import InputFileError
from maxq_deploy.onnx_graph.layers import OnnxLayer
from maxq_deploy.tensorrt.inspector_json import (  # noqa: F401 - re-exported: the report's public names
    DYNAMIC_FORMAT, ELIGIBLE_PREFIX, NOT_DETAILED_MESSAGE, PICKED_PREFIX, InspectorInfo, _formats_unknown, _layer_kind,
    _sparse_weights_flag, dtype_from_format, dynamic_formats_note, is_reformat_layer, layer_name_tokens,
    map_to_checkpoint_layers, parse_inspector_json, parse_sparsity_log, tensor_dtype, tensor_format,
)

REPORT_FORMAT = "maxq-deploy/engine-report"
REPORT_FORMAT_VERSION = 1
#: Channel counts below which sparse kernels rarely beat dense ones (TensorRT issue #3849).
SMALL_CHANNELS = 256


# ----------------------------------------------------------------------------- report


@dataclass
class EngineLayer:
    """One conv/gemm layer of the engine, told in the checkpoint's terms."""

    trt_name: str
    layer_type: str
    op: str  # "conv", "gemm", "matmul"
    checkpoint_layers: list[str]
    expected_sparse: bool  # maps to a sparse layer of the checkpoint
    precision: str  # of the weights/compute: "int8", "fp16", "fp32", ...
    input_dtype: str
    output_dtype: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: list[int]
    eligible: bool  # HasSparseWeights (or named in the "eligible for sparse math" log line)
    sparse_tactic: bool  # the picked tactic is a sparse kernel (or named in the "picked" log line)
    tactic: str
    reason: str = ""  # why an expected-sparse layer is not eligible / not running sparse

    @classmethod
    def from_dict(cls, data: dict) -> EngineLayer:
        """A layer record of a saved report, every field checked for its type (a damaged file is a ValueError)."""
        if not isinstance(data, dict):
            raise ValueError(f"a layer entry is a {type(data).__name__}, not a record")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("trt_name", "layer_type", "op", "precision", "input_dtype", "output_dtype", "tactic", "reason"):
            if name in known and not isinstance(known[name], str):
                raise ValueError(f"layer field {name!r} is {known[name]!r}, not text")
        for name in ("in_channels", "out_channels", "groups"):
            if name in known and (isinstance(known[name], bool) or not isinstance(known[name], int)):
                raise ValueError(f"layer field {name!r} is {known[name]!r}, not an integer")
        for name in ("expected_sparse", "eligible", "sparse_tactic"):
            if name in known and not isinstance(known[name], bool):
                raise ValueError(f"layer field {name!r} is {known[name]!r}, not true/false")
        for name, kind in (("checkpoint_layers", str), ("kernel", int)):
            if name in known and (not isinstance(known[name], list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in known[name])):
                raise ValueError(f"layer field {name!r} is {known[name]!r}, not a list of {kind.__name__}")
        return cls(**known)


@dataclass
class EngineReport:
    """Everything known about the sparsity of one engine; written beside it as ``MODEL.engine.json``."""

    engine: str
    onnx: str | None
    trt_version: str | None
    inspector_schema: str
    sparse_build: bool  # built with BuilderFlag.SPARSE_WEIGHTS
    graph_precision: str | None
    nm: str | None
    sparse_layers: list[str] | None  # checkpoint layers meant to be 2:4; None: unknown
    layers: list[EngineLayer]
    onnx_layers: list[OnnxLayer] = field(default_factory=list)
    eligible_log: list[str] = field(default_factory=list)  # names from "(Sparsity) Layers eligible ..."
    picked_log: list[str] = field(default_factory=list)  # names from "(Sparsity) ... picked sparse ..."
    sparsity_log_lines: list[str] = field(default_factory=list)
    io_tensors: list[dict] = field(default_factory=list)
    flag_plan: dict | None = None
    profile: dict | None = None
    engine_sha256: str | None = None
    provenance: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: What a rebuild must match: TensorRT version, GPU name + compute capability, builder and
    #: network flags, profile, workspace, ONNX sha256, timing cache (path, status, sha256 in/out).
    reproducibility: dict = field(default_factory=dict)

    @property
    def eligible(self) -> list[EngineLayer]:
        return [layer for layer in self.layers if layer.eligible]

    @property
    def sparse(self) -> list[EngineLayer]:
        return [layer for layer in self.layers if layer.sparse_tactic]

    @property
    def expected(self) -> list[EngineLayer]:
        return [layer for layer in self.layers if layer.expected_sparse]

    @property
    def missing_layers(self) -> list[str]:
        """Expected-sparse checkpoint layers that no conv/gemm layer of the engine maps back to."""
        if not self.sparse_layers:
            return []
        found = {name for layer in self.layers for name in [*layer.checkpoint_layers, layer.trt_name]}
        return [name for name in self.sparse_layers if name not in found]

    def totals(self) -> dict:
        expected = self.expected
        return {
            "conv_gemm_layers": len(self.layers),
            "eligible": len(self.eligible),
            "sparse": len(self.sparse),
            "expected_sparse": len(expected),
            "expected_eligible": sum(layer.eligible for layer in expected),
            "expected_sparse_tactic": sum(layer.sparse_tactic for layer in expected),
            "missing_layers": len(self.missing_layers),
        }

    def summary_line(self) -> str:
        t = self.totals()
        return f"eligible {t['eligible']}, sparse {t['sparse']}"

    def to_dict(self) -> dict:
        return {
            "format": REPORT_FORMAT,
            "format_version": REPORT_FORMAT_VERSION,
            "engine": self.engine,
            "onnx": self.onnx,
            "trt_version": self.trt_version,
            "inspector_schema": self.inspector_schema,
            "sparse_build": self.sparse_build,
            "graph_precision": self.graph_precision,
            "nm": self.nm,
            "summary": self.summary_line(),
            "totals": self.totals(),
            "sparse_layers": self.sparse_layers,
            "missing_layers": self.missing_layers,
            "layers": [asdict(layer) for layer in self.layers],
            "onnx_layers": [asdict(layer) for layer in self.onnx_layers],
            "eligible_log": self.eligible_log,
            "picked_log": self.picked_log,
            "sparsity_log_lines": self.sparsity_log_lines,
            "io_tensors": self.io_tensors,
            "flag_plan": self.flag_plan,
            "profile": self.profile,
            "engine_sha256": self.engine_sha256,
            "provenance": self.provenance,
            "reproducibility": self.reproducibility,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "engine report") -> EngineReport:
        if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise InputFileError(f"{source} is not a maxq-deploy engine report (format {found!r})")
        try:
            return cls(
                engine=str(data["engine"]), onnx=data.get("onnx"), trt_version=data.get("trt_version"),
                inspector_schema=str(data.get("inspector_schema", "unknown")), sparse_build=bool(data["sparse_build"]),
                graph_precision=data.get("graph_precision"), nm=data.get("nm"), sparse_layers=data.get("sparse_layers"),
                layers=[EngineLayer.from_dict(layer) for layer in data["layers"]],
                onnx_layers=[OnnxLayer.from_dict(layer) for layer in data.get("onnx_layers", [])],
                eligible_log=list(data.get("eligible_log", [])), picked_log=list(data.get("picked_log", [])),
                sparsity_log_lines=list(data.get("sparsity_log_lines", [])), io_tensors=list(data.get("io_tensors", [])),
                flag_plan=data.get("flag_plan"), profile=data.get("profile"), engine_sha256=data.get("engine_sha256"),
                provenance=dict(data.get("provenance") or {}), notes=list(data.get("notes", [])),
                reproducibility=dict(data.get("reproducibility") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InputFileError(f"{source} is damaged ({type(exc).__name__}: {exc})") from None


def report_path_for(engine_path: str | os.PathLike[str]) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def save_engine_report(report: EngineReport, path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    with atomic_output(out) as tmp:
        tmp.write_text(json_text(report.to_dict()) + "\n")
    return out


def load_engine_report(path: str | os.PathLike[str]) -> EngineReport:
    p = check_input_file(path, "engine report")
    try:
        data = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{p} is not a JSON engine report ({type(exc).__name__})") from None
    return EngineReport.from_dict(data, str(p))


# ----------------------------------------------------------------------------- reasons


def explain_sparsity(
    *, eligible: bool, sparse_tactic: bool, sparse_build: bool, in_channels: int, out_channels: int, groups: int,
    kernel: list[int], holds_2_4: bool | None, violating_groups: int, input_dtype: str, output_dtype: str,
    precision: str, graph_precision: str | None, layer_type: str = "",
    onnx_input_quantized: bool | None = None, onnx_output_quantized: bool | None = None,
) -> str:
    """The likely reason a layer meant to be 2:4 is not eligible, or eligible but runs dense."""
    if sparse_tactic:
        return ""
    if not sparse_build:
        return "engine built dense (--dense): BuilderFlag.SPARSE_WEIGHTS was not set"
    reasons: list[str] = []
    if not eligible:
        if groups > 1:
            per_group = in_channels // groups if groups else 0
            reasons.append(("depthwise" if per_group == 1 else f"grouped (groups={groups})") + " conv: never sparse")
        if in_channels and in_channels % 4:
            reasons.append(f"C={in_channels} is not a multiple of 4")
        if holds_2_4 is False:
            reasons.append(f"weights break 2:4 in {violating_groups} groups")
        if "myelin" in layer_type.lower() or "foreign" in layer_type.lower():
            reasons.append("compiled inside a Myelin region, not a conv/gemm kernel")
        if not reasons:
            reasons.append("TensorRT did not mark the weights sparse (check 2:4 along C: maxq-deploy verify MODEL.onnx)")
        return "not eligible: " + "; ".join(reasons)
    rs = 1
    for k in kernel or []:
        rs *= max(int(k), 1)
    if out_channels and (out_channels < SMALL_CHANNELS or in_channels * rs < SMALL_CHANNELS):
        reasons.append(
            f"small channels (C={in_channels}, K={out_channels}"
            + (f", {'x'.join(map(str, kernel))}" if kernel else "")
            + f"): sparse kernels usually win only from about {SMALL_CHANNELS} channels"
        )
    if kernel and list(kernel) not in ([1, 1], [3, 3]):
        reasons.append(f"kernel {'x'.join(map(str, kernel))}: sparse kernels mostly help 1x1 and 3x3")
    if graph_precision == "int8":
        not_int8 = [f"{side} is {dtype}" for side, dtype in (("input", input_dtype), ("output", output_dtype))
                    if dtype not in ("int8", "unknown")]
        # Formats unknown (engine inspected without shapes): the ONNX graph says what TensorRT can do.
        for side, dtype, quantized, op in (("input", input_dtype, onnx_input_quantized, "DequantizeLinear before"),
                                           ("output", output_dtype, onnx_output_quantized, "QuantizeLinear after")):
            if dtype == "unknown" and quantized is False:
                not_int8.append(f"{side} is float in the ONNX graph (no {op} it)")
        if not_int8:
            reasons.append(
                ", ".join(not_int8) + ", not INT8: sparse INT8 kernels want INT8 in and out "
                "(quantize the residual Add input and the next layer's input)"
            )
    if precision in ("fp32", "tf32"):
        reasons.append("FP32/TF32 layer: sparse tensor cores pay off in FP16/INT8")
    if not reasons:
        reasons.append("the dense tactic was faster at the profiled shapes")
    return "eligible, dense tactic: " + "; ".join(reasons)


# ----------------------------------------------------------------------------- assembling


def engine_layers_from_inspector(
    info: InspectorInfo, onnx_layers: dict[str, OnnxLayer], aliases: dict[str, str] | None,
    sparse_layers: list[str] | None, *, sparse_build: bool, graph_precision: str | None,
    eligible_log: list[str] = (), picked_log: list[str] = (),  # type: ignore[assignment]
) -> list[EngineLayer]:
    """One :class:`EngineLayer` per conv/gemm layer of the inspector output."""
    aliases = dict(aliases or {})
    for name in onnx_layers:
        aliases.setdefault(name, name)
        aliases.setdefault(f"{name}.weight", name)
    sparse_set = set(sparse_layers or [])
    eligible_names, picked_names = set(eligible_log), set(picked_log)
    result: list[EngineLayer] = []
    for layer in info.layers:
        if is_reformat_layer(layer):  # "Reformatting CopyNode for Input Tensor 1 to <conv> + ..." is not the conv
            continue
        name = str(layer.get("Name", ""))
        mapped = map_to_checkpoint_layers(name, aliases)
        onnx_mapped = [onnx_layers[m] for m in mapped if m in onnx_layers]
        kind = _layer_kind(layer)
        if kind is None and not onnx_mapped:
            continue
        first = onnx_mapped[0] if onnx_mapped else None
        op = first.op if first else (kind or "conv")
        inputs = layer.get("Inputs") or []
        outputs = layer.get("Outputs") or []
        in_dtype = tensor_dtype(inputs[0]) if inputs else "unknown"
        out_dtype = tensor_dtype(outputs[0]) if outputs else "unknown"
        weights = layer.get("Weights") or layer.get("ConvWeights") or {}
        precision = dtype_from_format(weights.get("Type")) if isinstance(weights, dict) and weights.get("Type") else "unknown"
        if precision == "unknown":
            precision = in_dtype
        dims = inputs[0].get("Dimensions") if inputs and isinstance(inputs[0], dict) else None
        in_ch = first.in_channels if first else (int(dims[1]) if isinstance(dims, list) and len(dims) > 1 else 0)
        out_ch = first.out_channels if first else int(layer.get("OutMaps", layer.get("ConvOutMaps", 0)) or 0)
        groups = first.groups if first else int(layer.get("Groups", layer.get("ConvGroups", 1)) or 1)
        kernel = list(first.kernel) if first and first.kernel else [int(k) for k in layer.get("Kernel", layer.get("ConvKernel", [])) or []]
        has_sparse = _sparse_weights_flag(layer)
        eligible = bool(has_sparse) or name in eligible_names
        tactic = str(layer.get("TacticName", "") or "")
        sparse_tactic = "sparse" in tactic.lower() or name in picked_names
        expected = any(m in sparse_set for m in mapped) or name in sparse_set
        engine_layer = EngineLayer(
            trt_name=name, layer_type=str(layer.get("LayerType", "")), op=op, checkpoint_layers=mapped,
            expected_sparse=expected, precision=precision, input_dtype=in_dtype,
            output_dtype=out_dtype, in_channels=in_ch, out_channels=out_ch, groups=groups,
            kernel=kernel, eligible=eligible, sparse_tactic=sparse_tactic, tactic=tactic or str(layer.get("TacticValue", "")),
        )
        if expected or eligible:
            engine_layer.reason = explain_sparsity(
                eligible=eligible, sparse_tactic=sparse_tactic, sparse_build=sparse_build, in_channels=in_ch,
                out_channels=out_ch, groups=groups, kernel=kernel,
                holds_2_4=first.holds_2_4 if first else None, violating_groups=first.violating_groups if first else 0,
                input_dtype=engine_layer.input_dtype, output_dtype=engine_layer.output_dtype, precision=precision,
                graph_precision=graph_precision, layer_type=engine_layer.layer_type,
                onnx_input_quantized=first.input_quantized if first else None,
                onnx_output_quantized=first.output_quantized if first else None,
            )
        if len(mapped) > 1:
            engine_layer.reason = (engine_layer.reason + "; " if engine_layer.reason else "") + \
                f"one TensorRT layer holds {len(mapped)} checkpoint layers"
        result.append(engine_layer)
    return result


def build_engine_report(
    inspector_json: str | bytes | dict, *, engine: str, onnx_info: Any | None = None,
    onnx_layers: list[OnnxLayer] | None = None, sparse_layers: list[str] | None = None,
    sparsity_log_lines: list[str] | None = None, sparse_build: bool = True, trt_version: str | None = None,
    graph_precision: str | None = None, nm: str | None = None, flag_plan: dict | None = None,
    profile: dict | None = None, engine_sha256: str | None = None, provenance: dict | None = None,
) -> EngineReport:
    """Assemble the report from the inspector JSON plus either an ``OnnxGraphInfo`` or stored ONNX facts."""
    info = parse_inspector_json(inspector_json)
    aliases: dict[str, str] = {}
    if onnx_info is not None:
        layers_by_name = dict(onnx_info.layers)
        aliases = dict(onnx_info.aliases)
        sparse_layers = onnx_info.expected_sparse if sparse_layers is None else sparse_layers
        graph_precision = graph_precision or onnx_info.precision
        nm = nm or onnx_info.nm
        onnx_path = onnx_info.path
    else:
        layers_by_name = {layer.name: layer for layer in onnx_layers or []}
        onnx_path = None
        for layer in layers_by_name.values():
            if layer.weight:
                aliases.setdefault(layer.weight, layer.name)
    lines = list(sparsity_log_lines or [])
    eligible_log, picked_log = parse_sparsity_log(lines)
    notes: list[str] = []
    if sparse_layers is None:
        sparse_layers = _fallback_expected(info, layers_by_name, aliases)
        notes.append(
            "no checkpoint sparse-layer list (ONNX metadata maxq_deploy.sparse_layers): every ungrouped conv "
            "with C % 4 == 0 is expected to be sparse"
        )
    layers = engine_layers_from_inspector(
        info, layers_by_name, aliases, sparse_layers, sparse_build=sparse_build, graph_precision=graph_precision,
        eligible_log=eligible_log, picked_log=picked_log,
    )
    report = EngineReport(
        engine=str(engine), onnx=onnx_path if onnx_info is not None else None, trt_version=trt_version,
        inspector_schema=info.schema, sparse_build=sparse_build, graph_precision=graph_precision, nm=nm,
        sparse_layers=list(sparse_layers), layers=layers, onnx_layers=list(layers_by_name.values()),
        eligible_log=eligible_log, picked_log=picked_log, sparsity_log_lines=lines, io_tensors=info.io_tensors,
        flag_plan=flag_plan, profile=profile, engine_sha256=engine_sha256, provenance=dict(provenance or {}),
        notes=notes,
    )
    if not lines and sparse_build:
        report.notes.append("no '(Sparsity)' build log lines captured (report made from the engine alone)")
    if _formats_unknown(info):
        report.notes.append(dynamic_formats_note(info, bool(layers_by_name)))
    if report.missing_layers:
        report.notes.append(
            f"{len(report.missing_layers)} sparse checkpoint layers map to no conv/gemm layer of the engine: "
            + ", ".join(report.missing_layers[:8]) + ("..." if len(report.missing_layers) > 8 else "")
        )
    return report


def _fallback_expected(info: InspectorInfo, onnx_layers: dict[str, OnnxLayer], aliases: dict[str, str]) -> list[str]:
    """Without a checkpoint list: the conv layers that could be 2:4 (ungrouped, C % 4 == 0)."""
    if onnx_layers:
        return [n for n, layer in onnx_layers.items()
                if layer.op == "conv" and layer.groups == 1 and layer.in_channels and layer.in_channels % 4 == 0]
    names: list[str] = []
    for layer in info.layers:
        if _layer_kind(layer) != "conv":
            continue
        inputs = layer.get("Inputs") or []
        dims = inputs[0].get("Dimensions") if inputs and isinstance(inputs[0], dict) else None
        c = int(dims[1]) if isinstance(dims, list) and len(dims) > 1 and int(dims[1]) > 0 else 0
        groups = int(layer.get("Groups", layer.get("ConvGroups", 1)) or 1)
        if groups == 1 and c and c % 4 == 0:
            names.append(str(layer.get("Name", "")))
    return names


def refresh_report(report: EngineReport, inspector_json: str | bytes | dict, engine_sha256: str | None = None) -> EngineReport:
    """The same report with eligibility and tactics re-read from a fresh inspection of the engine."""
    fresh = build_engine_report(
        inspector_json, engine=report.engine, onnx_layers=report.onnx_layers, sparse_layers=report.sparse_layers,
        sparsity_log_lines=report.sparsity_log_lines, sparse_build=report.sparse_build, trt_version=report.trt_version,
        graph_precision=report.graph_precision, nm=report.nm, flag_plan=report.flag_plan, profile=report.profile,
        engine_sha256=engine_sha256 or report.engine_sha256, provenance=report.provenance,
    )
    fresh.onnx = report.onnx
    fresh.reproducibility = dict(report.reproducibility)
    return fresh
