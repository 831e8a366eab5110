"""Data sets and preprocessing shared by calibration, QAT and eval.

Sources (:func:`open_dataset` tells them apart):

- ``imagefolder``: a folder of class sub-folders of images (JPEG, PNG, ...). Classes are the
  sub-folder names sorted like torchvision's ``ImageFolder`` (hidden folders are ignored), files
  are found recursively, labels are class indices.
- ``flat``: a folder of images without class sub-folders (calibration). Unlabelled unless
  ``labels`` names a ``.npy`` array or a text file with one integer per line, in sorted file
  name order.
- ``arrays``: ``.npy`` (NCHW float images, already preprocessed; labels from ``labels``) or
  ``.npz`` (``images`` or ``x``, optional ``labels`` or ``y``; an explicit ``labels`` wins).

Images are decoded with Pillow and preprocessed as torchvision's eval transform does: RGB,
shorter side resized to ``resize`` (bilinear), center crop ``image_size``, [0, 1], normalize.

Unreadable images never crash a run. ``dataset[i]`` returns ``(Unreadable(path, reason), label)``
for them; the loader from :func:`make_loader` (a :class:`Batches`) drops them in its
``collate_fn``, which runs inside the worker processes, and carries the count along with each
batch, so its totals are exact with any number of workers. Iterate it as a plain loader
(``for images, labels in loader``) and read ``loader.report`` (a :class:`DataReport`) after
the loop; every new iteration starts a new count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from maxq_deploy.errors import DataError

if TYPE_CHECKING:
    from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: File suffixes read as images (torchvision's list), compared case-insensitively.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES: tuple[str, ...] = (".npy", ".npz")
#: How many unreadable files a :class:`DataReport` names (the count is always complete).
MAX_NAMED_SKIPS = 10


@dataclass(frozen=True)
class Preprocess:
    """The eval transform: resize the shorter side, center-crop, normalize (ImageNet defaults)."""

    resize: int = 256
    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("resize", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise DataError(f"Preprocess.{name} must be a positive integer number of pixels, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.resize < self.image_size:
            raise DataError(
                f"Preprocess.resize must be >= image_size (the crop is taken from the resized image), "
                f"got resize={self.resize}, image_size={self.image_size}"
            )
        for name in ("mean", "std"):
            value = getattr(self, name)
            try:
                values = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise DataError(f"Preprocess.{name} must be 3 numbers (R, G, B), got {value!r}") from None
            if len(values) != 3 or not all(np.isfinite(values)):
                raise DataError(f"Preprocess.{name} must be 3 finite numbers (R, G, B), got {value!r}")
            if name == "std" and min(values) <= 0:
                raise DataError(f"Preprocess.std must be 3 positive numbers, got {value!r}")
            object.__setattr__(self, name, values)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalized float32 CHW tensor of ``image_size`` x ``image_size``."""
        from PIL import Image

        width, height = image.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        size = self.image_size
        top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


