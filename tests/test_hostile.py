"""Hostile input never costs a user data: the real CLI against files a careless or hostile user gives.

For every case the same properties are checked: the exit code; exactly one ``error:`` line for a
refusal (none for a success); no traceback; the sha256 of every input unchanged; no stray file
in the case folder, the shared input folder or the temp folder (``TMPDIR``).

Cost: ``python -m maxq_deploy`` imports torch in 2-4 s, so the refusal cases run in ONE child
process (``tests/_hostile_driver.py`` calls the console script's ``main(argv)`` once per case and
records each case's results apart), and each case is its own test reading that record. The
signal tests need a process of their own per signal (a real process killed mid-write).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("_hostile_driver.py")
SIZE = 32  # input size of every model here: small and fast


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _lock(path: Path):
    with open(str(path) + ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ shared inputs


def _images(folder: Path) -> None:
    """An ImageFolder tree with every Pillow mode, a link to an ancestor, a duplicate through a link,
    a dangling link and a FIFO named like an image."""
    from PIL import Image

    rng = np.random.default_rng(0)
    a, b = folder / "a", folder / "b"
    a.mkdir(parents=True)
    b.mkdir()
    rgb = Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8))
    for mode, ext in [("1", "png"), ("L", "png"), ("LA", "png"), ("P", "png"), ("RGB", "png"), ("RGBA", "png"),
                      ("CMYK", "tif"), ("YCbCr", "tif")]:
        rgb.convert(mode).save(a / f"m_{mode}.{ext}")
    Image.fromarray((rng.random((40, 48)) * 65535).astype(np.uint16)).save(a / "m_I16.png")
    Image.frombytes("I;16B", (48, 40), (rng.random((40, 48)) * 65535).astype(">u2").tobytes()).save(a / "m_I16B.tif")
    Image.fromarray((rng.random((40, 48)) * 65535).astype(np.int32)).save(a / "m_I.tif")
    Image.fromarray(rng.random((40, 48)).astype(np.float32)).save(a / "m_F.tif")
    for i in range(4):
        rgb.rotate(90 * i).save(b / f"img{i}.png")
    os.symlink("..", a / "up")  # a link back into an ancestor
    os.symlink("../a/m_L.png", b / "dup.png")  # the same file twice
    os.symlink("/nonexistent/x.png", b / "dangling.png")
    os.mkfifo(b / "fifo.jpg")  # would block a reader forever


def build_shared(root: Path) -> Path:
    """Every input the cases use, made by code (maxq_deploy.reference, the library itself)."""
    from PIL import Image

    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.quantize import quantize_ptq
    from maxq_deploy.reference import make_checkpoint, save_checkpoint

    s = root / "shared"
    done = root / "shared.done"
    root.mkdir(parents=True, exist_ok=True)
    with _lock(root / "shared"):
        if done.exists():
            return s
        if s.exists():
            shutil.rmtree(s)
        s.mkdir(parents=True)
        ckpt = make_checkpoint("mobilenet_v1", num_classes=10)
        save_checkpoint(ckpt, s / "mb.pth")
        fold_checkpoint(s / "mb.pth", s / "folded.pt")
        rng = np.random.default_rng(0)
        images = rng.standard_normal((16, 3, SIZE, SIZE)).astype(np.float32)
        labels = rng.integers(0, 10, 16)
        np.savez(s / "calib.npz", images=images, labels=labels)
        np.savez(s / "nolabels.npz", images=images)
        bad = images.copy()
        bad[3, 1, 2, 2] = np.nan
        np.savez(s / "nan.npz", images=bad, labels=labels)
        quantize_ptq(s / "folded.pt", s / "quant.pt", s / "calib.npz", calib_batches=2, batch_size=8, workers=0, device="cpu")
        export_onnx(s / "folded.pt", s / "model.onnx", input_size=SIZE)
        _images(s / "imgs")
        (s / "nanimgs" / "c").mkdir(parents=True)
        nan_image = np.ones((40, 48), np.float32)
        nan_image[5, 7] = np.nan
        Image.fromarray(nan_image).save(s / "nanimgs" / "c" / "bad.tif")
        Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(s / "nanimgs" / "c" / "ok.png")
        # damaged artifacts
        q = torch.load(s / "quant.pt", weights_only=True)
        wq, iq = "conv1.0._weight_quantizer", "conv1.0._input_quantizer"

        def quant_with(name: str, value: torch.Tensor, path: str) -> None:
            d = dict(q)
            d["quantizers"] = dict(q["quantizers"], **{name: value})
            torch.save(d, s / path)

        quant_with(iq, torch.tensor(-1.0), "q_negative.pt")
        quant_with(wq, torch.ones(3), "q_shape.pt")
        quant_with(wq, q["quantizers"][wq] * float("inf"), "q_inf.pt")
        f = torch.load(s / "folded.pt", weights_only=True)
        for name, change in [("f_v9.pt", {"format_version": 9}), ("f_vtext.pt", {"format_version": "1"}),
                             ("f_nm.pt", {"nm": "two:four"})]:
            torch.save(dict(f, **change), s / name)
        mask = next(k for k in ckpt["state_dict"] if k.endswith(".mask"))
        ckpt["state_dict"][mask][0, 0, 0, 0] = float("nan")
        torch.save(ckpt, s / "nanmask.pth")
        (s / "eng").mkdir()
        (s / "eng" / "e.engine").write_bytes(os.urandom(512))
        (s / "eng" / "e.engine.json").write_text(json.dumps(
            {"format": "maxq-deploy/engine-report", "engine": "e.engine", "sparse_build": True, "layers": [1, "x", None]}))
        (s / "eng2").mkdir()
        (s / "eng2" / "e.engine").write_bytes(os.urandom(512))
        (s / "eng2" / "e.engine.layers.json").write_text(json.dumps(
            {"Layers": [{"Name": "b", "LayerType": "Convolution", "Inputs": [{"Dimensions": "zz"}], "Kernel": "k"}]}))
        (s / "empty.pth").write_bytes(b"")
        (s / "truncated.pt").write_bytes((s / "folded.pt").read_bytes()[:100_000])
        done.touch()
    return s


# ------------------------------------------------------------------------------ cases


@dataclass
class Case:
    name: str
    argv: list[str]  # "{S}" = shared inputs, "{C}" = this case's folder (also the working folder)
    code: int
    error: str | None  # regex the one error line must match; None: a success, no error line
    setup: Callable[[Path, Path], None] | None = None  # (shared, case folder)
    creates: tuple[str, ...] = ()  # new files expected in the case folder (successes)
    stdout: str | None = None  # regex expected on stdout
    slow: bool = False
    replaced: tuple[str, ...] = ()  # files of the case folder that are outputs (replaced), not inputs


def _link(target: str, name: str, hard: bool = False) -> Callable[[Path, Path], None]:
    def make(s: Path, c: Path) -> None:
        (os.link if hard else os.symlink)(s / target, c / name)
    return make


def _read_only(name: str) -> Callable[[Path, Path], None]:
    def make(s: Path, c: Path) -> None:
        (c / name).write_bytes(b"precious")
        os.chmod(c / name, 0o444)
    return make


def _file(name: str, data: bytes = b"x") -> Callable[[Path, Path], None]:
    def make(s: Path, c: Path) -> None:
        (c / name).write_bytes(data)
    return make


def _fifo(name: str) -> Callable[[Path, Path], None]:
    def make(s: Path, c: Path) -> None:
        os.mkfifo(c / name)
    return make


def _nan_npy(c: Path) -> None:
    x = np.zeros((8, 3, SIZE, SIZE), np.float32)
    x[5, 2, 1, 0] = np.nan
    np.save(c / "x.npy", x)
    np.save(c / "y.npy", np.zeros(8, np.int64))


OVERWRITE = r"refusing to overwrite an input"
#: ONNX Runtime itself writes a 51-byte session id file ``$TMPDIR/.ses`` once per temp folder: not ours.
ORT_SESSION_FILE = {".ses"}
CASES: list[Case] = [
    # outputs that are inputs: same path, symbolic link, hard link
    Case("fold-onto-input", ["fold", "{S}/mb.pth", "-o", "{S}/mb.pth"], 2, OVERWRITE),
    Case("fold-symlink-to-input", ["fold", "{S}/mb.pth", "-o", "out.pth"], 2, r"through a link\): " + OVERWRITE, _link("mb.pth", "out.pth")),
    Case("fold-hardlink-to-input", ["fold", "{S}/mb.pth", "-o", "out.pth"], 2, r"through a link\): " + OVERWRITE, _link("mb.pth", "out.pth", hard=True)),
    Case("quantize-onto-input", ["quantize", "{S}/folded.pt", "-o", "{S}/folded.pt", "--calib", "{S}/calib.npz"], 2, OVERWRITE),
    Case("quantize-onto-calib-link", ["quantize", "{S}/folded.pt", "-o", "c.pt", "--calib", "{S}/calib.npz"], 2, OVERWRITE,
         _link("calib.npz", "c.pt")),
    Case("export-onnx-onto-input-link", ["export", "onnx", "{S}/folded.pt", "-o", "x.onnx"], 2, OVERWRITE, _link("folded.pt", "x.onnx")),
    Case("export-ort-onto-calib-link", ["export", "onnx", "{S}/folded.pt", "-o", "x.onnx", "--target", "onnxruntime",
                                        "--precision", "int8", "--calib", "{S}/calib.npz"], 2, OVERWRITE, _link("calib.npz", "x.onnx")),
    Case("bench-json-onto-model", ["bench", "{S}/model.onnx", "--json", "{S}/model.onnx"], 2, r"would hold JSON"),
    Case("bench-json-link-to-model", ["bench", "{S}/model.onnx", "--json", "r.json", "--iters", "1"], 2, OVERWRITE,
         _link("model.onnx", "r.json")),
    Case("bench-csv-beside-json-is-model", ["bench", "{S}/model.onnx", "--json", "r.json", "--iters", "1"], 2, OVERWRITE,
         _link("model.onnx", "r.csv")),
    Case("bench-json-named-csv", ["bench", "{S}/model.onnx", "--json", "out.csv"], 2, r"would hold JSON but its name ends in \.csv"),
    Case("bench-plot-onto-model", ["bench", "{S}/model.onnx", "--plot", "{S}/model.onnx"], 2, r"would hold a PNG image"),
    Case("trtexec-save-engine-onto-onnx", ["export", "trt", "{S}/model.onnx", "-o", "{S}/model.onnx", "--trtexec"], 2,
         r"--saveEngine .* would hold a TensorRT engine"),
    Case("trtexec-engine-link-to-onnx", ["export", "trt", "{S}/model.onnx", "-o", "m.engine", "--trtexec"], 2, OVERWRITE,
         _link("model.onnx", "m.engine")),
    Case("trtexec-timing-cache-onto-onnx", ["export", "trt", "{S}/model.onnx", "-o", "m.engine", "--trtexec", "--timing-cache",
                                            "{S}/model.onnx"], 2, OVERWRITE),
    # outputs that must not be replaced
    Case("fold-read-only-output", ["fold", "{S}/mb.pth", "-o", "ro.pth"], 2, r"read-only", _read_only("ro.pth")),
    Case("fold-wrong-extension", ["fold", "{S}/mb.pth", "-o", "out.onnx"], 2, r"would hold a PyTorch checkpoint"),
    Case("fold-onto-dev-null", ["fold", "{S}/mb.pth", "-o", "/dev/null"], 2, r"not a regular file"),
    Case("fold-onto-fifo", ["fold", "{S}/mb.pth", "-o", "p.pth"], 2, r"not a regular file", _fifo("p.pth")),
    Case("fold-output-is-folder", ["fold", "{S}/mb.pth", "-o", "{C}"], 2, r"is a folder"),
    Case("demo-workdir-is-file", ["demo", "--workdir", "w"], 2, r"is a file, not a folder", _file("w")),
    # usage errors: one line, exit 2
    Case("usage-unknown-option", ["fold", "{S}/mb.pth", "--bogus"], 2, r"No such option: --bogus"),
    Case("usage-missing-argument", ["quantize"], 2, r"Missing argument"),
    Case("usage-not-an-integer", ["bench", "{S}/model.onnx", "--warmup", "many"], 2, r"--warmup"),
    Case("usage-trt-version-without-trtexec", ["export", "trt", "{S}/model.onnx", "-o", "m.engine", "--trt-version", "10"], 2,
         r"--trt-version only applies"),
    # impossible options
    Case("demo-epochs-0", ["demo", "--workdir", "w", "--epochs", "0"], 2, r"--epochs must be"),
    Case("demo-absurd-input-size", ["demo", "--workdir", "w", "--checkpoint", "{S}/mb.pth", "--input-size", "100000"], 2, r"--input-size"),
    Case("quantize-unknown-device", ["quantize", "{S}/folded.pt", "-o", "q.pt", "--calib", "{S}/calib.npz", "--device", "tpu"], 2,
         r"unknown --device 'tpu'"),
    Case("export-absurd-input-size", ["export", "onnx", "{S}/folded.pt", "-o", "x.onnx", "--input-size", "15000", "--batch", "64"], 2,
         r"needs at least .* GiB"),
    Case("bench-absurd-batch", ["bench", "{S}/model.onnx", "--batch-sizes", "100000000", "--iters", "1"], 2, r"needs at least .* GiB"),
    Case("eval-absurd-image-size", ["eval", "{S}/folded.pt", "--data", "{S}/imgs", "--resize", "16000", "--image-size", "16000"], 2,
         r"needs at least .* GiB"),
    # non-finite data
    Case("quantize-nan-calibration", ["quantize", "{S}/folded.pt", "-o", "q.pt", "--calib", "{S}/nan.npz"], 2,
         r"nan\.npz holds non-finite values .*index \[3, 1, 2, 2\]"),
    Case("qat-nan-training", ["quantize", "{S}/folded.pt", "-o", "q.pt", "--qat", "--train-data", "{S}/nan.npz", "--device", "cpu"], 2,
         r"nan\.npz holds non-finite"),
    Case("eval-nan-arrays", ["eval", "{S}/folded.pt", "--data", "{S}/nan.npz"], 2, r"non-finite values .*\[3, 1, 2, 2\]"),
    Case("export-ort-nan-calibration", ["export", "onnx", "{S}/folded.pt", "-o", "x.onnx", "--target", "onnxruntime", "--precision",
                                        "int8", "--calib", "{S}/nan.npz", "--input-size", str(SIZE)], 2, r"non-finite"),
    Case("eval-float-image-with-nan", ["eval", "{S}/folded.pt", "--data", "{S}/nanimgs", "--resize", "32", "--image-size", "32",
                                       "--workers", "0"], 2, r"bad\.tif decodes to non-finite values .*\[5, 7\]"),
    Case("qat-hint-names-no-labels-option", ["quantize", "{S}/folded.pt", "-o", "q.pt", "--qat", "--train-data", "{S}/nolabels.npz"], 2,
         r"^(?!.*--labels).*has no labels"),
    # damaged artifacts: every command that reads them agrees
    Case("verify-negative-range", ["verify", "{S}/q_negative.pt"], 2, r"range of conv1\.0\._input_quantizer is negative"),
    Case("export-negative-range", ["export", "onnx", "{S}/q_negative.pt", "-o", "x.onnx"], 2, r"is negative"),
    Case("eval-negative-range", ["eval", "{S}/q_negative.pt", "--data", "{S}/calib.npz"], 2, r"is negative"),
    Case("bench-negative-range", ["bench", "{S}/q_negative.pt", "--iters", "1", "--batch-sizes", "1"], 2, r"is negative"),
    Case("verify-range-shape", ["verify", "{S}/q_shape.pt"], 2, r"has shape \[3\]; expected one value or one per output channel"),
    Case("verify-range-inf", ["verify", "{S}/q_inf.pt"], 2, r"holds NaN or Inf"),
    Case("verify-newer-format", ["verify", "{S}/f_v9.pt"], 2, r"format version 9 is newer .*\(version 1\)"),
    Case("export-format-version-text", ["export", "onnx", "{S}/f_vtext.pt", "-o", "x.onnx"], 2, r"format_version '1' .*reads version 1"),
    Case("export-bad-nm", ["export", "onnx", "{S}/f_nm.pt", "-o", "x.onnx"], 2, r"nm 'two:four' is not an N:M pattern"),
    Case("inspect-nan-mask", ["inspect", "{S}/nanmask.pth"], 2, r"damaged checkpoint .*mask holds NaN or Inf"),
    Case("fold-nan-mask", ["fold", "{S}/nanmask.pth", "-o", "f.pt"], 2, r"damaged checkpoint"),
    Case("verify-engine-report-garbage", ["verify", "{S}/eng/e.engine"], 2, r"e\.engine\.json is damaged"),
    Case("verify-layer-info-garbage", ["verify", "{S}/eng2/e.engine"], 2, r"layers\.json is damaged TensorRT layer information"),
    Case("fold-empty-file", ["fold", "{S}/empty.pth", "-o", "f.pt"], 2, r"is empty"),
    Case("export-truncated", ["export", "onnx", "{S}/truncated.pt", "-o", "x.onnx"], 2, r"truncated or corrupt|cannot be read"),
    Case("fold-input-is-fifo", ["fold", "p.pth", "-o", "f.pt"], 2, r"not a regular file", _fifo("p.pth")),
    # found by the second hostile run
    Case("quantize-truncated-npz", ["quantize", "{S}/folded.pt", "-o", "q.pt", "--calib", "t.npz"], 2, r"t\.npz is not a readable \.npz",
         lambda s, c: (c / "t.npz").write_bytes((s / "calib.npz").read_bytes()[:5000])),
    Case("trtexec-workspace-nan", ["export", "trt", "{S}/model.onnx", "-o", "m.engine", "--trtexec", "--workspace", "nan"], 2,
         r"workspace must be more than 0 GiB, got nan"),
    Case("demo-checkpoint-not-maxq-makes-nothing", ["demo", "--workdir", "w", "--checkpoint", "{S}/folded.pt"], 2,
         r"not a MaxQ training checkpoint"),
    Case("demo-checkpoint-is-its-own-output", ["demo", "--workdir", "{C}", "--checkpoint", "{C}/folded.pt"], 2, OVERWRITE,
         lambda s, c: shutil.copy(s / "mb.pth", c / "folded.pt")),
    Case("fold-input-dev-zero", ["fold", "/dev/zero", "-o", "f.pt"], 2, r"not a regular file"),
    Case("fold-output-name-near-the-limit", ["fold", "{S}/mb.pth", "-o", "x" * 240 + ".pth"], 0, None, creates=("x" * 240 + ".pth",)),
    Case("eval-labels-with-bom-and-crlf", ["eval", "{S}/folded.pt", "--data", "{S}/nolabels.npz", "--labels", "l.txt"], 0, None,
         lambda s, c: (c / "l.txt").write_text("\r\n".join(["1"] * 16) + "\r\n", encoding="utf-8-sig"), stdout=r"16 images"),
    Case("eval-nan-memory-mapped-npy", ["eval", "{S}/folded.pt", "--data", "x.npy", "--labels", "y.npy"], 2,
         r"x\.npy holds non-finite values \(NaN or Inf\) at index \[5, 2, 1, 0\]", lambda s, c: _nan_npy(c)),
    Case("demo-workdir-inside-its-eval-data", ["demo", "--workdir", "{S}/imgs/a/w", "--checkpoint", "{S}/mb.pth", "--eval-data",
                                               "{S}/imgs"], 2, r"\.npy is a data file inside the input folder .*imgs: refusing to change an input data set"),
    Case("verify-an-npz", ["verify", "{S}/calib.npz"], 2, r"is a NumPy \.npz archive \(data\), not a PyTorch"),
    # successes: outputs appear, nothing else
    Case("fold-replaces-writable-output", ["fold", "{S}/mb.pth", "-o", "out.pth"], 0, None, _file("out.pth", b"old"),
         replaced=("out.pth",)),
    Case("fold-unicode-space-path", ["fold", "{S}/mb.pth", "-o", "ausgabe ü ✓.pth"], 0, None, creates=("ausgabe ü ✓.pth",)),
    Case("eval-hostile-tree", ["eval", "{S}/folded.pt", "--data", "{S}/imgs", "--resize", "32", "--image-size", "32", "--workers", "0"],
         0, None, stdout=r"(?s)16 image files.*2 unreadable entries skipped: .*dangling\.png.*fifo\.jpg.*1 duplicate"),
    Case("export-ort-scratch-beside-output", ["export", "onnx", "{S}/folded.pt", "-o", "o.onnx", "--target", "onnxruntime",
                                              "--precision", "int8", "--calib", "{S}/calib.npz", "--input-size", str(SIZE),
                                              "--calib-batch-size", "4", "--calib-batches", "2"], 0, None, creates=("o.onnx",), slow=True),
]


def _expand(arg: str, s: Path, c: Path) -> str:
    return arg.replace("{S}", str(s)).replace("{C}", str(c))


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run every case in one child process; return {case name: record}.

    Under xdist the first worker to get here runs the driver and saves its record; the others
    wait on a lock and read it (the cases run once per test session, not once per worker).
    """
    base = tmp_path_factory.getbasetemp()
    shared_root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    s = build_shared(shared_root / "hostile")
    work = shared_root / "hostile" / "run"
    record_file = shared_root / "hostile" / "run.json"
    with _lock(work):
        if not record_file.exists():
            record_file.write_text(json.dumps(_run_cases(s, work)))
    record = json.loads(record_file.read_text())
    record["temp"] = Path(record["temp"])
    return record


