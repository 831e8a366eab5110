"""``quantize.mo_adapter``: the one door to NVIDIA Model Optimizer. On a tiny network: max calibration
gives amax = max |x| over the calibration data (per channel for weights), ModelOpt's INT8 weights keep
every zero, ranges come out under this tool's quantizer names, and the missing package is one line.

The ModelOpt tests need ``nvidia-modelopt`` (the ``[modelopt]`` extra) and skip without it; importing
it takes ~10 s on a CPU, so they are marked slow. The missing-backend message is tested everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from maxq_deploy.core.errors import BackendUnavailableError
from maxq_deploy.core.sparsity import HARDWARE_PATTERN, check_pattern, project_to_pattern
from maxq_deploy.quantize import mo_adapter

ROOT = Path(__file__).resolve().parents[1]
HAS_MODELOPT = importlib.util.find_spec("modelopt") is not None
needs_modelopt = pytest.mark.skipif(not HAS_MODELOPT, reason="nvidia-modelopt is not installed (pip install 'maxq-deploy[modelopt]')")
INPUT = 32


def _cli(*args: str, block_modelopt: bool = False) -> subprocess.CompletedProcess:
    prefix = "import sys; sys.modules['modelopt'] = None; " if block_modelopt else ""
    code = prefix + "from maxq_deploy.cli.app import main; sys.argv = ['maxq-deploy', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", "import sys\n" + code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=900, env={**os.environ, "COLUMNS": "200"})


def test_missing_backend_is_one_line_with_its_install_hint(tmp_path):
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    save_checkpoint(make_checkpoint("resnet18", "2:4", num_classes=10, seed=0), tmp_path / "r.pth.tar")
    fold_checkpoint(tmp_path / "r.pth.tar", tmp_path / "f.pt")
    calib = tmp_path / "c.npy"
    import numpy as np

    np.save(calib, np.random.default_rng(0).standard_normal((32, 3, INPUT, INPUT)).astype(np.float32))
    proc = _cli("quantize", str(tmp_path / "f.pt"), "-o", str(tmp_path / "q.pt"), "--calib", str(calib), "--backend", "modelopt",
                block_modelopt=True)
    assert proc.returncode != 0 and not (tmp_path / "q.pt").exists()
    lines = [line for line in proc.stderr.splitlines() + proc.stdout.splitlines() if line.strip()]
    assert lines == ["error: nvidia-modelopt is not installed: pip install 'maxq-deploy[modelopt]'"], lines
    proc = _cli("quantize", str(tmp_path / "f.pt"), "-o", str(tmp_path / "q.pt"), "--calib", str(calib), "--backend", "modelopt",
                "--qat", "--train-data", str(calib), block_modelopt=True)
    lines = [line for line in proc.stderr.splitlines() + proc.stdout.splitlines() if line.strip()]
    assert proc.returncode != 0 and lines == ["error: nvidia-modelopt is not installed: pip install 'maxq-deploy[modelopt]'"], lines


def test_require_modelopt_and_version_without_it_raise_the_install_hint(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "modelopt", None)  # what an environment without the package sees
    for call in (mo_adapter.require_modelopt, mo_adapter.version):
        with pytest.raises(BackendUnavailableError) as info:
            call()
        assert str(info.value) == "nvidia-modelopt is not installed: pip install 'maxq-deploy[modelopt]'"


# --------------------------------------------------------------------------------------------- with ModelOpt


def _tiny(seed: int = 0) -> nn.Sequential:
    """conv (2:4 weights) -> ReLU -> pool -> fc; ModelOpt quantizes the conv, the pooling input and the fc."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        net[0].weight.copy_(project_to_pattern(net[0].weight, HARDWARE_PATTERN, axis=1))
    return net.eval()


BATCHES = [torch.randn(2, 8, 6, 6, generator=torch.Generator().manual_seed(i)) * (i + 1) for i in range(3)]


def _loop(model: nn.Module, watch=None) -> None:
    with torch.no_grad():
        for index, x in enumerate(BATCHES):
            if index == 0 and watch is not None:
                watch(x)
            model(x)


