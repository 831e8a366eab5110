"""``quantize --backend modelopt``: PTQ with NVIDIA Model Optimizer into the same quantized checkpoint.

Same inputs, data checks, range checks, INT8 2:4 check and checkpoint as the pytorch-quantization
PTQ (:mod:`maxq_deploy.quantize.ptq`); only the calibration runs in ModelOpt
(:mod:`maxq_deploy.quantize.mo_adapter`). Max calibration (ModelOpt's ``algorithm="max"``) for
weights (per channel) and activations; the network input is max-calibrated as in the default
backend. The ranges must fill exactly the quantizer slots of the frozen network every later
stage builds (:func:`maxq_deploy.quantize.frozen.frozen_skeleton`); a slot ModelOpt left empty
is named.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import torch

from maxq_deploy.core.errors import QuantizationError
from maxq_deploy.core.files import TORCH_SUFFIXES, Output, atomic_output, guard_outputs, provenance
from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.quantize import mo_adapter
from maxq_deploy.quantize.artifact import check_int8_layers, read_folded_input
from maxq_deploy.quantize.calibrate import (
    ZERO_CHANNEL_AMAX, CalibrationOptions, CalibrationStats, QuantizerRange, check_calibration_size, check_classes,
    check_data_size, open_data, resolve_device,
)
from maxq_deploy.quantize.result import QuantizeResult, assert_pattern_kept, checkpoint_dict

#: What this backend offers here (ModelOpt's histogram calibrators are not wired up yet).
MODELOPT_CALIBRATORS = ("max",)


def quantize_ptq_modelopt(folded_path, output, calib_data, calibrator: str = "max", calib_batches: int = 16,
                          batch_size: int = 32, preprocess=None, workers: int = 2, progress: Progress | None = None, *,
                          device: str | None = None, seed: int = 0) -> QuantizeResult:
    """Calibrate INT8 ranges of a folded checkpoint with ModelOpt and write a quantized checkpoint."""
    from maxq_deploy.data import make_loader
    from maxq_deploy.quantize.frozen import frozen_skeleton, quantizer_names
    from maxq_deploy.quantize.pool_quant import is_pool_quantizer

    started = time.perf_counter()
    if str(calibrator).lower() not in MODELOPT_CALIBRATORS:
        raise QuantizationError(
            f"--backend modelopt --calibrator {calibrator}: only {', '.join(MODELOPT_CALIBRATORS)} is implemented for ModelOpt; "
            "use --calibrator max, or the default backend (pytorch-quantization) for entropy, mse, percentile"
        )
    options = CalibrationOptions("max", 99.99, calib_batches, batch_size)
    (out,) = guard_outputs([Output(Path(output), TORCH_SUFFIXES, "quantized checkpoint")], [folded_path, calib_data])
    folded, _ = read_folded_input(folded_path)
    mo_adapter.require_modelopt()
    dataset = open_data(calib_data, preprocess, "calibration")
    check_classes(dataset, folded.num_classes, "calibration")
    check_data_size(dataset, folded.arch, "calibration")
    check_calibration_size(dataset, options)
    target = resolve_device(device)
    loader = make_loader(dataset, options.batch_size, workers, shuffle=True, seed=seed)
    batches = min(options.batches, len(loader))
    seen = [0]

    def forward_loop(model) -> None:
        for images, _ in (progress or SILENT).track(itertools.islice(loader, batches), total=batches, description="calibrate (modelopt max)"):
            model(images.to(target))
            seen[0] += int(images.shape[0])

    model = mo_adapter.build_model(folded.arch, folded.num_classes, folded.state_dict).to(target)
    t0 = time.perf_counter()
    with torch.no_grad():
        model = mo_adapter.quantize_and_calibrate(model, forward_loop)
    collect_seconds = time.perf_counter() - t0
    check_calibration_size(dataset, options, seen=seen[0], skipped=loader.report.skipped)

    found = mo_adapter.ranges_of(model)
    slots = quantizer_names(frozen_skeleton(folded.arch, folded.num_classes))
    notes: list[str] = []
    ranges: dict[str, torch.Tensor] = {}
    report: list[QuantizerRange] = []
    for name in slots:
        amax = found.get(name)
        if amax is None:
            if is_pool_quantizer(name):
                notes.append(f"{name}: ModelOpt did not quantize this pooling input; it stays float")
                continue
            raise QuantizationError(f"ModelOpt left {name} unquantized (layer {name.rpartition('.')[0]}); "
                                    "this tool's INT8 scheme needs it: use the default backend for this model")
        role = "weight" if name.endswith("._weight_quantizer") else "residual" if name.endswith("residual_quantizer") else "input"
        if not bool(torch.isfinite(amax).all()):
            raise QuantizationError(f"quantizer {name} ({role}) got a non-finite range from ModelOpt; check the data/checkpoint")
        quantizer_notes = []
        if bool((amax <= 0).any()):
            if role != "weight":
                raise QuantizationError(f"quantizer {name} ({role}) got a zero range: every calibration value it saw is 0")
            quantizer_notes.append(f"{int((amax <= 0).sum())} all-zero output channel(s) given range {ZERO_CHANNEL_AMAX}")
            amax = torch.where(amax > 0, amax, torch.full_like(amax, ZERO_CHANNEL_AMAX))
        ranges[name] = amax
        report.append(QuantizerRange(name, role, int(amax.numel()), float(amax.min()), float(amax.max()), quantizer_notes))
    checks = check_int8_layers(folded.layers, folded.state_dict, ranges)
    assert_pattern_kept(checks)
    stats = CalibrationStats(
        method="max", percentile=None, batches=batches, images=seen[0], histogram_samples=None,
        skipped_unreadable=loader.report.skipped, collect_seconds=round(collect_seconds, 3), ranges_seconds=0.0,
        max_calibrated_inputs=[], input_size=int(dataset.sample_shape[-1]),
    )
    backend = f"nvidia-modelopt {mo_adapter.version()}"
    ckpt = checkpoint_dict(folded, folded.state_dict, ranges, stats, checks, provenance(folded.path), backend)
    with atomic_output(out) as tmp:
        torch.save(ckpt, tmp)
    notes += [f"{r.name}: {n}" for r in report for n in r.notes]
    if loader.report.skipped:
        notes.append(f"{loader.report.skipped} unreadable calibration image(s) skipped")
    return QuantizeResult(
        output=Path(out), written=True, source=folded.path, mode="ptq", arch=folded.arch, num_classes=folded.num_classes,
        nm=folded.nm, backend=backend, calibration=stats, quantizers=report, layers=checks,
        seconds=round(time.perf_counter() - started, 3), notes=notes,
    )
