#!/usr/bin/python3
"""Writes the training fixtures under tests/fixtures/train/<case>.safetensors.

Each file holds (all F32, timm names, PyTorch as the reference):
  <param>            the parameters of a small random RefViT (tests/torch_vit.py)
  input, labels      a batch [B, C, S, S] and its classes (as floats)
  loss               [1] F.cross_entropy(logits, labels, label_smoothing=s)
  grad.<param>       autograd's gradient of that loss
  step1.<param>      the parameters after one torch.optim.AdamW step with those
                     gradients (decay on weight matrices only, as vitc and timm)
  step2.<param>      after a second step with the same gradients (bias correction)
and in __metadata__ "case": the configuration and hyper-parameters as JSON.

Usage: /usr/bin/python3 tests/gen_train.py [--out DIR]
"""

import json
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vit import RefViT, save_safetensors  # noqa: E402
from fixture_io import fixture_args  # noqa: E402

CASES = [
    dict(name="grey_d16_h2", seed=2001, batch=3, smoothing=0.1,
         model=dict(embed_dim=16, depth=2, num_heads=2, mlp_dim=32, patch_size=4, img_size=8,
                    num_classes=5, in_chans=1, eps=1e-6)),
    dict(name="rgb_d24_h3", seed=2002, batch=2, smoothing=0.0,
         model=dict(embed_dim=24, depth=1, num_heads=3, mlp_dim=48, patch_size=4, img_size=12,
                    num_classes=4, in_chans=3, eps=1e-6)),
]
ADAMW = dict(lr=1e-2, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)


def decays(name, t):
    return t.dim() >= 2 and name.endswith(".weight")


def make_case(case, out_dir):
    gen = torch.Generator().manual_seed(case["seed"])
    m = RefViT(**case["model"]).random_init(gen)
    sd = m.timm_state_dict()
    # The module's parameters under their timm names, as leaves we can step.
    params = OrderedDict((k, torch.nn.Parameter(v.clone())) for k, v in sd.items())
    by_name = {
        "cls_token": "cls_token", "pos_embed": "pos_embed", "patch_embed.proj.weight": "patch_w",
        "patch_embed.proj.bias": "patch_b", "norm.weight": "norm_w", "norm.bias": "norm_b",
        "head.weight": "head_w", "head.bias": "head_b",
    }
    blk = {"norm1.weight": "norm1_w", "norm1.bias": "norm1_b", "attn.qkv.weight": "qkv_w",
           "attn.qkv.bias": "qkv_b", "attn.proj.weight": "proj_w", "attn.proj.bias": "proj_b",
           "norm2.weight": "norm2_w", "norm2.bias": "norm2_b", "mlp.fc1.weight": "fc1_w",
           "mlp.fc1.bias": "fc1_b", "mlp.fc2.weight": "fc2_w", "mlp.fc2.bias": "fc2_b"}
    for k, p in params.items():
        if k.startswith("blocks."):
            _, i, rest = k.split(".", 2)
            setattr(m.blocks[int(i)], blk[rest], p)
        else:
            setattr(m, by_name[k], p)
    c = case["model"]
    B, S = case["batch"], c["img_size"]
    x = torch.randn(B, c["in_chans"], S, S, generator=gen)
    y = torch.randint(0, c["num_classes"], (B,), generator=gen)
    loss = F.cross_entropy(m(x), y, label_smoothing=case["smoothing"])
    loss.backward()
    out, grads = autograd_tensors(params, x, y, loss)
    adamw_steps(params, grads, out, 2)
    write_case(os.path.join(out_dir, case["name"] + ".safetensors"), out, dict(case), params, loss)


def autograd_tensors(params, x, y, loss, **extra):
    """After loss.backward(): the file's tensors (the parameters, input,
    labels as floats, loss, the extra tensors, grad.<param>) and the
    gradients by name."""
    out = OrderedDict((k, v.detach().clone()) for k, v in params.items())
    out["input"] = x
    out["labels"] = y.float()
    out["loss"] = loss.detach().reshape(1)
    out.update(extra)
    grads = OrderedDict((k, p.grad.detach().clone()) for k, p in params.items())
    for k, g in grads.items():
        out["grad." + k] = g
    return out, grads


def adamw_steps(params, grads, out, steps):
    """steps torch.optim.AdamW steps (ADAMW, decay on weight matrices only),
    each with the same gradients; the parameters after step k go to
    out["step<k>.<param>"]."""
    groups = [
        {"params": [p for k, p in params.items() if decays(k, p)]},
        {"params": [p for k, p in params.items() if not decays(k, p)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, **ADAMW)
    for step in range(1, steps + 1):
        for k, p in params.items():
            p.grad = grads[k].clone()
        opt.step()
        for k, p in params.items():
            out[f"step{step}.{k}"] = p.detach().clone()


def write_case(path, out, meta, params, loss):
    """The fixture file, meta (with ADAMW added) as its "case" JSON."""
    meta["adamw"] = dict(ADAMW, betas=list(ADAMW["betas"]))
    save_safetensors(path, out, {"case": json.dumps(meta)})
    print(f"{path}: loss {loss.item():.6f}, {sum(p.numel() for p in params.values())} parameters")


def fixture_dir():
    """The --out directory (default tests/fixtures/train), created."""
    return fixture_args(None, "train").out


def generate(cases, make_case):
    """make_case(case, out_dir) for every case, into --out."""
    out = fixture_dir()
    torch.manual_seed(0)
    for case in cases:
        make_case(case, out)


def main():
    generate(CASES, make_case)


if __name__ == "__main__":
    main()
