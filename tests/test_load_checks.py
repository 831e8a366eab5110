"""The strict reading of tool artifacts (``load.checks``): each refusal, its one line, and what passes."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from maxq_deploy.core.errors import InputFileError
from maxq_deploy.load.checks import (
    MAX_RANGE, MIN_RANGE, check_finite_tensors, check_metadata, check_quantizer_ranges, check_state_dict,
)

PATH = Path("/models/net.pt")
WHAT = "folded checkpoint"
DAMAGED = re.escape(f"{PATH}: damaged {WHAT} (")


def _refused(state: object, detail: str, where: str = "state_dict") -> None:
    with pytest.raises(InputFileError, match="^" + DAMAGED + re.escape(detail) + r"\)$"):
        check_state_dict(state, PATH, WHAT, where)


# --- tensors ------------------------------------------------------------------------------------

def test_every_real_float_dtype_and_an_integer_batch_counter_pass_unchanged() -> None:
    state = {f"w_{dtype}": torch.ones(2, 2, dtype=dtype) for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}
    state["bn1.num_batches_tracked"] = torch.tensor(7)
    state["bn1.running_mean"] = torch.zeros(0)  # an empty tensor is dense and finite
    assert check_state_dict(state, PATH, WHAT) is state


def test_a_state_dict_that_is_not_a_dict_is_refused() -> None:
    _refused([torch.ones(1)], "'model' is a list, not a dict of named tensors", where="model")


def test_a_key_that_is_not_a_string_is_refused() -> None:
    _refused({"fc.weight": torch.ones(1), 3: torch.ones(1)}, "state_dict has a key 3 of type int; keys are layer names")


@pytest.mark.parametrize("value, kind", [([1.0, 2.0], "list"), (0.5, "float"), (None, "NoneType")])
def test_a_value_that_is_not_a_tensor_is_refused(value: object, kind: str) -> None:
    _refused({"fc.bias": value}, f"fc.bias holds a {kind}, not a tensor")


def test_sparse_and_quantized_tensors_are_refused() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch calls CSR tensors beta and quantized tensors deprecated
        dense = torch.eye(4)
        cases = {"sparse coo": dense.to_sparse(), "sparse csr": dense.to_sparse_csr(),
                 "quantized": torch.quantize_per_tensor(dense, 0.1, 0, torch.qint8)}
    for kind, tensor in cases.items():
        _refused({"conv.weight": tensor}, f"conv.weight is a {kind} tensor; weights are stored dense")


def test_a_meta_tensor_that_cannot_come_to_the_cpu_is_refused() -> None:
    meta = torch.empty(3, 3, device="meta")
    with pytest.raises(NotImplementedError):
        meta.cpu()  # no values to copy: nothing could run it
    _refused({"conv.weight": meta}, "conv.weight is a meta tensor: it holds no values")


@pytest.mark.parametrize("dtype, name", [(torch.complex64, "complex64"), (torch.int64, "int64"), (torch.bool, "bool"),
                                         (torch.uint8, "uint8"), (torch.int8, "int8")])
def test_weights_that_are_not_real_floats_are_refused(dtype: torch.dtype, name: str) -> None:
    _refused({"conv.mask": torch.zeros(2, dtype=dtype)},
             f"conv.mask holds {name} values; weights and masks are real floating-point numbers")


def test_only_the_batch_counter_may_be_an_integer_and_never_a_bool_or_complex() -> None:
    assert check_state_dict({"layer1.0.bn.num_batches_tracked": torch.tensor(3, dtype=torch.int32)}, PATH, WHAT)
    _refused({"bn.num_batches_tracked": torch.tensor(True)}, "bn.num_batches_tracked holds bool values; "
             "weights and masks are real floating-point numbers")
    _refused({"bn.num_batches_tracked": torch.tensor(1j)}, "bn.num_batches_tracked holds complex64 values; "
             "weights and masks are real floating-point numbers")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_are_refused_naming_the_first_bad_index(bad: float) -> None:
    weight = torch.zeros(3, 4)
    weight[2, 1] = bad
    weight[2, 3] = bad
    with pytest.raises(InputFileError) as info:
        check_state_dict({"fc.bias": torch.zeros(3), "fc.weight": weight}, PATH, WHAT)
    assert str(info.value) == f"{PATH}: damaged {WHAT} (fc.weight holds NaN or Inf, first at index [2, 1]); re-create it from its source"


def test_finiteness_is_checked_in_half_precision_too_and_integers_are_skipped() -> None:
    half = torch.ones(5, dtype=torch.bfloat16)
    half[4] = float("inf")
    with pytest.raises(InputFileError, match=r"w holds NaN or Inf, first at index \[4\]"):
        check_finite_tensors({"n.num_batches_tracked": torch.tensor(2**62), "w": half}, PATH, WHAT)


# --- metadata -----------------------------------------------------------------------------------

GOOD_META = {"arch": "resnet18", "num_classes": 10, "nm": "2:4", "input_size": 224, "layers": [{"name": "conv1"}]}


def test_good_metadata_passes_and_optional_entries_may_be_missing() -> None:
    check_metadata(GOOD_META, PATH, WHAT)
    check_metadata({"arch": "ResNet18", "num_classes": 1, "nm": None, "layers": []}, PATH, WHAT)  # spelled freely, dense


@pytest.mark.parametrize("change, detail", [
    ({"arch": None}, "arch None is not an architecture name"),
    ({"arch": 18}, "arch 18 is not an architecture name"),
    ({"arch": "vgg16"}, "unsupported architecture 'vgg16'; supported: "),
    ({"num_classes": 0}, "num_classes 0 is not a positive integer"),
    ({"num_classes": True}, "num_classes True is not a positive integer"),
    ({"num_classes": "10"}, "num_classes '10' is not a positive integer"),
    ({"nm": "2-4"}, "nm '2-4' is not an N:M pattern such as '2:4'"),
    ({"nm": "5:4"}, "nm '5:4' is not an N:M pattern such as '2:4'"),
    ({"nm": 24}, "nm 24 is not an N:M pattern such as '2:4'"),
    ({"input_size": 0}, "input_size 0 is not a positive number of pixels"),
    ({"input_size": "224"}, "input_size '224' is not a positive number of pixels"),
    ({"input_size": False}, "input_size False is not a positive number of pixels"),
    ({"layers": {"conv1": {}}}, "its 'layers' entry is not a list of layer records"),
    ({"layers": ["conv1"]}, "its 'layers' entry is not a list of layer records"),
])
def test_each_damaged_metadata_entry_is_refused(change: dict, detail: str) -> None:
    with pytest.raises(InputFileError, match="^" + DAMAGED + re.escape(detail)):
        check_metadata(GOOD_META | change, PATH, WHAT)


def test_missing_layers_are_damage_too() -> None:
    meta = {k: v for k, v in GOOD_META.items() if k != "layers"}
    with pytest.raises(InputFileError, match="'layers' entry is not a list"):
        check_metadata(meta, PATH, WHAT)


# --- quantizer ranges ---------------------------------------------------------------------------

WEIGHTS = {"conv.weight": torch.ones(4, 3, 3, 3), "fc.weight": torch.ones(10, 8)}


def _ranges_refused(quantizers: dict, detail: str, **kwargs: object) -> None:
    prefix = re.escape(f"{PATH}: damaged quantized checkpoint (range of ")
    with pytest.raises(InputFileError, match="^" + prefix + re.escape(detail) + r"\)$"):
        check_quantizer_ranges(quantizers, WEIGHTS, PATH, **kwargs)


def test_usable_ranges_pass() -> None:
    check_quantizer_ranges({
        "conv._input_quantizer": torch.tensor(2.5),
        "conv._weight_quantizer": torch.tensor([1.0, 0.5, 0.0, 2.0]).reshape(4, 1, 1, 1),  # an all-zero channel
        "fc._weight_quantizer": torch.tensor([3.0]),  # one value for the whole tensor
        "fc._input_quantizer": torch.tensor(7, dtype=torch.int64),  # an integer range is a number too
        "layer1.0.residual_quantizer": torch.tensor([1.0], dtype=torch.float64),
    }, WEIGHTS, PATH)


@pytest.mark.parametrize("amax, detail", [
    (1.0, "is not a tensor of numbers"),
    (torch.tensor(True), "is not a tensor of numbers"),
    (torch.tensor(3, dtype=torch.int8), "is not a tensor of numbers"),
    (torch.tensor([]), "is empty"),
    (torch.tensor(float("nan")), "holds NaN or Inf"),
    (torch.tensor(float("inf")), "holds NaN or Inf"),
    (torch.tensor(-0.5), "is negative: -0.5"),
    (torch.tensor(0.0), "is zero: 0"),
    (torch.tensor([1.0, 2.0]), "has shape [2]; an activation range is one value"),
])
def test_each_bad_activation_range_is_refused(amax: object, detail: str) -> None:
    _ranges_refused({"conv._input_quantizer": amax}, f"conv._input_quantizer {detail}")


def test_a_zero_weight_channel_is_refused_only_where_the_target_divides_by_it() -> None:
    ranges = {"conv._weight_quantizer": torch.tensor([1.0, 0.0, 1.0, 1.0])}
    check_quantizer_ranges(ranges, WEIGHTS, PATH)
    _ranges_refused(ranges, "conv._weight_quantizer is zero: 0", positive_weight_ranges=True)
    _ranges_refused({"conv._weight_quantizer": torch.tensor([1.0, -1.0, 1.0, 1.0])}, "conv._weight_quantizer is negative: -1")


def test_the_smallest_range_is_the_one_whose_int8_scale_is_a_normal_float32() -> None:
    tiny = np.finfo(np.float32).tiny
    assert np.float32(MIN_RANGE / 127) >= tiny and np.float32(MIN_RANGE * 0.99 / 127) < tiny  # a subnormal scale
    assert MAX_RANGE == float(np.finfo(np.float32).max)
    check_quantizer_ranges({"conv._input_quantizer": torch.tensor(MIN_RANGE, dtype=torch.float64)}, WEIGHTS, PATH)
    check_quantizer_ranges({"conv._input_quantizer": torch.tensor(MAX_RANGE, dtype=torch.float64)}, WEIGHTS, PATH)
    bounds = f"outside what an INT8 scale can hold, {MIN_RANGE:.3g} to {MAX_RANGE:.3g}, since scale = range / 127 must be a normal float32"
    too_small = MIN_RANGE * 0.99
    _ranges_refused({"conv._input_quantizer": torch.tensor(too_small, dtype=torch.float64)},
                    f"conv._input_quantizer is {too_small:g}: {bounds}")
    _ranges_refused({"conv._weight_quantizer": torch.tensor([1.0, 1e-40, 1.0, 1.0], dtype=torch.float64)},
                    f"conv._weight_quantizer is 1e-40: {bounds}")
    _ranges_refused({"fc._input_quantizer": torch.tensor(1e39, dtype=torch.float64)}, f"fc._input_quantizer is 1e+39: {bounds}")


@pytest.mark.parametrize("shape", [(3, 1, 1, 1), (5,), (2, 2)])
def test_a_weight_range_is_one_value_or_one_per_output_channel(shape: tuple[int, ...]) -> None:
    _ranges_refused({"conv._weight_quantizer": torch.ones(shape)},
                    f"conv._weight_quantizer has shape {list(shape)}; expected one value or one per output channel (4)")


def test_a_weight_range_without_its_weight_may_only_be_one_value() -> None:
    check_quantizer_ranges({"gone._weight_quantizer": torch.tensor(1.0)}, WEIGHTS, PATH)
    _ranges_refused({"gone._weight_quantizer": torch.ones(4)},
                    "gone._weight_quantizer has shape [4]; expected one value or one per output channel (None)")
