"""The data set every source opens into (:class:`ImageDataset`) and the input-shape check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from maxq_deploy.core.errors import DataError, first_line
from maxq_deploy.data.decode import NonFinite, NonFiniteImageError, Unreadable, load_rgb
from maxq_deploy.data.preprocess import Preprocess

#: File suffixes read as images (torchvision's list), compared case-insensitively.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES: tuple[str, ...] = (".npy", ".npz")


class ImageDataset(Dataset):
    """Images (or preprocessed arrays) with integer labels, -1 where there are none."""

    def __init__(
        self,
        root: Path,
        kind: str,
        *,
        files: Sequence[str] = (),
        images: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        class_names: list[str] | None = None,
        preprocess: Preprocess = Preprocess(),
    ):
        self.root, self.kind, self.preprocess = root, kind, preprocess
        self.files = list(files)
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.unreadable: list[Unreadable] = []  # entries of the folder walk that could not be read
        self.duplicates = 0  # files reached twice (links) and counted once

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @property
    def num_classes(self) -> int | None:
        """Class folders of an ImageFolder tree, else the largest label + 1 (None unlabelled)."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is None or len(self.labels) == 0:
            return None
        return int(self.labels.max()) + 1

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every sample this data set yields."""
        if self.images is not None:
            return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]
        return (3, self.preprocess.image_size, self.preprocess.image_size)

    def __len__(self) -> int:
        return len(self.images) if self.images is not None else len(self.files)

    def label(self, index: int) -> int:
        return int(self.labels[index]) if self.labels is not None else -1

    def __getitem__(self, index: int) -> tuple[torch.Tensor | Unreadable | NonFinite, int]:
        if self.images is not None:
            sample = np.array(self.images[index], dtype=np.float32)
            bad = ~np.isfinite(sample)
            if bad.any():  # memory-mapped .npy files are checked here, sample by sample, as they are read
                return NonFinite(str(self.root), (int(index), *(int(i) for i in np.argwhere(bad)[0])), array=True), self.label(index)
            return torch.from_numpy(sample), self.label(index)
        path = self.files[index]
        try:
            image = load_rgb(path, getattr(self.preprocess, "check_size", None))
        except NonFiniteImageError as exc:
            return NonFinite(path, exc.index), self.label(index)
        except Exception as exc:  # any decoder failure means "unreadable file", whatever Pillow raises
            text = str(exc).replace(repr(str(path)), "").replace(str(path), "")  # the path is named anyway
            reason = first_line(" ".join(text.split()).strip(" :")) or type(exc).__name__
            return Unreadable(path, reason), self.label(index)
        return self.preprocess(image), self.label(index)

    def describe(self) -> str:
        classes = f", {len(self.class_names)} classes" if self.class_names is not None else ""
        labels = "" if self.has_labels else ", unlabelled"
        c, h, w = self.sample_shape
        count = f"{len(self)} images" if self.kind == "arrays" else f"{len(self)} image files"
        extra = ""
        if self.unreadable:
            shown = ", ".join(u.path for u in self.unreadable[:3]) + (", ..." if len(self.unreadable) > 3 else "")
            extra += f", {len(self.unreadable)} unreadable entries skipped: {shown}"
        if self.duplicates:
            extra += f", {self.duplicates} duplicate(s) through links counted once"
        return f"{self.root} ({self.kind}, {count}, {c}x{h}x{w}{classes}{labels}{extra})"


def check_input_shape(
    dataset: ImageDataset,
    expected_channels: int | None = 3,
    expected_size: int | tuple[int | None, int | None] | None = None,
    what: str = "the model",
) -> None:
    """Raise DataError when samples cannot feed a model with a fixed input (None = any size)."""
    c, h, w = dataset.sample_shape
    if isinstance(expected_size, int):
        expected_size = (expected_size, expected_size)
    exp_h, exp_w = expected_size if expected_size is not None else (None, None)
    if (expected_channels is None or expected_channels == c) and exp_h in (None, h) and exp_w in (None, w):
        return
    shown = "x".join("?" if d is None else str(d) for d in (expected_channels, exp_h, exp_w))
    if dataset.kind == "arrays":
        hint = "re-make the arrays at the model's input size"
    elif exp_h is not None and exp_h == exp_w:
        hint = f"pass --image-size {exp_h} (and --resize >= {exp_h})"
    else:
        hint = "preprocess to the model's input size"
    raise DataError(f"data is {c}x{h}x{w} but {what} expects {shown}: {hint}")

