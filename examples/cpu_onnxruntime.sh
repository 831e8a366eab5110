#!/usr/bin/env bash
# The CPU-only path: a MaxQ checkpoint to a verified INT8 ONNX model served by ONNX Runtime,
# with accuracy checked at every stage and the speed-up measured side by side.
#
#   CKPT=maxq.pth.tar CALIB=calib_images/ EVAL=val_imagefolder/ bash examples/cpu_onnxruntime.sh
#
# With no CKPT it makes the built-in digits example (examples/make_digits_example.py).
# SIZE is the input resolution (224 for ImageNet); RESIZE the shorter side before the crop.
set -euo pipefail
WORK=${WORK:-work-cpu}
mkdir -p "$WORK"
if [ -z "${CKPT:-}" ]; then
  eval "$(python "$(dirname "$0")/make_digits_example.py" --workdir "$WORK")"
  CALIB=$TRAIN EVAL=$TEST RESIZE=$SIZE  # .npz arrays are already preprocessed NCHW float32
fi
SIZE=${SIZE:-224}
RESIZE=${RESIZE:-256}
set -x
maxq-deploy inspect "$CKPT"
maxq-deploy fold "$CKPT" -o "$WORK/folded.pt"
maxq-deploy verify "$WORK/folded.pt" > "$WORK/verify_folded.txt"
maxq-deploy export onnx "$WORK/folded.pt" -o "$WORK/fp32.onnx" --input-size "$SIZE"
maxq-deploy export onnx "$WORK/folded.pt" -o "$WORK/int8_ort.onnx" --target onnxruntime --precision int8 \
  --calib "$CALIB" --input-size "$SIZE" --resize "$RESIZE"
maxq-deploy verify "$WORK/int8_ort.onnx" > "$WORK/verify_int8.txt"
maxq-deploy eval "$CKPT" "$WORK/folded.pt" "$WORK/fp32.onnx" "$WORK/int8_ort.onnx" --data "$EVAL" \
  --image-size "$SIZE" --resize "$RESIZE"
maxq-deploy bench "$WORK/fp32.onnx" "$WORK/int8_ort.onnx" --batch-sizes 1,8 --iters 20 \
  --json "$WORK/bench.json" --plot "$WORK/bench.png"
