#!/usr/bin/env bash
# Training throughput of `vit train` (images/s through forward + backward +
# AdamW) on Fashion-MNIST, for the shipped model's shape and the 'small'
# preset, at 1 thread and all cores. One epoch of N images per setting.
#
# usage: bench/train_throughput.sh [N]   (N default 8192)
# With other programs busy on the cores, run with OMP_WAIT_POLICY=passive:
# spinning OpenMP threads then lose most of their time (bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-8192}
vit=build/vit
[ -x "$vit" ] || { echo "train_throughput: build first (scripts/setup)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-44s %8s %10s\n' "model" "threads" "images/s"
for arch in "tiny:--arch tiny --depth 6" "small:--arch small"; do
  name=${arch%%:*} opts=${arch#*:}
  for t in 1 "$(nproc)"; do
    line=$("$vit" train --data fashion-mnist --limit "$n" --epochs 1 -b 128 -t "$t" $opts \
           -o "$out/m.safetensors" 2>&1 | grep '^epoch 1/1:' || true)
    rate=$(echo "$line" | sed -n 's/.*(\([0-9.]*\) images\/s).*/\1/p')
    printf '%-44s %8s %10s\n' "$name ($opts)" "$t" "${rate:-failed}"
  done
done
