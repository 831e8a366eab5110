"""Run a serialized TensorRT engine on NCHW batches (``runtimes.base.Runner``).

Device buffers are torch CUDA tensors and the engine runs on a torch CUDA stream, so no
pycuda / cuda-python is needed: ``set_input_shape`` -> ``set_tensor_address`` (``data_ptr()``)
-> ``execute_async_v3(stream.cuda_stream)`` -> synchronize. Same calls in TensorRT 10.x and 11.x.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from maxq_deploy.core.files import check_input_file
from maxq_deploy.core.errors import BackendUnavailableError, EngineRunError, InputFileError
from maxq_deploy.runtimes import tensorrt_api as _trt
from maxq_deploy.runtimes.base import ModelInfo, Runner

#: TensorRT DataType member name -> torch dtype attribute name.
_TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
                 "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}


def engine_from_file(trt: Any, runtime: Any, logger: Any, path: Path, since: int = 0) -> Any:
    """Deserialize an engine file; one line naming the likely cause when TensorRT refuses it.

    ``since``: the logger mark before this load, so only its own errors are quoted.
    """
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        errors = "; ".join(logger.errors(since)[-2:])
        raise InputFileError(
            f"TensorRT {trt.__version__} cannot load {path} (built by another TensorRT version or "
            f"for another GPU? rebuild it with maxq-deploy export trt)" + (f": {errors}" if errors else "")
        )
    return engine


class TensorRTRunner(Runner):
    """One engine, one execution context, one CUDA stream; ``run`` is synchronous."""

    def __init__(self, path: str | os.PathLike[str], device: str = "cuda"):
        self.engine_path = check_input_file(path, "TensorRT engine")
        trt = _trt.import_tensorrt()
        _trt.require_cuda_gpu("running a TensorRT engine", need_torch_cuda=True)
        import torch

        self._trt, self._torch = trt, torch
        self._device = torch.device(device)
        if self._device.type != "cuda":
            raise EngineRunError(f"TensorRT engines run on a CUDA device, got device={device!r}")
        self._logger = _trt.shared_logger(trt)  # one per process: TensorRT keeps the first it was given
        since = self._logger.mark()
        with torch.cuda.device(self._device):
            self._runtime = trt.Runtime(self._logger)
            self._engine = engine_from_file(trt, self._runtime, self._logger, self.engine_path, since)
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise EngineRunError(f"TensorRT could not create an execution context for {self.engine_path} (out of GPU memory?)")
            self._stream = torch.cuda.Stream(device=self._device)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1 or not self.outputs:
            raise InputFileError(
                f"{self.engine_path}: expected one image input and at least one output, got inputs {self.inputs} and outputs {self.outputs}"
            )
        lo, _opt, hi = self.profile_shapes()
        name = self.inputs[0]
        out_shape = [int(d) for d in self._engine.get_tensor_shape(self.outputs[0])]
        input_type = str(self._torch_dtype(name)).replace("torch.", "")
        self.info = ModelInfo(
            backend="tensorrt",
            backend_version=str(trt.__version__),
            device=str(device),
            model_kind="tensorrt-engine",
            path=self.engine_path,
            input_name=name,
            input_shape=tuple(a if a == b else None for a, b in zip(lo[1:], hi[1:])),  # type: ignore[arg-type]
            input_dtype=np.dtype(input_type if input_type != "bfloat16" else "float32"),  # numpy has no bfloat16
            batch_range=(int(lo[0]), int(hi[0])),
            num_classes=out_shape[-1] if out_shape and out_shape[-1] > 0 else None,
        )

    def _torch_dtype(self, tensor_name: str) -> Any:
        dtype = self._engine.get_tensor_dtype(tensor_name)
        name = getattr(dtype, "name", str(dtype)).split(".")[-1]
        if name not in _TORCH_DTYPES:
            raise EngineRunError(f"{self.engine_path}: tensor {tensor_name!r} has TensorRT type {name}, which this runner cannot hold")
        return getattr(self._torch, _TORCH_DTYPES[name])

    def profile_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes of profile 0."""
        shapes = self._engine.get_tensor_profile_shape(self.inputs[0], 0)
        return tuple(tuple(int(d) for d in s) for s in shapes)  # type: ignore[return-value]

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        lo, _opt, hi = self.profile_shapes()
        if len(shape) != len(lo) or any(not (a <= s <= b) for s, a, b in zip(shape, lo, hi)):
            raise EngineRunError(
                f"batch of shape {'x'.join(map(str, shape))} is outside the engine's profile "
                f"{'x'.join(map(str, lo))} .. {'x'.join(map(str, hi))}; rebuild with --min-batch/--max-batch"
            )

    def run_device(self, x: Any) -> Any:
        """Run on a CUDA tensor and return the first output as a CUDA tensor, without syncing the host.

        The work is queued on this runner's stream after the caller's current stream, so a
        benchmark can time pure engine execution (no host copies) with CUDA events.
        """
        torch = self._torch
        if self._context is None:
            raise EngineRunError(f"{self.engine_path}: runner is closed")
        name = self.inputs[0]
        self._check_shape(tuple(x.shape))
        want = self._torch_dtype(name)
        with torch.cuda.device(self._device):
            self._stream.wait_stream(torch.cuda.current_stream(self._device))
            with torch.cuda.stream(self._stream):
                x = x.to(self._device, dtype=want).contiguous()
                if not self._context.set_input_shape(name, tuple(x.shape)):
                    raise EngineRunError(f"TensorRT rejected input shape {tuple(x.shape)} for {name!r}")
                self._context.set_tensor_address(name, x.data_ptr())
                outputs = {}
                for out in self.outputs:
                    shape = tuple(int(d) for d in self._context.get_tensor_shape(out))
                    if any(d < 0 for d in shape):
                        raise EngineRunError(f"TensorRT could not infer the shape of output {out!r} ({shape})")
                    buf = torch.empty(shape, dtype=self._torch_dtype(out), device=self._device)
                    self._context.set_tensor_address(out, buf.data_ptr())
                    outputs[out] = buf
                since = self._logger.mark()
                if not self._context.execute_async_v3(self._stream.cuda_stream):
                    errors = "; ".join(self._logger.errors(since)[-2:])
                    raise EngineRunError(f"TensorRT failed to run {self.engine_path}" + (f": {errors}" if errors else ""))
            caller = torch.cuda.current_stream(self._device)
            x.record_stream(self._stream)  # the caller's input may be freed while the engine still reads it
            for buf in outputs.values():
                buf.record_stream(caller)  # made on the runner's stream, used on the caller's
            caller.wait_stream(self._stream)
        return outputs[self.outputs[0]]

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        x_np = np.ascontiguousarray(batch)
        self._check_shape(tuple(x_np.shape))
        x = torch.from_numpy(x_np).to(self._device)
        first = self.run_device(x)
        torch.cuda.synchronize(self._device)
        return first.float().cpu().numpy() if first.is_floating_point() else first.cpu().numpy()

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None


def open_tensorrt_runner(path: Path, device: str | None = None, threads: int | None = None) -> TensorRTRunner:
    """``open_runner``'s opener for engines; TensorRT runs on CUDA only (``threads`` does not apply)."""
    device = device or "cuda"
    if not device.startswith("cuda"):
        raise BackendUnavailableError(f"TensorRT runs on CUDA devices only, not {device!r}; use --device cuda")
    return TensorRTRunner(path, device=device)
