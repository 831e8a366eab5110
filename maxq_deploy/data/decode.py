"""Decoding one image or array sample: any Pillow mode to 8-bit RGB, and the non-finite checks.

Every Pillow mode becomes 8-bit RGB (:func:`to_rgb8`): 8-bit modes as Pillow converts them
(alpha dropped, CMYK/YCbCr/palette to RGB), 16-bit grey (``I;16`` and its variants) scaled by
255/65535 (never clipped), 32-bit integer ``I`` by 255/65535 when its values fit 16 bits (as is
when they fit 8 bits, else min-max scaled), float ``F`` times 255 when in [0, 1], as is when in
[0, 255], else min-max scaled. An image or array holding NaN or Inf is refused naming the file
and the first bad index, never scored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from maxq_deploy.core.errors import DataError

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class Unreadable:
    """Stands in for an image that could not be decoded; dropped and counted by the loader."""

    path: str
    reason: str


@dataclass(frozen=True)
class NonFinite:
    """Stands in for an image that decoded to NaN or Inf; the loader refuses the data set."""

    path: str
    index: tuple[int, ...]
    array: bool = False  # a sample of a .npy array (index: sample, channel, row, column) or an image file

    def message(self) -> str:
        if self.array:
            return (f"{self.path} holds non-finite values (NaN or Inf) at index {list(self.index)} (the first found): NaN/Inf input "
                    "cannot be calibrated, trained on or scored; fix or drop those samples")
        return (f"{self.path} decodes to non-finite values (NaN or Inf), first at pixel {list(self.index)} (row, column): "
                "fix or remove that image")


class NonFiniteImageError(ValueError):
    """A float image holds NaN or Inf (``index`` is the first bad pixel, row then column)."""

    def __init__(self, index: tuple[int, ...]):
        super().__init__(f"NaN or Inf at pixel {list(index)}")
        self.index = index


def _scaled_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low)) if high > low else np.zeros(values.shape)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, scaling deep images instead of clipping them (see the module doc)."""
    from PIL import Image

    mode = image.mode
    if mode in ("RGB",):
        return image
    if not (mode.startswith("I") or mode.startswith("F")):
        if "A" in mode or "a" in mode or (mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA" if mode != "LA" and mode != "La" else "LA")
        return image.convert("RGB")
    values = np.asarray(image)
    if values.ndim != 2:
        raise ValueError(f"unsupported {mode} image with shape {values.shape}")
    if mode.startswith("F"):
        finite = np.isfinite(values)
        if not finite.all():
            raise NonFiniteImageError(tuple(int(i) for i in np.argwhere(~finite)[0]))
        low, high = float(values.min()), float(values.max())
        if low >= 0 and high <= 1:
            grey = _scaled_to_uint8(values, 0.0, 1.0)
        elif low >= 0 and high <= 255:
            grey = _scaled_to_uint8(values, 0.0, 255.0)
        else:
            grey = _scaled_to_uint8(values, low, high)
    elif values.dtype.itemsize == 2 or mode.startswith("I;16"):
        grey = _scaled_to_uint8(values, 0.0, 65535.0)
    else:  # "I": 32-bit integers
        low, high = int(values.min()), int(values.max())
        if low >= 0 and high <= 255:
            grey = values.astype(np.uint8)
        elif low >= 0 and high <= 65535:
            grey = _scaled_to_uint8(values, 0.0, 65535.0)
        else:
            grey = _scaled_to_uint8(values, float(low), float(high))
    return Image.fromarray(np.ascontiguousarray(grey), "L").convert("RGB")


#: The most pixels an image may have once resized (before the crop): 64 Mi pixels (192 MiB as RGB).
MAX_RESIZED_PIXELS = 64 * 2**20


def load_rgb(path: str | os.PathLike[str], check_size=None) -> Image.Image:
    """Decode an image file fully and convert it to 8-bit RGB (raises on any decoder failure).

    ``check_size(width, height)`` runs on the header's size before any pixel is decoded (the
    preprocessing's own limit on the resized image: a 372-byte 300000x1 PNG must not become GBs).
    """
    from PIL import Image

    if not os.path.isfile(path):  # a FIFO or device named like an image would block or never end
        raise ValueError("not a regular file")
    with Image.open(path) as image:
        if check_size is not None:
            check_size(*image.size)
        image.load()
        return to_rgb8(image)


def first_non_finite(array: np.ndarray, chunk: int = 64) -> tuple[int, ...] | None:
    """Index of the first NaN/Inf of ``array`` (read in chunks along axis 0: fine for memory maps)."""
    if array.dtype.kind not in "fc":
        return None
    for start in range(0, len(array), chunk):
        part = np.asarray(array[start : start + chunk])
        bad = ~np.isfinite(part)
        if bad.any():
            index = np.argwhere(bad)[0]
            return (int(index[0]) + start, *(int(i) for i in index[1:]))
    return None


def check_finite(array: np.ndarray, source: str) -> None:
    """Refuse data holding NaN or Inf: one line naming the file and the first bad index."""
    index = first_non_finite(array)
    if index is not None:
        value = array[index]
        raise DataError(
            f"{source} holds non-finite values ({value}), first at index {list(index)}: "
            "NaN/Inf input cannot be calibrated, trained on or scored; fix or drop those samples"
        )
