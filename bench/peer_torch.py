#!/usr/bin/python3
"""PyTorch peer for vitc's benchmark: the same ViT in plain torch (tests/torch_vit.py).

usage: bench/peer_torch.py --model DIR --threads N [--batches 1,8,32]
                           [--runs 20 | --runs 20,20,5] [--warmup 5] [--name NAME]

DIR holds model.safetensors (timm or Hugging Face layout) and optionally
config.json. Heads and LayerNorm eps come from config.json when present (HF
num_attention_heads / layer_norm_eps; timm model_args.num_heads), else
heads = dim / 64 and eps 1e-6 (timm) / 1e-12 (HF), as tests/torch_vit.py does.

Measures, with torch.set_num_threads(N), eval() and torch.inference_mode(), on
random input (fixed seed):
  load_s        reading the safetensors file + config + building the model
  median_ms     median wall time of one forward pass over --runs timed runs,
                after --warmup untimed ones, per batch size
  images_per_s  batch / median
  peak_rss_mib  getrusage(RUSAGE_SELF).ru_maxrss right after that batch's runs
                (cumulative: the first line is the peak after batch 1 — if 1
                comes first — and the last line the overall peak)
  base_rss_mib  ru_maxrss after `import torch`, before the model is loaded

Prints one JSON object per batch size on stdout and nothing else; messages go
to stderr. Exit 3 if torch or the model is missing ("peer not installed").
--runs takes one count for all batches or one per batch (e.g. 20,20,5).
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def model_file(path):
    """DIR or DIR/model.safetensors -> (dir, safetensors path)."""
    if os.path.isdir(path):
        return path, os.path.join(path, "model.safetensors")
    return os.path.dirname(path) or ".", path


def read_config(d):
    """(num_heads, eps) from DIR/config.json, None where not given."""
    p = os.path.join(d, "config.json")
    if not os.path.isfile(p):
        return None, None
    with open(p) as f:
        c = json.load(f)
    heads = eps = None
    if "num_attention_heads" in c:  # Hugging Face
        heads = int(c["num_attention_heads"])
        eps = float(c.get("layer_norm_eps", 1e-12))
    else:  # timm
        ma = c.get("model_args") or {}
        if "num_heads" in ma:
            heads = int(ma["num_heads"])
        if "norm_layer_eps" in ma:
            eps = float(ma["norm_layer_eps"])
    return heads, eps


def load_model(path):
    """Loads a RefViT from DIR (or the .safetensors file), ready for inference."""
    from torch_vit import RefViT, load_safetensors
    d, st = model_file(path)
    sd, meta = load_safetensors(st)
    heads, eps = read_config(d)
    if heads is None and meta.get("config"):
        try:  # vitc writes an HF-style config into the safetensors metadata
            mc = json.loads(meta["config"])
            heads = mc.get("num_attention_heads") or (mc.get("model_args") or {}).get("num_heads")
            eps = eps if eps is not None else mc.get("layer_norm_eps")
        except ValueError:
            pass
    m = RefViT.from_state_dict(sd, num_heads=heads, eps=eps)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    del sd
    return m


def parse_list(s, name):
    try:
        v = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        v = []
    if not v or min(v) < 1:
        raise SystemExit(f"peer_torch: bad --{name} {s!r}")
    return v


def main():
    ap = argparse.ArgumentParser(description="PyTorch peer benchmark (one JSON line per batch)")
    ap.add_argument("--model", required=True, help="model directory (or its model.safetensors)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--runs", default="20", help="timed runs: one count, or one per batch")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--name", help="model name in the JSON (default: the directory name)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    batches = parse_list(a.batches, "batches")
    runs = parse_list(a.runs, "runs")
    if len(runs) == 1:
        runs = runs * len(batches)
    if len(runs) != len(batches):
        raise SystemExit("peer_torch: --runs needs one count or one per batch")

    d, st = model_file(a.model)
    if not os.path.isfile(st):
        print(f"peer_torch: no model at {st} (run bench/gen_models.py?)", file=sys.stderr)
        return 3
    try:
        import torch
    except ImportError:
        print("peer_torch: PyTorch not installed (apt-get install python3-torch)", file=sys.stderr)
        return 3
    name = a.name or os.path.basename(os.path.normpath(d))

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    base_rss = rss_mib()

    t0 = time.perf_counter()
    model = load_model(a.model)
    load_s = time.perf_counter() - t0
    print(f"peer_torch: {name}: {model.layout}, dim {model.embed_dim}, {model.depth} layers, "
          f"{model.num_heads} heads, loaded in {load_s:.3f} s, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", file=sys.stderr)

    g = torch.Generator().manual_seed(a.seed)
    S = model.img_size
    for b, nr in zip(batches, runs):
        x = torch.randn(b, 3, S, S, generator=g)
        times = []
        with torch.inference_mode():
            for _ in range(a.warmup):
                model(x)
            for _ in range(nr):
                t = time.perf_counter()
                y = model(x)
                times.append(time.perf_counter() - t)
        assert y.shape[0] == b and torch.isfinite(y).all()
        med = statistics.median(times)
        rec = {
            "engine": "pytorch", "model": name, "batch": b,
            "median_ms": round(med * 1e3, 3),
            "min_ms": round(min(times) * 1e3, 3),
            "images_per_s": round(b / med, 2),
            "load_s": round(load_s, 4),
            "peak_rss_mib": round(rss_mib(), 1),
            "base_rss_mib": round(base_rss, 1),
            "threads": a.threads, "runs": nr, "warmup": a.warmup,
            "version": "torch " + torch.__version__,
        }
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
