#!/usr/bin/env bash
# Time to first result (issue 28): one photo classified by a whole process,
# start to exit, with hyperfine; this tree's vit against a baseline built
# from another commit, the fp32 original of the default model, and the
# one-shot peers (PyTorch, ONNX Runtime); then where one run's time goes.
#
# usage: bench/oneshot.sh [--baseline REF] [--rounds N] [--runs N] [--image FILE]
#                         [--no-peers] [--no-baseline]
#   --baseline REF  commit to compare with (default main), built once into
#                   bench/.cache/oneshot/<sha> (git archive; tests off)
#   --rounds N      interleaved rounds (default 5): every command runs --runs
#                   times per round, in an order rotated each round, so a
#                   burst of load from other sessions falls on all of them
#   --runs N        runs per command and round (default 5; 25 in all)
#
# Prints the date, CPU, load average before and after, then per command the
# median and [min-max] over all runs (ms), and the split of one run of the
# default model on the image (medians of 21 runs with VITC_TIMINGS=1):
# start (a whole `vit --version`), load, start of the batch run (context,
# loader), decode wait, forward, the rest of
# main (arguments, walk, output), and the decode's stages
# (bench/decode_stages.c, this tree and the baseline). Needs hyperfine
# (apt-get install hyperfine) and a Release build in build/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
baseline=main rounds=5 runs=5 image=data/samples/chelsea.png peers=1 base=1
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) baseline=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --image) image=$2; shift 2 ;;
    --no-peers) peers=0; shift ;;
    --no-baseline) base=0; shift ;;
    *) sed -n '2,23p' "$0" >&2; exit 2 ;;
  esac
done
command -v hyperfine >/dev/null || { echo "oneshot: hyperfine not found (apt-get install hyperfine)" >&2; exit 3; }
[ -x build/vit ] || { echo "oneshot: build/vit missing (cmake -S . -B build && cmake --build build)" >&2; exit 3; }
cache=bench/.cache/oneshot
mkdir -p "$cache"
SHARED=$ROOT/../shared
FP32=$SHARED/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k
PY=/usr/bin/python3
LIBS="$(pkg-config --libs libcjson libwebp libwebpdemux zlib stb) -fopenmp -lm"

# The baseline: its own source tree (the default model path is compiled in).
old=""
if [ $base = 1 ]; then
  sha=$(git rev-parse --verify "$baseline^{commit}")
  dir=$cache/$sha
  if [ ! -x "$dir/build/vit" ]; then
    echo "oneshot: building the baseline $baseline ($sha) in $dir" >&2
    rm -rf "$dir" && mkdir -p "$dir/src"
    git archive "$sha" | tar -x -C "$dir/src"
    cmake -S "$dir/src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DVITC_TESTS=OFF >/dev/null
    cmake --build "$dir/build" -j 2 --target vit >/dev/null
  fi
  old=$dir/build/vit
fi

# Decode stages, against each library (public API only).
stages() { # $1: source tree, $2: build dir, $3: output
  cc -O2 -I"$1/data" -I"$1/base" $(pkg-config --cflags stb libcjson) bench/decode_stages.c \
     "$2/libvitc_data.a" "$2/libvitc_base.a" $LIBS -o "$3"
}
stages "$ROOT" build "$cache/decode_stages"
[ -n "$old" ] && stages "$dir/src" "$dir/build" "$cache/decode_stages.base"

# name|command, one per line.
cmds=()
add() { cmds+=("$1|$2"); }
add "true (process floor)" "/bin/true"
add "vit --version" "build/vit --version"
[ -n "$old" ] && add "baseline --version" "$old --version"
add "vit info" "build/vit info"
[ -n "$old" ] && add "baseline info" "$old info"
add "vit classify (int8 default)" "build/vit classify -q -k 1 $image"
# The same with libgomp's default wait policy (threads spin ~300k times at
# each barrier before sleeping): what a user gets without the variable.
add "vit classify (int8 default, OMP_WAIT_POLICY unset)" "env -u OMP_WAIT_POLICY build/vit classify -q -k 1 $image"
[ -n "$old" ] && add "baseline classify (int8)" "$old classify -q -k 1 $image"
if [ -d "$FP32" ]; then
  add "vit classify (fp32 original)" "build/vit classify -q -k 1 -m $FP32 $image"
  [ -n "$old" ] && add "baseline classify (fp32)" "$old classify -q -k 1 -m $FP32 $image"
  # Its fast copy (docs/quantize.md "Packed copies"), made again each run.
  build/vit quantize -m "$FP32" --dtype fp32 -o "$cache/fp32-packed.safetensors" 2>/dev/null &&
    add "vit classify (fp32 packed copy)" "build/vit classify -q -k 1 -m $cache/fp32-packed.safetensors $image"
