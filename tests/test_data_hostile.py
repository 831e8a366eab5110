"""Data decoding and folder walks a user can trust (in-process, fast): every Pillow mode to the
8-bit RGB a user expects, links and unreadable entries, non-finite data, the memory pre-check."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from maxq_deploy.data import Preprocess, check_batch_memory, make_loader, open_dataset, to_rgb8
from maxq_deploy.core.errors import DataError, OutputPathError

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


def _tree(root):
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(root / "a" / f"{i}.png")
    Image.new("RGB", (20, 20)).save(root / "b" / "x.png")
    os.symlink("..", root / "a" / "loop")
    os.symlink("../a/0.png", root / "b" / "same.png")
    os.link(root / "a" / "1.png", root / "b" / "hard.png")
    os.symlink("missing.png", root / "b" / "dangling.png")


def test_walk_never_loops_never_counts_twice_and_names_the_unreadable(tmp_path, monkeypatch):
    _tree(tmp_path)
    (tmp_path / "c").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "c" / "y.png")
    real_scandir = os.scandir

    def scandir(path):  # a class folder without read permission (root ignores chmod: simulate it)
        if str(path).endswith(os.sep + "c"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    ds = open_dataset(tmp_path, preprocess=Preprocess(resize=20, image_size=20))
    assert ds.class_names == ["a", "b", "c"]
    assert sorted(os.path.relpath(f, tmp_path) for f in ds.files) == ["a/0.png", "a/1.png", "a/2.png", "b/x.png"]
    assert ds.duplicates == 2
    assert sorted(os.path.relpath(u.path, tmp_path) for u in ds.unreadable) == ["b/dangling.png", "c"]
    assert "2 unreadable entries skipped" in ds.describe() and "2 duplicate(s)" in ds.describe()
    loader = make_loader(ds, batch_size=2, workers=0)
    assert sum(len(y) for _, y in loader) == 4
    assert loader.report.skipped == 2 and any("Permission denied" in s for s in loader.report.skipped_files)


def test_non_finite_arrays_and_images_are_refused_naming_the_first_bad_index(tmp_path):
    x = np.zeros((5, 3, 8, 8), np.float32)
    x[2, 1, 3, 4] = np.inf
    np.savez(tmp_path / "x.npz", images=x)  # loaded whole: refused when opened
    with pytest.raises(DataError, match=r"x\.npz holds non-finite values \(inf\), first at index \[2, 1, 3, 4\]"):
        open_dataset(tmp_path / "x.npz")
    np.save(tmp_path / "x.npy", x)  # memory-mapped: refused when the bad sample is read, before it is used
    with pytest.raises(DataError, match=r"x\.npy holds non-finite values \(NaN or Inf\) at index \[2, 1, 3, 4\]"):
        list(make_loader(open_dataset(tmp_path / "x.npy"), batch_size=2, workers=0))
    folder = tmp_path / "imgs" / "c"
    folder.mkdir(parents=True)
    f = np.ones((10, 10), np.float32)
    f[6, 2] = np.nan
    Image.fromarray(f).save(folder / "n.tif")
    ds = open_dataset(tmp_path / "imgs", preprocess=Preprocess(resize=10, image_size=10))
    with pytest.raises(DataError, match=r"n\.tif decodes to non-finite values .*\[6, 2\]"):
        list(make_loader(ds, batch_size=1, workers=0))


def test_memory_pre_check_refuses_what_cannot_fit():
    with pytest.raises(DataError, match=r"needs at least .* GiB"):
        check_batch_memory(10**6, (3, 4096, 4096))
    check_batch_memory(2, (3, 32, 32))  # small: no error
    with pytest.raises(DataError, match="at most 16384"):
        Preprocess(resize=10**6, image_size=224)


def test_rename_failure_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from maxq_deploy.core import files as artifacts
    def refuse(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(artifacts.os, "replace", refuse)
    with pytest.raises(OutputPathError, match="cannot move the finished output into place"):
        with artifacts.atomic_output(tmp_path / "o.pt") as tmp:
            tmp.write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []
