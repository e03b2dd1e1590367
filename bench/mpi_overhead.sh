#!/usr/bin/env bash
# What running `vit classify` through MPI costs on one machine, and how many
# rows rank 0's writer can take (README "Several processes and hosts").
#
#  1. 1 process x 2 threads against mpirun -np 2 x 1 thread each, on the same
#     photos, interleaved over ROUNDS rounds: images/s of both (wall clock,
#     so mpirun's start and each rank's model load count, and the run's own
#     summary line, which times the batches only) and the ratio MPI / one
#     process as median [min-max] of the per-round ratios (> 1: MPI faster).
#     Every MPI output is compared with the single process's, byte for byte.
#  2. Rank 0's writer with the model stubbed out (VITC_MPI_BENCH_STUB: no
#     decoding, no forward pass, made-up probabilities; a benchmark switch,
#     not a user option) on a directory of ROWS empty .jpg files, -np 2 and
#     -np 3: rows/s, median [min-max] over the rounds. Rows carry 1000
#     probabilities from each rank to rank 0 (4 KB each, over TCP).
#
# usage: bench/mpi_overhead.sh [MODEL] [DIR] [ROUNDS] [ROWS]
#   MODEL defaults to ../shared/models/deit-tiny-patch16-224, DIR to
#   ../shared/imagenet-sample, ROUNDS to 3, ROWS to 50000.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-../shared/models/deit-tiny-patch16-224}
dir=${2:-../shared/imagenet-sample}
rounds=${3:-3}
rows=${4:-50000}
vit=$PWD/build/vit
[ -x "$vit" ] || { echo "mpi_overhead: build first (scripts/setup)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "mpi_overhead: mpirun is absent (scripts/setup installs openmpi-bin)" >&2; exit 1; }
[ -e "$model" ] || { echo "mpi_overhead: no model at $model" >&2; exit 1; }
# Open MPI refuses root without these (CI and this VM run as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun=(mpirun --oversubscribe --mca btl tcp,self)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

calc() { awk "BEGIN { print $1 }"; }
# median [min-max] of the numbers on stdin
spread() { sort -g | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                                            printf "%.2f [%.2f-%.2f]", m, v[1], v[NR] }'; }
# images/s from a summary line "vit classify: N files, F failed; load ... s; R images/s"
rate_of() { sed -n 's/.* s; \([0-9.]*\) images\/s$/\1/p' "$1" | tail -1; }

files=$(find "$dir" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | wc -l)
cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)
echo "date $(date -u '+%Y-%m-%d %H:%M UTC'); cpu: $cpu, $(nproc) cores; $(mpirun --version | head -1)"
echo "vit classify on $dir ($files images), model $model, -b 16; $rounds interleaved rounds"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %12s %12s %14s %14s\n' round "1x2 img/s" "2x1 img/s" "1x2 run img/s" "2x1 run img/s"
: > "$work/wall"; : > "$work/run"
for r in $(seq "$rounds"); do
  s=$(date +%s.%N)
  "$vit" classify -m "$model" -t 2 -b 16 -o "$work/one.csv" "$dir" 2> "$work/one.err" || true
  one_wall=$(calc "$files / ($(date +%s.%N) - $s)")
  s=$(date +%s.%N)
  "${mpirun[@]}" -np 2 "$vit" classify -m "$model" -t 1 -b 16 -o "$work/two.csv" "$dir" 2> "$work/two.err" || true
  two_wall=$(calc "$files / ($(date +%s.%N) - $s)")
  cmp -s "$work/one.csv" "$work/two.csv" || { echo "mpi_overhead: outputs differ in round $r" >&2; exit 1; }
  one_run=$(rate_of "$work/one.err"); two_run=$(rate_of "$work/two.err")
  printf '%-6s %12.1f %12.1f %14.1f %14.1f\n' "$r" "$one_wall" "$two_wall" "$one_run" "$two_run"
  calc "$two_wall / $one_wall" >> "$work/wall"
  calc "$two_run / $one_run" >> "$work/run"
done
echo "MPI 2x1 / one process 1x2, wall clock:   $(spread < "$work/wall")"
echo "MPI 2x1 / one process 1x2, batches only: $(spread < "$work/run")"
echo "outputs byte-identical in every round"

mkdir -p "$work/many"
(cd "$work/many" && seq -w 1 "$rows" | sed 's/$/.jpg/' | xargs touch)
for np in 2 3; do
  : > "$work/stub"
  for r in $(seq "$rounds"); do
    VITC_MPI_BENCH_STUB=1 "${mpirun[@]}" -np "$np" -x VITC_MPI_BENCH_STUB "$vit" classify -m "$model" \
      -t 1 -b 16 -o "$work/stub.csv" "$work/many" 2> "$work/stub.err" || true
    rate_of "$work/stub.err" >> "$work/stub"
  done
  echo "rank 0 writer, model stubbed, -np $np: $(spread < "$work/stub") rows/s (csv, -k 5, $rows rows)"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
