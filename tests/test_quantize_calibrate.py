"""Calibration options and the calibration-size check: too few images is one line naming the options to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxq_deploy.core.errors import DataError, QuantizationError
from maxq_deploy.quantize.calibrate import MIN_CALIBRATION_IMAGES, CalibrationOptions, check_calibration_size


class _Images:
    """The two things the size check reads of a data set: its length and its root."""

    def __init__(self, count: int) -> None:
        self.count, self.root = count, Path("calib")

    def __len__(self) -> int:
        return self.count


def test_min_images_is_one_batch_and_at_least_the_floor() -> None:
    assert CalibrationOptions(batches=4, batch_size=8).min_images == MIN_CALIBRATION_IMAGES
    assert CalibrationOptions(batches=2, batch_size=64).min_images == 64


def test_options_that_cannot_reach_the_floor_or_bad_samples_are_refused() -> None:
    with pytest.raises(QuantizationError, match=r"--calib-batches 1 x --batch-size 8 = 8 images, fewer than the 16"):
        CalibrationOptions(batches=1, batch_size=8)
    with pytest.raises(QuantizationError, match="histogram_samples must be None .* got 100"):
        CalibrationOptions(histogram_samples=100)
    assert CalibrationOptions(histogram_samples=None).histogram_samples is None


def test_too_small_data_set_before_and_after_reading() -> None:
    options = CalibrationOptions(batches=2, batch_size=32)
    check_calibration_size(_Images(32), options)  # exactly one batch: enough
    with pytest.raises(DataError) as before:
        check_calibration_size(_Images(20), options)
    assert str(before.value) == ("calibration data calib has 20 image(s); at least 32 are needed (one batch of --batch-size 32 "
                                 "and at least 16): pass more images or a smaller --batch-size")
    with pytest.raises(DataError, match=r"gave 10 readable image\(s\) in the 13 read \(3 unreadable\) of its 40"):
        check_calibration_size(_Images(40), options, seen=10, skipped=3)
