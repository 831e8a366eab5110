#!/usr/bin/env bash
# One prepared GPU check (< 8 min on a machine like the lent H200, project installed with
# `pip install --no-deps -e .`): the gpu/tensorrt tests, the torch 2:4 semi-structured
# dense-vs-sparse benchmark of ResNet-50 2:4 (fp16, bf16; batch 1, 64, 256, per-layer report)
# and, where TensorRT imports, the TensorRT dense-vs-sparse benchmark. JSON + a log go to $OUT
# when set (else ./gpu-check-out). Fails fast, with one line, without a CUDA GPU.
#
#   OUT=/path bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check-out}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
PY="${PYTHON:-python3}"
exec > >(tee -a "$LOG") 2>&1
echo "== gpu_check $(date -u +%FT%TZ) in $(pwd)"

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: no CUDA GPU visible to torch ($("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)' 2>&1)): nothing to check here"
  exit 2
fi
"$PY" - <<'PY' | tee "$OUT/environment.json"
import json, torch, platform
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0), "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
        "cusparselt": bool(getattr(torch.backends, "cusparselt", None) and torch.backends.cusparselt.is_available())}
try:
    import tensorrt
    info["tensorrt"] = tensorrt.__version__
except Exception as exc:  # noqa: BLE001
    info["tensorrt"] = f"not importable ({type(exc).__name__})"
print(json.dumps(info))
PY

status=0
step() {  # step NAME TIMEOUT_S CMD...: run with a time limit, keep going, remember failures
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  echo "== $name: rc=$rc in $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || status=1
}

step "pytest gpu/tensorrt" 180 "$PY" -m pytest -q -m "gpu or tensorrt" -p no:cacheprovider \
  --junitxml="$OUT/pytest_gpu.xml" tests
step "torch 2:4 semi-structured (resnet50)" 200 "$PY" benchmarks/gpu_torch_sparse.py --batches 1,64,256 \
  --dtypes float16,bfloat16 --seconds 1.0 --out "$OUT/torch_sparse_resnet50.json"
if "$PY" -c "import tensorrt" 2>/dev/null; then
  step "TensorRT dense vs sparse, INT8 and fp16" 360 "$PY" benchmarks/trt_sparse_benchmark.py --batches 1,8,64,256 \
    --min-seconds 1 --workdir "$OUT/trt-work" --out "$OUT/trt_sparse_resnet50.json"
else
  echo "== TensorRT dense vs sparse: skipped (tensorrt does not import here)"
fi
echo "== gpu_check done: status=$status, results in $OUT"
exit $status
