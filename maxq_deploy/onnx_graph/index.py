"""The one way to read an ONNX file and look things up in its graph.

:func:`load_onnx` turns every way a file can be wrong into one :class:`InputFileError` line;
:class:`GraphIndex` holds the name maps (initializers, Constant outputs, producers, consumers) and
follows a weight back through Q/DQ, Cast, Transpose, Reshape and Identity to its constant,
replaying the chain in numpy. Every module that reads a graph (verification, the layer table the
TensorRT report uses, the export's post-processing and the ONNX Runtime rewrite) uses these two.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from maxq_deploy.core.errors import InputFileError, first_line
from maxq_deploy.core.files import check_input_file

#: Ops the weight chain may pass through on its way from the initializer to the consumer.
CHAIN_OPS = frozenset({"DequantizeLinear", "QuantizeLinear", "Cast", "Transpose", "Reshape", "Identity"})


@dataclass
class ConstantWeight:
    """A weight as its consumer sees it, traced to the constant it is computed from."""

    source: str  # name of the initializer or Constant output
    value: np.ndarray  # floats; for Q/DQ chains the integers q - zero_point
    chain: list[str] = field(default_factory=list)  # op types from the consumer back to the source
    quantized: bool = False
    int_dtype: str | None = None  # "int8"/"uint8" of the quantized values

    @property
    def dtype(self) -> str:
        return self.int_dtype if self.quantized and self.int_dtype else str(self.value.dtype)


class GraphIndex:
    """Name lookups over one ONNX graph: initializers, Constant outputs, producers."""

    def __init__(self, graph) -> None:
        self.graph = graph
        self.initializers = {init.name: init for init in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output if out}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)

    def constant_array(self, name: str) -> np.ndarray | None:
        """The value of an initializer or Constant output, else None."""
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant":
            return constant_node_value(node)
        return None

    def param(self, node, index: int) -> np.ndarray | None:
        """A constant parameter input (scale, zero point, shape), through Identity and friends."""
        if len(node.input) <= index or not node.input[index]:
            return None
        traced = self.trace_weight(node.input[index])
        return None if traced is None else traced.value

    @staticmethod
    def has_input(node, index: int) -> bool:
        return len(node.input) > index and bool(node.input[index])

    def trace_weight(self, name: str) -> ConstantWeight | None:
        """Follow ``name`` back through :data:`CHAIN_OPS` to a constant and replay the chain."""
        value = self.constant_array(name)
        if value is not None:
            return ConstantWeight(name, value)
        node = self.producers.get(name)
        if node is None or node.op_type not in CHAIN_OPS or not node.input:
            return None
        upstream = self.trace_weight(node.input[0])
        if upstream is None:
            return None
        upstream.chain.insert(0, node.op_type)
        return self._apply(node, upstream)

    def _apply(self, node, w: ConstantWeight) -> ConstantWeight | None:
        attrs = attributes(node)
        op = node.op_type
        if op == "Identity":
            return w
        if op == "Transpose":
            perm = attrs.get("perm") or list(range(w.value.ndim))[::-1]
            w.value = np.transpose(w.value, perm)
            return w
        if op == "Reshape":
            shape = self.param(node, 1)
            if shape is None:
                return None
            w.value = w.value.reshape(reshape_target(w.value.shape, shape.astype(np.int64).tolist(), bool(attrs.get("allowzero", 0))))
            return w
        if op == "Cast":
            if not w.quantized:
                from onnx import helper

                try:
                    w.value = w.value.astype(helper.tensor_dtype_to_np_dtype(int(attrs["to"])))
                except (KeyError, TypeError, ValueError):
                    pass  # an exotic target type: zeros stay zeros
            return w
        if op == "QuantizeLinear":
            return self._quantize(node, attrs, w)
        if op == "DequantizeLinear":
            return self._dequantize(node, attrs, w)
        return None

    def _quantize(self, node, attrs: dict, w: ConstantWeight) -> ConstantWeight | None:
        """What TensorRT folds a constant QuantizeLinear to: saturate(rint(x / scale) + zp)."""
        scale = self.param(node, 1)
        zero_point = self.param(node, 2)
        if scale is None or (zero_point is None and self.has_input(node, 2)):
            return None  # computed at run time: not a constant TensorRT could fold
        if zero_point is None:
            out_type = attrs.get("output_dtype")
            np_type = np.dtype("int8") if out_type == 3 else np.dtype("uint8")  # ONNX default: uint8
            zero_point = np.zeros((), dtype=np_type)
        x = np.asarray(w.value, dtype=np.float64)
        axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
        s = per_axis(np.asarray(scale, dtype=np.float64), x.shape, axis, block)
        zp = per_axis(np.asarray(zero_point, dtype=np.float64), x.shape, axis, block)
        int_type = zero_point.dtype if np.issubdtype(zero_point.dtype, np.integer) else np.dtype("int8")
        info = np.iinfo(int_type)
        q = np.clip(np.rint(x / s) + zp, info.min, info.max).astype(int_type)
        w.value, w.quantized, w.int_dtype = q, False, str(q.dtype)
        return w

    def _dequantize(self, node, attrs: dict, w: ConstantWeight) -> ConstantWeight | None:
        """Keep the integers: zeros of ``(q - zp) * scale`` are exactly the zeros of ``q - zp``."""
        q = w.value
        zero_point = self.param(node, 2)
        if zero_point is None and self.has_input(node, 2):
            return None
        axis, block = int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
        if np.issubdtype(q.dtype, np.integer):
            zp = 0 if zero_point is None else per_axis(zero_point.astype(np.int64), q.shape, axis, block)
            w.int_dtype = w.int_dtype or str(q.dtype)
            w.value = (q.astype(np.int64) - zp).astype(np.int32)
            w.quantized = True
        else:  # float8 / float4 inputs: the float values themselves
            w.value = np.asarray(q, dtype=np.float32)
        return w


def attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def constant_node_value(node) -> np.ndarray | None:
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.asarray(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.asarray(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.asarray(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.asarray(list(attr.ints), dtype=np.int64)
    return None


def per_axis(param: np.ndarray, shape: tuple[int, ...], axis: int, block: int = 0) -> np.ndarray:
    """Broadcast a per-tensor, per-axis or blocked Q/DQ parameter to ``shape``."""
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    axis = axis % len(shape)
    if block and param.ndim == len(shape):
        return np.repeat(param, block, axis=axis).take(range(shape[axis]), axis=axis)
    view = [1] * len(shape)
    view[axis] = -1
    return param.reshape(view)


def reshape_target(current: tuple[int, ...], shape: list[int], allowzero: bool) -> list[int]:
    """ONNX Reshape semantics: 0 copies the input dim (unless allowzero), -1 is inferred."""
    if allowzero:
        return shape
    return [current[i] if dim == 0 and i < len(current) else dim for i, dim in enumerate(shape)]


def load_onnx(path: str | os.PathLike[str], what: str = "ONNX model", *, load_external_data: bool = True):
    """``onnx.load`` that turns every way a file can be wrong into one InputFileError line."""
    import onnx
    from google.protobuf.message import DecodeError

    p = check_input_file(path, what)
    try:
        model = onnx.load(str(p), load_external_data=load_external_data)
    except DecodeError:
        raise InputFileError(f"{p} is not an ONNX model (the protobuf does not parse)") from None
    except (OSError, ValueError, RuntimeError, onnx.checker.ValidationError) as exc:
        first = first_line(exc)
        raise InputFileError(f"{p} cannot be read as an ONNX model: {first} (external data missing?)") from None
    if model.ir_version == 0 or not model.graph.node:
        raise InputFileError(f"{p} is not an ONNX model (empty, or no graph nodes)")
    return model


def check_onnx_numbers(model, path: str | os.PathLike[str]) -> None:
    """Refuse a graph whose constants make every output garbage: the one numeric check of ONNX models.

    Every floating-point initializer and Constant is finite, and every constant scale of a
    QuantizeLinear/DequantizeLinear is a positive normal number of its type (a scale of 0, NaN,
    Inf or a denormal such as 1e-45 divides into Inf/NaN). ``verify``, ``eval`` and ``bench`` call it.
    """
    from onnx import numpy_helper

    def damaged(what: str) -> InputFileError:
        return InputFileError(f"{path}: damaged ONNX model ({what}); re-export it from its checkpoint")

    def check_finite(name: str, value: np.ndarray) -> None:
        if np.issubdtype(value.dtype, np.floating) and value.size and not np.isfinite(value).all():
            first = [int(i) for i in np.argwhere(~np.isfinite(value))[0]]
            raise damaged(f"{name} holds NaN or Inf, first at index {first}")

    graph = model.graph
    for init in graph.initializer:
        check_finite(f"initializer {init.name}", numpy_helper.to_array(init))
    index = GraphIndex(graph)
    for node in graph.node:
        if node.op_type == "Constant":
            value = constant_node_value(node)
            if value is not None:
                check_finite(f"Constant {node.output[0] if node.output else node.name}", value)
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            scale = index.param(node, 1)
            if scale is None or not np.issubdtype(np.asarray(scale).dtype, np.floating):
                continue  # computed at run time, or an exotic type: the runtime judges it
            scale = np.asarray(scale)
            tiny = float(np.finfo(scale.dtype).tiny)
            bad = ~np.isfinite(scale) | (scale < tiny)
            if bad.any():
                value = float(scale.reshape(-1)[int(np.argmax(bad.reshape(-1)))])
                raise damaged(f"scale of {node.op_type} {node.name or node.output[0]} is {value:g}; a scale must be a positive "
                              f"normal {scale.dtype} number, at least {tiny:.3g}")
