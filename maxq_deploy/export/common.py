"""What every ONNX export target shares: the one parity check, the result's common fields, op counts.

Parity: ONNX Runtime (CPU) runs the written graph and the reference PyTorch module runs the same
batches; :func:`onnx_vs_reference` is the one function that computes how far apart they are
(:func:`maxq_deploy.core.compare.compare_outputs`), and :func:`check_parity` turns that into the
pass/fail :class:`ParityCheck` against a tolerance per precision.

Tolerances (relative error = max |onnx - torch| / max |torch|): fp32 1e-4 (observed ~1e-6: only
summation order differs); fp16 1e-2 against the float32 PyTorch model (observed ~5e-4: 10-bit
mantissa through ~50 layers); int8 1e-1 against the fake-quantized PyTorch model (observed 5e-3
to 5.3e-2 on random batches): ONNX Runtime and torch may round an activation that sits on a step
boundary differently, and one flipped INT8 step (1/127 of that tensor's range) propagates through
the layers after it; a wrong scale, axis or missing Q/DQ gives errors of order 1, far above it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from maxq_deploy.core.compare import OutputDiff, compare_outputs, merge_diffs
from maxq_deploy.core.errors import BackendUnavailableError
from maxq_deploy.core.sparsity import HARDWARE_PATTERN

#: max |onnx - torch| / max |torch| allowed per precision (see the module docstring).
PARITY_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "int8": 1e-1}
PARITY_SEED = 0


@dataclass
class ParityCheck:
    """ONNX Runtime (CPU) against the PyTorch model on one seeded random batch."""

    reference: str  # what the ONNX output was compared with
    batch_shape: list[int]
    seed: int
    max_abs_error: float
    max_abs_reference: float
    relative_error: float  # max_abs_error / max_abs_reference
    tolerance: float  # on relative_error
    passed: bool

    def describe(self) -> str:
        return (
            f"max abs error {self.max_abs_error:.3g}, relative error {self.relative_error:.3g} "
            f"({'<=' if self.passed else '>'} tolerance {self.tolerance:g}) on a random batch {tuple(self.batch_shape)}"
        )


@dataclass(kw_only=True)
class ExportSummary:
    """What every ONNX export result shares: the written file, the 2:4 verdict in the graph, notes,
    and the JSON form. The fields are keyword-only, so each result lists its own fields first."""

    pattern: str = HARDWARE_PATTERN
    pattern_sparse_layers: int = 0  # layers the ONNX verifier expects to be sparse
    pattern_holding_layers: int = 0
    pattern_verdict: str = ""
    onnx_sha256: str = ""
    size_bytes: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def pattern_ok(self) -> bool:
        return self.pattern_sparse_layers > 0 and self.pattern_holding_layers == self.pattern_sparse_layers

    def summary(self) -> dict:
        """JSON-ready description (what ``export onnx --json`` prints)."""
        data = asdict(self)
        data["output"], data["source"] = str(self.output), str(self.source)
        data["pattern_ok"] = self.pattern_ok
        return data


def seeded_batch(batch_shape: Sequence[int], seed: int = PARITY_SEED) -> np.ndarray:
    """The standard-normal float32 batch every parity check runs on (the same for a given seed)."""
    import torch

    return torch.randn(list(batch_shape), generator=torch.Generator().manual_seed(seed)).numpy()


def onnx_vs_reference(onnx_path: str | os.PathLike[str], module, batches: Sequence[np.ndarray]) -> OutputDiff:
    """ONNX Runtime (CPU) on ``onnx_path`` against ``module`` on the same ``batches``: the one parity measure."""
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("the parity check needs ONNX Runtime: pip install onnxruntime") from None
    from maxq_deploy.onnx_graph.edit import INPUT_NAME, OUTPUT_NAME

    session_options = ort.SessionOptions()
    session_options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), session_options, providers=["CPUExecutionProvider"])
    input_name = next((i.name for i in session.get_inputs() if i.name == INPUT_NAME), session.get_inputs()[0].name)
    output_name = next((o.name for o in session.get_outputs() if o.name == OUTPUT_NAME), session.get_outputs()[0].name)
    diffs = []
    with torch.no_grad():
        for batch in batches:
            ref = module(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).float().cpu().numpy()
            got = np.asarray(session.run([output_name], {input_name: batch})[0], dtype=np.float32)
            if got.shape != ref.shape:
                inf = float("inf")
                diffs.append(OutputDiff(len(batch), inf, float(np.abs(ref).max()), inf, inf, 0.0, False))
            else:
                diffs.append(compare_outputs(ref, got))
    return merge_diffs(diffs)


def check_parity(
    onnx_path: str | os.PathLike[str], module, precision: str, batch_shape: list[int], reference: str = "PyTorch",
    seed: int = PARITY_SEED, tolerance: float | None = None,
) -> ParityCheck:
    """Parity on one seeded batch, judged against ``tolerance`` (default: :data:`PARITY_TOLERANCE` of ``precision``)."""
    return parity_from_diff(onnx_vs_reference(onnx_path, module, [seeded_batch(batch_shape, seed)]), reference,
                            batch_shape, seed, PARITY_TOLERANCE[precision] if tolerance is None else tolerance)


def parity_from_diff(diff: OutputDiff, reference: str, batch_shape: Sequence[int], seed: int, tolerance: float) -> ParityCheck:
    passed = diff.finite and diff.relative_error <= tolerance
    return ParityCheck(reference, list(batch_shape), seed, diff.max_abs_error, diff.max_abs_reference, diff.relative_error,
                       tolerance, bool(passed))


def op_counts(model) -> dict[str, int]:
    """Node count per op type of an ONNX model, sorted by op type."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


@contextlib.contextmanager
def scratch_step(scratch: str | os.PathLike[str], output: str | os.PathLike[str], what: str) -> Iterator[None]:
    """An intermediate graph written to ``scratch`` on the way to ``output``: an error names the user's
    ``output`` (and the step), never the internal scratch path, which is gone when the user reads it."""
    from maxq_deploy.core.errors import MaxQDeployError

    try:
        yield
    except MaxQDeployError as exc:
        text = str(exc).replace(str(scratch), f"{Path(output).name} ({what})")
        error = type(exc).__new__(type(exc))
        error.args = (f"{output}: {what} failed: {text}",)
        raise error from None
