"""The float regions of an INT8 Q/DQ graph in fp16: what a strongly typed TensorRT build runs them in.

Strongly typed builds (TensorRT 11 always, 10.12+ by this project's choice) run every tensor in
the type the ONNX graph gives it: the stem before the first QuantizeLinear, the epilogue after the
last DequantizeLinear and any layer the Q/DQ nodes do not cover stay fp32, where a weakly typed
10.x build with ``BuilderFlag.FP16`` could run them in fp16. NVIDIA's 11.x advice (migration
guide: "Use ModelOpt AutoCast to convert your ONNX model to mixed precision before building") is
to make those regions fp16 in the ONNX itself; this module does that for the graphs
:mod:`maxq_deploy.export.tensorrt_form` writes, so a strongly typed build matches a weakly typed one:

* every float32 initializer and ``Constant`` becomes float16, Q/DQ scales included (INT8 values
  and zero points are untouched); ``Cast(to=FLOAT)`` nodes cast to FLOAT16;
* the graph keeps float32 ``input``/``output`` (a Cast at each edge), like the fp16 export;
* fp16 scales on QuantizeLinear/DequantizeLinear need opset 19 (opset 13-18 allow only float
  scales), so the default-domain opset is raised to 19 when it is lower; the ops of these graphs
  (Conv, Gemm, Relu, Add, pooling, Flatten, Reshape, Q/DQ, Cast) read the same at 17 and 19.

The export ends in the existing parity check (ONNX Runtime vs the fake-quantized model).
"""

from __future__ import annotations

import numpy as np

from maxq_deploy.core.errors import OptionError

FLOAT_REGIONS = ("fp16", "fp32")
#: QuantizeLinear/DequantizeLinear take float16 scales from this opset on.
FP16_QDQ_OPSET = 19
#: Ops whose float tensors simply follow their inputs' type (anything else is a bug to look at).
_OPS = frozenset({
    "Conv", "Gemm", "MatMul", "Relu", "Add", "Sub", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten",
    "Reshape", "Identity", "Concat", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Softmax", "Constant", "Cast",
    "QuantizeLinear", "DequantizeLinear", "Shape", "Gather", "Unsqueeze", "Squeeze", "Transpose",
})


def check_float_regions(value: str | None) -> str | None:
    """``--float-regions``: None (the default), ``fp16`` or ``fp32``; anything else is one OptionError line."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in FLOAT_REGIONS:
        raise OptionError(f"--float-regions must be fp16 or fp32, got {value!r}")
    return text


def float_regions_to_fp16(model) -> list[str]:
    """Rewrite a Q/DQ ``model`` in place: float regions fp16, I/O float32. Returns notes for the export result."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    unknown = sorted({node.op_type for node in graph.node} - _OPS)
    if unknown:
        raise RuntimeError(f"bug: --float-regions fp16 does not know {', '.join(unknown)}; check and add to _OPS")
    notes = []
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < FP16_QDQ_OPSET:
            notes.append(f"opset {opset.version} -> {FP16_QDQ_OPSET}: QuantizeLinear/DequantizeLinear take fp16 scales "
                         f"from opset {FP16_QDQ_OPSET} (TensorRT 10.x and 11.x parse it)")
            opset.version = FP16_QDQ_OPSET
    converted = 0
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name))
            converted += 1
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16), attr.t.name))
                converted += 1
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    del graph.value_info[:]
    input_name, output_name = graph.input[0].name, graph.output[0].name
    inner_in, inner_out = f"{input_name}_fp16", f"{output_name}_fp16"
    for node in graph.node:
        node.input[:] = [inner_in if n == input_name else n for n in node.input]
        node.output[:] = [inner_out if n == output_name else n for n in node.output]
    graph.node.insert(0, helper.make_node("Cast", [input_name], [inner_in], name="input_to_fp16", to=TensorProto.FLOAT16))
    graph.node.append(helper.make_node("Cast", [inner_out], [output_name], name="output_to_fp32", to=TensorProto.FLOAT))
    notes.append(f"float regions fp16 ({converted} float tensors, Q/DQ scales included); input/output stay float32")
    return notes
