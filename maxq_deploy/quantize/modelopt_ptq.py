"""``quantize --backend modelopt``: NVIDIA Model Optimizer PTQ (and QAT's calibration) into the same quantized checkpoint.

Same inputs, data checks, range checks, INT8 2:4 check and checkpoint as the pytorch-quantization
PTQ (:mod:`maxq_deploy.quantize.ptq`); only the calibration runs in ModelOpt
(:mod:`maxq_deploy.quantize.mo_adapter`): weights by max (per channel), activations by ModelOpt's
max or its histogram calibrator (entropy, mse, percentile); the network input is max-calibrated as
in the default backend. The ranges must fill exactly the quantizer slots of the frozen network
every later stage builds (:func:`maxq_deploy.quantize.frozen.frozen_skeleton`); a slot ModelOpt
left empty is named. QAT with ModelOpt is :func:`maxq_deploy.quantize.qat.quantize_qat` with
``backend="modelopt"``: its loop, with :data:`MODELOPT_QAT` as the backend hook.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import torch
from torch import nn

from maxq_deploy.core.errors import QuantizationError
from maxq_deploy.core.files import TORCH_SUFFIXES, Output, guard_outputs
from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.quantize import mo_adapter
from maxq_deploy.quantize.artifact import read_folded_input
from maxq_deploy.quantize.calibrate import (
    ZERO_CHANNEL_AMAX, CalibrationOptions, CalibrationStats, QuantizerRange, check_calibration_size, check_classes,
    check_data_size, model_preprocess, open_data, resolve_device,
)
from maxq_deploy.quantize.config import CALIBRATORS, keep_float_layers, split_names
from maxq_deploy.quantize.result import QuantizeResult, finish_ptq

#: What this backend offers: ModelOpt's max calibration, and its HistogramCalibrator's three methods
#: (mse not on a CPU, see :func:`check_modelopt_calibrator`).
MODELOPT_CALIBRATORS = CALIBRATORS


def check_modelopt_calibrator(calibrator: str, device: torch.device | str) -> None:
    """Refuse ModelOpt's histogram MSE on a CPU in one line.

    Its search quantizes the bin centres with ``fake_tensor_quant``, which on a CPU (ModelOpt 0.47,
    no CUDA extension) returns wrong values for a scalar range, so the search always picks its first
    candidate: 1/16 of the histogram's range (measured on digits: 9.7% top-1 instead of 96.9%).
    """
    if calibrator == "mse" and torch.device(device).type == "cpu":
        raise QuantizationError(
            "--backend modelopt --calibrator mse is refused on a CPU: ModelOpt's histogram MSE search quantizes with "
            "fake_tensor_quant, which returns wrong values on a CPU, and clips every activation to 1/16 of its range; "
            "use --calibrator entropy or percentile, or the default backend (pytorch-quantization) for mse"
        )


def backend_name() -> str:
    return f"nvidia-modelopt {mo_adapter.version()}"


def calibrated_model(folded, dataset, options: CalibrationOptions, kept: list[str], *, workers: int = 2,
                     device: torch.device | str = "cpu", seed: int = 0,
                     progress: Progress | None = None) -> tuple[nn.Module, CalibrationStats]:
    """The folded network with ModelOpt's INT8 quantizers, calibrated on ``dataset`` (``kept`` layers float)."""
    from maxq_deploy.data import make_loader

    check_modelopt_calibrator(options.calibrator, device)
    check_calibration_size(dataset, options)
    loader = make_loader(dataset, options.batch_size, workers, shuffle=True, seed=seed)
    batches = min(options.batches, len(loader))
    seen = [0]

    def forward_loop(model, watch=None) -> None:
        track = (progress or SILENT).track(itertools.islice(loader, batches), total=batches,
                                           description=f"calibrate (modelopt {options.calibrator})")
        for index, (images, _) in enumerate(track):
            x = images.to(device)
            if index == 0 and watch is not None:
                watch(x)
            model(x)
            seen[0] += int(images.shape[0])

    from maxq_deploy.quantize.frozen import frozen_skeleton, quantizer_names

    model = mo_adapter.build_model(folded.arch, folded.num_classes, folded.state_dict)
    model = mo_adapter.quantize_model(model, options.calibrator)
    mo_adapter.keep_float(model, kept)
    # A quantizer this tool's INT8 graph has no slot for (ModelOpt's max-pool input) is switched off, so
    # QAT trains the network that is deployed; checked_ranges names each one.
    model.maxq_left_out = mo_adapter.disable_all_but(model, set(quantizer_names(frozen_skeleton(folded.arch, folded.num_classes))))
    model.to(device).eval()
    t0 = time.perf_counter()
    inputs = mo_adapter.calibrate_model(model, forward_loop, options.calibrator, options.percentile)
    collect_seconds = time.perf_counter() - t0
    check_calibration_size(dataset, options, seen=seen[0], skipped=loader.report.skipped)
    histogram = options.calibrator != "max"
    stats = CalibrationStats(
        method=options.calibrator, percentile=options.percentile if options.calibrator == "percentile" else None,
        batches=batches, images=seen[0], histogram_samples=None, skipped_unreadable=loader.report.skipped,
        collect_seconds=round(collect_seconds, 3), ranges_seconds=0.0, max_calibrated_inputs=inputs if histogram else [],
        input_size=int(dataset.sample_shape[-1]),
    )
    return model.eval(), stats


