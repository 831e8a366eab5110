"""Build a (sparse) TensorRT engine from an ONNX graph and write its layer report beside it.

TensorRT Python API used (present in 10.x and 11.x bindings, TensorRT OSS python/src/infer/pyCore.cpp):
``Builder(logger)``, ``create_network(flags)``, ``OnnxParser(network, logger).parse_from_file``,
``create_builder_config``, ``set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)``,
``profiling_verbosity = ProfilingVerbosity.DETAILED``, ``set_flag(BuilderFlag.SPARSE_WEIGHTS)``,
``create_optimization_profile`` / ``set_shape`` / ``add_optimization_profile``,
``create_timing_cache(bytes)`` / ``set_timing_cache(cache, ignore_mismatch)`` / ``get_timing_cache().serialize()``,
``build_serialized_network``, ``Runtime(logger).deserialize_cuda_engine``,
``create_execution_context`` / ``get_tensor_profile_shape`` / ``set_input_shape`` (so the inspector
sees real tensor formats), ``create_engine_inspector()``, ``EngineInspector.execution_context``,
``get_engine_information(LayerInformationFormat.JSON)``.
Version-dependent pieces (``BuilderFlag.FP16/INT8``, ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``)
are looked up by name through :mod:`maxq_deploy.tensorrt.flags`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maxq_deploy.core.files import (
    ENGINE_SUFFIXES,
    JSON_SUFFIXES,
    Output,
    atomic_output,
    check_input_file,
    guard_outputs,
    provenance,
    sha256_file,
)
from maxq_deploy.core.errors import InputFileError
from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.runtimes import tensorrt_api as _trt
from maxq_deploy.core.errors import EngineBuildError
from maxq_deploy.tensorrt.flags import FlagPlan, choose_builder_flags
from maxq_deploy.onnx_graph.layers import read_onnx_graph
from maxq_deploy.tensorrt.profiles import ProfileShapes, profile_for_onnx
from maxq_deploy.tensorrt.report import EngineReport, build_engine_report, report_path_for, save_engine_report

DEFAULT_WORKSPACE_GIB = 4.0
_STAGES = ("parse ONNX", "build engine", "inspect layers", "write engine + report")


@dataclass
class EngineBuildResult:
    """A built engine, its report and how it was configured."""

    output: Path
    report_path: Path
    report: EngineReport
    plan: FlagPlan
    profile: ProfileShapes
    trt_version: str
    build_seconds: float
    timing_cache: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "output": str(self.output),
            "report": str(self.report_path),
            "trt_version": self.trt_version,
            "sparse_build": self.plan.sparse,
            "graph_precision": self.plan.graph_precision,
            "strongly_typed": self.plan.strongly_typed,
            "builder_flags": list(self.plan.builder_flags),
            "network_flags": list(self.plan.network_flags),
            "profile": self.profile.to_dict(),
            "timing_cache": str(self.timing_cache) if self.timing_cache else None,
            "reproducibility": self.report.reproducibility,
            "build_seconds": round(self.build_seconds, 2),
            "summary": self.report.summary_line(),
            "totals": self.report.totals(),
            "notes": list(self.plan.notes) + self.report.notes,
            "warnings": self.warnings[-20:],
            "layers": self.report.to_dict()["layers"],
        }

    to_dict = summary


def _stages(progress: Progress) -> Iterator[str]:
    return iter(progress.track(_STAGES, total=len(_STAGES), description="TensorRT build"))


def _first_line(exc: BaseException) -> str:
    from maxq_deploy.core.errors import first_line

    return first_line(exc, 300)


def parse_onnx_into_network(trt: Any, builder: Any, logger: Any, onnx_path: Path, network_flags: tuple[str, ...]) -> tuple[Any, Any]:
    """(network, parser); a graph TensorRT cannot parse becomes one line with the parser's messages."""
    flags = 0
    for name in network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    if not ok or parser.num_errors:
        messages = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            node = ""
            try:
                node = err.node_name() or ""
            except Exception:  # noqa: BLE001 - older parsers: node name unavailable
                node = ""
            desc = err.desc() if hasattr(err, "desc") else str(err)
            messages.append(f"{node}: {desc}" if node else str(desc))
        detail = "; ".join(" ".join(m.split()) for m in messages[:5]) or "no parser message"
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: {detail}")
    return network, parser


