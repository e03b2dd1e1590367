#!/usr/bin/env bash
# Load test of `vit serve` with wrk (bench/serve_load.lua POSTs the photos):
# images/s at concurrency 1, 8 and 32 against `vit classify` on the same
# photos as a directory, interleaved (serve, classify, serve, classify ...)
# so that a machine whose load changes affects both alike, and p50/p99
# latency at each concurrency. Every request is one image.
#
# usage: bench/serve_load.sh [MODEL] [DIR] [SECONDS] [ROUNDS]
#        bench/serve_load.sh --soak [SECONDS] [MODEL] [DIR]
#   MODEL defaults to ../shared/models/deit-tiny-patch16-224, DIR to
#   ../shared/imagenet-sample (its JPEGs); SECONDS (default 20) per wrk run;
#   ROUNDS (default 2) of the whole interleaved series.
#   --soak: SECONDS (default 300) at concurrency 8 with every 5th request a
#   broken image (truncated, random bytes, empty, text), while
#   bench/serve_hostile.py attacks the same server (decompression bombs,
#   300,000-part bodies, 64 slowloris sockets, slow bodies, malformed
#   heads) and sends a normal photo every second; the server runs with
#   its default limits (64 connections, --decode-mb 384, --bodies-mb 128).
#   RSS sampled every 5 s. Passes when: every wrk answer is 200 or the
#   400/422 of a broken image, with no socket error; every one of the
#   normal client's photos is answered 200; the highest RSS sample stays
#   under the README's bound (RSS after warm-up + --decode-mb + --bodies-mb
#   + --queue input tensors); and the RSS at the end is within 20% of the
#   RSS after warm-up.
# Environment: SERVE_BATCH (-b for both, default 32), SERVE_WAIT_MS
# (--max-wait-ms, default 5), THREADS (-t for both, default all cores).
set -euo pipefail
cd "$(dirname "$0")/.."
soak=0
if [ "${1:-}" = "--soak" ]; then
  soak=1
  shift
  seconds=${1:-300}
  model=${2:-../shared/models/deit-tiny-patch16-224}
  dir=${3:-../shared/imagenet-sample}
else
  model=${1:-../shared/models/deit-tiny-patch16-224}
  dir=${2:-../shared/imagenet-sample}
  seconds=${3:-20}
fi
rounds=${4:-2}
batch=${SERVE_BATCH:-32}
wait_ms=${SERVE_WAIT_MS:-5}
threads=${THREADS:-$(nproc)}
vit=build/vit
command -v wrk >/dev/null || { echo "serve_load: wrk is not installed (scripts/setup)" >&2; exit 1; }
[ -x "$vit" ] || { echo "serve_load: build first (scripts/setup)" >&2; exit 1; }
[ -e "$model" ] || { echo "serve_load: no model at $model (../shared is not here?)" >&2; exit 1; }
[ -d "$dir" ] || { echo "serve_load: no photos at $dir" >&2; exit 1; }

work=$(mktemp -d)
server=
cleanup() {
  [ -z "$server" ] || kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
calc() { awk "BEGIN { print $1 }"; }

find "$dir" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) | sort |
  sed 's/^/good /' > "$work/list"
files=$(wc -l < "$work/list")
[ "$files" -gt 0 ] || { echo "serve_load: no photos in $dir" >&2; exit 1; }

start_server() { # args: extra serve options
  "$vit" serve -m "$model" --port 0 -b "$batch" --max-wait-ms "$wait_ms" -t "$threads" \
    "$@" 2> "$work/serve.log" &
  server=$!
  for _ in $(seq 600); do
    port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\)$|\1|p' "$work/serve.log")
    [ -n "$port" ] && return 0
    kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "serve_load: vit serve did not start" >&2
  exit 1
}

stop_server() {
  kill -TERM "$server"
  local status=0
  wait "$server" || status=$?
  server=
  [ "$status" -eq 0 ] || { echo "serve_load: vit serve exited $status" >&2; cat "$work/serve.log" >&2; exit 1; }
}

run_wrk() { # args: connections seconds broken_every; prints the RESULT fields
  local c=$1 t=$(( $1 < 4 ? $1 : 4 ))
  wrk -t "$t" -c "$c" -d "${2}s" --timeout 60s -s bench/serve_load.lua \
    "http://127.0.0.1:$port" -- "$work/list" "$3" /classify > "$work/wrk.out" 2>&1 ||
    { cat "$work/wrk.out" >&2; exit 1; }
  sed -n 's/^RESULT //p' "$work/wrk.out"
}

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