fi
if [ $peers = 1 ] && [ -d "$FP32" ]; then
  $PY -c "import torch, torchvision, PIL" 2>/dev/null &&
    add "pytorch one-shot (fp32)" "$PY bench/oneshot_torch.py $FP32 $image"
  onnx=bench/models/vit_tiny_real/model.onnx
  if [ ! -f $onnx ] && bench/setup_peers.sh >/dev/null 2>&1; then
    mkdir -p "$(dirname $onnx)"
    $PY bench/export_onnx.py --model "$FP32" --out $onnx >/dev/null 2>&1 || rm -f $onnx
  fi
  if [ -f $onnx ] && node bench/oneshot_ort.mjs $onnx "$image" >/dev/null 2>&1; then
    add "onnxruntime one-shot (fp32; input pre-decoded)" "node bench/oneshot_ort.mjs $onnx $image"
  fi
fi

export OMP_WAIT_POLICY=passive
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=${#cmds[@]}
for ((r = 0; r < rounds; r++)); do
  args=()
  for ((k = 0; k < n; k++)); do
    c=${cmds[$(((k + r) % n))]}
    args+=(-n "${c%%|*}" "${c#*|}")
  done
  hyperfine -N --warmup 1 --runs "$runs" --export-json "$tmp/round$r.json" "${args[@]}" >/dev/null 2>&1
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# The split: 21 runs with VITC_TIMINGS, interleaved with --version runs.
for ((i = 0; i < 21; i++)); do
  VITC_TIMINGS=1 build/vit classify -q -k 1 "$image" 2>>"$tmp/timings" >/dev/null
done
"$cache/decode_stages" "$image" 20 > "$tmp/stages.new"
[ -n "$old" ] && "$cache/decode_stages.base" "$image" 20 > "$tmp/stages.old"

$PY - "$tmp" "$load_before" "$load_after" "$image" "${cmds[@]}" <<'EOF'
import glob, json, os, re, statistics as st, subprocess, sys, time
tmp, before, after, image, cmds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
times = {}
for path in sorted(glob.glob(os.path.join(tmp, "round*.json"))):
    for r in json.load(open(path))["results"]:
        times.setdefault(r["command"], []).extend(t * 1e3 for t in r["times"])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
flags = open("/proc/cpuinfo").read()
isa = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni") if f" {f}" in flags)
print(f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu}, {os.cpu_count()} cores ({isa}); "
      f"image {image}; OMP_WAIT_POLICY=passive")
print(f"load average {before} before, {after} after")
print(f"\n{'command':<48}{'median ms':>10}  [min-max]          runs")
med = {}
for c in cmds:
    name = c.split("|", 1)[0]
    v = times.get(name)
    if not v:
        continue
    med[name] = st.median(v)
    q = st.quantiles(v, n=4) if len(v) > 3 else [min(v), 0, max(v)]
    print(f"{name:<48}{med[name]:>10.1f}  [{min(v):.1f}-{max(v):.1f}] IQR {q[0]:.1f}-{q[2]:.1f}  {len(v)}")
text = open(os.path.join(tmp, "timings")).read()
stage = {k: [] for k in ("load", "start", "decode wait", "forward")}
for m in re.finditer(r"load ([0-9.]+) ms, start ([0-9.]+) ms, decode wait ([0-9.]+) ms, forward ([0-9.]+) ms", text):
    for k, v in zip(stage, m.groups()):
        stage[k].append(float(v))
mains = [float(m.group(2)) for m in re.finditer(r"before main ([0-9.]+) ms CPU, main ([0-9.]+) ms", text)]
cpus = [float(m.group(1)) for m in re.finditer(r"before main ([0-9.]+) ms CPU", text)]
if mains and all(stage.values()):
    m = {k: st.median(v) for k, v in stage.items()}
    main = st.median(mains)
    rest = main - sum(m.values())
    whole = med.get("vit classify (int8 default)")
    start = med.get("vit --version")
    print(f"\nsplit of `vit classify -q -k 1 {image}` (medians of {len(mains)} runs, VITC_TIMINGS=1)")
    print(f"  start   {start:6.1f} ms  a whole `vit --version` (exec, loader, libraries, exit); "
          f"{st.median(cpus):.1f} ms CPU before main" if start else "")
    notes = {"load": "the model (vit_model_load)",
             "start": "inference context and loader (the loader's thread starts decoding first)",
             "decode wait": "decode and preprocessing the forward pass waited for",
             "forward": "the forward pass and softmax"}
    for k in ("load", "start", "decode wait", "forward"):
        print(f"  {k:<11} {m[k]:6.1f} ms  [{min(stage[k]):.1f}-{max(stage[k]):.1f}]  {notes[k]}")
    print(f"  rest of main {rest:5.1f} ms  (arguments, walk, output, freeing)")
    if whole and start:
        print(f"  whole   {whole:6.1f} ms  (hyperfine median); start + main = {start + main:.1f} ms")
for tag, name in (("new", "this tree"), ("old", "baseline")):
    path = os.path.join(tmp, f"stages.{tag}")
    if os.path.exists(path):
        print(f"\ndecode and preprocessing of {image}, {name} (bench/decode_stages.c)")
        print(open(path).read().rstrip())
EOF
