"""Loaders: batches that drop unreadable images and count them (:class:`Batches`), shards, :func:`make_loader`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from maxq_deploy.core.errors import DataError
from maxq_deploy.core.files import quiet_worker
from maxq_deploy.core.memory import check_batch_memory
from maxq_deploy.data.decode import NonFinite, Unreadable

#: How many unreadable files a :class:`DataReport` names (the count is always complete).
MAX_NAMED_SKIPS = 10


@dataclass
class DataReport:
    """What one pass over a :class:`Batches` loader delivered."""

    images: int = 0  # samples yielded
    skipped: int = 0  # unreadable images dropped
    skipped_files: list[str] = field(default_factory=list)  # the first MAX_NAMED_SKIPS, "path: reason"

    def add(self, images: int, skipped: Sequence[Unreadable]) -> None:
        self.images += images
        self.skipped += len(skipped)
        room = MAX_NAMED_SKIPS - len(self.skipped_files)
        self.skipped_files.extend(f"{u.path}: {u.reason}" for u in skipped[: max(room, 0)])


def collate_dropping_unreadable(
    samples: list[tuple[torch.Tensor | Unreadable, int]],
) -> tuple[torch.Tensor, torch.Tensor, list[Unreadable]]:
    """Stack the readable samples; keep the unreadable ones aside so the loader can count them."""
    good = [(x, y) for x, y in samples if not isinstance(x, (Unreadable, NonFinite))]
    bad = [x for x, _ in samples if isinstance(x, (Unreadable, NonFinite))]
    if good:
        images = torch.stack([x for x, _ in good])
        labels = torch.tensor([y for _, y in good], dtype=torch.int64)
    else:
        images, labels = torch.empty(0), torch.empty(0, dtype=torch.int64)
    return images, labels, bad


class Batches(DataLoader):
    """A DataLoader yielding ``(images, labels)`` that drops unreadable images and reports them.

    ``report`` describes the pass in progress or the last finished one.
    """

    def __init__(self, *args, **kwargs):
        kwargs["collate_fn"] = collate_dropping_unreadable
        super().__init__(*args, **kwargs)
        self.report = DataReport()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # type: ignore[override]
        report = self.report = DataReport()
        walked = getattr(self.dataset, "unreadable", [])
        if walked and getattr(self.sampler, "rank", 0) == 0:  # folder-walk failures, counted once over the ranks
            report.add(0, walked)
        for images, labels, bad in super().__iter__():
            for sample in bad:
                if isinstance(sample, NonFinite):
                    raise DataError(sample.message())
            report.add(len(labels), bad)
            if len(labels):
                yield images, labels

    @property
    def skipped(self) -> int:
        return self.report.skipped

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle a distributed loader for ``epoch`` (DistributedSampler needs it every epoch)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class ShardSampler(Sampler[int]):
    """Every ``world``-th index from ``rank``, no padding: each sample goes to exactly one rank.

    Evaluation needs this instead of DistributedSampler, whose padding repeats samples.
    """

    def __init__(self, length: int, rank: int, world: int):
        self.length, self.rank, self.world = length, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world))


def make_loader(
    dataset: Dataset,
    batch_size: int = 32,
    workers: int = 2,
    shuffle: bool = False,
    seed: int = 0,
    distributed: bool = False,
    drop_last: bool = False,
    *,
    pad_shards: bool = True,
) -> Batches:
    """Batches of ``(images, labels)``; unreadable images are dropped and counted in ``.report``.

    ``distributed`` shards over the ranks of an initialized ``torch.distributed`` group:
    with ``pad_shards`` through DistributedSampler (every rank gets the same count, some samples
    twice: what training needs), without it through :class:`ShardSampler` (each sample exactly
    once: what evaluation needs). ``workers`` > 0 decodes in that many worker processes.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    if workers < 0:
        raise DataError(f"workers must be >= 0, got {workers}")
    shape = getattr(dataset, "sample_shape", None)
    if shape is not None:
        check_batch_memory(min(batch_size, max(len(dataset), 1)), shape, "a batch")  # type: ignore[arg-type]
    sampler: Sampler[int] | None = None
    generator = None
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if pad_shards:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(dataset, world, rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        else:
            sampler = ShardSampler(len(dataset), rank, world)  # type: ignore[arg-type]
        shuffle = False
    elif shuffle:
        generator = torch.Generator().manual_seed(seed)
    return Batches(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        generator=generator,
        persistent_workers=False,
        worker_init_fn=quiet_worker if workers > 0 else None,  # Ctrl-C is the main process's to handle
    )
