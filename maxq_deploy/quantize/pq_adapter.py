"""The one module that talks to pytorch-quantization (imported lazily, inside the functions).

What it builds: the folded architecture with INT8 fake quantization where TensorRT wants Q/DQ.

- every conv (BN already folded into it) is a ``QuantConv2d``: weights per output channel
  (axis 0), inputs per tensor, symmetric 8 bit (pytorch-quantization's defaults), nothing
  between conv and ReLU;
- the classifier is a ``QuantLinear`` (weights per row, input per tensor);
- each ResNet block quantizes its residual branch (``residual_quantizer``, the same input
  descriptor) so that TensorRT can fuse Conv + Add + ReLU in INT8.

Everything else (calibration loops, checkpoints, training, export) goes through the small
functions here, so another quantization backend (e.g. Model Optimizer) replaces one module.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np
import torch
from torch import nn

from maxq_deploy.archs.layers import FoldedLayers
from maxq_deploy.core.errors import BackendUnavailableError
from maxq_deploy.quantize.config import CALIBRATORS, HISTOGRAM_METHODS  # noqa: F401  (weights: per-channel max)
from maxq_deploy.quantize.histogram import NUM_BITS, histogram_amax, sample_stride

INSTALL_HINT = "pytorch-quantization is not installed: pip install 'maxq-deploy[quant]'"
#: A histogram calibrator bins at most about this many values of one tensor per batch (a
#: fixed-stride sample of larger ones, counts scaled back up; the range still comes from every
#: value). Binning is compute-bound (``histc``, ~3 ns a value a core) and would otherwise cost
#: as much as the convolutions; 2**20 values a batch keep the 99.99th percentile well sampled.
HISTOGRAM_SAMPLES = 1 << 20
#: Quantizer roles, from the quantizer's attribute name.
ROLE_BY_SUFFIX = {"_input_quantizer": "input", "_weight_quantizer": "weight", "residual_quantizer": "residual"}


def require_pytorch_quantization() -> ModuleType:
    """Import pytorch-quantization (quietly), or raise the one-line install hint."""
    try:
        import pytorch_quantization
        from pytorch_quantization import nn as quant_nn  # noqa: F401  (fails on broken installs)
    except ImportError:
        raise BackendUnavailableError(INSTALL_HINT) from None
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # it logs a warning per quantizer and call
    return pytorch_quantization


def version() -> str:
    return str(getattr(require_pytorch_quantization(), "__version__", "unknown"))


def _input_descriptor(calibrator: str):
    from pytorch_quantization.tensor_quant import QuantDescriptor

    return QuantDescriptor(num_bits=NUM_BITS, calib_method="max" if calibrator == "max" else "histogram")


def _weight_descriptor():
    from pytorch_quantization.tensor_quant import QuantDescriptor

    return QuantDescriptor(num_bits=NUM_BITS, axis=(0,))


class QuantLayers(FoldedLayers):
    """Folded layout (conv + bias, no BN) with INT8 fake quantization on every conv input and weight."""

    def __init__(self, calibrator: str = "max"):
        require_pytorch_quantization()
        self.calibrator = calibrator

    def _conv(self, in_ch: int, out_ch: int, kernel: int, stride: int, padding: int, groups: int) -> nn.Module:
        from pytorch_quantization import nn as quant_nn

        return quant_nn.QuantConv2d(
            in_ch, out_ch, kernel, stride, padding, groups=groups, bias=True,
            quant_desc_input=_input_descriptor(self.calibrator), quant_desc_weight=_weight_descriptor(),
        )

    def sparse_conv_bn(self, in_ch, out_ch, kernel, stride=1, padding=0):
        return self._conv(in_ch, out_ch, kernel, stride, padding, 1)

    def conv(self, in_ch, out_ch, kernel, stride=1, padding=0, groups=1):
        return self._conv(in_ch, out_ch, kernel, stride, padding, groups)

    def head_conv(self, in_ch, out_ch):
        return self._conv(in_ch, out_ch, 1, 1, 0, 1)

    def residual_quantizer(self) -> nn.Module:
        """The identity branch of a residual Add, quantized like a conv input."""
        from pytorch_quantization import nn as quant_nn

        return quant_nn.TensorQuantizer(_input_descriptor(self.calibrator))


def _quant_linears(model: nn.Module, calibrator: str) -> None:
    """Swap every plain ``nn.Linear`` (architectures build ``fc`` directly) for a QuantLinear."""
    from pytorch_quantization import nn as quant_nn

    for name, module in list(model.named_modules()):
        if type(module) is nn.Linear:
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            quant = quant_nn.QuantLinear(
                module.in_features, module.out_features, bias=module.bias is not None,
                quant_desc_input=_input_descriptor(calibrator), quant_desc_weight=_weight_descriptor(),
            )
            setattr(parent, name.rpartition(".")[2], quant)


def build_quant_model(arch: str, num_classes: int, calibrator: str = "max") -> nn.Module:
    """The folded network of ``arch`` with fake-quant modules, eval mode, no ranges yet."""
    from pytorch_quantization import calib

    from maxq_deploy.archs import model_entrypoint

    model = model_entrypoint(arch)(QuantLayers(calibrator), num_classes)
    _quant_linears(model, calibrator)
    from maxq_deploy.quantize.pool_quant import quant_pools

    quant_pools(model, _input_descriptor(calibrator))
    histogram, maximum = _single_pass_calibrators()
    for q in quantizers(model).values():
        if type(q._calibrator) is calib.HistogramCalibrator:
            q._calibrator = histogram(q.num_bits, None, q.unsigned)
        elif type(q._calibrator) is calib.MaxCalibrator and q.axis is None:
            q._calibrator = maximum(q.num_bits, None, q.unsigned)
    return model.eval()


_SINGLE_PASS: tuple[type, type] | None = None


def _histc(x: torch.Tensor, bins: int, x_max: torch.Tensor, stride: int) -> torch.Tensor:
    hist = torch.histc(x, bins=bins, min=0, max=x_max)
    return hist * stride if stride > 1 else hist  # a sample's counts stand for the whole tensor


def set_histogram_samples(model: nn.Module, max_samples: int | None) -> None:
    """Cap the values a histogram calibrator bins per tensor and batch (None: all, as upstream)."""
    for q in quantizers(model).values():
        if hasattr(type(q._calibrator), "max_samples"):
            q._calibrator.max_samples = max_samples


def _single_pass_calibrators() -> tuple[type, type]:
    """pytorch-quantization's per-tensor Histogram and Max calibrators with a cheaper ``collect``.

    Calibration is memory-bound: every extra read of an activation costs about as much as the
    binning. Upstream reads each tensor up to four times (``min`` to detect negatives, ``abs``,
    ``abs`` + ``max``); one ``aminmax`` gives both ends, and ``abs`` runs only for the histogram
    of a signed tensor. Histogram binning (``torch.histc`` on [0, max], growing by whole bins)
    is upstream's, line for line: with ``max_samples`` None the histograms are identical; with a
    cap, tensors larger than it are binned from a fixed-stride sample (see HISTOGRAM_SAMPLES).
    """
    global _SINGLE_PASS
    if _SINGLE_PASS is not None:
        return _SINGLE_PASS
    from pytorch_quantization import calib

    class SinglePassHistogramCalibrator(calib.HistogramCalibrator):
        #: None: bin every value (upstream's behaviour); else see HISTOGRAM_SAMPLES.
        max_samples: int | None = None

        @torch.no_grad()
        def collect(self, x: torch.Tensor) -> None:
            x = x.detach().float()
            lo, hi = torch.aminmax(x)
            stride = sample_stride(x.numel(), self.max_samples)
            if stride > 1:
                x = x.reshape(-1)[::stride]
            if lo < 0:
                x = x.abs()
                x_max = torch.maximum(hi, -lo)
            else:
                x_max = hi
            if self._skip_zeros:
                x = x[x != 0]
            if self._calib_bin_edges is None and self._calib_hist is None:
                self._calib_hist = _histc(x, self._num_bins, x_max, stride)
                self._calib_bin_edges = torch.linspace(0, x_max, self._num_bins + 1)
                return
            if x_max > self._calib_bin_edges[-1]:
                width = self._calib_bin_edges[1] - self._calib_bin_edges[0]
                self._num_bins = int((x_max / width).ceil().item())
                self._calib_bin_edges = torch.arange(0, x_max + width, width, device=x.device)
            hist = _histc(x, self._num_bins, self._calib_bin_edges[-1], stride)
            hist[: self._calib_hist.numel()] += self._calib_hist
            self._calib_hist = hist

    class SinglePassMaxCalibrator(calib.MaxCalibrator):
        """Per-tensor only (activations); weights keep upstream's per-channel MaxCalibrator."""

        @torch.no_grad()
        def collect(self, x: torch.Tensor) -> None:
            lo, hi = torch.aminmax(x.detach())
            amax = torch.maximum(hi.abs(), lo.abs()).float()
            self._calib_amax = amax if self._calib_amax is None else torch.maximum(self._calib_amax, amax)
            if self._track_amax:
                self._amaxs.append(amax.cpu().numpy())

    _SINGLE_PASS = (SinglePassHistogramCalibrator, SinglePassMaxCalibrator)
    return _SINGLE_PASS


