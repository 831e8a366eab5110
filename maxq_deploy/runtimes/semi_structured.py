"""2:4 layers of a torch network as semi-structured sparse matmuls (CUDA, fp16/bf16, sm80+).

``torch.sparse.to_sparse_semi_structured`` accelerates 2-D matmuls whose weight holds 2:4 along
its rows. A Linear maps onto it directly; a 1x1 conv is a Linear over the pixels (cheap in
channels-last, where ``[N, H, W, C]`` rows are already contiguous); a KxK conv can become one
through im2col, with the weight reordered to ``[K, R*S*C]`` so the 2:4 groups along C stay
consecutive. The im2col copy usually costs more than the sparse matmul saves, so KxK convs
stay dense unless ``conv_kxk="im2col"``.

:func:`plan_sparse_layers` decides per layer (pure, runs anywhere: it is what the tests check);
:func:`sparsify_semi_structured_` swaps the eligible layers in place on a CUDA model. The runner
that uses both lives in the runtime wing (:mod:`maxq_deploy.runtimes.torch_sparse_runner`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from maxq_deploy.core.errors import BackendUnavailableError, MaxQDeployError
from maxq_deploy.core.sparsity import HARDWARE_PATTERN, check_pattern

SPARSE_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)
MIN_CAPABILITY = (8, 0)
#: (rows, cols) multiples for fp16/bf16 weights: CUTLASS's, the stricter of the two backends.
#: The real values are read from torch when converting (cuSPARSELt allows 16 x 16).
FALLBACK_MIN_SHAPE: tuple[int, int] = (32, 64)
KXK_MODES = ("skip", "im2col")
#: Why a layer stays dense, as the summary line words it.
CATEGORY_TEXT = {
    "dtype": "wrong dtype", "grouped": "grouped/depthwise", "unmapped": "not a plain matmul",
    "kxk": "KxK conv (im2col off)", "not-2:4": "not 2:4", "shape": "shape unsupported by the kernel",
}


@dataclass
class SparseLayerDecision:
    """Whether one layer runs as a semi-structured sparse matmul, and why (not)."""

    name: str
    op: str  # "linear", "conv1x1", "conv3x3" (any KxK: "conv5x5", ...)
    shape: list[int]
    matrix: list[int] | None  # [rows, cols] of the weight as a matmul operand
    sparse: bool
    category: str  # "sparse", "dtype", "grouped", "unmapped", "kxk", "not-2:4", "shape"
    reason: str


@dataclass
class SparseConversionReport:
    """Per layer: sparse or dense, and why; the CLI shows the summary, --json the whole."""

    dtype: str
    backend: str  # "cusparselt", "cutlass" or "plan" (decided without converting)
    conv_kxk: str
    min_shape: tuple[int, int]
    layers: list[SparseLayerDecision] = field(default_factory=list)

    @property
    def converted(self) -> list[SparseLayerDecision]:
        return [layer for layer in self.layers if layer.sparse]

    @property
    def skipped(self) -> list[SparseLayerDecision]:
        return [layer for layer in self.layers if not layer.sparse]

    def reasons(self) -> dict[str, int]:
        """How many layers stayed dense, per category."""
        counts: dict[str, int] = {}
        for layer in self.skipped:
            counts[layer.category] = counts.get(layer.category, 0) + 1
        return counts

    def summary(self) -> str:
        dense = ", ".join(f"{n} {CATEGORY_TEXT.get(why, why)}" for why, n in sorted(self.reasons().items(), key=lambda kv: -kv[1]))
        return (
            f"{len(self.converted)} of {len(self.layers)} layers run 2:4 semi-structured sparse "
            f"({self.dtype}, {self.backend})" + (f"; dense: {dense}" if dense else "")
        )

    def to_dict(self) -> dict:
        return {
            "dtype": self.dtype, "backend": self.backend, "conv_kxk": self.conv_kxk, "min_shape": list(self.min_shape),
            "sparse_layers": len(self.converted), "layers_considered": len(self.layers), "summary": self.summary(),
            "layers": [asdict(layer) for layer in self.layers],
        }


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The layer's weight as the matmul operand whose rows carry the 2:4 groups.

    Linear [out, in] as is; conv [K, C, R, S] as [K, R*S*C] (C fastest, matching im2col rows
    ordered (r, s, c)), which for 1x1 is just [K, C].
    """
    w = module.weight.detach()
    if isinstance(module, nn.Conv2d):
        return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)
    return w


