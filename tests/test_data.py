"""Data sets and preprocessing: the three sources, labels, unreadable images, loaders, errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maxq_deploy.data import (
    Batches,
    DataReport,
    ImageDataset,
    Preprocess,
    ShardSampler,
    Unreadable,
    check_input_shape,
    make_loader,
    open_dataset,
)
from maxq_deploy.core.errors import DataError

SIZE = 32
PER_CLASS = 3
SMALL = Preprocess(resize=SIZE, image_size=SIZE)


@dataclass
class Digits:
    folder: Path  # ImageFolder tree, classes "0".."9"
    flat: Path  # the same images without class folders
    npz: Path  # preprocessed images + labels
    labels: np.ndarray  # in folder order
    count: int


def write_digits(root: Path, per_class: int = PER_CLASS) -> Digits:
    """Real images: scikit-learn's 8x8 digits as 32x32 RGB PNG/JPEG files (no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder, flat = root / "folder", root / "flat"
    flat.mkdir(parents=True)
    taken: dict[int, int] = {}
    for i, (pixels, target) in enumerate(zip(digits.images, digits.target)):
        if taken.get(int(target), 0) >= per_class:
            continue
        taken[int(target)] = taken.get(int(target), 0) + 1
        image = Image.fromarray((pixels / 16 * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.NEAREST).convert("RGB")
        suffix = ".png" if i % 2 else ".jpg"
        (folder / str(target)).mkdir(parents=True, exist_ok=True)
        image.save(folder / str(target) / f"{i:04d}{suffix}")
        image.save(flat / f"{i:04d}{suffix}")
        if len(taken) == 10 and all(v == per_class for v in taken.values()):
            break
    dataset = open_dataset(folder, preprocess=SMALL)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))]).numpy()
    np.savez(root / "digits.npz", images=images, labels=dataset.labels)
    return Digits(folder, flat, root / "digits.npz", dataset.labels.copy(), len(dataset))


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    return write_digits(tmp_path_factory.mktemp("digits"))


