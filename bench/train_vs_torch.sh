#!/usr/bin/env bash
# Training throughput: `vit train` against the same training loop in PyTorch
# (bench/train_torch.py: same model, batch, threads, loss, AdamW, clipping,
# augmentation), interleaved vitc, torch, vitc, torch, ... for --rounds
# rounds, so that a shared machine's load hits both alike. Each run trains two
# epochs of N images and is timed on the second (the first warms up: page
# faults on the activation buffers, allocator caches); images/s = N / the
# second epoch's seconds, both engines' own epoch timers (first batch to last
# optimiser step, no validation or checkpoint).
#
# Shapes:
#   fmnist  the shipped model: D 64, 6 layers, 4 heads, MLP 128, patch 4,
#           28x28 grey Fashion-MNIST (flips), batch 128
#   deit    DeiT-Tiny: D 192, 12 layers, 3 heads, MLP 768, patch 16,
#           224x224 RGB (197 tokens), photos from ../shared/imagenet-sample in
#           10 class folders (random resized crop + flip), batch 32
#
# usage: bench/train_vs_torch.sh [--rounds R] [--shapes fmnist,deit] [-t T]
#          [--fmnist-images N] [--deit-images N] [--deit-batch B] [--vit PATH]
# Prints one row per round (with the share of torch's epoch spent building
# batches: decoding and augmenting on the training thread, as a DataLoader
# with num_workers=0; vitc decodes on its OpenMP threads) and a summary: median images/s of each engine and
# vitc/torch as median [min-max] of the per-round ratios (> 1: vitc faster).
# Both engines run with OMP_WAIT_POLICY=passive (both use libgomp): on a
# shared machine spinning threads lose most of their time (bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 shapes=fmnist,deit threads=$(nproc) fm_n=4096 deit_n=128 deit_b=32 vit=build/vit
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --shapes) shapes=$2; shift 2 ;;
    -t|--threads) threads=$2; shift 2 ;;
    --fmnist-images) fm_n=$2; shift 2 ;;
    --deit-images) deit_n=$2; shift 2 ;;
    --deit-batch) deit_b=$2; shift 2 ;;
    --vit) vit=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "train_vs_torch: unknown option $1" >&2; exit 1 ;;
  esac
done
py=/usr/bin/python3
[ -x "$vit" ] || { echo "train_vs_torch: build first (scripts/setup), or --vit PATH" >&2; exit 1; }
export OMP_WAIT_POLICY=passive
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# DeiT-shape data: class folders of symlinks to the shared photos (git-ignored
# cache), or synthetic JPEGs when the shared sample is missing.
deit_data=bench/.cache/train-imagenet10
if [[ ,$shapes, == *,deit,* ]] && [ ! -d "$deit_data" ]; then
  mkdir -p "$deit_data"
  if [ -d ../shared/imagenet-sample ]; then
    i=0
    for f in "$(cd ../shared/imagenet-sample && pwd)"/*.JPEG; do
      mkdir -p "$deit_data/c$((i % 10))"
      ln -s "$f" "$deit_data/c$((i % 10))/"
      i=$((i + 1))
    done
  else
    "$py" - "$deit_data" <<'EOF'
import os, sys
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for i in range(320):
    d = os.path.join(sys.argv[1], f"c{i % 10}")
    os.makedirs(d, exist_ok=True)
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(os.path.join(d, f"{i:04d}.jpg"), quality=90)
EOF
  fi
fi

# shape -> common model/data options (vit train and train_torch.py take the same)
shape_opts() {
  case $1 in
    fmnist) echo "--data fashion-mnist --dim 64 --depth 6 --heads 4 --mlp 128 --patch 4 -b 128 --limit $fm_n" ;;
    deit) echo "--data $deit_data --image-size 224 --patch 16 --dim 192 --depth 12 --heads 3 --mlp 768 -b $deit_b --limit $deit_n" ;;
  esac
}
shape_images() { case $1 in fmnist) echo "$fm_n" ;; deit) echo "$deit_n" ;; esac; }

# The second epoch's seconds from an "epoch 2/2: ..., S s (R images/s)" line.
epoch_seconds() { grep '^epoch 2/2:' | sed -n 's/.*, \([0-9.]*\) s (.*/\1/p'; }

run_vitc() { # shape
  "$vit" train $(shape_opts "$1") --epochs 2 -t "$threads" -o "$out/m.safetensors" 2>&1 | epoch_seconds
}
run_torch() { # shape -> "SECONDS DATA_SECONDS" of the second epoch
  "$py" bench/train_torch.py $(shape_opts "$1") --epochs 2 -t "$threads" 2>&1 |
    grep '^epoch 2/2:' | sed -n 's/.*, \([0-9.]*\) s (.*data \([0-9.]*\) s.*/\1 \2/p'
}
rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", n / s; else print "failed" }'; }

cpu=$(lscpu | sed -n 's/^Model name: *//p')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|fma|avx512f' | sort -u | tr '\n' ' ')
echo "date $(date -u '+%Y-%m-%d %H:%M UTC'); $threads threads; $rounds interleaved rounds; OMP_WAIT_POLICY=passive"
echo "cpu: $cpu, $(nproc) cores; flags: ${flags}"
echo "torch $("$py" -c 'import torch; print(torch.__version__)'); load average $(cut -d' ' -f1-3 /proc/loadavg) before"
echo "each run: 2 epochs of N images, images/s of the second"
echo
printf '%-7s %5s %6s %12s %12s %8s %14s\n' shape round N "vitc img/s" "torch img/s" ratio "torch data %"
declare -A ratios vrates trates
for shape in ${shapes//,/ }; do
  n=$(shape_images "$shape")
  for r in $(seq 1 "$rounds"); do
    vs=$(run_vitc "$shape" || true)
    read -r ts td < <(run_torch "$shape" || true) || true
    v=$(rate "$n" "${vs:-0}") t=$(rate "$n" "${ts:-0}")
    dpct=$(awk -v d="${td:-0}" -v s="${ts:-0}" 'BEGIN { if (s > 0) printf "%.1f", 100 * d / s; else print "-" }')
    ratio=$(awk -v a="$v" -v b="$t" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }')
    printf '%-7s %5s %6s %12s %12s %8s %14s\n' "$shape" "$r" "$n" "$v" "$t" "$ratio" "$dpct"
    vrates[$shape]+="$v " trates[$shape]+="$t " ratios[$shape]+="$ratio "
  done
done
median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
minmax() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%s-%s", lo, hi; else print "-" }'; }
echo
echo "load average $(cut -d' ' -f1-3 /proc/loadavg) after"
echo
printf '%-7s %12s %12s %22s %8s\n' shape "vitc img/s" "torch img/s" "vitc/torch [min-max]" target
for shape in ${shapes//,/ }; do
  case $shape in fmnist) target=2.5 ;; deit) target=1.3 ;; esac
  med=$(echo "${ratios[$shape]}" | median)
  met=$(awk -v m="$med" -v t="$target" 'BEGIN { print (m != "-" && m + 0 >= t) ? "met" : "missed" }')
  printf '%-7s %12s %12s %22s %8s\n' "$shape" "$(echo "${vrates[$shape]}" | median)" \
    "$(echo "${trates[$shape]}" | median)" "$med [$(echo "${ratios[$shape]}" | minmax)]" \
    ">=$target $met"
done
