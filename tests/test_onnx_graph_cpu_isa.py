"""maxq_deploy.onnx_graph.cpu_isa: which int8 forms saturate on which x86 CPU, and the one warning line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maxq_deploy.onnx_graph import meta as onnx_meta
from maxq_deploy.onnx_graph.cpu_isa import check_cpu_isa, cpu_flags, int8_saturates, saturation_warning, seven_bit_weights
from maxq_deploy.core.errors import OptionError

AVX2 = {"sse4_1", "ssse3", "avx", "avx2", "fma"}


def test_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse4_1 avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == {"fpu", "sse4_1", "avx2", "avx512_vnni"}
    assert not int8_saturates(cpuinfo=info)
    assert cpu_flags(tmp_path / "missing") is None and not int8_saturates(cpuinfo=tmp_path / "missing")


@pytest.mark.parametrize("flags, saturates", [
    (AVX2, True), (AVX2 | {"avx512f", "avx512bw"}, True), (AVX2 | {"avx512_vnni"}, False), (AVX2 | {"avx_vnni"}, False),
    (AVX2 | {"amx_int8"}, False), ({"fp", "asimd", "asimddp"}, False), (set(), False),
])
def test_which_cpus_saturate(flags: set, saturates: bool) -> None:
    assert int8_saturates(flags) is saturates


def test_warning_only_for_int8_forms_that_saturate_on_onnxruntime() -> None:
    int8 = {onnx_meta.PRECISION: "int8"}
    line = saturation_warning({**int8, onnx_meta.CPU_ISA: "vnni"}, "onnxruntime", "m.onnx", flags=AVX2)
    assert line.startswith("warning: m.onnx: ") and "\n" not in line and "--cpu-isa portable" in line
    assert saturation_warning(int8, "onnxruntime", flags=AVX2) is not None  # the TensorRT form (no key) too
    assert saturation_warning({**int8, onnx_meta.CPU_ISA: "portable"}, "onnxruntime", flags=AVX2) is None
    assert saturation_warning({**int8, onnx_meta.CPU_ISA: "vnni"}, "onnxruntime", flags=AVX2 | {"avx512_vnni"}) is None
    assert saturation_warning({onnx_meta.PRECISION: "fp32"}, "onnxruntime", flags=AVX2) is None
    assert saturation_warning(int8, "openvino", flags=AVX2) is None  # OpenVINO gets 7-bit weights in memory instead


def test_cpu_isa_option() -> None:
    assert check_cpu_isa(None) == "portable" and check_cpu_isa(" VNNI ") == "vnni"
    with pytest.raises(OptionError, match="choose one of portable, vnni"):
        check_cpu_isa("avx512")


def test_seven_bit_weights_keep_zeros_and_amax() -> None:
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([[127, -127, 0, 0], [1, 0, -64, 0]], np.int8)
    scale = np.array([0.5, 0.25], np.float32)
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"], axis=0)], "g", [],
        [helper.make_tensor_value_info("wf", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(scale, "s"), numpy_helper.from_array(np.zeros(2, np.int8), "z")])
    model = helper.make_model(graph)
    assert seven_bit_weights(model) == 1
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert values["w"].tolist() == [[63, -63, 0, 0], [0, 0, -32, 0]]  # 0.496 -> 0, -31.75 -> -32; zeros stay zero
    np.testing.assert_allclose(values["s"] * 63, scale * 127, rtol=1e-6)