def checked_ranges(model: nn.Module, folded, kept: list[str]) -> tuple[dict[str, torch.Tensor], list[QuantizerRange], list[str]]:
    """ModelOpt's ranges under this tool's slot names, checked; notes name each layer/slot ModelOpt skipped.

    Every slot of the frozen network must be filled except the pooling input (stays float, noted)
    and the ``kept`` layers' own slots; anything else is one QuantizationError line.
    """
    from maxq_deploy.quantize.frozen import frozen_skeleton, quantizer_names
    from maxq_deploy.quantize.pool_quant import is_pool_quantizer

    found = mo_adapter.ranges_of(model)
    quantized = mo_adapter.quantized_layers(model)
    kept_slots = {f"{name}.{attr}" for name in kept for attr in ("_input_quantizer", "_weight_quantizer")}
    notes: list[str] = []
    ranges: dict[str, torch.Tensor] = {}
    report: list[QuantizerRange] = []
    for name in quantizer_names(frozen_skeleton(folded.arch, folded.num_classes)):
        if name in kept_slots:
            continue
        amax = found.get(name)
        layer = name.rpartition(".")[0]
        if amax is None:
            if is_pool_quantizer(name):
                notes.append(f"{name}: ModelOpt did not quantize this pooling input; it stays float")
                continue
            skipped = "ModelOpt did not convert this layer" if layer not in quantized and not name.endswith("residual_quantizer") else "no range"
            raise QuantizationError(f"ModelOpt left {name} unquantized (layer {layer}: {skipped}); "
                                    "this tool's INT8 scheme needs it: use the default backend for this model")
        role = "weight" if name.endswith("._weight_quantizer") else "residual" if name.endswith("residual_quantizer") else "input"
        if not bool(torch.isfinite(amax).all()):
            raise QuantizationError(f"quantizer {name} ({role}) got a non-finite range from ModelOpt; check the data/checkpoint")
        quantizer_notes = []
        if bool((amax <= 0).any()):
            if role != "weight":
                raise QuantizationError(f"quantizer {name} ({role}) got a zero range: every calibration value it saw is 0; "
                                        "use more varied calibration images or --calibrator max")
            quantizer_notes.append(f"{int((amax <= 0).sum())} all-zero output channel(s) given range {ZERO_CHANNEL_AMAX}")
            amax = torch.where(amax > 0, amax, torch.full_like(amax, ZERO_CHANNEL_AMAX))
            _set_amax(model, name, amax)
        ranges[name] = amax
        report.append(QuantizerRange(name, role, int(amax.numel()), float(amax.min()), float(amax.max()), quantizer_notes))
    notes += [f"{name}: ModelOpt quantizes it, this tool's INT8 graph has no slot for it: disabled (stays float)"
              for name in getattr(model, "maxq_left_out", [])]
    notes += [f"{r.name}: {n}" for r in report for n in r.notes]
    return ranges, report, notes


def _set_amax(model: nn.Module, slot: str, amax: torch.Tensor) -> None:
    """Give ModelOpt's quantizer of ``slot`` the corrected range too, so QAT trains with what is written."""
    owner, _, attr = slot.rpartition(".")
    theirs = {ours: mo for mo, ours in mo_adapter.NAME_MAP.items()}[attr]
    quantizer = model.get_submodule(f"{owner}.{theirs}" if owner else theirs)
    quantizer.amax = amax.to(quantizer.amax.device).reshape(quantizer.amax.shape)


class ModelOptQat:
    """The backend hook :func:`maxq_deploy.quantize.qat.quantize_qat` calls for ``backend="modelopt"``."""

    require = staticmethod(mo_adapter.require_modelopt)
    name = staticmethod(backend_name)
    calibrated_model = staticmethod(calibrated_model)
    range_tensors = staticmethod(mo_adapter.range_tensors)
    checked_ranges = staticmethod(checked_ranges)


MODELOPT_QAT = ModelOptQat()


def quantize_ptq_modelopt(folded_path, output, calib_data, calibrator: str = "max", percentile: float = 99.99,
                          calib_batches: int = 16, batch_size: int = 32, preprocess=None, workers: int = 2,
                          progress: Progress | None = None, *, device: str | None = None, seed: int = 0,
                          keep_float: tuple[str, ...] | list[str] = ()) -> QuantizeResult:
    """Calibrate INT8 ranges of a folded checkpoint with ModelOpt and write a quantized checkpoint."""
    started = time.perf_counter()
    options = CalibrationOptions(calibrator, percentile, calib_batches, batch_size)
    (out,) = guard_outputs([Output(Path(output), TORCH_SUFFIXES, "quantized checkpoint")], [folded_path, calib_data])
    folded, _ = read_folded_input(folded_path)
    kept = keep_float_layers(split_names(keep_float, "--keep-float"), folded)
    mo_adapter.require_modelopt()
    target = resolve_device(device)
    check_modelopt_calibrator(options.calibrator, target)
    dataset = open_data(calib_data, model_preprocess(folded, preprocess), "calibration")
    check_classes(dataset, folded.num_classes, "calibration")
    check_data_size(dataset, folded.arch, "calibration")
    model, stats = calibrated_model(folded, dataset, options, kept, workers=workers, device=target, seed=seed, progress=progress)
    ranges, report, notes = checked_ranges(model, folded, kept)
    return finish_ptq(folded, out, ranges, report, stats, kept, backend_name(), notes, started)
