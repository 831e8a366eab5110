"""Calibration: options, data checks, the collection loop and validated ranges (PTQ and QAT share it)."""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from maxq_deploy.core.devices import resolve_device  # noqa: F401  (PTQ and QAT pick their device here)
from maxq_deploy.core.errors import DataError, QuantizationError
from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.quantize import pq_adapter
from maxq_deploy.quantize.config import DEFAULT_CALIBRATOR, DEFAULT_PERCENTILE, check_calibration

#: Fewer images than this give ranges that describe the images, not the data.
MIN_CALIBRATION_IMAGES = 16
#: A weight channel that is entirely zero gets this range (its INT8 values are 0 whatever it is);
#: a zero scale would make QuantizeLinear divide by zero.
ZERO_CHANNEL_AMAX = 1.0


@dataclass
class CalibrationOptions:
    """How to calibrate; validated on creation, each message naming the option and what is allowed."""

    calibrator: str = DEFAULT_CALIBRATOR
    percentile: float = DEFAULT_PERCENTILE
    batches: int = 16
    batch_size: int = 32
    #: Values a histogram calibrator bins per tensor and batch (None: every value); see
    #: :data:`pq_adapter.HISTOGRAM_SAMPLES`.
    histogram_samples: int | None = pq_adapter.HISTOGRAM_SAMPLES

    def __post_init__(self) -> None:
        self.calibrator, self.percentile = check_calibration(self.calibrator, self.percentile, self.batches, self.batch_size)
        if self.batches * self.batch_size < self.min_images:
            raise QuantizationError(
                f"--calib-batches {self.batches} x --batch-size {self.batch_size} = {self.batches * self.batch_size} images, "
                f"fewer than the {self.min_images} calibration needs: raise --calib-batches"
            )
        samples = self.histogram_samples
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1024):
            raise QuantizationError(f"histogram_samples must be None (every value) or an integer >= 1024, got {samples!r}")

    @property
    def min_images(self) -> int:
        return max(MIN_CALIBRATION_IMAGES, self.batch_size)


@dataclass
class CalibrationStats:
    """What calibration saw and how long it took."""

    method: str
    percentile: float | None
    batches: int
    images: int
    histogram_samples: int | None  # per tensor and batch (None: every value)
    skipped_unreadable: int
    collect_seconds: float
    ranges_seconds: float
    #: Quantizers of the network input, always calibrated by max: preprocessed pixels come from
    #: 8-bit images that INT8 holds almost losslessly at full range, while a histogram method can
    #: clip the image's bright tail (the strokes of a digit, the highlights of a photo).
    max_calibrated_inputs: list[str] = field(default_factory=list)
    #: Square input size the ranges were calibrated at; export defaults to it.
    input_size: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QuantizerRange:
    """One quantizer's calibrated range."""

    name: str
    role: str  # "input", "weight" or "residual"
    channels: int  # 1 per tensor, else per channel
    amax_min: float
    amax_max: float
    notes: list[str] = field(default_factory=list)


def model_preprocess(folded, preprocess=None):
    """``preprocess``, else the one rule for the folded model's architecture at its recorded input size."""
    if preprocess is not None:
        return preprocess
    from maxq_deploy.load.input_size import preprocess_for, resolve_input_size

    return preprocess_for(folded.arch, resolve_input_size(folded.arch, folded.meta))


def open_data(data, preprocess, what: str, labels=None, require_labels: bool = False):
    """An ImageDataset from a path (or the data set itself), with errors that say which data."""
    from maxq_deploy.data import ImageDataset, open_dataset

    if data is None:
        hint = "--calib DATA (a few hundred representative images)" if what == "calibration" else f"--{what}-data DATA"
        raise DataError(f"no {what} data given: pass {hint}")
    if isinstance(data, ImageDataset):
        dataset = data
    else:
        dataset = open_dataset(data, labels, preprocess, require_labels=require_labels,
                               labels_option=False)  # quantize has no --labels: hints name the data layouts only
    if require_labels and not dataset.has_labels:
        raise DataError(f"{what} data {dataset.root} has no labels ({dataset.kind}); {what} needs labelled images")
    if len(dataset) == 0:
        raise DataError(f"{what} data {dataset.root} holds no images")
    c = dataset.sample_shape[0]
    if c != 3:
        raise DataError(f"{what} data {dataset.root} has {c}-channel samples; the models take 3-channel (RGB) NCHW input")
    return dataset


def check_calibration_size(dataset, options: CalibrationOptions, seen: int | None = None, skipped: int = 0) -> None:
    """Refuse calibration on fewer images than a batch, or than :data:`MIN_CALIBRATION_IMAGES`.

    After the pass (``seen`` given) the message counts what was read: ``seen`` readable and
    ``skipped`` unreadable of the data set's ``len(dataset)`` images.
    """
    count = len(dataset) if seen is None else seen
    if count < options.min_images:
        if seen is None:
            found = f"has {count} image(s)"
        else:
            found = (f"gave {seen} readable image(s) in the {seen + skipped} read"
                     + (f" ({skipped} unreadable)" if skipped else "") + f" of its {len(dataset)}")
        raise DataError(
            f"calibration data {dataset.root} {found}; at least {options.min_images} are needed "
            f"(one batch of --batch-size {options.batch_size} and at least {MIN_CALIBRATION_IMAGES}): pass more images"
            + (" or a smaller --batch-size" if options.batch_size > MIN_CALIBRATION_IMAGES else "")
        )


