#!/usr/bin/python3
"""Reference outputs of the real checkpoints in <shared>/models on <shared>/images.

Writes, under tests/fixtures/real/:
  <model>.safetensors   F32 logits [N, 1000] and I64 top5 [N, 5]; "__metadata__"
                        "images" = comma-separated row names: the photos in
                        <shared>/images (sorted), then "png:apple.png",
                        "png:polars.png" (the PNGs below, same preprocessing).
  apple.png, polars.png PIL-decoded RGB pixels of apple.jpg / polars.jpeg, lossless,
                        so C code can start from exactly PIL's decoded pixels.
and weights/imagenet1k_labels.txt (the 1000 ImageNet-1k class names, index order,
from the deit-tiny config.json id2label).

Models and preprocessing (the PyTorch reference the C side must match):
  deit-tiny-patch16-224  (HF ViTForImageClassification layout, layer_norm_eps 1e-12,
      3 heads): transformers' DeiT image processor with its preprocessor_config.json:
      size 256 as a plain int = resize to 256x256 (PIL bicubic), centre crop 224 with
      top = (h - 224) // 2, left = (w - 224) // 2, x / 255, ImageNet mean/std.
  vit_tiny_patch16_224.augreg_in21k_ft_in1k  (timm layout, eps 1e-6, 3 heads = 192/64):
      timm eval transform for crop_pct 0.9: torchvision Resize(248, BICUBIC) on the PIL
      image (shorter side 248, longer side int(248 * long / short)), CenterCrop(224)
      (torchvision: top = int(round((h - 224) / 2))), ToTensor, Normalize(0.5, 0.5).
  Images are opened with PIL and converted with .convert("RGB"); no EXIF transposition
  (neither timm nor transformers applies one).

--accuracy also reports top-1/top-5 on <shared>/imagenet-sample (labels.csv).
The shared directory is read-only and not part of the repository; without it the
script exits with a message.

Usage: /usr/bin/python3 tests/gen_real_reference.py [--shared DIR] [--accuracy]
"""

import argparse
import csv
import json
import math
import os
import sys
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from torch_vit import RefViT, load_safetensors, save_safetensors  # noqa: E402

DEIT = "deit-tiny-patch16-224"
AUGREG = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
PNG_SOURCES = [("apple.jpg", "apple.png"), ("polars.jpeg", "polars.png")]


# ---------------------------------------------------------------- preprocessing

def open_rgb(path):
    with Image.open(path) as im:
        return im.convert("RGB")


