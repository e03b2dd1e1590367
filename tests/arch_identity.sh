#!/usr/bin/env bash
# The cross-architecture identity check (issue 30): the same vit commands on
# the same 20 photos from ../shared with two builds, byte for byte. Usage:
#   tests/arch_identity.sh VIT_A VIT_B     (scripts/aarch64 identity runs it)
# VIT_A runs natively; VIT_B through $VITC_IDENTITY_RUN_B (default
# qemu-aarch64-static, for build-aarch64/vit; QEMU_CPU picks the CPU).
# Compared, for the int8 default model and the two real float32
# checkpoints: classify --format csv, features .npy (every token after the
# last block) and attention .npy (last layer, head mean), each file whole.
# $VITC_IDENTITY_ISAS lists the int8 kernel paths (VITC_ISA) B runs, each
# against A's default path (default: auto); $VITC_IDENTITY_PHOTOS how many
# of the 20 photos to take (the first N).
# Exit 0 when every file is identical, 1 when some differ (each named with
# how much, where python3-numpy is there), 77 when ../shared is absent.
set -euo pipefail
[ $# -eq 2 ] || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
vit_a=$(realpath "$1")
vit_b=$(realpath "$2")
cd "$(dirname "$0")/.."
shared=$PWD/../shared
read -r -a run_b <<< "${VITC_IDENTITY_RUN_B:-qemu-aarch64-static}"
read -r -a isas <<< "${VITC_IDENTITY_ISAS:-auto}"

if [ ! -d "$shared/models" ] || [ ! -d "$shared/images" ] || [ ! -d "$shared/imagenet-sample" ]; then
    echo "arch_identity: ../shared (real checkpoints and photos) is absent: skipped"
    exit 77
fi
# The 9 everyday photos (baseline and progressive JPEG, EXIF) and the first
# 11 ImageNet ones: 20 photos, fixed by name.
photos=()
while IFS= read -r f; do photos+=("$f"); done < <(
    { ls "$shared"/images/*; ls "$shared"/imagenet-sample/*.JPEG | head -n 11; } |
        head -n "${VITC_IDENTITY_PHOTOS:-20}")
models=(default "$shared/models/deit-tiny-patch16-224"
        "$shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Runs every command of one model into DIR with the vit given after it.
outputs() {
    local model=$1 dir=$2
    shift 2
    local m=()
    [ "$model" = default ] || m=(-m "$model")
    mkdir -p "$dir/att"
    "$@" classify -q "${m[@]}" --format csv "${photos[@]}" > "$dir/classify.csv"
    "$@" features -q "${m[@]}" -o "$dir/features.npy" "${photos[@]}"
    "$@" attention -q "${m[@]}" -o "$dir/att/" --npy "$dir/att/" "${photos[@]}"
}

# How two differing files differ: npy values, or CSV rows.
difference() {
    local a=$1 b=$2
    case "$a" in
    *.csv) echo "$(diff "$a" "$b" | grep -c '^<' || true) of $(($(wc -l < "$a") - 1)) rows differ" ;;
    *.npy)
        /usr/bin/python3 - "$a" "$b" 2>/dev/null << 'EOF' || echo "the bytes differ"
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
d = np.abs(a.astype(np.float64) - b)
print(f"{int((a != b).sum())} of {a.size} values differ, max |diff| {d.max():.3g} "
      f"(max |value| {np.abs(a).max():.3g})")
EOF
        ;;
    esac
}

# Compares A's and B's outputs of one model; prints one line a file kind.
compare() {
    local label=$1 a=$2 b=$3 bad=0 f rel
    for f in classify.csv features.npy; do
        if cmp -s "$a/$f" "$b/$f"; then
            printf '  %-44s %-13s identical\n' "$label" "$f"
        else
            printf '  %-44s %-13s DIFFERENT: %s\n' "$label" "$f" "$(difference "$a/$f" "$b/$f")"
            bad=1
        fi
    done
    local same=0 total=0 worst=""
    while IFS= read -r rel; do
        total=$((total + 1))
        if cmp -s "$a/att/$rel" "$b/att/$rel"; then same=$((same + 1)); else worst=$rel; fi
    done < <(cd "$a/att" && find . -name '*.npy' | sort)
    if [ "$same" -eq "$total" ] && [ "$total" -gt 0 ]; then
        printf '  %-44s %-13s identical (%d maps)\n' "$label" attention "$total"
    else
        printf '  %-44s %-13s DIFFERENT: %d of %d maps (e.g. %s: %s)\n' "$label" attention \
            $((total - same)) "$total" "${worst#./}" "$(difference "$a/att/$worst" "$b/att/$worst")"
        bad=1
    fi
    return $bad
}

echo "arch_identity: $vit_a against ${run_b[*]} $vit_b, ${#photos[@]} photos"
status=0
for model in "${models[@]}"; do
    name=$(basename "$model")
    outputs "$model" "$work/$name/a" "$vit_a"
    for isa in "${isas[@]}"; do
        VITC_ISA=$isa outputs "$model" "$work/$name/b-$isa" "${run_b[@]}" "$vit_b"
        compare "$name (B: VITC_ISA=$isa)" "$work/$name/a" "$work/$name/b-$isa" || status=1
    done
done
if [ $status -eq 0 ]; then echo "arch_identity: every output identical"; else echo "arch_identity: outputs differ"; fi
exit $status
