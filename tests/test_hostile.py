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
import importlib.util
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
        export_onnx(s / "quant.pt", s / "qdq.onnx", input_size=SIZE)
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


# --- damaged copies made per case (issue 19: files that lie)


def _torch_edit(source: str, name: str, edit: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    """Load ``source`` from the shared inputs, let ``edit`` change the dict (or return a new object), save as ``name``."""
    def make(s: Path, c: Path) -> None:
        obj = torch.load(s / source, weights_only=True)
        new = edit(obj)
        torch.save(obj if new is None else new, c / name)
    return make


def _state(key: str | int, value: Callable[[torch.Tensor | None], object], drop: str | None = None) -> Callable[[dict], None]:
    """Set ``state_dict[key]`` to ``value(old)`` (``key`` may be a suffix of a real key: the first match)."""
    def edit(obj: dict) -> None:
        sd = dict(obj["state_dict"])
        real = key if not isinstance(key, str) or key in sd else next(k for k in sd if k.endswith(key))
        sd[real] = value(sd.get(real))
        if drop is not None:
            del sd[drop]
        obj["state_dict"] = sd
    return edit


def _relabel_dense(obj: dict) -> None:
    """Every sparse layer relabelled dense, its weights made dense (no zeros): the file lies about itself."""
    sd = dict(obj["state_dict"])
    for layer in obj["layers"]:
        if layer["role"] == "sparse":
            sd[layer["name"] + ".weight"] = sd[layer["name"] + ".weight"] + 0.01
    obj["layers"] = [dict(layer, role="dense") for layer in obj["layers"]]
    obj["state_dict"] = sd


def _duplicate_after_strip(obj: dict) -> None:
    sd = {"module." + k: v for k, v in obj["state_dict"].items()}
    sd["fc.weight"] = torch.zeros_like(sd["module.fc.weight"])
    obj["state_dict"] = sd


def _extreme_bn_mean(obj: dict) -> None:
    sd = dict(obj["state_dict"])
    mean = next(k for k in sd if k.endswith(".scale.running_mean"))
    sd[mean] = torch.full_like(sd[mean], 3e38)  # the folded bias -mean*g overflows to -inf
    obj["state_dict"] = sd


def _quantizer(name: str, value: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[dict], None]:
    def edit(obj: dict) -> None:
        obj["quantizers"] = dict(obj["quantizers"], **{name: value(obj["quantizers"][name])})
    return edit


def _huge_fc(obj: dict) -> None:
    """Finite weights whose logits overflow to +-inf and NaN: the model passes every file check."""
    sd = dict(obj["state_dict"])
    w = sd["fc.weight"]
    sd["fc.weight"] = torch.where(torch.arange(w.numel()).reshape(w.shape) % 2 == 0, 3e38, -3e38)
    obj["state_dict"] = sd


def _onnx_edit(source: str, name: str, edit: Callable) -> Callable[[Path, Path], None]:
    def make(s: Path, c: Path) -> None:
        import onnx

        model = onnx.load(str(s / source))
        edit(model)
        onnx.save(model, str(c / name))
    return make


def _nan_initializer(model, suffix: str = ".weight", bad: float = np.nan) -> None:
    from onnx import numpy_helper

    init = next(i for i in model.graph.initializer if i.name.endswith(suffix))
    value = numpy_helper.to_array(init).copy()
    value.flat[min(3, value.size - 1)] = bad
    init.CopyFrom(numpy_helper.from_array(value, init.name))


def _qdq_scale(value: float) -> Callable:
    """The activation scale of the 4th QuantizeLinear of a Q/DQ graph set to ``value``."""
    def edit(model) -> None:
        from onnx import numpy_helper

        node = [n for n in model.graph.node if n.op_type == "QuantizeLinear"][3]
        inits = [i for i in model.graph.initializer if i.name == node.input[1]]  # the exporters write either form
        consts = [n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.output[0] == node.input[1]]
        t = (inits + consts)[0]
        arr = numpy_helper.to_array(t).copy()
        arr[...] = value
        t.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), t.name))
    return edit


