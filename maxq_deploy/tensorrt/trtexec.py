"""The ``trtexec`` command line equivalent to a :func:`maxq_deploy.tensorrt.build.build_engine` call.

Pure: works without TensorRT, for the version the user names. Flag facts (TensorRT OSS
``samples/common/sampleOptions.cpp``): ``--sparsity=enable`` in 10.x and 11.x (``force`` is
deprecated because it rewrites weights); ``--fp16``/``--int8`` exist only before 11;
``--stronglyTyped`` is a no-op in 11 (always strongly typed); ``--memPoolSize=workspace:<n>M``
(MiB without a suffix); ``--profilingVerbosity=detailed``; ``--exportLayerInfo=<file>``;
``--timingCacheFile=<file>``.

No ``--skipInference``: with it trtexec exports the layer information of the engine alone, with
no execution context (``samples/trtexec/trtexec.cpp``: ``printLayerInfo(..., nullptr)``), so every
tensor format of a dynamic-batch engine reads "N/A due to dynamic shapes" and nobody can tell
whether a conv runs INT8 in and out. Without it trtexec prints the layer information of its
inference context, whose input shapes are set (the ``--optShapes``); ``--iterations=1
--warmUp=0 --duration=0`` keep that inference phase to one short run (``sampleOptions.cpp``).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from maxq_deploy.tensorrt.flags import FlagPlan
from maxq_deploy.tensorrt.profiles import ProfileShapes


#: One short inference run, so ``--exportLayerInfo`` describes a context whose input shapes are set.
INFERENCE_FOR_LAYER_INFO = ("--iterations=1", "--warmUp=0", "--duration=0")


def layer_info_path_for(engine_path: str | os.PathLike[str]) -> Path:
    """Where trtexec's ``--exportLayerInfo`` goes: ``model.engine.layers.json`` (raw inspector JSON)."""
    p = Path(engine_path)
    return p.with_name(p.name + ".layers.json")


@dataclass
class TrtexecCommand:
    argv: list[str]
    trt_version: str
    notes: list[str] = field(default_factory=list)

    @property
    def command_line(self) -> str:
        return shlex.join(self.argv)

    def to_dict(self) -> dict:
        return {"argv": self.argv, "command_line": self.command_line, "trt_version": self.trt_version, "notes": self.notes}


def trtexec_command(
    onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str], plan: FlagPlan, profile: ProfileShapes,
    workspace_gib: float = 4.0, timing_cache: str | os.PathLike[str] | None = None,
    layer_info: str | os.PathLike[str] | None = None, executable: str = "trtexec",
) -> TrtexecCommand:
    """argv of trtexec building the engine that ``plan`` and ``profile`` describe."""
    mib = max(int(round(float(workspace_gib) * 1024)), 1)
    argv = [
        executable,
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={profile.trtexec_spec('min')}",
        f"--optShapes={profile.trtexec_spec('opt')}",
        f"--maxShapes={profile.trtexec_spec('max')}",
        f"--memPoolSize=workspace:{mib}M",
        *plan.trtexec_flags,
        "--profilingVerbosity=detailed",
        f"--exportLayerInfo={layer_info if layer_info is not None else layer_info_path_for(engine_path)}",
    ]
    if timing_cache is not None:
        argv.append(f"--timingCacheFile={timing_cache}")
    argv += INFERENCE_FOR_LAYER_INFO
    notes = list(plan.notes)
    notes.append(
        "no --skipInference: trtexec exports the layer information of its inference context (input shapes set, "
        "so tensor formats are real, not 'N/A due to dynamic shapes'); the inference run is one iteration"
    )
    notes.append(
        "trtexec's '(Sparsity)' log lines say which layers were eligible and which run sparse (add --verbose if "
        f"they do not show); maxq-deploy verify reads {Path(layer_info) if layer_info else layer_info_path_for(engine_path)}"
    )
    return TrtexecCommand(argv, plan.trt_version, notes)


def trtexec_for_onnx(
    onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str], sparse: bool = True,
    trt_version: str | None = None, profile: ProfileShapes | None = None, workspace_gib: float = 4.0,
    timing_cache: str | os.PathLike[str] | None = None, *, min_batch: int | None = None,
    opt_batch: int | None = None, max_batch: int | None = None,
) -> TrtexecCommand:
    """What ``export trt --trtexec`` prints: read the ONNX (no TensorRT needed), plan, format.

    ``trt_version``: "10", "11" or a full version; default: the installed TensorRT (read from package
    metadata); with neither, an :class:`OptionError` asks for ``--trt-version`` (weakly and strongly
    typed releases need different flags).
    """
    from maxq_deploy.runtimes.tensorrt_api import SUPPORTED_MAJORS, installed_tensorrt_version, parse_version
    from maxq_deploy.core.errors import EngineBuildError, OptionError
    from maxq_deploy.tensorrt.flags import choose_builder_flags, known_flag_names
    from maxq_deploy.onnx_graph.layers import read_onnx_graph
    from maxq_deploy.tensorrt.profiles import profile_for_onnx

    if not workspace_gib or not workspace_gib > 0 or workspace_gib == float("inf"):  # NaN and inf too
        raise EngineBuildError(f"workspace must be more than 0 GiB, got {workspace_gib!r}")
    notes: list[str] = []
    if trt_version is None:
        trt_version = installed_tensorrt_version()  # detected from package metadata, TensorRT not imported
        if trt_version is not None:
            notes.append(f"command written for the installed TensorRT {trt_version} (--trt-version for another release)")
    if trt_version is not None and parse_version(trt_version)[0] not in SUPPORTED_MAJORS:
        raise EngineBuildError(f"--trt-version must be 10 or 11 (or a full 10.x / 11.x version), got {trt_version!r}")
    from maxq_deploy.core.files import ENGINE_SUFFIXES, Output, guard_outputs

    guard_outputs([Output(Path(engine_path), ENGINE_SUFFIXES, "--saveEngine"), Output(layer_info_path_for(engine_path), (), "--exportLayerInfo"),
                   Output(Path(timing_cache), (), "--timingCacheFile") if timing_cache is not None else None],
                  [onnx_path], check_writable=False)  # the command runs elsewhere: names only
    graph = read_onnx_graph(onnx_path)
    shapes = profile_for_onnx(graph, profile, min_batch, opt_batch, max_batch)
    if trt_version is None:  # weak (10.x < 10.12) and strong typing need different flags: never guess
        raise OptionError(
            "--trtexec: TensorRT is not installed here, so the release the command is for is unknown: name it with "
            "--trt-version (10.8, 10.13, 11, ...; before 10.12 the flags are --int8/--fp16, from 10.12 --stronglyTyped)"
        )
    plan = choose_builder_flags(trt_version, known_flag_names(trt_version), graph.precision, sparse=sparse)
    command = trtexec_command(onnx_path, engine_path, plan, shapes, workspace_gib, timing_cache)
    command.notes[:0] = notes
    return command
