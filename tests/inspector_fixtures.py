"""Engine-inspector JSON in the shapes NVIDIA documents, per TensorRT release line (made by code).

Sources (read for their shapes; no text copied beyond field names and the sample values quoted):

* 10.x per-layer tensors carry one ``Format/Datatype`` string. NVIDIA TensorRT OSS:
  ``samples/sampleEditableTimingCache/README.md`` prints layer information with
  ``Format/Datatype: Float``; ``tools/Polygraphy/polygraphy/backend/trt/util.py`` reads
  ``elem["Format/Datatype"]`` of every ``Inputs``/``Outputs`` entry and treats ``"N/A"`` as unknown;
  the trt-engine-explorer examples (Q/DQ ResNet on A100) write format descriptions such as
  ``"Thirty-two wide channel vectorized row major Int8 format"`` and ``"Row major linear FP32"``,
  weights as ``{"Type": "Int8", ...}``, and I/O as ``"Bindings": ["input", "output"]``.
* 11.x: TensorRT 11.0 documentation, "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x"
  (https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/api/migration/tensorrt-10x-to-11x-IEngineInspector.html,
  unchanged in the 11.3.0 and 11.4.x pages): ``Bindings`` is replaced by ``I/O Tensors`` (objects
  with ``Name``, ``IOMode``, ``DataType``, ``Dimensions``, ``Location``, ``IsShapeInferenceIO`` and
  ``ProfileInfo`` [``MinShape``, ``OptShape``, ``MaxShape``, ``Format``]), and the
  ``Format/DataType`` field is split into separate ``Format`` and ``DataType`` keys. The guide's own
  values are used verbatim: ``"DataType": "Float"``, ``"Format": "Row major linear FP32 format (kLINEAR)"``.
  Int8 tensors use TensorRT's DataType name ``"Int8"`` (as in the 10.x ``Weights.Type``) and the
  same format description with its ``(kCHW32)`` enum suffix, in the pattern of the guide's example.
* ``UInt8``: TensorRT's ``DataType.UINT8`` (present in every recorded release, see
  tests/data/trt_api/); a UInt8 tensor is unsigned and must never be read as int8.
* Without an execution context whose input shapes are set, the inspector prints a dynamic-shape
  engine's formats as ``"N/A due to dynamic shapes"`` (NVIDIA samples/trtexec; docs/DEPLOY_NOTES.md).
  For 11.x both cases are given: only ``Format`` reads N/A (the data type is a property of the
  tensor, not of its memory format) and both read N/A.
"""

from __future__ import annotations

import copy

DYNAMIC = "N/A due to dynamic shapes"
#: 10.x format descriptions (trt-engine-explorer examples).
V10_INT8 = "Thirty-two wide channel vectorized row major Int8 format"
V10_FP32 = "Row major linear FP32"
#: 11.x: the migration guide's example values, and the same pattern for Int8.
V11_FP32_FORMAT = "Row major linear FP32 format (kLINEAR)"
V11_INT8_FORMAT = "Thirty-two wide channel vectorized row major Int8 format (kCHW32)"
V11_TYPES = {"int8": ("Int8", V11_INT8_FORMAT), "fp32": ("Float", V11_FP32_FORMAT), "uint8": ("UInt8", "Row major linear UInt8 format (kLINEAR)")}
V10_TYPES = {"int8": V10_INT8, "fp32": V10_FP32, "uint8": "Row major linear UInt8 format"}

SPARSE_I8 = "sm80_xmma_fprop_sparse_conv_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32_nchw_vect_c_32_tilesize128x128x64"
DENSE_I8F32 = ("sm80_xmma_fprop_implicit_gemm_interleaved_i8f32_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32_nchw_"
               "tilesize128x64x64_stage4_warpsize2x2x1_g1_tensor16x8x32_t1r3s3_alignc4_nchw")
CONV1 = "layer1.0.convbn1.weight + /layer1.0/convbn1/weight_quantizer/DequantizeLinear + layer1.0.convbn1 + /layer1/relu/Relu"
CONV2 = ("layer1.0.convbn2.weight + /layer1.0/convbn2/weight_quantizer/DequantizeLinear + layer1.0.convbn2 + "
         "/layer1/layer1.0/Add + /layer1/layer1.0/relu_1/Relu")


def tensor(schema: str, name: str, dims: list[int], dtype: str) -> dict:
    """One ``Inputs``/``Outputs`` entry of ``schema`` ("10" or "11") holding ``dtype`` ("int8", "fp32", "uint8")."""
    entry = {"Name": name, "Location": "Device", "Dimensions": dims}
    if schema == "10":
        entry["Format/Datatype"] = V10_TYPES[dtype]
    else:
        data_type, fmt = V11_TYPES[dtype]
        entry["Format"] = fmt
        entry["DataType"] = data_type
    return entry


