#!/usr/bin/python3
"""Random-weight timm-layout ViT checkpoints for speed benchmarks.

usage: bench/gen_models.py [--out bench/models] [--only NAME[,NAME...]]

Writes OUT/<name>/model.safetensors (F32, timm keys, metadata format=pt) and
OUT/<name>/config.json (timm style: "architecture", "model_args" with
embed_dim/depth/num_heads/patch_size/img_size, "num_classes", and a
"pretrained_cfg" with timm's preprocessing for that architecture) for:

  deit_tiny   deit_tiny_patch16_224    192 dim, 12 layers,  3 heads, MLP  768
  deit_small  deit_small_patch16_224   384 dim, 12 layers,  6 heads, MLP 1536
  vit_base    vit_base_patch16_224     768 dim, 12 layers, 12 heads, MLP 3072

all at 224x224, patch 16, 1000 classes, no distillation token. Weights are
N(0, 0.02) (biases 0, LayerNorm 1/0), from a fixed seed per model, so the files
are identical on every machine. They are for timing only: the logits mean
nothing. A model whose two files already exist is skipped. bench/models/ is
git-ignored: never commit the weights.
"""

import argparse
import json
import os
import sys
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

MODELS = OrderedDict([
    # name: (timm architecture, dim, depth, heads, mlp, pretrained_cfg crop/mean/std)
    ("deit_tiny", ("deit_tiny_patch16_224", 192, 12, 3, 768, "deit")),
    ("deit_small", ("deit_small_patch16_224", 384, 12, 6, 1536, "deit")),
    ("vit_base", ("vit_base_patch16_224", 768, 12, 12, 3072, "augreg")),
])
IMG, PATCH, CLASSES = 224, 16, 1000

PRETRAINED_CFG = {
    # timm's default_cfgs for these families
    "deit": {"crop_pct": 0.875, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "augreg": {"crop_pct": 0.9, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
}


def config_json(arch, dim, depth, heads, family):
    pc = PRETRAINED_CFG[family]
    return {
        "architecture": arch,
        "num_classes": CLASSES,
        "num_features": dim,
        "global_pool": "token",
        "model_args": {"embed_dim": dim, "depth": depth, "num_heads": heads,
                       "patch_size": PATCH, "img_size": IMG},
        "pretrained_cfg": {
            "tag": "random_bench",
            "input_size": [3, IMG, IMG],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": pc["crop_pct"],
            "crop_mode": "center",
            "mean": pc["mean"],
            "std": pc["std"],
            "num_classes": CLASSES,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }


def make(name, out_dir):
    import torch
    from torch_vit import RefViT, save_safetensors

    arch, dim, depth, heads, mlp, family = MODELS[name]
    d = os.path.join(out_dir, name)
    st = os.path.join(d, "model.safetensors")
    cj = os.path.join(d, "config.json")
    if os.path.isfile(st) and os.path.isfile(cj):
        print(f"gen_models: {name}: exists, skipped ({d})", file=sys.stderr)
        return
    os.makedirs(d, exist_ok=True)
    seed = 1234 + list(MODELS).index(name)
    g = torch.Generator().manual_seed(seed)
    m = RefViT(dim, depth, heads, mlp, PATCH, IMG, num_classes=CLASSES)
    with torch.no_grad():
        for pname, p in m.named_parameters():
            if "norm" in pname and pname.endswith("_w"):
                p.fill_(1.0)
            elif pname.endswith("_b"):
                p.zero_()
            else:  # weights, cls_token, pos_embed
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    sd = m.timm_state_dict()
    tmp = st + ".tmp.part"
    save_safetensors(tmp, sd, {"format": "pt"})
    os.replace(tmp, st)
    tmpc = cj + ".tmp.part"
    with open(tmpc, "w") as f:
        json.dump(config_json(arch, dim, depth, heads, family), f, indent=2)
        f.write("\n")
    os.replace(tmpc, cj)
    n = sum(v.numel() for v in sd.values())
    print(f"gen_models: {name}: {n / 1e6:.2f} M parameters, "
          f"{os.path.getsize(st) / 2**20:.1f} MiB -> {d}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "models"))
    ap.add_argument("--only", default=",".join(MODELS),
                    help="comma-separated subset of " + ",".join(MODELS))
    a = ap.parse_args()
    names = [n for n in a.only.split(",") if n]
    for n in names:
        if n not in MODELS:
            ap.error(f"unknown model {n!r} (known: {', '.join(MODELS)})")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("gen_models: PyTorch not installed (python3-torch)", file=sys.stderr)
        return 3
    for n in names:
        make(n, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