@dataclass
class TimingCacheUse:
    """What happened to ``--timing-cache``: recorded in the engine report for reproducible rebuilds."""

    path: str
    status: str  # "new" (no file), "reused", "mismatch" (TensorRT rejected it: rebuilt from an empty cache)
    pinned: bool  # reused as is, never rewritten; a mismatch is an error
    sha256_in: str | None = None  # of the file given (None: there was none)
    sha256_out: str | None = None  # of the cache written after the build (None: not written)
    #: Where this build's cache went: ``path``, or beside it (named by GPU and release) when ``path``
    #: was made for another GPU or TensorRT release and must not be overwritten.
    written_to: str | None = None
    #: BuilderFlag.ERROR_ON_TIMING_CACHE_MISS set: a pinned build fails instead of re-timing a miss.
    error_on_miss: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def _load_timing_cache(config: Any, path: Path | None, pinned: bool, notes: list[str],
                       beside: Path | None = None) -> tuple[TimingCacheUse | None, Any]:
    """Attach the timing cache at ``path`` (or a new one) to ``config``: (what happened, the cache object).

    The caller holds the cache object until the build is done (TensorRT: "the cache must not be
    destroyed until after the engine is built").

    ``create_timing_cache`` returns null for a cache that another TensorRT version or GPU wrote
    (and ``set_timing_cache`` returns False for one it will not take); passing that null on
    raises a plain TypeError. Either way: a pinned cache is an error; otherwise ``path`` is left
    as it is (another GPU's cache) and the build uses ``beside`` (this GPU's and release's cache,
    :func:`cache_path_for_gpu`), starting empty when there is none, and the report says so.
    """
    if path is None:
        return None, None
    data = path.read_bytes() if path.is_file() else b""
    use = TimingCacheUse(str(path), "reused" if data else "new", pinned,
                         sha256_in=hashlib.sha256(data).hexdigest() if path.is_file() else None,
                         written_to=str(beside) if beside is not None else None)
    if pinned and not data:
        raise EngineBuildError(f"--pin-timing-cache: {path} does not exist or is empty; build once without pinning to make it")
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, False):
        return use, cache
    if not data:
        raise EngineBuildError("TensorRT could not create an empty timing cache")
    reason = f"timing cache {path} (sha256 {use.sha256_in[:12]}...) was made by another TensorRT version or GPU"
    if pinned:
        raise EngineBuildError(f"{reason}: TensorRT rejected it; rebuild it on this machine (drop --pin-timing-cache)")
    use.status = "mismatch"
    beside = Path(use.written_to) if use.written_to else None
    start = beside.read_bytes() if beside is not None and beside.is_file() else b""
    cache = config.create_timing_cache(start) if start else None
    if cache is not None and config.set_timing_cache(cache, False):
        notes.append(f"{reason}: left untouched; reused and updated this GPU's cache beside it, {beside}")
        return use, cache
    notes.append(f"{reason}: left untouched; started from an empty cache (the engine may differ from one built "
                 f"with it), written beside it to {beside}")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise EngineBuildError("TensorRT could not create an empty timing cache")
    return use, cache


def cache_path_for_gpu(path: Path, gpu_name: str | None, trt_version: str) -> Path:
    """``timing.cache`` -> ``timing.NVIDIA-H200.trt10.13.3.cache``: where another GPU's/release's cache is not overwritten."""
    import re

    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name or "unknown-GPU").strip("-") or "unknown-GPU"
    release = re.sub(r"[^0-9.]+", "", trt_version) or "unknown"
    return path.with_name(f"{path.stem}.{gpu}.trt{release}{path.suffix or '.cache'}")


def set_pin_flag(trt: Any, config: Any, available: set[str], notes: list[str]) -> bool:
    """``BuilderFlag.ERROR_ON_TIMING_CACHE_MISS`` where this release has it: a pinned cache then really pins tactics."""
    if "ERROR_ON_TIMING_CACHE_MISS" not in available:
        notes.append(f"TensorRT {trt.__version__} has no BuilderFlag.ERROR_ON_TIMING_CACHE_MISS: timing-cache misses "
                     "are re-timed silently, so the pinned build may pick other tactics")
        return False
    config.set_flag(trt.BuilderFlag.ERROR_ON_TIMING_CACHE_MISS)
    return True


