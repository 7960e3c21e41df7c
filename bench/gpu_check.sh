#!/usr/bin/env bash
# One prepared device check of the trainer (issue 9): samples/s of G1 and G2+D at 128x64 batch
# 16/64 and 256x256 batch 1/8, fp32 eager vs the optimised path, MFU, projected schedules.
# Needs only torch (+ numpy) from the device's Python; nothing is installed. Under 8 minutes:
# measurements run in priority order (what the projections need first) and each starts only if
# the --budget seconds still hold its expected cost (the rest are printed as skipped).
#
#   bash bench/gpu_check.sh                       # on the GPU machine
#   GPU_CHECK_SMOKE=1 bash bench/gpu_check.sh     # tiny CPU smoke run (~1-2 min): proves the
#                                                 # script works; compiled path on aot_eager
#   bash bench/gpu_check.sh --compile max-autotune --budget 300
#
# Results also go to $OUT/gpu_check.json when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
# inductor's cache in a private folder, so a fresh machine compiles once per shape
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/pg2kit-inductor}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm \
    --format=csv,noheader || true
budget=420
exec timeout 470 python bench/gpu_check.py --budget "$budget" "$@"
