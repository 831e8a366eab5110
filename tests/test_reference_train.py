"""maxq_deploy.reference.train: incremental-sparsity training, the digits data, and the cache of trained examples."""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from maxq_deploy.core.errors import OutputPathError
from maxq_deploy.core.sparsity import nonzeros_per_group
from maxq_deploy.reference.checkpoints import sparse_layers
from maxq_deploy.reference.train import (
    DIGITS_MEAN,
    DIGITS_STD,
    DigitsExample,
    TrainResult,
    accuracy,
    array_loader,
    cached_example,
    digits_arrays,
    save_digits_npz,
    sparsity_schedule_end,
    train_reference,
)

pytest.importorskip("sklearn")

DIGITS = 1797  # images in scikit-learn's digits


def _random_data(count: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, 8, 6, 6), dtype=np.float32), rng.integers(0, 10, count)


def _train(net: nn.Module, epochs: int = 3, **kwargs) -> TrainResult:
    images, labels = _random_data()
    return train_reference(net, array_loader(images, labels, 8, shuffle=True), epochs, 0.05, **kwargs)


@pytest.fixture(scope="module")
def digits32() -> dict[str, np.ndarray]:
    return digits_arrays()


# --- training ---------------------------------------------------------------------------------

def test_schedule_ends_one_epoch_before_the_last():
    assert [sparsity_schedule_end(e) for e in (0, 1, 2, 5)] == [0, 0, 1, 4]


def test_accuracy_counts_top1_and_restores_the_mode():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    batches = [(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])),
               (torch.tensor([[2.0, 1.0], [0.0, 3.0]]), torch.tensor([0, 1]))]
    model.train()
    assert accuracy(model, batches) == 75.0 and model.training
    model.eval()
    assert accuracy(model, batches) == 75.0 and not model.training
    assert accuracy(model, []) == 0.0


@pytest.mark.slow  # alone: the first optimizer step of a process imports torch._dynamo (seconds)
def test_training_follows_the_schedules_and_ends_fully_n_of_m(tiny_reference_net):
    net = tiny_reference_net()
    images, labels = _random_data()
    result = _train(net, val_loader=array_loader(images, labels, 12))
    assert [e.epoch for e in result.epochs] == [1, 2, 3]
    # dense share: cosine from 1 at epoch 0 to 0 at epoch 2 (the last epoch trains with the final masks)
    assert [e.dense_rate for e in result.epochs] == pytest.approx([1.0, math.cos(math.pi / 4), 0.0], abs=1e-12)
    # learning rate: cosine over all 9 steps, read at each epoch's start
    assert [e.lr for e in result.epochs] == pytest.approx([0.05 * 0.5 * (1 + math.cos(math.pi * s / 9)) for s in (0, 3, 6)])
    assert all(math.isfinite(e.loss) and 0.0 <= e.train_top1 <= 100.0 for e in result.epochs)
    assert result.final_val_top1 == result.epochs[-1].val_top1 == accuracy(net, array_loader(images, labels, 12))
    assert not net.training
    for layer in sparse_layers(net):
        assert nonzeros_per_group(layer.mask, 4).eq(2).all()


@pytest.mark.slow  # alone: the first optimizer step of a process imports torch._dynamo (seconds)
def test_training_is_reproducible_with_a_seed(tiny_reference_net):
    first, second = tiny_reference_net(seed=1), tiny_reference_net(seed=1)
    log_first, log_second = _train(first, seed=5), _train(second, seed=5)
    assert [asdict(e) for e in log_first.epochs] == [asdict(e) for e in log_second.epochs]
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))


@pytest.mark.slow  # alone: the first optimizer step of a process imports torch._dynamo (seconds)
def test_explicit_sparsity_window(tiny_reference_net):
    result = _train(tiny_reference_net(), epochs=4, sparsity_start=1, sparsity_end=3, schedule="linear")
    assert [e.dense_rate for e in result.epochs] == pytest.approx([1.0, 1.0, 0.5, 0.0])
    assert result.epochs[0].val_top1 is None  # no validation loader


