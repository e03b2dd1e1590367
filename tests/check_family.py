#!/usr/bin/python3
"""Independent check of tests/fixtures/family/ from the files alone.

A loader written the way vitc's must be: switches decided from the tensor
names, config.json (timm model_args + the architecture-name table of
family/README.md, or the HF keys) - never from case.json - and a float64
numpy forward. Only position-embedding resizing uses torch's F.interpolate
(the operation the fixtures pin down). Compares logits, tokens, attn0 and
pooled with expected.safetensors, and checks that every tensor in each file
is used (mask_token excepted).

Usage: /usr/bin/python3 tests/check_family.py [--dir tests/fixtures/family]
"""

import argparse
import json
import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vit import load_safetensors  # noqa: E402

# architecture pattern -> switches (family/README.md's table)
ARCH_TABLE = [
    (r"^deit3_", dict(no_embed_class=True, init_values=1e-6)),
    (r"^vit_.*_clip_quickgelu_", dict(pre_norm=True, eps=1e-5, act_layer="quick_gelu")),
    (r"^vit_.*_clip_", dict(pre_norm=True, eps=1e-5)),
    (r"^vit_.*_patch14_reg4_dinov2", dict(init_values=1e-5, reg_tokens=4, no_embed_class=True)),
    (r"^vit_.*_patch14_dinov2", dict(init_values=1e-5)),
    (r"^vit_.*_patch16_reg(\d)_gap_", dict(class_token=False, no_embed_class=True,
                                           global_pool="avg", init_values=1e-5)),
    (r"^vit_medium_patch16_gap_", dict(class_token=False, global_pool="avg", fc_norm=False,
                                       qkv_bias=False, init_values=1e-6)),
    (r"^vit_base_patch16_gap_224", dict(class_token=False, global_pool="avg", fc_norm=False)),
    (r"^vit_base_patch16_224_miil", dict(qkv_bias=False)),
]


def arch_switches(arch):
    name = arch.split(".")[0]
    for pat, sw in ARCH_TABLE:
        mo = re.match(pat, name)
        if mo:
            sw = dict(sw)
            if "reg(" in pat:
                sw["reg_tokens"] = int(mo.group(1))
            return sw
    return {}


