"""bench.environment: every field of the record is there and true of this machine (platform, os, numpy, torch,
installed distributions), and the one CLI line is built exactly from the record."""

from __future__ import annotations

import os
import platform
import shutil
from importlib import metadata

import numpy as np
import pytest
import torch

from maxq_deploy import bench
from maxq_deploy.bench import collect_environment, environment_line


def test_environment_line_mentions_threads_and_versions() -> None:
    env = bench.collect_environment(threads=2)
    line = bench.environment_line(env)
    assert "threads 2" in line and "onnxruntime" in line and env["cpu_count"] >= 1



def test_environment_is_true_of_this_machine() -> None:
    env = collect_environment(threads=3)
    assert env["threads"] == 3 and collect_environment()["threads"] is None
    assert env["cpu_count"] == os.cpu_count()
    assert env["cpu_affinity"] == len(os.sched_getaffinity(0))
    assert env["os"] == platform.platform() and env["python"] == platform.python_version()
    versions = env["versions"]
    assert set(versions) == {"maxq_deploy", "numpy", "torch", "onnxruntime", "onnx", "tensorrt"}
    assert versions["numpy"] == np.__version__
    assert versions["torch"] == metadata.version("torch")
    assert versions["onnx"] == metadata.version("onnx") and versions["maxq_deploy"] == metadata.version("maxq-deploy")
    assert env["torch_threads"] == torch.get_num_threads()  # torch is loaded in this process
    assert env["cuda"] == torch.version.cuda
    assert isinstance(env["cpu"], str) and env["cpu"]


def test_cpu_model_is_the_first_model_name_of_proc_cpuinfo() -> None:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.lower().startswith("model name")]
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if not names:
        pytest.skip("/proc/cpuinfo names no model")
    assert collect_environment()["cpu"] == names[0]


def test_load_average_is_the_systems_rounded() -> None:
    env = collect_environment()
    before, after = os.getloadavg(), os.getloadavg()
    load = env["load_average"]
    assert len(load) == 3 and all(round(v, 2) == v for v in load)
    assert all(min(a, b) - 1 <= v <= max(a, b) + 1 for v, a, b in zip(load, before, after))


def test_gpus_are_the_ones_present() -> None:
    gpus = collect_environment()["gpus"]
    if shutil.which("nvidia-smi") is None and not torch.cuda.is_available():
        assert gpus == []
    elif torch.cuda.is_available():
        assert [g["name"] for g in gpus] == [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    assert all(set(g) == {"name", "driver", "memory"} for g in gpus)


ENV = {
    "cpu": "Xeon X", "cpu_count": 8, "gpus": [{"name": "H100", "driver": "550.1"}, {"name": "T4", "driver": None}],
    "threads": None, "os": "Linux-6", "python": "3.11.7", "load_average": [0.5, 1.0, 2.0],
    "versions": {"maxq_deploy": "0.1.0", "numpy": "2.0", "torch": "2.5", "onnxruntime": "1.20", "onnx": None, "tensorrt": "10.3"},
}


def test_environment_line_by_hand() -> None:
    """maxq_deploy, numpy and missing libraries are left out; a GPU without a driver is named alone."""
    assert environment_line(ENV) == (
        "Xeon X (8 cores; load average 0.5); H100 (driver 550.1), T4; threads default; "
        "torch 2.5, onnxruntime 1.20, tensorrt 10.3; Python 3.11.7, Linux-6"
    )


def test_environment_line_without_gpu_or_load() -> None:
    env = ENV | {"gpus": [], "load_average": None, "threads": 4, "versions": {"onnx": "1.16"}}
    assert environment_line(env) == "Xeon X (8 cores); no GPU; threads 4; onnx 1.16; Python 3.11.7, Linux-6"
