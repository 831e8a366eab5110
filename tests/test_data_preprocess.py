"""maxq_deploy.data.preprocess: the eval transform's sizes, numbers and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from maxq_deploy.core.errors import DataError
from maxq_deploy.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, MAX_IMAGE_SIDE, Preprocess


def test_resized_size_keeps_the_aspect_ratio_with_the_shorter_side_at_resize():
    p = Preprocess(resize=64, image_size=32)
    assert p.resized_size(200, 100) == (128, 64)
    assert p.resized_size(100, 300) == (64, 192)
    assert p.resized_size(64, 64) == (64, 64)


def test_a_uniform_image_becomes_its_normalized_colour_at_the_crop_size():
    out = Preprocess(resize=40, image_size=24)(Image.new("RGB", (80, 50), (255, 0, 51)))
    assert out.dtype.is_floating_point and tuple(out.shape) == (3, 24, 24)
    expected = (np.array([1.0, 0.0, 0.2]) - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out.mean(dim=(1, 2)).numpy(), expected, atol=1e-5)


def test_the_crop_is_centred():
    image = np.zeros((10, 30, 3), np.uint8)
    image[:, 10:20] = 255  # a white band in the middle third
    out = Preprocess(resize=10, image_size=10, mean=(0, 0, 0), std=(1, 1, 1))(Image.fromarray(image))
    assert out.min() == 1.0  # the 10x10 centre crop is all white


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"resize": 0}, "positive integer"),
    ({"resize": True}, "positive integer"),
    ({"resize": MAX_IMAGE_SIDE + 1, "image_size": 8}, f"at most {MAX_IMAGE_SIDE}"),
    ({"resize": 16, "image_size": 32}, "resize must be >= image_size"),
    ({"mean": (0.5, 0.5)}, "3 finite numbers"),
    ({"std": (1.0, 0.0, 1.0)}, "3 positive numbers"),
])
def test_bad_settings_are_refused_naming_the_field(kwargs, message):
    with pytest.raises(DataError, match=message):
        Preprocess(**kwargs)


def test_an_extreme_aspect_ratio_is_refused_before_decoding():
    with pytest.raises(ValueError, match="extreme aspect ratio"):
        Preprocess(resize=256, image_size=224).check_size(100_000, 1)
