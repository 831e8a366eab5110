"""QuantizeConfig: the one place a config becomes an entry point's keyword arguments."""
from __future__ import annotations

import dataclasses
import inspect

import pytest

from maxq_deploy.core.errors import QuantizationError
from maxq_deploy.quantize.config import ENTRY_FIELDS, QuantizeConfig
from maxq_deploy.quantize.modelopt_ptq import quantize_ptq_modelopt
from maxq_deploy.quantize.ptq import quantize_ptq
from maxq_deploy.quantize.qat import quantize_qat

ENTRIES = {"ptq": quantize_ptq, "modelopt": quantize_ptq_modelopt, "qat": quantize_qat}
#: Config fields no entry point takes by keyword: the data it is given positionally, the choice of entry.
POSITIONAL_OR_CHOICE = {"calib_data", "train_data", "val_data", "qat", "backend"}


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_each_entry_field_is_a_config_field_and_a_parameter_of_the_entry(entry: str) -> None:
    fields = {f.name for f in dataclasses.fields(QuantizeConfig)}
    params = inspect.signature(ENTRIES[entry]).parameters
    assert set(ENTRY_FIELDS[entry]) <= fields
    missing = [name for name in ENTRY_FIELDS[entry] if name not in params]
    assert not missing, f"{entry} takes no {missing}"


def test_every_config_field_reaches_some_entry_point() -> None:
    """A field added to the config but passed nowhere would be silently ignored."""
    fields = {f.name for f in dataclasses.fields(QuantizeConfig)}
    passed = set().union(*map(set, ENTRY_FIELDS.values())) | POSITIONAL_OR_CHOICE
    assert fields - passed == set()


def test_arguments_carry_the_validated_values() -> None:
    config = QuantizeConfig(calibrator="MAX", calib_batches=3, batch_size=5, keep_float="conv1, layer1.0.convbn1")
    args = config.arguments("ptq")
    assert args["calibrator"] == "max" and args["calib_batches"] == 3 and args["batch_size"] == 5
    assert tuple(args["keep_float"]) == ("conv1", "layer1.0.convbn1")
    assert set(args) == set(ENTRY_FIELDS["ptq"])


def test_modelopt_qat_is_a_config_and_reaches_the_qat_entry() -> None:
    config = QuantizeConfig(qat=True, backend="MODELOPT", train_data="x", calibrator="entropy")
    args = config.arguments("qat")
    assert args["backend"] == "modelopt" and args["calibrator"] == "entropy"
    with pytest.raises(QuantizationError, match="--backend 'tensorrt' is not supported"):
        QuantizeConfig(backend="tensorrt")