def _run_cases(s: Path, work: Path) -> dict:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    temp = work / "TMPDIR"
    temp.mkdir()
    specs = []
    for case in CASES:
        c = work / case.name
        c.mkdir()
        if case.setup:
            case.setup(s, c)
        argv = [_expand(a, s, c) for a in case.argv]
        inputs = [str(p) for p in c.iterdir() if p.is_file() and not p.is_symlink() and p.name not in case.replaced]
        inputs += [a for a in argv if a.startswith(str(s)) and os.path.isfile(a)]
        specs.append({"name": case.name, "argv": argv, "cwd": str(c), "inputs": inputs, "watch": [str(c), str(temp)]})
    cases_file = work / "cases.json"
    cases_file.write_text(json.dumps(specs))
    results_file = work / "results.json"
    shared_before = {str(p): _sha256(p) for p in s.rglob("*") if p.is_file() and not p.is_symlink() and not p.is_fifo()}
    listing_before = sorted(str(p) for p in s.rglob("*"))
    env = dict(os.environ, TMPDIR=str(temp), NO_COLOR="1", COLUMNS="200", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(DRIVER), str(cases_file), str(results_file)], capture_output=True, text=True,
                          env=env, timeout=900, cwd=work)
    assert results_file.exists(), proc.stderr[-3000:]
    data = json.loads(results_file.read_text())
    assert data["tempdir"] == str(temp)
    shared_after = {p: _sha256(Path(p)) for p in shared_before}
    return {"results": {r["name"]: r for r in data["results"]}, "driver_stderr": proc.stderr[-3000:],
            "shared": [shared_before, shared_after],
            "shared_listing": [listing_before, sorted(str(p) for p in s.rglob("*"))], "temp": str(temp)}


