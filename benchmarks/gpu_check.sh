#!/usr/bin/env bash
# Issue 13's GPU checks, in one go on a lent GPU machine (torch only: no Ray, no package index).
# About 5 minutes on an H100/H200; each step runs even if an earlier one failed. JSON in $OUT
# (default /tmp/gpu-check):
#   vcr_speed.json                 the real training path, the model alone on the same batches,
#                                  the input paths (packed and collate), softmax and teacher, and
#                                  whether the device path makes collate's batches bit for bit
#   gpu_fractional.json            1, 2, 4 trials on the GPU, end to end, no MPS
#   gpu_fractional-mps.json        the same under CUDA MPS
#
#   bash benchmarks/gpu_check.sh                 # QUESTIONS=6000 BATCHES=40 by default
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
QUESTIONS=${QUESTIONS:-6000}   # 5 GB of float16 text; the timed batches take 3,840 of them
BATCHES=${BATCHES:-40}
export OUT
mkdir -p "$OUT"
CACHE=$(mktemp -d /tmp/vcr-speed-XXXXXX)
stop_mps() { echo quit | nvidia-cuda-mps-control >/dev/null 2>&1 || true; }
trap 'stop_mps; rm -rf "$CACHE"' EXIT

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
python -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
# collate with 0 workers only: its workers push ~0.4 GB batches through /dev/shm
python benchmarks/vcr_speed.py --device cuda --questions "$QUESTIONS" --batches "$BATCHES" \
    --workers 0 --compare-shuffle --cache "$CACHE" || echo "vcr_speed failed"
python benchmarks/gpu_fractional.py --method softmax --questions "$QUESTIONS" \
    --batches "$BATCHES" --cache "$CACHE" || echo "gpu_fractional failed"
if nvidia-cuda-mps-control -d; then
    python benchmarks/gpu_fractional.py --method softmax --questions "$QUESTIONS" \
        --batches "$BATCHES" --cache "$CACHE" --label=-mps || echo "gpu_fractional (MPS) failed"
    stop_mps
else
    echo "CUDA MPS did not start: no MPS figures" | tee "$OUT/mps-failed.txt"
fi
