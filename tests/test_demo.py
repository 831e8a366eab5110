"""maxq_deploy.demo's own pieces: the built-in examples, the result and its recorder, random calibration, and every
refusal of run_demo before anything is made (the whole pipeline runs in tests/test_demo_examples.py and
tests/test_demo_fashion.py)."""

from __future__ import annotations

import json
import numpy as np
import pytest

from maxq_deploy.core.errors import DataError, InputFileError, OptionError, OutputPathError
from maxq_deploy.demo import (
    EXAMPLES,
    MAX_DEMO_INPUT_SIZE,
    DemoResult,
    DemoStep,
    StageAccuracy,
    _random_calibration,
    _Recorder,
    builtin_example,
    run_demo,
)


def test_builtin_examples():
    assert list(EXAMPLES) == ["digits", "fashion", "fashion-4of8"]
    digits, fashion, fashion48 = (builtin_example(name) for name in EXAMPLES)
    assert (digits.data, digits.nm, digits.project, digits.onnx_backends) == ("digits", "2:4", False, ("onnxruntime",))
    assert (fashion.data, fashion.nm, fashion.project) == ("Fashion-MNIST", "2:4", False)
    assert (fashion48.data, fashion48.nm, fashion48.project) == ("Fashion-MNIST", "4:8", True)  # 4:8 is not 2:4: --project
    assert fashion.onnx_backends == fashion48.onnx_backends == ("onnxruntime", "openvino")


def test_unknown_example_lists_the_known_ones():
    with pytest.raises(OptionError, match=r"^unknown --example 'shoes'; built-in examples: digits, fashion, fashion-4of8$"):
        builtin_example("shoes")


def test_result_is_ok_only_when_every_step_is(tmp_path):
    result = DemoResult(tmp_path, tmp_path / "ckpt.pth.tar")
    assert result.ok  # nothing failed yet
    result.steps.append(DemoStep("fold", "folded.pt", True, "19 sparse", 0.5))
    assert result.ok
    result.steps.append(DemoStep("verify folded", "folded.pt", False, "FAIL: 2 layers break 2:4", 0.1))
    assert not result.ok


def test_summary_is_plain_json(tmp_path):
    result = DemoResult(tmp_path, tmp_path / "ckpt.pth.tar", trtexec=["trtexec --onnx=m.onnx --sparsity=enable"])
    result.steps.append(DemoStep("inspect", None, True, "resnet18", 0.25))
    result.accuracy.append(StageAccuracy("folded", "folded.pt", "torch", 97.5, None, 360))
    summary = json.loads(json.dumps(result.summary()))
    assert summary == {
        "workdir": str(tmp_path), "checkpoint": str(tmp_path / "ckpt.pth.tar"), "ok": True,
        "steps": [{"stage": "inspect", "artifact": None, "ok": True, "detail": "resnet18", "seconds": 0.25}],
        "accuracy": [{"stage": "folded", "model": "folded.pt", "backend": "torch", "top1": 97.5, "top5": None, "images": 360}],
        "bench": None, "trtexec": ["trtexec --onnx=m.onnx --sparsity=enable"],
    }


def test_recorder_times_each_stage_and_returns_its_value(tmp_path):
    result = DemoResult(tmp_path, tmp_path / "c.pth")
    recorder = _Recorder(result)
    assert recorder.step("fold", tmp_path / "folded.pt", lambda: (True, "folded", 42)) == 42
    assert recorder.step("bench", None, lambda: (False, "slow", None)) is None
    (fold, bench) = result.steps
    assert (fold.stage, fold.artifact, fold.ok, fold.detail) == ("fold", str(tmp_path / "folded.pt"), True, "folded")
    assert (bench.artifact, bench.ok) == (None, False) and not result.ok
    assert fold.seconds >= 0 and bench.seconds >= 0


