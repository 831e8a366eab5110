"""bench.schema: the settings' validation (one OptionError line naming the field), the result's JSON (schema name and
version, strict JSON round trip), its CSV rows and the model/measurement records."""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from pathlib import Path

import pytest

import maxq_deploy
from bench_fixtures import settings
from maxq_deploy.bench import CSV_COLUMNS, SCHEMA, SCHEMA_VERSION, BenchModel, BenchResult, Measurement
from maxq_deploy.bench.schema import DEFAULT_ITERS, MAX_ITERS, MAX_SECONDS
from maxq_deploy.bench.stats import LatencyStats
from maxq_deploy.core.errors import OptionError


@pytest.mark.parametrize("kw", [dict(iters=0), dict(warmup=-1), dict(iters=3, seconds=1.0), dict(seconds=0.0),
                                dict(threads=0), dict(device="tpu"), dict(block=0)])
def test_settings_validation(kw: dict) -> None:
    with pytest.raises(OptionError):
        settings(**kw)



@pytest.mark.parametrize("kw, message", [
    (dict(iters=0), "iters must be between 1 and 1,000,000, got 0"),
    (dict(iters=MAX_ITERS + 1), "iters must be between 1 and 1,000,000, got 1000001"),
    (dict(warmup=-1), "warmup must be between 0 and 1,000,000 iterations, got -1"),
    (dict(warmup=MAX_ITERS + 1), "warmup must be between 0 and 1,000,000 iterations"),
    (dict(iters=3, seconds=1.0), "give either iters or seconds, not both"),
    (dict(iters=None, seconds=0.0), "seconds must be a positive number up to 86,400 (a day), got 0.0"),
    (dict(iters=None, seconds=-1.0), "seconds must be a positive number"),
    (dict(iters=None, seconds=float("nan")), "seconds must be a positive number"),
    (dict(iters=None, seconds=float("inf")), "seconds must be a positive number"),
    (dict(iters=None, seconds=MAX_SECONDS + 1.0), "seconds must be a positive number up to 86,400"),
    (dict(block=0), "block must be >= 1 iteration, got 0"),
    (dict(input_size=0), "input size must be >= 1 pixel, got 0"),
    (dict(device="tpu"), "unknown device 'tpu'; use cpu or cuda"),
    (dict(threads=0), "threads"),
])
def test_settings_refusals_name_the_field_in_one_line(kw: dict, message: str) -> None:
    with pytest.raises(OptionError) as info:
        settings(**kw)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_settings_defaults_and_bounds() -> None:
    assert settings(iters=None).iters == DEFAULT_ITERS == 30  # neither given: 30 iterations
    timed = settings(iters=None, seconds=0.5)
    assert timed.iters is None and timed.seconds == 0.5
    edge = settings(iters=MAX_ITERS, warmup=MAX_ITERS, block=1)
    assert (edge.iters, edge.warmup) == (MAX_ITERS, MAX_ITERS)
    assert settings(iters=None, seconds=float(MAX_SECONDS)).seconds == MAX_SECONDS
    assert settings(warmup=0, iters=1).warmup == 0


# --------------------------------------------------------------------------- the result and its files


def _latency(mean_ms: float) -> LatencyStats:
    return LatencyStats(iterations=3, mean_ms=mean_ms, p50_ms=mean_ms, p90_ms=mean_ms, p99_ms=mean_ms, min_ms=mean_ms,
                        max_ms=mean_ms, std_ms=0.0)


def _result() -> BenchResult:
    """Two models at batch 1 and 4 (model 1 is twice as fast), with numbers chosen by hand."""
    models = [BenchModel("a.onnx", "/m/a.onnx", "onnx", "onnxruntime", "cpu", 16, precision="fp32", notes=["n"]),
              BenchModel("b.pt [channels-last]", "/m/b.pt", "folded-checkpoint", "torch", "cpu", 16, variant="channels-last",
                         threads=2, options={"threads": 2})]
    measurements = [Measurement(0, "a.onnx", 1, _latency(2.0), 500.0, 1.0),
                    Measurement(1, "b.pt [channels-last]", 1, _latency(1.0), 1000.0, 2.0),
                    Measurement(0, "a.onnx", 4, _latency(4.0), 1000.0, 1.0),
                    Measurement(1, "b.pt [channels-last]", 4, _latency(2.0), 2000.0, 2.0)]
    return BenchResult(models, measurements, settings(batch_sizes=[1, 4], iters=3), {"cpu": "x", "threads": None})


