"""Accuracy: top-k arithmetic, every stage's model on real images, distributed counts, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from maxq_deploy.data import Preprocess, open_dataset
from maxq_deploy.core.errors import DataError
from maxq_deploy.evaluate import EvalResult, evaluate, evaluate_runner, topk_correct
from maxq_deploy.runtimes import TorchRunner

SIZE = 32
PER_CLASS = 3
SMALL = Preprocess(resize=SIZE, image_size=SIZE)
SMALL_ARGS = ["--resize", SIZE, "--image-size", SIZE]


@dataclass
class Digits:
    folder: Path  # ImageFolder tree "0".."9", plus two unreadable files in ``corrupt``
    corrupt: Path
    flat: Path
    npz: Path  # preprocessed images + labels, same order as ``folder``


def write_digits(root: Path) -> Digits:
    """scikit-learn's 8x8 digits as 32x32 RGB PNG/JPEG files (real images, no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder, flat = root / "folder", root / "flat"
    flat.mkdir(parents=True)
    counts = dict.fromkeys(range(10), 0)
    for i, (pixels, target) in enumerate(zip(digits.images, digits.target.tolist())):
        if counts[target] == PER_CLASS:
            continue
        counts[target] += 1
        image = Image.fromarray((pixels / 16 * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.NEAREST).convert("RGB")
        (folder / str(target)).mkdir(parents=True, exist_ok=True)
        for where in (folder / str(target), flat):
            image.save(where / f"{i:04d}{'.png' if i % 2 else '.jpg'}")
        if min(counts.values()) == PER_CLASS:
            break
    dataset = open_dataset(folder, preprocess=SMALL)
    images = torch.stack([dataset[i][0] for i in range(len(dataset))]).numpy()
    np.savez(root / "digits.npz", images=images, labels=dataset.labels)
    corrupt = root / "corrupt"
    shutil.copytree(folder, corrupt)
    (corrupt / "3" / "garbage.jpg").write_bytes(b"not an image at all" * 10)
    png = sorted(corrupt.glob("*/*.png"))[0]
    (corrupt / "7" / "truncated.png").write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    return Digits(folder, corrupt, flat, root / "digits.npz")


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    return write_digits(tmp_path_factory.mktemp("digits"))


def export_folded_onnx(folded: Path, output: Path, size: int = SIZE) -> Path:
    """The project's exporter where it exists, else torch's TorchScript exporter (same I/O names)."""
    try:
        from maxq_deploy.export.tensorrt_form import export_onnx
    except ImportError:
        from maxq_deploy.load.torch_model import load_torch_model

        torch.onnx.export(
            load_torch_model(folded).module, (torch.zeros(1, 3, size, size),), str(output), input_names=["input"],
            output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17, dynamo=False,
        )
        return output
    export_onnx(folded, output, input_size=size)
    return output


class NearestCentroid(nn.Module):
    """A classifier that really classifies the digits: logits = -squared distance to class means."""

    def __init__(self, centroids: torch.Tensor):
        super().__init__()
        self.register_buffer("centroids", centroids.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return -((flat[:, None, :] - self.centroids[None]) ** 2).sum(-1)


def nearest_centroid(npz: Path) -> tuple[NearestCentroid, np.ndarray]:
    """The module (fit on the digits themselves) and scikit-learn's predictions for the same fit."""
    from sklearn.neighbors import NearestCentroid as SkNearestCentroid

    with np.load(npz) as z:
        images, labels = z["images"], z["labels"]
    centroids = torch.stack([torch.from_numpy(images[labels == c]).mean(0) for c in range(10)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "zero standard deviation": constant border pixels
        sk = SkNearestCentroid().fit(images.reshape(len(images), -1), labels)
    return NearestCentroid(centroids).eval(), sk.predict(images.reshape(len(images), -1))


class Lookup(nn.Module):
    """Returns hand-made logits: image i carries i in pixel [0, 0, 0]."""

    def __init__(self, logits: np.ndarray):
        super().__init__()
        self.register_buffer("table", torch.from_numpy(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x[:, 0, 0, 0].round().long()]


def lookup_data(tmp_path: Path, labels: list[int], logits: np.ndarray) -> Path:
    images = np.zeros((len(labels), 3, 4, 4), np.float32)
    images[:, 0, 0, 0] = np.arange(len(labels))
    np.savez(tmp_path / "lookup.npz", images=images, labels=np.asarray(labels))
    return tmp_path / "lookup.npz"


# --- top-k arithmetic ------------------------------------------------------------------------


def test_topk_correct_counts_ranks_with_ties_in_the_labels_favour() -> None:
    logits = np.array([[0, 9, 1, 2, 3, 4, 5], [9, 8, 7, 6, 5, 4, 3], [1, 1, 1, 1, 1, 1, 1]], np.float32)
    labels = np.array([1, 5, 6])
    assert topk_correct(logits, labels, 1) == 2  # row 0 (argmax 1), row 2 (all tied)
    assert topk_correct(logits, labels, 5) == 2  # row 1's label 5 ranks 6th
    assert topk_correct(logits, np.array([1, 4, 6]), 5) == 3


def test_top1_top5_on_hand_made_logits_with_uneven_batches(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = [0, 1, 2, 3, 4, 5, 6, 7]
    logits = rng.permutation(np.tile(np.arange(8, dtype=np.float32), (8, 1)).T).T.copy()  # a random ranking per image
    ranks = [int((logits[i] > logits[i, y]).sum()) for i, y in enumerate(labels)]
    dataset = open_dataset(lookup_data(tmp_path, labels, logits))
    for batch_size in (1, 3, 8):
        result = evaluate_runner(TorchRunner(Lookup(logits)), dataset, batch_size=batch_size, workers=0)
        assert result.images == 8 and result.skipped_corrupt == 0
        assert result.correct1 == sum(r == 0 for r in ranks) and result.correct5 == sum(r < 5 for r in ranks)
        assert result.top1 == pytest.approx(100 * result.correct1 / 8) and result.top5 == pytest.approx(100 * result.correct5 / 8)
    assert result.predictions.tolist() == logits.argmax(1).tolist()


def test_top5_is_none_below_five_classes(tmp_path: Path) -> None:
    logits = np.eye(4, dtype=np.float32)[[0, 1, 2, 0]]
    result = evaluate_runner(TorchRunner(Lookup(logits)), open_dataset(lookup_data(tmp_path, [0, 1, 2, 3], logits)), workers=0)
    assert result.top1 == 75.0 and result.top5 is None and result.correct5 is None and result.num_classes == 4
    assert result.summary()["top5"] is None


def test_fewer_model_classes_than_labels_is_a_clear_error(tmp_path: Path, digits: Digits) -> None:
    logits = np.zeros((3, 3), np.float32)
    arrays = open_dataset(lookup_data(tmp_path, [0, 1, 5], logits))
    with pytest.raises(DataError, match="predicts 3 classes but the data has labels up to 5"):
        evaluate_runner(TorchRunner(Lookup(logits)), arrays, workers=0)  # learnt from the logits
    with pytest.raises(DataError, match="predicts 3 classes but the data has 10 class folders"):
        evaluate_runner(TorchRunner(nn.Identity(), num_classes=3), open_dataset(digits.folder, preprocess=SMALL))


def test_limit_spreads_over_all_classes(digits: Digits) -> None:
    model, _ = nearest_centroid(digits.npz)
    result = evaluate_runner(TorchRunner(model), open_dataset(digits.folder, preprocess=SMALL), limit=10, workers=0)
    assert result.images == 10
    with pytest.raises(DataError, match="--limit must be >= 1"):
        evaluate_runner(TorchRunner(model), open_dataset(digits.npz), limit=0)


# --- real images -----------------------------------------------------------------------------


def test_a_real_classifier_scores_as_scikit_learn_predicts(digits: Digits) -> None:
    model, sk_predictions = nearest_centroid(digits.npz)
    labels = np.load(digits.npz)["labels"]
    expected = 100.0 * float((sk_predictions == labels).mean())
    for data in (open_dataset(digits.folder, preprocess=SMALL), open_dataset(digits.npz)):
        result = evaluate_runner(TorchRunner(model, num_classes=10), data, batch_size=7, workers=0)
        assert result.predictions.tolist() == sk_predictions.tolist()
        assert result.top1 == pytest.approx(expected) and result.top1 > 80.0 and result.top5 >= result.top1
        assert result.data_kind == data.kind


def test_every_stage_gives_the_same_accuracy_on_real_images(store, digits: Digits, tmp_path: Path) -> None:
    """MaxQ checkpoint (torch), folded checkpoint (torch) and ONNX (ONNX Runtime): same predictions."""
    from maxq_deploy.load.torch_model import load_torch_model

    folded = store.folded()
    onnx_path = export_folded_onnx(folded, tmp_path / "resnet18.onnx", SIZE)
    data = open_dataset(digits.folder, preprocess=SMALL)
    maxq = evaluate(store.checkpoint(), data, workers=0)
    fold = evaluate(folded, data, batch_size=8, workers=0)
    ort = evaluate(onnx_path, data, batch_size=5, workers=0, threads=1)
    assert (maxq.model_kind, fold.model_kind, ort.backend) == ("maxq-checkpoint", "folded-checkpoint", "onnxruntime")
    # Only meaningful if no image sits on a near-tie between its two best classes.
    logits = TorchRunner(load_torch_model(folded).module).run(torch.stack([data[i][0] for i in range(len(data))]).numpy())
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert float((top2[:, 1] - top2[:, 0]).min() / np.abs(logits).max()) > 1e-4
    assert fold.predictions.tolist() == ort.predictions.tolist() == maxq.predictions.tolist()
    assert fold.top1 == ort.top1 == maxq.top1 and fold.top5 == ort.top5 == maxq.top5
    assert fold.correct1 == ort.correct1 and fold.images == ort.images == len(data)
    assert ort.agreement(fold) == 100.0


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_images_are_skipped_with_an_exact_count(digits: Digits, workers: int) -> None:
    model, _ = nearest_centroid(digits.npz)
    clean = evaluate_runner(TorchRunner(model), open_dataset(digits.folder, preprocess=SMALL), workers=0)
    result = evaluate_runner(TorchRunner(model), open_dataset(digits.corrupt, preprocess=SMALL), batch_size=4, workers=workers)
    assert result.skipped_corrupt == 2 and result.images == clean.images
    assert result.correct1 == clean.correct1 and len(result.skipped_files) == 2


def test_unlabelled_data_is_refused(digits: Digits, store) -> None:
    with pytest.raises(DataError, match="no labels"):
        evaluate(store.folded(), digits.flat, preprocess=SMALL)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's TorchScript exporter announces its successor
def test_data_size_must_match_a_fixed_size_onnx_model(digits: Digits, tmp_path: Path) -> None:
    model, _ = nearest_centroid(digits.npz)
    onnx_path = tmp_path / "centroid.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), str(onnx_path), input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, opset_version=17, dynamo=False)
    ok = evaluate(onnx_path, digits.folder, preprocess=SMALL, workers=0)
    assert ok.top1 > 80.0
    with pytest.raises(DataError, match=r"data is 3x24x24 but centroid.onnx expects 3x32x32: pass --image-size 32"):
        evaluate(onnx_path, digits.folder, preprocess=Preprocess(resize=24, image_size=24))


# --- distributed -----------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_counts_each_image_once(store, digits: Digits) -> None:
    """2 ranks over 30 images + 2 unreadable ones: the totals equal a single-process run."""
    single = evaluate(store.folded(), digits.corrupt, preprocess=SMALL, workers=0)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "maxq_deploy", "eval", str(store.folded()), "--data", str(digits.corrupt),
               *map(str, SMALL_ARGS), "--workers", "0", "--batch-size", "4", "--json"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["world_size"] == 2
    for key in ("images", "skipped_corrupt", "correct1", "correct5", "top1", "top5"):
        assert result[key] == getattr(single, key), key


# --- CLI -------------------------------------------------------------------------------------


def test_cli_eval_json_and_side_by_side_table(cli, store, digits: Digits, tmp_path: Path) -> None:
    folded = store.folded()
    result = cli("eval", folded, "--data", digits.folder, *SMALL_ARGS, "--workers", "0", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["images"] == 30 and summary["model_kind"] == "folded-checkpoint" and 0 <= summary["top1"] <= 100
    both = cli("eval", folded, folded, "--data", digits.corrupt, *SMALL_ARGS, "--workers", "0", "--limit", "12")
    assert both.exit_code == 0, both.stderr
    assert both.stdout.count("folded-checkpoint") == 2 and "agrees with" in both.stdout
    listed = cli("eval", folded, folded, "--data", digits.npz, "--json")
    assert [r["images"] for r in json.loads(listed.stdout)] == [30, 30]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{flat}"], "has no labels"),
        (["--data", "{missing}"], "data not found"),
        (["--data", "{folder}", "--resize", "16", "--image-size", "32"], "Preprocess.resize must be >= image_size"),
        (["--data", "{folder}", "--mean", "0.5,x,0.5"], "--mean takes 3 comma-separated numbers"),
        (["--data", "{folder}", "--std", "0.5,0.5"], "Preprocess.std must be 3"),
        (["--data", "{folder}", "--backend", "onnxruntime"], "which the onnxruntime backend cannot run"),
        (["--data", "{folder}", "--backend", "tflite"], "unknown backend 'tflite'"),
    ],
)
def test_cli_errors_are_one_line_without_traceback(cli, store, digits: Digits, tmp_path: Path, args: list[str], message: str) -> None:
    paths = {"flat": digits.flat, "missing": tmp_path / "nowhere", "folder": digits.folder}
    result = cli("eval", store.folded(), *[a.format(**paths) for a in args], *(() if "--resize" in args else SMALL_ARGS))
    assert result.exit_code == 2, result.stdout + result.stderr
    assert result.exception is None and "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def test_eval_result_summary_is_json_ready(tmp_path: Path) -> None:
    logits = np.eye(6, dtype=np.float32)
    result = evaluate_runner(TorchRunner(Lookup(logits)), open_dataset(lookup_data(tmp_path, list(range(6)), logits)), workers=0)
    assert isinstance(result, EvalResult)
    data = json.loads(json.dumps(result.summary()))
    assert data["top1"] == 100.0 and data["top5"] == 100.0 and data["images"] == 6 and "predictions" not in data


def test_eval_compares_runtimes_on_the_same_images(store, digits: Digits, tmp_path: Path) -> None:
    """``--backend a,b``: every model on every backend, one table; a runtime that agrees scores the same."""
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'maxq-deploy[openvino]'")
    from maxq_deploy.evaluate import evaluate_models

    onnx_path = export_folded_onnx(store.folded(), tmp_path / "resnet18.onnx", SIZE)
    data = open_dataset(digits.folder, preprocess=SMALL)
    results = evaluate_models([onnx_path], data, backends="onnxruntime,openvino:f32", workers=0, threads=1)
    assert [(r.backend, r.precision) for r in results] == [("onnxruntime", "fp32"), ("openvino:fp32", "fp32")]
    assert results[0].images == results[1].images == len(data)
    assert results[1].agreement(results[0]) == 100.0 and results[0].top1 == results[1].top1
    assert results[1].summary()["options"]["inference_precision"] == "fp32"
