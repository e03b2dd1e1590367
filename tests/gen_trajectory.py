#!/usr/bin/python3
"""Writes tests/fixtures/train/trajectory.safetensors: ten AdamW steps of a
small ViT in PyTorch, the reference for tests/test_trajectory.c (as llm.c's
test_gpt2.c checks its first steps against PyTorch's losses).

The file holds (all F32, timm names):
  <param>            the initial parameters (a small random RefViT, tests/torch_vit.py)
  input              the STEPS batches [STEPS, B, C, S, S]
  labels             their classes [STEPS, B] (as floats)
  losses             [STEPS] the loss of each step, before its update
  final.<param>      the parameters after the last step
and in __metadata__ "case": configuration and hyper-parameters as JSON.

Each step is what vitc's trainer does: cross-entropy with label smoothing,
the gradient norm clipped to `clip`, then one torch.optim.AdamW step
(decay on weight matrices only) at a constant learning rate.

Usage: /usr/bin/python3 tests/gen_trajectory.py [--out DIR]
"""

import json
import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_train import decays, fixture_dir  # noqa: E402
from torch_vit import RefViT, save_safetensors  # noqa: E402

CASE = dict(name="trajectory", seed=2014, steps=10, batch=6, smoothing=0.1, clip=1.0,
            model=dict(embed_dim=24, depth=2, num_heads=3, mlp_dim=48, patch_size=4,
                       img_size=12, num_classes=5, in_chans=1, eps=1e-6))
ADAMW = dict(lr=3e-3, weight_decay=0.05, betas=(0.9, 0.999), eps=1e-8)


def main():
    out_dir = fixture_dir()
    torch.manual_seed(0)
    case, c = CASE, CASE["model"]
    gen = torch.Generator().manual_seed(case["seed"])
    m = RefViT(**c).random_init(gen)
    params = m._timm_param_map()
    out = OrderedDict((k, p.detach().clone()) for k, p in params.items())

    steps, B, S = case["steps"], case["batch"], c["img_size"]
    x = torch.randn(steps, B, c["in_chans"], S, S, generator=gen)
    y = torch.randint(0, c["num_classes"], (steps, B), generator=gen)
    groups = [
        {"params": [p for k, p in params.items() if decays(k, p)]},
        {"params": [p for k, p in params.items() if not decays(k, p)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, **ADAMW)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(m(x[step]), y[step], label_smoothing=case["smoothing"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), case["clip"])
        opt.step()
        losses.append(loss.item())

    out["input"] = x
    out["labels"] = y.float()
    out["losses"] = torch.tensor(losses)
    for k, p in params.items():
        out["final." + k] = p.detach().clone()
    meta = dict(case, adamw=dict(ADAMW, betas=list(ADAMW["betas"])))
    path = os.path.join(out_dir, case["name"] + ".safetensors")
    save_safetensors(path, out, {"case": json.dumps(meta)})
    print(f"{path}: losses " + " ".join(f"{v:.6f}" for v in losses))


if __name__ == "__main__":
    main()
