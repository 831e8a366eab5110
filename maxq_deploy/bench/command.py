"""``benchmark(models)``: open every model once with the backend decided once, time them, write the results."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from maxq_deploy.core.files import check_input_file, guard_bench_outputs
from maxq_deploy.bench.environment import collect_environment
from maxq_deploy.bench.schema import BenchModel, BenchResult, BenchSettings
from maxq_deploy.bench.stats import parse_batch_sizes
from maxq_deploy.bench.timing import DEFAULT_BLOCK, measure
from maxq_deploy.core.errors import InputFileError, OptionError
from maxq_deploy.core.progress import Progress
from maxq_deploy.runtimes.base import Runner

DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 8, 32)
DEFAULT_WARMUP = 5


def _static_size(runner: Runner, label: str) -> int | None:
    """The square input size fixed in the model's graph, None where it is dynamic."""
    _, h, w = runner.info.input_shape
    if h is not None and w is not None and h != w:
        raise InputFileError(f"{label}: non-square input {h}x{w} is not supported by bench")
    return h if h is not None and w is not None else None


def _resolve_input_size(label: str, static: int | None, metadata, requested: int | None) -> int:
    """The size fixed in the graph, else the one input-size rule (requested, recorded, the architecture's)."""
    from maxq_deploy.load.input_size import resolve_input_size
    from maxq_deploy.onnx_graph import meta as onnx_meta

    if static is not None:
        if requested is not None and requested != static:
            raise InputFileError(f"{label} takes {static}x{static} inputs (fixed in the graph), not --input-size {requested}")
        return static
    metadata = metadata or {}
    return resolve_input_size(metadata.get(onnx_meta.ARCH), metadata, requested)


def _unique_labels(models: list[BenchModel]) -> None:
    """File names, made unique with their parent folder (then an index) where two collide."""
    seen: dict[str, int] = {}
    for m in models:
        seen[m.label] = seen.get(m.label, 0) + 1
    for m in models:
        if seen[m.label] > 1 and m.path:
            m.label = f"{Path(m.path).parent.name}/{m.label}"
    labels = [m.label for m in models]
    for i, m in enumerate(models):
        if labels.count(m.label) > 1:
            m.label = f"{m.label}#{i}"


def _bench_model(label: str, runner: Runner, input_size: int, threads: int | None, variant: str = "", **extra) -> BenchModel:
    from maxq_deploy.runtimes.backends import backend_label

    info = runner.info
    return BenchModel(
        label, str(info.path) if info.path else None, info.model_kind, backend_label(runner), info.device, input_size,
        variant=variant, threads=threads, precision=info.precision,
        options={k: v for k, v in info.options.items() if v is not None}, warning=info.warning, runner=runner, **extra,
    )


def open_models(
    paths: Sequence[str | os.PathLike[str]],
    backend: str | None,
    device: str,
    threads: int | None,
    input_size: int | None,
    sparse: bool,
    batch_sizes: Sequence[int],
) -> list[BenchModel]:
    """Open every model with every backend asked for; variants (layouts, sparse) become separate entries.

    ``backend`` None runs each file on its own runtime; a comma-separated list (``"onnxruntime,openvino"``)
    runs every model on each of them, so runtimes are compared in the same interleaved run.
    """
    from maxq_deploy.runtimes.backends import backend_pairs, open_pair, parse_backend_list
    from maxq_deploy.runtimes.select import resolve_backend

    specs = parse_backend_list(backend)
    if sparse and not (all(s.name == "torch" for s in specs) and device == "cuda"):
        raise OptionError(
            "--sparse measures the torch backend on CUDA (semi-structured 2:4 matmuls); use --backend torch --device cuda, "
            "or build a sparse TensorRT engine (maxq-deploy export trt) and bench it on --backend tensorrt"
        )
    files = [check_input_file(raw, "model") for raw in paths]
    # (file, spec) pairs; no --backend: each file on its own runtime, decided here once.
    pairs = backend_pairs(files, specs) if specs else [(path, None) for path in files]
    opened: list[BenchModel] = []
    try:
        for path, spec in pairs:
            if resolve_backend(path, spec.name if spec else None) == "torch":
                opened.extend(_open_torch_variants(path, device, threads, input_size, sparse))
                continue
            runner = open_pair(path, spec, device=device, threads=threads) if spec else _open_by_suffix(path, device, threads)
            try:
                fixed = runner.info.fixed_batch
                if fixed is not None and any(b != fixed for b in batch_sizes):
                    raise OptionError(
                        f"{path.name} has a fixed batch of {fixed}; bench it with --batch-sizes {fixed} "
                        "or export it with a dynamic batch"
                    )
                size = _resolve_input_size(path.name, _static_size(runner, path.name), runner.info.metadata, input_size)
            except BaseException:
                runner.close()
                raise
            label = path.name if len(specs) <= 1 else f"{path.name} [{spec.label if spec else runner.info.backend}]"
            opened.append(_bench_model(label, runner, size, threads))
    except BaseException:
        for m in opened:
            if m.runner is not None:
                m.runner.close()
        raise
    _unique_labels(opened)
    return opened


