#!/usr/bin/python3
"""Writes the inspection fixtures tests/fixtures/inspect/*.safetensors.

For some of the parity cases (tests/gen_parity.py: same checkpoints, same
inputs, read back from tests/fixtures/parity/), the PyTorch reference
(tests/torch_vit.py) gives, as F32:
  attention_<l>   [B, H, T, T]  block l's softmax probabilities (row = query)
  tokens_last     [B, T, D]     residual stream after the last block (not normed)
  keys_last       [B, T, D]     last block's attention keys, heads side by side
  rollout_0       [B, T, T]     attention rollout through all layers, no discard
  rollout_50      [B, T, T]     the same dropping the lowest 50 % per layer
  patch_logits    [B, T - prefix, C]  final LayerNorm + head on every patch token
                                (distilled with two heads: their mean)
  pool_cls, pool_mean [B, D], pool_none [B, T, D]  RefViT.pre_logits on
                                forward_features (timm semantics: final LayerNorm,
                                then the class token / the patch-token mean / all);
                                pool_*_l2 the same through F.normalize(dim=-1)
and resample.safetensors holds F.interpolate references for the upsampling
helpers. Rollout follows vit/vit_inspect.h: per layer the head mean, the
floor(T*T*R) smallest entries zeroed except entry (0, 0) (as
jacobgil/vit-explain), (A + I) / 2, rows renormalised, R = A R.

Usage: /usr/bin/python3 tests/gen_inspect.py [--out DIR]
"""

import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vit import RefViT, load_safetensors  # noqa: E402
from fixture_io import fixture_args, save_f32  # noqa: E402

CASES = ["hf_vit_d48_h3", "timm_dist_d96_h4", "hf_deit_teacher_d64_h2"]


def rollout(attentions, discard):
    B, _, T, _ = attentions[0].shape
    eye = torch.eye(T)
    result = eye.expand(B, T, T).clone()
    for a in attentions:
        fused = a.mean(dim=1).clone()
        if discard > 0:
            flat = fused.reshape(B, -1)
            k = int(flat.shape[-1] * discard)
            _, idx = flat.topk(k, dim=-1, largest=False)
            for b in range(B):
                keep = idx[b][idx[b] != 0]
                flat[b, keep] = 0
            fused = flat.reshape(B, T, T)
        fused = (fused + eye) / 2
        fused = fused / fused.sum(dim=-1, keepdim=True)
        result = fused @ result
    return result


def patch_logits(m, tokens):
    h = F.layer_norm(tokens, (m.embed_dim,), m.norm_w, m.norm_b, m.eps)[:, m.num_prefix:]
    out = F.linear(h, m.head_w, m.head_b)
    if m.dist_head:
        out = (out + F.linear(h, m.head_dist_w, m.head_dist_b)) / 2
    return out


def main():
    args = fixture_args(__doc__, "inspect", parity="parity")
    torch.set_num_threads(1)

    for name in CASES:
        d = os.path.join(args.parity, name)
        with open(os.path.join(d, "case.json")) as f:
            info = json.load(f)
        sd, _ = load_safetensors(os.path.join(d, "model.safetensors"))
        sd = {k: v.float() for k, v in sd.items()}
        m = RefViT.from_state_dict(sd, num_heads=info["num_heads"], eps=info["layer_norm_eps"],
                                   pos_antialias=info["pos_embed_antialias"])
        m.eval()
        expected, _ = load_safetensors(os.path.join(d, "expected.safetensors"))
        x = expected["input"]
        with torch.no_grad():
            r = m(x, return_intermediates=True, return_inside=True)
            assert torch.equal(r["logits"], expected["logits"]), name
            out = {f"attention_{l}": a for l, a in enumerate(r["attention"])}
            out["tokens_last"] = r["blocks"][-1]
            out["keys_last"] = r["keys"][-1]
            out["rollout_0"] = rollout(r["attention"], 0.0)
            out["rollout_50"] = rollout(r["attention"], 0.5)
            out["patch_logits"] = patch_logits(m, r["blocks"][-1])
            feats = m.forward_features(x)
            for pool, key in (("token", "cls"), ("avg", "mean"), ("none", "none")):
                pooled = m.pre_logits(feats, pool)
                out[f"pool_{key}"] = pooled
                out[f"pool_{key}_l2"] = F.normalize(pooled, dim=-1)
        out = save_f32(os.path.join(args.out, name + ".safetensors"), out, case=name,
                       generator="tests/gen_inspect.py")
        print(f"{name}: T={out['tokens_last'].shape[1]} layers={len(r['attention'])} "
              f"rollout_50 row0 max {out['rollout_50'][:, 0].max().item():.3f}")

    g = torch.Generator().manual_seed(2024)
    res = {}
    for i, (sh, sw, dh, dw) in enumerate([(3, 5, 17, 11), (14, 14, 100, 75), (4, 4, 4, 4)]):
        src = torch.rand(1, 1, sh, sw, generator=g)
        res[f"src_{i}"] = src[0, 0]
        res[f"bilinear_{i}"] = F.interpolate(src, size=(dh, dw), mode="bilinear",
                                             align_corners=False)[0, 0]
        labels = torch.randint(0, 7, (1, 1, sh, sw), generator=g).float()
        res[f"labels_{i}"] = labels[0, 0]
        res[f"nearest_{i}"] = F.interpolate(labels, size=(dh, dw), mode="nearest")[0, 0]
    save_f32(os.path.join(args.out, "resample.safetensors"), res, generator="tests/gen_inspect.py")


if __name__ == "__main__":
    main()
