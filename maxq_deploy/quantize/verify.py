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
    for layer in ckpt.layers:
        weight = ckpt.state_dict[f"{layer.name}.weight"]
        q = int8_weight(weight, ckpt.quantizers[weight_quantizer_name(layer.name)])
        report.layers.append(
            weight_verdict(
                layer.name, q, pattern, expected_sparse=layer.role == "sparse", trained_nm=layer.trained_nm,
                conv_groups=layer.groups, dtype="int8", note="INT8 weights (per-channel symmetric)",
            )
        )
    fc_amax = ckpt.quantizers.get(weight_quantizer_name("fc"))
    if fc_amax is not None:
        fc = int8_weight(ckpt.state_dict["fc.weight"], fc_amax)
        report.layers.append(weight_verdict("fc", fc, pattern, op="linear", expected_sparse=False, trained_nm=None, dtype="int8"))
    training = ckpt.meta.get("training")
    if isinstance(training, dict):
        report.notes.append(f"quantization-aware trained ({training.get('epochs')} epoch(s)); N:M zeros held by fixed masks")
    return report


TORCH_VERIFIERS[QUANTIZED_FORMAT] = verify_quantized
