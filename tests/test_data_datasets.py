"""maxq_deploy.data.datasets: ImageDataset over arrays (shape, labels, classes) and the input-shape check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maxq_deploy.core.errors import DataError
from maxq_deploy.data.datasets import ImageDataset, check_input_shape
from maxq_deploy.data.decode import NonFinite


def _arrays(labels=None, size=8) -> ImageDataset:
    images = np.arange(4 * 3 * size * size, dtype=np.float32).reshape(4, 3, size, size)
    return ImageDataset(Path("x.npy"), "arrays", images=images, labels=labels)


def test_array_samples_labels_and_classes():
    ds = _arrays(np.array([0, 2, 5, 1]))
    image, label = ds[2]
    assert len(ds) == 4 and ds.sample_shape == (3, 8, 8) and ds.num_classes == 6
    assert label == 5 and float(image[0, 0, 0]) == 2 * 3 * 64
    unlabelled = _arrays()
    assert not unlabelled.has_labels and unlabelled.num_classes is None and unlabelled[0][1] == -1


def test_a_non_finite_sample_is_returned_as_such_naming_its_index():
    images = np.zeros((2, 3, 2, 2), np.float32)
    images[1, 2, 0, 1] = np.nan
    sample, _ = ImageDataset(Path("x.npy"), "arrays", images=images)[1]
    assert isinstance(sample, NonFinite) and tuple(sample.index) == (1, 2, 0, 1)


def test_input_shape_check_passes_a_match_and_refuses_a_mismatch_with_a_hint():
    ds = _arrays(size=8)
    check_input_shape(ds, 3, 8)
    check_input_shape(ds, None, (None, 8))
    with pytest.raises(DataError, match=r"data is 3x8x8 but the model expects 3x32x32: re-make the arrays"):
        check_input_shape(ds, 3, 32)
