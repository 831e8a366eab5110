"""maxq_deploy.core.memory: the batch memory pre-check, and the image-side limit it backs."""

from __future__ import annotations

import pytest

from maxq_deploy.data import Preprocess, check_batch_memory
from maxq_deploy.core.errors import DataError


def test_memory_pre_check_refuses_what_cannot_fit():
    with pytest.raises(DataError, match=r"needs at least .* GiB"):
        check_batch_memory(10**6, (3, 4096, 4096))
    check_batch_memory(2, (3, 32, 32))  # small: no error
    with pytest.raises(DataError, match="at most 16384"):
        Preprocess(resize=10**6, image_size=224)
