"""Per conv of an INT8 Q/DQ ONNX graph: does it read INT8 and write INT8?

Why: sparse INT8 conv kernels want INT8 in AND out. A conv whose input does not come out of a
DequantizeLinear, or whose output reaches no QuantizeLinear (through ReLU, MaxPool or the
residual Add TensorRT fuses into it), runs with a float prologue or epilogue and is likely to
stay dense (docs/DEPLOY_NOTES.md). ``maxq-deploy verify MODEL.onnx`` reports this per conv for
Q/DQ graphs; plain data, no TensorRT.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass
class QdqConvCheck:
    name: str
    int8_in: bool
    int8_out: bool

    @property
    def ok(self) -> bool:
        return self.int8_in and self.int8_out

    def describe(self) -> str:
        if self.ok:
            return "INT8 in, INT8 out"
        parts = []
        if not self.int8_in:
            parts.append("input float (no DequantizeLinear before it)")
        if not self.int8_out:
            parts.append("output float (no QuantizeLinear after it)")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}


def qdq_conv_checks(path: str | os.PathLike[str], model=None) -> list[QdqConvCheck] | None:
    """One check per Conv of a Q/DQ graph; None when the graph has no Q/DQ nodes (fp32/fp16)."""
    from maxq_deploy.onnx_graph.layers import read_onnx_graph

    info = read_onnx_graph(path, model=model)
    if info.precision != "int8":
        return None
    return [QdqConvCheck(layer.name, layer.input_quantized, layer.output_quantized)
            for layer in info.layers.values() if layer.op == "conv"]


def summary_line(checks: list[QdqConvCheck], on_purpose=frozenset()) -> str:
    """One line; convs named in ``on_purpose`` (kept float by quantize --keep-float) are counted apart."""
    chosen = [c for c in checks if c.name in on_purpose]
    checks = [c for c in checks if c.name not in on_purpose]
    ok = sum(c.ok for c in checks)
    line = f"Q/DQ: {ok} of {len(checks)} convs INT8 in and INT8 out"
    if chosen:
        line += f" ({len(chosen)} more kept float on purpose)"
    bad = [c for c in checks if not c.ok]
    if bad:
        line += "; float at " + ", ".join(f"{c.name} ({c.describe()})" for c in bad[:6]) + ("..." if len(bad) > 6 else "")
    return line
