"""Per-layer sensitivity: what 2:4 and INT8 cost in top-1, one sparse layer at a time.

For every sparse layer of a MaxQ or folded checkpoint, on a ``--limit``-ed labelled set, the
top-1 change (points, negative is a loss) when only that layer is

- (a) ``2:4``: projected to 2:4 by magnitude (the 2 largest of each aligned group of 4 along C,
  what ``fold --project`` does); n/a where the layer already holds 2:4;
- (b) ``int8``: fake-quantized, weights per output channel (max |w|) and input per tensor (max
  |x| over the same images, from the baseline pass);
- (c) ``both``: projected, then fake-quantized (equal to (b) where (a) is n/a, not run again);

with the layer's share of the network's multiply-adds and parameters, and whether TensorRT can
run it sparse by its shape (ungrouped, C % 4 == 0) and why not.

Cost: the images are read once. One baseline pass records every block's input (the ResNet
blocks, MobileNet's depthwise-separable blocks); a variant of a layer inside block k then runs
only blocks k.. and the head on the cached input. ``evaluations`` counts variant passes,
``evaluation_equivalents`` their multiply-adds as a share of one full pass (plus the baseline):
at most ``2 x layers + 1`` for a 2:4 network. A network whose forward is not its blocks in
order (checked on the first batch) falls back to full passes, and says so.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from maxq_deploy.core.errors import DataError, OptionError
from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.core.sparsity import HARDWARE_PATTERN, check_pattern, project_to_pattern

#: Channel counts below which sparse kernels rarely beat dense ones (as the engine report says).
SMALL_CHANNELS = 256
VARIANTS = ("2:4", "int8", "both")


@dataclass
class LayerSensitivity:
    """One sparse layer: its top-1 change per variant (points; None: not applicable) and its weight."""

    name: str
    shape: list[int]
    groups: int
    holds_2_4: bool
    macs: int
    flops_share: float  # percent of the network's multiply-adds
    params_share: float  # percent of the network's parameters
    delta_2_4: float | None = None  # None: already 2:4 (nothing to project)
    delta_int8: float | None = None
    delta_both: float | None = None
    trt_sparse: bool = False  # TensorRT can run it sparse by its shape (after projection to 2:4)
    trt_reason: str = ""  # why not, or what may still keep it on a dense tactic
    input_amax: float = 0.0

    @property
    def saved_flops_share(self) -> float:
        """Share of the network's multiply-adds a 2:4 kernel skips in this layer (half of it)."""
        return self.flops_share / 2 if self.trt_sparse else 0.0


@dataclass
class SensitivityResult:
    model: str
    arch: str
    nm: str | None
    data: str
    images: int
    baseline_top1: float
    layers: list[LayerSensitivity] = field(default_factory=list)
    evaluations: int = 0  # variant passes over the limited set (each from its layer's block on)
    evaluation_equivalents: float = 0.0  # baseline + variant passes, in full passes (by multiply-adds)
    reuse: bool = True  # block inputs cached and only the suffix re-run
    seconds: float = 0.0  # the whole analysis, data reading included
    baseline_seconds: float = 0.0  # the one plain pass over the limited set (what eval costs on it)
    data_seconds: float = 0.0
    plot: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def budget(self) -> int:
        """The most evaluations the analysis may cost: 2 per layer + the baseline."""
        return 2 * len(self.layers) + 1

    def pareto(self) -> list[dict]:
        """Estimated trade-off: keep the k layers whose 2:4 projection costs most dense, k = 0, 1, ...

        Per step: the layers kept dense, the estimated top-1 drop (the sum of the single-layer 2:4
        costs of the layers still projected: an estimate, ``fold --auto`` measures it), and what the
        2:4 layers save: half their multiply-adds (where TensorRT can run them sparse) and half their
        parameters, in percent of the network.
        """
        ranked = sorted((l for l in self.layers if l.delta_2_4 is not None), key=lambda l: (l.delta_2_4, l.name))
        front = []
        for k in range(len(ranked) + 1):
            kept = {l.name for l in ranked[:k]}
            sparse = [l for l in self.layers if l.name not in kept]
            front.append({
                "kept_dense": [l.name for l in ranked[:k]],
                "estimated_drop": round(-sum(l.delta_2_4 for l in ranked[k:]), 4),
                "flops_saved_share": round(sum(l.saved_flops_share for l in sparse), 3),
                "params_saved_share": round(sum(l.params_share / 2 for l in sparse), 3),
            })
        return front

    def to_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "layers"}
        data["budget_evaluations"] = self.budget
        data["pareto"] = self.pareto()
        data["layers"] = [asdict(layer) | {"saved_flops_share": layer.saved_flops_share} for layer in self.layers]
        return data

    summary = to_dict