def test_to_dict_names_schema_version_and_tool() -> None:
    data = _result().to_dict()
    assert (data["schema"], data["schema_version"]) == (SCHEMA, SCHEMA_VERSION) == ("maxq-deploy/bench", 1)
    assert data["tool_version"] == maxq_deploy.__version__
    created = dt.datetime.fromisoformat(data["created"])
    assert created.utcoffset() == dt.timedelta(0)  # UTC, seconds resolution
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 600
    assert data["settings"]["batch_sizes"] == [1, 4] and data["settings"]["iters"] == 3
    assert data["settings"]["interleaved"] is True and data["settings"]["seed"] == 0
    assert [m["index"] for m in data["models"]] == [0, 1]
    assert all("runner" not in m for m in data["models"])
    assert data["results"][1] == {
        "model_index": 1, "model": "b.pt [channels-last]", "batch": 1, "iterations": 3, "mean_ms": 1.0, "p50_ms": 1.0,
        "p90_ms": 1.0, "p99_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0, "std_ms": 0.0, "throughput_ips": 1000.0,
        "speedup_vs_first": 2.0,
    }


def test_json_file_round_trips(tmp_path: Path) -> None:
    result = _result()
    assert result.write_json(tmp_path / "r.json") == tmp_path / "r.json"
    assert json.loads((tmp_path / "r.json").read_text()) == result.to_dict()
    assert not [p for p in tmp_path.iterdir() if p.name != "r.json"]  # written atomically, nothing left beside it


def test_json_file_is_strict_json_with_infinite_throughput(tmp_path: Path) -> None:
    """A mean of 0 ms is an infinite throughput: the file says null, never the non-JSON ``Infinity``."""
    result = _result()
    result.measurements[0] = Measurement(0, "a.onnx", 1, _latency(0.0), math.inf, None)
    result.write_json(tmp_path / "r.json")

    def refuse(constant: str):
        raise AssertionError(f"non-JSON constant {constant}")

    data = json.loads((tmp_path / "r.json").read_text(), parse_constant=refuse)
    assert data["results"][0]["throughput_ips"] is None and data["results"][0]["speedup_vs_first"] is None


def test_model_to_dict_is_a_copy_without_the_runner() -> None:
    model = _result().models[1]
    model.runner = object()  # type: ignore[assignment]
    data = model.to_dict(7)
    assert data["index"] == 7 and "runner" not in data
    assert data["variant"] == "channels-last" and data["threads"] == 2 and data["kind"] == "folded-checkpoint"
    data["notes"].append("x")
    data["options"]["threads"] = 99
    assert model.notes == [] and model.options == {"threads": 2}


def test_csv_has_one_row_per_model_and_batch(tmp_path: Path) -> None:
    result = _result()
    result.write_csv(tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    assert [(r["model_index"], r["batch"]) for r in rows] == [("0", "1"), ("1", "1"), ("0", "4"), ("1", "4")]
    assert rows[3] == {
        "model_index": "1", "model": "b.pt [channels-last]", "path": "/m/b.pt", "backend": "torch", "device": "cpu",
        "variant": "channels-last", "batch": "4", "iterations": "3", "mean_ms": "2.0", "p50_ms": "2.0", "p90_ms": "2.0",
        "p99_ms": "2.0", "min_ms": "2.0", "max_ms": "2.0", "std_ms": "0.0", "throughput_ips": "2000.0",
        "speedup_vs_first": "2.0",
    }
    assert rows[0]["variant"] == "" and rows[0]["path"] == "/m/a.onnx"


def test_measurement_lookup() -> None:
    result = _result()
    assert result.measurement(1, 4).throughput_ips == 2000.0
    assert result.measurement(0, 1).latency.mean_ms == 2.0
    with pytest.raises(KeyError):
        result.measurement(0, 8)
    assert result.summary() == result.to_dict()
