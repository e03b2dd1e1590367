#!/usr/bin/python3
"""PyTorch peer of `vit train` for bench/train_vs_torch.sh: the same model,
batch, threads and step, timed the same way.

What one step does, as vit/trainer.c + vit/train.c do:
  - the batch: Fashion-MNIST (the Debian package's idx files, held in memory
    as uint8) flipped at random per image and shifted by up to --shift
    pixels, normalised with (0.2860, 0.3530); or DIR/<class>/* photos decoded
    with PIL, RandomResizedCrop(S, scale=(--min-scale, 1), bilinear), random
    horizontal flip, ImageNet mean/std; one epoch = a fresh shuffle;
  - the model: tests/torch_vit.py's RefViT (timm ViT: class token, learned
    position embeddings, pre-norm blocks, exact GELU, final LayerNorm, linear
    head on the class token; no dropout), eps 1e-6, timm's init
    (trunc_normal std 0.02, zero biases, LayerNorm weight 1);
  - F.cross_entropy with label_smoothing (default 0.1), backward;
  - torch.nn.utils.clip_grad_norm_(max_norm=--clip);
  - torch.optim.AdamW(betas 0.9/0.999, eps 1e-8), weight decay on weight
    matrices (and the patch kernel) only, not on norms, biases, class token
    or position embeddings; lr from linear warm-up then cosine, set per step.

Prints, like `vit train`, one line per epoch on stderr:
  epoch E/N: loss L, train top-1 A%, T s (R images/s)
plus "  data X s" (time spent building batches, inside T). The epoch is timed
from its first batch to its last optimiser step, as vit train does (which
excludes validation and checkpoint writing).

Usage: /usr/bin/python3 bench/train_torch.py --data fashion-mnist --dim 64 --depth 6
           --heads 4 --mlp 128 -b 128 -t 2 --limit 2048 --epochs 2
"""

import argparse
import gzip
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from torch_vit import RefViT  # noqa: E402

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def read_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class MnistSource:
    def __init__(self, limit, shift, flip):
        x = read_idx(os.path.join(FMNIST_DIR, "train-images-idx3-ubyte.gz"))
        y = read_idx(os.path.join(FMNIST_DIR, "train-labels-idx1-ubyte.gz"))
        if limit:
            x, y = x[:limit], y[:limit]
        self.x = torch.from_numpy(x.copy())            # [N, 28, 28] uint8
        self.y = torch.from_numpy(y.astype(np.int64))
        self.count, self.classes, self.channels = len(y), 10, 1
        self.shift, self.flip = shift, flip

    def batch(self, idx, gen):
        x = self.x[idx].float()                         # [B, 28, 28]
        B = x.shape[0]
        if self.flip:
            m = torch.rand(B, generator=gen) < 0.5
            x = torch.where(m[:, None, None], x.flip(-1), x)
        if self.shift:
            s = self.shift
            pad = F.pad(x, (s, s, s, s))                # black background
            H, W = x.shape[-2:]
            dx = torch.randint(-s, s + 1, (B,), generator=gen)
            dy = torch.randint(-s, s + 1, (B,), generator=gen)
            x = torch.stack([pad[b, s - dy[b]:s - dy[b] + H, s - dx[b]:s - dx[b] + W]
                             for b in range(B)])
        x = (x / 255.0 - FMNIST_MEAN) / FMNIST_STD
        return x[:, None], self.y[idx]


class FolderSource:
    def __init__(self, root, size, min_scale, flip, limit):
        import torchvision.transforms as T
        classes = sorted(d for d in os.listdir(root)
                         if not d.startswith(".") and os.path.isdir(os.path.join(root, d)))
        self.files, labels = [], []
        for c, name in enumerate(classes):
            d = os.path.join(root, name)
            for f in sorted(os.listdir(d)):
                if not f.startswith("."):
                    self.files.append(os.path.join(d, f))
                    labels.append(c)
        if limit:
            self.files, labels = self.files[:limit], labels[:limit]
        self.y = torch.tensor(labels, dtype=torch.int64)
        self.count, self.classes, self.channels = len(self.files), len(classes), 3
        t = [T.RandomResizedCrop(size, scale=(min_scale, 1.0),
                                 interpolation=T.InterpolationMode.BILINEAR)]
        if flip:
            t.append(T.RandomHorizontalFlip())
        t += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        self.tf = T.Compose(t)

    def batch(self, idx, gen):
        from PIL import Image
        xs = []
        for i in idx.tolist():
            with Image.open(self.files[i]) as im:
                xs.append(self.tf(im.convert("RGB")))
        return torch.stack(xs), self.y[idx]


