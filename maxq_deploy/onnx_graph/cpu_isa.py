"""Which int8 graph forms run exactly on this CPU (x86 int8 dot products with or without VNNI).

x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) multiply uint8 x int8 with ``vpmaddubsw``:
each pair of adjacent products is summed in int16 *with saturation* (255 x 127 x 2 > 32767), so
an int8 graph with full-range uint8 activations and int8 weights (ONNX Runtime's fast u8s8 form)
computes a different function there. CPUs with AVX-512 VNNI, AVX-VNNI or AMX accumulate in int32.

Graph forms (``maxq_deploy.cpu_isa`` in an exported graph's metadata, :data:`maxq_deploy.onnx_graph.meta.CPU_ISA`):

- ``portable``: exact on every x86 CPU (no pair of products can leave int16);
- ``vnni``: the fastest form on VNNI/AMX CPUs; saturates on CPUs without them.

A graph without the key that holds int8 Q/DQ (the TensorRT form, or an older export) is treated as
``vnni``: ONNX Runtime fuses some of its layers into u8s8 kernels.
"""

from __future__ import annotations

from pathlib import Path

PORTABLE = "portable"
VNNI = "vnni"
CPU_ISAS = (PORTABLE, VNNI)
#: /proc/cpuinfo flags of int8 dot products that accumulate in 32 bits.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags (first ``flags`` line of ``/proc/cpuinfo``); None where unknown (not Linux x86)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return None


def int8_saturates(flags: set[str] | None = None, *, cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when this CPU is x86 without VNNI/AMX: u8 x s8 pairs saturate in int16 there.

    ``flags``: the CPU flags (default: read from ``cpuinfo``). Unknown CPU (no flags): False.
    """
    flags = cpu_flags(cpuinfo) if flags is None else flags
    if not flags or not ({"avx2", "sse4_1", "ssse3"} & flags):
        return False  # not an x86 CPU we can read (ARM has its own int8 dot products)
    return not (set(VNNI_FLAGS) & flags)


def seven_bit_weights(model) -> int:
    """Re-quantize every int8 weight behind a DequantizeLinear of ``model`` (an ``onnx.ModelProto``) to 7 bits, in place.

    The same ``amax`` in 63 steps (scale x 127/63, values rounded half to even into [-63, 63]), so
    u8 x s7 pairs stay within int16 and the graph runs exactly on CPUs without VNNI; zeros stay
    zero (2:4 holds). What OpenVINO is given for a non-portable int8 graph on such a CPU (the file
    is not changed). Returns the number of weights re-quantized.
    """
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}

    def value(name: str):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        node = consts.get(name)
        return None if node is None else numpy_helper.to_array(node.attribute[0].t)

    def store(name: str, array) -> None:
        tensor = numpy_helper.from_array(array, name)
        if name in inits:
            inits[name].CopyFrom(tensor)
        else:
            consts[name].attribute[0].t.CopyFrom(tensor)

    done = 0
    for dq in [n for n in model.graph.node if n.op_type == "DequantizeLinear"]:
        w, scale = value(dq.input[0]), value(dq.input[1])
        if w is None or scale is None or w.dtype != np.int8 or w.ndim < 2:
            continue
        store(dq.input[0], np.clip(np.rint(w.astype(np.float64) * (63 / 127)), -63, 63).astype(np.int8))
        store(dq.input[1], (scale.astype(np.float64) * (127 / 63)).astype(np.float32))
        done += 1
    return done


def check_cpu_isa(value: str | None) -> str:
    """``--cpu-isa`` validated (default portable); a wrong value is one OptionError line."""
    from maxq_deploy.core.errors import OptionError

    key = (value or PORTABLE).strip().lower()
    if key not in CPU_ISAS:
        raise OptionError(f"--cpu-isa {value!r} is not supported; choose one of {', '.join(CPU_ISAS)}")
    return key


def saturation_warning(metadata: dict[str, str], backend: str, name: str = "this graph", flags: set[str] | None = None) -> str | None:
    """One warning line when a graph's int8 form can saturate on this CPU with ``backend``; else None."""
    from maxq_deploy.onnx_graph import meta as onnx_meta

    if metadata.get(onnx_meta.PRECISION) != "int8" or backend != "onnxruntime":
        return None
    form = metadata.get(onnx_meta.CPU_ISA, VNNI)
    if form == PORTABLE or not int8_saturates(flags):
        return None
    what = "its int8 form 'vnni'" if onnx_meta.CPU_ISA in metadata else "its int8 Q/DQ form (u8 x s8 kernels)"
    return (f"warning: {name}: {what} can saturate on this CPU (no VNNI: "
            "int16 pair sums), so results may differ; export it with --target onnxruntime --cpu-isa portable")
