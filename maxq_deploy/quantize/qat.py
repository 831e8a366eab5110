"""Quantization-aware training that keeps the N:M zeros exactly zero.

Calibrate first (as PTQ), then fine-tune the fake-quantized network with a small learning rate
and a cosine schedule. The sparsity pattern is fixed: a mask ``weight != 0`` taken from the
folded weights of every sparse layer multiplies the gradients before each optimizer step AND
the weights after it, so neither momentum, Adam moments nor weight decay can revive a zero.
The pattern is asserted on the INT8 weights at the end; nothing is written if it broke.

Runs in one process or under ``torchrun --nproc_per_node K`` with DistributedDataParallel
(gloo on CPU, NCCL on GPU; the group is initialized from torchrun's environment when
``WORLD_SIZE`` > 1). Every rank calibrates on the same images (rank 0's ranges are broadcast),
trains on its DistributedSampler shard, validates its share of the validation images (counts
summed), and only rank 0 writes the output.

One loop for both backends: ``backend`` picks the hook that builds and calibrates the
fake-quantized network and reads its ranges (:class:`PytorchQuantizationQat` here,
:class:`maxq_deploy.quantize.modelopt_ptq.ModelOptQat` for NVIDIA Model Optimizer); masks,
training, divergence check, INT8 2:4 check and writing are shared.
"""

from __future__ import annotations

import itertools
import math
import warnings
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from maxq_deploy.core.files import TORCH_SUFFIXES, Output, guard_outputs
from maxq_deploy.data import Preprocess
from maxq_deploy.core.distributed import DistContext, all_reduce, join_process_group
from maxq_deploy.core.errors import DataError, PatternViolationError, QuantizationError
from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.quantize import pq_adapter
from maxq_deploy.quantize.config import DEFAULT_BACKEND, QuantizeConfig, keep_float_layers, split_names
from maxq_deploy.quantize.artifact import read_folded_input
from maxq_deploy.quantize.calibrate import (
    DEFAULT_CALIBRATOR, DEFAULT_PERCENTILE, CalibrationOptions, CalibrationStats, QuantizerRange, calibrate, check_classes,
    check_data_size, model_preprocess, open_data, resolve_device, validated_ranges,
)
from maxq_deploy.quantize.result import EpochReport, QuantizeResult, TrainingReport, checked_int8_layers, save_quantized



