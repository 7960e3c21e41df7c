#!/usr/bin/env bash
# Your own photos (PHOTOS/<person>/*.jpg, any size) or videos to a trained model.
#   pipelines/own-photos.sh PHOTOS [OUT_ROOT]          photos, 256x256
#   pipelines/own-photos.sh --video VIDEOS [OUT_ROOT]  a video or a folder of videos, 128x64
set -euo pipefail
if [[ ${1:-} == --video ]]; then
  raw=${2:?usage: own-photos.sh --video VIDEOS [OUT_ROOT]}
  out=${3:-work/video}
  pg2kit prepare video "$raw" -o "$out/prepared" --every 5 --min-track 4 \
    --min-pose-change 0.05 --test-identities 0.1
  pg2kit pairs "$out/prepared" --protocol pg2
  pg2kit inspect "$out/prepared"      # contact sheet; prepare wrote inspect/tracks.png
  pg2kit train "$out/prepared" --preset market1501 --stage both -o "$out/run"
  exit 0
fi
raw=${1:?usage: own-photos.sh PHOTOS [OUT_ROOT]}
out=${2:-work/photos}
pg2kit prepare folder "$raw" -o "$out/prepared" --size 256x256 --test-identities 0.1
pg2kit pairs "$out/prepared" --protocol custom
pg2kit inspect "$out/prepared"
pg2kit train "$out/prepared" --preset deepfashion --stage both -o "$out/run"
