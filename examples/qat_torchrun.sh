#!/usr/bin/env bash
# Sparsity-preserving QAT on several processes with torchrun (DistributedDataParallel; gloo on
# CPU, nccl on GPU). The 2:4 zeros stay exactly zero: updates are masked with the folded
# weights' own mask, and the pattern is checked on the INT8 weights at the end.
#
#   FOLDED=folded.pt TRAIN=imagenet/train/ VAL=imagenet/val/ NPROC=8 bash examples/qat_torchrun.sh
#
# With no FOLDED it folds the built-in digits example and trains 2 processes on the CPU.
set -euo pipefail
WORK=${WORK:-work-qat}
NPROC=${NPROC:-2}
EPOCHS=${EPOCHS:-1}
mkdir -p "$WORK"
if [ -z "${FOLDED:-}" ]; then
  eval "$(python "$(dirname "$0")/make_digits_example.py" --workdir "$WORK")"
  VAL=$TEST RESIZE=$SIZE
  FOLDED=$WORK/folded.pt
  maxq-deploy fold "$CKPT" -o "$FOLDED"
fi
SIZE=${SIZE:-224}
RESIZE=${RESIZE:-256}
set -x
# `python -m torch.distributed.run` is torchrun, run by the same python as maxq-deploy (a `torchrun`
# found first on PATH may belong to another Python without maxq_deploy).
python -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m maxq_deploy quantize "$FOLDED" -o "$WORK/qat.pt" --qat \
  --calib "$TRAIN" --train-data "$TRAIN" --val-data "$VAL" --epochs "$EPOCHS" --image-size "$SIZE" --resize "$RESIZE"
maxq-deploy verify "$WORK/qat.pt"
maxq-deploy eval "$FOLDED" "$WORK/qat.pt" --data "$VAL" --image-size "$SIZE" --resize "$RESIZE"
