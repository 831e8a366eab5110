"""The second built-in example: a small MaxQ network trained on Fashion-MNIST (real data, 10 classes).

Fashion-MNIST comes from Debian (``apt-get install dataset-fashion-mnist``, IDX files under
``/usr/share/datasets/fashion-mnist/``). Grey 28x28 images are padded to 32x32 (2 black pixels
a side: the images already have a black border, so nothing is resampled), normalized with the
training set's mean and standard deviation and replicated to 3 channels. The training split
can be limited (``train_limit``, spread evenly over the 60,000 images) to keep the training to
a few minutes on 2 CPU cores; the test split is always the full 10,000 images.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from maxq_deploy.core.errors import OptionError
from maxq_deploy.core.progress import Progress
from maxq_deploy.data.idx import FASHION_MEAN, FASHION_STD, fashion_mnist_files, read_idx, read_idx_labels
from maxq_deploy.reference.checkpoints import build_reference_model, make_checkpoint, save_checkpoint
from maxq_deploy.reference.train import TrainedExample, accuracy, array_loader, cached_example, train_reference

#: Training images the demo uses by default (spread evenly over the 60,000): a few minutes on 2 cores.
DEFAULT_TRAIN_LIMIT = 12000
FASHION_TRAIN_IMAGES = 60000


def fashion_arrays(images: np.ndarray, image_size: int = 32) -> np.ndarray:
    """uint8 N x 28 x 28 -> normalized float32 N x 3 x S x S (zero-padded grey, replicated)."""
    pad = image_size - images.shape[-1]
    if pad < 0 or pad % 2:
        raise OptionError(f"image size {image_size} must be 28 + an even number of pixels for Fashion-MNIST")
    x = images.astype(np.float32) / 255.0
    x = np.pad(x, ((0, 0), (pad // 2, pad // 2), (pad // 2, pad // 2)))
    x = (x - FASHION_MEAN) / FASHION_STD
    return np.ascontiguousarray(np.repeat(x[:, None], 3, axis=1))


def evenly(count: int, limit: int | None) -> np.ndarray:
    """``limit`` indices spread evenly over ``count`` (all of them when ``limit`` is None or larger)."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.linspace(0, count - 1, limit).round().astype(np.int64)


def save_fashion_npz(out_dir: str | os.PathLike[str], image_size: int = 32, train_limit: int | None = None,
                     root: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """``fashion<S>_train[_<N>].npz`` (``train_limit`` images) and ``fashion<S>_test.npz`` (all 10,000)."""
    from maxq_deploy.core.files import atomic_output, make_output_folder

    files = fashion_mnist_files(root)
    out = Path(out_dir)
    make_output_folder(out)  # one line where it cannot be made (under /proc)
    paths = []
    for split, limit in (("train", train_limit), ("test", None)):
        images = read_idx(files[f"{split}_images"], 3, "images")
        labels = read_idx_labels(files[f"{split}_labels"], len(images), str(files[f"{split}_images"]))
        keep = evenly(len(images), limit)
        suffix = f"_{len(keep)}" if split == "train" and len(keep) < len(images) else ""
        path = out / f"fashion{image_size}_{split}{suffix}.npz"
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, images=fashion_arrays(images[keep], image_size), labels=labels[keep].astype(np.int64))
        paths.append(path)
    return paths[0], paths[1]


@dataclass
class FashionExample(TrainedExample):
    """A trained MaxQ network on Fashion-MNIST and the data it was trained and tested on."""

    train_images: int
    test_top1: float  # of the trained MaxQ network on the 10,000 test images
    train_seconds: float
    history: list[dict]


def prepare_fashion_example(
    workdir: str | os.PathLike[str], arch: str = "resnet18", nm: str = "2:4", layer_type: str = "SoftMaxQConv2DBNV2Pro", *,
    epochs: int = 3, lr: float = 0.05, batch_size: int = 128, image_size: int = 32, train_limit: int | None = DEFAULT_TRAIN_LIMIT,
    seed: int = 0, root: str | os.PathLike[str] | None = None, progress: Progress | None = None,
) -> FashionExample:
    """Train (or reuse, when made with the same settings) a MaxQ network on Fashion-MNIST.

    The data set is looked for first (one :class:`DataError` line with the install hint when it
    is absent), before anything is written.
    """
    if train_limit is not None and (isinstance(train_limit, bool) or not isinstance(train_limit, int)
                                   or not batch_size <= train_limit <= FASHION_TRAIN_IMAGES):
        raise OptionError(f"--train-images must be a whole number from {batch_size} to {FASHION_TRAIN_IMAGES}, got {train_limit!r}")
    fashion_mnist_files(root)
    config = {"arch": arch, "nm": nm, "layer_type": layer_type, "epochs": epochs, "lr": lr, "batch_size": batch_size,
              "image_size": image_size, "train_limit": train_limit, "seed": seed, "version": 2}

    def train(out: Path, ckpt_path: Path) -> FashionExample:
        train_npz, test_npz = save_fashion_npz(out, image_size, train_limit, root)
        started = time.perf_counter()
        with np.load(train_npz) as tr, np.load(test_npz) as te:
            train_loader = array_loader(tr["images"], tr["labels"], batch_size, shuffle=True, seed=seed)
            torch.manual_seed(seed)
            model = build_reference_model(arch, 10, nm, layer_type)
            history = train_reference(model, train_loader, epochs, lr, seed=seed, progress=progress)
            # one test pass at the end, not one per epoch: 10,000 images cost as much as a training epoch of 3,000
            test_top1 = accuracy(model, array_loader(te["images"], te["labels"], 500))
            history.epochs[-1].val_top1 = test_top1
            n_train = len(tr["labels"])
        checkpoint = make_checkpoint(arch, nm, layer_type, 10, model=model, epoch=epochs)
        checkpoint["best_acc1"] = torch.tensor(float(test_top1))
        save_checkpoint(checkpoint, ckpt_path)
        return FashionExample(out, ckpt_path, train_npz, test_npz, arch, nm, image_size, n_train, float(test_top1),
                              round(time.perf_counter() - started, 1), [asdict(e) for e in history.epochs])

    return cached_example(workdir, f"fashion_{arch}_{nm.replace(':', 'of')}", config, FashionExample, train)
