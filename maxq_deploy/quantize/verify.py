"""``verify`` for quantized checkpoints: the hardware pattern on the INT8 weights TensorRT gets.

Registered in :data:`maxq_deploy.verify.TORCH_VERIFIERS` when ``verify`` loads its plugins.
Needs no pytorch-quantization: the INT8 weights are computed from the stored ranges.
"""

from __future__ import annotations

from pathlib import Path

from maxq_deploy.load.formats import QUANTIZED_FORMAT
from maxq_deploy.quantize.artifact import int8_weight, quantized_from_dict, weight_quantizer_name
from maxq_deploy.core.sparsity import NMPattern
from maxq_deploy.verify import TORCH_VERIFIERS, VerifyReport, weight_verdict


def verify_quantized(path: Path, obj: object, pattern: NMPattern, arch: str | None, nm: str | None) -> VerifyReport:
    """One verdict per conv (and the classifier) on ``round(w / (amax / 127))`` as int8."""
    ckpt = quantized_from_dict(obj, path)  # type: ignore[arg-type]
    report = VerifyReport(str(path), "quantized-checkpoint", str(pattern), ckpt.nm)
    kept_float = set(ckpt.kept_float)
    for layer in ckpt.layers:
        weight = ckpt.state_dict[f"{layer.name}.weight"]
        floating = layer.name in kept_float
        q = weight if floating else int8_weight(weight, ckpt.quantizers[weight_quantizer_name(layer.name)])
        notes = ["float weights: kept float on purpose (quantize --keep-float)" if floating else "INT8 weights (per-channel symmetric)"]
        if layer.kept_dense:
            notes.append("kept dense on purpose (fold --keep-dense): runs dense")
        report.layers.append(
            weight_verdict(
                layer.name, q, pattern, expected_sparse=layer.role == "sparse" and not layer.kept_dense,
                trained_nm=layer.trained_nm, conv_groups=layer.groups, dtype=str(weight.dtype).replace("torch.", "") if floating else "int8",
                note="; ".join(notes),
            )
        )
    fc_amax = ckpt.quantizers.get(weight_quantizer_name("fc"))
    if fc_amax is not None:
        fc = int8_weight(ckpt.state_dict["fc.weight"], fc_amax)
        report.layers.append(weight_verdict("fc", fc, pattern, op="linear", expected_sparse=False, trained_nm=None, dtype="int8"))
    if ckpt.kept_dense:
        report.notes.append(f"{len(ckpt.kept_dense)} sparse layer(s) kept dense on purpose (fold --keep-dense), not checked for "
                            f"{pattern}: {', '.join(ckpt.kept_dense)}")
    if ckpt.kept_float:
        report.notes.append(f"{len(ckpt.kept_float)} layer(s) kept float on purpose (quantize --keep-float), checked on their "
                            f"float weights: {', '.join(ckpt.kept_float)}")
    training = ckpt.meta.get("training")
    if isinstance(training, dict):
        report.notes.append(f"quantization-aware trained ({training.get('epochs')} epoch(s)); N:M zeros held by fixed masks")
    return report


TORCH_VERIFIERS[QUANTIZED_FORMAT] = verify_quantized