def add_corrupt_images(folder: Path) -> list[Path]:
    """A garbage .jpg and a truncated .png among the real images."""
    garbage = folder / "3" / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg" * 20)
    good_png = sorted(folder.glob("*/*.png"))[0]
    truncated = folder / "4" / "truncated.png"
    truncated.write_bytes(good_png.read_bytes()[: good_png.stat().st_size // 2])
    return [garbage, truncated]


# --- Preprocess ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"resize": 100, "image_size": 224}, "resize"),
        ({"resize": 0}, "resize"),
        ({"image_size": -3}, "image_size"),
        ({"image_size": 2.5}, "image_size"),
        ({"mean": (0.5, 0.5)}, "mean"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
        ({"mean": "abc"}, "mean"),
    ],
)
def test_preprocess_rejects_bad_values_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(DataError, match=rf"Preprocess\.{field}"):
        Preprocess(**kwargs)


def test_preprocess_normalizes_a_constant_image_exactly() -> None:
    pre = Preprocess(resize=20, image_size=16, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    out = pre(Image.new("RGB", (30, 20), (255, 51, 0)))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    expected = torch.tensor([(1.0 - 0.5) / 0.5, (0.2 - 0.25) / 0.25, 0.0])
    torch.testing.assert_close(out.mean(dim=(1, 2)), expected, atol=1e-6, rtol=0)


def test_preprocess_resizes_the_shorter_side_and_center_crops() -> None:
    # 64x32 landscape, left half red, right half blue: after resize(16) it is 32x16, the 16x16
    # center crop keeps 8 columns of each colour.
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    out = Preprocess(resize=16, image_size=16, mean=(0, 0, 0), std=(1, 1, 1))(image)
    red = out[0].mean(dim=0)
    assert torch.all(red[:7] > 0.99) and torch.all(red[9:] < 0.01)
    # portrait: the crop is taken from the vertical middle
    tall = Image.new("RGB", (10, 40), (0, 0, 0))
    tall.paste((255, 255, 255), (0, 18, 10, 22))  # rows 18..21; the crop is rows 15..24
    out = Preprocess(resize=10, image_size=10, mean=(0, 0, 0), std=(1, 1, 1))(tall)
    assert out[0, 5, :].min() > 0.99 and out[0, 0, :].max() < 0.01


def test_preprocess_converts_grayscale_and_palette_images(tmp_path: Path) -> None:
    Image.new("L", (32, 32), 128).save(tmp_path / "gray.png")
    Image.new("P", (32, 32), 3).save(tmp_path / "palette.png")
    dataset = open_dataset(tmp_path, preprocess=SMALL)
    assert [tuple(dataset[i][0].shape) for i in range(2)] == [(3, SIZE, SIZE)] * 2


# --- sources ---------------------------------------------------------------------------------


def test_imagefolder_yields_tensors_and_class_labels(digits: Digits) -> None:
    dataset = open_dataset(digits.folder, preprocess=SMALL)
    assert dataset.kind == "imagefolder" and dataset.has_labels
    assert dataset.class_names == [str(i) for i in range(10)] and dataset.num_classes == 10
    assert len(dataset) == digits.count == 10 * PER_CLASS
    image, label = dataset[PER_CLASS]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32 and label == 1
    assert dataset.sample_shape == (3, SIZE, SIZE)


def test_imagefolder_classes_are_sorted_like_torchvision(tmp_path: Path) -> None:
    for name in ("b", "a", "c10", "c2", ".hidden"):
        (tmp_path / name / "sub").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / name / "sub" / "x.PNG")  # nested, upper-case suffix
    (tmp_path / "empty_class").mkdir()
    dataset = open_dataset(tmp_path, preprocess=Preprocess(8, 8))
    assert dataset.class_names == ["a", "b", "c10", "c2", "empty_class"]
    assert [dataset.label(i) for i in range(len(dataset))] == [0, 1, 2, 3]


def test_flat_folder_is_unlabelled_unless_labels_are_given(digits: Digits, tmp_path: Path) -> None:
    dataset = open_dataset(digits.flat, preprocess=SMALL)
    assert dataset.kind == "flat" and not dataset.has_labels and dataset.num_classes is None
    assert dataset[0][1] == -1 and len(dataset) == digits.count
    names = sorted(os.listdir(digits.flat))
    labels_txt = tmp_path / "labels.txt"
    labels_txt.write_text("\n".join(str(int(name[:4]) % 10) for name in names) + "\n")
    labelled = open_dataset(digits.flat, labels=labels_txt, preprocess=SMALL)
    assert labelled.has_labels and labelled.label(1) == int(names[1][:4]) % 10
    np.save(tmp_path / "labels.npy", np.arange(len(names)) % 10)
    assert open_dataset(digits.flat, labels=tmp_path / "labels.npy", preprocess=SMALL).label(13) == 3


def test_arrays_npz_and_npy_with_labels(digits: Digits, tmp_path: Path) -> None:
    dataset = open_dataset(digits.npz)
    assert dataset.kind == "arrays" and dataset.has_labels and dataset.num_classes == 10
    folder = open_dataset(digits.folder, preprocess=SMALL)
    torch.testing.assert_close(dataset[7][0], folder[7][0])
    assert dataset[7][1] == folder[7][1]
    with np.load(digits.npz) as z:
        images, labels = z["images"], z["labels"]
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    npy = open_dataset(tmp_path / "images.npy", labels=tmp_path / "labels.npy")
    assert npy.kind == "arrays" and npy.label(5) == int(labels[5]) and len(npy) == len(images)
    np.savez(tmp_path / "xy.npz", x=images[:4].astype(np.float16), y=labels[:4])
    xy = open_dataset(tmp_path / "xy.npz")
    assert xy[0][0].dtype == torch.float32 and xy.label(3) == int(labels[3])
    assert not open_dataset(tmp_path / "images.npy").has_labels


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 3, 8), np.float32), "4-D NCHW"),
        (np.zeros((4, 1, 8, 8), np.float32), "3 channels"),
        (np.zeros((4, 8, 8, 3), np.float32), "NHWC"),
        (np.zeros((4, 3, 8, 8), np.uint8), "preprocessed float"),
        (np.zeros((0, 3, 8, 8), np.float32), "no images"),
    ],
)
def test_arrays_of_wrong_shape_or_type_are_data_errors(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=message):
        open_dataset(tmp_path / "bad.npy")


