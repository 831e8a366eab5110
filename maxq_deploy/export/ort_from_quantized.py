"""ONNX Runtime's int8 form made from a quantized checkpoint's own ranges: no data, no second calibration.

The TensorRT-form Q/DQ graph (``export onnx``) carries the checkpoint's ranges, PTQ or QAT; it is
rewritten (:func:`maxq_deploy.export.ort_rewrite.rewrite_for_onnxruntime`) into the form ONNX Runtime's
CPU kernels fuse: uint8 activations with zero points (ReLU outputs on [0, amax]), int8
per-channel weights, int32 biases. The result is checked against the fake-quantized PyTorch
model, as the TensorRT graph is, and written only if it passes. The folded-checkpoint route with
ONNX Runtime's own calibration stays in :mod:`maxq_deploy.export.ort_calibrated`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maxq_deploy.onnx_graph import meta as onnx_meta
from maxq_deploy.core.files import ONNX_SUFFIXES, Output, atomic_output, check_input_file, guard_outputs, sha256_file, temp_folder
from maxq_deploy.core.errors import OptionError, ParityError
from maxq_deploy.export.common import ExportSummary, op_counts, scratch_step
from maxq_deploy.core.progress import SILENT, Progress
from maxq_deploy.core.sparsity import HARDWARE_PATTERN

TARGET = "onnxruntime"


#: max |ort - fake-quant| / max |fake-quant| allowed for the graph made from the checkpoint's ranges:
#: the int8 tolerance of every export (see :data:`maxq_deploy.export.common.PARITY_TOLERANCE`).
FROM_CHECKPOINT_TOLERANCE = 1e-1
#: ReLU output ranges: "unsigned" (uint8 [0, amax] in 256 steps, the ReLU folds into the
#: QuantizeLinear: fast) or "signed" (the checkpoint's int8 grid, exact, but the ReLU and the conv
#: before it stay float: a comparison point).
RELU_RANGES = ("unsigned", "signed")
#: A range in the graph matches the checkpoint's amax within this relative difference (float32 rounding).
RANGE_MATCH_RTOL = 1e-6
#: --cpu-isa -> how ort_rewrite stores the weights (see maxq_deploy.export.ort_rewrite.WEIGHT_FORMS)
WEIGHT_FORM = {"portable": "s7", "vnni": "s8"}


@dataclass
class RangeUse:
    """One layer: the checkpoint's ``amax`` and the range the ONNX Runtime graph quantizes with."""

    layer: str
    input_amax: float  # checkpoint, <layer>._input_quantizer
    graph_input_amax: float | None  # scale * 255 (zero point 0) or scale * 127 (zero point 128); None: float input
    input_grid: str  # "uint8 [0, amax] / 255", "uint8 zp 128 (int8 grid)", "float"
    weight_amax_max_rel_diff: float | None  # per channel, |scale * 127 - amax| / amax; None: float weight

    @property
    def matches(self) -> bool:
        ok_in = self.graph_input_amax is None or abs(self.graph_input_amax - self.input_amax) <= RANGE_MATCH_RTOL * self.input_amax
        return ok_in and (self.weight_amax_max_rel_diff is None or self.weight_amax_max_rel_diff <= RANGE_MATCH_RTOL)


@dataclass
class OrtFromCheckpointResult(ExportSummary):
    """What ``export onnx QUANTIZED --target onnxruntime`` wrote, and the numbers that say it is right."""

    output: Path
    source: Path
    source_sha256: str
    mode: str  # "ptq" or "qat": where the ranges came from
    arch: str
    num_classes: int
    nm: str | None
    input_size: int
    relu_range: str
    cpu_isa: str
    parity: object  # export.common.ParityCheck against the fake-quantized PyTorch model
    top1_agreement: float  # on the parity batch
    int8_layers: list[str]
    float_layers: list[str]
    derived_ranges: dict[str, list[float]]
    ranges: list[RangeUse]
    op_counts: dict[str, int]
    sparse_layers: list[str]
    target: str = TARGET
    precision: str = "int8"
    calibration: str = "none: the checkpoint's ranges"

    @property
    def ranges_match(self) -> bool:
        return bool(self.ranges) and all(r.matches for r in self.ranges)

    def summary(self) -> dict:
        data = super().summary()
        data["ranges_match"] = self.ranges_match
        return data