def _setup_distributed(distributed: bool | None, device: str | None) -> tuple[DistContext, torch.device]:
    """Join torchrun's group (``distributed`` None: when WORLD_SIZE > 1) and pick this rank's device."""
    import torch.distributed as dist

    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    initialized = dist.is_available() and dist.is_initialized()
    use = distributed if distributed is not None else (env_world > 1 or (initialized and dist.get_world_size() > 1))
    if not use:
        return DistContext(), resolve_device(device)
    if not dist.is_available():
        raise QuantizationError("distributed QAT needs torch.distributed, which this torch build lacks")
    if not initialized and env_world <= 1:
        raise QuantizationError(
            "distributed QAT needs several processes: start it with torchrun --nproc_per_node K (WORLD_SIZE is not set)"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (device is None and torch.cuda.is_available()) or (device is not None and str(device).startswith("cuda"))
    if use_cuda:
        resolve_device("cuda")  # raises a clear error where CUDA is absent
        torch.cuda.set_device(local_rank)
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    return join_process_group(backend="nccl" if use_cuda else "gloo"), target


class PytorchQuantizationQat:
    """The backend hook of the default backend: pytorch-quantization's network, calibration and ranges.

    A hook offers ``require()``, ``name()``, ``calibrated_model(folded, calib_set, options, kept, *,
    workers, device, seed, progress) -> (model, stats)``, ``range_tensors(model)`` (what torchrun
    broadcasts) and ``checked_ranges(model, folded, kept) -> (ranges, report, notes)``.
    """

    @staticmethod
    def require() -> None:
        pq_adapter.require_pytorch_quantization()

    @staticmethod
    def name() -> str:
        return f"pytorch-quantization {pq_adapter.version()}"

    @staticmethod
    def calibrated_model(folded, calib_set, options: CalibrationOptions, kept: list[str], *, workers: int, device: torch.device,
                         seed: int, progress: Progress) -> tuple[nn.Module, CalibrationStats]:
        model = pq_adapter.build_quant_model(folded.arch, folded.num_classes, options.calibrator)
        pq_adapter.load_weights(model, folded.state_dict)
        pq_adapter.keep_float(model, kept)
        model.to(device)
        return model, calibrate(model, calib_set, options, workers=workers, device=device, seed=seed, progress=progress)

    @staticmethod
    def range_tensors(model: nn.Module) -> list[torch.Tensor]:
        amaxes = (getattr(q, "_amax", None) for q in pq_adapter.quantizers(model).values())
        return [amax for amax in amaxes if isinstance(amax, torch.Tensor)]

    @staticmethod
    def checked_ranges(model: nn.Module, folded, kept: list[str]) -> tuple[dict[str, torch.Tensor], list[QuantizerRange], list[str]]:
        ranges, report = validated_ranges(model)
        return ranges, report, [f"{r.name}: {n}" for r in report for n in r.notes]


def _qat_backend(name: str):
    """The backend hook for ``--backend name`` (ModelOpt's imported only when asked for)."""
    if name == "modelopt":
        from maxq_deploy.quantize.modelopt_ptq import MODELOPT_QAT

        return MODELOPT_QAT
    return PytorchQuantizationQat()


def _broadcast_ranges(tensors: list[torch.Tensor], ctx: DistContext) -> None:
    """Every rank uses rank 0's ranges (calibration is deterministic, this makes it certain)."""
    if not ctx.enabled:
        return
    import torch.distributed as dist

    for amax in tensors:
        dist.broadcast(amax.data, src=0)


def sparsity_masks(model: nn.Module, layers) -> dict[str, tuple[nn.Parameter, torch.Tensor]]:
    """Layer name -> (weight, ``weight != 0``) for every sparse layer: the zeros QAT must keep."""
    masks = {}
    for layer in layers:
        if layer.role == "sparse":
            weight = model.get_submodule(layer.name).weight
            masks[layer.name] = (weight, (weight.detach() != 0).to(weight.dtype))
    return masks


@torch.no_grad()
def _apply_masks(masks: dict[str, tuple[nn.Parameter, torch.Tensor]]) -> None:
    for weight, mask in masks.values():
        weight.mul_(mask)


def _make_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@torch.no_grad()
def _validate(model: nn.Module, loader, ctx: DistContext, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for images, labels in loader:
        logits = model(images.to(device, non_blocking=True))
        correct += int((logits.argmax(1).cpu() == labels).sum())
        total += int(labels.numel())
    correct, total = all_reduce([correct, total])
    return 100.0 * correct / max(total, 1)


def _weights_of(model: nn.Module, keys) -> dict[str, torch.Tensor]:
    """The folded-layout weights (``keys``: the folded checkpoint's; no quantizer state), detached copies on the CPU."""
    state = model.state_dict()
    return {k: state[k].detach().cpu().clone() for k in keys}


def quantize_qat(
    folded_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    train_data,
    val_data=None,
    *,
    epochs: int = 1,
    lr: float = 1e-4,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 32,
    train_batches: int | None = None,
    calib_data=None,
    calibrator: str = DEFAULT_CALIBRATOR,
    percentile: float = DEFAULT_PERCENTILE,
    calib_batches: int = 16,
    preprocess: Preprocess | None = None,
    workers: int = 2,
    seed: int = 0,
    device: str | None = None,
    distributed: bool | None = None,
    progress: Progress | None = None,
    keep_float: tuple[str, ...] | list[str] = (),
    backend: str = DEFAULT_BACKEND,
) -> QuantizeResult:
    """Calibrate, then fine-tune with fake quantization keeping every N:M zero; write a quantized checkpoint.

    ``train_data`` needs labels; ``val_data`` (labelled) selects the best epoch by top-1, the
    calibrated start (epoch 0) included, else the last epoch is kept. ``train_batches`` caps
    the batches per epoch (per process). ``calib_data`` defaults to ``train_data``.
    ``distributed`` None means: under torchrun (WORLD_SIZE > 1) use DistributedDataParallel.
    ``keep_float``: conv layers without quantizers (fine-tuned in float, recorded as ``kept_float``).
    ``backend``: ``"pytorch-quantization"`` or ``"modelopt"`` (NVIDIA Model Optimizer's quantizers and calibration).
    """
    started = time.perf_counter()
    options = CalibrationOptions(calibrator, percentile, calib_batches, batch_size)
    backend = QuantizeConfig(qat=True, train_data=train_data, epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum,
                             weight_decay=weight_decay, train_batches=train_batches, backend=backend).backend  # validates
    (out,) = guard_outputs([Output(Path(output), TORCH_SUFFIXES, "quantized checkpoint")],
                           [folded_path, train_data, val_data, calib_data])
    folded, _ = read_folded_input(folded_path)
    kept = keep_float_layers(split_names(keep_float, "--keep-float"), folded)
    hook = _qat_backend(backend)
    hook.require()
    preprocess = model_preprocess(folded, preprocess)
    train_set = open_data(train_data, preprocess, "train", require_labels=True)
    check_classes(train_set, folded.num_classes, "train")
    val_set = open_data(val_data, preprocess, "val", require_labels=True) if val_data is not None else None
    if val_set is not None:
        check_classes(val_set, folded.num_classes, "val")
    calib_set = open_data(calib_data, preprocess, "calibration") if calib_data is not None else train_set
    for dataset, what in ((train_set, "train"), (val_set, "val"), (calib_set, "calibration")):
        if dataset is not None:
            check_data_size(dataset, folded.arch, what)

    ctx, target = _setup_distributed(distributed, device)
    try:
        return _run(folded, out, train_set, val_set, calib_set, options, ctx, target, started, epochs=epochs, lr=lr,
                    optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, train_batches=train_batches,
                    workers=workers, seed=seed, progress=(progress or SILENT) if ctx.is_main else SILENT, kept=kept, hook=hook)
    finally:
        if ctx.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _run(folded, out: Path, train_set, val_set, calib_set, options: CalibrationOptions, ctx: DistContext, target: torch.device,
         started: float, *, epochs: int, lr: float, optimizer: str, momentum: float, weight_decay: float,
         train_batches: int | None, workers: int, seed: int, progress: Progress, kept: list[str], hook) -> QuantizeResult:
    from maxq_deploy.data import make_loader

    torch.manual_seed(seed)
    model, stats = hook.calibrated_model(folded, calib_set, options, kept, workers=workers, device=target, seed=seed, progress=progress)
    _broadcast_ranges(hook.range_tensors(model), ctx)
    ranges, report, notes = hook.checked_ranges(model, folded, kept)  # refuse bad ranges before spending time on training
    keys = list(folded.state_dict)

    masks = sparsity_masks(model, folded.layers)
    train_loader = make_loader(train_set, options.batch_size, workers, shuffle=True, seed=seed, distributed=ctx.enabled)
    steps_per_epoch = min(len(train_loader), train_batches) if train_batches else len(train_loader)
    if steps_per_epoch < 1:
        raise DataError(f"train data {train_set.root} gives no batches")
    val_loader = (
        make_loader(val_set, options.batch_size, workers, distributed=ctx.enabled, pad_shards=False) if val_set is not None else None
    )
    trainable = model
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        with warnings.catch_warnings():  # torch 2.13 deprecates the argument but has no equivalent yet
            warnings.simplefilter("ignore", FutureWarning)
            trainable = DistributedDataParallel(
                model, device_ids=[target.index] if target.type == "cuda" else None, broadcast_buffers=False
            )
    opt = _make_optimizer(optimizer, model.parameters(), lr, momentum, weight_decay)
    total_steps = epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))

    history: list[EpochReport] = []
    best_epoch, best_top1, best_state = epochs, -1.0, None
    if val_loader is not None:
        t0 = time.perf_counter()
        start_top1 = _validate(model, val_loader, ctx, target)
        history.append(EpochReport(0, 0.0, None, None, round(start_top1, 4), round(time.perf_counter() - t0, 3)))
        best_epoch, best_top1, best_state = 0, start_top1, _weights_of(model, keys)
    steps = 0
    first_loss: float | None = None  # the calibrated network's loss on the first batch
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        epoch_lr = opt.param_groups[0]["lr"]
        train_loader.set_epoch(epoch)
        trainable.train()
        loss_sum, correct, seen = 0.0, 0, 0
        batches = itertools.islice(train_loader, steps_per_epoch)
        for images, labels in progress.track(batches, total=steps_per_epoch, description=f"QAT epoch {epoch}/{epochs}"):
            images, labels = images.to(target, non_blocking=True), labels.to(target, non_blocking=True)
            logits = trainable(images)
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for weight, mask in masks.values():  # after DDP's all-reduce: every rank masks the same gradient
                if weight.grad is not None:
                    weight.grad.mul_(mask)
            opt.step()
            _apply_masks(masks)  # weight decay / Adam cannot move a masked weight off zero
            schedule.step()
            steps += 1
            if not math.isfinite(float(loss.detach())):
                raise QuantizationError(
                    f"QAT loss became non-finite ({float(loss.detach())}) at epoch {epoch}, step {steps}: the training "
                    f"data holds extreme values or --lr {lr:g} is too high; nothing was written"
                )
            if first_loss is None:
                first_loss = float(loss.detach())
            loss_sum += float(loss.detach()) * labels.numel()
            correct += int((logits.detach().argmax(1) == labels).sum())
            seen += int(labels.numel())
        loss_sum, correct, seen = all_reduce([loss_sum, correct, seen])
        _check_diverged(loss_sum / max(seen, 1), first_loss, folded.num_classes, epoch, lr)
        val_top1 = _validate(model, val_loader, ctx, target) if val_loader is not None else None
        history.append(EpochReport(
            epoch, epoch_lr, round(loss_sum / max(seen, 1), 6), round(100.0 * correct / max(seen, 1), 4),
            None if val_top1 is None else round(val_top1, 4), round(time.perf_counter() - t0, 3),
        ))
        if val_top1 is not None and val_top1 >= best_top1:
            best_epoch, best_top1, best_state = epoch, val_top1, _weights_of(model, keys)
    model.eval()
    state = best_state if best_state is not None else _weights_of(model, keys)

    broken = next((name for name, value in state.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())), None)
    if broken is not None:
        raise QuantizationError(f"QAT weights became non-finite ({broken}): lower --lr or check the training data; nothing was written")
    fixed_zeros = sum(int((mask == 0).sum()) for _, mask in masks.values())
    revived = sum(int(((state[f"{name}.weight"] != 0) & (mask.cpu() == 0)).sum()) for name, (_, mask) in masks.items())
    if revived:
        raise PatternViolationError(f"QAT revived {revived} masked weights (a bug: the masks must hold them at 0); nothing was written")
    checks = checked_int8_layers(folded, state, ranges, kept)
    training = TrainingReport(
        epochs=epochs, lr=lr, optimizer=optimizer, batch_size=options.batch_size, world_size=ctx.world_size, steps=steps,
        best_epoch=best_epoch, selected_by="val_top1" if val_loader is not None else "last", masked_layers=len(masks),
        fixed_zeros=fixed_zeros, zeros_reintroduced=revived, history=history,
    )
    backend = hook.name()
    if val_loader is not None and best_epoch == 0:
        notes.append("fine-tuning did not beat the calibrated network on the validation data: its weights were kept")
    _save_then_release(folded, out, state, ranges, stats, checks, backend, training, ctx, kept)
    return QuantizeResult(
        output=out, written=ctx.is_main, source=folded.path, mode="qat", arch=folded.arch, num_classes=folded.num_classes,
        nm=folded.nm, backend=backend, calibration=stats, quantizers=report, layers=checks, training=training,
        seconds=round(time.perf_counter() - started, 3), notes=notes,
    )