def ln(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def resize_grid(pos, gs_old, gs_new, antialias):
    if gs_old == gs_new:
        return pos
    D = pos.shape[-1]
    t = torch.from_numpy(pos).float().reshape(1, gs_old, gs_old, D).permute(0, 3, 1, 2)
    t = F.interpolate(t, size=(gs_new, gs_new), mode="bicubic", align_corners=False,
                      antialias=antialias)
    return t.permute(0, 2, 3, 1).reshape(gs_new * gs_new, D).double().numpy()


def run_case(d):
    sd, _ = load_safetensors(os.path.join(d, "model.safetensors") if os.path.exists(
        os.path.join(d, "model.safetensors")) else os.path.join(d, json.load(
            open(os.path.join(d, "case.json")))["model"]))
    cfg = json.load(open(os.path.join(d, "config.json")))
    exp, _ = load_safetensors(os.path.join(d, "expected.safetensors"))
    T = {k: v.double().numpy() for k, v in sd.items()}
    used = set()

    def get(k, default=None):
        if k in T:
            used.add(k)
            return T[k]
        return default

    x = exp["input"].double().numpy()
    B, _, S, _ = x.shape
    if "model_type" in cfg:                       # ---- HF DINOv2
        reg = cfg["model_type"] == "dinov2_with_registers"
        pre = ""
        for cand in ("dinov2.", "dinov2_with_registers."):
            if any(k.startswith(cand) for k in T):
                pre = cand
        e = pre + "embeddings."
        D, H, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
        depth = cfg["num_hidden_layers"]
        P = cfg["patch_size"]
        R = cfg.get("num_register_tokens", 0) if reg else 0
        act = cfg["hidden_act"]
        W = get(e + "patch_embeddings.projection.weight")
        bias = get(e + "patch_embeddings.projection.bias")
        used.add(e + "mask_token")                # known unneeded at inference
        g = S // P
        patches = x.reshape(B, 3, g, P, g, P).transpose(0, 2, 4, 1, 3, 5).reshape(B, g * g, -1)
        tok = patches @ W.reshape(D, -1).T + bias
        pos = get(e + "position_embeddings")[0]
        gs_old = int(round(math.sqrt(pos.shape[0] - 1)))
        pos = np.concatenate([pos[:1], resize_grid(pos[1:], gs_old, g, antialias=reg)], 0)
        h = np.concatenate([np.repeat(get(e + "cls_token"), B, 0), tok], 1) + pos
        if reg:
            h = np.concatenate([h[:, :1], np.repeat(get(e + "register_tokens"), B, 0), h[:, 1:]], 1)
        layers = []
        for i in range(depth):
            b = f"{pre}encoder.layer.{i}."
            q = [get(b + f"attention.attention.{n}.weight") for n in ("query", "key", "value")]
            qb = [get(b + f"attention.attention.{n}.bias") for n in ("query", "key", "value")]
            layers.append(dict(
                n1=(get(b + "norm1.weight"), get(b + "norm1.bias")),
                qkv_w=np.concatenate(q, 0), qkv_b=np.concatenate(qb, 0),
                proj=(get(b + "attention.output.dense.weight"), get(b + "attention.output.dense.bias")),
                ls1=get(b + "layer_scale1.lambda1"), ls2=get(b + "layer_scale2.lambda1"),
                n2=(get(b + "norm2.weight"), get(b + "norm2.bias")),
                fc1=(get(b + "mlp.fc1.weight"), get(b + "mlp.fc1.bias")),
                fc2=(get(b + "mlp.fc2.weight"), get(b + "mlp.fc2.bias"))))
        final = (get(pre + "layernorm.weight"), get(pre + "layernorm.bias"))
        head = (get("classifier.weight"), get("classifier.bias"))
        norm_pre = None
        qk = None
        npre = 1 + R
        pool = "cls+mean" if head[0] is not None else "cls"
        fc_norm = None
    else:                                         # ---- timm
        sw = arch_switches(cfg["architecture"])
        sw.update(cfg.get("model_args") or {})
        D = T["patch_embed.proj.weight"].shape[0]
        P = T["patch_embed.proj.weight"].shape[-1]
        H = sw.get("num_heads", max(1, D // 64))
        eps = sw.get("eps", 1e-6)
        act = sw.get("act_layer", "gelu")
        depth = 1 + max(int(k.split(".")[1]) for k in T if k.startswith("blocks."))
        cls = get("cls_token")
        regt = get("reg_token")
        R = 0 if regt is None else regt.shape[1]
        assert R == sw.get("reg_tokens", R), "config and tensors disagree on registers"
        assert (cls is not None) == sw.get("class_token", True)
        npre = R + (cls is not None)
        W = get("patch_embed.proj.weight")
        bias = get("patch_embed.proj.bias", np.zeros(D))
        g = S // P
        patches = x.reshape(B, 3, g, P, g, P).transpose(0, 2, 4, 1, 3, 5).reshape(B, g * g, -1)
        tok = patches @ W.reshape(D, -1).T + bias
        pos = get("pos_embed")[0]
        nec = sw.get("no_embed_class", False)
        npos_pre = 0 if nec else npre
        gs_old = int(round(math.sqrt(pos.shape[0] - npos_pre)))
        assert gs_old * gs_old + npos_pre == pos.shape[0]
        pos = np.concatenate([pos[:npos_pre], resize_grid(pos[npos_pre:], gs_old, g, True)], 0)
        pre_t = [np.repeat(a, B, 0) for a in (cls, regt) if a is not None]
        if nec:
            h = np.concatenate(pre_t + [tok + pos], 1)
        else:
            h = np.concatenate(pre_t + [tok], 1) + pos
        layers = []
        for i in range(depth):
            b = f"blocks.{i}."
            layers.append(dict(
                n1=(get(b + "norm1.weight"), get(b + "norm1.bias")),
                qkv_w=get(b + "attn.qkv.weight"), qkv_b=get(b + "attn.qkv.bias", np.zeros(3 * D)),
                qn=(get(b + "attn.q_norm.weight"), get(b + "attn.q_norm.bias")),
                kn=(get(b + "attn.k_norm.weight"), get(b + "attn.k_norm.bias")),
                proj=(get(b + "attn.proj.weight"), get(b + "attn.proj.bias")),
                ls1=get(b + "ls1.gamma"), ls2=get(b + "ls2.gamma"),
                n2=(get(b + "norm2.weight"), get(b + "norm2.bias")),
                fc1=(get(b + "mlp.fc1.weight"), get(b + "mlp.fc1.bias")),
                fc2=(get(b + "mlp.fc2.weight"), get(b + "mlp.fc2.bias"))))
        norm_pre = (get("norm_pre.weight"), get("norm_pre.bias"))
        assert (norm_pre[0] is not None) == sw.get("pre_norm", False)
        final = (get("norm.weight"), get("norm.bias"))
        fc_norm = (get("fc_norm.weight"), get("fc_norm.bias"))
        head = (get("head.weight"), get("head.bias"))
        pool = sw.get("global_pool", cfg.get("global_pool", "token"))
        qk = True
    # shared encoder
    exp_np = {k: v.double().numpy() for k, v in exp.items()}
    if norm_pre is not None and norm_pre[0] is not None:
        h = ln(h, *norm_pre, eps)
    dh = D // H
    attn0 = None
    for i, L in enumerate(layers):
        y = ln(h, *L["n1"], eps)
        qkv = y @ L["qkv_w"].T + L["qkv_b"]
        q, k, v = (qkv[..., j * D:(j + 1) * D].reshape(B, -1, H, dh).transpose(0, 2, 1, 3) for j in range(3))
        if qk and L.get("qn", (None,))[0] is not None:
            q = ln(q, *L["qn"], eps)
            k = ln(k, *L["kn"], eps)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        if i == 0:
            attn0 = s
        o = (s @ v).transpose(0, 2, 1, 3).reshape(B, -1, D) @ L["proj"][0].T + L["proj"][1]
        h = h + (o * L["ls1"] if L["ls1"] is not None else o)
        f = ln(h, *L["n2"], eps) @ L["fc1"][0].T + L["fc1"][1]
        if act == "quick_gelu":
            f = f / (1 + np.exp(-1.702 * f))
        else:
            f = 0.5 * f * (1 + np.vectorize(math.erf)(f / math.sqrt(2)))
        f = f @ L["fc2"][0].T + L["fc2"][1]
        h = h + (f * L["ls2"] if L["ls2"] is not None else f)
    if final[0] is not None:
        h = ln(h, *final, eps)
    if pool == "token" or pool == "cls":
        pooled = h[:, 0]
    elif pool == "avg":
        pooled = h[:, npre:].mean(1)
    else:
        pooled = np.concatenate([h[:, 0], h[:, npre:].mean(1)], 1)
    if fc_norm is not None and fc_norm[0] is not None:
        pooled = ln(pooled, *fc_norm, eps)
    logits = pooled @ head[0].T + head[1] if head[0] is not None else pooled
    unused = sorted(set(T) - used)
    assert not unused, f"unused tensors {unused}"
    errs = {n: float(np.abs(a - exp_np[n]).max()) for n, a in
            (("logits", logits), ("tokens", h), ("attn0", attn0), ("pooled", pooled))}
    return errs


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=os.path.join(here, "fixtures", "family"))
    args = ap.parse_args()
    worst = 0.0
    for name in sorted(os.listdir(args.dir)):
        d = os.path.join(args.dir, name)
        if name == "hostile" or not os.path.isdir(d):
            continue
        errs = run_case(d)
        worst = max(worst, max(errs.values()))
        print(f"{name:18s} " + " ".join(f"{k} {v:.1e}" for k, v in errs.items()))
    assert worst < 1e-5, worst
    print(f"ok (worst {worst:.1e})")


if __name__ == "__main__":
    main()
