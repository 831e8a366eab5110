"""maxq_deploy.data.labels: class labels from .npy arrays and text files, read strictly and refused in one line."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from maxq_deploy.core.errors import DataError
from maxq_deploy.data.labels import MAX_LABEL, check_labels, read_labels


def _text(tmp_path: Path, content: str | bytes, name: str = "labels.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _npy(tmp_path: Path, array: np.ndarray, name: str = "labels.npy") -> Path:
    path = tmp_path / name
    np.save(path, array)
    return path


def test_text_file_one_integer_per_line(tmp_path):
    labels = read_labels(_text(tmp_path, "3\n 1 \n\n0\n12\n"), 4, "images")
    assert labels.tolist() == [3, 1, 0, 12] and labels.dtype == np.int64  # blank lines and spaces ignored


def test_text_file_with_bom_and_crlf(tmp_path):
    assert read_labels(_text(tmp_path, b"\xef\xbb\xbf7\r\n8\r\n"), 2, "images").tolist() == [7, 8]


@pytest.mark.parametrize("line, words", [
    ("1_0", r"line 2: '1_0' is not a class index \(one integer per line, digits 0-9 only\)"),
    ("\u0663", r"line 2: '\u0663' is not a class index"),  # an Arabic-Indic three: int() would read 3
    ("2.0", r"line 2: '2.0' is not a class index"),
    ("cat", r"line 2: 'cat' is not a class index"),
    ("+4", r"line 2: '\+4' is not a class index"),
    ("1234567890123456789", r"line 2: 1234567890123456789 is far too large for a class index"),
    ("-1", r"must be >= 0, found -1"),
    (str(MAX_LABEL + 1), r"must be class indices below 2,147,483,648, found 2147483648"),
])
def test_text_lines_that_are_not_class_indices(tmp_path, line, words):
    path = _text(tmp_path, f"0\n{line}\n")
    with pytest.raises(DataError, match=words) as info:
        read_labels(path, 2, "images")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_largest_class_index_is_accepted(tmp_path):
    assert read_labels(_text(tmp_path, f"{MAX_LABEL}\n"), 1, "images").tolist() == [MAX_LABEL]


def test_text_that_is_not_utf8(tmp_path):
    with pytest.raises(DataError, match="a labels text file needs one integer per line"):
        read_labels(_text(tmp_path, b"1\n\xff\xfe\x00\n"), 2, "images")


def test_counts_must_match(tmp_path):
    with pytest.raises(DataError, match=r"3 labels in .*labels\.txt but 4 images: counts must match"):
        read_labels(_text(tmp_path, "1\n2\n3\n"), 4, "images")


def test_empty_text_file_for_no_images(tmp_path):
    labels = read_labels(_text(tmp_path, "\n\n"), 0, "images")
    assert labels.shape == (0,) and labels.dtype == np.int64


@pytest.mark.parametrize("array", [np.array([0, 9, 4], np.uint8), np.array([0, 9, 4], np.int32),
                                   np.array([0.0, 9.0, 4.0], np.float32), np.array([0, 9, 4], np.uint64)])
def test_npy_integer_and_whole_float_labels(tmp_path, array):
    labels = read_labels(_npy(tmp_path, array), 3, "images")
    assert labels.tolist() == [0, 9, 4] and labels.dtype == np.int64


def test_upper_case_npy_suffix_is_an_array(tmp_path):
    path = tmp_path / "LABELS.NPY"
    with open(path, "wb") as f:  # through a handle: np.save would append .npy to the name
        np.save(f, np.array([5, 6]))
    assert read_labels(path, 2, "images").tolist() == [5, 6]


@pytest.mark.parametrize("array, words", [
    (np.array([0, 2**64 - 1], np.uint64), r"below 2,147,483,648, found 18446744073709551615"),  # not wrapped to -1
    (np.array([0, -3], np.int64), r"must be >= 0, found -3"),
    (np.array([0.0, 1.5]), r"must be integers, got dtype float64"),
    (np.array([0.0, np.nan]), r"must be integers, got dtype float64"),
    (np.array([0.0, np.inf], np.float32), r"must be integers, got dtype float32"),
    (np.array([0.0, 1e300]), r"below 2,147,483,648, found 1e\+300"),
    (np.array([True, False]), r"must be integers, got dtype bool"),
    (np.array(["1", "2"]), r"must be integers, got dtype <U1"),
    (np.eye(2, dtype=np.int64), r"1-D array of class indices, got shape \(2, 2\) \(one-hot\? store class indices: labels\.argmax\(1\)\)"),
    (np.zeros((2, 1, 1), np.int64), r"1-D array of class indices, got shape \(2, 1, 1\)$"),
    (np.int64(3), r"1-D array of class indices, got shape \(\)$"),
])
def test_npy_labels_refused(tmp_path, array, words):
    with pytest.raises(DataError, match=words):
        read_labels(_npy(tmp_path, array), 2, "images")


@pytest.mark.parametrize("content, words", [
    (None, "not a readable .npy labels array"),  # a pickled object array: never unpickled
    (b"\x93NUMPY\x01\x00", "not a readable .npy labels array"),  # truncated header
    (b"", "not a readable .npy labels array"),
])
def test_unreadable_npy_files(tmp_path, content, words):
    path = tmp_path / "labels.npy"
    if content is None:
        np.save(path, np.array([{"class": 1}, 2], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match=words) as info:
        read_labels(path, 2, "images")
    assert str(path) in str(info.value)


def test_paths_that_are_not_files(tmp_path):
    with pytest.raises(DataError, match="labels file not found: .*missing.txt"):
        read_labels(tmp_path / "missing.txt", 1, "images")
    (tmp_path / "folder.npy").mkdir()
    with pytest.raises(DataError, match=r"folder\.npy is a folder: give a \.npy array or a text file of one integer per line"):
        read_labels(tmp_path / "folder.npy", 1, "images")
    os.mkfifo(tmp_path / "fifo.txt")
    with pytest.raises(DataError, match=r"fifo\.txt is not a regular file \(a FIFO, device or socket\)"):
        read_labels(tmp_path / "fifo.txt", 1, "images")  # named, not opened: reading a FIFO would block


def test_check_labels_names_the_source_and_what_is_counted():
    assert check_labels(np.array([1, 2], np.uint16), 2, "memory", "images").dtype == np.int64
    assert check_labels(np.array([], np.float64), 0, "memory", "images").dtype == np.int64
    with pytest.raises(DataError, match=r"^2 labels in train\.npz but 3 images in train\.npz: counts must match$"):
        check_labels(np.array([1, 2]), 3, "train.npz", "images in train.npz")
