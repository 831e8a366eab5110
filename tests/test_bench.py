"""bench, the package: its re-exported API, the bench command end to end (CLI, errors, backends side by side), and
the sparse-torch plans bench runs on CUDA. Each module has its own file: tests/test_bench_<module>.py."""

from __future__ import annotations

import copy
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from bench_fixtures import tiny_onnx  # noqa: F401  (a pytest fixture)
from maxq_deploy import bench
from maxq_deploy.core.errors import MaxQDeployError

# --------------------------------------------------------------------------- the package


def test_all_lists_exactly_the_reexported_names() -> None:
    """``bench.__all__`` is what the package re-exports: no name missing, none listed that it lacks."""
    public = {name for name, value in vars(bench).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"}
    assert set(bench.__all__) == public
    assert len(bench.__all__) == len(set(bench.__all__))


@pytest.mark.parametrize("module", ["chart", "command", "environment", "schema", "stats", "timing"])
def test_reexports_are_the_modules_own_objects(module: str) -> None:
    """A name re-exported from a module is that module's object (no copy, no shadowing wrapper)."""
    import importlib

    mod = importlib.import_module(f"maxq_deploy.bench.{module}")
    own = {name for name, value in vars(mod).items() if getattr(value, "__module__", mod.__name__) == mod.__name__}
    shared = [name for name in bench.__all__ if name in own]
    assert shared  # every module contributes to the package API
    for name in shared:
        assert getattr(bench, name) is getattr(mod, name), name


# --------------------------------------------------------------------------- CLI


def test_cli_end_to_end(cli, tiny_onnx, tmp_path: Path) -> None:
    a, b = tiny_onnx
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    res = cli("bench", a, b, "--batch-sizes", "1,2", "--iters", "3", "--warmup", "1", "--threads", "1",
              "--json", out, "--csv", tmp_path / "r.csv", "--plot", plot)
    assert res.exit_code == 0, res.stderr
    assert "vs first" in res.stdout and "baseline" in res.stdout and "b.onnx" in res.stdout
    assert "environment:" in res.stdout and "threads 1" in res.stdout
    assert out.is_file() and (tmp_path / "r.csv").is_file() and plot.is_file()
    assert len(json.loads(out.read_text())["results"]) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.onnx"], "not found"),
        (["{a}", "--backend", "foo"], "unknown backend"),
        (["{a}", "--batch-sizes", "1,x"], "batch sizes"),
        (["{a}", "--iters", "3", "--seconds", "1"], "either iters or seconds"),
        (["{a}", "--json", "{tmp}/no/such/dir/r.json"], "does not exist"),
        (["{a}", "--sparse"], "--sparse"),
        (["{engine}", "--device", "cuda"], "TensorRT"),
        (["{a}", "--backend", "tensorrt", "--device", "cuda"], "tensorrt"),
        (["{a}", "--device", "cuda", "--backend", "torch"], "torch"),
    ],
)
def test_cli_errors_are_one_line(cli, tiny_onnx, tmp_path: Path, args: list[str], message: str) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    filled = [s.format(a=tiny_onnx[0], tmp=tmp_path, engine=engine) for s in args]
    res = cli("bench", *filled)
    assert res.exit_code != 0 and res.exception is None
    assert "Traceback" not in res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error:"), res.stderr
    assert message.lower() in res.stderr.lower()
    assert not (tmp_path / "r.json").exists()


# --------------------------------------------------------------------------- sparse torch (plans run anywhere)


def test_sparse_plan_resnet18(store) -> None:
    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.runtimes.semi_structured import plan_sparse_layers

    model = load_torch_model(store.folded(arch="resnet18")).module
    plan = plan_sparse_layers(model, torch.float16, min_shape=(16, 16))
    by_name = {d.name: d for d in plan.layers}
    assert not by_name["conv1"].sparse and by_name["conv1"].category == "kxk"  # 7x7 stem
    assert not by_name["fc"].sparse and by_name["fc"].category == "not-2:4"  # dense classifier
    assert by_name["layer2.0.downsample"].sparse and by_name["layer2.0.downsample"].matrix == [128, 64]
    assert by_name["layer1.0.convbn1"].category == "kxk"
    assert "3 of 21 layers run 2:4" in plan.summary()
    im2col = plan_sparse_layers(model, torch.float16, min_shape=(16, 16), conv_kxk="im2col")
    assert len(im2col.converted) == 19  # every MaxQ sparse layer
    assert {d.name: d.category for d in im2col.skipped} == {"conv1": "not-2:4", "fc": "not-2:4"}  # 3 input channels; dense fc
    assert plan_sparse_layers(model, torch.float16, min_shape=(256, 256)).reasons()["shape"] == 2  # 128x64, 256x128; 512x256 fits
    as_fp32 = plan_sparse_layers(model, torch.float32)
    assert not as_fp32.converted and set(as_fp32.reasons()) == {"dtype"}
    json.dumps(plan.to_dict())


