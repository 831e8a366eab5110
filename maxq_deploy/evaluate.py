"""Accuracy (top-1 / top-5) of any stage's model on a labelled data set, through any runtime.

One call per model: a MaxQ checkpoint (MaxQ eval network), a folded or quantized checkpoint
(torch), an ONNX model (ONNX Runtime) or a TensorRT engine, so the stages can be compared on
the same images.

Distributed evaluation: start the same command on every rank with torchrun, e.g.

    torchrun --standalone --nproc_per_node 4 -m maxq_deploy eval MODEL --data DIR

(or call :func:`evaluate` from a script that torchrun starts). When ``torch.distributed`` is
initialized, or ``WORLD_SIZE`` > 1 (the group is then initialized with gloo from torchrun's
environment), each rank evaluates every ``world``-th image with no padding
(:class:`maxq_deploy.data.ShardSampler`) and the counts are summed with ``all_reduce``, so
every image counts exactly once. Every rank returns the same totals; the CLI prints on rank 0.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from maxq_deploy.data import ImageDataset, Preprocess, check_input_shape, make_loader, open_dataset
from maxq_deploy.core.distributed import all_reduce, join_process_group
from maxq_deploy.core.errors import DataError
from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.runtimes.backends import backend_label
from maxq_deploy.runtimes.base import Runner

TOP5 = 5
#: What ``eval --json`` prints, in this order: fields of :class:`EvalResult` (``non_finite`` as ``non_finite_outputs``).
SUMMARY_KEYS = (
    "model", "model_kind", "backend", "device", "data", "data_kind", "images", "skipped_corrupt", "skipped_files",
    "non_finite_outputs", "top1", "top5", "correct1", "correct5", "num_classes", "seconds", "images_per_second", "world_size",
    "precision", "options",
)


@dataclass
class EvalResult:
    """Accuracy of one model on one data set; top-1/top-5 in percent."""

    model: str
    model_kind: str  # "maxq-checkpoint", "folded-checkpoint", "quantized-checkpoint", "onnx", ...
    backend: str
    device: str
    data: str
    data_kind: str
    images: int  # images evaluated (unreadable ones excluded)
    skipped_corrupt: int
    correct1: int
    correct5: int | None  # None when the model has fewer than 5 classes
    top1: float
    top5: float | None
    num_classes: int | None
    seconds: float
    images_per_second: float
    world_size: int = 1
    precision: str | None = None  # what the runtime computes in ("fp32", "fp16", "int8"; None: not known)
    options: dict = field(default_factory=dict)  # runtime settings that can change results (threads, inference precision)
    skipped_files: list[str] = field(default_factory=list)  # the first few, "path: reason"
    warning: str | None = None  # the runner's one-line warning (an int8 form that saturates on this CPU)
    non_finite: int = 0  # images whose logits hold NaN or Inf: each counted as a wrong answer
    predictions: np.ndarray | None = field(default=None, repr=False)  # top-1 class per image, data order; None when distributed

    def summary(self) -> dict:
        """JSON-ready (what ``eval --json`` prints)."""
        values = {**vars(self), "non_finite_outputs": self.non_finite, "options": dict(self.options)}
        return {key: values[key] for key in SUMMARY_KEYS}

    def agreement(self, other: EvalResult) -> float | None:
        """Share (percent) of images where both models predict the same class, when comparable."""
        if self.predictions is None or other.predictions is None or len(self.predictions) != len(other.predictions):
            return None
        if not len(self.predictions):
            return None
        return float((self.predictions == other.predictions).mean() * 100.0)


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many labels rank among the ``k`` highest logits (ties count in the label's favour).

    A row holding NaN or Inf is a wrong answer, never a tie: a broken model scores 0, not 100 %.
    """
    finite = np.isfinite(logits).all(axis=1)
    label_logit = logits[np.arange(len(labels)), labels]
    rank = (logits > label_logit[:, None]).sum(axis=1)
    return int(((rank < k) & finite).sum())


def top1_predictions(logits: np.ndarray) -> np.ndarray:
    """The top-1 class per row; -1 (no class, a wrong answer) for a row holding NaN or Inf."""
    finite = np.isfinite(logits).all(axis=1)
    return np.where(finite, np.nan_to_num(logits).argmax(axis=1), -1)