def build_engine(
    onnx_path: str | os.PathLike[str], output: str | os.PathLike[str], sparse: bool = True,
    profile: ProfileShapes | None = None, workspace_gib: float = DEFAULT_WORKSPACE_GIB,
    timing_cache: str | os.PathLike[str] | None = None, progress: Progress | None = None, *,
    min_batch: int | None = None, opt_batch: int | None = None, max_batch: int | None = None,
    pin_timing_cache: bool = False,
) -> EngineBuildResult:
    """Build ``output`` (a serialized engine) from ``onnx_path``; write ``output + '.json'`` beside it.

    ``sparse``: set ``BuilderFlag.SPARSE_WEIGHTS`` (``False`` builds the dense baseline of the
    same graph). The profile covers the input's batch axis; a fixed-batch graph admits only its
    own batch. ``timing_cache``: reused and updated; with ``pin_timing_cache`` reused as is (an
    error if TensorRT rejects it) and never rewritten. Raises project errors only: missing
    TensorRT/GPU, bad ONNX, parser or build failure.
    """
    src = check_input_file(onnx_path, "ONNX model")
    if pin_timing_cache and timing_cache is None:
        raise EngineBuildError("--pin-timing-cache needs --timing-cache PATH")
    pinned = [check_input_file(timing_cache, "timing cache")] if pin_timing_cache else []  # read, never rewritten
    out, report_path, *cache = guard_outputs(
        [Output(Path(output), ENGINE_SUFFIXES, "engine"), Output(report_path_for(output), JSON_SUFFIXES, "layer report"),
         Output(Path(timing_cache), (), "timing cache") if timing_cache is not None and not pin_timing_cache else None],
        [src, *pinned])
    cache_path = pinned[0] if pinned else (cache[0] if cache else None)
    if not workspace_gib or not workspace_gib > 0 or workspace_gib == float("inf"):  # NaN and inf too
        raise EngineBuildError(f"workspace must be more than 0 GiB, got {workspace_gib!r}")
    graph = read_onnx_graph(src)
    shapes = profile_for_onnx(graph, profile, min_batch, opt_batch, max_batch)

    trt = _trt.import_tensorrt()
    _trt.require_cuda_gpu("building a TensorRT engine", need_torch_cuda=False)
    version = str(trt.__version__)
    plan = choose_builder_flags(version, _trt.available_flag_names(trt), graph.precision, sparse=sparse)
    logger = _trt.shared_logger(trt)
    since = logger.mark()
    builder = _trt.make_builder(trt, logger)
    stages = _stages(progress or SILENT)
    try:
        notes: list[str] = []

        next(stages, None)
        network, _parser = parse_onnx_into_network(trt, builder, logger, src, plan.network_flags)
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        if shapes.input_name not in names:
            raise EngineBuildError(f"the parsed network has no input {shapes.input_name!r} (inputs: {', '.join(names)})")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        for flag in plan.builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(shapes.input_name, shapes.min_shape, shapes.opt_shape, shapes.max_shape)
        if config.add_optimization_profile(opt_profile) < 0:
            raise EngineBuildError(f"TensorRT rejected the optimization profile {shapes.to_dict()}")
        gpu = _trt.gpu_identity()
        beside = cache_path_for_gpu(cache_path, (gpu or {}).get("name"), version) if cache_path is not None else None
        if beside is not None and not pin_timing_cache:
            guard_outputs([Output(beside, (), "timing cache for this GPU")], [src])
        cache_use, _cache = _load_timing_cache(config, cache_path, pin_timing_cache, notes, beside)  # held until the build ends
        if cache_use is not None:
            cache_use.written_to = None if pin_timing_cache else str(beside if cache_use.status == "mismatch" else cache_path)
            if pin_timing_cache:
                cache_use.error_on_miss = set_pin_flag(trt, config, _trt.available_flag_names(trt), notes)

        next(stages, None)
        start = time.perf_counter()
        try:
            serialized = builder.build_serialized_network(network, config)
        except Exception as exc:  # noqa: BLE001 - some versions raise instead of returning None
            raise EngineBuildError(f"TensorRT failed to build {out.name}: {_first_line(exc)}") from None
        seconds = time.perf_counter() - start
        if serialized is None:
            errors = logger.errors(since)
            detail = "; ".join(" ".join(e.split()) for e in errors[-3:]) or "no error message (see TensorRT's log)"
            raise EngineBuildError(f"TensorRT failed to build {out.name}: {detail}")
        engine_bytes = bytes(memoryview(serialized))

        next(stages, None)
        inspector_json = inspect_serialized_engine(trt, logger, engine_bytes)

        next(stages, None)
        reproducibility = {
            "trt_version": version, "gpu": gpu,
            "builder_flags": list(plan.builder_flags) + (["ERROR_ON_TIMING_CACHE_MISS"] if cache_use and cache_use.error_on_miss else []),
            "network_flags": list(plan.network_flags), "strongly_typed": plan.strongly_typed,
            "workspace_gib": workspace_gib, "profile": shapes.to_dict(), "onnx_sha256": sha256_file(src),
            "timing_cache": cache_use.to_dict() if cache_use else None,
        }
        report = build_engine_report(  # before writing anything: a report that cannot be made leaves no engine
            inspector_json, engine=str(out), onnx_info=graph, sparsity_log_lines=logger.sparsity_lines(since),
            sparse_build=sparse and "SPARSE_WEIGHTS" in plan.builder_flags, trt_version=version,
            flag_plan=plan.to_dict(), profile=shapes.to_dict(), engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
            provenance=provenance(src) | {"workspace_gib": workspace_gib, "build_seconds": round(seconds, 2)},
        )
        report.notes.extend(notes)
        reproducibility["float_regions"] = float_regions_of(graph)
        if graph.precision == "int8":
            report.notes.append(float_regions_note(reproducibility["float_regions"], plan.strongly_typed))
        report.reproducibility = reproducibility
        cache_bytes = None
        if cache_use is not None and not pin_timing_cache:
            cache_bytes = bytes(memoryview(config.get_timing_cache().serialize()))
            cache_use.sha256_out = hashlib.sha256(cache_bytes).hexdigest()
        if cache_use is not None:
            report.reproducibility["timing_cache"] = cache_use.to_dict()
        with atomic_output(out) as tmp:
            tmp.write_bytes(engine_bytes)
        save_engine_report(report, report_path)
        if cache_bytes is not None:  # never over another GPU's/release's cache: that one stays as it was
            with atomic_output(Path(cache_use.written_to or cache_path)) as tmp:
                tmp.write_bytes(cache_bytes)
        for _ in stages:
            pass
    finally:
        close = getattr(stages, "close", None)
        if close is not None:
            close()  # ends the progress bar on success and failure alike
    return EngineBuildResult(
        output=out, report_path=report_path, report=report, plan=plan, profile=shapes, trt_version=version,
        build_seconds=seconds, timing_cache=cache_path, warnings=logger.warnings(since),
    )


