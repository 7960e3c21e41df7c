#!/usr/bin/env bash
# Market-1501 from the raw download to a trained PG2 model.
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
