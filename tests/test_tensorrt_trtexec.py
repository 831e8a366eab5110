"""The equivalent trtexec command line per TensorRT release (pure, no TensorRT needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maxq_deploy.core.errors import MaxQDeployError
from maxq_deploy.runtimes import tensorrt_api as _trt
from maxq_deploy.core.errors import EngineBuildError
from maxq_deploy.tensorrt.flags import choose_builder_flags, known_flag_names
from maxq_deploy.tensorrt.profiles import ProfileShapes
from maxq_deploy.tensorrt.report import report_path_for
from maxq_deploy.tensorrt.trtexec import trtexec_command, trtexec_for_onnx
from tensorrt_fixtures import make_onnx, no_tensorrt, run_cli

# --------------------------------------------------------------------------------------------- ONNX facts


def test_trtexec_command_10_int8() -> None:
    plan = choose_builder_flags("10.8.0", known_flag_names("10.8"), "int8")
    cmd = trtexec_command("m.onnx", "m.engine", plan, ProfileShapes("input", 1, 8, 64, (3, 224, 224)), 2.0, "cache.bin")
    argv = cmd.argv
    assert argv[:3] == ["trtexec", "--onnx=m.onnx", "--saveEngine=m.engine"]
    for expected in ("--minShapes=input:1x3x224x224", "--optShapes=input:8x3x224x224", "--maxShapes=input:64x3x224x224",
                     "--memPoolSize=workspace:2048M", "--sparsity=enable", "--int8", "--fp16", "--profilingVerbosity=detailed",
                     "--exportLayerInfo=m.engine.layers.json", "--timingCacheFile=cache.bin", "--iterations=1"):
        assert expected in argv
    assert "--sparsity=force" not in argv and "--stronglyTyped" not in argv


def test_trtexec_command_11_and_10_12() -> None:
    profile = ProfileShapes("input", 1, 1, 1, (3, 64, 64))
    argv11 = trtexec_command("a b.onnx", "m.engine", choose_builder_flags("11", known_flag_names("11"), "fp16"), profile).argv
    assert not {"--fp16", "--int8", "--stronglyTyped"} & set(argv11) and "--sparsity=enable" in argv11
    assert "'--onnx=a b.onnx'" in trtexec_command("a b.onnx", "m.engine", choose_builder_flags("11", known_flag_names("11"), "fp16"), profile).command_line
    argv = trtexec_command("m.onnx", "m.engine", choose_builder_flags("10.12", known_flag_names("10.12"), "int8"), profile).argv
    assert "--stronglyTyped" in argv and "--int8" not in argv
    dense = trtexec_command("m.onnx", "m.engine", choose_builder_flags("10.12", known_flag_names("10.12"), "fp32", sparse=False), profile).argv
    assert not any(a.startswith("--sparsity") for a in dense)


def test_trtexec_without_tensorrt_asks_for_the_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_tensorrt) -> None:
    monkeypatch.setattr(_trt, "installed_tensorrt_version", lambda: None)
    onnx_path = make_onnx(tmp_path / "q.onnx", qdq=True)
    with pytest.raises(MaxQDeployError, match="TensorRT is not installed here, so the release the command is for is unknown"):
        trtexec_for_onnx(onnx_path, tmp_path / "q.engine", max_batch=16)
    cmd = trtexec_for_onnx(onnx_path, tmp_path / "q.engine", trt_version="10.8", max_batch=16)
    assert cmd.trt_version == "10.8" and "--int8" in cmd.argv and "--maxShapes=input:16x3x16x16" in cmd.argv
    monkeypatch.setattr(_trt, "installed_tensorrt_version", lambda: "11.4.0.106")  # detected from package metadata
    cmd = trtexec_for_onnx(onnx_path, tmp_path / "q.engine")
    assert cmd.trt_version == "11.4.0.106" and "--int8" not in cmd.argv and "installed TensorRT 11.4.0.106" in cmd.notes[0]
    with pytest.raises(EngineBuildError, match="--trt-version must be 10 or 11"):
        trtexec_for_onnx(onnx_path, tmp_path / "q.engine", trt_version="9")


def test_cli_trtexec_prints_and_writes_nothing(tmp_path: Path, run_cli, no_tensorrt) -> None:
    onnx_path = make_onnx(tmp_path / "m.onnx", batch=2)
    engine = tmp_path / "m.engine"
    result = run_cli("export", "trt", onnx_path, "-o", engine, "--trtexec", "--trt-version", "11", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["trt_version"] == "11" and "--minShapes=input:2x3x16x16" in data["argv"] and "--fp16" not in data["argv"]
    plain = run_cli("export", "trt", onnx_path, "-o", engine, "--trtexec", "--trt-version", "10", "--dense")
    assert plain.exit_code == 0 and plain.stdout.startswith("trtexec --onnx=") and "--sparsity" not in plain.stdout
    assert not engine.exists() and not report_path_for(engine).exists()
    bad = run_cli("export", "trt", onnx_path, "-o", engine, "--trtexec", "--max-batch", "8")
    assert bad.exit_code == 2 and "fixed batch of 2" in bad.stderr and "Traceback" not in bad.output


def test_trtexec_layer_info_run_has_an_execution_context() -> None:
    from maxq_deploy.tensorrt.flags import choose_builder_flags, known_flag_names
    from maxq_deploy.tensorrt.profiles import ProfileShapes
    from maxq_deploy.tensorrt.trtexec import trtexec_command

    for version in ("10.8", "11"):
        cmd = trtexec_command("m.onnx", "m.engine", choose_builder_flags(version, known_flag_names(version), "int8"),
                              ProfileShapes("input", 1, 8, 32, (3, 16, 16)))
        assert "--skipInference" not in cmd.argv
        assert {"--iterations=1", "--warmUp=0", "--duration=0", "--exportLayerInfo=m.engine.layers.json"} <= set(cmd.argv)
        assert any("no --skipInference" in n for n in cmd.notes)