def _check_classes(model_classes: int | None, dataset: ImageDataset, model: str) -> None:
    data_classes = dataset.num_classes
    if model_classes is None or data_classes is None or data_classes <= model_classes:
        return
    what = f"{data_classes} class folders" if dataset.kind == "imagefolder" else f"labels up to {data_classes - 1}"
    raise DataError(f"{model} predicts {model_classes} classes but the data has {what}: wrong model or data?")


def evaluate_runner(
    runner: Runner,
    dataset: ImageDataset,
    batch_size: int = 32,
    workers: int = 2,
    limit: int | None = None,
    progress: Progress | None = None,
    model_name: str | None = None,
) -> EvalResult:
    """Top-1/top-5 of an open runner on an open labelled data set (the core of :func:`evaluate`).

    ``limit`` evaluates that many images spread evenly over the data set (an ImageFolder lists
    its classes one after another, so the first N would cover only the first classes).
    """
    info = runner.info
    name = model_name or str(info.path or info.backend)
    if not dataset.has_labels:
        raise DataError(f"{dataset.root} has no labels ({dataset.kind} data); evaluation needs labelled data")
    shape = info.input_shape
    check_input_shape(dataset, shape[0], (shape[1], shape[2]), what=Path(name).name)
    from maxq_deploy.archs.catalog import ARCHS, check_input_size

    if info.arch in ARCHS:  # e.g. a CIFAR ResNet on 224x224 images: one line, before any batch
        check_input_size(info.arch, dataset.sample_shape[-1], what=f"data for {Path(name).name}")
    model_classes = info.num_classes
    _check_classes(model_classes, dataset, Path(name).name)
    if limit is not None and limit < 1:
        raise DataError(f"--limit must be >= 1, got {limit}")

    subset = dataset
    if limit is not None and limit < len(dataset):
        subset = Subset(dataset, ((np.arange(limit) * len(dataset)) // limit).tolist())
    dist = join_process_group("gloo")
    rank, world = dist.rank, dist.world_size
    loader = make_loader(subset, batch_size=batch_size, workers=workers, distributed=world > 1, pad_shards=False)
    track = (progress or SILENT) if rank == 0 else SILENT

    correct1 = correct5 = seen = non_finite = 0
    use_top5: bool | None = None
    predictions: list[np.ndarray] = []
    start = time.perf_counter()
    for images, labels in track.track(loader, total=len(loader), description=f"eval {Path(name).name}"):
        logits = runner.run(images.numpy())
        if logits.ndim != 2 or logits.shape[0] != len(labels):
            raise DataError(f"{Path(name).name} returned logits of shape {logits.shape} for a batch of {len(labels)}: not a classifier?")
        if use_top5 is None:
            model_classes = logits.shape[1]
            _check_classes(model_classes, dataset, Path(name).name)
            use_top5 = model_classes >= TOP5
        y = labels.numpy()
        if int(y.max()) >= logits.shape[1]:
            raise DataError(f"{Path(name).name} predicts {logits.shape[1]} classes but a label is {int(y.max())}: wrong model or data?")
        top1 = top1_predictions(logits)
        non_finite += int((top1 < 0).sum())
        predictions.append(top1)
        correct1 += int((top1 == y).sum())
        if use_top5:
            correct5 += topk_correct(logits, y, TOP5)
        seen += len(y)
    seconds = time.perf_counter() - start
    report = loader.report
    skipped = report.skipped
    if world > 1:
        seen, correct1, correct5, skipped, flag5, non_finite = (
            int(v) for v in all_reduce([seen, correct1, correct5, skipped, int(bool(use_top5)), non_finite], "sum"))
        use_top5 = flag5 > 0
        (seconds,) = all_reduce([seconds], "max")
    if seen == 0:
        raise DataError(f"no readable images in {dataset.root} ({skipped} unreadable): nothing to evaluate")
    return EvalResult(
        model=name,
        model_kind=info.model_kind,
        backend=backend_label(runner),
        device=info.device,
        data=str(dataset.root),
        data_kind=dataset.kind,
        images=seen,
        skipped_corrupt=skipped,
        correct1=correct1,
        correct5=correct5 if use_top5 else None,
        top1=100.0 * correct1 / seen,
        top5=100.0 * correct5 / seen if use_top5 else None,
        num_classes=model_classes,
        seconds=seconds,
        images_per_second=seen / seconds if seconds > 0 else float("inf"),
        world_size=world,
        precision=info.precision,
        options={k: v for k, v in info.options.items() if v is not None}, warning=info.warning,
        skipped_files=report.skipped_files,
        non_finite=non_finite,
        predictions=np.concatenate(predictions) if world == 1 and predictions else None,
    )


def evaluate(model_path: str | os.PathLike[str], data: str | os.PathLike[str] | ImageDataset,
             labels: str | os.PathLike[str] | None = None, backend: str | None = None, **options) -> EvalResult:
    """Top-1/top-5 of the model at ``model_path`` on ``data`` (options: those of :func:`evaluate_models`).

    ``data`` is a path (opened with ``labels`` and ``preprocess``, default: the model's own
    input size and preprocessing rule) or an already opened :class:`ImageDataset` (its own labels
    and preprocessing are used), so several models can be compared on one data set.

    The runtime comes from the file (``.onnx`` -> ONNX Runtime, ``.engine``/``.plan`` ->
    TensorRT, else torch) unless ``backend`` says; ``device`` None means cpu, or cuda for
    TensorRT. Labels are required.
    """
    return evaluate_models([model_path], data, labels, backend, **options)[0]


def _evaluate_opened(model_path, dataset: ImageDataset, backend: str | None, batch_size: int, workers: int,
                     device: str | None, limit: int | None, progress: Progress | None, threads: int | None) -> EvalResult:
    from maxq_deploy.runtimes.select import open_runner

    if not dataset.has_labels:
        raise DataError(f"{dataset.root} has no labels ({dataset.kind} data); evaluation needs labelled data")
    dist = join_process_group("gloo")
    if dist.enabled and device == "cuda":
        device = f"cuda:{dist.local_rank}"
    runner = open_runner(model_path, backend=backend, device=device, threads=threads)
    try:
        return evaluate_runner(runner, dataset, batch_size, workers, limit, progress, model_name=str(model_path))
    finally:
        runner.close()


def _open_eval_data(model_path, data, labels, preprocess: Preprocess | None) -> ImageDataset:
    """``data`` opened with ``preprocess``, else with the model's own input size and preprocessing rule."""
    if isinstance(data, ImageDataset):
        return data
    if preprocess is None:
        from maxq_deploy.load.input_size import artifact_input_size

        found = artifact_input_size(model_path)
        preprocess = found.preprocess(found.resolve(None, "the model's input size"))
    return open_dataset(data, labels, preprocess, require_labels=True)


def evaluate_models(
    model_paths: list[str | os.PathLike[str]], data: str | os.PathLike[str] | ImageDataset,
    labels: str | os.PathLike[str] | None = None, backends: str | None = None, preprocess: Preprocess | None = None,
    batch_size: int = 32, workers: int = 2, device: str | None = None, limit: int | None = None,
    progress: Progress | None = None, *, threads: int | None = None,
) -> list[EvalResult]:
    """Every model on every backend of ``backends`` (comma-separated; None: each file's own), on the same images.

    The data set is opened once; the results come in (model, backend) order, so the first is the
    reference that the others' prediction agreement is measured against.
    """
    from maxq_deploy.core.devices import check_threads
    from maxq_deploy.runtimes.backends import backend_pairs, parse_backend_list

    check_threads(threads)
    if not model_paths:
        raise DataError("no models given; pass one or more checkpoints, ONNX models or engines")
    specs = parse_backend_list(backends)
    pairs = backend_pairs(model_paths, specs) if specs else [(model, None) for model in model_paths]
    dataset = _open_eval_data(model_paths[0], data, labels, preprocess)
    return [
        _evaluate_opened(model, dataset, spec.label if spec else None, batch_size, workers, device, limit, progress, threads)
        for model, spec in pairs
    ]
