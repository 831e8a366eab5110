"""A faithful re-implementation of MaxQ's training layers, written from the format description.

It exists to make real checkpoints in the upstream layout (tests, ``demo``) and to train small
MaxQ networks; the deploy path never depends on it.
"""

from maxq_deploy.reference.layers import LAYER_TYPES, ReferenceMaxQConvBN, compute_mask, preserve_rate
from maxq_deploy.reference.checkpoints import build_reference_model, make_checkpoint, save_checkpoint, set_preserve_rate

__all__ = [
    "LAYER_TYPES",
    "ReferenceMaxQConvBN",
    "build_reference_model",
    "compute_mask",
    "make_checkpoint",
    "preserve_rate",
    "save_checkpoint",
    "set_preserve_rate",
]