def _mixed_calib_folder(s: Path, c: Path) -> None:
    from PIL import Image

    (c / "calib" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(c / "calib" / f"flat{i}.png")
    for i in range(2):
        Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(c / "calib" / "sub" / f"s{i}.png")



def _tall_png(s: Path, c: Path) -> None:
    """A 300000x1 PNG (a few hundred bytes): resized to a 32-pixel shorter side it would be 9.6 Gi... pixels wide."""
    from PIL import Image

    (c / "tall" / "k").mkdir(parents=True)
    Image.new("L", (300000, 1)).save(c / "tall" / "k" / "tall.png")
    Image.new("RGB", (40, 40), (10, 20, 30)).save(c / "tall" / "k" / "ok.png")


def _openvino_ir(s: Path, c: Path) -> None:
    import openvino as ov

    ov.save_model(ov.convert_model(str(s / "model.onnx")), str(c / "m.xml"))


def _lying_size(model) -> None:
    for prop in model.metadata_props:
        if prop.key == "maxq_deploy.input_size":
            prop.value = "64"  # the graph takes 32x32


OVERWRITE = r"refusing to overwrite an input"
#: Not ours: ONNX Runtime writes a 51-byte session id file ``$TMPDIR/.ses`` once per temp folder, and
#: constructing a torch optimizer (QAT) imports torch._dynamo, which makes its cache folder
#: ``$TMPDIR/torchinductor_<user>`` (empty).
ORT_SESSION_FILE = {".ses", f"torchinductor_{__import__('getpass').getuser()}"}
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
    Case("bench-csv-is-model", ["bench", "{S}/model.onnx", "--json", "r.json", "--csv", "r.csv", "--iters", "1"], 2, OVERWRITE,
         _link("model.onnx", "r.csv")),
    Case("bench-json-leaves-unrelated-csv-alone", ["bench", "{S}/model.onnx", "--json", "results.json", "--iters", "1", "--warmup", "0",
                                                   "--batch-sizes", "1"], 0, None, _file("results.csv", b"my own numbers\n"),
         creates=("results.json",)),
    Case("bench-threads-above-cores", ["bench", "{S}/model.onnx", "--threads", "10000", "--iters", "1"], 2,
         r"--threads 10000 is more than the \d+ CPU\(s\) this process may use: refused; pass at most \d+"),
    Case("eval-threads-above-cores", ["eval", "{S}/folded.pt", "--data", "{S}/calib.npz", "--threads", "10000"], 2,
         r"--threads 10000 is more than the \d+ CPU"),
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
    # found by the third hostile run (issue 19): files that lie, silent garbage
    Case("fold-duplicate-after-prefix-strip", ["fold", "dup.pth", "-o", "f.pt"], 2, r"'module\.fc\.weight' and 'fc\.weight' are both 'fc\.weight'",
         _torch_edit("mb.pth", "dup.pth", _duplicate_after_strip)),
    Case("fold-int8-weight", ["fold", "w.pth", "-o", "f.pt"], 2, r"conv1\.0\.weight holds int8 values",
         _torch_edit("mb.pth", "w.pth", _state("conv1.0.weight", lambda t: t.to(torch.int8)))),
    Case("fold-complex-weight", ["fold", "w.pth", "-o", "f.pt"], 2, r"holds complex64 values",
         _torch_edit("mb.pth", "w.pth", _state("conv1.0.weight", lambda t: t.to(torch.complex64)))),
    Case("fold-sparse-tensor", ["fold", "w.pth", "-o", "f.pt"], 2, r"is a sparse coo tensor",
         _torch_edit("mb.pth", "w.pth", _state("conv1.0.weight", lambda t: t.to_sparse()))),
    Case("fold-meta-tensor", ["fold", "w.pth", "-o", "f.pt"], 2, r"is a meta tensor",
         _torch_edit("mb.pth", "w.pth", _state("conv1.0.weight", lambda t: torch.empty(t.shape, device="meta")))),
    Case("fold-list-as-tensor", ["fold", "w.pth", "-o", "f.pt"], 2, r"conv1\.0\.weight holds a list, not a tensor",
         _torch_edit("mb.pth", "w.pth", _state("conv1.0.weight", lambda t: t.tolist()))),
    Case("fold-integer-key", ["fold", "w.pth", "-o", "f.pt"], 2, r"has a key 5 of type int",
         _torch_edit("mb.pth", "w.pth", _state(5, lambda t: torch.zeros(1)))),
    Case("fold-list-as-state-dict", ["fold", "w.pth", "-o", "f.pt"], 2, r"'state_dict' is a list, not a dict",
         _torch_edit("mb.pth", "w.pth", lambda o: dict(o, state_dict=list(o["state_dict"].values())))),
    Case("inspect-nan-epoch", ["inspect", "w.pth", "--json"], 2, r"epoch is nan, not a finite number",
         _torch_edit("mb.pth", "w.pth", lambda o: dict(o, epoch=float("nan")))),
    Case("fold-writes-no-inf-bias", ["fold", "w.pth", "-o", "f.pt"], 2, r"refusing to write f\.pt: .*bias holds NaN or Inf",
         _torch_edit("mb.pth", "w.pth", _extreme_bn_mean)),
    Case("verify-relabelled-dense-fails", ["verify", "r.pt"], 1, None, _torch_edit("folded.pt", "r.pt", _relabel_dense),
         stdout=r"FAIL: 13 of 13 sparse layers break 2:4"),
    Case("verify-layer-record-names-no-layer", ["verify", "r.pt"], 2, r"layer record 'nope' names no layer of mobilenet_v1",
         _torch_edit("folded.pt", "r.pt", lambda o: dict(o, layers=[dict(o["layers"][0], name="nope"), *o["layers"][1:]]))),
    Case("verify-folded-list-state-dict", ["verify", "r.pt"], 2, r"'state_dict' is a list",
         _torch_edit("folded.pt", "r.pt", lambda o: dict(o, state_dict=list(o["state_dict"].values())))),
    Case("verify-range-denormal", ["verify", "q.pt"], 2, r"range of conv1\.0\._input_quantizer is 1\.4013e-45: outside",
         _torch_edit("quant.pt", "q.pt", _quantizer("conv1.0._input_quantizer", lambda t: torch.tensor(1e-45)))),
    Case("eval-range-denormal", ["eval", "q.pt", "--data", "{S}/calib.npz"], 2, r"is 1\.4013e-45: outside",
         _torch_edit("quant.pt", "q.pt", _quantizer("conv1.0._input_quantizer", lambda t: torch.tensor(1e-45)))),
    Case("verify-onnx-nan-weight", ["verify", "n.onnx"], 2, r"initializer .*weight holds NaN or Inf",
         _onnx_edit("model.onnx", "n.onnx", _nan_initializer)),
    Case("eval-onnx-nan-weight", ["eval", "n.onnx", "--data", "{S}/calib.npz"], 2, r"initializer .*weight holds NaN or Inf",
         _onnx_edit("model.onnx", "n.onnx", _nan_initializer)),
    Case("verify-qdq-zero-scale", ["verify", "z.onnx"], 2, r"scale of QuantizeLinear .* is 0; a scale must be a positive normal",
         _onnx_edit("qdq.onnx", "z.onnx", _qdq_scale(0.0))),
    Case("eval-qdq-nan-scale", ["eval", "z.onnx", "--data", "{S}/calib.npz"], 2, r"holds NaN or Inf",
         _onnx_edit("qdq.onnx", "z.onnx", _qdq_scale(float("nan")))),
    Case("eval-nan-logits-score-zero", ["eval", "h.pt", "--data", "{S}/calib.npz", "--json"], 0, None,
         _torch_edit("folded.pt", "h.pt", _huge_fc), stdout=r'(?s)"non_finite_outputs": 16,.*"top1": 0\.0,\s*"top5": 0\.0'),
    Case("eval-uint64-max-label", ["eval", "{S}/folded.pt", "--data", "{S}/nolabels.npz", "--labels", "y.npy"], 2,
         r"must be class indices below 2,147,483,648, found 18446744073709551615",
         lambda s, c: np.save(c / "y.npy", np.array([2**64 - 1] + [1] * 15, dtype=np.uint64))),
    Case("eval-label-with-underscore", ["eval", "{S}/folded.pt", "--data", "{S}/nolabels.npz", "--labels", "l.txt"], 2,
         r"l\.txt line 1: '1_0' is not a class index", _file("l.txt", b"1_0\n" + b"1\n" * 15)),
    Case("eval-labels-fifo", ["eval", "{S}/folded.pt", "--data", "{S}/nolabels.npz", "--labels", "l.txt"], 2,
         r"labels file l\.txt is not a regular file \(a FIFO", _fifo("l.txt")),
    Case("quantize-calib-flat-plus-subfolder", ["quantize", "{S}/folded.pt", "-o", "q.pt", "--calib", "calib"], 2,
         r"holds 5 image\(s\) directly .* and 1 sub-folder", _mixed_calib_folder),
    Case("qat-diverged-loss", ["quantize", "{S}/folded.pt", "-o", "q.pt", "--qat", "--train-data", "{S}/calib.npz", "--lr", "1e10",
                               "--batch-size", "8", "--calib-batches", "2", "--device", "cpu"], 2, r"QAT diverged: epoch 1 mean loss"),
    Case("export-fp16-overflow-not-written", ["export", "onnx", "b.pt", "-o", "b.onnx", "--precision", "fp16"], 2,
         r"refusing to write b\.onnx: .*fc\.weight holds NaN or Inf",
         _torch_edit("folded.pt", "b.pt", _state("fc.weight", lambda t: t.index_put((torch.tensor([0]), torch.tensor([0])), torch.tensor(1e6))))),
    # issue 19: resources and unclear words
    Case("eval-tall-png-refused-before-decoding", ["eval", "{S}/folded.pt", "--data", "tall", "--resize", "32", "--image-size", "32",
                                                  "--workers", "0"], 0, None, _tall_png,
         stdout=r"(?s)skipped 1 unreadable image\(s\), e\.g\. .*tall\.png: .*extreme\s+aspect\s+ratio,\s+refused\s+before\s+decoding"),
    Case("eval-image-size-0", ["eval", "{S}/folded.pt", "--data", "{S}/calib.npz", "--image-size", "0"], 2,
         r"--image-size must be a positive number of pixels, got 0"),
    Case("export-ort-calib-batches-0", ["export", "onnx", "{S}/folded.pt", "-o", "x.onnx", "--target", "onnxruntime", "--precision",
                                        "int8", "--calib", "{S}/calib.npz", "--calib-batches", "0"], 2,
         r"--calib-batches must be a whole number >= 1, got 0"),
    Case("fold-file-arch-wrong-names-the-right-one", ["fold", "a.pth", "-o", "f.pt"], 2,
         r"the file's 'arch' entry says resnet18; its keys match mobilenet_v1: pass --arch mobilenet_v1",
         _torch_edit("mb.pth", "a.pth", lambda o: dict(o, arch="resnet18"))),
    Case("fold-file-arch-unknown-hints-arch", ["fold", "a.pth", "-o", "f.pt"], 2,
         r"the file's 'arch' entry: unsupported architecture 'vgg16'.*pass --arch mobilenet_v1",
         _torch_edit("mb.pth", "a.pth", lambda o: dict(o, arch="vgg16"))),
    *([Case("eval-openvino-ir", ["eval", "m.xml", "--data", "{S}/calib.npz"], 0, None, _openvino_ir, stdout=r"16 images")]
      if importlib.util.find_spec("openvino") else []),  # the optional [openvino] extra
    Case("eval-onnx-metadata-lies-about-size", ["eval", "l.onnx", "--data", "{S}/imgs", "--workers", "0"], 0, None,
         _onnx_edit("model.onnx", "l.onnx", _lying_size), stdout=r"16 image files"),
    # issue 19: the fresh hostile run (cases of our own design, the cheap ones)
    Case("fold-arch-entry-not-a-name", ["fold", "a.pth", "-o", "f.pt"], 2, r"its 'arch' entry 5 is not an architecture name.*--arch mobilenet_v1",
         _torch_edit("mb.pth", "a.pth", lambda o: dict(o, arch=5))),
    Case("fold-zero-classes", ["fold", "a.pth", "-o", "f.pt"], 2, r"classifier 'fc\.weight' has shape \[0, \d+\]: no classes",
         _torch_edit("mb.pth", "a.pth", _state("fc.weight", lambda t: t[:0]))),
    Case("fold-state-dict-none", ["fold", "a.pth", "-o", "f.pt"], 2, r"'state_dict' is a NoneType, not a dict",
         _torch_edit("mb.pth", "a.pth", lambda o: dict(o, state_dict=None))),
    Case("inspect-nested-prefix-duplicate", ["inspect", "a.pth"], 2, r"'fc\.bias' and '_orig_mod\.module\.fc\.bias' are both 'fc\.bias'",
         _torch_edit("mb.pth", "a.pth", lambda o: dict(o, state_dict={**o["state_dict"], "_orig_mod.module.fc.bias": torch.zeros(10)}))),
    Case("fold-bool-counter", ["fold", "a.pth", "-o", "f.pt"], 2, r"num_batches_tracked holds bool values",
         _torch_edit("mb.pth", "a.pth", _state("num_batches_tracked", lambda t: t.bool()))),
    Case("verify-range-is-a-list", ["verify", "q.pt"], 2, r"range of conv1\.0\._input_quantizer is a list, not a tensor",
         _torch_edit("quant.pt", "q.pt", _quantizer("conv1.0._input_quantizer", lambda t: [1.0]))),
    Case("eval-range-past-float32", ["eval", "q.pt", "--data", "{S}/calib.npz"], 2, r"is 1e\+39: outside what an INT8 scale can hold",
         _torch_edit("quant.pt", "q.pt", _quantizer("conv1.0._input_quantizer", lambda t: torch.tensor(1e39, dtype=torch.float64)))),
    Case("eval-stored-input-size-negative", ["eval", "f.pt", "--data", "{S}/calib.npz"], 2, r"input_size -5 is not a positive number",
         _torch_edit("folded.pt", "f.pt", lambda o: dict(o, input_size=-5))),
    Case("verify-onnx-inf-bias", ["verify", "b.onnx"], 2, r"initializer .*\.bias holds NaN or Inf",
         _onnx_edit("model.onnx", "b.onnx", lambda m: _nan_initializer(m, ".bias", np.inf))),
    Case("eval-data-is-fifo", ["eval", "{S}/folded.pt", "--data", "p.npz"], 2, r"data p\.npz is not a regular file or folder \(a FIFO",
         _fifo("p.npz")),
    Case("eval-label-arabic-digit", ["eval", "{S}/folded.pt", "--data", "{S}/nolabels.npz", "--labels", "l.txt"], 2,
         r"line 1: '\u0663' is not a class index", _file("l.txt", "\u0663\n".encode() * 16)),
    Case("eval-labels-npy-1e300", ["eval", "{S}/folded.pt", "--data", "{S}/nolabels.npz", "--labels", "y.npy"], 2,
         r"class indices below 2,147,483,648, found 1e\+300", lambda s, c: np.save(c / "y.npy", np.full(16, 1e300))),
    Case("bench-csv-and-json-one-file", ["bench", "{S}/model.onnx", "--json", "r.json", "--csv", "r.json"], 2,
         r"--csv output r\.json would hold CSV"),
    # issue 19, the second fresh hostile run
    Case("demo-workdir-the-kernel-refuses", ["demo", "--workdir", "/proc/maxq-demo-hostile"], 2,
         r"cannot create --workdir /proc/maxq-demo-hostile: No such file|folder is not writable: /proc"),
    Case("quantize-onto-hard-link-into-calib-folder", ["quantize", "{S}/folded.pt", "-o", "l.pt", "--calib", "{S}/imgs"], 2,
         r"l\.pt is a hard link to a file inside the input folder .*imgs: refusing to change an input data set",
         _link("imgs/b/img0.png", "l.pt", hard=True)),
    Case("bench-absurd-iters", ["bench", "{S}/model.onnx", "--iters", "99999999999999999999999"], 2,
         r"iters must be between 1 and 1,000,000, got 99999999999999999999999"),
    Case("bench-absurd-seconds", ["bench", "{S}/model.onnx", "--seconds", "1e300"], 2, r"seconds must be a positive number up to"),
    Case("bench-absurd-warmup", ["bench", "{S}/model.onnx", "--warmup", "10000000000"], 2, r"warmup must be between 0 and 1,000,000"),
    Case("bench-batch-size-devanagari-digit", ["bench", "{S}/model.onnx", "--batch-sizes", "\u0967"], 2,
         r"batch sizes must be comma-separated positive integers like 1,8,32, got '\u0967'"),
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
    shared_root = _shared_root(tmp_path_factory)
    s = build_shared(shared_root / "hostile")
    work = shared_root / "hostile" / "run"
    record_file = shared_root / "hostile" / "run.json"
    with _lock(work):
        if not record_file.exists():
            record_file.write_text(json.dumps(_run_cases(s, work)))
    record = json.loads(record_file.read_text())
    record["temp"] = Path(record["temp"])
    return record


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared inputs of the hostile cases (built once per test session)."""
    return build_shared(_shared_root(tmp_path_factory) / "hostile")


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
        assert record["code"] == case.code, err  # 0, or 1 for a check that reports FAIL
        assert errors == []
    else:
        assert record["code"] == case.code, (record["code"], err)
        assert len(errors) == 1, out + err
        assert not [line for line in err.splitlines() if "\u2501" in line], err  # no half-drawn progress bar above it
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


#: A shell's background job (``cmd &`` without job control) starts with SIGINT ignored, and Python keeps an
#: inherited SIG_IGN: Ctrl-C would then never reach the CLI (it finishes, exit 0), as a user's shell would
#: also decide. The signal tests give the CLI a default SIGINT whatever started the test run.
_DEFAULT_SIGINT = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "runpy.run_module('maxq_deploy', run_name='__main__', alter_sys=True)")


def _signalable(argv: list[str]) -> list[str]:
    """``python -m maxq_deploy ARGS`` -> the same run with SIGINT handled by Python even if it was ignored."""
    assert argv[1:3] == ["-m", "maxq_deploy"], argv
    return [argv[0], "-c", _DEFAULT_SIGINT, *argv[3:]]


def _kill_mid_write(argv: list[str], out_dir: Path, sig: int, tmpdir: Path, attempts: int = 3) -> subprocess.CompletedProcess | None:
    """Start ``argv``, wait until its temp file appears in ``out_dir``, send ``sig``; None if it never showed."""
    env = dict(os.environ, TMPDIR=str(tmpdir), NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for _ in range(attempts):
        for p in out_dir.iterdir():
            p.unlink()
        proc = subprocess.Popen(_signalable(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
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
    assert left and all(re.match(r"^\.maxq-deploy-\d+\.\d+\.\w+-\d+-.*\.tmp$", n) for n in left), left  # pid, namespace, host
    # A neighbour sharing the folder from another container: its pid means nothing here (no such process in
    # this namespace) but it is alive and holds the lock on its temp file, which must stay.
    from maxq_deploy.core.files import _host, _pid_namespace

    alive = out_dir / f".maxq-deploy-{2**22 + 7}.{_pid_namespace() + 1}.{_host()}-0-other.pt.tmp"
    alive.write_bytes(b"in use")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)", str(alive)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        env = dict(os.environ, TMPDIR=str(tmpdir), NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        again = subprocess.run(_cli("fold", str(big_checkpoint), "-o", str(out_dir / "f.pt")), capture_output=True, text=True,
                               env=env, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(["f.pt", alive.name])  # the SIGKILLed run's temp went


# ------------------------------------------------------------------------------ machine events


_FULL_DISK_SCRIPT = r"""
set -u
mount -t tmpfs -o size=400k tmpfs "$MNT" || exit 99
cd "$MNT"
run() { "$PY" -m maxq_deploy "$@" >"$OUT/$1.out" 2>"$OUT/$1.err"; echo $? >"$OUT/$1.rc"; ls -A "$MNT" >"$OUT/$1.ls"; }
run fold "$S/mb.pth" -o f.pt
run export onnx "$S/folded.pt" -o m.onnx --input-size 32
head -c 409600 /dev/zero >"$MNT/filler" 2>/dev/null  # fills the disk to the last byte
rm -f "$OUT/filler.ls"
run bench "$S/model.onnx" --json r.json --iters 1 --warmup 0 --batch-sizes 1  # (the JSON: written after the run)
"""


@pytest.mark.slow
def test_full_disk_is_one_line_and_leaves_nothing(shared, tmp_path):
    """ENOSPC mid-write (a real 400 KiB tmpfs in a private mount namespace): one error line, exit 2, no
    temp file, for fold (torch's zip writer), export onnx and bench --json."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    env = dict(os.environ, MNT=str(mnt), OUT=str(out), S=str(shared), PY=sys.executable, NO_COLOR="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    done = subprocess.run(["unshare", "-rm", "sh", "-c", _FULL_DISK_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode == 99 or "unshare" in done.stderr and not (out / "fold.rc").exists():
        pytest.skip(f"no private tmpfs here (user namespaces disabled?): {done.stderr[-300:]}")
    for name, output in [("fold", "f.pt"), ("export", "m.onnx"), ("bench", "r.json")]:
        err = (out / f"{name}.err").read_text()
        assert (out / f"{name}.rc").read_text().strip() == "2", err
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and re.search(rf"cannot write {re.escape(output)}: No space left on device", errors[0]), err
        left = set((out / f"{name}.ls").read_text().split()) - {"filler"}
        assert left == set(), left  # no temp file, no partial output


def test_non_ascii_output_name_on_an_ascii_stdout(shared, tmp_path):
    """PYTHONIOENCODING=ascii under the C locale and an output named "ausgabe-ü.pt": the file is written and
    the report shows the name escaped, exit 0 (it was an internal error, exit 70, after the work was done)."""
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONIOENCODING="ascii", NO_COLOR="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    out = tmp_path / "ausgabe-\u00fc.pt"
    done = subprocess.run(_cli("fold", str(shared / "mb.pth"), "-o", out.name), capture_output=True, env=env, timeout=300,
                          cwd=tmp_path)  # a short relative name: the report never wraps it
    assert done.returncode == 0, done.stderr.decode("ascii", "replace")
    assert b"ausgabe-\\xfc.pt" in done.stdout, done.stdout
    assert out.is_file() and done.stderr == b""
    missing = subprocess.run(_cli("fold", str(tmp_path / "fehlt-\u00fc.pth"), "-o", str(tmp_path / "x.pt")), capture_output=True,
                             env=env, timeout=300)
    assert missing.returncode == 2 and missing.stderr.splitlines() == [b"error: checkpoint not found: " +
                                                                      str(tmp_path).encode() + b"/fehlt-\\xfc.pth"], missing.stderr


def test_report_on_a_full_disk_says_the_finished_output_is_complete(shared, tmp_path):
    """``fold ... > /dev/full``: the folded file is finished before the table fails to print, so the one
    error line must not claim an output was removed (it is there, whole, and loads)."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    out = tmp_path / "f.pt"
    env = dict(os.environ, NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    with open("/dev/full", "w") as full:
        done = subprocess.run(_cli("fold", str(shared / "mb.pth"), "-o", str(out)), stdout=full, stderr=subprocess.PIPE,
                              text=True, env=env, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert len(errors) == 1 and "No space left on device" in errors[0] and "every output file written is complete" in errors[0], errors
    folded = torch.load(out, map_location="cpu", weights_only=True)
    reference = torch.load(shared / "folded.pt", map_location="cpu", weights_only=True)
    assert folded["state_dict"].keys() == reference["state_dict"].keys()
    for key, value in reference["state_dict"].items():
        assert torch.equal(folded["state_dict"][key], value), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pt"]


@pytest.mark.slow
def test_checkpoint_rewritten_while_folded_is_no_sigbus(big_checkpoint, tmp_path):
    """A training job rewrites the checkpoint in place (truncate, write) while ``fold`` reads it: the input
    is never memory-mapped, so the run ends with exit 0 or one error line, never SIGBUS (exit 135 / -7)."""
    victim, out_dir = tmp_path / "ck.pth", tmp_path / "out"
    out_dir.mkdir()
    data = big_checkpoint.read_bytes()
    victim.write_bytes(data)
    env = dict(os.environ, NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
    proc = subprocess.Popen(_cli("fold", str(victim), "-o", str(out_dir / "f.pt")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        with open(victim, "r+b") as f:  # same inode, as `torch.save(path)` of a training loop does
            f.truncate(4096)
        time.sleep(0.02)
        with open(victim, "r+b") as f:
            f.write(data)
        time.sleep(0.02)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 2), (proc.returncode, err[-2000:])
    assert "Traceback" not in err
    if proc.returncode == 2:
        assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    assert not [p.name for p in out_dir.iterdir() if p.name.startswith(".maxq-deploy-")]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in os.listdir(f"/proc/{pid}/task") for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except OSError:
        return []


def _interrupt_once_running(argv: list[str], sig: int, ready: Callable[[subprocess.Popen, float], bool], tmpdir: Path,
                            group: bool) -> subprocess.CompletedProcess:
    """Start ``argv`` in its own session; once ``ready(proc, seconds since start)`` (the work loop runs), send
    ``sig`` to the whole process group (``group``: what Ctrl-C in a terminal does) or to the main process."""
    env = dict(os.environ, TMPDIR=str(tmpdir), NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), COLUMNS="200")
    start = time.monotonic()
    proc = subprocess.Popen(_signalable(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    while time.monotonic() - start < 240 and proc.poll() is None and not ready(proc, time.monotonic() - start):
        time.sleep(0.1)
    if proc.poll() is None:
        time.sleep(1.0)  # well inside the loop
        os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_interrupt_during_eval_with_workers_is_one_line(shared, tmp_path, signame):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM during ``eval`` with 2
    decoding workers: exit 128 + signal, one line, no worker traceback."""
    sig = getattr(signal, signame)
    data = tmp_path / "imgs"
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (data / f"c{c}").mkdir(parents=True)
        for i in range(300):
            Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(data / f"c{c}" / f"{i}.png")
    done = _interrupt_once_running(  # at 224x224 (the model's size): long enough to be interrupted
        _cli("eval", str(shared / "folded.pt"), "--data", str(data), "--workers", "2", "--batch-size", "4"),
        sig, lambda proc, elapsed: len(_children(proc.pid)) >= 2, tmp_path, group=sig == signal.SIGINT)
    assert done.returncode == 128 + sig, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and f"interrupted by {signame}" in errors[0], done.stderr[-3000:]


@pytest.mark.slow
def test_sigterm_during_bench_is_honoured(shared, tmp_path):
    """SIGTERM during a long ``bench`` ends it within seconds: exit 143, one line."""
    done = _interrupt_once_running(
        _cli("bench", str(shared / "model.onnx"), "--seconds", "120", "--warmup", "0", "--batch-sizes", "1"),
        signal.SIGTERM, lambda proc, elapsed: elapsed > 20, tmp_path, group=False)
    assert done.returncode == 143, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "interrupted by SIGTERM" in errors[0], done.stderr[-3000:]


@pytest.mark.slow
def test_parity_failure_names_the_users_output_not_a_scratch_path(shared, tmp_path, monkeypatch, capsys):
    """The ONNX Runtime target builds an intermediate graph in a scratch folder; when that graph fails its
    parity check the one error line names ``-o`` (and the step), never the scratch path (gone by then).
    Run through the real entry point with the int8 tolerance set to 0, so the check fails on any machine."""
    from maxq_deploy.cli.app import main
    from maxq_deploy.export import common

    monkeypatch.setitem(common.PARITY_TOLERANCE, "int8", 0.0)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "onnx", str(shared / "quant.pt"), "-o", "mine.onnx", "--target", "onnxruntime"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 1 and len(errors) == 1, err
    assert "mine.onnx" in errors[0] and "intermediate" in errors[0], errors[0]
    assert ".tmp.d" not in errors[0] and "tensorrt_qdq.onnx" not in errors[0], errors[0]
    assert list(tmp_path.iterdir()) == []
