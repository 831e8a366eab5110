"""``onnx_graph.from_torch``: both torch exporters give the same canonical graph of a tiny network
(node types, opset, ``input``/``output``, the ``batch`` axis), agree with torch on ONNX Runtime,
print nothing, and refuse an unknown exporter or an unreachable opset in one OptionError line."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import helper
from torch import nn

from maxq_deploy.core.errors import OptionError
from maxq_deploy.onnx_graph.from_torch import EXPORTERS, exporter_name, onnx_opset, torch_to_onnx
from onnx_fixtures import run_model, tiny_net

EXPORTER_PARAMS = [pytest.param("torchscript"), pytest.param("dynamo", marks=pytest.mark.slow)]  # dynamo's first export ~6 s
TINY_NODES = ["Conv", "Relu", "Conv", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm"]


def _dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.mark.parametrize("exporter", EXPORTER_PARAMS)
def test_export_of_a_tiny_network_is_canonical_and_matches_torch(exporter, capsys) -> None:
    net = tiny_net()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = torch_to_onnx(net, torch.randn(2, 3, 8, 8), 17, dynamic_batch=True, exporter=exporter)
    assert caught == [] and capsys.readouterr() == ("", "")  # no exporter warning or print reaches the user
    onnx.checker.check_model(model, full_check=True)
    assert onnx_opset(model) == 17
    assert [n.op_type for n in model.graph.node] == TINY_NODES
    assert [(v.name, _dims(v)) for v in (*model.graph.input, *model.graph.output)] == [
        ("input", ["batch", 3, 8, 8]), ("output", ["batch", 5])]
    assert sorted(i.name for i in model.graph.initializer) == sorted(net.state_dict())  # every weight a named constant
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)  # another batch size than the dummy
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_model(model, x), expected, rtol=1e-5, atol=1e-5)


def test_static_batch_and_eval_mode() -> None:
    """Without ``dynamic_batch`` the batch is the dummy's; a module handed over in train mode is exported in eval mode."""
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 36, 2))
    with torch.no_grad():
        net[1].running_mean.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        net[1].running_var.copy_(torch.tensor([4.0, 0.25, 1.0, 9.0]))
    net.train()
    model = torch_to_onnx(net, torch.randn(2, 3, 8, 8), 17, dynamic_batch=False, exporter="torchscript")
    assert not net.training
    assert [(v.name, _dims(v)) for v in (*model.graph.input, *model.graph.output)] == [("input", [2, 3, 8, 8]), ("output", [2, 2])]
    assert "BatchNormalization" not in [n.op_type for n in model.graph.node]  # folded into the conv by the exporter
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()  # running statistics, not the batch's
    np.testing.assert_allclose(run_model(model, x), expected, rtol=1e-5, atol=1e-5)


def test_unknown_exporter_is_one_option_error() -> None:
    with pytest.raises(OptionError, match=r"^--exporter 'onnxscript' is not supported; choose one of dynamo, torchscript$"):
        torch_to_onnx(tiny_net(), torch.randn(1, 3, 8, 8), 17, dynamic_batch=False, exporter="onnxscript")
    assert EXPORTERS == ("dynamo", "torchscript")


def test_exporter_names_and_opset_of_a_model() -> None:
    assert exporter_name("dynamo") == "torch.onnx.export (dynamo=True)"
    assert exporter_name("torchscript") == "torch.onnx.export (TorchScript, dynamo=False)"
    graph = helper.make_graph([], "g", [], [])
    assert onnx_opset(helper.make_model(graph, opset_imports=[helper.make_opsetid("com.microsoft", 1),
                                                              helper.make_opsetid("", 13)])) == 13
    assert onnx_opset(helper.make_model(graph, opset_imports=[helper.make_opsetid("com.microsoft", 1)])) == 0


@pytest.mark.slow
def test_dynamo_below_its_opset_is_refused_in_one_line_when_onnx_cannot_convert() -> None:
    with pytest.raises(OptionError) as info:
        torch_to_onnx(tiny_net(), torch.randn(1, 3, 8, 8), 13, dynamic_batch=False, exporter="dynamo")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("--opset 13: the dynamo exporter wrote opset 18 and onnx could not convert it (")
    assert message.endswith("; use --opset 18 or --exporter torchscript")


@pytest.mark.slow
def test_both_exporters_write_the_same_nodes_for_a_network_ending_in_its_pooled_features() -> None:
    """No fc after the pool: dynamo's Reshape writes the graph output itself and must still become Flatten."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    graphs = {e: torch_to_onnx(net, torch.from_numpy(x), 18, dynamic_batch=True, exporter=e) for e in EXPORTERS}
    for model in graphs.values():
        assert [n.op_type for n in model.graph.node] == ["Conv", "Relu", "GlobalAveragePool", "Flatten"]
        assert onnx_opset(model) == 18
        with torch.no_grad():
            np.testing.assert_allclose(run_model(model, x), net(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)