def test_recorder_lets_a_stage_error_through(tmp_path):
    """run_demo catches a DataError of an eval stage itself (and records it); the recorder adds no step for it."""
    result = DemoResult(tmp_path, tmp_path / "c.pth")

    def fails():
        raise DataError("labels do not fit")

    with pytest.raises(DataError, match="labels do not fit"):
        _Recorder(result).step("eval folded", None, fails)
    assert result.steps == []


def test_random_calibration_is_seeded_normal_noise(tmp_path):
    path = _random_calibration(tmp_path / "calib.npy", 16)
    assert path == tmp_path / "calib.npy"
    images = np.load(path)
    assert images.shape == (64, 3, 16, 16) and images.dtype == np.float32
    assert abs(float(images.mean())) < 0.02 and abs(float(images.std()) - 1.0) < 0.02
    np.testing.assert_array_equal(np.load(_random_calibration(tmp_path / "again.npy", 16)), images)
    other = np.load(_random_calibration(tmp_path / "other.npy", 16, count=8, seed=1))
    assert other.shape == (8, 3, 16, 16) and not np.array_equal(other, images[:8])


@pytest.mark.parametrize("kwargs, words", [
    ({"epochs": 0}, r"--epochs must be a whole number >= 1, got 0"),
    ({"epochs": True}, r"--epochs must be a whole number >= 1, got True"),
    ({"epochs": 1.5}, r"--epochs must be a whole number >= 1, got 1.5"),
    ({"eval_images": 0}, r"--eval-images must be a whole number >= 1, got 0"),
    ({"eval_images": False}, r"--eval-images must be a whole number >= 1, got False"),
    ({"input_size": 7}, rf"--input-size must be between 8 and {MAX_DEMO_INPUT_SIZE} pixels, got 7"),
    ({"input_size": MAX_DEMO_INPUT_SIZE + 1}, rf"--input-size must be between 8 and {MAX_DEMO_INPUT_SIZE} pixels, got 1025"),
    ({"example": "fashion", "checkpoint": "mine.pth"}, r"--example fashion trains its own network; leave it out with --checkpoint"),
    ({"train_images": 1000}, r"--train-images and --dataset-root apply to the Fashion-MNIST examples, not --example digits"),
    ({"dataset_root": "data"}, r"--train-images and --dataset-root apply to the Fashion-MNIST examples"),
    ({"example": "shoes"}, r"built-in examples: digits, fashion, fashion-4of8"),
])
def test_options_refused_before_anything_is_made(tmp_path, kwargs, words):
    with pytest.raises(OptionError, match=words):
        run_demo(tmp_path / "work", **kwargs)
    assert not (tmp_path / "work").exists()


def test_workdir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "work").write_text("notes")
    with pytest.raises(OutputPathError, match="is a file, not a folder: choose another --workdir"):
        run_demo(tmp_path / "work")
    assert (tmp_path / "work").read_text() == "notes"


def test_an_input_the_demo_would_overwrite_is_refused(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "folded.pt").write_bytes(b"my calibration data")
    with pytest.raises(OutputPathError, match=r"demo output .*folded\.pt is the input .*refusing to overwrite an input"):
        run_demo(work, calib=work / "folded.pt")
    assert (work / "folded.pt").read_bytes() == b"my calibration data" and sorted(p.name for p in work.iterdir()) == ["folded.pt"]


def test_a_file_that_is_not_a_checkpoint_fails_before_the_workdir_is_made(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(InputFileError, match="is not a PyTorch checkpoint"):
        run_demo(tmp_path / "work", checkpoint=bad)
    assert not (tmp_path / "work").exists()


def test_fashion_example_without_the_data_set_names_the_option(tmp_path):
    with pytest.raises(DataError, match=r"Fashion-MNIST is not installed.*; the demo takes that folder as --dataset-root$"):
        run_demo(tmp_path / "work", example="fashion", dataset_root=tmp_path / "nowhere")
    assert not (tmp_path / "work").exists()

