"""OpenVINO runner, backend specs/lists, and ``eval``/``bench --backend openvino`` (skipped without openvino)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from maxq_deploy.core.errors import BackendUnavailableError, DataError, InputFileError, OptionError
from maxq_deploy.runtimes.backends import BackendSpec, backend_label, backend_pairs, parse_backend, parse_backend_list
from maxq_deploy.runtimes.openvino import shared_core

SIZE = 32


def batch(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SIZE, SIZE), dtype=np.float32)


# --- backend specs and lists (no OpenVINO needed) ----------------------------------------------


def test_precision_refused_by_other_backends(tmp_path: Path) -> None:
    from maxq_deploy.runtimes.select import open_runner

    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(OptionError, match="OpenVINO option"):
        open_runner(model, backend="onnxruntime", precision="f32")


def test_missing_openvino_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from maxq_deploy.runtimes.select import open_runner

    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'maxq-deploy\[openvino\]'"):
        open_runner(model, backend="openvino")


def test_importing_the_runtimes_does_not_import_openvino() -> None:
    import subprocess

    code = "import sys, maxq_deploy.runtimes, maxq_deploy.runtimes.openvino, maxq_deploy.runtimes.backends; print('openvino' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


# --- the runner (needs openvino) ---------------------------------------------------------------

try:
    import openvino as ov
except ImportError:  # the tests above still run; these skip
    ov = None
needs_openvino = pytest.mark.skipif(ov is None, reason="OpenVINO is optional: pip install 'maxq-deploy[openvino]'")


@pytest.fixture(scope="module")
def fp32_onnx(store, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from maxq_deploy.export.tensorrt_form import export_onnx

    folded = store.folded(arch="resnet18")
    out = tmp_path_factory.mktemp("ov") / "r18.onnx"
    export_onnx(folded, out, input_size=SIZE)
    return folded, out


@needs_openvino
def test_openvino_f32_matches_onnxruntime(fp32_onnx) -> None:
    from maxq_deploy.runtimes.select import open_runner

    _, path = fp32_onnx
    x = batch(3)
    ort_runner = open_runner(path)
    ref = ort_runner.run(x)
    ort_runner.close()
    with open_runner(path, backend="openvino:f32", threads=1) as runner:
        got = runner.run(x)
        info = runner.info
        assert runner.name == "openvino" and runner.device == "CPU"
        assert info.precision == "fp32" and info.options["inference_precision"] == "fp32"
        assert info.options["precision_hint"] == "f32" and info.options["threads"] == 1
        assert info.arch == "resnet18" and info.num_classes == 10 and info.model_kind == "onnx-fp32"
        assert info.input_shape == (3, SIZE, SIZE) and info.batch_range == (1, None)
        assert backend_label(runner) == "openvino:fp32"
        assert info.to_dict()["options"]["inference_precision"] == "fp32"
        assert runner.run(batch(1)).shape == (1, 10)  # dynamic batch
    assert got.shape == ref.shape == (3, 10) and got.dtype == np.float32
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) < 1e-4


@needs_openvino
def test_openvino_default_precision_is_recorded(fp32_onnx) -> None:
    from maxq_deploy.runtimes.openvino import OpenVINORunner

    _, path = fp32_onnx
    core = shared_core()
    default = str(core.get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name())
    expected = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[default]
    with OpenVINORunner(path) as runner:
        assert runner.info.precision == expected and runner.info.options["precision_hint"] == "default"
        assert runner.info.options["inference_precision"] == expected
        x = batch(2)
        got = runner.run(x)
    with OpenVINORunner(path, precision="f32") as exact:
        ref = exact.run(x)
    assert float(np.abs(got - ref).max() / np.abs(ref).max()) < 5e-2  # bf16 keeps ~3 significant digits


#: (a file to open instead of the fp32 graph: name and bytes, or None; runner options; the refusal).
OPENVINO_REFUSALS = [
    pytest.param(None, {"device": "NPU7"},
                 BackendUnavailableError, "OpenVINO device 'NPU7' is not available here; available: CPU", id="device"),
    pytest.param(None, {"precision": "fp8"}, OptionError, "precision 'fp8' is not supported", id="precision"),
    pytest.param(("broken.onnx", b"not a protobuf"), {}, InputFileError, "cannot be loaded by OpenVINO", id="not-a-protobuf"),
    pytest.param(("m.engine", b"x"), {}, InputFileError, "not m.engine", id="engine-suffix"),
]


@needs_openvino
@pytest.mark.parametrize("bad_file, options, error, message", OPENVINO_REFUSALS)
def test_openvino_bad_inputs(fp32_onnx, tmp_path: Path, bad_file, options: dict, error: type, message: str) -> None:
    from maxq_deploy.runtimes.openvino import OpenVINORunner

    _, path = fp32_onnx
    if bad_file is not None:
        path = tmp_path / bad_file[0]
        path.write_bytes(bad_file[1])
    with pytest.raises(error, match=message):
        OpenVINORunner(path, **options)


@needs_openvino
def test_openvino_refuses_a_batch_of_the_wrong_shape(fp32_onnx) -> None:
    from maxq_deploy.runtimes.openvino import OpenVINORunner

    _, path = fp32_onnx
    with OpenVINORunner(path) as runner, pytest.raises(DataError, match="rejected a batch of shape"):
        runner.run(np.zeros((1, 3, SIZE + 1, SIZE), np.float32))


@needs_openvino
def test_cli_eval_and_bench_with_openvino(fp32_onnx, cli, tmp_path: Path) -> None:
    _, path = fp32_onnx
    rng = np.random.default_rng(0)
    images, labels = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(images, rng.standard_normal((12, 3, SIZE, SIZE), dtype=np.float32))
    np.save(labels, rng.integers(0, 10, 12))
    ort = cli("eval", path, "--data", images, "--labels", labels, "--workers", "0", "--json")
    assert ort.exit_code == 0, ort.stderr
    res = cli("eval", path, "--data", images, "--labels", labels, "--workers", "0", "--backend", "openvino:f32", "--json")
    assert res.exit_code == 0, res.stderr
    got, ref = json.loads(res.stdout), json.loads(ort.stdout)
    assert got["backend"] == "openvino:fp32" and got["device"] == "CPU"
    assert got["correct1"] == ref["correct1"]  # same predictions as ONNX Runtime in f32
    out = tmp_path / "bench.json"
    res = cli("bench", path, "--backend", "openvino", "--batch-sizes", "1,2", "--iters", "2", "--warmup", "1", "--threads", "1", "--json", out)
    assert res.exit_code == 0, res.stderr
    models = json.loads(out.read_text())["models"]
    assert models[0]["backend"].startswith("openvino:") and models[0]["device"] == "CPU"
    bad = cli("eval", path, "--data", images, "--labels", labels, "--backend", "openvino:int3")
    assert bad.exit_code != 0 and bad.stderr.count("\n") == 1 and "error:" in bad.stderr and "int3" in bad.stderr


@needs_openvino
def test_open_pairs_side_by_side(fp32_onnx, tmp_path: Path) -> None:
    from maxq_deploy.runtimes.backends import open_pairs

    _, path = fp32_onnx
    specs = parse_backend_list("onnxruntime,openvino:f32,openvino")
    opened = open_pairs(backend_pairs([path], specs), threads=1)
    try:
        assert [spec.label for _, spec, _ in opened] == ["onnxruntime", "openvino:f32", "openvino"]
        x = batch(2)
        outs = [runner.run(x) for _, _, runner in opened]
        assert float(np.abs(outs[1] - outs[0]).max() / np.abs(outs[0]).max()) < 1e-4
    finally:
        for _, _, runner in opened:
            runner.close()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"junk")
    with pytest.raises(InputFileError):  # the second file fails: the first pair's runners are closed, nothing leaks
        open_pairs(backend_pairs([path, broken], parse_backend_list("openvino")))


@needs_openvino
def test_openvino_ir_xml_runs_by_suffix(fp32_onnx, tmp_path: Path) -> None:
    from maxq_deploy.runtimes.select import backend_for_file, open_runner

    _, path = fp32_onnx
    xml = tmp_path / "r18.xml"
    ov.save_model(shared_core().read_model(str(path)), str(xml), compress_to_fp16=False)  # default: fp16 weights
    assert backend_for_file(xml) == "openvino"
    x = batch(2)
    with open_runner(path, backend="openvino:f32") as from_onnx, open_runner(xml, precision="f32") as from_ir:
        assert from_ir.info.model_kind == "openvino-ir" and from_ir.info.precision == "fp32"
        np.testing.assert_allclose(from_ir.run(x), from_onnx.run(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(InputFileError, match="OpenVINO IR model, which the onnxruntime backend cannot run"):
        open_runner(xml, backend="onnxruntime")


@needs_openvino
def test_real_process_bad_device_is_one_line(fp32_onnx, cli_subprocess, tmp_path: Path) -> None:
    _, path = fp32_onnx
    images, labels = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(images, batch(4))
    np.save(labels, np.zeros(4, dtype=np.int64))
    res = cli_subprocess("eval", path, "--data", images, "--labels", labels, "--backend", "openvino", "--device", "NPU7")
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: OpenVINO device 'NPU7' is not available here; available: CPU")


#: Run in a child process (a dangling alternate signal stack kills the process that has it): two
#: OpenVINO runners closed first-opened-first, then signals caught by a Python handler.
_ALTSTACK_CHILD = """
import ctypes, gc, signal, subprocess, sys
from maxq_deploy.runtimes.openvino import OpenVINORunner

