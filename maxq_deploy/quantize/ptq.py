"""Post-training quantization: calibrate the folded network's ranges, keep its weights, check 2:4 in INT8."""

from __future__ import annotations

import os
import time
from pathlib import Path

from maxq_deploy.core.files import TORCH_SUFFIXES, Output, guard_outputs
from maxq_deploy.data import Preprocess
from maxq_deploy.core.progress import Progress
from maxq_deploy.quantize import pq_adapter
from maxq_deploy.quantize.config import keep_float_layers, split_names
from maxq_deploy.quantize.artifact import read_folded_input
from maxq_deploy.quantize.calibrate import (
    DEFAULT_CALIBRATOR, DEFAULT_PERCENTILE, CalibrationOptions, calibrate, check_classes, check_data_size, model_preprocess, open_data, resolve_device,
    validated_ranges,
)
from maxq_deploy.quantize.result import QuantizeResult, finish_ptq


def quantize_ptq(
    folded_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    calib_data,
    calibrator: str = DEFAULT_CALIBRATOR,
    percentile: float = DEFAULT_PERCENTILE,
    calib_batches: int = 16,
    batch_size: int = 32,
    preprocess: Preprocess | None = None,
    workers: int = 2,
    progress: Progress | None = None,
    *,
    labels: str | os.PathLike[str] | None = None,
    device: str | None = None,
    seed: int = 0,
    keep_float: tuple[str, ...] | list[str] = (),
) -> QuantizeResult:
    """Calibrate INT8 ranges for a folded checkpoint and write a quantized checkpoint.

    ``calib_data`` is a path :func:`maxq_deploy.data.open_dataset` reads (labels not needed) or
    an opened data set. Up to ``calib_batches`` batches of ``batch_size`` images (a seeded
    shuffle) are used. ``keep_float`` names conv layers left without quantizers (float in the
    checkpoint, recorded as ``kept_float``). Nothing is written when any check fails.
    """
    started = time.perf_counter()
    options = CalibrationOptions(calibrator, percentile, calib_batches, batch_size)
    (out,) = guard_outputs([Output(Path(output), TORCH_SUFFIXES, "quantized checkpoint")], [folded_path, calib_data, labels])
    folded, _ = read_folded_input(folded_path)
    kept = keep_float_layers(split_names(keep_float, "--keep-float"), folded)
    pq_adapter.require_pytorch_quantization()
    dataset = open_data(calib_data, model_preprocess(folded, preprocess), "calibration", labels=labels)
    check_classes(dataset, folded.num_classes, "calibration")
    check_data_size(dataset, folded.arch, "calibration")
    target = resolve_device(device)

    model = pq_adapter.build_quant_model(folded.arch, folded.num_classes, options.calibrator)
    pq_adapter.load_weights(model, folded.state_dict)
    pq_adapter.keep_float(model, kept)
    model.to(target)
    stats = calibrate(model, dataset, options, workers=workers, device=target, seed=seed, progress=progress)
    ranges, report = validated_ranges(model)
    notes = [f"{r.name}: {n}" for r in report for n in r.notes]
    return finish_ptq(folded, out, ranges, report, stats, kept, f"pytorch-quantization {pq_adapter.version()}", notes, started)
