"""Data sets and preprocessing shared by calibration, QAT and eval.

Sources (:func:`open_dataset` tells them apart):

- ``imagefolder``: a folder of class sub-folders of images (JPEG, PNG, ...). Classes are the
  sub-folder names sorted like torchvision's ``ImageFolder`` (hidden folders are ignored), files
  are found recursively, labels are class indices.
- ``flat``: a folder of images without class sub-folders (calibration). Unlabelled unless
  ``labels`` names a ``.npy`` array or a text file with one integer per line, in sorted file
  name order.
- ``idx``: IDX files (``*-idx3-ubyte[.gz]`` images, ``--labels *-idx1-ubyte[.gz]``), grey to RGB
  (:mod:`maxq_deploy.data.idx`).
- ``arrays``: ``.npy`` (NCHW float images, already preprocessed; labels from ``labels``) or
  ``.npz`` (``images`` or ``x``, optional ``labels`` or ``y``; an explicit ``labels`` wins).

Images are decoded with Pillow and preprocessed as torchvision's eval transform does: RGB,
shorter side resized to ``resize`` (bilinear), center crop ``image_size``, [0, 1], normalize.
Every Pillow mode becomes 8-bit RGB first, deep images scaled, never clipped, and non-finite
ones refused (:mod:`maxq_deploy.data.decode`).

Folder walks follow symbolic links but never into a folder already walked (a link to an
ancestor or a sibling), never count one file twice (links and hard links included), and skip
anything that is not a regular file (a FIFO named ``x.jpg`` would block). Entries that cannot be
read (a dangling link, a folder without permission, a link loop) are counted and named by
``ImageDataset.unreadable``; the loader reports them with the images it could not decode.

``.npy``/``.npz`` images holding NaN or Inf are refused when opened, naming the file and the
first bad index, and so are absurd batches (:mod:`maxq_deploy.core.memory`).

Unreadable images never crash a run. ``dataset[i]`` returns ``(Unreadable(path, reason), label)``
for them; the loader from :func:`make_loader` (a :class:`Batches`) drops them in its
``collate_fn``, which runs inside the worker processes, and carries the count along with each
batch, so its totals are exact with any number of workers. Iterate it as a plain loader
(``for images, labels in loader``) and read ``loader.report`` (a :class:`DataReport`) after
the loop; every new iteration starts a new count.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from maxq_deploy.core.errors import DataError, first_line
from maxq_deploy.data.decode import (  # noqa: F401  (part of this module's API)
    NonFinite,
    NonFiniteImageError,
    Unreadable,
    check_finite,
    first_non_finite,
    MAX_RESIZED_PIXELS,
    load_rgb,
    to_rgb8,
)
from maxq_deploy.core.files import quiet_worker
from maxq_deploy.core.memory import FORWARD_MEMORY_FACTOR, available_memory_bytes, check_batch_memory  # noqa: F401
from maxq_deploy.data.labels import MAX_LABEL, check_labels, read_labels  # noqa: F401  (part of this module's API)

if TYPE_CHECKING:
    from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: File suffixes read as images (torchvision's list), compared case-insensitively.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES: tuple[str, ...] = (".npy", ".npz")
#: Largest --resize / --image-size: one 16384 px RGB image is already 0.8 GB once decoded.
MAX_IMAGE_SIDE = 16384
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
            if value > MAX_IMAGE_SIDE:
                raise DataError(f"Preprocess.{name} must be at most {MAX_IMAGE_SIDE} pixels, got {value} (--{name.replace('_', '-')})")
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

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """The size an image of ``width`` x ``height`` is resized to (shorter side = ``resize``)."""
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.resize, int(self.resize * long / max(short, 1))
        return (new_short, new_long) if width <= height else (new_long, new_short)

    def check_size(self, width: int, height: int) -> None:
        """Refuse (before decoding) an image whose resized form would exceed the pixel limit (extreme aspect ratios)."""
        new_w, new_h = self.resized_size(width, height)
        limit = max(MAX_RESIZED_PIXELS, 4 * self.resize * self.resize)
        if new_w * new_h > limit:
            raise ValueError(f"{width}x{height} pixels would be resized to {new_w}x{new_h} ({new_w * new_h:,} pixels, more than "
                             f"the limit of {limit:,}): an extreme aspect ratio, refused before decoding")

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalized float32 CHW tensor of ``image_size`` x ``image_size``."""
        from PIL import Image

        width, height = image.size
        self.check_size(width, height)
        new_w, new_h = self.resized_size(width, height)
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        size = self.image_size
        top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
        image = image.crop((left, top, left + size, top + size))
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


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


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


