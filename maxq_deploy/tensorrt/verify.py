"""``maxq-deploy verify MODEL.engine``: do the checkpoint's sparse layers run on sparse weights?

Reads the layer report written beside the engine (``MODEL.engine.json``) and works without
TensorRT; where TensorRT and a GPU are present the engine itself is re-inspected, so a report
that no longer matches its engine cannot pass. An engine built by ``trtexec
--exportLayerInfo=MODEL.engine.layers.json`` is re-inspected where TensorRT and a GPU are
present, else read from that file; the notes say which, and never name a source (an ONNX graph)
that was not read. One ``LayerVerdict`` per
conv/gemm layer: ``expected_sparse`` = maps to a sparse checkpoint layer, ``holds`` =
TensorRT marked its weights sparse (``HasSparseWeights``); the note says whether a sparse
tactic was picked and, if not, why not.

Importing this module registers the verifier for ``.engine`` and ``.plan`` files.
"""

from __future__ import annotations

from pathlib import Path

from maxq_deploy import verify as _verify
from maxq_deploy.core.files import sha256_file
from maxq_deploy.core.errors import BackendUnavailableError, InputFileError, SparsityPatternError
from maxq_deploy.core.sparsity import HARDWARE_PATTERN, NMPattern
from maxq_deploy.runtimes import tensorrt_api as _trt
from maxq_deploy.tensorrt.report import (
    EngineLayer, EngineReport, build_engine_report, load_engine_report, refresh_report, report_path_for,
)
from maxq_deploy.tensorrt.trtexec import layer_info_path_for

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")  # .trt: the suffix runtimes.select also treats as an engine


def _can_reinspect() -> bool:
    """TensorRT imports and a GPU is visible (both checked without raising)."""
    try:
        _trt.import_tensorrt()
        _trt.require_cuda_gpu("inspecting a TensorRT engine", need_torch_cuda=True)
    except BackendUnavailableError:
        return False
    return True


def load_report_for_engine(path: Path) -> EngineReport:
    """The engine's report: ``.engine.json`` (ours), else ``.engine.layers.json`` (trtexec), re-inspected where possible."""
    ours, raw = report_path_for(path), layer_info_path_for(path)
    reinspect = _can_reinspect()
    if ours.is_file():
        report = load_engine_report(ours)
        digest = sha256_file(path)
        stale = bool(report.engine_sha256) and report.engine_sha256 != digest
        problem = "TensorRT/GPU not available here"
        if reinspect:
            from maxq_deploy.tensorrt.build import inspect_engine_file

            try:
                inspector_json, version = inspect_engine_file(path)
            except InputFileError as exc:  # e.g. an engine of another TensorRT version: keep the report
                problem = " ".join(str(exc).split())
            else:
                if stale:
                    report.sparsity_log_lines = []  # the build log belongs to another engine
                fresh = refresh_report(report, inspector_json, engine_sha256=digest)
                fresh.trt_version = version
                fresh.notes.append(f"re-inspected the engine with TensorRT {version}")
                if stale:
                    fresh.notes.append(f"{ours.name} was written for another build of this engine: layer facts re-read from the engine")
                return fresh
        if stale:
            raise InputFileError(
                f"{ours} describes another engine than {path} (sha256 differs) and the engine cannot be "
                f"re-inspected ({problem}): rebuild it with maxq-deploy export trt"
            )
        report.notes.append(f"read from {ours.name}; the engine itself was not re-inspected ({problem})")
        return report
    if raw.is_file() and reinspect:  # the engine itself, with input shapes set, beats any exported file
        from maxq_deploy.tensorrt.build import inspect_engine_file

        try:
            inspector_json, version = inspect_engine_file(path)
        except InputFileError as exc:
            problem = " ".join(str(exc).split())
        else:
            report = build_engine_report(inspector_json, engine=str(path), sparse_build=True, trt_version=version,
                                         engine_sha256=sha256_file(path))
            report.notes.append(
                f"re-inspected the engine with TensorRT {version} (input shapes set); trtexec's {raw.name} was not "
                "used; no ONNX graph was read, and whether the engine was built with --sparsity=enable is not recorded"
            )
            return report
    else:
        problem = "TensorRT/GPU not available here"
    if raw.is_file():
        try:
            text = raw.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputFileError(f"{raw} cannot be read ({type(exc).__name__})") from None
        try:
            report = build_engine_report(text, engine=str(path), sparse_build=True, engine_sha256=sha256_file(path))
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:  # garbage inside the layer list
            from maxq_deploy.core.errors import first_line

            raise InputFileError(f"{raw} is damaged TensorRT layer information ({type(exc).__name__}: {first_line(exc)})") from None
        report.notes.append(
            f"read from trtexec's layer information {raw.name}; the engine itself was not re-inspected ({problem}); "
            "no ONNX graph was read: layer names are TensorRT's, and whether the engine was built with "
            "--sparsity=enable is not recorded"
        )
        return report
    if reinspect:
        from maxq_deploy.tensorrt.build import inspect_engine_file

        inspector_json, version = inspect_engine_file(path)
        report = build_engine_report(inspector_json, engine=str(path), sparse_build=True, trt_version=version,
                                     engine_sha256=sha256_file(path))
        report.notes.append(f"no {ours.name}: inspected the engine alone with TensorRT {version}")
        return report
    try:
        _trt.import_tensorrt()
        missing = "no CUDA GPU is available to inspect it"
    except BackendUnavailableError:
        missing = f"TensorRT is not installed to inspect it ({_trt.INSTALL_HINT})"
    raise BackendUnavailableError(
        f"{path} has no layer report ({ours.name}) and {missing}: rebuild it with maxq-deploy export trt, "
        "which writes the report beside the engine"
    )