def quantizers(model: nn.Module) -> dict[str, nn.Module]:
    """Every active TensorQuantizer of ``model`` by module name (``layer1.0.convbn1._input_quantizer``).

    Quantizers of layers kept float (:func:`keep_float`) are left out: nothing calibrates,
    enables or stores them.
    """
    from pytorch_quantization.nn import TensorQuantizer

    return {name: mod for name, mod in model.named_modules()
            if isinstance(mod, TensorQuantizer) and not getattr(mod, KEPT_FLOAT_ATTR, False)}


#: Set on the input and weight quantizers of a layer kept float (``quantize --keep-float``).
KEPT_FLOAT_ATTR = "maxq_kept_float"


def keep_float(model: nn.Module, layers) -> None:
    """Layers ``layers`` (conv/linear module names) run float: their input and weight quantizers are off for good.

    A disabled TensorQuantizer returns its input untouched, in fake quantization and in the ONNX
    export alike, so the Q/DQ graph has no QuantizeLinear/DequantizeLinear on those inputs and weights.
    """
    for name in layers:
        module = model.get_submodule(name)
        for attr in ("_input_quantizer", "_weight_quantizer"):
            q = getattr(module, attr)
            q.disable()
            setattr(q, KEPT_FLOAT_ATTR, True)


def quantizer_role(name: str) -> str:
    return ROLE_BY_SUFFIX.get(name.rpartition(".")[2], "input")


