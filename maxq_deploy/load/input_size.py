"""The input size a model runs at: the user's, else the one its file records, else its architecture's.

Folded checkpoints store the architecture's default input size (32 for the CIFAR ResNets, 224
for the ImageNet networks), quantized checkpoints the size they were calibrated at, ONNX graphs
``maxq_deploy.input_size`` in their metadata. Export, eval, bench and calibration preprocessing
default to it; a size the architecture cannot run at is a one-line error before any work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from maxq_deploy.onnx_graph import meta as onnx_meta
from maxq_deploy.archs.catalog import ARCHS, check_input_size, default_input_size, default_resize

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def stored_input_size(meta: dict | None) -> int | None:
    """``input_size`` recorded in an artifact's metadata (int, or str in ONNX metadata), if any."""
    if not meta:
        return None
    for key in ("input_size", onnx_meta.INPUT_SIZE):
        value = meta.get(key)
        try:
            if value is not None and int(value) > 0:
                return int(value)
        except (TypeError, ValueError):
            continue
    return None


def resolve_input_size(arch: str | None, meta: dict | None = None, requested: int | None = None,
                       what: str = "--input-size") -> int:
    """``requested``, else the size ``meta`` records, else ``arch``'s default (224 when unknown); checked."""
    known = arch if arch in ARCHS else None
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        from maxq_deploy.core.errors import OptionError

        raise OptionError(f"{what} must be a positive number of pixels, got {requested!r}")  # 0 is no request for the default
    size = requested if requested is not None else (stored_input_size(meta) or (default_input_size(known) if known else 224))
    if known:
        check_input_size(known, size, what if requested else "its recorded input size")
    return size


@dataclass(frozen=True)
class ArtifactSize:
    """What a model file says about its input: architecture and default square size (None: unknown)."""

    arch: str | None
    input_size: int | None

    def resolve(self, requested: int | None, what: str) -> int:
        return resolve_input_size(self.arch, {"input_size": self.input_size}, requested, what)

    def resize(self, size: int, requested: int | None = None) -> int:
        """Shorter side for image files: ``requested``, else the architecture's crop ratio (CIFAR: none)."""
        return requested if requested is not None else default_resize(self.arch if self.arch in ARCHS else None, size)

    def preprocess(self, size: int, resize: int | None = None, mean=None, std=None):
        """The transform for this model's image files at ``size`` (see :func:`preprocess_for`)."""
        return preprocess_for(self.arch, size, resize, mean, std)


def preprocess_for(arch: str | None, size: int, resize: int | None = None, mean=None, std=None):
    """The one preprocessing rule every stage uses for image files (eval, quantize, fold --data, export --calib, demo).

    Resize the shorter side to ``resize`` (default: the architecture's crop ratio; the CIFAR
    ResNets take their images as they are), center-crop ``size``, normalize with ``mean``/``std``
    (default: ImageNet's).
    """
    from maxq_deploy.data import IMAGENET_MEAN, IMAGENET_STD, Preprocess

    known = arch if arch in ARCHS else None
    return Preprocess(resize=resize if resize is not None else default_resize(known, size), image_size=size,
                      mean=mean or IMAGENET_MEAN, std=std or IMAGENET_STD)


def artifact_input_size(path: str | os.PathLike[str]) -> ArtifactSize:
    """Architecture and default input size of any model file, read without building the model.

    Torch artifacts: their ``arch``/``input_size`` entries (a MaxQ training checkpoint: its
    architecture's default). ONNX: the graph's fixed input shape, else the ``maxq_deploy.*`` metadata
    (metadata is never trusted over the graph).
    TensorRT engines, OpenVINO IR and paths that are not files: unknown (the caller's default applies).
    A torch file that cannot be read raises the loader's one-line error (``torch_load_safe``).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in ENGINE_SUFFIXES or suffix == ".xml" or not p.is_file():  # engines, OpenVINO IR: the runner reads its shape
        return ArtifactSize(None, None)
    if suffix in ONNX_SUFFIXES:
        return _onnx_input_size(p)
    from maxq_deploy.load.maxq_checkpoint import extract_state_dict, infer_arch, torch_load_safe
    from maxq_deploy.core.errors import MaxQDeployError

    obj = torch_load_safe(p, "model")
    if not isinstance(obj, dict):
        return ArtifactSize(None, None)
    fmt = obj.get("format")
    if isinstance(fmt, str) and fmt.startswith("maxq-deploy/"):
        arch = obj.get("arch") if obj.get("arch") in ARCHS else None
        return ArtifactSize(arch, stored_input_size(obj) or (default_input_size(arch) if arch else None))
    try:
        from maxq_deploy.archs.catalog import normalize_arch

        state, meta = extract_state_dict(obj, p)
        if isinstance(meta.get("arch"), str):
            arch = normalize_arch(meta["arch"])
        else:
            fc = state.get("fc.weight")
            arch = infer_arch(state, int(fc.shape[0])) if fc is not None else None
    except MaxQDeployError:
        return ArtifactSize(None, None)  # the stage that loads it reports what is wrong
    return ArtifactSize(arch, default_input_size(arch) if arch else None)


def _onnx_input_size(path: Path) -> ArtifactSize:
    from maxq_deploy.core.errors import MaxQDeployError
    from maxq_deploy.onnx_graph.index import load_onnx

    try:
        model = load_onnx(path, load_external_data=False)
    except MaxQDeployError:  # the stage that opens it reports a damaged file
        return ArtifactSize(None, None)
    meta = {p.key: p.value for p in model.metadata_props}
    arch = meta.get(onnx_meta.ARCH)
    arch = arch if arch in ARCHS else None
    size = None
    if model.graph.input:  # the graph's real input shape wins over what its metadata claims
        dims = model.graph.input[0].type.tensor_type.shape.dim
        if len(dims) == 4 and dims[2].dim_value > 0:
            size = int(dims[2].dim_value)
    return ArtifactSize(arch, size if size is not None else stored_input_size(meta))