if [ "$soak" = 1 ]; then
  # Broken images: each kind the decoder refuses.
  first=$(sed -n '1s/^good //p' "$work/list")
  head -c 2000 "$first" > "$work/truncated.jpg"
  head -c 5000 /dev/urandom > "$work/random.bin"
  : > "$work/empty.jpg"
  echo "not an image" > "$work/text.png"
  printf 'broken %s\n' "$work/truncated.jpg" "$work/random.bin" "$work/empty.jpg" "$work/text.png" >> "$work/list"
  start_server
  echo "vit serve soak: $seconds s at concurrency 8, every 5th request broken, with hostile clients" \
       "(bench/serve_hostile.py); model $model, $files photos, $(nproc) cores," \
       "$(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  run_wrk 8 5 5 > /dev/null # warm-up: buffers, the context, OpenMP's threads
  rss() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$server/status"; }
  rss0=$(rss)
  metric() { curl -s "http://127.0.0.1:$port/metrics" | sed -n "s/^$1 //p"; }
  # The README's bound: what the budgets allow on top of the warm server,
  # and the input tensors the queue may hold (3 x size x size float32 each).
  size=$(curl -s "http://127.0.0.1:$port/info" | sed -n 's/.*"image_size":\([0-9]*\).*/\1/p')
  bound=$(awk "BEGIN { printf \"%d\", $rss0 + ($(metric vit_decode_budget_bytes) + \
               $(metric vit_body_budget_bytes) + $(metric vit_queue_capacity) * 12 * $size * $size) / 1024 }")
  ( while sleep 5; do echo "$(date +%s) $(rss)"; done ) > "$work/rss" 2>/dev/null &
  sampler=$!
  /usr/bin/python3 bench/serve_hostile.py "$port" "$seconds" "$first" > "$work/hostile.out" 2>&1 &
  hostile=$!
  result=$(run_wrk 8 "$seconds" 5)
  wait "$hostile" || { cat "$work/hostile.out" >&2; exit 1; }
  # The last bombs may still be decoding: the end is measured once idle.
  for _ in $(seq 120); do
    [ "$(metric vit_decode_bytes_in_use)" = 0 ] && [ "$(metric vit_requests_in_flight)" = 1 ] && break
    sleep 1
  done
  kill "$sampler" 2>/dev/null || true
  rss1=$(rss)
  max=$(awk 'BEGIN { m = 0 } $2 > m { m = $2 } END { print m }' "$work/rss")
  hostile_result=$(sed -n 's/^RESULT //p' "$work/hostile.out")
  metrics=$(curl -s "http://127.0.0.1:$port/metrics" |
            grep '^vit_requests_total\|^vit_decode_\|^vit_body_\|^vit_connections_' || true)
  stop_server
  echo "wrk: requests $(field "$result" requests), non-2xx $(field "$result" non2xx)," \
       "socket errors $(field "$result" socket_errors);" \
       "by status:$(echo "$result" | tr ' ' '\n' | sed -n 's/^s\([0-9]*\)=/ \1: /p' | tr '\n' ',')"
  echo "normal client (a photo a second, new connection each): $(field "$hostile_result" normal_ok)" \
       "of $(field "$hostile_result" normal_total) answered 200, slowest" \
       "$(field "$hostile_result" normal_max_ms) ms, longest stretch without a 200" \
       "$(field "$hostile_result" normal_gap_s) s"
  echo "hostile clients: $(echo "$hostile_result" | tr ' ' '\n' | grep -v '^normal_' | tr '\n' ' ')"
  echo "RSS after warm-up ${rss0} KiB, at the end ${rss1} KiB, highest sample ${max} KiB" \
       "($(wc -l < "$work/rss") samples); bound ${bound} KiB"
  # The trend tells a leak (still climbing at the end) from a high-water mark.
  echo "RSS every 30 s (KiB): $(awk 'NR % 6 == 0 { printf "%s ", $2 }' "$work/rss")"
  echo "$metrics"
  ok=1
  other=$(echo "$result" | tr ' ' '\n' | grep '^s[0-9]*=' | grep -v '^s200=\|^s400=\|^s422=' || true)
  [ -z "$other" ] || { echo "unexpected answers to wrk: $other"; ok=0; }
  [ "$(field "$result" socket_errors)" = 0 ] || { echo "wrk socket errors"; ok=0; }
  [ "$(field "$hostile_result" normal_ok)" = "$(field "$hostile_result" normal_total)" ] &&
    [ "$(field "$hostile_result" normal_total)" -gt 0 ] || { echo "normal photos not all answered"; ok=0; }
  [ "$(calc "$max <= $bound")" = 1 ] || { echo "RSS over the bound"; ok=0; }
  [ "$(calc "$rss1 <= 1.2 * $rss0")" = 1 ] || { echo "RSS grew by over 20%"; ok=0; }
  [ "$ok" = 1 ] && echo "soak passed" || { echo "soak FAILED"; exit 1; }
  exit 0
fi

classify_rate() { # images/s of vit classify over the directory (its summary line)
  "$vit" classify -m "$model" -b "$batch" -t "$threads" -o "$work/rows.jsonl" "$dir" 2> "$work/classify.log" >/dev/null
  sed -n 's/.*; \([0-9.]*\) images\/s$/\1/p' "$work/classify.log" | tail -1
}

echo "vit serve vs vit classify: model $model, $files photos in $dir, -b $batch," \
     "--max-wait-ms $wait_ms, -t $threads, $seconds s per run, $rounds rounds, $(nproc) cores," \
     "$(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%-6s %-12s %10s %10s %10s %10s %8s\n' round concurrency "serve i/s" "classify" ratio \
  "p50 ms" "p99 ms"
start_server --max-connections 256
run_wrk 8 3 0 > /dev/null # warm-up
for round in $(seq "$rounds"); do
  for c in 1 8 32; do
    result=$(run_wrk "$c" "$seconds" 0)
    n=$(field "$result" requests)
    rate=$(calc "$n / ($(field "$result" duration_us) / 1e6)")
    [ "$(field "$result" non2xx)" = 0 ] && [ "$(field "$result" socket_errors)" = 0 ] ||
      echo "warning: $(field "$result" non2xx) non-2xx answers, $(field "$result" socket_errors) socket errors" >&2
    cr=$(classify_rate)
    printf '%-6s %-12s %10.1f %10.1f %9.2fx %10.1f %8.1f\n' "$round" "$c" "$rate" "$cr" \
      "$(calc "$rate / $cr")" "$(calc "$(field "$result" p50_us) / 1000")" \
      "$(calc "$(field "$result" p99_us) / 1000")"
  done
done
stop_server
echo "(classify: its summary's images/s, decoding included; serve: requests/s, one image each)"