def check_quantized_for_ort(path: str | os.PathLike[str]) -> dict:
    """The quantized checkpoint's dict, refused with one line if it is another kind or damaged.

    The quantized format's one reader (:func:`maxq_deploy.quantize.artifact.quantized_from_dict`)
    judges it, with zero weight ranges refused too: ONNX Runtime divides by them.
    """
    from maxq_deploy.load.formats import FOLDED_FORMAT, format_of
    from maxq_deploy.load.maxq_checkpoint import torch_load_safe
    from maxq_deploy.quantize.artifact import quantized_from_dict

    p = Path(path)
    obj = torch_load_safe(p, "quantized checkpoint")
    if format_of(obj) == FOLDED_FORMAT:
        raise OptionError(
            f"{p} is a folded checkpoint: quantize it first (maxq-deploy quantize), or pass --calib DATA to let "
            "ONNX Runtime's quantizer calibrate it"
        )
    quantized_from_dict(obj, p, positive_weight_ranges=True)
    return obj


def export_ort_int8_from_quantized(
    quantized_path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    input_size: int = 224,
    opset: int = 17,
    progress: Progress | None = None,
    *,
    relu_range: str = "unsigned",
    cpu_isa: str | None = None,
    parity_batch: int = 2,
    tolerance: float = FROM_CHECKPOINT_TOLERANCE,
) -> OrtFromCheckpointResult:
    """ONNX Runtime's INT8 form (uint8 activations, int8 per-channel weights) from a quantized checkpoint's ranges.

    No data and no second calibration: the TensorRT-form Q/DQ graph of the checkpoint is made
    (:func:`maxq_deploy.export.tensorrt_form.export_onnx`, parity-checked) and rewritten
    (:func:`maxq_deploy.export.ort_rewrite.rewrite_for_onnxruntime`); the result is checked against the
    fake-quantized PyTorch model on a seeded random batch and written only if it passes.

    ``cpu_isa`` (:data:`maxq_deploy.onnx_graph.cpu_isa.CPU_ISAS`): ``portable`` (default) stores 7-bit weights
    (``amax / 63``), exact on every x86 CPU; ``vnni`` the checkpoint's 8-bit weights, fastest on
    CPUs with VNNI/AMX, but it saturates without them (then its parity check runs ONNX Runtime's
    reference Q/DQ arithmetic and says so in a note).
    """
    import onnx

    from maxq_deploy import __version__
    from maxq_deploy.export.common import run_parity
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.onnx_graph.index import load_onnx
    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.export.ort_rewrite import rewrite_for_onnxruntime

    started = time.perf_counter()
    from maxq_deploy.onnx_graph.cpu_isa import PORTABLE, check_cpu_isa

    cpu_isa = check_cpu_isa(cpu_isa)
    relu_range = str(relu_range).lower()
    if relu_range not in RELU_RANGES:
        raise OptionError(f"relu_range {relu_range!r} is not supported; choose one of {', '.join(RELU_RANGES)}")
    source = check_input_file(quantized_path, "quantized checkpoint")
    (out,) = guard_outputs([Output(Path(output), ONNX_SUFFIXES, "ONNX output")], [source])  # before any work
    obj = check_quantized_for_ort(source)
    mode = "qat" if obj.get("training") else "ptq"
    track = progress or SILENT
    notes: list[str] = []
    with temp_folder(out) as tmp_dir, atomic_output(out) as tmp_out:  # model-sized scratch beside the output
        qdq_path = Path(tmp_dir) / "tensorrt_qdq.onnx"
        steps = ["tensorrt-form q/dq", "rewrite", "check"]
        for step in track.track(steps, total=len(steps), description="export onnxruntime int8 (checkpoint ranges)"):
            if step == "tensorrt-form q/dq":
                with scratch_step(qdq_path, out, "the intermediate TensorRT-form Q/DQ graph"):
                    qdq = export_onnx(source, qdq_path, precision="int8", opset=opset, input_size=input_size, parity_batch=parity_batch,
                                      float_regions="fp32")  # rewritten below: ONNX Runtime's form keeps float32 scales
                notes.extend(qdq.notes)
            elif step == "rewrite":
                model = load_onnx(qdq_path)
                report = rewrite_for_onnxruntime(model, unsigned_relu=relu_range == "unsigned", weight_form=WEIGHT_FORM[cpu_isa])
                meta = {p.key: p.value for p in model.metadata_props}
                meta.update({
                    onnx_meta.PREFIX + "target": TARGET,
                    onnx_meta.PREFIX + "quant_format": "qdq",
                    onnx_meta.PREFIX + "quantizer": "maxq_deploy.export.ort_rewrite.rewrite_for_onnxruntime",
                    onnx_meta.PREFIX + "ranges_from": f"quantized checkpoint ({mode})",
                    onnx_meta.PREFIX + "activation_type": "uint8",
                    onnx_meta.PREFIX + "weight_type": "int8",
                    onnx_meta.PREFIX + "weight_bits": str(8 if cpu_isa != PORTABLE else 7),
                    onnx_meta.CPU_ISA: cpu_isa,
                    onnx_meta.PREFIX + "per_channel": "true",
                    onnx_meta.PREFIX + "relu_range": relu_range,
                    onnx_meta.PREFIX + "tool_version": __version__,
                })
                onnx_meta.write_metadata(model, meta)
                model.producer_name, model.producer_version = "maxq-deploy", __version__
                onnx.checker.check_model(model, full_check=True)  # a failure is a bug in the rewrite
                onnx.save(model, str(tmp_out))
            else:
                loaded = load_torch_model(source)
                parity, diff = run_parity(tmp_out, loaded.module, "int8", [parity_batch, 3, input_size, input_size],
                                          "the fake-quantized PyTorch model", tolerance=tolerance, cpu_isa=cpu_isa)
                if parity.note:
                    notes.append(parity.note)
                if not parity.passed:
                    raise ParityError(
                        f"the ONNX Runtime INT8 graph made from {source.name}'s ranges does not match the fake-quantized "
                        f"model ({parity.describe()}){parity.where()}; nothing was written to {out}"
                    )
                agreement = diff.top1_agreement
                ranges = _range_uses(model, obj)
                from maxq_deploy.verify.onnx import verify_onnx

                pattern = verify_onnx(tmp_out, HARDWARE_PATTERN)
                notes.extend(n for n in pattern.notes if n not in notes)  # the Q/DQ graph said some of them already
    return OrtFromCheckpointResult(
        output=out, source=source, source_sha256=qdq.source_sha256, mode=mode, arch=qdq.arch, num_classes=qdq.num_classes,
        nm=qdq.nm, input_size=input_size, relu_range=relu_range, cpu_isa=cpu_isa, parity=parity, top1_agreement=agreement,
        int8_layers=report.int8_convs + report.float_output, float_layers=report.float_convs,
        derived_ranges=report.derived_ranges, ranges=ranges, op_counts=op_counts(model),
        sparse_layers=list(qdq.sparse_layers), pattern_sparse_layers=len(pattern.expected),
        pattern_holding_layers=pattern.holding_layers, pattern_verdict=pattern.verdict,
        onnx_sha256=sha256_file(out), size_bytes=out.stat().st_size, seconds=round(time.perf_counter() - started, 3),
        notes=notes,
    )


