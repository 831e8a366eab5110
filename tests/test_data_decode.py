"""maxq_deploy.data.decode: every Pillow mode to the 8-bit RGB a user expects, deep images scaled, never clipped."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from maxq_deploy.data import to_rgb8

RAMP16 = (np.arange(40 * 48).reshape(40, 48) * 34).astype(np.uint16)  # 0 .. 65246


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "PA"])
def test_8bit_modes_become_rgb_like_pillow(mode):
    rgb = Image.fromarray((np.random.default_rng(0).random((8, 9, 3)) * 255).astype(np.uint8))
    image = rgb.convert(mode)
    out = to_rgb8(image)
    assert out.mode == "RGB" and out.size == image.size
    assert np.array_equal(np.asarray(out), np.asarray(image.convert("RGBA" if "A" in mode else mode).convert("RGB")))


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_16bit_grey_is_scaled_not_clipped(mode):
    image = Image.frombytes(mode, (48, 40), RAMP16.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    out = np.asarray(to_rgb8(image))
    expected = np.rint(RAMP16 / 65535 * 255).astype(np.uint8)
    assert np.array_equal(out[..., 0], expected) and np.array_equal(out[..., 0], out[..., 2])
    assert out.max() == 254 and out.min() == 0  # 65246 -> 254; the old convert("RGB") saturated every value >= 255


def test_32bit_integer_and_float_images():
    as_int = to_rgb8(Image.fromarray(RAMP16.astype(np.int32)))
    assert np.asarray(as_int)[..., 0].max() == 254  # 16-bit values in an "I" image: scaled like I;16
    small = to_rgb8(Image.fromarray(np.full((4, 4), 200, np.int32)))
    assert np.asarray(small).max() == 200  # 8-bit values in an "I" image: as they are
    unit = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    assert np.asarray(to_rgb8(Image.fromarray(unit)))[..., 1].tolist() == np.rint(unit * 255).astype(int).tolist()
    wide = np.linspace(-3, 5, 16, dtype=np.float32).reshape(4, 4)
    out = np.asarray(to_rgb8(Image.fromarray(wide)))[..., 0]
    assert out.min() == 0 and out.max() == 255  # out of [0, 255]: min-max scaled
