"""IDX files (MNIST, Fashion-MNIST), gzipped or not, as a data set of their own.

``--data train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz``: images are an IDX
file of unsigned bytes with 3 dimensions (count, rows, columns), labels one with 1 dimension
(count; found beside the images by MNIST's naming when not given). Each grey image is replicated to 3 channels and preprocessed like an image file
(shorter side resized to ``resize``, center crop ``image_size``, [0, 1], normalized).

Every header is checked before anything is allocated: the magic (two zero bytes, the type
code 0x08 for unsigned bytes, the number of dimensions), dimensions that are zero or absurd
(a side over :data:`maxq_deploy.data.preprocess.MAX_IMAGE_SIDE`, more bytes than the file holds or than
memory can take), a file that ends early or goes on after its declared data, and a label count
that disagrees with the images. Each is one :class:`DataError` line naming the file.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from maxq_deploy.core.errors import DataError, first_line
from maxq_deploy.core.memory import available_memory_bytes
from maxq_deploy.data.datasets import ImageDataset
from maxq_deploy.data.labels import check_labels, read_labels
from maxq_deploy.data.preprocess import MAX_IMAGE_SIDE

#: Where Debian's ``dataset-fashion-mnist`` package puts the files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HINT = (
    "Fashion-MNIST is not installed: run `apt-get install dataset-fashion-mnist` (without root: "
    "`apt-get download dataset-fashion-mnist && dpkg-deb -x dataset-fashion-mnist_*.deb ROOT`, then pass ROOT/usr/share/datasets/fashion-mnist)"
)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
#: Fashion-MNIST's grey statistics (train split, [0, 1] scale), the demo's normalization.
FASHION_MEAN, FASHION_STD = 0.2860, 0.3530

_TYPES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float", 0x0E: "double"}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def is_idx_path(path: str | os.PathLike[str]) -> bool:
    """Whether a file name says IDX: ``*-idx3-ubyte``, ``*.idx1-ubyte``, optionally ``.gz``, or ``*.idx``."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return name.endswith("-ubyte") and "idx" in name or name.endswith(".idx")


def looks_like_fashion(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    return p.parent == FASHION_MNIST_DIR or p == FASHION_MNIST_DIR


def fashion_mnist_files(root: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """``train_images``, ``train_labels``, ``test_images``, ``test_labels`` of Fashion-MNIST, or one line saying how to get it."""
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    files = {f"{split}_{kind}": folder / f"{prefix}-{kind}-idx{1 if kind == 'labels' else 3}-ubyte.gz"
             for split, prefix in (("train", "train"), ("test", "t10k")) for kind in ("images", "labels")}
    missing = [p for p in files.values() if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]} not found. {FASHION_MNIST_HINT}")
    return files


class _Reader:
    """Bytes of one IDX file, gzipped or not, with a total size where it is known."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with open(path, "rb") as f:
                self.gzipped = f.read(2) == _GZIP_MAGIC
            self.size = None if self.gzipped else path.stat().st_size
            self.file = gzip.open(path, "rb") if self.gzipped else open(path, "rb")
        except OSError as exc:
            raise DataError(f"cannot read {path} ({exc.strerror or exc})") from None

    def read(self, count: int) -> bytes:
        try:
            return self.file.read(count)
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise DataError(f"{self.path} is damaged or truncated ({first_line(' '.join(str(exc).split()) or type(exc).__name__)})") from None

    def readinto(self, out: np.ndarray) -> int:
        view = memoryview(out.reshape(-1)).cast("B")
        done = 0
        while done < len(view):
            chunk = self.read(min(_CHUNK, len(view) - done))
            if not chunk:
                break
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
        return done

    def close(self) -> None:
        self.file.close()


def read_idx(path: str | os.PathLike[str], ndim: int, what: str) -> np.ndarray:
    """The unsigned-byte array of an IDX file with ``ndim`` dimensions, every header field checked first."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} not found: {p}" + (f". {FASHION_MNIST_HINT}" if looks_like_fashion(p) else ""))
    reader = _Reader(p)
    try:
        header = reader.read(4)
        if len(header) < 4:
            raise DataError(f"{p} is truncated: {len(header)} bytes, shorter than the 4-byte IDX magic")
        if header[:2] != b"\0\0" or header[2] not in _TYPES:
            raise DataError(f"{p} is not an IDX file (magic {header.hex()}, expected 0000 then a type code such as 08 and the number of dimensions)")
        if header[2] != 0x08:
            raise DataError(f"{p} holds IDX {_TYPES[header[2]]} values; {what} must be unsigned bytes (type 08)")
        if header[3] != ndim:
            raise DataError(f"{p} has {header[3]} dimensions; {what} must be an IDX file of {ndim} (idx{ndim})")
        raw = reader.read(4 * ndim)
        if len(raw) < 4 * ndim:
            raise DataError(f"{p} is truncated inside its header ({4 + len(raw)} of {4 + 4 * ndim} bytes)")
        dims = struct.unpack(f">{ndim}I", raw)
        _check_dims(p, dims, reader.size, 4 + 4 * ndim, what)
        out = np.empty(dims, dtype=np.uint8)
        got = reader.readinto(out)
        expected = out.size
        if got < expected:
            raise DataError(f"{p} is truncated: its header declares {'x'.join(map(str, dims))} bytes of data but it holds {got}")
        if reader.read(1):
            raise DataError(f"{p} holds more data than its header declares ({'x'.join(map(str, dims))}): not an IDX file, or damaged")
    finally:
        reader.close()
    return out


