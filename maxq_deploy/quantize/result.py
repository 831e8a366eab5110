"""What ``quantize`` returns (PTQ and QAT alike) and the checkpoint it writes."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from maxq_deploy.core.files import atomic_output, provenance
from maxq_deploy.load.formats import FORMATS, QUANTIZED_FORMAT
from maxq_deploy.core.errors import PatternViolationError
from maxq_deploy.fold import FoldedCheckpoint
from maxq_deploy.quantize.artifact import Int8LayerCheck, check_int8_layers, layers_to_dicts, refuse_unreadable
from maxq_deploy.quantize.calibrate import CalibrationStats, QuantizerRange
from maxq_deploy.core.sparsity import HARDWARE_PATTERN, PatternTally


@dataclass
class EpochReport:
    epoch: int  # 0 is the calibrated network before fine-tuning
    lr: float
    loss: float | None
    train_top1: float | None
    val_top1: float | None
    seconds: float


@dataclass
class TrainingReport:
    """How QAT fine-tuned the calibrated network while keeping the N:M zeros."""

    epochs: int
    lr: float
    optimizer: str
    batch_size: int  # per process
    world_size: int
    steps: int
    best_epoch: int  # 0: fine-tuning did not beat the calibrated start on the validation data
    selected_by: str  # "val_top1" or "last"
    masked_layers: int
    fixed_zeros: int  # weights held at exactly 0 by the masks
    zeros_reintroduced: int  # masked weights that were non-zero after training (0, or it raises)
    history: list[EpochReport] = field(default_factory=list)


@dataclass
class QuantizeResult(PatternTally):
    """A quantized checkpoint: ranges, the INT8 2:4 check, and (QAT) the fine-tuning record."""

    output: Path
    written: bool  # False on torchrun ranks other than 0
    source: Path
    mode: str  # "ptq" or "qat"
    arch: str
    num_classes: int
    nm: str | None
    backend: str
    calibration: CalibrationStats
    quantizers: list[QuantizerRange]
    layers: list[Int8LayerCheck]
    training: TrainingReport | None = None
    seconds: float = 0.0
    pattern: str = HARDWARE_PATTERN
    notes: list[str] = field(default_factory=list)

    sparse_layers = PatternTally.expected  # what ``quantize`` calls them

    @property
    def kept_float(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.kept_float]

    @property
    def kept_dense(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.kept_dense]

    def summary(self) -> dict:
        """JSON-ready description (what ``quantize --json`` prints)."""
        data = asdict(self)
        data["output"], data["source"] = str(self.output), str(self.source)
        data["sparse_layers"] = len(self.sparse_layers)
        data["sparse_layers_holding_int8_pattern"] = self.holding_layers
        data["pattern_ok"] = self.pattern_ok
        data["kept_float"], data["kept_dense"] = self.kept_float, self.kept_dense
        return data


def assert_pattern_kept(checks: list[Int8LayerCheck]) -> None:
    """INT8 must keep what float had: a layer that held the pattern and lost it is refused."""
    lost = [c for c in checks if c.fp32_holds and not c.holds]
    dropped = [c for c in checks if not c.zeros_kept]
    if lost or dropped:
        bad = (lost or dropped)[0]
        raise PatternViolationError(
            f"INT8 weights of {bad.name} break {HARDWARE_PATTERN} ({bad.violating_groups} of {bad.groups} groups) although "
            "the float weights held it; nothing was written (please report this: zeros must quantize to 0)"
        )


def checkpoint_dict(
    folded: FoldedCheckpoint, state_dict: dict[str, torch.Tensor], ranges: dict[str, torch.Tensor],
    calibration: CalibrationStats, checks: list[Int8LayerCheck], provenance: dict, backend: str,
    training: TrainingReport | None = None, kept_float: list[str] | tuple[str, ...] = (),
) -> dict:
    """The quantized checkpoint: plain data and tensors, loadable with ``weights_only=True``."""
    sparse = [c for c in checks if c.expected_sparse]
    return {
        **FORMATS[QUANTIZED_FORMAT].header(folded.arch, folded.num_classes, folded.nm),
        "precision": "int8",
        "scheme": {
            "weights": "int8 symmetric, per output channel (axis 0), max calibration",
            "activations": f"int8 symmetric, per tensor, {calibration.method} calibration",
            "residual": "residual branch of every skip-connection Add quantized (Conv+Add fuses in INT8)",
            "backend": backend,
        },
        "quantizers": {name: value.detach().clone().contiguous() for name, value in ranges.items()},
        "calibration": calibration.to_dict(),
        "input_size": calibration.input_size or folded.meta.get("input_size"),  # what export/eval/bench default to
        "training": asdict(training) if training is not None else None,
        "int8_pattern": {
            "pattern": HARDWARE_PATTERN,
            "sparse_layers": len(sparse),
            "holding_layers": sum(c.holds for c in sparse),
            "layers": [asdict(c) for c in checks],
        },
        "layers": layers_to_dicts(folded.layers),
        "kept_float": list(kept_float),  # layers without quantizers: float in every graph made from this
        "kept_dense": [layer.name for layer in folded.layers if layer.kept_dense],
        "source_folded": {k: folded.meta.get(k) for k in ("provenance", "projection_drift") if k in folded.meta},
        "provenance": provenance,
        "state_dict": {k: v.detach().cpu().clone().contiguous() for k, v in state_dict.items()},
    }


def checked_int8_layers(folded: FoldedCheckpoint, state_dict: dict[str, torch.Tensor], ranges: dict[str, torch.Tensor],
                        kept_float: list[str]) -> list[Int8LayerCheck]:
    """The INT8 2:4 check of every layer; a layer whose pattern INT8 lost is refused (:func:`assert_pattern_kept`)."""
    checks = check_int8_layers(folded.layers, state_dict, ranges, keep_float=kept_float)
    assert_pattern_kept(checks)
    return checks


def save_quantized(folded: FoldedCheckpoint, out: Path, state_dict: dict[str, torch.Tensor], ranges: dict[str, torch.Tensor],
                   calibration: CalibrationStats, checks: list[Int8LayerCheck], backend: str,
                   training: TrainingReport | None = None, kept_float: list[str] | tuple[str, ...] = ()) -> None:
    """Write the quantized checkpoint atomically, after the reader's check on what is about to be written."""
    ckpt = checkpoint_dict(folded, state_dict, ranges, calibration, checks, provenance(folded.path), backend, training,
                           kept_float=kept_float)
    refuse_unreadable(ckpt, out)
    with atomic_output(out) as tmp:
        torch.save(ckpt, tmp)


def finish_ptq(folded: FoldedCheckpoint, out: Path, ranges: dict[str, torch.Tensor], quantizers: list[QuantizerRange],
               calibration: CalibrationStats, kept_float: list[str], backend: str, notes: list[str], started: float) -> QuantizeResult:
    """The end both PTQ backends share: the INT8 2:4 check, the checkpoint written, the result."""
    checks = checked_int8_layers(folded, folded.state_dict, ranges, kept_float)
    save_quantized(folded, out, folded.state_dict, ranges, calibration, checks, backend, kept_float=kept_float)
    if calibration.skipped_unreadable:
        notes.append(f"{calibration.skipped_unreadable} unreadable calibration image(s) skipped")
    return QuantizeResult(
        output=Path(out), written=True, source=folded.path, mode="ptq", arch=folded.arch, num_classes=folded.num_classes,
        nm=folded.nm, backend=backend, calibration=calibration, quantizers=quantizers, layers=checks,
        seconds=round(time.perf_counter() - started, 3), notes=notes,
    )
