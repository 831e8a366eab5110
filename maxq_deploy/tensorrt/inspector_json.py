"""The engine inspector's JSON and the build log's "(Sparsity)" lines, read as plain data (no TensorRT).

Inspector JSON shapes handled (TensorRT 10.x and 11.x):

* ``{"Layers": [{...}, ...], "Bindings": ["input", "logits"]}`` (10.x),
* ``{"Layers": [{...}, ...], "I/O Tensors": [{"Name": ..., "IOMode": ..., ...}]}`` (11.x),
* ``{"Layers": ["name", ...], ...}``: built without detailed profiling -> a clear error.

Layer tensors (``Inputs``/``Outputs``): 10.x writes one ``Format/Datatype`` string (e.g.
``"Thirty-two wide channel vectorized row major Int8 format"``); 11.x splits it into ``Format``
and ``DataType`` (TensorRT 11.0 migration guide, "Migrating IEngineInspector Usage from TensorRT
10.x to 11.x": "the split of the Format/DataType field"; its example writes ``"DataType": "Float"``
and ``"Format": "Row major linear FP32 format (kLINEAR)"``, 11.3 and 11.4 the same).
:func:`tensor_dtype` reads either shape.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from maxq_deploy.core.errors import InputFileError

ELIGIBLE_PREFIX = "(Sparsity) Layers eligible for sparse math:"
PICKED_PREFIX = "(Sparsity) TRT inference plan picked sparse implementation for layers:"
NOT_DETAILED_MESSAGE = (
    "the engine was built without detailed profiling (ProfilingVerbosity.DETAILED / "
    "trtexec --profilingVerbosity=detailed), so its inspector lists layer names only: rebuild it "
    "with maxq-deploy export trt to see which layers run sparse"
)

_CONV_PARAMETER_TYPES = {"Convolution", "ConvActPool", "Deconvolution"}
_GEMM_PARAMETER_TYPES = {"MatrixMultiply", "FullyConnected", "Gemm"}
_SEPARATORS = re.compile(r"\s*\+\s*|\s*,\s*|\s*\|\|\s*|\.\.\.|[\[\]{}()]")


# ----------------------------------------------------------------------------- inspector JSON


@dataclass
class InspectorInfo:
    """The engine inspector's JSON, normalized over TensorRT 10.x and 11.x."""

    schema: str  # "10.x (Bindings)", "11.x (I/O Tensors)" or "unknown"
    layers: list[dict]
    io_tensors: list[dict]  # {"Name", "IOMode"?, "DataType"?, "Dimensions"?}


def parse_inspector_json(data: str | bytes | dict | list) -> InspectorInfo:
    """Parse ``get_engine_information(LayerInformationFormat.JSON)`` of either major version."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise InputFileError(f"engine layer information is not JSON ({exc})") from None
    if isinstance(data, list):  # a bare layer list
        data = {"Layers": data}
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        raise InputFileError("engine layer information has no 'Layers' list: not TensorRT inspector JSON")
    raw_layers = data["Layers"]
    layers = [layer for layer in raw_layers if isinstance(layer, dict)]
    if raw_layers and not layers:
        raise InputFileError(NOT_DETAILED_MESSAGE)
    if "I/O Tensors" in data:
        schema = "11.x (I/O Tensors)"
        io = [t if isinstance(t, dict) else {"Name": str(t)} for t in data.get("I/O Tensors") or []]
    elif "Bindings" in data:
        schema = "10.x (Bindings)"
        io = [{"Name": str(t)} if not isinstance(t, dict) else t for t in data.get("Bindings") or []]
    else:
        schema, io = "unknown", []
    if layers and not any(_is_detailed(layer) for layer in layers):
        raise InputFileError(NOT_DETAILED_MESSAGE)
    return InspectorInfo(schema, layers, io)


def _is_detailed(layer: dict) -> bool:
    return any(key in layer for key in ("LayerType", "TacticName", "TacticValue", "Inputs", "ParameterType"))


def parse_sparsity_log(lines: list[str]) -> tuple[list[str], list[str]]:
    """(eligible, picked) layer names from the builder's two "(Sparsity)" INFO lines."""
    eligible: list[str] = []
    picked: list[str] = []
    for line in lines:
        for prefix, target in ((ELIGIBLE_PREFIX, eligible), (PICKED_PREFIX, picked)):
            pos = line.find(prefix)
            if pos >= 0:
                rest = line[pos + len(prefix):].strip()
                target.extend(name.strip() for name in rest.split(", ") if name.strip())
    return list(dict.fromkeys(eligible)), list(dict.fromkeys(picked))


def layer_name_tokens(trt_name: str) -> list[str]:
    """Pieces of a TensorRT layer name: fused ONNX node names ("a + b"), Myelin regions ("{ForeignNode[a...b]}")."""
    return [tok.strip() for tok in _SEPARATORS.split(trt_name) if tok and tok.strip()]


def map_to_checkpoint_layers(trt_name: str, known: dict[str, str] | set[str] | list[str]) -> list[str]:
    """Checkpoint layers that a TensorRT layer name contains, matched as whole tokens.

    ``known`` maps name tokens to layers (node names, their weight initializers ``<layer>.weight``)
    or is a plain collection of layer names. Substrings never match, so ``layer1.0.convbn1``
    does not claim ``layer1.0.convbn10`` nor a Q node called ``/layer1.0/convbn1/input_quantizer``.
    """
    aliases = known if isinstance(known, dict) else {name: name for name in known}
    found: list[str] = []
    for token in layer_name_tokens(trt_name):
        candidates = [token]
        for suffix in (".weight", ".bias"):
            if token.endswith(suffix):
                candidates.append(token[: -len(suffix)])
        for cand in candidates:
            if cand in aliases:
                found.append(aliases[cand])
                break
    return list(dict.fromkeys(found))