def test_label_problems_are_data_errors(digits: Digits, tmp_path: Path) -> None:
    images = np.zeros((4, 3, 8, 8), np.float32)
    np.save(tmp_path / "images.npy", images)
    cases = {
        "three.npy": (np.arange(3), "3 labels .* but 4 images"),
        "onehot.npy": (np.eye(4), "one-hot"),
        "negative.npy": (np.array([0, 1, -1, 2]), ">= 0"),
        "floats.npy": (np.array([0.5, 1, 2, 3]), "integers"),
    }
    for name, (labels, message) in cases.items():
        np.save(tmp_path / name, labels)
        with pytest.raises(DataError, match=message):
            open_dataset(tmp_path / "images.npy", labels=tmp_path / name)
    with pytest.raises(DataError, match="labels file not found"):
        open_dataset(tmp_path / "images.npy", labels=tmp_path / "missing.npy")
    (tmp_path / "words.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match="one integer per line"):
        open_dataset(digits.flat, labels=tmp_path / "words.txt")
    np.save(tmp_path / "short.npy", np.arange(5))
    with pytest.raises(DataError, match=f"5 labels .* but {digits.count} images"):
        open_dataset(digits.flat, labels=tmp_path / "short.npy")
    with pytest.raises(DataError, match="drop --labels"):
        open_dataset(digits.folder, labels=tmp_path / "short.npy")


def test_missing_labels_are_an_error_where_labels_are_required(digits: Digits, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no labels .*flat.* --labels"):
        open_dataset(digits.flat, require_labels=True)
    np.save(tmp_path / "images.npy", np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(DataError, match="no labels .*arrays"):
        open_dataset(tmp_path / "images.npy", require_labels=True)


def test_empty_or_imageless_folders_and_missing_paths_are_data_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        open_dataset(empty)
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images in"):
        open_dataset(notes)
    with pytest.raises(DataError, match="not found"):
        open_dataset(tmp_path / "nowhere")
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(DataError, match="folder of images .* .npy/.npz"):
        open_dataset(tmp_path / "model.onnx")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        open_dataset(tmp_path / "broken.npz")


# --- loaders and unreadable images -----------------------------------------------------------


def test_loader_batches_in_order(digits: Digits) -> None:
    dataset = open_dataset(digits.folder, preprocess=SMALL)
    loader = make_loader(dataset, batch_size=7, workers=0)
    assert isinstance(loader, Batches) and len(loader) == 5
    batches = list(loader)
    assert [len(y) for _, y in batches] == [7, 7, 7, 7, 2]
    assert batches[0][0].shape == (7, 3, SIZE, SIZE) and batches[0][1].dtype == torch.int64
    assert torch.cat([y for _, y in batches]).tolist() == dataset.labels.tolist()
    assert loader.report == DataReport(images=digits.count, skipped=0)


def test_shuffle_is_seeded(digits: Digits) -> None:
    dataset = open_dataset(digits.npz)
    order = lambda seed: torch.cat([y for _, y in make_loader(dataset, 8, 0, shuffle=True, seed=seed)]).tolist()  # noqa: E731
    assert order(3) == order(3) and order(3) != dataset.labels.tolist()
    assert sorted(order(3)) == sorted(dataset.labels.tolist())


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_images_are_skipped_and_counted_exactly(digits: Digits, tmp_path: Path, workers: int) -> None:
    import shutil

    folder = tmp_path / "folder"
    shutil.copytree(digits.folder, folder)
    bad = add_corrupt_images(folder)
    dataset = open_dataset(folder, preprocess=SMALL)
    assert len(dataset) == digits.count + 2
    assert isinstance(dataset[dataset.files.index(str(bad[0]))][0], Unreadable)
    loader = make_loader(dataset, batch_size=4, workers=workers)
    seen = sum(len(y) for _, y in loader)
    assert seen == digits.count and loader.skipped == 2 and loader.report.images == digits.count
    assert sorted(Path(s.split(": ")[0]).name for s in loader.report.skipped_files) == ["garbage.jpg", "truncated.png"]
    assert sum(len(y) for _, y in loader) == digits.count and loader.skipped == 2  # a new pass counts anew


def test_a_batch_of_only_unreadable_images_is_dropped(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(b"\xff\xd8 broken")
    Image.new("RGB", (8, 8)).save(tmp_path / "9.png")
    loader = make_loader(open_dataset(tmp_path, preprocess=Preprocess(8, 8)), batch_size=3, workers=0)
    assert [len(y) for _, y in loader] == [1] and loader.skipped == 3


def test_shard_sampler_gives_each_index_to_exactly_one_rank() -> None:
    shards = [list(ShardSampler(11, rank, 4)) for rank in range(4)]
    assert sorted(i for shard in shards for i in shard) == list(range(11))
    assert [len(ShardSampler(11, rank, 4)) for rank in range(4)] == [3, 3, 3, 2]


def test_distributed_without_an_initialized_group_is_a_plain_loader(digits: Digits) -> None:
    dataset = open_dataset(digits.npz)
    assert sum(len(y) for _, y in make_loader(dataset, 8, 0, distributed=True)) == len(dataset)


def test_distributed_loaders_pad_for_training_and_not_for_eval(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.utils.data.distributed import DistributedSampler

    np.savez(tmp_path / "five.npz", images=np.zeros((5, 3, 4, 4), np.float32), labels=np.arange(5))
    dataset = open_dataset(tmp_path / "five.npz")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        train = make_loader(dataset, 2, 0, shuffle=True, distributed=True)
        assert isinstance(train.sampler, DistributedSampler)
        train.set_epoch(1)
        assert sorted(torch.cat([y for _, y in train]).tolist()) == list(range(5))
        evaluation = make_loader(dataset, 2, 0, distributed=True, pad_shards=False)
        assert isinstance(evaluation.sampler, ShardSampler) and sum(len(y) for _, y in evaluation) == 5
    finally:
        dist.destroy_process_group()


def test_check_input_shape_explains_fixed_size_mismatches(digits: Digits) -> None:
    dataset = open_dataset(digits.folder, preprocess=SMALL)
    check_input_shape(dataset, 3, None)
    check_input_shape(dataset, 3, SIZE)
    check_input_shape(dataset, 3, (None, SIZE))
    with pytest.raises(DataError, match=r"data is 3x32x32 but model.onnx expects 3x224x224: pass --image-size 224"):
        check_input_shape(dataset, 3, 224, what="model.onnx")
    arrays = open_dataset(digits.npz)
    with pytest.raises(DataError, match="re-make the arrays"):
        check_input_shape(arrays, 3, (64, 64))
    assert isinstance(arrays, ImageDataset)