def _open_by_suffix(path: Path, device: str, threads: int | None) -> Runner:
    from maxq_deploy.runtimes.select import open_runner

    return open_runner(path, device=device, threads=threads)


def _open_torch_variants(path: Path, device: str, threads: int | None, input_size: int | None, sparse: bool) -> list[BenchModel]:
    """A checkpoint on torch: NCHW + channels-last on CPU; fp32, or fp16 dense + fp16 2:4 sparse on CUDA."""
    from maxq_deploy.core.devices import resolve_device
    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.runtimes.torch_runner import TorchRunner

    from maxq_deploy.load.input_size import resolve_input_size

    resolve_device(device)  # before loading the weights
    loaded = load_torch_model(path)
    size = resolve_input_size(loaded.arch, loaded.meta, input_size)  # recorded / arch default, checked
    out: list[BenchModel] = []
    try:
        if device == "cpu":
            for variant, channels_last in (("nchw", False), ("channels-last", True)):
                runner = TorchRunner.from_loaded(loaded, device, channels_last, threads, copy_module=channels_last)
                out.append(_bench_model(f"{path.name} [{variant}]", runner, size, threads, variant))
        elif not sparse:
            out.append(_bench_model(path.name, TorchRunner.from_loaded(loaded, device, threads=threads), size, threads, "fp32"))
        else:
            from maxq_deploy.runtimes.torch_sparse_runner import SparseTorchRunner

            if loaded.kind != "folded-checkpoint":
                raise InputFileError(
                    f"--sparse runs folded checkpoints (constant 2:4 weights); {path.name} is a {loaded.kind}: "
                    "fold it first (maxq-deploy fold), or bench its TensorRT engine"
                )
            for variant, make_sparse in (("fp16-dense", False), ("fp16-sparse-2:4", True)):
                runner = SparseTorchRunner.from_loaded(loaded, device, sparse=make_sparse, copy_module=make_sparse)
                report = runner.report.to_dict() if runner.report is not None else None
                notes = [runner.report.summary()] if runner.report is not None else []
                out.append(_bench_model(f"{path.name} [{variant}]", runner, size, threads, variant, notes=notes,
                                        sparse_report=report))
    except BaseException:
        for m in out:
            m.runner.close()  # type: ignore[union-attr]
        raise
    return out


def benchmark(
    models: Sequence[str | os.PathLike[str]],
    backend: str | None = None,
    device: str = "cpu",
    batch_sizes: Sequence[int] | str = DEFAULT_BATCH_SIZES,
    warmup: int = DEFAULT_WARMUP,
    iters: int | None = None,
    seconds: float | None = None,
    threads: int | None = None,
    input_size: int | None = None,
    sparse: bool = False,
    block: int = DEFAULT_BLOCK,
    json_path: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    csv_path: str | os.PathLike[str] | None = None,
) -> BenchResult:
    """Measure ``models`` side by side (interleaved) at every batch size; write JSON/CSV/PNG if asked.

    ``iters`` timed iterations per model and batch size (default 30), or ``seconds`` of measured
    time per model and batch size. ``json_path``, ``csv_path`` and ``plot_path`` are the only files written.
    """
    if not models:
        raise OptionError("no models given; pass one or more ONNX files, engines or checkpoints")
    settings = BenchSettings(
        backend=backend, device=str(device).split(":")[0], batch_sizes=list(parse_batch_sizes(batch_sizes)),
        warmup=warmup, iters=iters, seconds=seconds,
        block=block, threads=threads, input_size=input_size, sparse=sparse,
    )
    outputs = guard_bench_outputs(json_path, plot_path, models, csv_path)
    opened = open_models(models, backend, device, threads, input_size, sparse, settings.batch_sizes)
    try:
        measurements = measure(opened, settings, progress)
    finally:
        for m in opened:
            if m.runner is not None:
                m.runner.close()
    result = BenchResult(opened, measurements, settings, collect_environment(threads))
    if "plot" in outputs:
        result.write_plot(outputs["plot"])
        result.outputs["plot"] = str(outputs["plot"])
    result.outputs.update({kind: str(path) for kind, path in outputs.items() if kind != "plot"})
    if "csv" in outputs:
        result.write_csv(outputs["csv"])
    if "json" in outputs:
        result.write_json(outputs["json"])
    return result
