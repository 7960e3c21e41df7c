#!/usr/bin/env bash
# Your own photos (PHOTOS/<person>/*.jpg, any size) to a trained model at 256x256.
#   pipelines/own-photos.sh PHOTOS [OUT_ROOT]
set -euo pipefail
raw=${1:?usage: own-photos.sh PHOTOS [OUT_ROOT]}
out=${2:-work/photos}
pg2kit prepare folder "$raw" -o "$out/prepared" --size 256x256 --test-identities 0.1
pg2kit pairs "$out/prepared" --protocol custom
pg2kit inspect "$out/prepared"
pg2kit train "$out/prepared" --preset deepfashion --stage both -o "$out/run"
