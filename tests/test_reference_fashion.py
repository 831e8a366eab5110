"""maxq_deploy.reference.fashion: Fashion-MNIST arrays (padding, normalization, even subsets) and the example's refusals."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from maxq_deploy.core.errors import DataError, OptionError
from maxq_deploy.data.idx import FASHION_MEAN, FASHION_STD, fashion_mnist_files, read_idx, read_idx_labels
from maxq_deploy.reference.fashion import (
    DEFAULT_TRAIN_LIMIT,
    FASHION_TRAIN_IMAGES,
    evenly,
    fashion_arrays,
    prepare_fashion_example,
    save_fashion_npz,
)

RNG = np.random.default_rng(0)
TRAIN_PIXELS = RNG.integers(1, 256, (10, 28, 28), dtype=np.uint8)
TEST_PIXELS = RNG.integers(1, 256, (4, 28, 28), dtype=np.uint8)
BLACK = (0.0 - FASHION_MEAN) / FASHION_STD


def _write_idx_gz(path, array: np.ndarray) -> None:
    with gzip.open(path, "wb") as f:
        f.write(b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


@pytest.fixture
def small_fashion(tmp_path):
    """A Fashion-MNIST folder with Debian's file names and 10 + 4 images."""
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    for prefix, pixels in (("train", TRAIN_PIXELS), ("t10k", TEST_PIXELS)):
        _write_idx_gz(root / f"{prefix}-images-idx3-ubyte.gz", pixels)
        _write_idx_gz(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(len(pixels), dtype=np.uint8) % 10)
    return root


def test_fashion_arrays_pad_normalize_and_replicate():
    out = fashion_arrays(TRAIN_PIXELS[:2])
    assert out.shape == (2, 3, 32, 32) and out.dtype == np.float32 and out.flags.c_contiguous
    assert np.array_equal(out[:, 0], out[:, 1]) and np.array_equal(out[:, 0], out[:, 2])
    expected = (TRAIN_PIXELS[:2].astype(np.float32) / 255.0 - FASHION_MEAN) / FASHION_STD
    np.testing.assert_allclose(out[:, 0, 2:30, 2:30], expected, rtol=1e-6, atol=1e-6)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    np.testing.assert_allclose(out[:, :, border], BLACK, rtol=1e-6)  # 2 black pixels a side, nothing resampled


@pytest.mark.parametrize("size, pad", [(28, 0), (30, 1), (36, 4)])
def test_fashion_arrays_other_even_sizes(size, pad):
    out = fashion_arrays(TRAIN_PIXELS[:1], size)
    assert out.shape == (1, 3, size, size)
    np.testing.assert_allclose(out[0, 0, pad:pad + 28, pad:pad + 28], (TRAIN_PIXELS[0] / 255.0 - FASHION_MEAN) / FASHION_STD,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [26, 31])
def test_fashion_arrays_refuse_sizes_that_need_resampling(size):
    with pytest.raises(OptionError, match=f"image size {size} must be 28 \\+ an even number of pixels"):
        fashion_arrays(TRAIN_PIXELS[:1], size)


def test_evenly_spreads_the_limit_over_the_whole_split():
    assert evenly(10, 4).tolist() == [0, 3, 6, 9]
    assert evenly(10, None).tolist() == evenly(10, 10).tolist() == evenly(10, 25).tolist() == list(range(10))
    picks = evenly(FASHION_TRAIN_IMAGES, DEFAULT_TRAIN_LIMIT)
    assert len(picks) == len(np.unique(picks)) == DEFAULT_TRAIN_LIMIT and picks.dtype == np.int64
    assert (picks[0], picks[-1]) == (0, FASHION_TRAIN_IMAGES - 1) and set(np.diff(picks)) <= {4, 5, 6}


def test_save_fashion_npz_limits_the_training_split_only(small_fashion, tmp_path):
    train, test = save_fashion_npz(tmp_path / "out", 32, train_limit=4, root=small_fashion)
    assert (train.name, test.name) == ("fashion32_train_4.npz", "fashion32_test.npz")
    with np.load(train) as tr, np.load(test) as te:
        assert tr["labels"].tolist() == [0, 3, 6, 9] and tr["labels"].dtype == np.int64
        np.testing.assert_array_equal(tr["images"], fashion_arrays(TRAIN_PIXELS[[0, 3, 6, 9]]))
        assert te["labels"].tolist() == [0, 1, 2, 3]
        np.testing.assert_array_equal(te["images"], fashion_arrays(TEST_PIXELS))


@pytest.mark.parametrize("limit", [None, 10, 60000])
def test_save_fashion_npz_whole_training_split_has_no_count_in_its_name(small_fashion, tmp_path, limit):
    train, _ = save_fashion_npz(tmp_path, 30, train_limit=limit, root=small_fashion)
    assert train.name == "fashion30_train.npz"
    with np.load(train) as tr:
        assert tr["images"].shape == (10, 3, 30, 30)


def test_save_fashion_npz_without_the_data_set_writes_nothing(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        save_fashion_npz(tmp_path / "out", root=tmp_path / "nowhere")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("limit", [True, 1500.0, 127, 60001, -5])
def test_prepare_refuses_a_bad_training_count_before_anything(tmp_path, limit):
    with pytest.raises(OptionError, match=rf"--train-images must be a whole number from 128 to 60000, got {limit!r}"):
        prepare_fashion_example(tmp_path / "work", train_limit=limit, root=tmp_path / "nowhere")
    assert not (tmp_path / "work").exists()


def test_prepare_without_the_data_set_is_one_data_error(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz not found. Fashion-MNIST is not installed") as info:
        prepare_fashion_example(tmp_path / "work", root=tmp_path / "nowhere")
    assert "\n" not in str(info.value) and not (tmp_path / "work").exists()


@pytest.mark.slow  # unzipping the 60,000 training images takes seconds
def test_real_training_split_statistics_and_even_subset():
    """FASHION_MEAN/STD are the training split's; the default subset keeps the classes balanced."""
    try:
        files = fashion_mnist_files()
    except DataError as exc:  # not installed: the reason is the install hint
        pytest.skip(str(exc))
    pixels = read_idx(files["train_images"], 3, "images")
    assert pixels.shape == (FASHION_TRAIN_IMAGES, 28, 28)
    histogram = np.bincount(pixels.ravel(), minlength=256) / pixels.size
    values = np.arange(256) / 255.0
    mean = float(histogram @ values)
    assert mean == pytest.approx(FASHION_MEAN, abs=5e-4)
    assert float(np.sqrt(histogram @ (values - mean) ** 2)) == pytest.approx(FASHION_STD, abs=5e-4)
    labels = read_idx_labels(files["train_labels"], FASHION_TRAIN_IMAGES, "train")
    counts = np.bincount(labels[evenly(FASHION_TRAIN_IMAGES, DEFAULT_TRAIN_LIMIT)], minlength=10)
    assert counts.sum() == DEFAULT_TRAIN_LIMIT and counts.min() >= 1100 and counts.max() <= 1300
