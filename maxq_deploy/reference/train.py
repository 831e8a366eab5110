"""Train small MaxQ networks with the reference layers, and the digits data set they learn.

MaxQ's recipe in miniature: SGD with a cosine learning rate while the masks are refreshed from
the current weights, with a share of N:M groups kept dense that decays to zero (incremental
sparsity). The schedule ends before the last epoch, so the saved network is fully N:M and folds
without ``--project``. Used by the tests, the demo and the examples: a real accuracy on real
data, made in seconds on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.reference.checkpoints import build_reference_model, make_checkpoint, save_checkpoint, set_preserve_rate
from maxq_deploy.reference.layers import preserve_rate

#: Per-channel statistics of the upscaled digits (grey values scaled to [0, 1]); what the
#: ``.npz`` files are normalized with.
DIGITS_MEAN = 0.3053
DIGITS_STD = 0.3236



@dataclass
class EpochLog:
    epoch: int
    lr: float
    dense_rate: float  # share of N:M groups still dense during this epoch
    loss: float
    train_top1: float
    val_top1: float | None = None


@dataclass
class TrainResult:
    """What :func:`train_reference` did, epoch by epoch."""

    epochs: list[EpochLog] = field(default_factory=list)

    @property
    def final_val_top1(self) -> float | None:
        return self.epochs[-1].val_top1 if self.epochs else None


def sparsity_schedule_end(epochs: int) -> int:
    """Epoch at which every group is N:M: the last epoch trains with the final masks."""
    return max(epochs - 1, 0)


@torch.no_grad()
def accuracy(model: nn.Module, loader: Iterable, device: str | torch.device = "cpu") -> float:
    """Top-1 in percent of ``model`` (switched to eval mode and back)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for images, labels in loader:
        logits = model(images.to(device))
        correct += int((logits.argmax(1).cpu() == labels).sum())
        total += int(labels.numel())
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


def train_reference(
    model: nn.Module,
    loader: Iterable,
    epochs: int,
    lr: float = 0.05,
    *,
    momentum: float = 0.9,
    weight_decay: float = 5e-5,
    sparsity_start: float = 0.0,
    sparsity_end: float | None = None,
    schedule: str = "cos",
    val_loader: Iterable | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> TrainResult:
    """Train a reference MaxQ network in place with incremental N:M sparsity.

    At the start of every epoch the masks are recomputed from the weights with the dense share
    ``preserve_rate(epoch, sparsity_start, sparsity_end)``; ``sparsity_end`` defaults to the
    last epoch, so that epoch trains with fully N:M masks and the result folds as is.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    progress = progress or SILENT
    end = float(sparsity_schedule_end(epochs)) if sparsity_end is None else float(sparsity_end)
    steps_per_epoch = len(loader)  # type: ignore[arg-type]
    total_steps = max(epochs * steps_per_epoch, 1)
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps)))
    result = TrainResult()
    for epoch in range(epochs):
        rate = preserve_rate(epoch, sparsity_start, end, schedule)
        set_preserve_rate(model, rate, seed + epoch)
        epoch_lr = optimizer.param_groups[0]["lr"]
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in progress.track(loader, total=steps_per_epoch, description=f"train epoch {epoch + 1}/{epochs}"):
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * labels.numel()
            correct += int((logits.argmax(1) == labels).sum())
            seen += int(labels.numel())
        log = EpochLog(epoch + 1, epoch_lr, rate, loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1))
        if val_loader is not None:
            log.val_top1 = accuracy(model, val_loader, device)
        result.epochs.append(log)
    # The masks of the last epoch are kept as trained (recomputing them from the final weights
    # could swap kept entries the network was never trained without).
    model.eval()
    return result


# ---------------------------------------------------------------------------------------------
# The digits data set: scikit-learn's 8x8 handwritten digits, upscaled to RGB images.


def digits_arrays(image_size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> dict[str, np.ndarray]:
    """Normalized NCHW float32 train/test arrays of scikit-learn's digits (stratified split)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)  # N,1,8,8 in [0, 1]
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = ((images - DIGITS_MEAN) / DIGITS_STD).expand(-1, 3, -1, -1).contiguous().numpy()
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def save_digits_npz(out_dir: str | os.PathLike[str], image_size: int = 32, test_fraction: float = 0.2, seed: int = 0,
                    prefix: str = "digits") -> tuple[Path, Path]:
    """Write ``<prefix>_train.npz`` and ``<prefix>_test.npz`` (``images`` NCHW float32, ``labels``)."""
    from maxq_deploy.core.files import atomic_output, make_output_folder

    out = Path(out_dir)
    make_output_folder(out)  # one line where it cannot be made (under /proc)
    arrays = digits_arrays(image_size, test_fraction, seed)
    paths = []
    for split in ("train", "test"):
        path = out / f"{prefix}_{split}.npz"
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=arrays[f"x_{split}"], labels=arrays[f"y_{split}"])
        paths.append(path)
    return paths[0], paths[1]