def _params() -> list:
    return [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else []) for c in CASES]


@pytest.mark.slow
@pytest.mark.parametrize("case", _params())
def test_hostile_case(hostile_run, case: Case):
    record = hostile_run["results"].get(case.name)
    assert record is not None, f"the driver did not reach this case: {hostile_run['driver_stderr']}"
    out, err = record["stdout"], record["stderr"]
    assert "Traceback" not in out + err, err
    errors = [line for line in (out + err).splitlines() if line.startswith("error:")]
    if case.error is None:
        assert record["code"] == 0, err
        assert errors == []
    else:
        assert record["code"] == case.code, (record["code"], err)
        assert len(errors) == 1, out + err
        assert re.search(case.error, errors[0]), errors[0]
    if case.stdout:
        assert re.search(case.stdout, out), out
    # every input unchanged
    assert record["after"]["hashes"] == record["before"]["hashes"]
    # no stray files in the case folder or the temp folder: only the expected outputs are new
    for folder in record["before"]["listing"]:
        new = set(record["after"]["listing"][folder]) - set(record["before"]["listing"][folder]) - ORT_SESSION_FILE
        gone = set(record["before"]["listing"][folder]) - set(record["after"]["listing"][folder])
        expected = set(case.creates) if folder != str(hostile_run["temp"]) else set()
        if case.error is None and folder != str(hostile_run["temp"]) and not case.creates:
            expected = set()  # a replaced output keeps its name
        assert new == expected, f"stray files in {folder}: {sorted(new - expected)}"
        assert gone == set(), f"files removed from {folder}: {sorted(gone)}"


