"""The one module that talks to NVIDIA Model Optimizer (``nvidia-modelopt``, imported lazily).

``quantize --backend modelopt``: the folded network (plain ``nn.Conv2d``/``nn.Linear``) goes
through ``mtq.quantize`` with ``INT8_DEFAULT_CFG`` (weights per output channel, axis 0;
activations per tensor; symmetric 8 bit), which puts a quantizer on the input and weight of every
conv and linear layer and on the pooling inputs. The residual branch of every ResNet block gets a
ModelOpt ``TensorQuantizer`` of the same kind (its place in this tool's scheme: Conv+Add fuses in
INT8), then ``mtq.calibrate(algorithm="max")`` calibrates all of them in one pass. The ranges are
written under this tool's quantizer names (``X.input_quantizer`` -> ``X._input_quantizer``), into
the same quantized-checkpoint format, checked by the same code: every later stage is unchanged.
Quantizers this tool's scheme has no place for (max-pool input, outputs) are left out, and a
layer ModelOpt left unquantized is named in a note.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from types import ModuleType

import torch
from torch import nn

from maxq_deploy.archs.layers import FoldedLayers
from maxq_deploy.core.errors import BackendUnavailableError

INSTALL_HINT = "nvidia-modelopt is not installed: pip install 'maxq-deploy[modelopt]'"
#: ModelOpt's quantizer attribute -> this tool's (the pytorch-quantization names the checkpoint uses).
NAME_MAP = {"input_quantizer": "_input_quantizer", "weight_quantizer": "_weight_quantizer", "residual_quantizer": "residual_quantizer"}


@contextlib.contextmanager
def _quiet():
    """ModelOpt prints and warns a lot on a CPU (NVML, plugin probes); none of it reaches the user."""
    logger = logging.getLogger("modelopt")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def require_modelopt() -> ModuleType:
    """``modelopt.torch.quantization``, or the one-line install hint."""
    try:
        with _quiet():
            import modelopt.torch.quantization as mtq
    except ImportError:
        raise BackendUnavailableError(INSTALL_HINT) from None
    return mtq


def version() -> str:
    require_modelopt()
    import modelopt

    return str(getattr(modelopt, "__version__", "unknown"))


class _ResidualSlots(FoldedLayers):
    """The folded layout; residual branches are identities until ModelOpt's quantizers are put there."""


def build_model(arch: str, num_classes: int, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    from maxq_deploy.archs import model_entrypoint

    model = model_entrypoint(arch)(_ResidualSlots(), num_classes)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def quantize_and_calibrate(model: nn.Module, forward_loop) -> nn.Module:
    """``mtq.quantize`` (INT8 default config), residual quantizers added, one max calibration pass."""
    import copy

    mtq = require_modelopt()
    from modelopt.torch.quantization.config import QuantizerAttributeConfig
    from modelopt.torch.quantization.nn import TensorQuantizer

    with _quiet():
        model = mtq.quantize(model, copy.deepcopy(mtq.INT8_DEFAULT_CFG), forward_loop=None)
        for name, module in list(model.named_modules()):
            if isinstance(getattr(module, "residual_quantizer", None), nn.Identity):
                module.residual_quantizer = TensorQuantizer(QuantizerAttributeConfig(num_bits=8, axis=None))
        model = mtq.calibrate(model, algorithm="max", forward_loop=forward_loop)
    return model.eval()


def ranges_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every enabled, calibrated ModelOpt quantizer's amax under this tool's quantizer names."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    ranges = {}
    for name, module in model.named_modules():
        if not isinstance(module, TensorQuantizer) or not module.is_enabled:
            continue
        owner, _, attr = name.rpartition(".")
        if attr not in NAME_MAP:
            continue
        amax = getattr(module, "amax", None)
        if isinstance(amax, torch.Tensor):
            ranges[f"{owner}.{NAME_MAP[attr]}" if owner else NAME_MAP[attr]] = amax.detach().float().cpu().clone()
    return ranges