def _range_uses(model, obj: dict) -> list[RangeUse]:
    """For every Conv/Gemm: the checkpoint's amax next to the range its input and weight are quantized with."""
    from onnx import numpy_helper

    from maxq_deploy.onnx_graph.index import GraphIndex

    index = GraphIndex(model.graph)
    consts = {name: numpy_helper.to_array(init) for name, init in index.initializers.items()}
    producers = index.producers
    quantizers = obj["quantizers"]
    qmax = 2 ** (int(onnx_meta.read_metadata(model).get(onnx_meta.key("weight_bits"), 8)) - 1) - 1  # 127 or 63
    uses = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        amax_in = quantizers.get(f"{node.name}._input_quantizer")
        amax_w = quantizers.get(f"{node.name}._weight_quantizer")
        if amax_in is None or amax_w is None:
            continue
        dq = producers.get(node.input[0])
        graph_in, grid = None, "float"
        if dq is not None and dq.op_type == "DequantizeLinear":
            scale = float(np.asarray(consts[dq.input[1]]).reshape(-1)[0])
            zp = int(np.asarray(consts[dq.input[2]]).reshape(-1)[0])
            graph_in = scale * (255 if zp == 0 else 127)
            grid = "uint8 [0, amax] / 255" if zp == 0 else f"uint8 zp {zp} (int8 grid)"
        wdq = producers.get(node.input[1])
        w_diff = None
        if wdq is not None and wdq.op_type == "DequantizeLinear":
            w_amax = np.asarray(consts[wdq.input[1]], dtype=np.float64).reshape(-1) * qmax
            ref = amax_w.double().reshape(-1).numpy()
            w_diff = float(np.max(np.abs(w_amax - ref) / ref))
        uses.append(RangeUse(node.name, float(amax_in.reshape(-1)[0]), graph_in, grid, w_diff))
    return uses
