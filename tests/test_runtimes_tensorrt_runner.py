"""TensorRTRunner: without TensorRT, opening an engine is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxq_deploy.core.errors import BackendUnavailableError
from tensorrt_fixtures import no_tensorrt

# --------------------------------------------------------------------------------------------- import hygiene


def test_runner_without_tensorrt_is_one_line(tmp_path: Path, no_tensorrt) -> None:
    from maxq_deploy.runtimes.tensorrt_runner import TensorRTRunner

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not really an engine")
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        TensorRTRunner(engine)
