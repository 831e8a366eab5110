"""The eval transform every stage shares: resize the shorter side, center-crop, normalize."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from maxq_deploy.core.errors import DataError
from maxq_deploy.data.decode import MAX_RESIZED_PIXELS

if TYPE_CHECKING:
    from PIL import Image

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Largest --resize / --image-size: one 16384 px RGB image is already 0.8 GB once decoded.
MAX_IMAGE_SIDE = 16384


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

