"""One way to say how far a model's outputs moved: fold drift, ONNX parity, the ONNX Runtime target."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class OutputDiff:
    """How ``got`` differs from ``reference`` (logits of the same batch).

    ``relative_error`` is max abs error over max abs reference (the ONNX parity measure);
    ``relative_l2_error`` is ||got - ref|| / ||ref||; ``top1_agreement`` the fraction of rows whose
    arg-max agrees; ``finite`` whether ``got`` and ``reference`` hold no NaN/Inf (otherwise the errors
    are inf: a NaN compares to nothing, and must not vanish when batches are merged).
    """

    images: int
    max_abs_error: float
    max_abs_reference: float
    relative_error: float
    relative_l2_error: float
    top1_agreement: float
    finite: bool

    def to_dict(self) -> dict:
        return asdict(self)


def compare_outputs(reference: object, got: object) -> OutputDiff:
    """Compare two [N, classes] (or [N, ...]) outputs; numpy arrays or torch tensors."""
    ref = _as_numpy(reference)
    out = _as_numpy(got)
    if ref.shape != out.shape:
        raise ValueError(f"outputs differ in shape: {out.shape} vs reference {ref.shape}")
    finite = bool(np.isfinite(out).all() and np.isfinite(ref).all())
    ref_finite = np.abs(ref[np.isfinite(ref)])  # a finite scale, so that an inf error stays inf (not inf/inf)
    ref_max = float(ref_finite.max()) if ref_finite.size else 0.0
    if finite:
        diff = np.abs(out - ref)
        max_abs = float(diff.max()) if diff.size else 0.0
        rel_l2 = float(np.linalg.norm(diff) / max(float(np.linalg.norm(ref)), 1e-12))
    else:  # a NaN compares to nothing: infinitely wrong, whatever the batch order when merged
        max_abs = rel_l2 = float("inf")
    images = int(ref.shape[0]) if ref.ndim else 1
    if ref.ndim >= 2 and ref.shape[0]:
        agree = float((ref.reshape(images, -1).argmax(1) == out.reshape(images, -1).argmax(1)).mean())
    else:
        agree = 1.0
    return OutputDiff(images, max_abs, ref_max, max_abs / max(ref_max, 1e-12), rel_l2, agree, finite)


def merge_diffs(diffs: list[OutputDiff]) -> OutputDiff:
    """One summary over several batches (worst errors, image-weighted agreement)."""
    if not diffs:
        raise ValueError("no output comparisons to merge")
    images = sum(d.images for d in diffs)
    max_abs = max(d.max_abs_error for d in diffs)
    ref_max = max(d.max_abs_reference for d in diffs)
    return OutputDiff(
        images=images,
        max_abs_error=max_abs,
        max_abs_reference=ref_max,
        relative_error=max_abs / max(ref_max, 1e-12),  # ref_max is finite: inf stays inf
        relative_l2_error=max(d.relative_l2_error for d in diffs),
        top1_agreement=sum(d.top1_agreement * d.images for d in diffs) / max(images, 1),
        finite=all(d.finite for d in diffs),
    )


def _as_numpy(value: object) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(value, dtype=np.float64)
