"""maxq_deploy.reference (the package): its public names, and a MaxQ training state made with them and read back by the loader."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

import maxq_deploy.reference as reference
from maxq_deploy.core.sparsity import NMPattern, nonzeros_per_group
from maxq_deploy.load.maxq_checkpoint import load_checkpoint
from maxq_deploy.reference import checkpoints, layers


def test_public_names_are_the_modules_own():
    assert reference.__all__ == sorted(reference.__all__)
    for name in reference.__all__:
        home = layers if hasattr(layers, name) else checkpoints
        assert getattr(reference, name) is getattr(home, name), name
    assert set(reference.__all__) == {"LAYER_TYPES", "ReferenceMaxQConvBN", "build_reference_model", "compute_mask",
                                      "make_checkpoint", "preserve_rate", "save_checkpoint", "set_preserve_rate"}


def test_importing_the_package_leaves_out_the_training_half():
    """Fixtures import the package; the digits/Fashion-MNIST training (and scikit-learn) load only when used."""
    code = ("import json, sys\nimport maxq_deploy.reference\n"
            "print(json.dumps(sorted(m for m in ('maxq_deploy.reference.train', 'maxq_deploy.reference.fashion', 'sklearn') "
            "if m in sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.slow  # alone: masks for a whole MobileNet take a few seconds on 2 busy cores
def test_a_mid_schedule_training_state_reads_back_as_written(tmp_path):
    """An epoch halfway through a linear schedule: half the groups dense, the rest 2:4, as the loader reports."""
    rate = reference.preserve_rate(5, 0, 10, "linear")
    torch.manual_seed(0)
    model = reference.build_reference_model("mobilenet_v1", 10, "2:4", "HardMaxQConv2DBNV2Pro")
    reference.set_preserve_rate(model, rate)
    path = tmp_path / "checkpoint.mobilenet_v1.pth.tar"
    reference.save_checkpoint(reference.make_checkpoint("mobilenet_v1", model=model, epoch=5, prefix="module."), path)

    ckpt = load_checkpoint(path)
    assert (ckpt.arch, ckpt.nm, ckpt.epoch, ckpt.num_classes) == ("mobilenet_v1", NMPattern(2, 4), 5, 10)
    modules = dict(model.named_modules())
    assert len(ckpt.layers) == 13
    for layer in ckpt.layers:
        groups = math.prod(layer.shape) // 4
        assert (layer.groups, layer.dense_groups, layer.mask_kind) == (groups, math.floor(rate * groups), "hard")
        counts = nonzeros_per_group(ckpt.state_dict[f"{layer.name}.mask"], 4)
        assert bool(((counts == 2) | (counts == 4)).all())
    for layer in (ckpt.layers[0], ckpt.layers[-1]):  # the prefix was stripped from the right tensors
        weight = modules[layer.name].conv.weight
        assert torch.equal(ckpt.state_dict[f"{layer.name}.conv.weight"], weight)
        assert torch.equal(ckpt.state_dict[f"{layer.name}.mask"], reference.compute_mask(weight, 2, 4, "HardMaxQConv2DBNV2Pro", rate))
