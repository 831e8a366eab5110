"""Optimization-profile shapes for the image input: batch range x fixed C, H, W."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from maxq_deploy.core.errors import ProfileShapeError

DEFAULT_MIN_BATCH = 1
DEFAULT_OPT_BATCH = 8
DEFAULT_MAX_BATCH = 32


@dataclass(frozen=True)
class ProfileShapes:
    """One optimization profile for an NCHW input: ``[batch, *chw]`` for min, opt and max."""

    input_name: str = "input"
    min_batch: int = DEFAULT_MIN_BATCH
    opt_batch: int = DEFAULT_OPT_BATCH
    max_batch: int = DEFAULT_MAX_BATCH
    chw: tuple[int, int, int] = (3, 224, 224)

    def __post_init__(self) -> None:
        for name in ("min_batch", "opt_batch", "max_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ProfileShapeError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise ProfileShapeError(
                f"profile batches must satisfy min <= opt <= max, got min_batch={self.min_batch}, "
                f"opt_batch={self.opt_batch}, max_batch={self.max_batch}"
            )
        chw = tuple(self.chw)
        if len(chw) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in chw):
            raise ProfileShapeError(f"chw must be three positive integers (C, H, W), got {self.chw!r}")
        object.__setattr__(self, "chw", chw)
        if not self.input_name:
            raise ProfileShapeError("input_name must not be empty")

    @property
    def min_shape(self) -> tuple[int, ...]:
        return (self.min_batch, *self.chw)

    @property
    def opt_shape(self) -> tuple[int, ...]:
        return (self.opt_batch, *self.chw)

    @property
    def max_shape(self) -> tuple[int, ...]:
        return (self.max_batch, *self.chw)

    def trtexec_spec(self, which: str) -> str:
        """``input:8x3x224x224`` for trtexec's ``--minShapes/--optShapes/--maxShapes``."""
        shape = {"min": self.min_shape, "opt": self.opt_shape, "max": self.max_shape}[which]
        return f"{self.input_name}:{'x'.join(map(str, shape))}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["chw"] = list(self.chw)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> ProfileShapes:
        return cls(str(data["input_name"]), int(data["min_batch"]), int(data["opt_batch"]), int(data["max_batch"]),
                   tuple(int(d) for d in data["chw"]))  # type: ignore[arg-type]


def resolve_profile(
    input_name: str, input_shape: list[int | None], min_batch: int | None = None, opt_batch: int | None = None,
    max_batch: int | None = None,
) -> ProfileShapes:
    """The profile for an ONNX input of ``input_shape`` ([N, C, H, W], None = dynamic batch).

    A fixed-batch graph admits only its own batch; a dynamic one defaults to
    1 / min(8, max) / max(32, the other values given).
    """
    if len(input_shape) != 4 or any(d is None for d in input_shape[1:]):
        shown = "x".join("?" if d is None else str(d) for d in input_shape)
        raise ProfileShapeError(
            f"ONNX input {input_name!r} has shape {shown}; expected [N, C, H, W] with fixed C, H, W "
            "(re-export with a fixed image size)"
        )
    chw = tuple(int(d) for d in input_shape[1:])  # type: ignore[arg-type]
    fixed = input_shape[0]
    given = {"min_batch": min_batch, "opt_batch": opt_batch, "max_batch": max_batch}
    if fixed is not None:
        wrong = {k: v for k, v in given.items() if v is not None and v != fixed}
        if wrong:
            shown = ", ".join(f"{k}={v}" for k, v in wrong.items())
            raise ProfileShapeError(
                f"the ONNX graph has a fixed batch of {fixed} (input {input_name!r} is "
                f"{'x'.join(map(str, input_shape))}), so the profile must use batch {fixed}, got {shown}; "
                "re-export the ONNX with a dynamic batch axis for a batch range"
            )
        return ProfileShapes(input_name, int(fixed), int(fixed), int(fixed), chw)  # type: ignore[arg-type]
    lo = DEFAULT_MIN_BATCH if min_batch is None else min_batch
    hi = max_batch if max_batch is not None else max(DEFAULT_MAX_BATCH, lo, opt_batch or 0)
    opt = opt_batch if opt_batch is not None else min(max(DEFAULT_OPT_BATCH, lo), hi)
    return ProfileShapes(input_name, lo, opt, hi, chw)  # type: ignore[arg-type]


def check_profile_fits(profile: ProfileShapes, input_name: str, input_shape: list[int | None]) -> ProfileShapes:
    """Validate a caller-made profile against the ONNX input (name, C, H, W, fixed batch)."""
    expected = resolve_profile(input_name, input_shape, profile.min_batch, profile.opt_batch, profile.max_batch)
    if profile.input_name != input_name:
        raise ProfileShapeError(f"profile input {profile.input_name!r} is not the ONNX graph's input {input_name!r}")
    if profile.chw != expected.chw:
        raise ProfileShapeError(
            f"profile C, H, W {'x'.join(map(str, profile.chw))} do not match the ONNX input "
            f"{'x'.join(map(str, expected.chw))}"
        )
    return profile


def profile_for_onnx(
    graph: Any, profile: ProfileShapes | None = None, min_batch: int | None = None,
    opt_batch: int | None = None, max_batch: int | None = None,
) -> ProfileShapes:
    """The optimization profile: ``profile`` checked against the graph, else made from the batches."""
    if profile is not None:
        if any(v is not None for v in (min_batch, opt_batch, max_batch)):
            raise ProfileShapeError("pass either profile or min_batch/opt_batch/max_batch, not both")
        return check_profile_fits(profile, graph.input_name, graph.input_shape)
    return resolve_profile(graph.input_name, graph.input_shape, min_batch, opt_batch, max_batch)