#: Words of TensorRT's format descriptions and DataType names -> dtype, checked in this order as
#: whole words (``UInt8`` is not ``Int8``, ``BFloat16`` is not ``Float``).
_DTYPE_WORDS: tuple[tuple[str, str], ...] = (
    ("UINT8", "uint8"), ("INT8", "int8"), ("UINT4", "uint4"), ("INT4", "int4"), ("FP8", "fp8"), ("E4M3", "fp8"),
    ("FP4", "fp4"), ("E2M1", "fp4"), ("BF16", "bf16"), ("BFLOAT16", "bf16"), ("FP16", "fp16"), ("HALF", "fp16"),
    ("FP32", "fp32"), ("FLOAT", "fp32"), ("TF32", "fp32"), ("INT32", "int32"), ("INT64", "int64"), ("BOOL", "bool"),
)
_WORD = re.compile(r"[A-Z0-9]+")


def dtype_from_format(text: str | None) -> str:
    """``"Thirty-two wide channel vectorized row major Int8 format"`` -> ``"int8"``; ``"UInt8"`` -> ``"uint8"``."""
    words = set(_WORD.findall(str(text or "").upper()))
    for key, dtype in _DTYPE_WORDS:
        if key in words:
            return dtype
    return "unknown"


def _key(tensor: dict, *names: str) -> Any:
    """The value of the first of ``names`` present in ``tensor``, any capitalisation ("DataType"/"Datatype")."""
    lower = {str(k).lower(): v for k, v in tensor.items()}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    return None


def _known(value: Any) -> bool:
    return value is not None and not str(value).strip().upper().startswith("N/A")


def tensor_format(tensor: Any) -> str | None:
    """The format text of an inspector tensor entry: 10.x ``Format/Datatype`` or 11.x ``Format``."""
    if not isinstance(tensor, dict):
        return None
    value = _key(tensor, "Format/Datatype", "Format")
    if value is None and isinstance(tensor.get("ProfileInfo"), list):  # 11.x I/O tensors
        formats = [p.get("Format") for p in tensor["ProfileInfo"] if isinstance(p, dict) and p.get("Format")]
        value = formats[0] if formats else None
    return None if value is None else str(value)


def tensor_dtype(tensor: Any) -> str:
    """The element type of an inspector tensor entry, from either JSON shape.

    11.x writes ``DataType`` apart from ``Format`` (and keeps it when the format reads "N/A due
    to dynamic shapes"); 10.x folds both into ``Format/Datatype``.
    """
    if not isinstance(tensor, dict):
        return "unknown"
    datatype = _key(tensor, "DataType")
    if _known(datatype):
        dtype = dtype_from_format(datatype)
        if dtype != "unknown":
            return dtype
    return dtype_from_format(tensor_format(tensor))


def _sparse_weights_flag(layer: dict) -> bool | None:
    for key, value in layer.items():
        if key.endswith("HasSparseWeights"):
            try:
                return bool(int(value))
            except (TypeError, ValueError):
                return str(value).lower() in ("true", "yes")
    return None


#: What TensorRT writes for tensor formats when the inspector had no execution context with shapes.
DYNAMIC_FORMAT = "N/A due to dynamic shapes"
_REFORMAT_PREFIXES = ("Reformatting CopyNode for Input Tensor", "Reformatting CopyNode for Output Tensor")


def is_reformat_layer(layer: dict) -> bool:
    """A layer that only converts formats/types (its fused name may contain a conv's name)."""
    name = str(layer.get("Name", ""))
    if name.startswith(_REFORMAT_PREFIXES) or " input reformatter " in f" {name} " or " output reformatter " in f" {name} ":
        return True
    return "Reformat" in (str(layer.get("LayerType", "")), str(layer.get("ParameterType", "")))


def _layer_kind(layer: dict) -> str | None:
    ptype = str(layer.get("ParameterType", ""))
    ltype = str(layer.get("LayerType", ""))
    if ptype in _CONV_PARAMETER_TYPES or "Convolution" in ltype or ltype == "ConvActPool":
        return "conv"
    if ptype in _GEMM_PARAMETER_TYPES or "MatrixMultiply" in ltype or "Gemm" in ltype:
        return "gemm"
    if _sparse_weights_flag(layer) is not None:
        return "conv"
    return None


def _layer_tensors(info: InspectorInfo) -> list[dict]:
    return [t for layer in info.layers for t in (layer.get("Inputs") or []) + (layer.get("Outputs") or []) if isinstance(t, dict)]


def _formats_unknown(info: InspectorInfo) -> bool:
    """Every layer tensor's format reads "N/A due to dynamic shapes" (either JSON shape)."""
    formats = [tensor_format(t) for t in _layer_tensors(info)]
    formats = [f for f in formats if f is not None]
    return bool(formats) and all(f.strip() == DYNAMIC_FORMAT for f in formats)


def dynamic_formats_note(info: InspectorInfo, onnx_read: bool) -> str:
    """What the report can still say when the inspector printed no formats; never a source it did not read."""
    head = (f"tensor formats read '{DYNAMIC_FORMAT}' (engine inspected without an execution context whose input "
            "shapes are set)")
    if any(_known(_key(t, "DataType")) for t in _layer_tensors(info)):
        return head + ": per-layer data types come from the inspector's DataType fields, memory formats are unknown"
    if onnx_read:
        return head + ": INT8 in/out per layer comes from the ONNX graph's Q/DQ nodes instead"
    return (head + " and no ONNX graph was read: INT8 in/out per layer is unknown (re-inspect the engine with "
            "TensorRT on its GPU, or rebuild it with maxq-deploy export trt)")