def _check_dims(path: Path, dims: tuple[int, ...], file_size: int | None, header: int, what: str) -> None:
    shown = "x".join(map(str, dims))
    if dims[0] == 0:
        raise DataError(f"{path} declares 0 {what}: nothing to read")
    if any(d == 0 for d in dims[1:]) or any(d > MAX_IMAGE_SIDE for d in dims[1:]):
        raise DataError(f"{path} declares {shown}: image sides must be 1..{MAX_IMAGE_SIDE} pixels")
    total = int(np.prod(dims, dtype=object))
    if file_size is not None and header + total != file_size:
        state = "is truncated" if header + total > file_size else "holds more data than its header declares"
        raise DataError(f"{path} {state}: its header declares {shown} ({header + total} bytes) but the file has {file_size} bytes")
    available = available_memory_bytes()
    if available is not None and total > available // 2:
        raise DataError(f"{path} declares {shown} ({total / 2**30:.1f} GiB) but {available / 2**30:.1f} GiB of memory are available: absurd or damaged header")


def read_idx_labels(path: str | os.PathLike[str], count: int, source: str) -> np.ndarray:
    """Labels from an IDX1 file, or from a ``.npy``/text file as for other data; checked against ``count``."""
    p = Path(path)
    if not is_idx_path(p):
        return read_labels(p, count, f"images in {source}")
    labels = read_idx(p, 1, "labels")
    return check_labels(labels, count, str(p), f"images in {source}")


def open_idx(path: Path, labels: str | os.PathLike[str] | None, preprocess) -> "IdxDataset":
    """An :class:`IdxDataset` of ``path`` (IDX3 images), labelled by ``labels`` (IDX1, .npy or text).

    Without ``labels``, the file MNIST's naming pairs with the images (``*-labels-idx1-ubyte*``
    beside ``*-images-idx3-ubyte*``) labels them when it exists: commands without ``--labels``
    (``quantize --train-data``) read labelled IDX that way.
    """
    images = read_idx(path, 3, "images")
    if labels is None:  # the sibling of MNIST's naming: train-images-idx3-ubyte.gz -> train-labels-idx1-ubyte.gz
        sibling = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
        labels = sibling if sibling != path and sibling.is_file() else None
    label_array = read_idx_labels(labels, len(images), str(path)) if labels is not None else None
    dataset = IdxDataset(path, images, label_array, preprocess)
    dataset.labels_path = Path(labels) if labels is not None else None
    return dataset


class IdxDataset(ImageDataset):
    """Grey uint8 images (N, H, W) from IDX, yielded as normalized 3-channel float tensors."""

    def __init__(self, root: Path, pixels: np.ndarray, labels: np.ndarray | None, preprocess):
        super().__init__(root, "idx", labels=labels, preprocess=preprocess)
        self.pixels = pixels
        self.labels_path: Path | None = None

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        image = Image.fromarray(self.pixels[index]).convert("RGB")
        return self.preprocess(image), self.label(index)

    def describe(self) -> str:
        h, w = self.pixels.shape[1:]
        c, ch, cw = self.sample_shape
        labels = "" if self.has_labels else ", unlabelled"
        return f"{self.root} (idx, {len(self)} grey {h}x{w} images as {c}x{ch}x{cw}{labels})"