class stack_t(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

def altstack_mapped():
    st = stack_t()
    ctypes.CDLL(None).sigaltstack(None, ctypes.byref(st))
    if not st.ss_sp or st.ss_flags & 2:  # SS_DISABLE
        return True
    spans = (line.split()[0].split("-") for line in open("/proc/self/maps"))
    return any(int(lo, 16) <= st.ss_sp < int(hi, 16) for lo, hi in spans)

first, second = OpenVINORunner(sys.argv[1]), OpenVINORunner(sys.argv[1], precision="f32")
first.close(); del first; gc.collect()
second.close(); del second; gc.collect()
print("mapped", altstack_mapped(), flush=True)
signal.signal(signal.SIGCHLD, lambda *args: None)  # what torch's DataLoader does with workers
for _ in range(3):
    subprocess.run(["true"], check=True)
print("survived", flush=True)
"""


@needs_openvino
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_runners_closed_in_any_order_leave_a_valid_signal_stack(fp32_onnx) -> None:
    """OpenVINO's CPU plugin swaps the thread's alternate signal stack per Core; the runners share one.

    With a Core per runner this child died of SIGSEGV (exit -11) at the first SIGCHLD after the
    two runners were closed: the alternate stack pointed at memory the plugin had unmapped.
    """
    import subprocess

    _, path = fp32_onnx
    proc = subprocess.run([sys.executable, "-c", _ALTSTACK_CHILD, str(path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    assert proc.stdout.split() == ["mapped", "True", "survived"]


def test_openvino_default_is_plain_openvino() -> None:
    assert parse_backend("openvino:default") == parse_backend("openvino") == BackendSpec("openvino")
    with pytest.raises(OptionError, match="twice"):
        parse_backend_list("openvino:default,openvino")
