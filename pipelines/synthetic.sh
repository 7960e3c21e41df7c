#!/usr/bin/env bash
# The whole chain on the built-in synthetic figures: a CPU sanity check in a few minutes.
#   pipelines/synthetic.sh [OUT_ROOT]
set -euo pipefail
out=${1:-work/synth}
pg2kit prepare synthetic -o "$out/prepared" --ids 40 --poses 8
pg2kit pairs "$out/prepared" --protocol pg2
pg2kit inspect "$out/prepared"
pg2kit train "$out/prepared" --preset tiny --stage both -o "$out/run"
