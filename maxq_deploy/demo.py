"""The whole pipeline in one call, on a built-in example or on the user's own checkpoint.

Built-in examples (:data:`EXAMPLES`, no GPU): a MaxQ ResNet-18 trained for a few epochs with the
reference layers, so every stage has a real accuracy to show. ``digits`` (the default, the
fastest, no download): 2:4 on scikit-learn's handwritten digits (upscaled to 32x32).
``fashion``: 2:4 on Fashion-MNIST (padded to 32x32, evaluated on all 10,000 test images, on every
CPU runtime installed); ``fashion-4of8``: the same network trained 4:8, folded with ``--project``
to 2:4. With ``checkpoint`` the same stages run on the user's MaxQ file
(calibration and evaluation need ``calib``/``eval_data``; without them calibration uses random
inputs and accuracy is not measured).

Stages: inspect -> fold -> verify -> PTQ int8 -> export ONNX (fp32, TensorRT Q/DQ int8, ONNX
Runtime int8) -> verify each -> eval each stage -> bench the ONNX graphs side by side -> the
trtexec line that builds the sparse engine on a GPU machine.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from maxq_deploy.data import Preprocess
from maxq_deploy.load.input_size import preprocess_for
from maxq_deploy.core.errors import DataError
from maxq_deploy.core.progress import SILENT, Progress


#: Largest --input-size the demo takes (an ImageNet network at 1024 px already needs GBs per batch).
MAX_DEMO_INPUT_SIZE = 1024


@dataclass(frozen=True)
class BuiltinExample:
    """A network the demo trains itself, and how its pipeline runs."""

    name: str
    data: str
    nm: str
    project: bool  # fold --project: the trained N:M is not 2:4
    onnx_backends: tuple[str, ...]  # the runtimes every ONNX graph is evaluated on (those installed)


EXAMPLES: dict[str, BuiltinExample] = {e.name: e for e in (
    BuiltinExample("digits", "digits", "2:4", False, ("onnxruntime",)),
    BuiltinExample("fashion", "Fashion-MNIST", "2:4", False, ("onnxruntime", "openvino")),
    BuiltinExample("fashion-4of8", "Fashion-MNIST", "4:8", True, ("onnxruntime", "openvino")),
)}


def builtin_example(name: str) -> BuiltinExample:
    """The built-in example called ``name``, or one line naming the known ones."""
    from maxq_deploy.core.errors import OptionError

    if name not in EXAMPLES:
        raise OptionError(f"unknown --example {name!r}; built-in examples: {', '.join(EXAMPLES)}")
    return EXAMPLES[name]


@dataclass
class DemoStep:
    """One stage of the pipeline and what it showed."""

    stage: str
    artifact: str | None
    ok: bool
    detail: str
    seconds: float


@dataclass
class StageAccuracy:
    stage: str
    model: str
    backend: str
    top1: float
    top5: float | None
    images: int


@dataclass
class DemoResult:
    workdir: Path
    checkpoint: Path
    steps: list[DemoStep] = field(default_factory=list)
    accuracy: list[StageAccuracy] = field(default_factory=list)
    bench: dict | None = None  # BenchResult.to_dict()
    trtexec: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)

    def summary(self) -> dict:
        return {
            "workdir": str(self.workdir),
            "checkpoint": str(self.checkpoint),
            "ok": self.ok,
            "steps": [asdict(s) for s in self.steps],
            "accuracy": [asdict(a) for a in self.accuracy],
            "bench": self.bench,
            "trtexec": self.trtexec,
        }


class _Recorder:
    """Runs one stage, timing it and recording its (ok, detail) in the result."""

    def __init__(self, result: DemoResult):
        self.result = result

    def step(self, stage: str, artifact: Path | None, fn):
        started = time.perf_counter()
        ok, detail, value = fn()
        self.result.steps.append(DemoStep(stage, str(artifact) if artifact else None, ok, detail, time.perf_counter() - started))
        return value


def _random_calibration(path: Path, size: int, count: int = 64, seed: int = 0) -> Path:
    """Random normalized images: enough to exercise calibration, useless for accuracy."""
    rng = np.random.default_rng(seed)
    np.save(path, rng.standard_normal((count, 3, size, size), dtype=np.float32))
    return path


def run_demo(
    workdir: str | os.PathLike[str] = "maxq-demo",
    checkpoint: str | os.PathLike[str] | None = None,
    calib: str | os.PathLike[str] | None = None,
    eval_data: str | os.PathLike[str] | None = None,
    eval_labels: str | os.PathLike[str] | None = None,
    input_size: int | None = None,
    preprocess: Preprocess | None = None,
    epochs: int = 3,
    bench_iters: int = 20,
    progress: Progress | None = None,
    *,
    example: str = "digits",
    train_images: int | None = None,
    dataset_root: str | os.PathLike[str] | None = None,
    eval_images: int | None = None,
) -> DemoResult:
    """Run every CPU stage of the pipeline and collect one summary.

    ``example`` names the built-in network trained when no ``checkpoint`` is given;
    ``train_images`` limits a Fashion-MNIST example's training set (default 12,000 of 60,000),
    ``dataset_root`` is where its IDX files are (default ``/usr/share/datasets/fashion-mnist``).
    ``eval_images`` evaluates every stage on that many images spread over the test set (default: all).
    """
    from maxq_deploy.bench import benchmark
    from maxq_deploy.load.maxq_checkpoint import load_checkpoint
    from maxq_deploy.evaluate import evaluate
    from maxq_deploy.export.tensorrt_form import export_onnx
    from maxq_deploy.export.ort_calibrated import export_ort_int8
    from maxq_deploy.fold import fold_checkpoint
    from maxq_deploy.quantize import quantize_ptq
    from maxq_deploy.tensorrt.trtexec import trtexec_for_onnx
    from maxq_deploy.verify import verify_artifact

    from maxq_deploy.core.files import Output, guard_outputs, make_output_folder
    from maxq_deploy.core.errors import OptionError

    progress = progress or SILENT
    work = Path(workdir)
    spec = builtin_example(example)
    if checkpoint is not None and example != "digits":
        raise OptionError(f"--example {example} trains its own network; leave it out with --checkpoint")
    if spec.data != "Fashion-MNIST" and (train_images is not None or dataset_root is not None):
        raise OptionError(f"--train-images and --dataset-root apply to the Fashion-MNIST examples, not --example {example}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise OptionError(f"--epochs must be a whole number >= 1, got {epochs!r}")
    if eval_images is not None and (isinstance(eval_images, bool) or not isinstance(eval_images, int) or eval_images < 1):
        raise OptionError(f"--eval-images must be a whole number >= 1, got {eval_images!r}")
    if input_size is not None and not 8 <= input_size <= MAX_DEMO_INPUT_SIZE:
        raise OptionError(f"--input-size must be between 8 and {MAX_DEMO_INPUT_SIZE} pixels, got {input_size}")
    written = ["random_calibration.npy", "folded.pt", "int8.pt", "model_fp32.onnx", "model_int8_qdq.onnx",
               "model_int8_ort.onnx", "bench.json", "bench.csv", "bench.png"]
    inputs = [checkpoint, calib, eval_data, eval_labels]
    guard_outputs([Output(work, what="--workdir", folder=True)], inputs)
    guard_outputs([Output(work / name, (), "demo output") for name in written], inputs, check_writable=False)  # made later
    given = load_checkpoint(checkpoint) if checkpoint is not None else None  # a wrong file fails before anything is made
    labels = eval_labels
    if checkpoint is None and spec.data == "Fashion-MNIST":
        from maxq_deploy.data.idx import FASHION_MEAN, FASHION_STD, fashion_mnist_files
        from maxq_deploy.reference.fashion import DEFAULT_TRAIN_LIMIT, prepare_fashion_example

        try:
            fashion_mnist_files(dataset_root)  # absent: one line saying how to get it, before anything is made
        except DataError as exc:
            raise DataError(f"{exc}; the demo takes that folder as --dataset-root") from None
        started = time.perf_counter()
        trained = prepare_fashion_example(work, nm=spec.nm, epochs=epochs, root=dataset_root, progress=progress,
                                          train_limit=DEFAULT_TRAIN_LIMIT if train_images is None else train_images)
        ckpt_path, calib, eval_data, size = trained.checkpoint, trained.train_npz, trained.test_npz, trained.image_size
        train_note = (f"MaxQ {spec.nm} resnet18 trained {epochs} epochs on {trained.train_images} Fashion-MNIST images "
                      f"in {trained.train_seconds:.0f} s: top-1 {trained.test_top1:.2f}% on the 10,000 test images")
        preprocess = preprocess or preprocess_for(None, size, resize=size, mean=(FASHION_MEAN,) * 3, std=(FASHION_STD,) * 3)
    elif checkpoint is None:
        from maxq_deploy.reference.train import DIGITS_MEAN, DIGITS_STD, prepare_digits_example

        started = time.perf_counter()
        trained = prepare_digits_example(work, epochs=epochs, progress=progress)
        ckpt_path, calib, eval_data, size = trained.checkpoint, trained.train_npz, trained.test_npz, trained.image_size
        train_note = f"MaxQ 2:4 resnet18 trained {epochs} epochs on digits: held-out top-1 {trained.test_top1:.1f}%"
        preprocess = preprocess or preprocess_for(None, size, resize=size, mean=(DIGITS_MEAN,) * 3, std=(DIGITS_STD,) * 3)
    else:
        ckpt_path, started, train_note = Path(checkpoint), None, None
        from maxq_deploy.load.input_size import artifact_input_size

        found = artifact_input_size(ckpt_path)  # 32 for a CIFAR ResNet, 224 for the ImageNet nets
        size = found.resolve(input_size or (preprocess.image_size if preprocess else None), "--input-size")
        preprocess = preprocess or found.preprocess(size)
    make_output_folder(work)  # after the input size was checked: a bad one leaves nothing behind
    result = DemoResult(work, ckpt_path)
    rec = _Recorder(result)
    if train_note:
        result.steps.append(DemoStep("train (reference layers)", str(ckpt_path), True, train_note, time.perf_counter() - started))
    calib_note = ""
    if calib is None:
        calib = _random_calibration(work / "random_calibration.npy", size)
        calib_note = " (random inputs: no calibration data given)"

    def inspect():
        ckpt = given if given is not None else load_checkpoint(ckpt_path)
        s = ckpt.summary()
        return True, f"{s['arch']}, {s['num_classes']} classes, N:M {s['nm']}, {s['sparse_layers']} sparse layers", ckpt

    rec.step("inspect", ckpt_path, inspect)
    folded_path = work / "folded.pt"

    project = checkpoint is None and spec.project

    def fold():
        r = fold_checkpoint(ckpt_path, folded_path, project=project)
        s = r.summary()
        detail = f"{s['sparse_layers']} sparse + {s['dense_layers']} dense conv-BN folded"
        if project:
            detail += f"; --project: {s['projected_layers']} layers {spec.nm} -> 2:4, {s['groups_changed']} groups changed"
        return True, detail, r  # whether 2:4 holds is the next step's verdict (verify folded)

    rec.step("fold", folded_path, fold)

    def check(path: Path):
        def run():
            report = verify_artifact(path)
            return report.ok, report.verdict, report
        return run

    rec.step("verify folded", folded_path, check(folded_path))
    int8_path = work / "int8.pt"

    def ptq():
        r = quantize_ptq(folded_path, int8_path, calib, calibrator="percentile", calib_batches=8, batch_size=32,
                         preprocess=preprocess, workers=0, progress=progress)
        return r.pattern_ok, f"percentile 99.99 on {r.calibration.images} images{calib_note}; INT8 weights hold 2:4 in {r.holding_layers}/{len(r.sparse_layers)} layers", r

    rec.step("quantize (PTQ int8)", int8_path, ptq)
    rec.step("verify int8 checkpoint", int8_path, check(int8_path))

    onnx_paths = {"fp32": work / "model_fp32.onnx", "int8 Q/DQ (TensorRT)": work / "model_int8_qdq.onnx",
                  "int8 (ONNX Runtime)": work / "model_int8_ort.onnx"}

    def export(source: Path, out: Path):
        def run():
            r = export_onnx(source, out, input_size=size)
            return r.parity.passed, f"{r.precision}, parity {r.parity.describe()}", r
        return run

    rec.step("export onnx fp32", onnx_paths["fp32"], export(folded_path, onnx_paths["fp32"]))
    rec.step("export onnx int8 Q/DQ", onnx_paths["int8 Q/DQ (TensorRT)"], export(int8_path, onnx_paths["int8 Q/DQ (TensorRT)"]))

    def export_ort():
        r = export_ort_int8(folded_path, onnx_paths["int8 (ONNX Runtime)"], calib, calib_batches=4, batch_size=16,
                            preprocess=preprocess, input_size=size, progress=progress)
        return r.parity.passed, f"uint8 activations{calib_note}, {r.parity.describe()}", r

    rec.step("export onnx int8 (ORT target)", onnx_paths["int8 (ONNX Runtime)"], export_ort)
    for name, path in onnx_paths.items():
        rec.step(f"verify onnx {name}", path, check(path))

    if eval_data is not None:
        stages = [("MaxQ checkpoint", ckpt_path, None), ("folded", folded_path, None), ("int8 fake-quant", int8_path, None)]
        backends = spec.onnx_backends if checkpoint is None else ("onnxruntime",)
        for backend in backends:
            if importlib.util.find_spec(backend) is None:
                result.steps.append(DemoStep(f"eval ONNX on {backend}", None, True, f"skipped: {backend} is not installed", 0.0))
                continue
            suffix = "" if backend == "onnxruntime" else f" on {backend}"
            # OpenVINO's default runs float parts in bf16 on CPUs with AMX/AVX-512 BF16 (3 of 2,000 Fashion
            # predictions flipped on one): f32 keeps the comparison one of runtimes, the same on every CPU
            spec_text = "openvino:f32" if backend == "openvino" else backend
            stages += [(f"ONNX {name}{suffix}", path, spec_text) for name, path in onnx_paths.items()]
        for stage, path, backend in stages:
            def run(path=path, stage=stage, backend=backend):
                r = evaluate(path, eval_data, labels=labels, backend=backend, preprocess=preprocess, batch_size=64, workers=0,
                             limit=eval_images)
                result.accuracy.append(StageAccuracy(stage, path.name, r.backend, r.top1, r.top5, r.images))
                return True, f"top-1 {r.top1:.2f}% on {r.images} images ({r.backend})", r
            try:
                rec.step(f"eval {stage}", path, run)
            except DataError as exc:  # user data that does not fit: report, keep going
                result.steps.append(DemoStep(f"eval {stage}", str(path), False, str(exc), 0.0))

    def bench():
        r = benchmark(list(onnx_paths.values()), batch_sizes=(1, 8), iters=bench_iters, warmup=5, progress=progress,
                      json_path=work / "bench.json", plot_path=work / "bench.png", csv_path=work / "bench.csv")
        data = r.to_dict()
        result.bench = data
        best = [m for m in r.measurements if m.batch == 8]
        detail = ", ".join(f"{r.models[m.model_index].label}: {m.throughput_ips:.0f} img/s" for m in best)
        return True, f"batch 8 on {os.cpu_count()} CPU cores: {detail}", r

    rec.step("bench onnxruntime (CPU)", work / "bench.json", bench)
    from maxq_deploy.runtimes.tensorrt_api import installed_tensorrt_version

    release = None if installed_tensorrt_version() else "11"  # without TensorRT here: the command for TensorRT 11
    for name in ("fp32", "int8 Q/DQ (TensorRT)"):
        engine = onnx_paths[name].with_suffix(".engine")
        result.trtexec.append(trtexec_for_onnx(onnx_paths[name], engine, trt_version=release).command_line)
    return result