def test_zero_epochs_refused_and_empty_result(tiny_reference_net):
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        _train(tiny_reference_net(), epochs=0)
    assert TrainResult().final_val_top1 is None


# --- digits --------------------------------------------------------------------------------------

def test_digits_arrays_split_and_normalization(digits32):
    x_train, y_train, x_test, y_test = (digits32[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    assert x_train.shape == (1437, 3, 32, 32) and x_test.shape == (360, 3, 32, 32)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64 and len(y_train) + len(y_test) == DIGITS
    assert np.array_equal(x_train[:, 0], x_train[:, 1]) and np.array_equal(x_train[:, 0], x_train[:, 2])  # grey in 3 channels
    assert np.bincount(y_test, minlength=10).min() >= 35 and np.bincount(y_test).max() <= 37  # stratified 20%
    everything = np.concatenate([x_train, x_test])
    assert abs(float(everything.mean())) < 0.01 and abs(float(everything.std()) - 1.0) < 0.01  # DIGITS_MEAN/STD are its statistics
    blank = (0.0 - DIGITS_MEAN) / DIGITS_STD  # the digits' black corners
    assert float(everything[:, :, 0, 0].min()) == pytest.approx(blank, abs=1e-5)


def test_digits_arrays_seed_and_size():
    small, again, other = digits_arrays(8, seed=0), digits_arrays(8, seed=0), digits_arrays(8, seed=1)
    assert small["x_train"].shape == (1437, 3, 8, 8)
    assert all(np.array_equal(small[k], again[k]) for k in small)
    assert not np.array_equal(small["y_test"], other["y_test"])


def test_save_digits_npz_writes_the_arrays(tmp_path):
    train, test = save_digits_npz(tmp_path / "data", image_size=8, prefix="d8")
    assert (train.name, test.name) == ("d8_train.npz", "d8_test.npz")
    arrays = digits_arrays(8)
    for path, split in ((train, "train"), (test, "test")):
        with np.load(path) as z:
            assert sorted(z.files) == ["images", "labels"]
            assert np.array_equal(z["images"], arrays[f"x_{split}"]) and np.array_equal(z["labels"], arrays[f"y_{split}"])
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["d8_test.npz", "d8_train.npz"]


def test_array_loader_batches_and_seeded_shuffle():
    images, labels = np.arange(20, dtype=np.float32).reshape(20, 1), np.arange(20)

    def order(**kwargs) -> list[int]:
        return torch.cat([y for _, y in array_loader(images, labels, 8, **kwargs)]).tolist()

    assert [len(y) for _, y in array_loader(images, labels, 8)] == [8, 8, 4]
    assert order() == list(range(20))
    assert order(shuffle=True, seed=3) == order(shuffle=True, seed=3) != list(range(20))
    assert order(shuffle=True, seed=3) != order(shuffle=True, seed=4)
    assert sorted(order(shuffle=True, seed=3)) == list(range(20))


# --- the cache of trained examples -------------------------------------------------------------------

CONFIG = {"arch": "resnet18", "nm": "2:4", "epochs": 3, "seed": 0}


class Trainer:
    """A ``train(out, checkpoint)`` callable that writes small files and counts its calls."""

    def __init__(self, pause: float = 0.0):
        self.calls: list[Path] = []
        self.pause = pause

    def __call__(self, out: Path, ckpt: Path) -> DigitsExample:
        self.calls.append(ckpt)
        time.sleep(self.pause)
        ckpt.write_bytes(b"weights")
        (out / "tr.npz").write_bytes(b"train")
        (out / "te.npz").write_bytes(b"test")
        return DigitsExample(out, ckpt, out / "tr.npz", out / "te.npz", "resnet18", "2:4", 32, 97.5, [{"epoch": 1}])


def _key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def test_cache_records_the_example_under_the_hash_of_its_config(tmp_path):
    trainer = Trainer()
    made = cached_example(tmp_path, "digits_resnet18", CONFIG, DigitsExample, trainer)
    info = tmp_path / f"digits_resnet18_{_key(CONFIG)}.json"
    assert trainer.calls == [info.with_suffix(".pth.tar")] and made.checkpoint == trainer.calls[0]
    assert json.loads(info.read_text())["test_top1"] == 97.5
    reordered = dict(reversed(list(CONFIG.items())))
    again = cached_example(tmp_path, "digits_resnet18", reordered, DigitsExample, trainer)
    assert len(trainer.calls) == 1 and again == made  # same settings in another order: reused, Paths again
    assert isinstance(again.train_npz, Path)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no lock file left behind


@pytest.mark.parametrize("change", [{"epochs": 4}, {"nm": "4:8"}, {"seed": 1}, {"lr": 0.1}])
def test_changed_settings_train_a_new_example(tmp_path, change):
    trainer = Trainer()
    cached_example(tmp_path, "ex", CONFIG, DigitsExample, trainer)
    cached_example(tmp_path, "ex", CONFIG | change, DigitsExample, trainer)
    assert [p.name for p in trainer.calls] == [f"ex_{_key(CONFIG)}.pth.tar", f"ex_{_key(CONFIG | change)}.pth.tar"]
    assert _key(CONFIG) != _key(CONFIG | change)


@pytest.mark.parametrize("damage", ["checkpoint", "test_npz", "bad_json", "unknown_field"])
def test_damaged_record_trains_again(tmp_path, damage):
    trainer = Trainer()
    made = cached_example(tmp_path, "ex", CONFIG, DigitsExample, trainer)
    info = tmp_path / f"ex_{_key(CONFIG)}.json"
    if damage == "bad_json":
        info.write_text("{not json")
    elif damage == "unknown_field":
        info.write_text(json.dumps(json.loads(info.read_text()) | {"colour": "red"}))
    else:
        getattr(made, damage).unlink()
    remade = cached_example(tmp_path, "ex", CONFIG, DigitsExample, trainer)
    assert len(trainer.calls) == 2 and remade == made and remade.test_npz.is_file()


def test_concurrent_callers_train_once(tmp_path):
    trainer = Trainer(pause=0.3)
    results: list[DigitsExample] = []
    threads = [threading.Thread(target=lambda: results.append(cached_example(tmp_path, "ex", CONFIG, DigitsExample, trainer)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(trainer.calls) == 1 and len(results) == 3 and all(r == results[0] for r in results)


def test_work_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputPathError, match="cannot create --workdir"):
        cached_example(tmp_path / "file" / "work", "ex", CONFIG, DigitsExample, Trainer())


@pytest.mark.slow
def test_digits_example_is_a_finished_2_of_4_network_reused_from_its_cache(tmp_path_factory):
    """The shared digits example (trained once per run, as tests/test_cpu_digits_accuracy.py uses it)."""
    from maxq_deploy.load.maxq_checkpoint import load_checkpoint
    from maxq_deploy.reference.train import prepare_digits_example

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "maxq_digits"
    example = prepare_digits_example(shared)
    assert (example.arch, example.nm, example.image_size) == ("resnet18", "2:4", 32)
    assert [e["dense_rate"] for e in example.history] == pytest.approx([1.0, math.cos(math.pi / 4), 0.0], abs=1e-12)
    assert example.test_top1 == example.history[-1]["val_top1"] >= 90.0
    ckpt = load_checkpoint(example.checkpoint)
    assert (ckpt.arch, str(ckpt.nm), ckpt.epoch) == ("resnet18", "2:4", 3)
    assert ckpt.best_acc1 == pytest.approx(example.test_top1) and not ckpt.unfinished_layers and len(ckpt.layers) == 19
    stamp = example.checkpoint.stat().st_mtime_ns
    assert prepare_digits_example(shared) == example and example.checkpoint.stat().st_mtime_ns == stamp
