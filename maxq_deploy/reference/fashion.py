"""The second built-in example: a small MaxQ network trained on Fashion-MNIST (real data, 10 classes).

Fashion-MNIST comes from Debian (``apt-get install dataset-fashion-mnist``, IDX files under
``/usr/share/datasets/fashion-mnist/``). Grey 28x28 images are padded to 32x32 (2 black pixels
a side: the images already have a black border, so nothing is resampled), normalized with the
training set's mean and standard deviation and replicated to 3 channels. The training split
can be limited (``train_limit``, spread evenly over the 60,000 images) to keep the training to
a few minutes on 2 CPU cores; the test split is always the full 10,000 images.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from maxq_deploy.core.progress import Progress

#: Grey-value statistics of the 60,000 training images (scaled to [0, 1]), padding excluded.
FASHION_MEAN = 0.2860
FASHION_STD = 0.3530
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def fashion_arrays(images: np.ndarray, image_size: int = 32) -> np.ndarray:
    """uint8 N x 28 x 28 -> normalized float32 N x 3 x S x S (zero-padded grey, replicated)."""
    pad = image_size - images.shape[-1]
    if pad < 0 or pad % 2:
        raise ValueError(f"image_size {image_size} must be 28 + an even number of pixels")
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
    """``fashion<S>_train.npz`` (``train_limit`` images) and ``fashion<S>_test.npz`` (all 10,000)."""
    from maxq_deploy.core.files import atomic_output
    from maxq_deploy.data.idx import fashion_mnist_files, read_idx, read_idx_labels

    files = fashion_mnist_files(root)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, limit in (("train", train_limit), ("test", None)):
        images = read_idx(files[f"{split}_images"], 3, "images")
        labels = read_idx_labels(files[f"{split}_labels"], len(images), str(files[f"{split}_images"]))
        keep = evenly(len(images), limit)
        suffix = f"_{len(keep)}" if split == "train" and limit is not None else ""
        path = out / f"fashion{image_size}_{split}{suffix}.npz"
        if not path.is_file():
            with atomic_output(path) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, images=fashion_arrays(images[keep], image_size), labels=labels[keep].astype(np.int64))
        paths.append(path)
    return paths[0], paths[1]


@dataclass
class FashionExample:
    """A trained MaxQ network on Fashion-MNIST and the data it was trained and tested on."""

    workdir: Path
    checkpoint: Path  # MaxQ training checkpoint (upstream layout)
    train_npz: Path
    test_npz: Path
    arch: str
    nm: str
    image_size: int
    train_images: int
    test_top1: float  # of the trained MaxQ network on the 10,000 test images
    train_seconds: float
    history: list[dict]


def prepare_fashion_example(
    workdir: str | os.PathLike[str], arch: str = "resnet18", nm: str = "2:4", layer_type: str = "SoftMaxQConv2DBNV2Pro", *,
    epochs: int = 3, lr: float = 0.05, batch_size: int = 128, image_size: int = 32, train_limit: int | None = 12000,
    seed: int = 0, root: str | os.PathLike[str] | None = None, progress: Progress | None = None,
) -> FashionExample:
    """Train (or reuse, when made with the same settings) a MaxQ network on Fashion-MNIST."""
    import time

    from filelock import FileLock

    from maxq_deploy.core.files import atomic_output
    from maxq_deploy.reference.checkpoints import build_reference_model, make_checkpoint, save_checkpoint
    from maxq_deploy.reference.train import array_loader, train_reference

    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    config = {"arch": arch, "nm": nm, "layer_type": layer_type, "epochs": epochs, "lr": lr, "batch_size": batch_size,
              "image_size": image_size, "train_limit": train_limit, "seed": seed, "version": 1}
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    info_path = out / f"fashion_{arch}_{nm.replace(':', 'of')}_{key}.json"
    with FileLock(str(out / ".fashion.lock")):
        cached = _read(info_path)
        if cached is not None:
            return cached
        train_npz, test_npz = save_fashion_npz(out, image_size, train_limit, root)
        started = time.perf_counter()
        with np.load(train_npz) as tr, np.load(test_npz) as te:
            train = array_loader(tr["images"], tr["labels"], batch_size, shuffle=True, seed=seed)
            test = array_loader(te["images"], te["labels"], 500)
            torch.manual_seed(seed)
            model = build_reference_model(arch, 10, nm, layer_type)
            history = train_reference(model, train, epochs, lr, val_loader=test, seed=seed, progress=progress)
            n_train = len(tr["labels"])
        ckpt_path = info_path.with_suffix(".pth.tar")
        checkpoint = make_checkpoint(arch, nm, layer_type, 10, model=model, epoch=epochs)
        checkpoint["best_acc1"] = torch.tensor(float(history.final_val_top1 or 0.0))
        save_checkpoint(checkpoint, ckpt_path)
        example = FashionExample(out, ckpt_path, train_npz, test_npz, arch, nm, image_size, n_train,
                                 float(history.final_val_top1 or 0.0), round(time.perf_counter() - started, 1),
                                 [asdict(e) for e in history.epochs])
        with atomic_output(info_path) as tmp:
            tmp.write_text(json.dumps(asdict(example), default=str, indent=2))
        return example


def _read(info_path: Path) -> FashionExample | None:
    try:
        info = json.loads(info_path.read_text())
        example = FashionExample(**{k: Path(v) if k in ("workdir", "checkpoint", "train_npz", "test_npz") else v for k, v in info.items()})
    except (OSError, ValueError, TypeError):
        return None
    return example if example.checkpoint.is_file() and example.train_npz.is_file() and example.test_npz.is_file() else None