def decide_layer(
    name: str, module: nn.Module, dtype: torch.dtype, min_shape: tuple[int, int] = FALLBACK_MIN_SHAPE, conv_kxk: str = "skip"
) -> SparseLayerDecision | None:
    """Decide one Conv2d/Linear (None for any other module). Pure: no CUDA needed."""
    if isinstance(module, nn.Linear):
        op = "linear"
    elif isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        op = "conv1x1" if (kh, kw) == (1, 1) else f"conv{kh}x{kw}"
    else:
        return None
    shape = list(module.weight.shape)

    def no(category: str, reason: str, matrix: list[int] | None = None) -> SparseLayerDecision:
        return SparseLayerDecision(name, op, shape, matrix, False, category, reason)

    if dtype not in SPARSE_DTYPES:
        return no("dtype", f"{str(dtype).replace('torch.', '')} has no semi-structured kernel here (use float16 or bfloat16)")
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return no("grouped", "grouped or depthwise conv: never 2:4 sparse")
        if module.dilation != (1, 1) or module.padding_mode != "zeros" or isinstance(module.padding, str):
            return no("unmapped", "conv with dilation, non-zero padding mode or string padding: not mapped to a matmul")
        if op != "conv1x1" and conv_kxk != "im2col":
            return no("kxk", f"{op}: im2col disabled (its copy usually costs more than 2:4 saves; conv_kxk='im2col' to try)")
        if op == "conv1x1" and module.padding != (0, 0):
            return no("unmapped", "1x1 conv with padding: not mapped to a matmul")
    matrix = weight_matrix(module)
    rows, cols = (int(d) for d in matrix.shape)
    check = check_pattern(matrix, HARDWARE_PATTERN, axis=1)
    if not check.holds:
        if not check.applicable:
            return no("not-2:4", f"reduction length {cols} is not a multiple of 4", [rows, cols])
        return no("not-2:4", f"{check.violating_groups} of {check.groups} groups have more than 2 non-zeros (dense layer)", [rows, cols])
    min_rows, min_cols = min_shape
    if rows < min_rows or rows % min_rows or cols < min_cols or cols % min_cols:
        return no("shape", f"weight matrix {rows}x{cols} is not a multiple of {min_rows}x{min_cols}", [rows, cols])
    return SparseLayerDecision(name, op, shape, [rows, cols], True, "sparse", "holds 2:4 and fits the kernel's shape")


def plan_sparse_layers(
    model: nn.Module, dtype: torch.dtype = torch.float16, min_shape: tuple[int, int] = FALLBACK_MIN_SHAPE,
    conv_kxk: str = "skip", backend: str = "plan",
) -> SparseConversionReport:
    """Decide every Conv2d/Linear of ``model`` without changing it."""
    if conv_kxk not in KXK_MODES:
        raise MaxQDeployError(f"conv_kxk must be one of {', '.join(KXK_MODES)}, got {conv_kxk!r}")
    report = SparseConversionReport(str(dtype).replace("torch.", ""), backend, conv_kxk, tuple(min_shape))
    for name, module in model.named_modules():
        decision = decide_layer(name, module, dtype, min_shape, conv_kxk)
        if decision is not None:
            report.layers.append(decision)
    return report


# --------------------------------------------------------------------------- replacement modules