# ---------------------------------------------------------------------------- fake quantization


def fake_quant_weight(w: torch.Tensor) -> torch.Tensor:
    """Symmetric INT8 per output channel (max |w|, 127 levels each side); zeros stay zero."""
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(1).clamp_min(1e-12)
    scale = (amax / 127.0).reshape(-1, *([1] * (w.dim() - 1)))
    return (w / scale).round().clamp(-127, 127) * scale


def fake_quant_input(x: torch.Tensor, amax: float) -> torch.Tensor:
    """Symmetric INT8 per tensor with ``amax`` from calibration."""
    scale = max(float(amax), 1e-12) / 127.0
    return (x / scale).round().clamp(-128, 127) * scale


def trt_sparse_shape(conv: nn.Conv2d, holds_2_4_after: bool) -> tuple[bool, str]:
    """Whether TensorRT can pick a sparse kernel for ``conv`` by its shape, and why not / what may still stop it."""
    c, k = conv.in_channels, conv.out_channels
    why = []
    if conv.groups > 1:
        why.append(("depthwise" if c // conv.groups == 1 else f"grouped (groups={conv.groups})") + " conv: never sparse")
    if c % 4:
        why.append(f"C={c} is not a multiple of 4")
    if not holds_2_4_after:
        why.append("weights do not hold 2:4 along C")
    if why:
        return False, "; ".join(why)
    hints = []
    rs = math.prod(conv.kernel_size)
    if k < SMALL_CHANNELS or c * rs < SMALL_CHANNELS:
        hints.append(f"small (C={c}, K={k}): sparse kernels usually win only from about {SMALL_CHANNELS} channels")
    if list(conv.kernel_size) not in ([1, 1], [3, 3]):
        hints.append(f"kernel {'x'.join(map(str, conv.kernel_size))}: sparse kernels mostly help 1x1 and 3x3")
    return True, "; ".join(hints)


# ---------------------------------------------------------------------------- the block chain


class _Stop(Exception):
    pass


class _Pass(nn.Module):
    def forward(self, x, *args, **kwargs):  # noqa: D401 - a skipped block
        return x


def model_blocks(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(container, key) of every child of the model's top-level ``nn.Sequential`` children, in order."""
    return [(child, key) for child in model.children() if isinstance(child, nn.Sequential) for key in child._modules]


class BlockChain:
    """Runs a model from block k on with a given block input (the blocks before it skipped)."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        self.model = model
        self.slots = model_blocks(model)
        self.blocks = [container._modules[key] for container, key in self.slots]
        self.dummy = torch.zeros((1, *input_shape[1:]))

    def block_of(self, module: nn.Module) -> int | None:
        for k, block in enumerate(self.blocks):
            if any(m is module for m in block.modules()):
                return k
        return None

    @contextmanager
    def _from(self, k: int, h: torch.Tensor) -> Iterator[None]:
        for container, key in self.slots[:k]:
            container._modules[key] = _Pass()
        handle = self.blocks[k].register_forward_pre_hook(lambda mod, args: (h,) + tuple(args[1:]))
        try:
            yield
        finally:
            handle.remove()
            for (container, key), block in zip(self.slots[:k], self.blocks[:k]):
                container._modules[key] = block

    def run_from(self, k: int, h: torch.Tensor) -> torch.Tensor:
        with self._from(k, h):
            return self.model(self.dummy)


# ---------------------------------------------------------------------------- the analysis


def _limited(dataset, limit: int | None) -> list[int]:
    n = len(dataset)
    if limit is None or limit >= n:
        return list(range(n))
    step = n / limit
    return [int(i * step) for i in range(limit)]


def _load_images(dataset, indices: list[int], batch_size: int, progress: Progress) -> tuple[torch.Tensor, torch.Tensor]:
    from maxq_deploy.data import check_batch_memory, make_loader

    check_batch_memory(len(indices), dataset.sample_shape, "the --limit-ed image set", factor=2)
    loader = make_loader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size, workers=0)
    xs, ys = [], []
    for images, labels in progress.track(loader, total=len(loader), description="read images"):
        xs.append(images)
        ys.append(labels)
    if not xs:
        raise DataError(f"no readable images in {dataset.root}")
    return torch.cat(xs), torch.cat(ys)


def _open_model(path: str | os.PathLike[str]):
    """(arch, nm, folded module, folded layer list) of a MaxQ or folded checkpoint."""
    from maxq_deploy.fold import fold_masks_and_bn, folded_from_dict
    from maxq_deploy.load.formats import FOLDED_FORMAT, artifact_format
    from maxq_deploy.load.maxq_checkpoint import load_checkpoint, torch_load_safe

    p = Path(path)
    obj = torch_load_safe(p)
    spec = artifact_format(obj, p)
    if spec is None:
        ckpt = load_checkpoint(p, loaded=obj)
        result = fold_masks_and_bn(ckpt)  # exact; unfinished sparsity is refused with fold's message
        return result.arch, result.nm, result.build_model(), result.layers, result.input_size
    if spec.name != FOLDED_FORMAT:
        raise OptionError(f"{p} is a {spec.name} artifact: sensitivity takes a MaxQ checkpoint or a folded checkpoint (maxq-deploy fold)")
    folded = folded_from_dict(obj, p)
    return folded.arch, folded.nm, folded.build_model(), folded.layers, folded.meta.get("input_size")


def analyze(
    model_path: str | os.PathLike[str],
    data,
    labels: str | os.PathLike[str] | None = None,
    *,
    limit: int | None = 1000,
    batch_size: int = 64,
    preprocess=None,
    progress: Progress | None = None,
    plot: str | os.PathLike[str] | None = None,
    reuse: bool = True,
) -> SensitivityResult:
    """The sensitivity report of every sparse layer of ``model_path`` on ``data`` (see the module docstring)."""
    from maxq_deploy.data import ImageDataset, check_input_shape, open_dataset

    started = time.perf_counter()
    progress = progress or SILENT
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise OptionError(f"--limit must be a whole number >= 1, got {limit!r}")
    if batch_size < 1:
        raise OptionError(f"--batch-size must be >= 1, got {batch_size}")
    if plot is not None:
        from maxq_deploy.core.files import Output, guard_outputs

        guard_outputs([Output(Path(plot), (".svg",), "sensitivity plot")], [model_path, data, labels])
    arch, nm, model, folded_layers, input_size = _open_model(model_path)
    if isinstance(data, ImageDataset):
        dataset = data
    else:
        from maxq_deploy.load.input_size import preprocess_for, resolve_input_size

        if preprocess is None:  # the one rule, as eval uses it for this model
            preprocess = preprocess_for(arch, resolve_input_size(arch, {"input_size": input_size}))
        dataset = open_dataset(data, labels, preprocess, require_labels=True)
    check_input_shape(dataset, 3, None)
    indices = _limited(dataset, limit)
    x, y = _load_images(dataset, indices, batch_size, progress)
    result = SensitivityResult(str(model_path), arch, nm, str(dataset.root), len(y), 0.0)
    result.data_seconds = time.perf_counter() - started

    sparse = [layer for layer in folded_layers if layer.role == "sparse"]
    convs = {layer.name: model.get_submodule(layer.name) for layer in sparse}
    chain = BlockChain(model, tuple(x.shape))
    macs, amax, block_inputs = _baseline(model, chain if reuse else None, x, y, batch_size, convs, result, progress)
    if reuse and not result.reuse:
        result.notes.append("block inputs not reused (" + result.notes.pop() + "): every variant ran as a full pass")
    total_macs = sum(macs.values())
    total_params = sum(p.numel() for p in model.parameters())
    suffix_macs = _suffix_macs(chain, macs, model) if result.reuse else {}

    jobs: list[tuple[LayerSensitivity, str, nn.Conv2d, int | None]] = []
    for layer in sparse:
        conv = convs[layer.name]
        holds = check_pattern(conv.weight, HARDWARE_PATTERN).holds if conv.weight.shape[1] % 4 == 0 else False
        can_project = conv.weight.shape[1] % 4 == 0
        ok, why = trt_sparse_shape(conv, holds or can_project)
        entry = LayerSensitivity(
            layer.name, list(conv.weight.shape), conv.groups, holds, macs.get(layer.name, 0),
            100.0 * macs.get(layer.name, 0) / max(total_macs, 1), 100.0 * conv.weight.numel() / max(total_params, 1),
            trt_sparse=ok, trt_reason=why, input_amax=amax.get(layer.name, 0.0),
        )
        result.layers.append(entry)
        block = chain.block_of(conv) if result.reuse else None
        variants = ["int8"] if holds or not can_project else ["2:4", "int8", "both"]
        jobs += [(entry, v, conv, block) for v in variants]

    full = max(total_macs, 1)
    result.evaluation_equivalents = 1.0
    for entry, variant, conv, block in progress.track(jobs, total=len(jobs), description="sensitivity"):
        with _variant(conv, variant, entry.input_amax):
            top1 = _top1_from(chain, model, block, block_inputs, x, y, batch_size)
        setattr(entry, {"2:4": "delta_2_4", "int8": "delta_int8", "both": "delta_both"}[variant], top1 - result.baseline_top1)
        result.evaluations += 1
        result.evaluation_equivalents += (suffix_macs.get(block, full) if block is not None else full) / full
    for entry in result.layers:
        if entry.delta_both is None:
            entry.delta_both = entry.delta_int8  # projection is the identity: (c) is (b)
    if plot is not None:
        from maxq_deploy.sensitivity.svg import write_plot

        result.plot = str(write_plot(result, plot))
    result.seconds = time.perf_counter() - started
    return result


@torch.no_grad()
def _baseline(model, chain, x, y, batch_size, convs, result, progress):
    """One plain pass: top-1, each conv/linear's multiply-adds, each sparse layer's max |input| and,
    with ``chain``, every block's input (kept where memory allows and the chain reproduces the model)."""
    from maxq_deploy.core.memory import available_memory_bytes

    macs: dict[str, int] = {}
    amax = {name: 0.0 for name in convs}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            def count(mod, args, out, name=name):
                if name not in macs:
                    per_out = mod.in_features if isinstance(mod, nn.Linear) else (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
                    macs[name] = int(out[0].numel()) * per_out
            handles.append(mod.register_forward_hook(count))
    for name, conv in convs.items():
        def record(mod, args, name=name):
            amax[name] = max(amax[name], float(args[0].detach().abs().max()))
        handles.append(conv.register_forward_pre_hook(record))
    cache: list[list[torch.Tensor]] | None = None
    if chain is not None and chain.blocks:
        cache = [[] for _ in chain.blocks]
        for k, block in enumerate(chain.blocks):
            handles.append(block.register_forward_pre_hook(lambda mod, args, k=k: cache[k].append(args[0].detach().clone())))
    result.reuse = cache is not None
    if cache is None and chain is not None:
        result.notes.append("no blocks found")
    started = time.perf_counter()
    outputs = []
    try:
        for i in progress.track(range(0, len(x), batch_size), total=math.ceil(len(x) / batch_size), description="baseline"):
            outputs.append(model(x[i:i + batch_size]))
            if i == 0 and cache is not None:
                per_image = sum(int(c[0].numel()) * 4 for c in cache if c) / max(len(outputs[0]), 1)
                available = available_memory_bytes()
                if any(len(c) != 1 for c in cache) or (available is not None and per_image * len(x) > available / 4):
                    result.notes.append("blocks run more than once per forward" if any(len(c) != 1 for c in cache) else
                                        f"block inputs would need {per_image * len(x) / 2**30:.1f} GiB")
                    for h in handles[-len(cache):]:
                        h.remove()
                    cache, result.reuse = None, False
    finally:
        for h in handles:
            h.remove()
    result.baseline_seconds = time.perf_counter() - started
    logits = torch.cat(outputs)
    result.baseline_top1 = _top1(logits, y)
    if cache is not None:
        same = all(torch.allclose(chain.run_from(k, cache[k][0].clone()), outputs[0], rtol=1e-4, atol=1e-4 * float(outputs[0].abs().max()))
                   for k in (0, len(cache) - 1))
        if not same:
            result.notes.append("running from a block's cached input does not reproduce the model")
            cache, result.reuse = None, False
    return macs, amax, cache


def _suffix_macs(chain: BlockChain, macs: dict[str, int], model: nn.Module) -> dict[int, int]:
    """Multiply-adds of running from block k: blocks k.. plus everything outside the blocks (stem counted, conservatively)."""
    names = {id(mod): name for name, mod in model.named_modules()}
    per_block = [sum(macs.get(names[id(m)], 0) for m in block.modules()) for block in chain.blocks]
    outside = sum(macs.values()) - sum(per_block)
    return {k: sum(per_block[k:]) + outside for k in range(len(per_block))}


@contextmanager
def _variant(conv: nn.Conv2d, variant: str, input_amax: float) -> Iterator[None]:
    """``conv`` projected to 2:4 and/or fake-quantized (weights and input) for the duration."""
    original = conv.weight.data
    weight = project_to_pattern(original, HARDWARE_PATTERN) if variant in ("2:4", "both") else original
    if variant in ("int8", "both"):
        weight = fake_quant_weight(weight)
    conv.weight.data = weight
    handle = conv.register_forward_pre_hook(lambda mod, args: (fake_quant_input(args[0], input_amax),)) if variant != "2:4" else None
    try:
        yield
    finally:
        conv.weight.data = original
        if handle is not None:
            handle.remove()


@torch.no_grad()
def _top1_from(chain, model, block, cache, x, y, batch_size) -> float:
    preds = []
    if block is None or cache is None:
        for i in range(0, len(x), batch_size):
            preds.append(model(x[i:i + batch_size]).argmax(1))
    else:
        for h in cache[block]:
            preds.append(chain.run_from(block, h.clone()).argmax(1))
    return 100.0 * float((torch.cat(preds) == y).sum()) / max(len(y), 1)


def _top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1) == y).sum()) / max(len(y), 1)
