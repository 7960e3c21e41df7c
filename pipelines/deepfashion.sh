#!/usr/bin/env bash
# DeepFashion In-shop from the raw download to a trained PG2 model.
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
