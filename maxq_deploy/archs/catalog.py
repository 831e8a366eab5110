"""What every registered architecture is, readable without torch (CLI help, size checks).

The builders live in :mod:`maxq_deploy.archs` (they need torch); each registers under a name
declared here with ``@register_arch(name)``, and registering a name that is not declared here is
an error, so this table and the builders cannot drift apart. ``--arch`` help, ``inspect
--list-archs`` and every "supported architectures" message read this table.

Per architecture it records the input size it was trained at (the default of export, eval,
bench and calibration preprocessing) and the sizes it can run at: the CIFAR ResNets end in a
fixed 4x4 average pool (``F.avg_pool2d(out, 4)``) followed by a 1x1 conv classifier, so they
only produce one prediction per image when the last feature map (input / 8, rounded up) is 4 to
7 pixels wide, i.e. inputs of 25..56 pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from maxq_deploy.core.errors import OptionError, UnsupportedArchitectureError

#: Smallest input the ImageNet-style networks take (they downsample by 32).
MIN_IMAGENET_INPUT = 32


@dataclass(frozen=True)
class ArchSpec:
    """One architecture of the registry."""

    name: str
    family: str  # "imagenet" or "cifar"
    blocks: str  # human description, e.g. "BasicBlock [2, 2, 2, 2]"
    module: str  # the maxq_deploy.archs module whose builder registers ``name``
    input_size: int  # trained / default square input size
    min_input: int  # smallest square input it runs at
    max_input: int | None  # largest, None when unbounded
    resize_ratio: float  # eval preprocessing: resize the shorter side to size * ratio, then center-crop

    def runs_at(self, size: int) -> bool:
        return size >= self.min_input and (self.max_input is None or size <= self.max_input)

    def sizes_text(self) -> str:
        return f"{self.min_input}..{self.max_input}" if self.max_input is not None else f">= {self.min_input}"

    def to_dict(self) -> dict:
        return asdict(self) | {"sizes": self.sizes_text()}


def _imagenet(name: str, module: str, blocks: str) -> ArchSpec:
    return ArchSpec(name, "imagenet", blocks, module, 224, MIN_IMAGENET_INPUT, None, 256 / 224)


def _cifar(name: str, blocks: str) -> ArchSpec:
    # last map = ceil(size / 8) must be 4..7 for avg_pool2d(., 4) to leave 1x1: sizes 25..56
    return ArchSpec(name, "cifar", blocks, "maxq_deploy.archs.cifar_resnet", 32, 25, 56, 1.0)


ARCHS: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        _imagenet("resnet18", "maxq_deploy.archs.resnet", "BasicBlock [2, 2, 2, 2]"),
        _imagenet("resnet34", "maxq_deploy.archs.resnet", "BasicBlock [3, 4, 6, 3]"),
        _imagenet("resnet50", "maxq_deploy.archs.resnet", "Bottleneck [3, 4, 6, 3]"),
        _imagenet("mobilenet_v1", "maxq_deploy.archs.mobilenet", "depthwise-separable x13"),
        _cifar("c_resnet18", "BasicBlock [2, 2, 2, 2]"),
        _cifar("c_resnet34", "BasicBlock [3, 4, 6, 3]"),
        _cifar("c_resnet50", "Bottleneck [3, 4, 6, 3]"),
        _cifar("c_resnet101", "Bottleneck [3, 4, 23, 3]"),
        _cifar("c_resnet152", "Bottleneck [3, 8, 36, 3]"),
    )
}


def arch_names() -> list[str]:
    return sorted(ARCHS)


def arch_names_text() -> str:
    return ", ".join(arch_names())


def normalize_arch(name: str) -> str:
    """Map spellings such as ``ResNet50``, ``mobilenet-v1`` or ``C-ResNet18`` to a name, or raise."""
    key = str(name).strip().lower().replace("-", "_")
    if key in ARCHS:
        return key
    squashed = key.replace("_", "")
    for known in ARCHS:
        if known.replace("_", "") == squashed:
            return known
    raise UnsupportedArchitectureError(f"unsupported architecture {name!r}; supported: {arch_names_text()}")


def spec(arch: str) -> ArchSpec:
    return ARCHS[normalize_arch(arch)]


def default_input_size(arch: str) -> int:
    return spec(arch).input_size


def default_resize(arch: str | None, size: int) -> int:
    """Shorter side to resize image files to before the center crop of ``size``."""
    ratio = spec(arch).resize_ratio if arch else 256 / 224
    return max(size, round(size * ratio))


def check_input_size(arch: str, size: int, what: str = "--input-size") -> int:
    """``size`` if ``arch`` runs at it, else a one-line :class:`OptionError` saying which sizes it takes.

    ``what`` names where the size came from (an option, the calibration data, ...).
    """
    s = spec(arch)
    if isinstance(size, bool) or not isinstance(size, int):
        raise OptionError(f"{what} must be a whole number of pixels, got {size!r}")
    if not s.runs_at(size):
        why = (
            "its head averages a fixed 4x4 window of the last feature map (input / 8), so they give no single "
            "prediction per image" if s.family == "cifar" else "it downsamples by 32"
        )
        raise OptionError(
            f"{s.name} cannot run at {size}x{size} inputs ({what}): {why}; it runs at {s.sizes_text()} pixels "
            f"(trained at {s.input_size}, the default)"
        )
    return size
