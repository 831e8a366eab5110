"""The artifact kinds and the one check of kind and version (``load.formats``)."""

from __future__ import annotations

import importlib
import re

import pytest

from maxq_deploy.core.errors import InputFileError
from maxq_deploy.load.formats import (
    FOLDED_FORMAT, FORMATS, QUANTIZED_FORMAT, artifact_format, check_format, format_of, is_tool_artifact,
)

PATH = "/models/net.pt"


def _artifact(fmt: object = FOLDED_FORMAT, version: object = 1) -> dict:
    return {"format": fmt, "format_version": version, "arch": "resnet18"}


def test_the_registered_kinds_and_their_loaders_resolve() -> None:
    assert set(FORMATS) == {FOLDED_FORMAT, QUANTIZED_FORMAT} == {"maxq-deploy/folded", "maxq-deploy/quantized"}
    for name, spec in FORMATS.items():
        assert spec.name == name and spec.version == 1
        module, _, function = spec.model_loader.partition(":")
        assert callable(getattr(importlib.import_module(module), function))  # a typo here breaks every load
    assert FORMATS[FOLDED_FORMAT].kind == "folded-checkpoint" and FORMATS[QUANTIZED_FORMAT].kind == "quantized-checkpoint"


def test_a_header_is_what_check_format_reads_plus_the_network() -> None:
    header = FORMATS[QUANTIZED_FORMAT].header("c_resnet18", 100, "2:4")
    assert header == {"format": QUANTIZED_FORMAT, "format_version": 1, "arch": "c_resnet18", "num_classes": 100, "nm": "2:4",
                      "hardware_pattern": "2:4"}
    assert check_format(header, QUANTIZED_FORMAT, PATH) is header


@pytest.mark.parametrize("obj, expected", [
    ({"format": FOLDED_FORMAT}, FOLDED_FORMAT), ({"format": "other/tool"}, "other/tool"),
    ({"format": 3}, None), ({"state_dict": {}}, None), (["format"], None), (None, None),
])
def test_format_of_reads_only_a_string_entry_of_a_dict(obj: object, expected: str | None) -> None:
    assert format_of(obj) == expected


def test_any_maxq_deploy_format_is_a_tool_artifact_whatever_its_kind() -> None:
    assert is_tool_artifact({"format": "maxq-deploy/from-the-future"})
    assert not is_tool_artifact({"format": "other/folded"}) and not is_tool_artifact({"epoch": 3}) and not is_tool_artifact("maxq-deploy/")


@pytest.mark.parametrize("obj, shown", [
    ({"state_dict": {}}, "None"), ([1, 2], "'list'"), (_artifact(QUANTIZED_FORMAT), f"'{QUANTIZED_FORMAT}'"),
    (_artifact("maxq-deploy/Folded"), "'maxq-deploy/Folded'"),
])
def test_another_kind_is_refused_with_the_command_that_makes_one(obj: object, shown: str) -> None:
    with pytest.raises(InputFileError) as info:
        check_format(obj, FOLDED_FORMAT, PATH)
    assert str(info.value) == f"{PATH} is not a folded checkpoint (format {shown}); make one with: maxq-deploy fold CKPT -o OUT"


def test_a_quantized_check_names_the_quantize_command() -> None:
    with pytest.raises(InputFileError, match=re.escape("is not a quantized checkpoint (format 'maxq-deploy/folded'); "
                                                       "make one with: maxq-deploy quantize FOLDED -o OUT --calib DATA")):
        check_format(_artifact(), QUANTIZED_FORMAT, PATH)


@pytest.mark.parametrize("version", [None, "1", 1.0, True, 0, -1])
def test_a_version_that_is_not_a_version_number_is_damage(version: object) -> None:
    obj = _artifact(version=version)
    if version is None:
        del obj["format_version"]
    with pytest.raises(InputFileError) as info:
        check_format(obj, FOLDED_FORMAT, PATH)
    assert str(info.value) == (f"{PATH}: damaged folded checkpoint (format_version {version!r} is not a version number; "
                               "this maxq-deploy reads version 1)")


def test_a_newer_version_asks_for_an_upgrade() -> None:
    with pytest.raises(InputFileError) as info:
        check_format(_artifact(version=2), FOLDED_FORMAT, PATH)
    assert str(info.value) == (f"{PATH}: folded checkpoint format version 2 is newer than this maxq-deploy reads (version 1); "
                               "upgrade maxq-deploy")


def test_artifact_format_is_none_for_a_foreign_file_and_the_spec_for_a_tool_artifact() -> None:
    assert artifact_format({"state_dict": {}, "epoch": 90}, PATH) is None  # a MaxQ training checkpoint
    assert artifact_format([1, 2], PATH) is None
    assert artifact_format(_artifact(QUANTIZED_FORMAT), PATH) is FORMATS[QUANTIZED_FORMAT]


def test_artifact_format_refuses_an_unknown_tool_kind_and_checks_the_version() -> None:
    with pytest.raises(InputFileError, match=re.escape(f"{PATH}: artifact format 'maxq-deploy/pruned' is not a model this "
                                                       "version of maxq-deploy can read")):
        artifact_format(_artifact("maxq-deploy/pruned"), PATH)
    with pytest.raises(InputFileError, match="newer than this maxq-deploy reads"):
        artifact_format(_artifact(QUANTIZED_FORMAT, version=9), PATH)
    with pytest.raises(InputFileError, match="format_version 'x' is not a version number"):
        artifact_format(_artifact(version="x"), PATH)