class MatmulConv2d(nn.Module):
    """A conv computed as ``linear(rows, W[K, R*S*C])`` over pixels (1x1) or im2col columns (KxK).

    ``weight`` may be dense (tests, CPU) or a semi-structured sparse tensor (CUDA). Output is
    NCHW-shaped in channels-last memory, what the next conv in a channels-last network wants.
    """

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor):
        super().__init__()
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.out_channels = conv.out_channels
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        if self.kernel_size == (1, 1):
            sh, sw = self.stride
            if (sh, sw) != (1, 1):
                x = x[:, :, ::sh, ::sw]
            h, w = x.shape[2:]
            rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view in channels-last
        else:
            (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
            h = (x.shape[2] + 2 * ph - kh) // sh + 1
            w = (x.shape[3] + 2 * pw - kw) // sw + 1
            cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # [N, C*R*S, L], (c, r, s)
            rows = cols.view(n, c, kh * kw, h * w).permute(0, 3, 2, 1).reshape(n * h * w, kh * kw * c)  # (r, s, c)
        y = F.linear(rows, self.weight, self.bias)
        return y.view(n, h, w, self.out_channels).permute(0, 3, 1, 2)


class MatmulLinear(nn.Module):
    """A Linear whose weight may be a semi-structured sparse tensor."""

    def __init__(self, linear: nn.Linear, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def replace_with_matmuls_(model: nn.Module, report: SparseConversionReport, to_weight=lambda m: m) -> nn.Module:
    """Swap every layer the report marks sparse for its matmul form; ``to_weight`` converts W."""
    for decision in report.converted:
        module = model.get_submodule(decision.name)
        matrix = weight_matrix(module).contiguous()
        new = MatmulLinear(module, to_weight(matrix)) if isinstance(module, nn.Linear) else MatmulConv2d(module, to_weight(matrix))
        _replace(model, decision.name, new)
    return model


# --------------------------------------------------------------------------- CUDA


def sparse_backend() -> tuple[str, type]:
    """The semi-structured subclass torch will use: cuSPARSELt where available, else CUTLASS."""
    from torch.sparse import SparseSemiStructuredTensor, SparseSemiStructuredTensorCUSPARSELT, SparseSemiStructuredTensorCUTLASS

    cusparselt = getattr(torch.backends, "cusparselt", None)
    if cusparselt is not None and cusparselt.is_available() and not SparseSemiStructuredTensor._FORCE_CUTLASS:
        return "cusparselt", SparseSemiStructuredTensorCUSPARSELT
    SparseSemiStructuredTensor._FORCE_CUTLASS = True  # what to_sparse_semi_structured reads
    return "cutlass", SparseSemiStructuredTensorCUTLASS


def min_shape_for(subclass: type, dtype: torch.dtype) -> tuple[int, int]:
    constraints = getattr(subclass, "_DTYPE_SHAPE_CONSTRAINTS", {}).get(dtype)
    if constraints is None:
        return FALLBACK_MIN_SHAPE
    return int(constraints.sparse_min_rows), int(constraints.sparse_min_cols)


def check_sparse_device(device: torch.device) -> None:
    """Semi-structured sparsity needs a CUDA GPU of compute capability 8.0 (Ampere) or newer."""
    if device.type != "cuda" or not torch.cuda.is_available():
        raise BackendUnavailableError("2:4 semi-structured sparse matmuls need a CUDA GPU (use --device cuda)")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        raise BackendUnavailableError(
            f"{torch.cuda.get_device_name(device)} is sm{capability[0]}{capability[1]}; 2:4 sparse tensor cores need sm80 or newer"
        )


def sparsify_semi_structured_(model: nn.Module, dtype: torch.dtype = torch.float16, conv_kxk: str = "skip") -> SparseConversionReport:
    """Swap the eligible 2:4 layers of a CUDA ``model`` (already in ``dtype``) in place."""
    from torch.sparse import to_sparse_semi_structured

    device = next(model.parameters()).device
    check_sparse_device(device)
    backend, subclass = sparse_backend()
    report = plan_sparse_layers(model, dtype, min_shape_for(subclass, dtype), conv_kxk, backend)
    replace_with_matmuls_(model, report, to_sparse_semi_structured)
    return report
