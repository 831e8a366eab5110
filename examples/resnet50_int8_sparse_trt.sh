#!/usr/bin/env bash
# A ResNet-50 2:4 MaxQ checkpoint to a verified sparse INT8 TensorRT engine, with accuracy
# checked at every stage and the sparse engine measured against the dense one of the SAME
# Q/DQ graph. Needs an NVIDIA GPU (Ampere or newer) and `pip install tensorrt` (10.x or 11.x)
# for the engine steps; without them it stops after the ONNX steps and prints the trtexec line.
#
#   CKPT=best.resnet50.pth.tar CALIB=imagenet/calib/ EVAL=imagenet/val/ bash examples/resnet50_int8_sparse_trt.sh
#
# With no CKPT it runs on the built-in digits example (ResNet-18, 32x32) so the script itself
# can be tried anywhere.
set -euo pipefail
WORK=${WORK:-work-trt}
mkdir -p "$WORK"
if [ -z "${CKPT:-}" ]; then
  eval "$(python "$(dirname "$0")/make_digits_example.py" --workdir "$WORK")"
  CALIB=$TRAIN EVAL=$TEST RESIZE=$SIZE
fi
SIZE=${SIZE:-224}
RESIZE=${RESIZE:-256}
PRE=(--image-size "$SIZE" --resize "$RESIZE")
set -x
# 1-3: load, fold masks + BN into constant 2:4 weights, verify the pattern
maxq-deploy inspect "$CKPT"
maxq-deploy fold "$CKPT" -o "$WORK/folded.pt"
maxq-deploy verify "$WORK/folded.pt" --json > "$WORK/verify_folded.json"
# 4: INT8 PTQ (symmetric, per-channel weights, residual inputs quantized for Conv+Add fusion)
maxq-deploy quantize "$WORK/folded.pt" -o "$WORK/int8.pt" --calib "$CALIB" --calibrator percentile "${PRE[@]}"
maxq-deploy verify "$WORK/int8.pt" --json > "$WORK/verify_int8.json"
# 5: Q/DQ ONNX for TensorRT (explicit quantization: works with TensorRT 10 and 11)
maxq-deploy export onnx "$WORK/int8.pt" -o "$WORK/int8_qdq.onnx" --input-size "$SIZE"
maxq-deploy verify "$WORK/int8_qdq.onnx" --json > "$WORK/verify_onnx.json"
# 7: accuracy of every stage so far, side by side on the same images
maxq-deploy eval "$CKPT" "$WORK/folded.pt" "$WORK/int8.pt" "$WORK/int8_qdq.onnx" --data "$EVAL" "${PRE[@]}"
# 6: sparse and dense engines of the same graph, the sparse report, accuracy, speed
if ! python -c "import tensorrt, torch; assert torch.cuda.is_available()" 2>/dev/null; then
  set +x
  echo "no TensorRT or no CUDA GPU here: build the engines on a GPU machine with:"
  maxq-deploy export trt "$WORK/int8_qdq.onnx" -o "$WORK/int8_sparse.engine" --trtexec --trt-version 11
  exit 0
fi
maxq-deploy export trt "$WORK/int8_qdq.onnx" -o "$WORK/int8_sparse.engine" --timing-cache "$WORK/timing.cache"
maxq-deploy export trt "$WORK/int8_qdq.onnx" -o "$WORK/int8_dense.engine" --dense --timing-cache "$WORK/timing.cache"
maxq-deploy verify "$WORK/int8_sparse.engine"
maxq-deploy eval "$WORK/int8_sparse.engine" "$WORK/int8_dense.engine" --data "$EVAL" "${PRE[@]}"
maxq-deploy bench "$WORK/int8_dense.engine" "$WORK/int8_sparse.engine" --batch-sizes 1,8,64,256 \
  --json "$WORK/bench_trt.json" --plot "$WORK/bench_trt.png"