def array_loader(images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle: bool = False, seed: int = 0) -> torch.utils.data.DataLoader:
    """A plain in-memory loader over arrays (training needs no image decoding)."""
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


@dataclass
class TrainedExample:
    """A trained MaxQ network and the data it was trained and tested on: what every built-in example records."""

    workdir: Path
    checkpoint: Path  # MaxQ training checkpoint (upstream layout)
    train_npz: Path
    test_npz: Path
    arch: str
    nm: str
    image_size: int


E = TypeVar("E", bound=TrainedExample)  # DigitsExample, FashionExample


@dataclass
class DigitsExample(TrainedExample):
    """A trained MaxQ network on digits and the data it was trained and tested on."""

    test_top1: float  # of the trained MaxQ network on the held-out split
    history: list[dict]


def prepare_digits_example(
    workdir: str | os.PathLike[str],
    arch: str = "resnet18",
    nm: str = "2:4",
    layer_type: str = "SoftMaxQConv2DBNV2Pro",
    *,
    epochs: int = 3,
    lr: float = 0.02,
    batch_size: int = 64,
    image_size: int = 32,
    seed: int = 0,
    progress: Progress | None = None,
) -> DigitsExample:
    """Train (or reuse, when already made with the same settings) a MaxQ network on digits (see :func:`cached_example`)."""
    config = {"arch": arch, "nm": nm, "layer_type": layer_type, "epochs": epochs, "lr": lr, "batch_size": batch_size,
              "image_size": image_size, "seed": seed, "version": 1}

    def train(out: Path, ckpt_path: Path) -> DigitsExample:
        train_npz, test_npz = save_digits_npz(out, image_size, seed=seed, prefix=f"digits{image_size}")
        with np.load(train_npz) as tr, np.load(test_npz) as te:
            train_loader = array_loader(tr["images"], tr["labels"], batch_size, shuffle=True, seed=seed)
            test = array_loader(te["images"], te["labels"], 256)
            torch.manual_seed(seed)
            model = build_reference_model(arch, 10, nm, layer_type)
            history = train_reference(model, train_loader, epochs, lr, val_loader=test, seed=seed, progress=progress)
        checkpoint = make_checkpoint(arch, nm, layer_type, 10, model=model, epoch=epochs)
        checkpoint["best_acc1"] = torch.tensor(float(history.final_val_top1 or 0.0))
        save_checkpoint(checkpoint, ckpt_path)
        return DigitsExample(out, ckpt_path, train_npz, test_npz, arch, nm, image_size, float(history.final_val_top1 or 0.0),
                             [asdict(e) for e in history.epochs])

    return cached_example(workdir, f"digits_{arch}", config, DigitsExample, train)


_PATH_FIELDS = ("workdir", "checkpoint", "train_npz", "test_npz")


def cached_example(workdir: str | os.PathLike[str], prefix: str, config: dict, kind: type[E],
                   train: Callable[[Path, Path], E]) -> E:
    """The example ``train(out, checkpoint_path)`` makes, or the one it made before with the same ``config``.

    Safe to call from several processes at once (pytest-xdist workers, torchrun ranks): a lock on
    the work folder itself (``flock`` on its descriptor: no lock file is left behind in the user's
    folder) makes one of them train while the others wait and then reuse its files. The example
    is recorded in ``<prefix>_<hash of config>.json`` beside its checkpoint (``.pth.tar``).
    """
    import fcntl

    from maxq_deploy.core.files import atomic_output, make_output_folder

    out = Path(workdir)
    make_output_folder(out)  # one line where it cannot be made (under /proc)
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    info_path = out / f"{prefix}_{key}.json"
    lock = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the descriptor closes, or the process dies
        cached = _read_example(info_path, kind)
        if cached is not None:
            return cached
        example = train(out, info_path.with_suffix(".pth.tar"))
        with atomic_output(info_path) as tmp:
            tmp.write_text(json.dumps(asdict(example), default=str, indent=2))
        return example
    finally:
        os.close(lock)


def _read_example(info_path: Path, kind: type[E]) -> E | None:
    """The example recorded in ``info_path`` if it and all its files are intact, else None."""
    try:
        info = json.loads(info_path.read_text())
        example = kind(**{k: Path(v) if k in _PATH_FIELDS else v for k, v in info.items()})
    except (OSError, ValueError, TypeError):
        return None
    if all(getattr(example, name).is_file() for name in _PATH_FIELDS[1:]):
        return example
    return None