def float_regions_of(graph: Any) -> str | None:
    """The float-region type an INT8 Q/DQ graph was exported with (ONNX metadata ``maxq_deploy.float_regions``)."""
    from maxq_deploy.onnx_graph import meta as onnx_meta

    if graph.precision != "int8":
        return None
    return (graph.metadata or {}).get(onnx_meta.key("float_regions")) or "fp32 (not recorded: exported before --float-regions)"


def float_regions_note(regions: str | None, strongly_typed: bool) -> str:
    """What the float parts of the Q/DQ graph run in, for the engine report."""
    if strongly_typed:
        return (f"float regions of the Q/DQ graph: {regions}; the network is strongly typed, so they run in that type"
                + ("" if str(regions).startswith("fp16") else
                   " (export onnx --float-regions fp16 makes them fp16, as a weakly typed 10.x build with FP16 would)"))
    return f"float regions of the Q/DQ graph: {regions}; weakly typed build: the FP16 flag lets TensorRT run them in fp16"


def inspect_serialized_engine(trt: Any, logger: Any, engine_bytes: bytes) -> str:
    """The engine inspector's JSON for a serialized engine (needs the GPU it was built for).

    The inspector gets an execution context whose input shapes are set (profile 0's opt
    shapes): without one, every tensor format of a dynamic-shape engine reads "N/A due to
    dynamic shapes" and nobody can tell whether a conv runs INT8 in and out.
    """
    since = logger.mark() if hasattr(logger, "mark") else 0
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        errors = "; ".join(logger.errors(since)[-2:]) if hasattr(logger, "errors") else ""
        raise InputFileError(
            "TensorRT cannot load this engine (built by another TensorRT version or for another GPU?)"
            + (f": {errors}" if errors else "")
        )
    inspector = engine.create_engine_inspector()
    context = context_with_input_shapes(trt, engine)
    if context is not None:
        inspector.execution_context = context
    return str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))


def context_with_input_shapes(trt: Any, engine: Any, profile: int = 0) -> Any | None:
    """An execution context with every input set to ``profile``'s opt shape (None: TensorRT refused one)."""
    context = engine.create_execution_context()
    if context is None:
        return None
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
            continue
        _min, opt, _max = engine.get_tensor_profile_shape(name, profile)
        if not context.set_input_shape(name, tuple(int(d) for d in opt)):
            return None
    return context


def inspect_engine_file(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(inspector JSON, TensorRT version) of an engine file; needs TensorRT and a GPU."""
    p = check_input_file(path, "TensorRT engine")
    trt = _trt.import_tensorrt()
    _trt.require_cuda_gpu("inspecting a TensorRT engine", need_torch_cuda=False)
    return inspect_serialized_engine(trt, _trt.shared_logger(trt), p.read_bytes()), str(trt.__version__)
