"""What ``quantize`` is asked to do, as one typed config validated on creation (torchao style).

``QuantizeConfig(qat=False)`` is post-training quantization (calibration only); ``qat=True`` adds
mask-preserving fine-tuning. Every message names the option, the value received and what is
allowed, so the CLI only builds a config and calls :func:`maxq_deploy.quantize.quantize`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from maxq_deploy.core.errors import DataError, QuantizationError

#: Default activation calibrator: pytorch-quantization's ResNet-50 tutorial recipe.
DEFAULT_CALIBRATOR = "percentile"
DEFAULT_PERCENTILE = 99.99
#: Activation calibrators: per-tensor max, or a range from a histogram of |x|.
HISTOGRAM_METHODS = ("entropy", "mse", "percentile")
CALIBRATORS = ("max", *HISTOGRAM_METHODS)
OPTIMIZERS = ("sgd", "adamw")
#: Quantization backends: pytorch-quantization (the default) and NVIDIA Model Optimizer.
BACKENDS = ("pytorch-quantization", "modelopt")
DEFAULT_BACKEND = "pytorch-quantization"


def _positive_int(value: Any, option: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise QuantizationError(f"{option} must be a positive integer, got {value!r}")


def check_calibration(calibrator: Any, percentile: Any, batches: Any, batch_size: Any) -> tuple[str, float]:
    """Validate the calibration options; returns (calibrator, percentile) normalized."""
    name = str(calibrator).lower()
    if name not in CALIBRATORS:
        raise QuantizationError(f"--calibrator {name!r} is not supported; choose one of {', '.join(CALIBRATORS)}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < float(percentile) <= 100:
        raise QuantizationError(f"--percentile {percentile!r} must be in (0, 100], e.g. 99.99")
    _positive_int(batches, "--calib-batches")
    _positive_int(batch_size, "--batch-size")
    return name, float(percentile)


def split_names(names: Any, option: str) -> tuple[str, ...]:
    """Layer names from a list and/or comma-separated strings, in order, without repeats."""
    if names is None:
        return ()
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise QuantizationError(f"{option} takes layer names (comma-separated), got {names!r}")
    out: list[str] = []
    for item in names:
        out.extend(n.strip() for n in item.split(",") if n.strip() and n.strip() not in out)
    return tuple(out)


def keep_float_layers(names: tuple[str, ...] | list[str], folded) -> list[str]:
    """The ``--keep-float`` names, each a conv layer of ``folded`` (sparse or dense), else one OptionError line."""
    from maxq_deploy.fold import check_layer_names

    known = [layer.name for layer in folded.layers]
    check_layer_names(list(names), known, "--keep-float", what="conv layer")
    return [name for name in known if name in set(names)]


#: The :class:`QuantizeConfig` fields each entry point takes by keyword (its data arguments and
#: ``progress`` apart): ``quantize()`` passes ``config.arguments(entry)``, the one place a config is unpacked.
ENTRY_FIELDS: dict[str, tuple[str, ...]] = {
    "ptq": ("calibrator", "percentile", "calib_batches", "batch_size", "preprocess", "workers", "device", "seed", "keep_float"),
    "modelopt": ("calibrator", "percentile", "calib_batches", "batch_size", "preprocess", "workers", "device", "seed", "keep_float"),
    "qat": ("epochs", "lr", "optimizer", "momentum", "weight_decay", "batch_size", "train_batches", "calib_data", "calibrator",
            "percentile", "calib_batches", "preprocess", "workers", "seed", "device", "distributed", "keep_float", "backend"),
}


@dataclass
class QuantizeConfig:
    """INT8 quantization of a folded checkpoint.

    Calibration (PTQ and QAT): ``calib_data`` (QAT: defaults to ``train_data``), ``calibrator``,
    ``percentile``, ``calib_batches`` of ``batch_size``. QAT (``qat=True``): labelled
    ``train_data``, optional labelled ``val_data`` (selects the best epoch), ``epochs``, ``lr``,
    ``optimizer``, ``momentum``, ``weight_decay``, ``train_batches`` per epoch, ``distributed``
    (None: under torchrun). ``backend``: ``pytorch-quantization`` or ``modelopt`` (NVIDIA Model
    Optimizer: PTQ and QAT, every calibrator; its histogram methods are ModelOpt's own). ``preprocess`` is a :class:`maxq_deploy.data.Preprocess` or None.
    ``keep_float``: conv layers left without quantizers (they run float; names checked against
    the folded checkpoint by :func:`keep_float_layers`).
    """

    qat: bool = False
    calib_data: str | os.PathLike[str] | Any | None = None
    calibrator: str = DEFAULT_CALIBRATOR
    percentile: float = DEFAULT_PERCENTILE
    calib_batches: int = 16
    batch_size: int = 32
    preprocess: Any = None
    workers: int = 2
    device: str | None = None
    seed: int = 0
    train_data: str | os.PathLike[str] | Any | None = None
    val_data: str | os.PathLike[str] | Any | None = None
    epochs: int = 1
    lr: float = 1e-4
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    train_batches: int | None = None
    distributed: bool | None = None
    keep_float: tuple[str, ...] = ()
    backend: str = DEFAULT_BACKEND

    def arguments(self, entry: str) -> dict[str, Any]:
        """The keyword arguments of entry point ``entry`` (a key of :data:`ENTRY_FIELDS`)."""
        return {name: getattr(self, name) for name in ENTRY_FIELDS[entry]}

    def __post_init__(self) -> None:
        self.keep_float = split_names(self.keep_float, "--keep-float")
        self.backend = str(self.backend or DEFAULT_BACKEND).lower()
        if self.backend not in BACKENDS:
            raise QuantizationError(f"--backend {self.backend!r} is not supported; choose one of {', '.join(BACKENDS)}")
        self.calibrator, self.percentile = check_calibration(self.calibrator, self.percentile, self.calib_batches, self.batch_size)
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise QuantizationError(f"--workers must be an integer >= 0, got {self.workers!r}")
        if not self.qat:
            if self.train_data is not None or self.val_data is not None:
                raise DataError("--train-data/--val-data are for --qat; PTQ only needs --calib")
            return
        if self.train_data is None:
            raise DataError("--qat needs labelled training images: pass --train-data DATA")
        _positive_int(self.epochs, "--epochs")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise QuantizationError(f"--lr must be a positive number, got {self.lr!r} (QAT fine-tunes: 1e-4 .. 1e-3 is typical)")
        self.optimizer = str(self.optimizer).lower()
        if self.optimizer not in OPTIMIZERS:
            raise QuantizationError(f"--optimizer {self.optimizer!r} is not supported; choose one of {', '.join(OPTIMIZERS)}")
        if not isinstance(self.momentum, (int, float)) or not 0 <= self.momentum < 1:
            raise QuantizationError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not isinstance(self.weight_decay, (int, float)) or not self.weight_decay >= 0:
            raise QuantizationError(f"weight decay must be >= 0, got {self.weight_decay!r}")
        if self.train_batches is not None:
            _positive_int(self.train_batches, "--train-batches")

    @property
    def mode(self) -> str:
        return "qat" if self.qat else "ptq"