def amax_of(quantizer: nn.Module) -> torch.Tensor | None:
    amax = getattr(quantizer, "_amax", None)
    return amax.detach().clone() if isinstance(amax, torch.Tensor) else None


def set_amax(quantizer: nn.Module, amax: torch.Tensor) -> None:
    """Set a quantizer's range (registering the buffer on first use; ``model.to`` moves it)."""
    quantizer.register_buffer("_amax", amax.detach().clone().float())


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load folded weights; the only keys the quantized network may add are quantizer ranges."""
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not k.endswith("._amax")]
    if missing or unexpected:  # the folded checkpoint was validated against the architecture: a bug
        raise RuntimeError(f"bug: quantized network does not match folded weights (missing {missing[:3]}, unexpected {unexpected[:3]})")


# --- calibration -------------------------------------------------------------------------------


def _weight_owner(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name.rpartition(".")[0])


@torch.no_grad()
def calibrate_weights(model: nn.Module) -> None:
    """Per-channel max of every weight through pytorch-quantization's MaxCalibrator."""
    for name, q in quantizers(model).items():
        if quantizer_role(name) != "weight":
            continue
        q.disable_quant()
        q.enable_calib()
        q(_weight_owner(model, name).weight.detach())
        q.load_calib_amax(strict=False)
        q.disable_calib()
        q.enable_quant()


@contextlib.contextmanager
def collecting_activation_statistics(model: nn.Module) -> Iterator[None]:
    """Inside: forward passes run in float and feed the activation calibrators; weights untouched."""
    qs = quantizers(model)
    activations = [q for name, q in qs.items() if quantizer_role(name) != "weight"]
    weights = [q for name, q in qs.items() if quantizer_role(name) == "weight"]
    for q in activations:
        q.disable_quant()
        q.enable_calib()
    for q in weights:
        q.disable()  # a weight does not change between batches: calibrated once, separately
    try:
        yield
    finally:
        for q in activations:
            q.disable_calib()
            q.enable_quant()
        for q in weights:
            q.enable()


@dataclass
class InputSharing:
    """Which activation quantizers receive the very same tensor (found on one forward pass)."""

    groups: list[list[str]] = field(default_factory=list)  # each: quantizers fed one tensor, call order
    network_input: list[str] = field(default_factory=list)  # the group fed the model's input


@contextlib.contextmanager
def watching_inputs(model: nn.Module, x: torch.Tensor) -> Iterator[InputSharing]:
    """Record, during one forward pass of ``x``, which quantizers share an input tensor.

    In a ResNet block the block input feeds ``convbn1``, ``downsample`` or the residual
    quantizer: one tensor, one histogram. A tensor is matched by identity while it is alive and
    unmodified (weak reference + version counter), so a freed tensor whose id is reused, or one
    changed in place in between, is never mistaken for the first.
    """
    sharing = InputSharing()
    live: dict[int, tuple[weakref.ref, int, list[str]]] = {}
    handles = []
    for name, q in quantizers(model).items():
        if quantizer_role(name) == "weight":
            continue

        def hook(module: nn.Module, args: tuple, name: str = name) -> None:
            if not args or not isinstance(args[0], torch.Tensor):
                return
            t = args[0]
            entry = live.get(id(t))
            if entry is not None and entry[0]() is t and entry[1] == t._version:
                entry[2].append(name)
                return
            names = [name]
            live[id(t)] = (weakref.ref(t), t._version, names)
            sharing.groups.append(names)
            if t is x:
                sharing.network_input = names

        handles.append(q.register_forward_pre_hook(hook))
    try:
        yield sharing
    finally:
        for handle in handles:
            handle.remove()


