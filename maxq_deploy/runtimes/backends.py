"""Backend specs and lists: ``onnxruntime``, ``openvino:f32``, ``onnxruntime,openvino``.

A spec is a backend name with its one option that changes results: OpenVINO's inference
precision (``openvino:f32``, ``openvino:bf16``, ``openvino:default``). A comma-separated list
of specs lets bench and eval run every (model, backend) pair side by side in one run:
:func:`backend_pairs` says which pairs exist, :func:`open_pair` opens one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from maxq_deploy.core.errors import InputFileError, OptionError
from maxq_deploy.runtimes.base import Runner

#: Backends that take an option after a colon, and what it means.
_SPEC_OPTIONS = {"openvino": "inference precision (f32, bf16, f16, default)"}


@dataclass(frozen=True)
class BackendSpec:
    """A backend name (normalized) and its precision option (OpenVINO only; None: the device default)."""

    name: str
    precision: str | None = None

    @property
    def label(self) -> str:
        """How the spec is written back: ``openvino:f32``, ``onnxruntime``."""
        return self.name if self.precision is None else f"{self.name}:{self.precision}"

    def can_run(self, path: str | os.PathLike[str]) -> bool:
        """Whether this backend runs the file, judged by its suffix (unknown suffix: yes, it will tell)."""
        from maxq_deploy.runtimes.select import SUFFIX_BACKENDS

        choices = SUFFIX_BACKENDS.get(Path(path).suffix.lower())
        return not choices or self.name in choices


def parse_backend(text: str) -> BackendSpec:
    """``"openvino:f32"`` -> BackendSpec("openvino", "f32"); aliases (ort, ov, trt) accepted."""
    from maxq_deploy.runtimes.select import normalize_backend

    raw = str(text).strip()
    name, sep, option = raw.partition(":")
    backend = normalize_backend(name)
    if not sep:
        return BackendSpec(backend)
    if backend not in _SPEC_OPTIONS:
        raise OptionError(f"backend {raw!r}: {backend} takes no option after ':' (only {', '.join(_SPEC_OPTIONS)} does)")
    from maxq_deploy.runtimes.openvino import normalize_precision

    precision = normalize_precision(option)  # one-line OptionError for an unknown precision
    return BackendSpec(backend, None if precision == "default" else precision)  # openvino:default is openvino


def parse_backend_list(text: str | Sequence[str] | None) -> list[BackendSpec]:
    """``"onnxruntime,openvino:f32"`` (or a list of such strings) -> specs, in order, no duplicates.

    None -> []: the caller picks each file's backend from its suffix. A given list with no backend
    in it (``""``, ``","``) is refused, like one with an empty entry.
    """
    if text is None:
        return []
    parts = [text] if isinstance(text, str) else list(text)
    items = [item.strip() for part in parts for item in str(part).split(",")]
    if not any(items):
        raise OptionError(f"--backend {','.join(items)!r} names no backend; write e.g. onnxruntime or onnxruntime,openvino")
    if any(not item for item in items):
        raise OptionError(f"--backend {','.join(items)!r} has an empty entry; write e.g. onnxruntime,openvino")
    specs: list[BackendSpec] = []
    for item in (i for i in items if i):
        spec = parse_backend(item)
        if spec in specs:
            raise OptionError(f"--backend lists {spec.label} twice")
        specs.append(spec)
    return specs


def backend_pairs(
    models: Sequence[str | os.PathLike[str]], specs: Sequence[BackendSpec]
) -> list[tuple[Path, BackendSpec]]:
    """Every (model, backend) pair where the backend runs the model, model by model in order.

    A model that no listed backend runs is an error (a typo, not something to skip silently).
    """
    if not specs:
        raise OptionError("no backends given")
    pairs: list[tuple[Path, BackendSpec]] = []
    for model in models:
        path = Path(model)
        usable = [spec for spec in specs if spec.can_run(path)]
        if not usable and len(specs) == 1:
            from maxq_deploy.runtimes.select import resolve_backend

            resolve_backend(path, specs[0].name)  # the one-backend message: what the file is and what runs it
        if not usable:
            raise InputFileError(
                f"none of the backends {', '.join(s.label for s in specs)} runs {path.name}; "
                "export it first (maxq-deploy export onnx) or add a backend that runs it"
            )
        pairs.extend((path, spec) for spec in usable)
    return pairs


def open_pair(
    path: str | os.PathLike[str], spec: BackendSpec, device: str | None = None, threads: int | None = None
) -> Runner:
    """Open ``path`` on ``spec`` (:func:`maxq_deploy.runtimes.select.open_runner` with its precision)."""
    from maxq_deploy.runtimes.select import open_runner

    return open_runner(path, backend=spec.name, device=device, threads=threads, precision=spec.precision)


def open_pairs(
    pairs: Sequence[tuple[Path, BackendSpec]], device: str | None = None, threads: int | None = None
) -> list[tuple[Path, BackendSpec, Runner]]:
    """Open every pair (for one interleaved bench run or one eval table); on any failure close the opened ones."""
    opened: list[tuple[Path, BackendSpec, Runner]] = []
    try:
        for path, spec in pairs:
            opened.append((path, spec, open_pair(path, spec, device=device, threads=threads)))
    except BaseException:
        for _, _, runner in opened:
            runner.close()
        raise
    return opened


def backend_label(runner: Runner) -> str:
    """A runner's backend as tables show it: ``onnxruntime``, ``openvino:bf16`` (the precision it runs in)."""
    info = getattr(runner, "info", None)
    options = getattr(info, "options", None) or {}
    precision = options.get("inference_precision")
    name = getattr(runner, "name", None) or getattr(info, "backend", "?")
    return f"{name}:{precision}" if precision else str(name)
