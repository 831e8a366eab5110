"""Contract tests: every TensorRT name the code uses exists in every supported real release.

The API surfaces in tests/data/trt_api/ were recorded from the real ``tensorrt-cu12/cu13-bindings``
wheels by ``tools/trt_api_surface.py`` (imported with stub NVIDIA libraries, no GPU). The names the
code uses are declared in :mod:`maxq_deploy.tensorrt.api_usage`; these tests check the
declaration against the code (every ``trt.X`` in the source, every member the code reads on the
fake during a build) and against each release, per code path. The fake enforces each release's
recorded signatures (arity, keyword names, argument kinds), and every declared method is called
through it per recorded release: build (fresh, refused timing cache, pinned), parse failure,
``verify`` re-inspection and the runner's whole path (``engine_from_file`` -> shapes -> ``run``). Where a C compiler is present, the
newest cached bindings wheel (downloaded once into .cache/trt-wheels/ when PyPI is reachable) is
imported for real.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from maxq_deploy.runtimes import tensorrt_api as _trt
from maxq_deploy.tensorrt import api_usage
from maxq_deploy.tensorrt.flags import GRAPH_PRECISIONS, choose_builder_flags, known_flag_names

from trt_fake import fake_tensorrt, load_surface, members_of, recorded_versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VERSIONS = recorded_versions()


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def _has(names: dict, dotted: str) -> bool:
    """Whether ``Name`` / ``Class.member`` / ``Enum.MEMBER`` exists in a surface's names."""
    head, _, member = dotted.partition(".")
    if head == "__version__":
        return True  # every version has it (the recorded surface's "version")
    entry = names.get(head)
    if entry is None:
        return False
    if not member:
        return True
    if entry["kind"] == "enum":
        return member in entry["members"]
    methods, props = members_of(names, head)
    return member in methods or member in props


def _flag_names(names: dict) -> set[str]:
    return set(names["BuilderFlag"]["members"]) | set(names["NetworkDefinitionCreationFlag"]["members"])


def test_surfaces_cover_the_supported_versions() -> None:
    keys = [_key(v) for v in VERSIONS]
    assert len(keys) >= 4
    assert any(k[0] == 10 and k[1] < 12 for k in keys), "a 10.x before 10.12"
    assert any(k[0] == 10 and k[1] >= 12 for k in keys), "a 10.x from 10.12"
    assert any(k[:2] == (11, 0) for k in keys), "11.0"
    assert max(keys)[0] == 11 and max(keys) >= (11, 4), "the newest 11.x recorded"
    for version in VERSIONS:
        surface = load_surface(version)
        assert surface["version"].startswith(version) and len(surface["names"]) > 150
        assert surface["wheel"].startswith("tensorrt_cu1") and len(surface["wheel_sha256"]) == 64


@pytest.mark.parametrize("version", VERSIONS)
def test_common_names_exist_in_every_release(version: str) -> None:
    names = load_surface(version)["names"]
    missing = [n for n in api_usage.COMMON if not _has(names, n)]
    assert missing == [], f"TensorRT {version} lacks {missing}"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", GRAPH_PRECISIONS)
@pytest.mark.parametrize("sparse", [True, False])
def test_flag_plans_use_only_flags_the_release_has(version: str, precision: str, sparse: bool) -> None:
    names = load_surface(version)["names"]
    real = _flag_names(names)
    plan = choose_builder_flags(version, real, precision, sparse=sparse)
    assert set(plan.builder_flags) <= set(names["BuilderFlag"]["members"])
    assert set(plan.network_flags) <= set(names["NetworkDefinitionCreationFlag"]["members"])
    weak = set(plan.builder_flags) & {"FP16", "INT8"}
    if weak:  # the weak-typing path: only before 10.12, and only with names that exist there
        assert _key(version) < (10, 12) and all(_has(names, f"BuilderFlag.{f}") for f in weak)
        assert {f"BuilderFlag.{f}" for f in weak} <= set(api_usage.WEAK_TYPING)
    if plan.network_flags:
        assert _key(version)[0] == 10 and _key(version) >= (10, 12)
        assert {f"NetworkDefinitionCreationFlag.{f}" for f in plan.network_flags} <= set(api_usage.STRONG_TYPING_10)
    if _key(version)[0] >= 11:
        assert plan.strongly_typed and not weak and plan.network_flags == ()


@pytest.mark.parametrize("version", VERSIONS)
def test_planning_tables_match_the_real_flags(version: str) -> None:
    """flags.known_flag_names (for --trtexec without TensorRT) offers only flags the release has."""
    real = _flag_names(load_surface(version)["names"])
    assert known_flag_names(version) - real == set(), f"known_flag_names({version}) offers {known_flag_names(version) - real}"