class _Walk:
    """One folder walk of a data set: links followed once, files counted once, failures kept."""

    def __init__(self) -> None:
        self.seen_dirs: set[tuple[int, int]] = set()
        self.seen_files: set[tuple[int, int]] = set()
        self.unreadable: list[Unreadable] = []
        self.duplicates = 0

    def images_under(self, folder: Path) -> list[str]:
        found: list[str] = []
        self._walk(str(folder), found)
        return found

    def _walk(self, folder: str, found: list[str]) -> None:
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in self.seen_dirs:
                return  # a link back into an ancestor or a folder already walked
            self.seen_dirs.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            self.unreadable.append(Unreadable(folder, f"folder cannot be read ({exc.strerror or exc})"))
            return
        subfolders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links
                if not is_dir and _is_image(entry.name):
                    est = entry.stat()
                    if not stat.S_ISREG(est.st_mode):
                        self.unreadable.append(Unreadable(entry.path, "not a regular file"))
                        continue
                    key = (est.st_dev, est.st_ino)
                    if key in self.seen_files:
                        self.duplicates += 1
                        continue
                    self.seen_files.add(key)
                    found.append(entry.path)
            except OSError as exc:
                if _is_image(entry.name) or entry.is_symlink():
                    self.unreadable.append(Unreadable(entry.path, f"cannot be read ({exc.strerror or exc})"))
                continue
            if is_dir:
                subfolders.append(entry.path)
        for sub in subfolders:
            self._walk(sub, found)


def _images_under(folder: Path) -> list[str]:
    return _Walk().images_under(folder)


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
    if not isinstance(images, np.memmap):  # in memory already: check it all now (a memory map: per sample as read)
        check_finite(images, source)
    return images


def _open_arrays(path: Path, labels: str | os.PathLike[str] | None) -> tuple[np.ndarray, np.ndarray | None]:
    import zipfile
    import zlib

    unreadable = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)  # a damaged or truncated file
    try:
        loaded = np.load(path, mmap_mode="r" if path.suffix.lower() == ".npy" else None, allow_pickle=False)
    except unreadable as exc:
        raise DataError(f"{path} is not a readable {path.suffix} array file ({first_line(' '.join(str(exc).split()))})") from None
    try:
        return _arrays_from(loaded, path, labels)
    except unreadable as exc:
        raise DataError(f"{path} is damaged or truncated ({type(exc).__name__}: {first_line(exc)})") from None


def _arrays_from(loaded, path: Path, labels: str | os.PathLike[str] | None) -> tuple[np.ndarray, np.ndarray | None]:
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
        return images, read_labels(Path(labels), len(images), f"images in {path}")
    if found_labels is not None:
        return images, check_labels(found_labels, len(images), str(path), "images")
    return images, None