@dataclass(frozen=True)
class Unreadable:
    """Stands in for an image that could not be decoded; dropped and counted by the loader."""

    path: str
    reason: str


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an image file fully and convert it to RGB (raises on any decoder failure)."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


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

    def __getitem__(self, index: int) -> tuple[torch.Tensor | Unreadable, int]:
        if self.images is not None:
            return torch.from_numpy(np.array(self.images[index], dtype=np.float32)), self.label(index)
        path = self.files[index]
        try:
            image = load_rgb(path)
        except Exception as exc:  # any decoder failure means "unreadable file", whatever Pillow raises
            text = str(exc).replace(repr(str(path)), "").replace(str(path), "")  # the path is named anyway
            reason = " ".join(text.split()).strip(" :")[:200] or type(exc).__name__
            return Unreadable(path, reason), self.label(index)
        return self.preprocess(image), self.label(index)

    def describe(self) -> str:
        classes = f", {len(self.class_names)} classes" if self.class_names is not None else ""
        labels = "" if self.has_labels else ", unlabelled"
        c, h, w = self.sample_shape
        count = f"{len(self)} images" if self.kind == "arrays" else f"{len(self)} image files"
        return f"{self.root} ({self.kind}, {count}, {c}x{h}x{w}{classes}{labels})"


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _images_under(folder: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        found.extend(os.path.join(dirpath, name) for name in sorted(filenames) if _is_image(name))
    return found


def _read_labels(path: Path, count: int, what: str) -> np.ndarray:
    """Integer labels from a .npy array or a text file (one per line), checked against ``count``."""
    if not path.is_file():
        raise DataError(f"labels file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            raw = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path} is not a readable .npy labels array ({exc})") from None
    else:
        try:
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            raw = np.asarray([int(line) for line in lines], dtype=np.int64)
        except (UnicodeDecodeError, ValueError) as exc:
            raise DataError(f"{path}: a labels text file needs one integer per line ({exc})") from None
    return _check_labels(raw, count, f"{path}", what)


def _check_labels(raw: np.ndarray, count: int, source: str, what: str) -> np.ndarray:
    if raw.ndim != 1:
        hint = " (one-hot? store class indices: labels.argmax(1))" if raw.ndim == 2 else ""
        raise DataError(f"labels in {source} must be a 1-D array of class indices, got shape {raw.shape}{hint}")
    if raw.dtype.kind not in "iu":
        if raw.dtype.kind == "f" and raw.size and np.all(raw == np.round(raw)):
            raw = raw.astype(np.int64)
        else:
            raise DataError(f"labels in {source} must be integers, got dtype {raw.dtype}")
    if len(raw) != count:
        raise DataError(f"{len(raw)} labels in {source} but {count} {what}: counts must match")
    if raw.size and raw.min() < 0:
        raise DataError(f"labels in {source} must be >= 0, found {int(raw.min())}")
    return raw.astype(np.int64)


def _check_images_array(images: np.ndarray, source: str) -> np.ndarray:
    if images.ndim != 4:
        raise DataError(f"images in {source} must be a 4-D NCHW array, got shape {images.shape}")
    if images.shape[1] != 3:
        hint = " (NHWC? transpose with images.transpose(0, 3, 1, 2))" if images.shape[3] == 3 else ""
        raise DataError(f"images in {source} must have 3 channels in NCHW layout, got shape {images.shape}{hint}")
    if images.dtype.kind != "f":
        raise DataError(
            f"images in {source} are {images.dtype}: .npy/.npz images must be preprocessed float "
            "(normalized NCHW float32); pass a folder of image files to preprocess here instead"
        )
    if len(images) == 0:
        raise DataError(f"{source} holds no images (shape {images.shape})")
    return images


def _open_arrays(path: Path, labels: str | os.PathLike[str] | None) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        loaded = np.load(path, mmap_mode="r" if path.suffix.lower() == ".npy" else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable {path.suffix} array file ({' '.join(str(exc).split())[:200]})") from None
    found_labels = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = set(loaded.files)
            image_key = next((k for k in ("images", "x") if k in keys), None)
            if image_key is None:
                raise DataError(f"{path} has no 'images' or 'x' array (found: {', '.join(sorted(keys)) or 'nothing'})")
            images = loaded[image_key]
            label_key = next((k for k in ("labels", "y") if k in keys), None)
            if label_key is not None:
                found_labels = loaded[label_key]
    else:
        images = loaded
    images = _check_images_array(images, str(path))
    if labels is not None:
        return images, _read_labels(Path(labels), len(images), f"images in {path}")
    if found_labels is not None:
        return images, _check_labels(found_labels, len(images), str(path), "images")
    return images, None


def open_dataset(
    path: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    preprocess: Preprocess = Preprocess(),
    require_labels: bool = False,
) -> ImageDataset:
    """Open an ImageFolder tree, a flat image folder or a .npy/.npz array as an :class:`ImageDataset`."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"data not found: {root}")
    if root.is_file():
        if root.suffix.lower() not in ARRAY_SUFFIXES:
            raise DataError(
                f"{root}: data must be a folder of images (class sub-folders or flat) or a .npy/.npz array, "
                f"not a {root.suffix or 'suffix-less'} file"
            )
        images, label_array = _open_arrays(root, labels)
        dataset = ImageDataset(root, "arrays", images=images, labels=label_array, preprocess=preprocess)
    else:
        dataset = _open_folder(root, labels, preprocess)
    if require_labels and not dataset.has_labels:
        hint = {
            "flat": "use class sub-folders (ImageFolder layout) or pass --labels (.npy or one integer per line)",
            "arrays": "store 'labels' in the .npz or pass --labels labels.npy",
        }[dataset.kind]
        raise DataError(f"{root} has no labels ({dataset.kind} data) and labels are needed here: {hint}")
    return dataset


def _open_folder(root: Path, labels: str | os.PathLike[str] | None, preprocess: Preprocess) -> ImageDataset:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DataError(f"cannot read data folder {root} ({exc.strerror})") from None
    if not entries:
        raise DataError(f"data folder is empty: {root}")
    class_names = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    per_class = [_images_under(root / name) for name in class_names]
    if any(per_class):
        if labels is not None:
            raise DataError(f"{root} is an ImageFolder tree whose labels come from its class folders: drop --labels")
        files = [f for group in per_class for f in group]
        targets = np.asarray([i for i, group in enumerate(per_class) for _ in group], dtype=np.int64)
        return ImageDataset(root, "imagefolder", files=files, labels=targets, class_names=class_names, preprocess=preprocess)
    files = [str(root / e.name) for e in entries if e.is_file() and _is_image(e.name)]
    if not files:
        raise DataError(
            f"no images in {root} (looked for {', '.join(IMAGE_SUFFIXES)} files, directly or in class sub-folders)"
        )
    label_array = _read_labels(Path(labels), len(files), f"images in {root}") if labels is not None else None
    return ImageDataset(root, "flat", files=files, labels=label_array, preprocess=preprocess)


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


@dataclass
class DataReport:
    """What one pass over a :class:`Batches` loader delivered."""

    images: int = 0  # samples yielded
    skipped: int = 0  # unreadable images dropped
    skipped_files: list[str] = field(default_factory=list)  # the first MAX_NAMED_SKIPS, "path: reason"

    def add(self, images: int, skipped: Sequence[Unreadable]) -> None:
        self.images += images
        self.skipped += len(skipped)
        room = MAX_NAMED_SKIPS - len(self.skipped_files)
        self.skipped_files.extend(f"{u.path}: {u.reason}" for u in skipped[: max(room, 0)])


def collate_dropping_unreadable(
    samples: list[tuple[torch.Tensor | Unreadable, int]],
) -> tuple[torch.Tensor, torch.Tensor, list[Unreadable]]:
    """Stack the readable samples; keep the unreadable ones aside so the loader can count them."""
    good = [(x, y) for x, y in samples if not isinstance(x, Unreadable)]
    bad = [x for x, _ in samples if isinstance(x, Unreadable)]
    if good:
        images = torch.stack([x for x, _ in good])
        labels = torch.tensor([y for _, y in good], dtype=torch.int64)
    else:
        images, labels = torch.empty(0), torch.empty(0, dtype=torch.int64)
    return images, labels, bad


class Batches(DataLoader):
    """A DataLoader yielding ``(images, labels)`` that drops unreadable images and reports them.

    ``report`` describes the pass in progress or the last finished one.
    """

    def __init__(self, *args, **kwargs):
        kwargs["collate_fn"] = collate_dropping_unreadable
        super().__init__(*args, **kwargs)
        self.report = DataReport()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # type: ignore[override]
        report = self.report = DataReport()
        for images, labels, bad in super().__iter__():
            report.add(len(labels), bad)
            if len(labels):
                yield images, labels

    @property
    def skipped(self) -> int:
        return self.report.skipped

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle a distributed loader for ``epoch`` (DistributedSampler needs it every epoch)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class ShardSampler(Sampler[int]):
    """Every ``world``-th index from ``rank``, no padding: each sample goes to exactly one rank.

    Evaluation needs this instead of DistributedSampler, whose padding repeats samples.
    """

    def __init__(self, length: int, rank: int, world: int):
        self.length, self.rank, self.world = length, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


def make_loader(
    dataset: Dataset,
    batch_size: int = 32,
    workers: int = 2,
    shuffle: bool = False,
    seed: int = 0,
    distributed: bool = False,
    drop_last: bool = False,
    *,
    pad_shards: bool = True,
) -> Batches:
    """Batches of ``(images, labels)``; unreadable images are dropped and counted in ``.report``.

    ``distributed`` shards over the ranks of an initialized ``torch.distributed`` group:
    with ``pad_shards`` through DistributedSampler (every rank gets the same count, some samples
    twice: what training needs), without it through :class:`ShardSampler` (each sample exactly
    once: what evaluation needs). ``workers`` > 0 decodes in that many worker processes.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    if workers < 0:
        raise DataError(f"workers must be >= 0, got {workers}")
    sampler: Sampler[int] | None = None
    generator = None
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if pad_shards:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(dataset, world, rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        else:
            sampler = ShardSampler(len(dataset), rank, world)  # type: ignore[arg-type]
        shuffle = False
    elif shuffle:
        generator = torch.Generator().manual_seed(seed)
    return Batches(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        generator=generator,
        persistent_workers=False,
    )