def _trt_attribute_chains(path: Path) -> set[str]:
    """``trt.X`` and ``trt.X.Y`` read anywhere in a source file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            chain, cur = [node.attr], node.value
            while isinstance(cur, ast.Attribute):
                chain.insert(0, cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id == "trt":
                found.add(".".join(chain[:2]))
    return found


def test_every_trt_name_in_the_source_is_declared() -> None:
    declared = set(api_usage.COMMON) | set(api_usage.WEAK_TYPING) | set(api_usage.STRONG_TYPING_10)
    used: set[str] = set()
    for path in [*(REPO / "maxq_deploy").rglob("*.py"), *(REPO / "cli").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]:
        used |= _trt_attribute_chains(path)
    undeclared = sorted(n for n in used if n not in declared and not any(d.startswith(n + ".") for d in declared))
    assert used and undeclared == []


@pytest.mark.parametrize("version", ["10.3.0", "10.13.3", "11.4.0"])
def test_members_read_during_a_build_are_declared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    from test_tensorrt_qdq_report import inspector
    from tensorrt_fixtures import make_onnx

    from maxq_deploy.tensorrt.build import build_engine

    trt = fake_tensorrt(version, inspector(version))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(_trt, "require_cuda_gpu", lambda *a, **k: None)
    monkeypatch.setattr(_trt, "_SHARED", [])
    onnx_path = make_onnx(tmp_path / "m.onnx", qdq=True)
    build_engine(onnx_path, tmp_path / "m.engine", timing_cache=tmp_path / "t.cache")
    assert trt.used, "the fake recorded nothing"
    assert trt.used - set(api_usage.COMMON) == set()


def test_runner_dtypes_per_release() -> None:
    """DataType names the runner maps: which releases have which (a missing one is never produced there)."""
    for version in VERSIONS:
        members = set(load_surface(version)["names"]["DataType"]["members"])
        assert {"FLOAT", "HALF", "INT8", "INT32", "BOOL"} <= members, version


# ------------------------------------------------------------------ the real bindings


def _tool():
    spec = importlib.util.spec_from_file_location("trt_api_surface", REPO / "tools" / "trt_api_surface.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


REAL_CHECK = r'''
import sys
import tensorrt_bindings
sys.modules["tensorrt"] = tensorrt_bindings
from maxq_deploy.core.errors import BackendUnavailableError
from maxq_deploy.runtimes import tensorrt_api as _trt
from maxq_deploy.tensorrt import api_usage
from maxq_deploy.tensorrt.flags import choose_builder_flags
trt = _trt.import_tensorrt()
flags = _trt.available_flag_names(trt)
plan = choose_builder_flags(trt.__version__, flags, "int8")
for name in plan.builder_flags:
    getattr(trt.BuilderFlag, name)
logger = _trt.shared_logger(trt)
assert _trt.shared_logger(trt) is logger and isinstance(logger, trt.ILogger)
logger.log(trt.ILogger.Severity.WARNING, "w")
assert logger.warnings() == ["w"]
try:
    _trt.make_builder(trt, logger)
except BackendUnavailableError as exc:
    print("builder:", exc)
missing = []
for dotted in api_usage.COMMON:
    obj = trt
    for part in dotted.split("."):
        if part == "__init__":
            continue
        if not hasattr(obj, part):
            missing.append(dotted)
            break
        obj = getattr(obj, part)
print("version:", trt.__version__, "plan:", ",".join(plan.builder_flags), "missing:", missing)
'''


def test_real_bindings_of_the_newest_cached_version_import() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler to build the stub NVIDIA libraries the real bindings need")
    if shutil.which("readelf") is None or shutil.which("nm") is None:
        pytest.skip("readelf/nm (binutils) not found: cannot read which NVIDIA symbols the bindings need")
    tool = _tool()
    wheel = tool.newest_cached_wheel()
    if wheel is None:
        dist, version = tool.DEFAULT_VERSIONS[-1]
        try:
            wheel = tool.wheel_for(dist, version)
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"no bindings wheel cached under {tool.DEFAULT_CACHE} and it cannot be downloaded ({exc})")
    proc = tool.check_import(wheel, REAL_CHECK)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "builder: TensorRT could not start a builder" in out  # the stubs return null: a clear project error
    assert "missing: []" in out, out


# ------------------------------------------------------------------ calls, not names: every entry point per release


@pytest.fixture
def cuda_on_cpu(monkeypatch: pytest.MonkeyPatch):
    """torch's CUDA stream/device calls as no-ops, so the runner's own code runs on CPU tensors (addresses are real)."""
    import contextlib

    import torch

    class Stream:
        cuda_stream = 0

        def __init__(self, *args, **kwargs) -> None:
            pass

        def wait_stream(self, other) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "device", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "stream", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a, **k: Stream())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None, raising=False)
    monkeypatch.setattr(_trt, "require_cuda_gpu", lambda *a, **k: None)
    monkeypatch.setattr(_trt, "_SHARED", [])
    return torch


def _run_runner(tmp_path: Path, torch) -> tuple:
    import numpy as np

    from maxq_deploy.runtimes.tensorrt_runner import TensorRTRunner

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"ENGINE-BYTES")
    runner = TensorRTRunner(engine, device="cuda")
    runner._device = torch.device("cpu")  # the fake engine reads and writes host memory at the addresses it is given
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    return runner, x, runner.run(x), x.reshape(4, -1).mean(axis=1, keepdims=True) * np.arange(1, 11, dtype=np.float32)


@pytest.mark.parametrize("version", VERSIONS)
def test_runner_path_is_driven_through_each_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cuda_on_cpu,
                                                    version: str) -> None:
    """engine_from_file -> I/O names, profile and output shapes -> run, with the recorded signatures enforced."""
    import numpy as np

    from maxq_deploy.core.errors import EngineRunError

    trt = fake_tensorrt(version, {"Layers": [], "Bindings": []})
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    runner, x, out, expected = _run_runner(tmp_path, cuda_on_cpu)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert runner.info.batch_range == (1, 32) and runner.info.num_classes == 10 and runner.info.input_shape == (3, 16, 16)
    assert runner.info.backend_version == version and runner.inputs == ["input"] and runner.outputs == ["output"]
    with pytest.raises(EngineRunError, match="outside the engine's profile"):
        runner.run(np.zeros((64, 3, 16, 16), np.float32))
    runner_calls = {"Runtime.__init__", "Runtime.deserialize_cuda_engine", "ICudaEngine.create_execution_context",
                    "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode", "ICudaEngine.get_tensor_profile_shape",
                    "ICudaEngine.get_tensor_shape", "ICudaEngine.get_tensor_dtype", "IExecutionContext.set_input_shape",
                    "IExecutionContext.set_tensor_address", "IExecutionContext.get_tensor_shape",
                    "IExecutionContext.execute_async_v3"}
    assert runner_calls <= trt.called, sorted(runner_calls - trt.called)
    assert trt.used - set(api_usage.COMMON) == set(), "the runner reads names api_usage does not list"


def _every_code_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torch, version: str):
    """Build (ok, with a timing cache of another GPU, pinned), parse failure, verify re-inspection, run: one fake."""
    from test_tensorrt_qdq_report import inspector
    from tensorrt_fixtures import make_onnx
    from trt_fake import REFUSED_CACHE

    from maxq_deploy.core.errors import EngineBuildError
    from maxq_deploy.tensorrt.build import build_engine
    from maxq_deploy.tensorrt.verify import load_report_for_engine

    trt = fake_tensorrt(version, inspector(version))
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    onnx_path = make_onnx(tmp_path / "m.onnx", qdq=True)
    cache = tmp_path / "t.cache"
    cache.write_bytes(REFUSED_CACHE)
    build_engine(onnx_path, tmp_path / "m.engine", timing_cache=cache)
    build_engine(onnx_path, tmp_path / "p.engine", timing_cache=tmp_path / "t.unknown-GPU.trt{}.cache".format(version),
                 pin_timing_cache=True)
    load_report_for_engine(tmp_path / "m.engine")
    _run_runner(tmp_path, torch)
    broken = fake_tensorrt(version, inspector(version), parse_ok=False)
    broken.called, broken.used = trt.called, trt.used  # one record of what was called
    monkeypatch.setitem(sys.modules, "tensorrt", broken)
    monkeypatch.setattr(_trt, "_SHARED", [])
    with pytest.raises(EngineBuildError, match="cannot parse"):
        build_engine(onnx_path, tmp_path / "x.engine")
    return trt


def _declared_members() -> set[str]:
    """The ``Class.member`` names of api_usage that are methods or properties (not enums, classes or module names)."""
    names = load_surface(VERSIONS[-1])["names"]
    out = set()
    for dotted in api_usage.COMMON:
        head, _, member = dotted.partition(".")
        if member and names.get(head, {}).get("kind") == "class" and head != "ILogger":
            out.add(dotted)
    return out


@pytest.mark.parametrize("version", VERSIONS)
def test_every_declared_entry_point_is_called_per_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cuda_on_cpu,
                                                         version: str) -> None:
    """Every method/property api_usage declares is called (or read/set) with arguments its recorded signature takes."""
    trt = _every_code_path(tmp_path, monkeypatch, cuda_on_cpu, version)
    touched = trt.called | trt.used
    missing = sorted(_declared_members() - touched - {f"{c}.__init__" for c in ("Builder", "Runtime", "OnnxParser")}
                     - {"OnnxParser.__init__"})
    assert missing == [], f"declared but never exercised on {version}: {missing}"
    assert {"Builder.__init__", "Runtime.__init__", "OnnxParser.__init__"} <= trt.called
    assert trt.used - set(api_usage.COMMON) == set()


def test_the_fake_rejects_calls_the_real_signatures_reject() -> None:
    from trt_fake import SignatureError

    trt = fake_tensorrt("11.4.0", {"Layers": []})
    config = trt.Builder(object.__new__(type("L", (), {"log": lambda *a: None}))).create_builder_config()
    with pytest.raises(SignatureError, match="set_flag"):
        config.set_flag("SPARSE_WEIGHTS")  # an enum member is needed, not its name
    with pytest.raises(SignatureError, match="set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE)  # arity
    with pytest.raises(SignatureError, match="set_timing_cache"):
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False, extra=1)  # unknown keyword
    with pytest.raises(SignatureError, match="create_timing_cache"):
        config.create_timing_cache("not bytes")
    config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    assert "IBuilderConfig.set_flag" in trt.called
