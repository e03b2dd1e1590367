#!/usr/bin/env bash
# mpirun vit train against one process: training images/s of 2 ranks x 1
# thread and 1 process x 2 threads on the shipped model's shape (--arch tiny
# --depth 6, batch 128, Fashion-MNIST), in interleaved rounds; with
# --allgather also 2 ranks summing by MPI_Allgather instead of gather +
# broadcast (cli/mpi_train.c). Each run trains 2 epochs of N images and is
# timed on the second (its own epoch line, which under MPI also gives the
# seconds rank 0 spent in gradient sums, waits for the other rank included).
#
# usage: bench/train_mpi.sh [--rounds R] [--images N] [--allgather]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 n=4096 allgather=0
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    --images) n=$2; shift 2 ;;
    --allgather) allgather=1; shift ;;
    *) echo "usage: bench/train_mpi.sh [--rounds R] [--images N] [--allgather]" >&2; exit 1 ;;
  esac
done
vit=build/vit
[ -x "$vit" ] || { echo "train_mpi: build first (scripts/setup)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "train_mpi: needs mpirun (openmpi-bin)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export OMP_WAIT_POLICY=passive
# As CI runs (as root); only for this benchmark, never in the program.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args=(train --data fashion-mnist --limit "$n" --epochs 2 -b 128 --arch tiny --depth 6 --seed 0)

# "images/s sum-seconds" of the second epoch's line.
rate() { sed -n 's/^epoch 2\/2:.*(\([0-9.]*\) images\/s\(; \([0-9.]*\) s in gradient sums\)\{0,1\}).*/\1 \3/p'; }

echo "date $(date -u '+%Y-%m-%d %H:%M UTC'); $rounds interleaved rounds; $n images an epoch; OMP_WAIT_POLICY=passive"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg) before"
printf '%-6s %14s %14s %10s %8s' round "1x2 img/s" "2x1 img/s" "sums s" ratio
[ "$allgather" = 1 ] && printf ' %14s %10s' "allgather" "sums s"
echo
for r in $(seq 1 "$rounds"); do
  one=$("$vit" "${args[@]}" -t 2 -o "$out/a.safetensors" 2>&1 | rate)
  two=$(mpirun --oversubscribe -np 2 --bind-to none --mca btl tcp,self "$vit" "${args[@]}" -t 1 \
        -o "$out/b.safetensors" 2>&1 | rate)
  set -- $one; a=$1
  set -- $two; b=$1 s=${2:-?}
  printf '%-6s %14s %14s %10s %8.2f' "$r" "$a" "$b" "$s" "$(echo "$b / $a" | bc -l)"
  if [ "$allgather" = 1 ]; then
    three=$(VITC_MPI_TRAIN_SUM=allgather mpirun --oversubscribe -np 2 --bind-to none \
            --mca btl tcp,self "$vit" "${args[@]}" -t 1 -o "$out/c.safetensors" 2>&1 | rate)
    set -- $three
    printf ' %14s %10s' "$1" "${2:-?}"
  fi
  echo
done
