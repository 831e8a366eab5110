"""Opening a data source (:func:`open_dataset`): ImageFolder trees, flat folders, IDX files, .npy/.npz arrays.

Folder walks follow links once, count files once and keep what they could not read (see the package docstring).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import numpy as np

from maxq_deploy.core.errors import DataError, first_line
from maxq_deploy.data.datasets import ARRAY_SUFFIXES, IMAGE_SUFFIXES, ImageDataset
from maxq_deploy.data.decode import Unreadable, check_finite
from maxq_deploy.data.labels import check_labels, read_labels
from maxq_deploy.data.preprocess import Preprocess


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