class HFDeiTPreprocess:
    """transformers DeiTImageProcessor (resize -> center_crop -> rescale -> normalize)."""

    def __init__(self, cfg):
        size = cfg["size"]
        if isinstance(size, int):  # legacy plain int: a square, not shortest-edge
            self.size = (size, size)
        elif "height" in size:
            self.size = (size["height"], size["width"])
        else:
            raise ValueError(f"unsupported size {size}")
        crop = cfg["crop_size"]
        self.crop = (crop, crop) if isinstance(crop, int) else (crop["height"], crop["width"])
        self.resample = cfg.get("resample", 3)
        assert self.resample == Image.BICUBIC
        self.mean = np.array(cfg["image_mean"], dtype=np.float32)
        self.std = np.array(cfg["image_std"], dtype=np.float32)

    def __call__(self, img):
        h, w = self.size
        img = img.resize((w, h), resample=self.resample)
        a = np.asarray(img)
        ch, cw = self.crop
        top, left = (a.shape[0] - ch) // 2, (a.shape[1] - cw) // 2
        a = a[top:top + ch, left:left + cw]
        a = (a.astype(np.float64) * (1 / 255)).astype(np.float32)
        a = (a - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def timm_preprocess(pcfg):
    """timm.data.transforms_imagenet_eval for crop_mode 'center'."""
    img_size = pcfg["input_size"][-1]
    scale = math.floor(img_size / pcfg["crop_pct"])
    assert pcfg["interpolation"] == "bicubic"
    return transforms.Compose([
        transforms.Resize(scale, interpolation=InterpolationMode.BICUBIC),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
        transforms.Normalize(pcfg["mean"], pcfg["std"]),
    ])


# ---------------------------------------------------------------- models

def load_models(shared):
    mdir = os.path.join(shared, "models")
    out = {}
    # deit-tiny: HF ViT layout, heads and eps from config.json
    d = os.path.join(mdir, DEIT)
    cfg = json.load(open(os.path.join(d, "config.json")))
    pcfg = json.load(open(os.path.join(d, "preprocessor_config.json")))
    sd, _ = load_safetensors(os.path.join(d, "model.safetensors"))
    m = RefViT.from_state_dict(sd, num_heads=cfg["num_attention_heads"], eps=cfg["layer_norm_eps"])
    assert m.embed_dim == cfg["hidden_size"] and m.depth == cfg["num_hidden_layers"]
    labels = [cfg["id2label"][str(i)] for i in range(len(cfg["id2label"]))]
    out[DEIT] = dict(model=m.eval(), pre=HFDeiTPreprocess(pcfg), labels=labels,
                     desc="HF DeiTImageProcessor: resize 256x256 PIL bicubic, crop 224 "
                          "top=(h-224)//2, /255, ImageNet mean/std; eps 1e-12; 3 heads")
    # augreg: timm layout, heads = D/64, eps 1e-6, transform from pretrained_cfg
    d = os.path.join(mdir, AUGREG)
    cfg = json.load(open(os.path.join(d, "config.json")))
    sd, _ = load_safetensors(os.path.join(d, "model.safetensors"))
    m = RefViT.from_state_dict(sd, eps=1e-6)
    assert m.num_heads == 3 and m.num_classes == cfg["num_classes"]
    out[AUGREG] = dict(model=m.eval(), pre=timm_preprocess(cfg["pretrained_cfg"]), labels=labels,
                       desc="timm eval: torchvision Resize(248, BICUBIC) shorter side, "
                            "CenterCrop(224), ToTensor, Normalize(0.5, 0.5); eps 1e-6; 3 heads")
    return out


@torch.no_grad()
def run(model, batch):
    return model(torch.stack(batch)).float()


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.path.join(REPO, "..", "shared"),
                    help="shared resources directory (default: ../shared from the repo root)")
    ap.add_argument("--out", default=os.path.join(HERE, "fixtures", "real"))
    ap.add_argument("--labels-out", default=os.path.join(REPO, "weights", "imagenet1k_labels.txt"))
    ap.add_argument("--accuracy", action="store_true",
                    help="also measure top-1/top-5 on <shared>/imagenet-sample")
    args = ap.parse_args()
    shared = os.path.abspath(args.shared)
    if not os.path.isdir(os.path.join(shared, "models")):
        print(f"skip: shared resources not found at {shared} (pass --shared DIR)")
        return 0
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    models = load_models(shared)
    labels = models[DEIT]["labels"]

    os.makedirs(os.path.dirname(os.path.abspath(args.labels_out)), exist_ok=True)
    with open(args.labels_out, "w") as f:
        f.write("".join(n + "\n" for n in labels))
    print(f"wrote {args.labels_out} ({len(labels)} names)")

    # photos + lossless PIL-decoded PNG copies
    os.makedirs(args.out, exist_ok=True)
    idir = os.path.join(shared, "images")
    names = sorted(f for f in os.listdir(idir) if f.lower().endswith((".jpg", ".jpeg", ".png")))
    imgs = [open_rgb(os.path.join(idir, n)) for n in names]
    for src, dst in PNG_SOURCES:
        im = open_rgb(os.path.join(idir, src))
        p = os.path.join(args.out, dst)
        im.save(p, format="PNG", optimize=True)
        back = open_rgb(p)
        assert np.array_equal(np.asarray(back), np.asarray(im)), dst
        names.append("png:" + dst)
        imgs.append(back)
        print(f"wrote {p} {im.size[0]}x{im.size[1]}")

    for key, M in models.items():
        logits = run(M["model"], [M["pre"](im) for im in imgs])
        top5 = logits.topk(5, dim=1).indices.to(torch.int64)
        path = os.path.join(args.out, key + ".safetensors")
        save_safetensors(path, {"logits": logits.contiguous(), "top5": top5.contiguous()},
                         {"images": ",".join(names), "model": key,
                          "preprocessing": M["desc"], "generator": "tests/gen_real_reference.py"})
        print(f"\n{key} -> {path}")
        for n, row, t5 in zip(names, logits, top5):
            i = int(t5[0])
            print(f"  {n:16s} top1 {i:4d} {row[i].item():7.3f}  {labels[i]}")
        # the PNG rows must reproduce their JPEG rows bit for bit
        for src, dst in PNG_SOURCES:
            a, b = names.index(src), names.index("png:" + dst)
            d = (logits[a] - logits[b]).abs().max().item()
            assert d < 1e-4, (src, dst, d)
            print(f"  row {src} vs png:{dst}: max |diff| {d:.1e} (batch position only)")

    if args.accuracy:
        sdir = os.path.join(shared, "imagenet-sample")
        rows = list(csv.DictReader(open(os.path.join(sdir, "labels.csv"))))
        print(f"\nimagenet-sample: {len(rows)} images")
        for key, M in models.items():
            t0 = time.time()
            c1 = c5 = 0
            for s in range(0, len(rows), 50):
                chunk = rows[s:s + 50]
                x = [M["pre"](open_rgb(os.path.join(sdir, r["file"]))) for r in chunk]
                t5 = run(M["model"], x).topk(5, dim=1).indices
                y = torch.tensor([int(r["class_index"]) for r in chunk])
                c1 += (t5[:, 0] == y).sum().item()
                c5 += (t5 == y[:, None]).any(1).sum().item()
            n = len(rows)
            print(f"  {key:45s} top-1 {100 * c1 / n:5.1f}%  top-5 {100 * c5 / n:5.1f}%  "
                  f"({time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