def qdq_layers(schema: str) -> list[dict]:
    """The tiny Q/DQ graph of ``make_onnx(qdq=True)``: a sparse INT8-in/out conv, a conv ending in fp32 (i8f32)."""
    t = lambda *a: tensor(schema, *a)  # noqa: E731
    return [
        {"Name": "/layer1.0/convbn1/input_quantizer/QuantizeLinear", "LayerType": "Reformat", "ParameterType": "Reformat",
         "Origin": "QDQ", "Inputs": [t("r1", [-1, 8, 16, 16], "fp32")], "Outputs": [t("r1_q", [-1, 8, 16, 16], "int8")],
         "TacticValue": "0x00000000000003ea"},
        {"Name": CONV1, "LayerType": "CaskConvolution", "ParameterType": "Convolution",
         "Inputs": [t("r1_q", [-1, 8, 16, 16], "int8")], "Outputs": [t("r2_q", [-1, 8, 16, 16], "int8")],
         "Kernel": [3, 3], "OutMaps": 8, "Groups": 1, "Weights": {"Type": "Int8", "Count": 576},
         "Bias": {"Type": "Float", "Count": 8}, "HasSparseWeights": 1, "HasBias": 1, "HasReLU": 1,
         "TacticName": SPARSE_I8, "TacticValue": "0x1"},
        {"Name": "Reformatting CopyNode for Input Tensor 1 to " + CONV2, "LayerType": "Reformat", "ParameterType": "Reformat",
         "Origin": "REFORMAT", "Inputs": [t("r2_q", [-1, 8, 16, 16], "int8")],
         "Outputs": [t("Reformatted Input Tensor 1 to " + CONV2, [-1, 8, 16, 16], "fp32")], "TacticValue": "0x0"},
        {"Name": CONV2, "LayerType": "CaskConvolution", "ParameterType": "Convolution",
         "Inputs": [t("c3", [-1, 8, 16, 16], "int8")], "Outputs": [t("c4", [-1, 8, 16, 16], "fp32")],
         "Kernel": [1, 1], "OutMaps": 8, "Groups": 1, "Weights": {"Type": "Int8", "Count": 64}, "HasSparseWeights": 1,
         "HasBias": 1, "HasReLU": 1, "TacticName": DENSE_I8F32, "TacticValue": "0x8e570d33939edbf3"},
        {"Name": "/avgpool/GlobalAveragePool", "LayerType": "CaskPooling", "ParameterType": "Pooling",
         "Inputs": [t("c4", [-1, 8, 16, 16], "fp32")], "Outputs": [t("p", [-1, 8, 1, 1], "fp32")], "TacticValue": "0x3"},
    ]


def io_tensors_11(batch: tuple[int, int, int] = (1, 8, 32)) -> list[dict]:
    """The 11.x ``I/O Tensors`` list, in the migration guide's shape."""
    lo, opt, hi = batch
    return [
        {"Name": "input", "IOMode": "Input", "DataType": "Float", "Dimensions": [-1, 3, 16, 16], "Location": "Device",
         "IsShapeInferenceIO": False, "ProfileInfo": [{"MinShape": [lo, 3, 16, 16], "OptShape": [opt, 3, 16, 16],
                                                       "MaxShape": [hi, 3, 16, 16], "Format": V11_FP32_FORMAT}]},
        {"Name": "output", "IOMode": "Output", "DataType": "Float", "Dimensions": [-1, 10], "Location": "Device",
         "IsShapeInferenceIO": False},
    ]


def inspector_json(version: str, layers: list[dict] | None = None) -> dict:
    """The whole engine information of ``version`` (10.x: Bindings + Format/Datatype; 11.x: I/O Tensors + split)."""
    schema = "11" if version.split(".")[0] == "11" else "10"
    layers = qdq_layers(schema) if layers is None else layers
    if schema == "11":
        return {"Layers": layers, "I/O Tensors": io_tensors_11()}
    return {"Layers": layers, "Bindings": ["input", "output"]}


def without_context(data: dict, *, keep_datatype: bool = True) -> dict:
    """``data`` as printed without an execution context with shapes: formats read "N/A due to dynamic shapes"."""
    data = copy.deepcopy(data)
    for layer in data.get("Layers", []):
        for entry in (layer.get("Inputs") or []) + (layer.get("Outputs") or []):
            if "Format/Datatype" in entry:
                entry["Format/Datatype"] = DYNAMIC
            if "Format" in entry:
                entry["Format"] = DYNAMIC
                if not keep_datatype:
                    entry["DataType"] = DYNAMIC
    return data