def open_dataset(
    path: str | os.PathLike[str],
    labels: str | os.PathLike[str] | None = None,
    preprocess: Preprocess = Preprocess(),
    require_labels: bool = False,
    labels_option: bool = True,
) -> ImageDataset:
    """Open an ImageFolder tree, a flat image folder or a .npy/.npz array as an :class:`ImageDataset`.

    ``labels_option``: whether the command has a ``--labels`` option the error hints may name.
    """
    from maxq_deploy.data import idx

    root = Path(path)
    if not root.exists():
        raise DataError(f"data not found: {root}" + (f". {idx.FASHION_MNIST_HINT}" if idx.looks_like_fashion(root) else ""))
    if not root.is_file() and not root.is_dir():
        raise DataError(f"data {root} is not a regular file or folder (a FIFO, device or socket): "
                        "give a folder of images, a .npy/.npz file or an IDX file")
    if root.is_file() and idx.is_idx_path(root):
        dataset: ImageDataset = idx.open_idx(root, labels, preprocess)
    elif root.is_file():
        if root.suffix.lower() not in ARRAY_SUFFIXES:
            raise DataError(
                f"{root}: data must be a folder of images (class sub-folders or flat), a .npy/.npz array or IDX (*-idx3-ubyte[.gz]), "
                f"not a {root.suffix or 'suffix-less'} file"
            )
        images, label_array = _open_arrays(root, labels)
        dataset = ImageDataset(root, "arrays", images=images, labels=label_array, preprocess=preprocess)
    else:
        dataset = _open_folder(root, labels, preprocess)
    if require_labels and not dataset.has_labels:
        hint = {
            "flat": "use class sub-folders (ImageFolder layout)" + (" or pass --labels (.npy or one integer per line)" if labels_option else ""),
            "arrays": "store 'labels' (or 'y') in the .npz" + (" or pass --labels labels.npy" if labels_option else ""),
            "idx": "pass --labels with its IDX1 labels file (e.g. train-labels-idx1-ubyte.gz)" if labels_option else "use labelled data",
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
    walk = _Walk()
    with contextlib.suppress(OSError):
        top = os.stat(root)
        walk.seen_dirs.add((top.st_dev, top.st_ino))  # a class folder linking back to the root is not walked again
    for e in entries:
        if e.is_symlink() and not e.name.startswith("."):
            try:
                e.stat()
            except OSError as exc:  # a dangling link or a link loop where a class folder or image should be
                walk.unreadable.append(Unreadable(e.path, f"cannot be read ({exc.strerror or exc})"))
    class_names = [e.name for e in entries if _is_dir(e) and not e.name.startswith(".")]
    per_class = [walk.images_under(root / name) for name in class_names]
    if any(per_class):
        loose = [e.name for e in entries if _is_image(e.name) and not _is_dir(e)]
        if loose:  # an ImageFolder reading only the sub-folders would drop these without a word
            folders = [name for name, group in zip(class_names, per_class) if group]
            raise DataError(
                f"{root} holds {len(loose)} image(s) directly (e.g. {loose[0]}) and {len(folders)} sub-folder(s) of images "
                f"(e.g. {folders[0]}/): a data folder is either flat or one sub-folder per class; move the images so it is one of them"
            )
        if labels is not None:
            raise DataError(f"{root} is an ImageFolder tree whose labels come from its class folders: drop --labels")
        files = [f for group in per_class for f in group]
        targets = np.asarray([i for i, group in enumerate(per_class) for _ in group], dtype=np.int64)
        dataset = ImageDataset(root, "imagefolder", files=files, labels=targets, class_names=class_names, preprocess=preprocess)
        dataset.unreadable, dataset.duplicates = walk.unreadable, walk.duplicates
        return dataset
    files = []
    for e in entries:
        if not _is_image(e.name) or _is_dir(e):
            continue
        try:
            est = e.stat()
        except OSError as exc:
            walk.unreadable.append(Unreadable(e.path, f"cannot be read ({exc.strerror or exc})"))
            continue
        if not stat.S_ISREG(est.st_mode):
            walk.unreadable.append(Unreadable(e.path, "not a regular file"))
        elif (est.st_dev, est.st_ino) in walk.seen_files:
            walk.duplicates += 1
        else:
            walk.seen_files.add((est.st_dev, est.st_ino))
            files.append(str(root / e.name))
    if not files and walk.unreadable:
        first = walk.unreadable[0]
        raise DataError(f"no readable images in {root}: {len(walk.unreadable)} unreadable entries, e.g. {first.path} ({first.reason})")
    if not files:
        raise DataError(
            f"no images in {root} (looked for {', '.join(IMAGE_SUFFIXES)} files, directly or in class sub-folders)"
        )
    label_array = read_labels(Path(labels), len(files), f"images in {root}") if labels is not None else None
    dataset = ImageDataset(root, "flat", files=files, labels=label_array, preprocess=preprocess)
    dataset.unreadable, dataset.duplicates = walk.unreadable, walk.duplicates
    return dataset


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


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
    good = [(x, y) for x, y in samples if not isinstance(x, (Unreadable, NonFinite))]
    bad = [x for x, _ in samples if isinstance(x, (Unreadable, NonFinite))]
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
        walked = getattr(self.dataset, "unreadable", [])
        if walked and getattr(self.sampler, "rank", 0) == 0:  # folder-walk failures, counted once over the ranks
            report.add(0, walked)
        for images, labels, bad in super().__iter__():
            for sample in bad:
                if isinstance(sample, NonFinite):
                    raise DataError(sample.message())
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
    shape = getattr(dataset, "sample_shape", None)
    if shape is not None:
        check_batch_memory(min(batch_size, max(len(dataset), 1)), shape, "a batch")  # type: ignore[arg-type]
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
        worker_init_fn=quiet_worker if workers > 0 else None,  # Ctrl-C is the main process's to handle
    )
