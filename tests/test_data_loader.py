"""maxq_deploy.data.loader: shards, the unreadable-image count and the batches that drop them."""

from __future__ import annotations

import pytest
import torch

from maxq_deploy.core.errors import DataError
from maxq_deploy.data.decode import Unreadable
from maxq_deploy.data.loader import MAX_NAMED_SKIPS, DataReport, ShardSampler, collate_dropping_unreadable, make_loader


def test_shards_cover_every_index_exactly_once_without_padding():
    shards = [list(ShardSampler(10, rank, 3)) for rank in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [len(ShardSampler(10, rank, 3)) for rank in range(3)] == [4, 3, 3]


def test_report_counts_everything_and_names_the_first_few():
    report = DataReport()
    report.add(5, [Unreadable(f"f{i}.png", "truncated") for i in range(MAX_NAMED_SKIPS + 3)])
    report.add(7, [])
    assert (report.images, report.skipped) == (12, MAX_NAMED_SKIPS + 3)
    assert len(report.skipped_files) == MAX_NAMED_SKIPS and report.skipped_files[0] == "f0.png: truncated"


def test_collate_stacks_the_readable_and_sets_the_unreadable_aside():
    bad = Unreadable("x.png", "not an image")
    images, labels, skipped = collate_dropping_unreadable([(torch.ones(3, 2, 2), 4), (bad, 1), (torch.zeros(3, 2, 2), 7)])
    assert tuple(images.shape) == (2, 3, 2, 2) and labels.tolist() == [4, 7] and skipped == [bad]


class _Samples(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, i):
        return (Unreadable(f"{i}.png", "damaged"), i) if i % 2 else (torch.full((1, 2, 2), float(i)), i)


def test_batches_drop_unreadable_samples_and_report_them():
    loader = make_loader(_Samples(), batch_size=2, workers=0)
    labels = [y for _, batch in loader for y in batch.tolist()]
    assert labels == [0, 2, 4]
    assert (loader.report.images, loader.skipped) == (3, 2)


@pytest.mark.parametrize(("kwargs", "message"), [({"batch_size": 0}, "batch size must be >= 1"), ({"workers": -1}, "workers must be >= 0")])
def test_bad_loader_settings_are_refused(kwargs, message):
    with pytest.raises(DataError, match=message):
        make_loader(_Samples(), **kwargs)
