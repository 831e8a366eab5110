"""The one input-size and preprocessing rule (``load.input_size``): requested, else recorded, else the architecture's."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from maxq_deploy.core.errors import DataError, InputFileError, OptionError
from maxq_deploy.data import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from maxq_deploy.load.input_size import (
    ArtifactSize, artifact_input_size, preprocess_for, resolve_input_size, stored_input_size,
)


# --- the recorded size ----------------------------------------------------------------------------

@pytest.mark.parametrize("meta, expected", [
    (None, None), ({}, None), ({"input_size": 40}, 40), ({"maxq_deploy.input_size": "64"}, 64),
    ({"input_size": 32, "maxq_deploy.input_size": "64"}, 32),  # a checkpoint's own entry first
    ({"input_size": "abc", "maxq_deploy.input_size": "48"}, 48),  # an unreadable entry is skipped
    ({"input_size": 0}, None), ({"input_size": -32}, None), ({"input_size": None}, None), ({"input_size": [32]}, None),
])
def test_stored_input_size_reads_a_positive_recorded_size(meta: dict | None, expected: int | None) -> None:
    assert stored_input_size(meta) == expected


# --- requested, else recorded, else the architecture's -------------------------------------------

@pytest.mark.parametrize("arch, meta, requested, expected", [
    ("c_resnet18", None, None, 32),  # the CIFAR ResNets' default
    ("resnet18", None, None, 224),  # the ImageNet networks'
    ("mobilenet_v1", {}, None, 224),
    (None, None, None, 224),  # unknown architecture: 224
    ("vgg16", {"input_size": 500}, None, 500),  # unknown architecture: its recorded size, unchecked
    ("c_resnet18", {"input_size": 40}, None, 40),  # a recorded size wins over the default
    ("resnet18", {"input_size": 160}, 96, 96),  # and the user's over both
    ("resnet18", None, 32, 32), ("c_resnet50", None, 56, 56), ("c_resnet50", None, 25, 25),  # the edges they run at
])
def test_requested_else_recorded_else_the_architecture_default(arch, meta, requested, expected) -> None:
    assert resolve_input_size(arch, meta, requested) == expected


@pytest.mark.parametrize("requested", [0, -1, True, 1.5, "224"])
def test_a_requested_size_that_is_not_a_positive_whole_number_is_refused(requested: object) -> None:
    with pytest.raises(OptionError) as info:
        resolve_input_size("resnet18", None, requested, what="--calib-size")  # type: ignore[arg-type]
    assert str(info.value) == f"--calib-size must be a positive number of pixels, got {requested!r}"


def test_a_size_the_cifar_head_cannot_pool_is_refused_before_any_work() -> None:
    with pytest.raises(OptionError) as info:
        resolve_input_size("c_resnet18", None, 224)
    assert str(info.value) == (
        "c_resnet18 cannot run at 224x224 inputs (--input-size): its head averages a fixed 4x4 window of the last feature "
        "map (input / 8), so they give no single prediction per image; it runs at 25..56 pixels (trained at 32, the default)"
    )
    with pytest.raises(OptionError, match=r"c_resnet18 cannot run at 24x24"):
        resolve_input_size("c_resnet18", None, 24)


def test_an_absurd_recorded_size_is_refused_naming_where_it_came_from() -> None:
    with pytest.raises(OptionError, match=re.escape("c_resnet34 cannot run at 224x224 inputs (its recorded input size)")):
        resolve_input_size("c_resnet34", {"input_size": 224})
    with pytest.raises(OptionError, match=re.escape("resnet18 cannot run at 16x16 inputs (--input-size): it downsamples by 32; "
                                                    "it runs at >= 32 pixels")):
        ArtifactSize("resnet18", 224).resolve(16, "--input-size")


# --- the one preprocessing rule -------------------------------------------------------------------

@pytest.mark.parametrize("arch, size, resize", [
    ("c_resnet18", 32, 32), ("c_resnet18", 40, 40),  # the CIFAR ResNets take their images as they are
    ("resnet18", 224, 256), ("mobilenet_v1", 160, 183),  # ImageNet's 256/224 (160 * 256 / 224 = 182.9)
    (None, 224, 256), ("vgg16", 224, 256),  # unknown: ImageNet's ratio
])
def test_the_shorter_side_is_resized_by_the_architecture_crop_ratio(arch, size: int, resize: int) -> None:
    assert ArtifactSize(arch, size).resize(size) == resize
    assert preprocess_for(arch, size) == Preprocess(resize=resize, image_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert ArtifactSize(arch, size).preprocess(size) == preprocess_for(arch, size)


def test_a_requested_resize_and_normalization_win() -> None:
    assert ArtifactSize("resnet18", 224).resize(224, requested=300) == 300
    pre = preprocess_for("c_resnet18", 32, resize=36, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert (pre.resize, pre.image_size, pre.mean, pre.std) == (36, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    with pytest.raises(DataError, match="resize must be >= image_size"):
        preprocess_for("resnet18", 224, resize=200)


def _normalized(pixels: np.ndarray) -> torch.Tensor:
    """The hand computation: scale to [0, 1], subtract ImageNet's mean, divide by its std, HWC -> CHW."""
    array = (pixels / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return torch.from_numpy(array.transpose(2, 0, 1)).float()


def test_a_cifar_image_is_only_normalized_and_an_imagenet_image_center_cropped() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    cifar = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = preprocess_for("c_resnet18", 32)(Image.fromarray(cifar))
    torch.testing.assert_close(out, _normalized(cifar), atol=1e-5, rtol=0)  # no resize, no crop
    imagenet = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    out = preprocess_for("resnet18", 224)(Image.fromarray(imagenet))
    torch.testing.assert_close(out, _normalized(imagenet[16:240, 16:240]), atol=1e-5, rtol=0)  # 256 already: crop only


# --- what a model file says -----------------------------------------------------------------------

@pytest.mark.slow  # the checkpoints are shared with other files, but made from scratch when this file runs alone
def test_folded_and_training_checkpoints_give_their_architecture_and_its_size(store) -> None:
    assert artifact_input_size(store.folded(arch="c_resnet18")) == ArtifactSize("c_resnet18", 32)
    assert artifact_input_size(store.checkpoint(arch="resnet18")) == ArtifactSize("resnet18", 224)
    assert artifact_input_size(store.checkpoint(arch="mobilenet_v1", layout="bare")) == ArtifactSize("mobilenet_v1", 224)


def test_a_tool_artifact_recording_its_calibration_size_gives_that_size(tmp_path: Path) -> None:
    path = tmp_path / "int8.pt"
    torch.save({"format": "maxq-deploy/quantized", "format_version": 1, "arch": "c_resnet18", "input_size": 40}, path)
    assert artifact_input_size(path) == ArtifactSize("c_resnet18", 40)
    torch.save({"format": "maxq-deploy/quantized", "format_version": 1, "arch": "vgg16"}, path)
    assert artifact_input_size(path) == ArtifactSize(None, None)  # an unknown architecture: the caller's default


def test_files_that_say_nothing_give_unknown(tmp_path: Path, store) -> None:
    for name in ("net.engine", "net.plan", "net.trt", "net.xml"):  # the runner reads an engine's or IR's shape
        (tmp_path / name).write_bytes(b"\0" * 16)
        assert artifact_input_size(tmp_path / name) == ArtifactSize(None, None)
    assert artifact_input_size(tmp_path / "missing.pt") == ArtifactSize(None, None)
    torch.save([1, 2, 3], tmp_path / "list.pt")
    assert artifact_input_size(tmp_path / "list.pt") == ArtifactSize(None, None)
    torch.save({"backbone.0.weight": torch.zeros(2, 3, 3, 3)}, tmp_path / "foreign.pt")
    assert artifact_input_size(tmp_path / "foreign.pt") == ArtifactSize(None, None)  # the loading stage says what is wrong
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf")
    assert artifact_input_size(tmp_path / "junk.onnx") == ArtifactSize(None, None)


def test_an_unreadable_torch_file_is_the_loader_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"hello")
    with pytest.raises(InputFileError, match="cannot be read as a PyTorch model|is not a PyTorch model"):
        artifact_input_size(tmp_path / "junk.pt")


def _onnx(path: Path, dims: list, meta: dict[str, str]) -> Path:
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, meta)
    onnx.save(model, path)
    return path


def test_an_onnx_graph_input_shape_wins_over_its_metadata(tmp_path: Path) -> None:
    meta = {"maxq_deploy.arch": "c_resnet18", "maxq_deploy.input_size": "32"}
    assert artifact_input_size(_onnx(tmp_path / "fixed.onnx", [1, 3, 40, 40], meta)) == ArtifactSize("c_resnet18", 40)
    assert artifact_input_size(_onnx(tmp_path / "dynamic.onnx", ["N", 3, "H", "W"], meta)) == ArtifactSize("c_resnet18", 32)
    assert artifact_input_size(_onnx(tmp_path / "plain.onnx", ["N", 3, "H", "W"], {})) == ArtifactSize(None, None)
    foreign = {"maxq_deploy.arch": "yolo", "maxq_deploy.input_size": "640"}
    assert artifact_input_size(_onnx(tmp_path / "yolo.onnx", [1, 3, 64, 64], foreign)) == ArtifactSize(None, 64)