def _activations(net: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    """|pool input| and |fc input| over all calibration batches, from the float network (the reference)."""
    with torch.no_grad():
        relu = torch.cat([net[1](net[0](x)).flatten() for x in BATCHES])
        pooled = torch.cat([net[3](net[2](net[1](net[0](x)))).flatten() for x in BATCHES])
    return relu.abs(), pooled.abs()


@pytest.mark.slow
@needs_modelopt
def test_max_calibration_gives_max_abs_of_the_data_under_this_tools_names() -> None:
    reference = _tiny()
    relu, pooled = _activations(reference)
    model = mo_adapter.quantize_model(_tiny(), "max")
    assert mo_adapter.calibrate_model(model, _loop, "max") == []  # no input switched to max: all are max already
    ranges = mo_adapter.ranges_of(model)
    assert sorted(ranges) == ["0._input_quantizer", "0._weight_quantizer", "2._input_quantizer", "4._input_quantizer",
                              "4._weight_quantizer"]
    assert float(ranges["0._input_quantizer"]) == float(max(x.abs().max() for x in BATCHES))
    assert float(ranges["2._input_quantizer"]) == pytest.approx(float(relu.max()), rel=1e-6)
    assert float(ranges["4._input_quantizer"]) == pytest.approx(float(pooled.max()), rel=1e-6)
    for layer, shape in (("0", (8, 1, 1, 1)), ("4", (4, 1))):  # weights: per output channel, axis 0
        weight = reference.get_submodule(layer).weight.detach()
        amax = ranges[f"{layer}._weight_quantizer"]
        assert amax.shape == shape and torch.equal(amax.flatten(), weight.abs().flatten(1).amax(1))
    assert mo_adapter.quantized_layers(model) == {"0", "4"}  # the pool has an input quantizer but no weight
    buffers = mo_adapter.range_tensors(model)
    assert len(buffers) == 5 and all(b.device.type == "cpu" for b in buffers)
    buffers[0].mul_(2)  # the very buffers inside the network: what torchrun broadcasts
    assert float(mo_adapter.ranges_of(model)["0._input_quantizer"]) == 2 * float(max(x.abs().max() for x in BATCHES))


@pytest.mark.slow
@needs_modelopt
def test_modelopts_int8_weights_keep_every_zero_and_the_2_4_pattern() -> None:
    model = mo_adapter.quantize_model(_tiny(), "max")
    mo_adapter.calibrate_model(model, _loop, "max")
    conv = model[0]
    weight = conv.weight.detach()
    amax = mo_adapter.ranges_of(model)["0._weight_quantizer"]
    with torch.no_grad():
        fake = conv.weight_quantizer(weight)
    hand = torch.round(weight * 127 / amax).clamp(-127, 127) * amax / 127  # symmetric INT8 per channel, by hand
    torch.testing.assert_close(fake, hand, rtol=0, atol=1e-6)
    assert torch.equal(fake == 0, weight == 0)
    int8 = torch.round(fake * 127 / amax)
    assert int8.abs().max() == 127 and check_pattern(int8, HARDWARE_PATTERN, axis=1).holds


@pytest.mark.slow
@needs_modelopt
def test_keep_float_and_disable_all_but_leave_quantizers_out_of_the_ranges() -> None:
    model = mo_adapter.quantize_model(_tiny(), "max")
    mo_adapter.keep_float(model, ["4"])
    off = mo_adapter.disable_all_but(model, {"0._input_quantizer", "0._weight_quantizer"})
    assert off == ["2.input_quantizer"]  # ModelOpt's names; the fc's were already off
    mo_adapter.calibrate_model(model, _loop, "max")
    assert sorted(mo_adapter.ranges_of(model)) == ["0._input_quantizer", "0._weight_quantizer"]
    with torch.no_grad():
        fc_in = model[3](model[2](model[1](model[0](BATCHES[0]))))
        torch.testing.assert_close(model[4](fc_in), _tiny()[4](fc_in), rtol=0, atol=0)  # the fc runs float


@pytest.mark.slow
@needs_modelopt
def test_histogram_calibration_keeps_the_network_input_on_max() -> None:
    relu, _ = _activations(_tiny())
    model = mo_adapter.quantize_model(_tiny(), "percentile")
    assert mo_adapter.calibrate_model(model, _loop, "percentile", 99.0) == ["0._input_quantizer"]
    ranges = mo_adapter.ranges_of(model)
    assert float(ranges["0._input_quantizer"]) == float(max(x.abs().max() for x in BATCHES))  # max, not a percentile
    pool = float(ranges["2._input_quantizer"])
    assert float(np.percentile(relu.numpy(), 98.0)) < pool < float(relu.max())  # a 99th percentile of |x|, clipping the tail
    weight = _tiny()[0].weight.detach()
    assert torch.equal(ranges["0._weight_quantizer"].flatten(), weight.abs().flatten(1).amax(1))  # weights stay max


@pytest.mark.slow
@needs_modelopt
def test_resnet_blocks_get_a_residual_quantizer_calibrated_on_the_identity(store) -> None:
    from maxq_deploy.quantize.artifact import read_folded_input

    folded, _ = read_folded_input(store.folded(arch="resnet18"))
    model = mo_adapter.build_model(folded.arch, folded.num_classes, folded.state_dict)
    seen: dict[str, float] = {}
    model = mo_adapter.quantize_model(model, "max")
    from modelopt.torch.quantization.nn import TensorQuantizer

    residuals = [name for name, m in model.named_modules() if name.endswith("residual_quantizer")]
    assert len(residuals) == 8 and all(isinstance(model.get_submodule(n), TensorQuantizer) for n in residuals)
    target = model.get_submodule("layer2.0.residual_quantizer")
    hook = target.register_forward_pre_hook(  # what the quantizer sees: the block's identity branch
        lambda m, a: seen.__setitem__("amax", max(seen.get("amax", 0.0), float(a[0].abs().max()))))
    images = [torch.randn(2, 3, INPUT, INPUT, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.no_grad():
        mo_adapter.calibrate_model(model, lambda m, watch: [m(x) for x in images], "max")
    hook.remove()
    ranges = mo_adapter.ranges_of(model)
    assert {f"{n.rpartition('.')[0]}.residual_quantizer" for n in residuals} <= set(ranges)
    assert float(ranges["layer2.0.residual_quantizer"]) == pytest.approx(seen["amax"], rel=1e-6)