def _verdict(layer: EngineLayer, report: EngineReport) -> _verify.LayerVerdict:
    onnx = {l.name: l for l in report.onnx_layers}
    first = next((onnx[name] for name in layer.checkpoint_layers if name in onnx), None)
    shape = list(first.shape) if first else [layer.out_channels, layer.in_channels // max(layer.groups, 1), *layer.kernel]
    channels = layer.in_channels // max(layer.groups, 1) if layer.op == "conv" else layer.in_channels
    if layer.sparse_tactic:
        verdict = "sparse tactic picked"
    else:
        verdict = layer.reason or ("eligible, dense tactic picked" if layer.eligible else "")
    note = "; ".join(p for p in (f"TRT: {layer.trt_name}", verdict) if p)
    return _verify.LayerVerdict(
        name=", ".join(layer.checkpoint_layers) or layer.trt_name, op=layer.op, shape=shape,
        expected_sparse=layer.expected_sparse, trained_nm=report.nm if layer.expected_sparse else None,
        channels=channels, channels_divisible=bool(channels) and channels % 4 == 0, grouped=layer.groups > 1,
        depthwise=layer.groups > 1 and channels == 1, groups=first.nm_groups if first else 0,
        violating_groups=first.violating_groups if first else 0, holds=layer.eligible, dtype=layer.precision, note=note,
    )


def verify_engine(path: Path, pattern: NMPattern) -> _verify.VerifyReport:
    """Verify a TensorRT engine against the report beside it (and the engine itself where TensorRT runs)."""
    if str(pattern) != HARDWARE_PATTERN:
        raise SparsityPatternError(f"TensorRT engines hold only the hardware pattern {HARDWARE_PATTERN}, got --pattern {pattern}")
    report = load_report_for_engine(Path(path))
    result = _verify.VerifyReport(str(path), "engine", str(pattern), report.nm)
    result.layers = [_verdict(layer, report) for layer in report.layers]
    for name in report.missing_layers:
        layer = next((l for l in report.onnx_layers if l.name == name), None)
        result.layers.append(_verify.LayerVerdict(
            name=name, op=layer.op if layer else "conv", shape=list(layer.shape) if layer else [], expected_sparse=True,
            trained_nm=report.nm, channels=layer.in_channels if layer else 0,
            channels_divisible=bool(layer and layer.in_channels % 4 == 0), grouped=bool(layer and layer.groups > 1),
            depthwise=False, groups=0, violating_groups=0, holds=False, dtype="-",
            note="no conv/gemm layer of the engine maps back to this checkpoint layer",
        ))
    totals = report.totals()
    result.notes.append(
        f"{report.summary_line()} of {totals['conv_gemm_layers']} conv/gemm layers; expected-sparse layers: "
        f"{totals['expected_eligible']} of {totals['expected_sparse']} eligible, {totals['expected_sparse_tactic']} run a sparse tactic"
    )
    if not report.sparse_build:
        result.notes.append("engine built dense (--dense): no layer can hold 2:4 in TensorRT's sense")
    result.notes.extend(report.notes)
    return result


for _suffix in ENGINE_SUFFIXES:
    _verify.FILE_VERIFIERS[_suffix] = verify_engine