@pytest.mark.slow
def test_hostile_run_left_the_shared_inputs_alone(hostile_run):
    before, after = hostile_run["shared"]
    assert before == after
    listing_before, listing_after = hostile_run["shared_listing"]
    assert listing_before == listing_after  # no temp file beside an input
    assert {p.name for p in hostile_run["temp"].iterdir()} <= ORT_SESSION_FILE


# ------------------------------------------------------------------------------ signals


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "maxq_deploy", *args]


def _kill_mid_write(argv: list[str], out_dir: Path, sig: int, tmpdir: Path, attempts: int = 3) -> subprocess.CompletedProcess | None:
    """Start ``argv``, wait until its temp file appears in ``out_dir``, send ``sig``; None if it never showed."""
    env = dict(os.environ, TMPDIR=str(tmpdir), NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for _ in range(attempts):
        for p in out_dir.iterdir():
            p.unlink()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 120
        seen = False
        while time.monotonic() < deadline and proc.poll() is None:
            if any(p.name.startswith(".maxq-deploy-") for p in out_dir.iterdir()):
                seen = True
                break
            time.sleep(0.001)
        if seen:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        if seen:
            return subprocess.CompletedProcess(argv, proc.returncode, out, err)
    return None


@pytest.fixture(scope="module")
def big_checkpoint(store) -> Path:
    """A resnet18 checkpoint (90 MB): writing its folded form takes long enough to be hit mid-write."""
    return store.checkpoint()


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_signal_mid_fold_cleans_up(big_checkpoint, tmp_path, signame):
    sig = getattr(signal, signame)
    out_dir, tmpdir = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    tmpdir.mkdir()
    digest = _sha256(big_checkpoint)
    done = _kill_mid_write(_cli("fold", str(big_checkpoint), "-o", str(out_dir / "f.pt")), out_dir, sig, tmpdir)
    if done is None:
        pytest.skip("the fold finished before its temp file could be seen (machine too fast to hit mid-write)")
    assert done.returncode == 128 + sig, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: interrupted by {signame}; unfinished outputs were removed"], done.stderr
    assert "Traceback" not in done.stderr
    assert list(out_dir.iterdir()) == []  # no temp file, no partial output
    assert list(tmpdir.iterdir()) == []
    assert _sha256(big_checkpoint) == digest


@pytest.mark.slow
def test_sigterm_mid_export_cleans_up(store, tmp_path):
    out_dir, tmpdir = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    tmpdir.mkdir()
    folded = store.folded()
    done = _kill_mid_write(_cli("export", "onnx", str(folded), "-o", str(out_dir / "m.onnx"), "--input-size", "64"),
                           out_dir, signal.SIGTERM, tmpdir)
    if done is None:
        pytest.skip("the export finished before its temp file could be seen")
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: interrupted by SIGTERM; unfinished outputs were removed"]
    assert list(out_dir.iterdir()) == []
    assert list(tmpdir.iterdir()) == []


@pytest.mark.slow
def test_sigkill_leftovers_are_removed_by_the_next_run(big_checkpoint, tmp_path):
    out_dir, tmpdir = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    tmpdir.mkdir()
    done = _kill_mid_write(_cli("fold", str(big_checkpoint), "-o", str(out_dir / "f.pt")), out_dir, signal.SIGKILL, tmpdir)
    if done is None:
        pytest.skip("the fold finished before its temp file could be seen")
    left = [p.name for p in out_dir.iterdir()]
    assert left and all(re.match(r"^\.maxq-deploy-\d+-.*\.tmp$", n) for n in left), left  # named: tool + pid
    alive = out_dir / f".maxq-deploy-{os.getpid()}-0-other.pt.tmp"  # a live process's temp file stays
    alive.write_bytes(b"in use")
    env = dict(os.environ, TMPDIR=str(tmpdir), NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    again = subprocess.run(_cli("fold", str(big_checkpoint), "-o", str(out_dir / "f.pt")), capture_output=True, text=True, env=env,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(["f.pt", alive.name])
