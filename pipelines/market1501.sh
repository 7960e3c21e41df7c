#!/usr/bin/env bash
# Market-1501 from the raw download to a trained PG2 model, its test images and their scores.
#   pipelines/market1501.sh RAW_ROOT [OUT_ROOT] [--keypoints market-annotation-train.csv]
# RAW_ROOT is the unzipped Market-1501-v15.09.15 folder (bounding_box_train, bounding_box_test, query).
set -euo pipefail
raw=${1:?usage: market1501.sh RAW_ROOT [OUT_ROOT] [extra prepare options]}
out=${2:-work/market}
shift $(( $# >= 2 ? 2 : 1 ))
pg2kit prepare market1501 "$raw" -o "$out/prepared" "$@"
pg2kit pairs "$out/prepared" --protocol defgan
pg2kit inspect "$out/prepared"
pg2kit export "$out/prepared" -o "$out/defgan"
pg2kit train "$out/prepared" --preset market1501 --stage both -o "$out/run"
pg2kit generate "$out/run" "$out/prepared" --split test -o "$out/generated" --strips
# IS, mask-IS, FID and LPIPS need weight files you download yourself (docs/evaluation.md);
# set INCEPTION_WEIGHTS / LPIPS_WEIGHTS / ALEXNET_WEIGHTS to use them, the rest runs without.
weights=()
[[ -n "${INCEPTION_WEIGHTS:-}" ]] && weights+=(--inception-weights "$INCEPTION_WEIGHTS")
[[ -n "${LPIPS_WEIGHTS:-}" ]] && weights+=(--lpips-weights "$LPIPS_WEIGHTS")
[[ -n "${ALEXNET_WEIGHTS:-}" ]] && weights+=(--alexnet-weights "$ALEXNET_WEIGHTS")
pg2kit evaluate "$out/generated" --real "$out/prepared" "${weights[@]}"