def share_calibrators(model: nn.Module, sharing: InputSharing) -> None:
    """Quantizers fed the same tensor share the first one's calibrator; the others stop collecting.

    Same data, same range, a fraction of the histogram work (what keeps calibration near the
    cost of plain forward passes).
    """
    qs = quantizers(model)
    for names in sharing.groups:
        leader = qs[names[0]]
        for name in names[1:]:
            qs[name]._calibrator = leader._calibrator
            qs[name].disable_calib()


def switch_to_max_calibrator(model: nn.Module, names: list[str], seen: torch.Tensor) -> None:
    """Give ``names`` one MaxCalibrator that has already seen ``seen`` (used for the network input)."""
    from pytorch_quantization import calib

    qs = quantizers(model)
    if not names or isinstance(qs[names[0]]._calibrator, calib.MaxCalibrator):
        return
    shared = _single_pass_calibrators()[1](qs[names[0]].num_bits, None, qs[names[0]].unsigned)
    shared.collect(seen)
    for name in names:
        qs[name]._calibrator = shared


def activation_histogram(quantizer: nn.Module) -> tuple[np.ndarray, np.ndarray] | None:
    """(counts, bin edges) a HistogramCalibrator collected, None if it saw nothing."""
    calibrator = getattr(quantizer, "_calibrator", None)
    hist, edges = getattr(calibrator, "_calib_hist", None), getattr(calibrator, "_calib_bin_edges", None)
    if hist is None or edges is None:
        return None
    if isinstance(hist, torch.Tensor):
        hist, edges = hist.cpu().numpy(), edges.cpu().numpy()
    return np.asarray(hist, dtype=np.float64), np.asarray(edges, dtype=np.float64)


def load_activation_amax(model: nn.Module, method: str, percentile: float = 99.99, progress=None) -> None:
    """Turn what the calibrators collected into ranges.

    ``max`` and ``percentile`` use pytorch-quantization's own ``load_calib_amax``; ``entropy``
    and ``mse`` use :func:`histogram_amax` on its histograms (its versions are a pure-Python
    loop taking seconds per quantizer, and ``mse`` calls ``.cuda()``). A calibrator that saw
    nothing gets NaN, which the caller reports.
    """
    from pytorch_quantization import calib

    from maxq_deploy.core.progress import SILENT

    items = [(n, q) for n, q in quantizers(model).items() if quantizer_role(n) != "weight"]
    done: dict[int, torch.Tensor] = {}  # quantizers sharing a calibrator share its range
    for name, q in (progress or SILENT).track(items, total=len(items), description=f"{method} ranges"):
        key = id(q._calibrator)
        if key in done:
            set_amax(q, done[key])
            continue
        if method == "max" or isinstance(q._calibrator, calib.MaxCalibrator):
            q.load_calib_amax(strict=False)
        elif method == "percentile":
            q.load_calib_amax("percentile", percentile=percentile, strict=False)
        else:
            collected = activation_histogram(q)
            value = math.nan if collected is None else histogram_amax(*collected, method)
            set_amax(q, torch.tensor(value))
        done[key] = q._amax


@contextlib.contextmanager
def onnx_export_mode() -> Iterator[str]:
    """Make fake quantization export as QuantizeLinear/DequantizeLinear; restore on exit.

    pytorch-quantization >= 2.2 has ``enable_onnx_export()``; 2.1.x switches the class-wide
    ``TensorQuantizer.use_fb_fake_quant`` to torch's native fake-quant ops, which the
    TorchScript exporter (``dynamo=False``) turns into Q/DQ pairs. Yields which was used.
    """
    pq = require_pytorch_quantization()
    if hasattr(pq, "enable_onnx_export"):
        with pq.enable_onnx_export():
            yield "pytorch_quantization.enable_onnx_export()"
        return
    from pytorch_quantization.nn import TensorQuantizer

    previous = TensorQuantizer.use_fb_fake_quant
    TensorQuantizer.use_fb_fake_quant = True
    try:
        yield "TensorQuantizer.use_fb_fake_quant"
    finally:
        TensorQuantizer.use_fb_fake_quant = previous
