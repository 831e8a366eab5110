"""Which builder flags and network typing to use, per TensorRT version and graph precision.

The portable rule (see docs/DEPLOY_NOTES.md): precision lives in the ONNX graph. INT8 is
QuantizeLinear/DequantizeLinear nodes, FP16 is an FP16 graph. TensorRT offers two ways to
honour that:

* weak typing + precision flags (``BuilderFlag.FP16`` / ``INT8``): TensorRT 8-10. A weakly
  typed network with Q/DQ needs ``INT8``; ``FP16`` lets the layers outside the Q/DQ regions run
  in half precision, as ``trtexec --int8 --fp16`` does. Deprecated in 10.12 ("superseded by
  strong typing"), removed in 11.
* strong typing (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): tensor types come from the
  graph; precision flags are forbidden on such a network. Always on in 11.x, where the creation
  flag is still accepted but ignored.

:func:`choose_builder_flags` picks one of the two as a pure function of the version string,
the flag names this TensorRT exposes and the graph's precision, so it is tested without
TensorRT and ``--trtexec`` can print a command for a version that is not installed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from maxq_deploy.core.errors import MaxQDeployError
from maxq_deploy.runtimes.tensorrt_api import parse_version

GRAPH_PRECISIONS = ("fp32", "fp16", "int8")
#: Precision builder flags deprecated from this version on (10.12 release notes).
FLAGS_DEPRECATED_FROM = (10, 12)
#: Weakly typed builds: the builder flags each graph precision sets, in order. INT8 graphs add FP16
#: so layers outside the Q/DQ regions may run FP16 (``trtexec --int8 --fp16``).
WEAK_FLAGS: dict[str, tuple[str, ...]] = {"int8": ("INT8", "FP16"), "fp16": ("FP16",)}
#: (precision, flag) -> what a build without that flag risks (a missing FP16 of an INT8 build risks nothing).
MISSING_FLAG: dict[tuple[str, str], str] = {
    ("int8", "INT8"): "the Q/DQ graph may fail to build",
    ("fp16", "FP16"): "the FP16 graph may run in FP32",
}

# What the Python bindings of each major version expose (pyCore.cpp of TensorRT OSS v10.x / v11.1),
# for planning without TensorRT installed. Only the flags this module reasons about are listed.
_FLAGS_10 = frozenset({"FP16", "BF16", "INT8", "FP8", "SPARSE_WEIGHTS", "TF32", "OBEY_PRECISION_CONSTRAINTS",
                       "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO", "EXPLICIT_BATCH", "STRONGLY_TYPED"})
_FLAGS_11 = frozenset({"SPARSE_WEIGHTS", "TF32", "DIRECT_IO", "STRONGLY_TYPED"})


def known_flag_names(trt_version: str) -> set[str]:
    """Flag names a TensorRT of ``trt_version`` exposes (for planning without it installed)."""
    return set(_FLAGS_11 if parse_version(trt_version)[0] >= 11 else _FLAGS_10)


@dataclass(frozen=True)
class FlagPlan:
    """How to configure one build: builder flags, network creation flags, trtexec equivalents."""

    trt_version: str
    graph_precision: str  # "fp32", "fp16" or "int8" (Q/DQ graph)
    sparse: bool
    builder_flags: tuple[str, ...]  # BuilderFlag member names to set
    network_flags: tuple[str, ...]  # NetworkDefinitionCreationFlag member names to pass
    strongly_typed: bool  # the network is strongly typed (by flag, or always on 11.x)
    trtexec_flags: tuple[str, ...]  # precision/typing/sparsity options of the equivalent trtexec call
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def choose_builder_flags(
    trt_version: str, available_flags: set[str] | frozenset[str], graph_precision: str, sparse: bool = True
) -> FlagPlan:
    """Decide typing and flags for a graph of ``graph_precision`` on TensorRT ``trt_version``.

    ``available_flags``: member names of ``trt.BuilderFlag`` and ``trt.NetworkDefinitionCreationFlag``
    in the installed TensorRT (:func:`maxq_deploy.runtimes.tensorrt_api.available_flag_names`), or
    :func:`known_flag_names` when planning for a version that is not installed.
    """
    precision = str(graph_precision).lower()
    if precision not in GRAPH_PRECISIONS:
        raise MaxQDeployError(f"graph precision must be one of {', '.join(GRAPH_PRECISIONS)}, got {graph_precision!r}")
    available = {str(name) for name in available_flags}
    major, minor = parse_version(trt_version)
    notes: list[str] = []
    builder: list[str] = []
    trtexec: list[str] = []

    if sparse:
        if "SPARSE_WEIGHTS" in available:
            builder.append("SPARSE_WEIGHTS")
            trtexec.append("--sparsity=enable")  # never "force": it rewrites the weights
        else:
            notes.append(f"TensorRT {trt_version} has no BuilderFlag.SPARSE_WEIGHTS: the engine will be dense")

    weak_flags_exist = bool({"FP16", "INT8"} & available)
    flags_deprecated = (major, minor) >= FLAGS_DEPRECATED_FROM
    can_type_strongly = major >= 11 or "STRONGLY_TYPED" in available
    use_strong = can_type_strongly and (not weak_flags_exist or flags_deprecated)

    network: list[str] = []
    if use_strong:
        if major < 11:
            network.append("STRONGLY_TYPED")
            trtexec.append("--stronglyTyped")
            if weak_flags_exist:
                notes.append(
                    f"TensorRT {major}.{minor} deprecates BuilderFlag.FP16/INT8 (since 10.12): the network is "
                    "strongly typed, so every tensor keeps the type the ONNX graph gives it"
                )
        else:
            notes.append(f"TensorRT {major}.x networks are always strongly typed: precision comes from the ONNX graph")
        if precision == "int8":
            notes.append("Q/DQ graph: quantized convs run INT8; layers outside Q/DQ keep the graph's float type")
    else:
        # Weak typing (TensorRT < 10.12): a precision flag lets TensorRT use that precision.
        for flag in WEAK_FLAGS.get(precision, ()):
            if flag in available:
                builder.append(flag)
                trtexec.append(f"--{flag.lower()}")
            elif (precision, flag) in MISSING_FLAG:
                notes.append(f"TensorRT {trt_version} has no BuilderFlag.{flag}: {MISSING_FLAG[precision, flag]}")
    if precision == "fp32":
        notes.append(
            "fp32 graph: sparse tensor cores pay off in FP16/INT8; export an fp16 or INT8 Q/DQ graph for sparse speedups"
        )
    return FlagPlan(
        trt_version=str(trt_version), graph_precision=precision, sparse=sparse,
        builder_flags=tuple(builder), network_flags=tuple(network),
        strongly_typed=bool(use_strong), trtexec_flags=tuple(trtexec), notes=tuple(notes),
    )
