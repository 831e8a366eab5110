"""Shared quantize test helpers: a quantized checkpoint made without any quantization backend."""

from __future__ import annotations

from pathlib import Path

import torch

SIZE = 32


def _quantized_dict(folded_path: Path) -> dict:
    """A quantized checkpoint with max ranges from a few random batches (backend-free, deterministic)."""
    from maxq_deploy.core.files import provenance
    from maxq_deploy.quantize.artifact import check_int8_layers, read_folded_input
    from maxq_deploy.quantize.calibrate import CalibrationStats
    from maxq_deploy.quantize.frozen import frozen_skeleton, quantizer_names
    from maxq_deploy.quantize.result import checkpoint_dict

    folded, _ = read_folded_input(folded_path)
    probe = frozen_skeleton(folded.arch, folded.num_classes, folded.state_dict)
    names = quantizer_names(probe)
    seen: dict[str, float] = {}
    hooks = [probe.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: seen.__setitem__(n, max(seen.get(n, 0.0), float(a[0].abs().max())))) for n in names]
    with torch.no_grad():
        probe(torch.randn(8, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)))
    for h in hooks:
        h.remove()
    ranges = {}
    for n in names:
        if n.endswith("._weight_quantizer"):
            w = folded.state_dict[n.rpartition(".")[0] + ".weight"]
            ranges[n] = w.abs().flatten(1).amax(1).reshape(-1, *([1] * (w.dim() - 1))).float()
        else:
            ranges[n] = torch.tensor(seen[n])
    stats = CalibrationStats("max", None, 1, 8, None, 0, 0.0, 0.0, [], SIZE)
    checks = check_int8_layers(folded.layers, folded.state_dict, ranges)
    return checkpoint_dict(folded, folded.state_dict, ranges, stats, checks, provenance(folded.path), "test (random max ranges)")
