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
from maxq_deploy.core.errors import BackendUnavailableError, OptionError
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
    arithmetic: str = "optimized"  # ONNX Runtime's kernels, or its reference Q/DQ arithmetic (see check_parity)
    note: str = ""
    divergence: dict | None = None  # INT8 failure: the first layer off by more than one quantization step

    def where(self) -> str:
        """``"; first layer ..."`` for a failed INT8 check (empty otherwise)."""
        from maxq_deploy.export.int8_divergence import describe_divergence

        return "" if self.divergence is None else "; " + describe_divergence(self.divergence)

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


@dataclass
class CalibratedExport(ExportSummary):
    """An INT8 export calibrated from a folded checkpoint (``--target onnxruntime --calib`` and
    ``--quantizer modelopt``): where it came from and on what it was calibrated. Each route's result
    adds its own fields after these."""

    output: Path
    source: Path
    source_sha256: str
    arch: str
    num_classes: int
    nm: str | None
    input_size: int


def calibration_record(source: str, batches: Sequence[np.ndarray], batch_size: int, **extra) -> dict:
    """The ``calibration`` entry of a calibrated export's result: source, batches, images, batch size, then ``extra``."""
    return {"source": source, "batches": len(batches), "images": int(sum(len(b) for b in batches)),
            "batch_size": batch_size, **extra}


def seeded_batch(batch_shape: Sequence[int], seed: int = PARITY_SEED) -> np.ndarray:
    """The standard-normal float32 batch every parity check runs on (the same for a given seed)."""
    import torch

    return torch.randn(list(batch_shape), generator=torch.Generator().manual_seed(seed)).numpy()


def onnx_vs_reference(onnx_path: str | os.PathLike[str], module, batches: Sequence[np.ndarray],
                      reference_arithmetic: bool = False) -> OutputDiff:
    """ONNX Runtime (CPU) on ``onnx_path`` against ``module`` on the same ``batches``: the one parity measure."""
    import torch

    from maxq_deploy.onnx_graph.edit import INPUT_NAME, OUTPUT_NAME
    from maxq_deploy.runtimes.onnxruntime_runner import session_from_onnx

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise BackendUnavailableError("the parity check needs ONNX Runtime: pip install onnxruntime") from None
    session = session_from_onnx(onnx_path, reference_arithmetic=reference_arithmetic)
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
    seed: int = PARITY_SEED, tolerance: float | None = None, cpu_isa: str | None = None,
) -> ParityCheck:
    """Parity on one seeded batch against ``tolerance`` (default: :data:`PARITY_TOLERANCE` of ``precision``)."""
    return run_parity(onnx_path, module, precision, batch_shape, reference, seed, tolerance, cpu_isa)[0]


def run_parity(
    onnx_path: str | os.PathLike[str], module, precision: str, batch_shape: list[int], reference: str = "PyTorch",
    seed: int = PARITY_SEED, tolerance: float | None = None, cpu_isa: str | None = None,
) -> tuple[ParityCheck, OutputDiff]:
    """:func:`check_parity` and the comparison it judged (top-1 agreement included).

    INT8: the TensorRT-form graph (``cpu_isa`` None) and a ``vnni`` graph on a CPU without VNNI are
    run with ONNX Runtime's reference Q/DQ arithmetic (the graph's ONNX meaning, what TensorRT
    computes), not its u8 x s8 kernels that saturate on such CPUs. A failed INT8 check names the
    first layer that diverges (:func:`maxq_deploy.export.int8_divergence.first_divergence`).
    """
    from maxq_deploy.onnx_graph.cpu_isa import PORTABLE, int8_saturates

    int8 = precision == "int8"
    reference_arithmetic = int8 and cpu_isa != PORTABLE and (cpu_isa is None or int8_saturates())
    note = ""
    if reference_arithmetic and cpu_isa is not None:
        note = ("parity checked with ONNX Runtime's reference Q/DQ arithmetic: this CPU has no VNNI, where the "
                f"'{cpu_isa}' form saturates; run it on a CPU with VNNI/AMX, or export with --cpu-isa portable")
    x = seeded_batch(batch_shape, seed)
    diff = onnx_vs_reference(onnx_path, module, [x], reference_arithmetic)
    check = parity_from_diff(diff, reference, batch_shape, seed, PARITY_TOLERANCE[precision] if tolerance is None else tolerance)
    check.arithmetic = "reference Q/DQ (graph optimizations off)" if reference_arithmetic else "optimized"
    check.note = note
    if not check.passed and int8:
        import torch

        from maxq_deploy.export.int8_divergence import first_divergence

        check.divergence = first_divergence(onnx_path, module, torch.from_numpy(x), reference_arithmetic)
    return check, diff


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


def calibration_counts(calib_batches: int | None, calib_batch_size: int | None) -> tuple[int, int]:
    """``--calib-batches`` and ``--calib-batch-size`` of an export that calibrates (default 8 and 8); a typed 0 is
    refused, not taken as a request for the default."""
    for name, value in (("--calib-batches", calib_batches), ("--calib-batch-size", calib_batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise OptionError(f"{name} must be a whole number >= 1, got {value!r}")
    return (8 if calib_batches is None else calib_batches), (8 if calib_batch_size is None else calib_batch_size)
