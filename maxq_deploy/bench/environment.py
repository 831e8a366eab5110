"""Where numbers were measured: CPU, GPUs, library versions, threads, load (recorded with every run)."""

from __future__ import annotations

import os
import platform
import sys

import numpy as np


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version_of(*distributions: str) -> str | None:
    from importlib import metadata

    for dist in distributions:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def _gpus() -> list[dict]:
    """Name, driver and memory of each NVIDIA GPU (nvidia-smi, else torch.cuda if already loaded)."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout
            gpus = []
            for line in out.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) >= 3:
                    gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2]})
            if gpus:
                return gpus
        except (OSError, subprocess.SubprocessError):
            pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return [{"name": torch.cuda.get_device_name(i), "driver": None, "memory": None} for i in range(torch.cuda.device_count())]
    return []


def collect_environment(threads: int | None = None) -> dict:
    """Where the numbers were measured: CPU, GPU, library versions, threads, OS, Python."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    env: dict = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "gpus": _gpus(),
        "threads": threads,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "maxq_deploy": _version_of("maxq-deploy"),
            "numpy": np.__version__,
            "torch": _version_of("torch"),
            "onnxruntime": _version_of("onnxruntime", "onnxruntime-gpu"),
            "onnx": _version_of("onnx"),
            "tensorrt": _version_of("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
        },
    }
    try:
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]  # other work sharing the CPU skews numbers
    except OSError:
        env["load_average"] = None
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch_threads"] = torch.get_num_threads()
        env["cuda"] = torch.version.cuda
    return env


def environment_line(env: dict) -> str:
    """One line for the CLI: CPU, cores, GPU, threads, versions."""
    v = env.get("versions", {})
    gpu = ", ".join(f"{g['name']} (driver {g['driver']})" if g.get("driver") else g["name"] for g in env.get("gpus", [])) or "no GPU"
    libs = ", ".join(f"{k} {val}" for k, val in v.items() if val and k not in ("maxq_deploy", "numpy"))
    threads = env.get("threads") or "default"
    load = env.get("load_average")
    load_text = f"; load average {load[0]:g}" if load else ""
    return f"{env.get('cpu')} ({env.get('cpu_count')} cores{load_text}); {gpu}; threads {threads}; {libs}; Python {env.get('python')}, {env.get('os')}"
