#!/usr/bin/python3
"""int8 against fp32 on real photos, vitc beside ONNX Runtime: top-1 accuracy
of each and how often each engine's int8 top-1 agrees with its own fp32.

usage: bench/int8_agreement.py [--models deit_tiny_real,vit_tiny_real] [--threads N]

For each real checkpoint in ../shared/models and the 500 photos of
../shared/imagenet-sample (labels.csv):
  vitc       `build/vit classify -k 1` on the checkpoint (fp32) and on its
             `vit quantize --dtype int8` copy (bench/models/NAME/vitc-int8.safetensors,
             made once), vitc's own decoding and preprocessing
  ORT        bench/ort_top1.mjs on bench/models/NAME/model.onnx and
             model-int8.onnx (bench/export_onnx.py, made once; the int8 one is
             the graph onnxruntime's quantize_dynamic writes: bench/PEERS.md),
             on tensors preprocessed here with PIL + torchvision as the
             checkpoint's library does (bench/oneshot_torch.py build_transform)
Prints a table: fp32 and int8 top-1 (% of the labelled photos), agreement of
int8 with fp32 (% of photos with the same top-1), and, per engine, the photos
where they differ. Both engines see the same photos; each engine's agreement
is with its own fp32, so preprocessing differences between engines do not
enter it. Uses /usr/bin/python3 with torch, torchvision and PIL (the
benchmark peers' interpreter); exit 3 when ../shared or a peer is missing.
"""
import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
PHOTOS = os.path.join(SHARED, "imagenet-sample")
PY = "/usr/bin/python3"
CHECKPOINTS = {"deit_tiny_real": "deit-tiny-patch16-224",
               "vit_tiny_real": "vit_tiny_patch16_224.augreg_in21k_ft_in1k"}


def run(cmd):
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"int8_agreement: {' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
    return proc.stdout


def cached(name, file, make):
    path = os.path.join(BENCH, "models", name, file)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        run(make(path))
    return path


def vitc_top1(model, files, threads):
    """{file: top-1} from vit classify on the photos."""
    out = run([os.path.join(ROOT, "build", "vit"), "classify", "-q", "-k", "1", "--format", "csv",
               "-t", str(threads), "-m", model] + [os.path.join(PHOTOS, f) for f in files])
    return {os.path.basename(row["path"]): int(row["index_1"]) for row in csv.DictReader(io.StringIO(out))}


def preprocess(model_dir, files, dst):
    """The photos as float32 [N, 3, S, S] into dst (raw), as the checkpoint's library
    preprocesses them; returns S."""
    sys.path.insert(0, BENCH)
    from oneshot_torch import build_transform
    import numpy as np
    from PIL import Image
    size = 224
    transform = build_transform(model_dir, size)
    with open(dst, "wb") as f:
        for name in files:
            with Image.open(os.path.join(PHOTOS, name)) as im:
                t = transform(im.convert("RGB"))
            assert tuple(t.shape) == (3, size, size), (name, tuple(t.shape))
            f.write(np.ascontiguousarray(t.numpy(), dtype=np.float32).tobytes())
    return size


def ort_top1(onnx, images, size, threads, files):
    line = run(["node", os.path.join(BENCH, "ort_top1.mjs"), "--model", onnx, "--input", images,
                "--size", str(size), "--threads", str(threads)])
    result = json.loads(line)
    assert result["images"] == len(files)
    return dict(zip(files, result["top1"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(CHECKPOINTS))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    labels_csv = os.path.join(PHOTOS, "labels.csv")
    if not os.path.isfile(labels_csv):
        print(f"int8_agreement: {labels_csv} not found (../shared absent)", file=sys.stderr)
        return 3
    with open(labels_csv) as f:
        truth = {row["file"]: int(row["class_index"]) for row in csv.DictReader(f)}
    files = sorted(truth)
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        src = os.path.join(SHARED, "models", CHECKPOINTS[name])
        int8 = cached(name, "vitc-int8.safetensors",
                      lambda out: [os.path.join(ROOT, "build", "vit"), "quantize", "-m", src, "-o", out,
                                   "--dtype", "int8"])
        results = {"vitc": (vitc_top1(src, files, args.threads), vitc_top1(int8, files, args.threads))}
        onnx = {kind: cached(name, file, lambda out, extra=extra: [PY, os.path.join(BENCH, "export_onnx.py"),
                                                                   "--model", src, "--out", out] + extra)
                for kind, file, extra in (("fp32", "model.onnx", []), ("int8", "model-int8.onnx", ["--int8"]))}
        with tempfile.TemporaryDirectory() as tmp:
            images = os.path.join(tmp, "images.f32")
            size = preprocess(src, files, images)
            results["ORT"] = tuple(ort_top1(onnx[k], images, size, args.threads, files) for k in ("fp32", "int8"))
        for engine, (fp32, q) in results.items():
            differ = [f for f in files if fp32[f] != q[f]]
            rows.append((name, engine, sum(fp32[f] == truth[f] for f in files), sum(q[f] == truth[f] for f in files),
                         len(files) - len(differ), len(files), differ))
    print(f"{'model':<16}{'engine':<7}{'fp32 top-1':>11}{'int8 top-1':>11}{'int8 = fp32':>14}")
    for name, engine, c32, c8, same, n, _ in rows:
        print(f"{name:<16}{engine:<7}{100 * c32 / n:>10.1f}%{100 * c8 / n:>10.1f}%"
              f"{100 * same / n:>8.1f}% ({same}/{n})")
    for name, engine, *_, differ in rows:
        print(f"{name} {engine}: int8 top-1 differs from fp32 on {len(differ)}: {' '.join(differ)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
