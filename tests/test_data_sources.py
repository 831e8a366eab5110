"""maxq_deploy.data.sources: folder walks a user can trust (links, unreadable entries) and non-finite data refused."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from maxq_deploy.data import Preprocess, make_loader, open_dataset
from maxq_deploy.core.errors import DataError


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
