#!/usr/bin/env bash
# DeepFashion In-shop from the raw download to a trained PG2 model, its test images and their scores.
#   pipelines/deepfashion.sh INSHOP_ROOT [OUT_ROOT] [extra prepare options, e.g. --crop176]
# INSHOP_ROOT holds img/, list_eval_partition.txt and, for the pose-transfer split, train.lst/test.lst.
set -euo pipefail
raw=${1:?usage: deepfashion.sh INSHOP_ROOT [OUT_ROOT] [extra prepare options]}
out=${2:-work/deepfashion}
shift $(( $# >= 2 ? 2 : 1 ))
pg2kit prepare deepfashion "$raw" -o "$out/prepared" "$@"
pg2kit pairs "$out/prepared" --protocol defgan
pg2kit inspect "$out/prepared"
pg2kit export "$out/prepared" -o "$out/defgan"
pg2kit train "$out/prepared" --preset deepfashion --stage both -o "$out/run"
pg2kit generate "$out/run" "$out/prepared" --split test -o "$out/generated" --strips
# IS, mask-IS, FID and LPIPS need weight files you download yourself (docs/evaluation.md);
# set INCEPTION_WEIGHTS / LPIPS_WEIGHTS / ALEXNET_WEIGHTS to use them, the rest runs without.
# PATN-era DeepFashion numbers padded 176-wide crops to 256 (inflates SSIM): add --pad-to-256
# to the evaluate line for that convention (only with --crop176 data).
weights=()
[[ -n "${INCEPTION_WEIGHTS:-}" ]] && weights+=(--inception-weights "$INCEPTION_WEIGHTS")
[[ -n "${LPIPS_WEIGHTS:-}" ]] && weights+=(--lpips-weights "$LPIPS_WEIGHTS")
[[ -n "${ALEXNET_WEIGHTS:-}" ]] && weights+=(--alexnet-weights "$ALEXNET_WEIGHTS")
pg2kit evaluate "$out/generated" --real "$out/prepared" "${weights[@]}"
