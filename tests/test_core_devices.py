"""``--device`` strings to torch devices, and thread counts, checked against this machine (``core.devices``)."""

from __future__ import annotations

import os

import pytest
import torch

from maxq_deploy.core.devices import check_threads, resolve_device, usable_cpus
from maxq_deploy.core.errors import BackendUnavailableError, OptionError

NO_CUDA = not torch.cuda.is_available()


@pytest.mark.parametrize("given", ["cpu", " cpu ", "cpu:0"])
def test_cpu_resolves_to_the_cpu(given: str) -> None:
    assert resolve_device(given).type == "cpu"


def test_no_device_means_cuda_where_available_else_cpu() -> None:
    assert resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("given", ["tpu", "CPU", "", "cuda:x", "cuda:-1", "gpu0"])
def test_an_unknown_name_is_one_line_naming_the_choices(given: str) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        resolve_device(given)
    assert str(info.value) == f"unknown --device {given!r}; use cpu, cuda or cuda:N"


@pytest.mark.parametrize("given", ["mps", "meta", "xpu"])
def test_a_torch_device_type_other_than_cpu_or_cuda_is_refused(given: str) -> None:
    with pytest.raises(BackendUnavailableError, match=rf"^unsupported --device '{given}'; use cpu, cuda or cuda:N$"):
        resolve_device(given)


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("given", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_on_a_machine_without_it_is_refused_with_the_way_out(given: str) -> None:
    with pytest.raises(BackendUnavailableError) as info:
        resolve_device(given)
    assert str(info.value) == f"device {given!r} requested but CUDA is not available here (use --device cpu)"


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="needs CUDA")
def test_a_cuda_index_past_the_last_device_is_refused() -> None:
    count = torch.cuda.device_count()
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(BackendUnavailableError, match=rf"'cuda:{count}' does not exist: this machine has {count} CUDA device"):
        resolve_device(f"cuda:{count}")


def test_usable_cpus_is_this_process_affinity_not_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert usable_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # a container's one-CPU share of a big machine
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert usable_cpus() == 1


def test_usable_cpus_falls_back_to_the_cpu_count_and_is_at_least_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(pid: int) -> set[int]:
        raise OSError("not on this platform")

    monkeypatch.setattr(os, "sched_getaffinity", unsupported)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert usable_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # undeterminable
    assert usable_cpus() == 1


def test_thread_counts_within_the_cpus_pass_and_none_is_the_runtime_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert [check_threads(n) for n in (None, 1, 4)] == [None, 1, 4]


@pytest.mark.parametrize("threads", [0, -2, True, 1.5, "2"])
def test_a_thread_count_that_is_not_a_whole_number_from_one_is_refused(threads: object) -> None:
    with pytest.raises(OptionError) as info:
        check_threads(threads, "--intra-op-threads")  # type: ignore[arg-type]
    assert str(info.value) == f"--intra-op-threads must be a whole number >= 1, got {threads!r}"


def test_more_threads_than_usable_cpus_is_refused_naming_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5})  # 2 CPUs of this machine
    with pytest.raises(OptionError) as info:
        check_threads(3)
    assert str(info.value) == "--threads 3 is more than the 2 CPU(s) this process may use: refused; pass at most 2"
    with pytest.raises(OptionError, match="pass at most 2"):
        check_threads(5000)
