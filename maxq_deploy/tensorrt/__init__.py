"""TensorRT stage: sparse (and dense baseline) engines from ONNX and their layer report.

Importing this package never imports ``tensorrt`` (nor torch or onnx): only the functions that
need it do, through :func:`maxq_deploy.runtimes.tensorrt_api.import_tensorrt`, which turns a
missing TensorRT or GPU into one line with the install hint. Engines run in the runtime wing
(:class:`maxq_deploy.runtimes.tensorrt_runner.TensorRTRunner`).

* :func:`build_engine` -- ONNX -> ``MODEL.engine`` + ``MODEL.engine.json`` (layer report)
* :func:`choose_builder_flags` -- TensorRT 10 vs 11 typing/flag plan (pure)
* :func:`trtexec_for_onnx` -- the equivalent ``trtexec`` command line (pure, no TensorRT)
* :mod:`maxq_deploy.tensorrt.verify` -- ``maxq-deploy verify MODEL.engine``
"""

from maxq_deploy.tensorrt.build import EngineBuildResult, build_engine
from maxq_deploy.tensorrt.flags import FlagPlan, choose_builder_flags, known_flag_names
from maxq_deploy.tensorrt.profiles import ProfileShapes, resolve_profile
from maxq_deploy.tensorrt.report import (
    EngineLayer,
    EngineReport,
    build_engine_report,
    load_engine_report,
    map_to_checkpoint_layers,
    parse_inspector_json,
    parse_sparsity_log,
    report_path_for,
)
from maxq_deploy.tensorrt.trtexec import TrtexecCommand, trtexec_command, trtexec_for_onnx

__all__ = [
    "EngineBuildResult",
    "EngineLayer",
    "EngineReport",
    "FlagPlan",
    "ProfileShapes",
    "TrtexecCommand",
    "build_engine",
    "build_engine_report",
    "choose_builder_flags",
    "known_flag_names",
    "load_engine_report",
    "map_to_checkpoint_layers",
    "parse_inspector_json",
    "parse_sparsity_log",
    "report_path_for",
    "resolve_profile",
    "trtexec_command",
    "trtexec_for_onnx",
]
