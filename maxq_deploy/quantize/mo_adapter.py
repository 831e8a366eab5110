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


#: ``--calibrator`` -> how ModelOpt calibrates activations: its max pass, or its HistogramCalibrator
#: (per tensor; ``compute_amax(method)`` with entropy, mse or percentile). Weights are max per channel either way.
HISTOGRAM_METHODS = ("entropy", "mse", "percentile")


def quantize_model(model: nn.Module, calibrator: str = "max") -> nn.Module:
    """``mtq.quantize`` (INT8 default config, no calibration yet) plus a quantizer on every residual branch.

    For a histogram ``calibrator`` every activation quantizer collects ModelOpt's histogram of |x|
    instead of its max; the weights keep their per-channel max calibrator.
    """
    import copy

    mtq = require_modelopt()
    from modelopt.torch.quantization.calib import HistogramCalibrator
    from modelopt.torch.quantization.config import QuantizerAttributeConfig
    from modelopt.torch.quantization.nn import TensorQuantizer

    with _quiet():
        model = mtq.quantize(model, copy.deepcopy(mtq.INT8_DEFAULT_CFG), forward_loop=None)
        for name, module in list(model.named_modules()):
            if isinstance(getattr(module, "residual_quantizer", None), nn.Identity):
                module.residual_quantizer = TensorQuantizer(QuantizerAttributeConfig(num_bits=8, axis=None))
        if calibrator in HISTOGRAM_METHODS:
            for name, module in model.named_modules():
                if isinstance(module, TensorQuantizer) and not name.endswith("weight_quantizer") and module.is_enabled:
                    module._calibrator = HistogramCalibrator(num_bits=8, axis=None, unsigned=False)
    return model


def calibrate_model(model: nn.Module, forward_loop, calibrator: str = "max", percentile: float = 99.99) -> list[str]:
    """Calibrate every enabled quantizer of a :func:`quantize_model` network in one pass of ``forward_loop``.

    ``max``: ModelOpt's ``mtq.calibrate(algorithm="max")``. A histogram method: ModelOpt's stats
    collection, then each histogram's ``compute_amax(method)``; the quantizers that see the network
    input itself are switched to max first (``forward_loop(model, watch)`` calls ``watch(x)``, when
    ``watch`` is not None, before the forward of its first batch ``x``), as the default backend does: 8-bit pixels fit INT8 at full range, a histogram
    method would clip their bright tail. Returns the names of those max-calibrated input quantizers.
    """
    mtq = require_modelopt()
    from modelopt.torch.quantization.calib import MaxCalibrator
    from modelopt.torch.quantization.model_calib import enable_stats_collection
    from modelopt.torch.quantization.nn import TensorQuantizer

    if calibrator not in HISTOGRAM_METHODS:
        with _quiet():
            mtq.calibrate(model, algorithm="max", forward_loop=lambda m: forward_loop(m, None))
        return []
    quantizers = {name: m for name, m in model.named_modules() if isinstance(m, TensorQuantizer) and m.is_enabled}
    network_input: list[str] = []
    handles: list = []

    def watch(x: torch.Tensor) -> None:
        def hook(module: nn.Module, args: tuple, name: str) -> None:
            if args and args[0] is x and name not in network_input:
                network_input.append(name)
                module._calibrator = MaxCalibrator(num_bits=8, axis=None, unsigned=False)

        for name, q in quantizers.items():
            if not name.endswith("weight_quantizer"):
                handles.append(q.register_forward_pre_hook(lambda m, a, name=name: hook(m, a, name)))

    def unwatch() -> None:
        while handles:
            handles.pop().remove()

    with _quiet(), torch.no_grad():
        enable_stats_collection(model)
        try:
            forward_loop(model, watch)
        finally:
            unwatch()
        for name, q in quantizers.items():
            if isinstance(q._calibrator, MaxCalibrator):
                q.load_calib_amax()
            elif calibrator == "percentile":
                q.load_calib_amax("percentile", percentile=percentile)
            else:
                q.load_calib_amax(calibrator)
            q.enable_quant()
            q.disable_calib()
    return [_our_name(name) for name in network_input]


def keep_float(model: nn.Module, layers) -> None:
    """Layers ``layers`` run float: ModelOpt's input and weight quantizers of each are disabled for good."""
    for name in layers:
        module = model.get_submodule(name)
        for attr in ("input_quantizer", "weight_quantizer"):
            getattr(module, attr).disable()


def disable_all_but(model: nn.Module, slots: set[str]) -> list[str]:
    """Disable every enabled ModelOpt quantizer whose name (in this tool's names) is not in ``slots``; their ModelOpt names."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    off = []
    for name, module in model.named_modules():
        if isinstance(module, TensorQuantizer) and module.is_enabled and _our_name(name) not in slots:
            module.disable()
            off.append(name)
    return off


def quantized_layers(model: nn.Module) -> set[str]:
    """Names of the modules ModelOpt replaced by a quantized module (QuantConv2d, QuantLinear, ...)."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    return {name.rpartition(".")[0] for name, m in model.named_modules()
            if isinstance(m, TensorQuantizer) and name.endswith(".weight_quantizer")}


def range_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The amax buffers inside the network (torchrun broadcasts rank 0's)."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    return [m._amax for m in model.modules() if isinstance(m, TensorQuantizer) and isinstance(getattr(m, "_amax", None), torch.Tensor)]


def _our_name(name: str) -> str:
    owner, _, attr = name.rpartition(".")
    return f"{owner}.{NAME_MAP.get(attr, attr)}" if owner else NAME_MAP.get(attr, attr)


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
            ranges[_our_name(name)] = amax.detach().float().cpu().clone()
    return ranges