#: An epoch whose mean loss is this many times the larger of the starting loss and chance's ln(classes) diverged.
DIVERGENCE_FACTOR = 100.0


def _check_diverged(mean_loss: float, first_loss: float | None, num_classes: int, epoch: int, lr: float) -> None:
    """Refuse a diverged fine-tune (a loss that exploded, e.g. --lr 1e10) instead of keeping its weights."""
    start = first_loss if first_loss is not None else 0.0
    bound = DIVERGENCE_FACTOR * max(start, math.log(max(num_classes, 2)))
    if not math.isfinite(mean_loss) or mean_loss > bound:
        raise QuantizationError(
            f"QAT diverged: epoch {epoch} mean loss {mean_loss:.3g} against {start:.3g} at the start (limit {bound:.3g}); "
            f"lower --lr (now {lr:g}); nothing was written"
        )


def _save_then_release(folded, out: Path, state, ranges, stats, checks, backend, training, ctx: DistContext,
                       kept: list[str]) -> None:
    """Rank 0 writes; then every rank learns whether it worked (a broadcast that doubles as barrier)."""
    failure: BaseException | None = None
    if ctx.is_main:
        try:
            save_quantized(folded, out, state, ranges, stats, checks, backend, training, kept_float=kept)
        except BaseException as exc:  # re-raised below, after the other ranks were told
            failure = exc
    if ctx.enabled:
        import torch.distributed as dist

        flag = torch.tensor([1 if failure is not None else 0], dtype=torch.int32)
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.broadcast(flag, src=0)
        if not ctx.is_main and int(flag.item()):
            raise QuantizationError(f"rank 0 failed to write {out}; see its error")
    if failure is not None:
        raise failure

