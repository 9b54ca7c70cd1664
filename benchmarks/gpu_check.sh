#!/usr/bin/env bash
# The GPU checks of issues 13 and 14, in one go on a lent GPU machine (torch only: no Ray, no
# package index). About 7 minutes on an H100/H200; each step runs even if an earlier one failed.
# JSON in $OUT (default /tmp/gpu-check):
#   vcr_speed.json                 the real training path, the model alone on the same batches,
#                                  the input paths (packed and collate), softmax and teacher, and
#                                  whether the device path makes collate's batches bit for bit
#   gpu_fractional.json            1, 2, 4 trials on the GPU, end to end, no MPS
#   gpu_fractional-mps.json        the same under CUDA MPS
#   gpu_extract.json               feature extraction: BERT-base-sized text, ResNet-50 at
#                                  768x384 on 1920-wide JPEGs; projected time for all of VCR
#
# First, here (the GPU machine has no MiniLM package): the tokenizer and BERT-base's config,
#   .venv/bin/python benchmarks/gpu_extract.py --prepare .gpu-assets
# then run it there with carry [".gpu-assets"]:
#   bash benchmarks/gpu_check.sh                 # QUESTIONS=6000 BATCHES=40 ITEMS=3000
#   CHECKS=extract bash benchmarks/gpu_check.sh  # one part only (train, extract)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
QUESTIONS=${QUESTIONS:-6000}   # 5 GB of float16 text; the timed batches take 3,840 of them
BATCHES=${BATCHES:-40}
ITEMS=${ITEMS:-3000}           # extraction: 60,000 text pairs, ~1,000 images
CHECKS=${CHECKS:-train extract}
export OUT
mkdir -p "$OUT"
CACHE=$(mktemp -d /tmp/vcr-speed-XXXXXX)
stop_mps() { echo quit | nvidia-cuda-mps-control >/dev/null 2>&1 || true; }
trap 'stop_mps; rm -rf "$CACHE"' EXIT

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.csv"
python -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
if [[ " $CHECKS " == *" extract "* ]]; then
    python benchmarks/gpu_extract.py --assets .gpu-assets --device cuda --items "$ITEMS" \
        --out "$OUT/gpu_extract.json" || echo "gpu_extract failed"
fi
[[ " $CHECKS " == *" train "* ]] || exit 0
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
