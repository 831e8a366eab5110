"""Quantize the input of global average pooling, so the network's last sparse conv ends in INT8.

Why: in a ResNet the last conv feeds Add -> ReLU -> GlobalAveragePool. Without a
QuantizeLinear on that path TensorRT gives the conv a float epilogue (an ``i8f32`` kernel, seen
in NVIDIA's own Q/DQ ResNet engines), and sparse INT8 kernels want INT8 in AND out, so the widest
layer of the network is likely to stay dense. NVIDIA's "quantized GAP" ResNet puts a quantizer
on the pooling input; pytorch-quantization's ``QuantAdaptiveAvgPool2d`` does exactly that and is
calibrated with every other activation quantizer. Ranges are symmetric per tensor like the other
inputs. Quantized checkpoints made before this (no range for the pool quantizer) load with that
quantizer disabled, so they still export the graph they were made with.
"""

from __future__ import annotations

from torch import nn

#: Name suffix of the pool quantizers this module adds (``avgpool._input_quantizer``).
POOL_QUANTIZER_SUFFIX = "._input_quantizer"


def quant_pools(model: nn.Module, quant_desc_input) -> list[str]:
    """Swap every ``nn.AdaptiveAvgPool2d`` for a ``QuantAdaptiveAvgPool2d``; returns the swapped names."""
    from pytorch_quantization import nn as quant_nn

    swapped = []
    for name, module in list(model.named_modules()):
        if type(module) is nn.AdaptiveAvgPool2d:
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            quant = quant_nn.QuantAdaptiveAvgPool2d(module.output_size, quant_desc_input=quant_desc_input)
            setattr(parent, name.rpartition(".")[2], quant)
            swapped.append(name)
    return swapped


def is_pool_quantizer(name: str) -> bool:
    """``avgpool._input_quantizer`` and the like: the quantizer of a pooling input."""
    owner = name[: -len(POOL_QUANTIZER_SUFFIX)] if name.endswith(POOL_QUANTIZER_SUFFIX) else ""
    return owner.rpartition(".")[2].endswith("pool")
