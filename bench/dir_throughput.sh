#!/usr/bin/env bash
# Directory throughput of `vit classify` at several batch sizes, on a folder
# of real photos, in one run: images/s and the ratio to the per-image rate
# (-b 1). Also shows what prefetching (decoding the next batch while the
# model runs) is worth.
#
# usage: bench/dir_throughput.sh [MODEL] [DIR] [REPEATS]
#   MODEL defaults to ../shared/models/deit-tiny-patch16-224,
#   DIR to ../shared/imagenet-sample; REPEATS (default 3) runs per setting,
#   the best kept.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-../shared/models/deit-tiny-patch16-224}
dir=${2:-../shared/imagenet-sample}
repeats=${3:-3}
vit=build/vit
[ -x "$vit" ] || { echo "dir_throughput: build first (scripts/setup)" >&2; exit 1; }
[ -e "$model" ] || { echo "dir_throughput: no model at $model" >&2; exit 1; }
files=$(find "$dir" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | wc -l)
out=$(mktemp)
trap 'rm -f "$out"' EXIT

calc() { awk "BEGIN { print $1 }"; } # floating point without bc

best_seconds() { # args: classify options...
  local best=
  for _ in $(seq "$repeats"); do
    local start end s
    start=$(date +%s.%N)
    "$vit" classify -q -m "$model" -o "$out" "$@" "$dir" >/dev/null 2>&1 || true
    end=$(date +%s.%N)
    s=$(calc "$end - $start")
    if [ -z "$best" ] || [ "$(calc "$s < $best")" = 1 ]; then best=$s; fi
  done
  echo "$best"
}

echo "vit classify on $dir ($files images), model $model, $(nproc) cores, $(date -u +%Y-%m-%d)"
printf '%-22s %10s %10s %8s\n' setting seconds images/s "vs b=1"
base=
for setting in "-b 1" "-b 8" "-b 16" "-b 32" "-b 16 --no-prefetch"; do
  # shellcheck disable=SC2086
  s=$(best_seconds $setting)
  rate=$(calc "$files / $s")
  [ -n "$base" ] || base=$rate
  printf '%-22s %10.2f %10.1f %7.2fx\n' "$setting" "$s" "$rate" "$(calc "$rate / $base")"
done