def timm_init(m):
    """timm's init for a model trained from scratch, as vit_model_init."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() >= 2:       # weight matrices, patch kernel, class token, position embeddings
                torch.nn.init.trunc_normal_(p, std=0.02, a=-2.0, b=2.0)
            elif name.endswith("_w"):  # LayerNorm weights
                p.fill_(1.0)
            else:
                p.zero_()


def lr_at(step, base, min_lr, warmup, total):
    if step < warmup:
        return base * (step + 1) / warmup
    span = total - warmup
    if span <= 0:
        return base
    prog = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (base - min_lr) * (1.0 + math.cos(math.pi * prog))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=128)
    ap.add_argument("--patch", type=int, default=0)
    ap.add_argument("--image-size", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("-b", "--batch", type=int, default=128)
    ap.add_argument("-t", "--threads", type=int, default=os.cpu_count())
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-5)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--smoothing", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--shift", type=int, default=0)
    ap.add_argument("--min-scale", type=float, default=0.08)
    ap.add_argument("--no-flip", action="store_true")
    ap.add_argument("--foreach", action="store_true",
                    help="AdamW(foreach=True): the multi-tensor implementation")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    mnist = a.data == "fashion-mnist" and not os.path.isdir(a.data)
    size = a.image_size or (28 if mnist else 64)
    patch = a.patch or (4 if mnist else 8)
    src = (MnistSource(a.limit, a.shift, not a.no_flip) if mnist
           else FolderSource(a.data, size, a.min_scale, not a.no_flip, a.limit))
    model = RefViT(a.dim, a.depth, a.heads, a.mlp, patch, size, num_classes=src.classes,
                   eps=1e-6, in_chans=src.channels)
    timm_init(model)
    model.train()
    no_decay = {"cls_token", "pos_embed"}
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n not in no_decay]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and n not in no_decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": other, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.999), eps=1e-8,
                            foreach=True if a.foreach else None)
    params = list(model.parameters())
    batch = min(a.batch, src.count)
    steps = (src.count + batch - 1) // batch
    warmup, total = a.warmup * steps, a.epochs * steps
    nparams = sum(p.numel() for p in params)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ViT D {a.dim}, "
          f"{a.depth} layers, {a.heads} heads, MLP {a.mlp}, patch {patch}, {size}x{size}x"
          f"{src.channels}; {nparams} parameters; {src.count} images, batch {batch}",
          file=sys.stderr)
    gen = torch.Generator().manual_seed(a.seed)
    step = 0
    for epoch in range(a.epochs):
        order = torch.randperm(src.count, generator=gen)
        t0 = time.perf_counter()
        data_s, loss_sum, hits, seen = 0.0, 0.0, 0, 0
        for s in range(steps):
            d0 = time.perf_counter()
            x, y = src.batch(order[s * batch:(s + 1) * batch], gen)
            data_s += time.perf_counter() - d0
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=a.smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if a.clip > 0:
                torch.nn.utils.clip_grad_norm_(params, a.clip)
            lr = lr_at(step, a.lr, a.min_lr, warmup, total)
            for g in opt.param_groups:
                g["lr"] = lr
            opt.step()
            step += 1
            n = y.shape[0]
            loss_sum += loss.item() * n
            hits += int((logits.argmax(1) == y).sum())
            seen += n
        took = time.perf_counter() - t0
        print(f"epoch {epoch + 1}/{a.epochs}: loss {loss_sum / seen:.4f}, train top-1 "
              f"{100.0 * hits / seen:.2f}%, {took:.1f} s ({seen / took:.1f} images/s)  "
              f"data {data_s:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
