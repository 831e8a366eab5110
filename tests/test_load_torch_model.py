"""Any torch artifact as a runnable eval-mode module (``load.torch_model``), each compared with its source."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from maxq_deploy.core.errors import InputFileError
from maxq_deploy.load.maxq_checkpoint import torch_load_safe
from maxq_deploy.load.torch_model import LoadedModel, load_torch_model
from quantize_fixtures import SIZE, _quantized_dict

FP32_RTOL = 1e-5  # folding is exact up to float32 rounding (as in test_fold)


@torch.no_grad()
def _run(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


@pytest.fixture(scope="module")
def quantized(store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("quantized") / "int8.pt"
    torch.save(_quantized_dict(store.folded()), path)
    return path


@pytest.mark.slow  # builds and runs ResNet-sized networks (and their fixture files when run alone)
def test_a_maxq_training_checkpoint_runs_as_the_network_that_wrote_it(store, probe, reference_net) -> None:
    spec = store.spec()
    loaded = load_torch_model(store.checkpoint(spec))
    assert isinstance(loaded, LoadedModel)
    assert (loaded.kind, loaded.arch, loaded.num_classes, loaded.nm) == ("maxq-checkpoint", "resnet18", 10, "2:4")
    assert not loaded.module.training and "epoch" in loaded.meta
    torch.testing.assert_close(_run(loaded.module, probe), _run(reference_net(loaded.path, spec), probe), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_a_folded_checkpoint_runs_as_its_source_network(store, probe, reference_net, rel_err) -> None:
    spec = store.spec()
    loaded = load_torch_model(store.folded(spec))
    assert (loaded.kind, loaded.arch, loaded.num_classes, loaded.nm) == ("folded-checkpoint", "resnet18", 10, "2:4")
    assert not loaded.module.training and loaded.meta["input_size"] == 224
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.module.modules())  # BatchNorm folded away
    assert rel_err(_run(loaded.module, probe), _run(reference_net(store.checkpoint(spec), spec), probe)) <= FP32_RTOL


@pytest.mark.slow
def test_a_quantized_checkpoint_runs_as_its_fake_quantized_network(store, quantized) -> None:
    """pytorch-quantization's network where installed, checked against the plain-torch constant-scale one (``frozen``)."""
    from maxq_deploy.quantize.artifact import quantized_from_dict
    from maxq_deploy.quantize.frozen import frozen_from_checkpoint

    loaded = load_torch_model(quantized)
    assert (loaded.kind, loaded.arch, loaded.num_classes, loaded.nm) == ("quantized-checkpoint", "resnet18", 10, "2:4")
    assert not loaded.module.training
    x = torch.randn(4, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    out = _run(loaded.module, x)
    frozen = frozen_from_checkpoint(quantized_from_dict(torch_load_safe(quantized), quantized)).eval()
    torch.testing.assert_close(out, _run(frozen, x), rtol=0, atol=1e-4 * float(out.abs().max()))
    folded = _run(load_torch_model(store.folded()).module, x)
    assert not torch.equal(out, folded)  # quantized...
    assert float((out - folded).abs().max() / folded.abs().max()) < 0.1  # ...but close to the network it came from


@pytest.mark.slow
def test_an_object_already_read_is_not_read_again(store, probe, tmp_path: Path) -> None:
    path = store.folded()
    obj = torch_load_safe(path)
    loaded = load_torch_model(tmp_path / "gone.pt", loaded=obj)  # the caller read the file; this path no longer exists
    assert loaded.path == tmp_path / "gone.pt" and loaded.kind == "folded-checkpoint"
    torch.testing.assert_close(_run(loaded.module, probe), _run(load_torch_model(path).module, probe), rtol=0, atol=0)


@pytest.mark.slow
def test_a_checkpoint_without_its_architecture_takes_the_callers(store, probe, reference_net) -> None:
    spec = store.spec(arch="mobilenet_v1", layout="bare")
    loaded = load_torch_model(store.checkpoint(spec), arch="mobilenet_v1", nm="2:4")
    assert (loaded.kind, loaded.arch, loaded.nm) == ("maxq-checkpoint", "mobilenet_v1", "2:4")
    torch.testing.assert_close(_run(loaded.module, probe), _run(reference_net(loaded.path, spec), probe), rtol=0, atol=1e-5)


def test_an_unknown_or_newer_tool_artifact_is_refused_before_building_anything(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"format": "maxq-deploy/pruned", "format_version": 1}, path)
    with pytest.raises(InputFileError, match="artifact format 'maxq-deploy/pruned' is not a model this version"):
        load_torch_model(path)
    torch.save({"format": "maxq-deploy/folded", "format_version": 7}, path)
    with pytest.raises(InputFileError, match="folded checkpoint format version 7 is newer .* upgrade maxq-deploy"):
        load_torch_model(path)


class _CreatesFile:
    """Unpickled with code, this calls ``open(marker, "w")``: the file appears."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_with_code_is_refused_and_its_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-the-pickle"
    path = tmp_path / "evil.pt"
    torch.save({"format": "maxq-deploy/folded", "format_version": 1, "hook": _CreatesFile(marker)}, path)
    with pytest.raises(InputFileError, match=r"refused to load .*evil\.pt: it references Python callables .* could run code"):
        load_torch_model(path)
    assert not marker.exists()
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps({"hook": _CreatesFile(marker)}, protocol=2))
    with pytest.raises(InputFileError, match="refused to load"):
        load_torch_model(raw)
    assert not marker.exists()
    pickle.loads(raw.read_bytes())["hook"].close()  # the trap is real: an unrestricted unpickler creates the file
    assert marker.exists()
