"""The ``metadata_props`` keys that ``export onnx`` writes and every later stage reads.

Each key is ``maxq_deploy.<name>``; values are strings (JSON for lists). TensorRT layer names
derive from ONNX node names, and these keys say which of them must run sparse.
"""

from __future__ import annotations

PREFIX = "maxq_deploy."
ARCH = PREFIX + "arch"
NM = PREFIX + "nm"
PRECISION = PREFIX + "precision"
SPARSE_LAYERS = PREFIX + "sparse_layers"  # JSON list of layer (node) names
KEPT_DENSE = PREFIX + "kept_dense"  # JSON list: sparse layers fold --keep-dense left out of 2:4 (not in sparse_layers)
KEPT_FLOAT = PREFIX + "kept_float"  # JSON list: layers quantize --keep-float left without Q/DQ
INPUT_SIZE = PREFIX + "input_size"
SOURCE_SHA256 = PREFIX + "source_sha256"
TOOL_VERSION = PREFIX + "tool_version"
TARGET = PREFIX + "target"
#: int8 CPU form: "portable" (exact on every x86 CPU) or "vnni" (fastest with VNNI/AMX; saturates without); see maxq_deploy.onnx_graph.cpu_isa
CPU_ISA = PREFIX + "cpu_isa"


def key(name: str) -> str:
    """``"nm"`` -> ``"maxq_deploy.nm"``."""
    return PREFIX + name


def read_metadata(model: object) -> dict[str, str]:
    """``metadata_props`` of an ``onnx.ModelProto`` as a dict."""
    return {p.key: p.value for p in getattr(model, "metadata_props", [])}


def write_metadata(model: object, values: dict[str, object]) -> None:
    """Set ``maxq_deploy.<name>`` entries (names without the prefix; replaces existing ones)."""
    props = model.metadata_props  # type: ignore[attr-defined]
    wanted = {key(k) if not k.startswith(PREFIX) else k: str(v) for k, v in values.items() if v is not None}
    keep = [(p.key, p.value) for p in props if p.key not in wanted]
    del props[:]
    for k, v in keep + list(wanted.items()):
        entry = props.add()
        entry.key, entry.value = k, v
