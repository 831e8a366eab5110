#!/usr/bin/env bash
# One prepared GPU check (< 8 min on a machine like the lent H200): installs the project where it
# runs, without network (see install_project below), then the gpu/tensorrt tests, the torch 2:4 semi-structured
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

# The device machine has torch, onnx, onnxruntime, typer, rich, pillow, scikit-learn and numpy,
# but no network: install the project alone (--no-deps), with the setuptools already there
# (--no-build-isolation: an isolated build would download setuptools) and no index at all.
# setuptools builds the PEP 660 editable wheel itself from 70.1 on; 64-70.0 also need `wheel`.
# The tests import maxq_deploy.cli, which exists only once the package is installed.
install_project() {
  if "$PY" -c "import maxq_deploy.cli, pathlib, sys; sys.exit(0 if pathlib.Path(maxq_deploy.__file__).resolve().parents[1] == pathlib.Path.cwd().resolve() else 1)" 2>/dev/null; then
    echo "== maxq-deploy already installed from $(pwd)"; return 0
  fi
  local why
  why=$("$PY" - <<'PY'
import importlib.util
try:
    import setuptools
except ImportError:
    print("no setuptools"); raise SystemExit
v = tuple(int(p) for p in setuptools.__version__.split(".")[:2] if p.isdigit())
if v < (64,):
    print(f"setuptools {setuptools.__version__} < 64 cannot make an editable install of a pyproject.toml project")
elif v < (70, 1) and importlib.util.find_spec("wheel") is None:
    print(f"setuptools {setuptools.__version__} < 70.1 needs the wheel package, which is not installed")
PY
)
  if [ -n "$why" ]; then
    echo "error: cannot install maxq-deploy without network: $why (pip install 'setuptools>=70.1' while online)"
    exit 2
  fi
  echo "== pip install --no-build-isolation --no-deps --no-index -e ."
  if ! "$PY" -m pip install --quiet --no-build-isolation --no-deps --no-index -e . > "$OUT/pip_install.log" 2>&1; then
    echo "error: pip install --no-build-isolation --no-deps --no-index -e . failed: $(grep -m1 -i error "$OUT/pip_install.log" || tail -n1 "$OUT/pip_install.log")"
    exit 2
  fi
}
install_project

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