def check_data_size(dataset, arch: str, what: str) -> int:
    """The square input size of ``dataset``'s samples, refused (one line) where ``arch`` cannot run at it."""
    from maxq_deploy.archs.catalog import check_input_size

    _, h, w = dataset.sample_shape
    if h != w:
        raise DataError(f"{what} data {dataset.root} holds {h}x{w} samples; the models take square inputs")
    return check_input_size(arch, int(h), what=f"{what} data")


def check_classes(dataset, num_classes: int, what: str) -> None:
    found = dataset.num_classes if dataset.has_labels else None
    if found is not None and found > num_classes:
        raise DataError(f"{what} data {dataset.root} has labels up to {found - 1} but the model has {num_classes} classes")


@torch.no_grad()
def calibrate(model: nn.Module, dataset, options: CalibrationOptions, *, workers: int = 2, device: str | torch.device = "cpu",
              seed: int = 0, progress: Progress | None = None) -> CalibrationStats:
    """Calibrate every quantizer of ``model`` in place: weights by max, activations by ``options``.

    The batches are a seeded shuffle of the data, so an ImageFolder tree sorted by class still
    calibrates on all classes.
    """
    from maxq_deploy.data import make_loader

    progress = progress or SILENT
    check_calibration_size(dataset, options)
    pq_adapter.set_histogram_samples(model, options.histogram_samples)
    pq_adapter.calibrate_weights(model)
    loader = make_loader(dataset, options.batch_size, workers, shuffle=True, seed=seed)
    batches = min(options.batches, len(loader))
    model.eval()
    started = time.perf_counter()
    seen = 0
    input_quantizers: list[str] = []
    with pq_adapter.collecting_activation_statistics(model):
        for index, (images, _) in enumerate(
            progress.track(itertools.islice(loader, batches), total=batches, description=f"calibrate ({options.calibrator})")
        ):
            x = images.to(device, non_blocking=True)
            if index == 0:
                with pq_adapter.watching_inputs(model, x) as sharing:
                    model(x)
                pq_adapter.share_calibrators(model, sharing)
                input_quantizers = sharing.network_input
                if options.calibrator != "max":
                    pq_adapter.switch_to_max_calibrator(model, input_quantizers, x)
            else:
                model(x)
            seen += int(images.shape[0])
    collect_seconds = time.perf_counter() - started
    check_calibration_size(dataset, options, seen=seen, skipped=loader.report.skipped)
    started = time.perf_counter()
    pq_adapter.load_activation_amax(model, options.calibrator, options.percentile, progress=progress)
    model.to(device)  # ranges computed on the host join the model's device
    ranges_seconds = time.perf_counter() - started
    return CalibrationStats(
        method=options.calibrator, percentile=options.percentile if options.calibrator == "percentile" else None,
        batches=batches, images=seen, histogram_samples=options.histogram_samples if options.calibrator != "max" else None, skipped_unreadable=loader.report.skipped,
        collect_seconds=round(collect_seconds, 3), ranges_seconds=round(ranges_seconds, 3),
        max_calibrated_inputs=input_quantizers if options.calibrator != "max" else [],
        input_size=int(dataset.sample_shape[-1]),
    )


def validated_ranges(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[QuantizerRange]]:
    """Every quantizer's range (CPU), checked: finite and positive, else QuantizationError naming it.

    All-zero weight channels get :data:`ZERO_CHANNEL_AMAX` (their INT8 values are 0 anyway).
    """
    ranges: dict[str, torch.Tensor] = {}
    report: list[QuantizerRange] = []
    for name, quantizer in pq_adapter.quantizers(model).items():
        role = pq_adapter.quantizer_role(name)
        amax = pq_adapter.amax_of(quantizer)
        if amax is None or amax.numel() == 0:
            raise QuantizationError(f"quantizer {name} has no range after calibration (it saw no data); this is a bug if calibration ran")
        amax = amax.float().cpu()
        notes = []
        if not bool(torch.isfinite(amax).all()):
            raise QuantizationError(
                f"quantizer {name} ({role}) got a non-finite range ({_describe(amax)}) from calibration: the "
                f"{'weights contain NaN/Inf (a damaged checkpoint?)' if role == 'weight' else 'activations overflowed or the calibrator saw no data'}"
                "; check the input data/checkpoint or try another --calibrator"
            )
        if role == "weight" and bool((amax <= 0).any()):
            zero = int((amax <= 0).sum())
            amax = torch.where(amax > 0, amax, torch.full_like(amax, ZERO_CHANNEL_AMAX))
            pq_adapter.set_amax(quantizer, amax.to(quantizer._amax.device))
            notes.append(f"{zero} all-zero output channel(s) given range {ZERO_CHANNEL_AMAX}")
        elif bool((amax <= 0).any()):
            raise QuantizationError(
                f"quantizer {name} ({role}) got a zero range from calibration: every calibration value it saw "
                "quantizes to 0 (constant or blank images?); use more varied calibration images or --calibrator max"
            )
        ranges[name] = amax
        report.append(QuantizerRange(name, role, int(amax.numel()), float(amax.min()), float(amax.max()), notes))
    return ranges, report


def _describe(amax: torch.Tensor) -> str:
    if amax.numel() == 1:
        return f"amax {float(amax):g}"
    bad = int((~torch.isfinite(amax)).sum())
    return f"{bad} of {amax.numel()} channel ranges not finite"