def test_sparse_plan_skips_depthwise(store) -> None:
    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.runtimes.semi_structured import plan_sparse_layers

    model = load_torch_model(store.folded(arch="mobilenet_v1")).module
    plan = plan_sparse_layers(model, torch.bfloat16, min_shape=(16, 16))
    assert plan.reasons().get("grouped") == 13
    assert all(d.op == "conv1x1" for d in plan.converted) and plan.converted


def test_matmul_forms_reproduce_convs(store) -> None:
    """The layer swap is exact with dense weights, so only the sparse kernel itself needs a GPU."""
    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.runtimes.semi_structured import plan_sparse_layers, replace_with_matmuls_

    model = load_torch_model(store.folded(arch="resnet18")).module
    plan = plan_sparse_layers(model, torch.float16, min_shape=(16, 16), conv_kxk="im2col")
    swapped = replace_with_matmuls_(copy.deepcopy(model), plan)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
        for fmt in (torch.contiguous_format, torch.channels_last):
            out = swapped(x.contiguous(memory_format=fmt))
            assert torch.allclose(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_sparse_runner_needs_cuda() -> None:
    from maxq_deploy.runtimes.semi_structured import check_sparse_device

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(MaxQDeployError, match="CUDA"):
        check_sparse_device(torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_sparse_runner_on_gpu(store) -> None:
    from maxq_deploy.load.torch_model import load_torch_model
    from maxq_deploy.runtimes.torch_sparse_runner import SparseTorchRunner

    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("2:4 sparse tensor cores need sm80+")
    module = load_torch_model(store.folded(arch="resnet50", num_classes=1000)).module
    x = np.random.default_rng(0).standard_normal((8, 3, 224, 224), dtype=np.float32)
    dense = SparseTorchRunner(copy.deepcopy(module), sparse=False)
    sparse = SparseTorchRunner(module, sparse=True)
    assert sparse.report is not None and len(sparse.report.converted) > 0
    a, b = dense.run(x), sparse.run(x)
    assert np.abs(a - b).max() <= 2e-2 * np.abs(a).max()
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.75
    dense.close(), sparse.close()


def test_cli_checkpoint_on_missing_cuda_is_one_line(cli, store) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    res = cli("bench", store.folded(arch="resnet18"), "--device", "cuda", "--iters", "1")
    assert res.exit_code == 2 and res.exception is None
    assert res.stderr.strip().startswith("error:") and "CUDA is not available" in res.stderr


# --------------------------------------------------------------------------- runtimes side by side


def test_backend_list_measures_every_pair_in_one_run(cli, tiny_onnx, tmp_path: Path) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is optional: pip install 'maxq-deploy[openvino]'")
    a, _ = tiny_onnx
    out = tmp_path / "pairs.json"
    res = cli("bench", a, "--backend", "onnxruntime,openvino:f32", "--batch-sizes", "1,2", "--iters", "2", "--warmup", "1",
              "--threads", "1", "--json", out)
    assert res.exit_code == 0, res.stderr
    data = json.loads(out.read_text())
    models = data["models"]
    assert [m["label"] for m in models] == ["a.onnx [onnxruntime]", "a.onnx [openvino:f32]"]
    assert [m["backend"] for m in models] == ["onnxruntime", "openvino:fp32"]  # the precision it really ran in
    assert models[1]["options"]["inference_precision"] == "fp32" and models[1]["precision"] == "fp32"
    assert models[0]["precision"] is None  # a graph without maxq_deploy metadata: not known, not guessed
    assert len(data["results"]) == 4 and {r["model_index"] for r in data["results"]} == {0, 1}
    first = [r for r in data["results"] if r["model_index"] == 0]
    assert all(r["speedup_vs_first"] == 1.0 for r in first)  # ratios against the first row


def test_backend_list_that_runs_none_of_a_model_is_one_line(cli, tiny_onnx, store) -> None:
    res = cli("bench", tiny_onnx[0], store.folded(arch="resnet18"), "--backend", "onnxruntime,openvino", "--iters", "1")
    assert res.exit_code == 2 and res.stderr.startswith("error: none of the backends onnxruntime, openvino runs")
    assert res.stderr.count("\n") == 1


def test_cli_seconds_under_a_nanosecond_times_each_model_once(cli, tiny_onnx, tmp_path: Path) -> None:
    """``--seconds 1e-10`` was a 0 ns budget: nothing ran and the run ended in an internal error."""
    out = tmp_path / "r.json"
    res = cli("bench", tiny_onnx[0], "--seconds", "1e-10", "--batch-sizes", "1,2", "--warmup", "0", "--json", out)
    assert res.exit_code == 0, res.stderr
    assert [r["iterations"] for r in json.loads(out.read_text())["results"]] == [1, 1]
