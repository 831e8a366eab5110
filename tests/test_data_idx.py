"""IDX (MNIST / Fashion-MNIST) as a data format: gzipped or not, grey to 3 channels, and every
hostile header refused in one line before anything is allocated."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from maxq_deploy.core.errors import DataError
from maxq_deploy.data import Preprocess, make_loader, open_dataset
from maxq_deploy.data.idx import FASHION_MNIST_HINT, fashion_mnist_files, read_idx

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (7, 28, 28), dtype=np.uint8)
LABELS = np.array([0, 1, 2, 3, 4, 5, 9], dtype=np.uint8)


def idx_bytes(array: np.ndarray, type_code: int = 0x08, dims: tuple[int, ...] | None = None) -> bytes:
    dims = array.shape if dims is None else dims
    return b"\0\0" + bytes([type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + array.tobytes()


def write(path, data: bytes):
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture(params=["", ".gz"])
def pair(tmp_path, request):
    images = write(tmp_path / f"train-images-idx3-ubyte{request.param}", idx_bytes(PIXELS))
    labels = write(tmp_path / f"train-labels-idx1-ubyte{request.param}", idx_bytes(LABELS))
    return images, labels


def test_idx_reads_grey_as_three_identical_channels(pair):
    images, labels = pair
    pre = Preprocess(resize=28, image_size=28, mean=(0.5,) * 3, std=(0.25,) * 3)
    dataset = open_dataset(images, labels, pre, require_labels=True)
    assert dataset.kind == "idx" and len(dataset) == 7 and dataset.sample_shape == (3, 28, 28)
    assert dataset.num_classes == 10 and dataset.label(6) == 9
    x, y = dataset[3]
    expected = (PIXELS[3].astype(np.float32) / 255 - 0.5) / 0.25
    assert y == 3 and x.shape == (3, 28, 28)
    for c in range(3):
        assert np.allclose(x[c].numpy(), expected, atol=1e-6)
    batches = list(make_loader(dataset, batch_size=4, workers=0))
    assert [len(b[1]) for b in batches] == [4, 3] and batches[1][1].tolist() == [4, 5, 9]
    assert "idx, 7 grey 28x28 images as 3x28x28" in dataset.describe()


def test_idx_upscales_to_the_model_input(pair):
    images, labels = pair
    dataset = open_dataset(images, labels, Preprocess(resize=32, image_size=32))
    assert dataset[0][0].shape == (3, 32, 32)


def test_idx_labels_may_be_npy(tmp_path, pair):
    images, _ = pair
    np.save(tmp_path / "y.npy", LABELS.astype(np.int64))
    assert open_dataset(images, tmp_path / "y.npy").label(6) == 9


def _refused(path, labels=None, match=None) -> str:
    with pytest.raises(DataError) as info:
        open_dataset(path, labels, require_labels=True)
    text = str(info.value)
    assert "\n" not in text
    if match:
        assert match in text, text
    return text


@pytest.mark.parametrize("gz", ["", ".gz"])
def test_hostile_idx_headers_are_one_line(tmp_path, gz):
    good = idx_bytes(PIXELS)
    labels = write(tmp_path / f"l-idx1-ubyte{gz}", idx_bytes(LABELS))
    cases = {
        "truncated data": (good[:-100], "truncated"),
        "truncated header": (good[:9], "truncated"),
        "tiny": (good[:2], "truncated"),
        "wrong magic": (b"\x01\x02" + good[2:], "not an IDX file"),
        "png": (b"\x89PNG\r\n\x1a\n" + good[8:], "not an IDX file"),
        "float values": (idx_bytes(PIXELS.astype(np.float32), 0x0D), "unsigned bytes"),
        "two dims": (idx_bytes(PIXELS[0]), "dimensions"),
        "zero count": (idx_bytes(PIXELS[:0], dims=(0, 28, 28)), "declares 0"),
        "absurd side": (idx_bytes(PIXELS, dims=(7, 28, 2**31)), "image sides"),
        "absurd count": (idx_bytes(PIXELS, dims=(2**32 - 1, 16384, 16384)), "GiB" if gz else "truncated"),
        "trailing data": (good + b"\0" * 10, "more data"),
    }
    for name, (data, expected) in cases.items():
        path = write(tmp_path / f"{name.replace(' ', '_')}-idx3-ubyte{gz}", data)
        _refused(path, labels, expected)


def test_absurd_gzip_count_is_refused_before_allocating(tmp_path, monkeypatch):
    import maxq_deploy.data.idx as idx

    def no_alloc(*args, **kwargs):
        raise AssertionError("allocated")

    path = write(tmp_path / "x-idx3-ubyte.gz", idx_bytes(PIXELS, dims=(2**32 - 1, 16384, 16384)))
    monkeypatch.setattr(idx.np, "empty", no_alloc)
    _refused(path, match="absurd or damaged header")


def test_damaged_gzip_stream_is_one_line(tmp_path):
    data = gzip.compress(idx_bytes(PIXELS))
    path = tmp_path / "x-idx3-ubyte.gz"
    path.write_bytes(data[:-200])
    _refused(path, match="truncated")
    path.write_bytes(data[:40] + bytes(b ^ 0x55 for b in data[40:80]) + data[80:])
    _refused(path)


def test_label_count_must_match(tmp_path, pair):
    images, _ = pair
    labels = write(tmp_path / "short-labels-idx1-ubyte", idx_bytes(LABELS[:5]))
    _refused(images, labels, "5 labels")
    bad = write(tmp_path / "bad-labels-idx1-ubyte", idx_bytes(PIXELS))
    _refused(images, bad, "dimensions")


def test_labels_are_found_beside_the_images_else_required(tmp_path, pair):
    images, labels = pair
    assert open_dataset(images).label(6) == 9  # train-labels-idx1-ubyte beside train-images-idx3-ubyte
    labels.unlink()
    assert "--labels" in _refused(images)


def test_missing_fashion_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist_files(tmp_path)
    assert "\n" not in FASHION_MNIST_HINT


def test_cli_eval_idx_errors_are_one_line(tmp_path, pair, capsys):
    from maxq_deploy.cli.app import main

    images, _ = pair
    short = write(tmp_path / "short-labels-idx1-ubyte", idx_bytes(LABELS[:5]))
    model = tmp_path / "not-read-before-the-data.pt"
    with pytest.raises(SystemExit) as info:
        main(["eval", str(model), "--data", str(images), "--labels", str(short)])
    err = capsys.readouterr().err
    assert info.value.code != 0 and "Traceback" not in err
    assert [l for l in err.splitlines() if l.strip()] == [l for l in err.splitlines() if l.startswith("error:")]
    assert len(err.strip().splitlines()) == 1 and "5 labels" in err


def test_real_fashion_mnist_test_split():
    try:
        files = fashion_mnist_files()
    except DataError as exc:
        pytest.skip(str(exc))
    images = read_idx(files["test_images"], 3, "images")
    dataset = open_dataset(files["test_images"], files["test_labels"], require_labels=True)
    assert images.shape == (10000, 28, 28) and len(dataset) == 10000
    assert np.bincount(dataset.labels).tolist() == [1000] * 10
