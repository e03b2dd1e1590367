#!/usr/bin/python3
"""Writes the training fixtures of the ViT family's switches (issue 18) under
tests/fixtures/train/family_<case>.safetensors, in the form of gen_train.py:

  <param>            the parameters (timm names) of a small random FamilyViT
                     (tests/torch_vit.py), every switch's tensors included
  input, labels      a batch [B, C, S, S] and its classes (as floats)
  loss               [1] F.cross_entropy(logits, labels, label_smoothing=s)
  logits             [B, classes] the forward pass
  grad.<param>       autograd's gradient of that loss
  step1.<param>      after one torch.optim.AdamW step (decay on weight
                     matrices only, as vitc and timm), for the case with "adamw"
and in __metadata__ "case": the configuration as JSON, "config" holding the
vit_config fields vitc's test builds the training model from.

Cases: DeiT III (LayerScale, no_embed_class); CLIP fine-tune (pre-norm, no
patch bias, QuickGELU, eps 1e-5); reg4 + gap (registers, no class token,
average pooling without the registers, fc_norm, LayerScale,
no_embed_class); gap without fc_norm (final norm per token, then the
mean); qk-norm with QKV without bias; HF DINOv2 with registers (position
rows for the class token only, registers after, LayerScale, the [class ‖
mean(patches)] head of width 2D).

Usage: /usr/bin/python3 tests/gen_train_family.py [--out DIR]
"""

import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vit import FamilyViT  # noqa: E402
from gen_train import adamw_steps, autograd_tensors, generate, write_case  # noqa: E402

BASE = dict(embed_dim=16, depth=2, num_heads=2, mlp_dim=32, patch_size=4, img_size=8,
            num_classes=5)
CASES = [
    dict(name="deit3", seed=3101, batch=3, smoothing=0.1,
         model=dict(BASE, init_values=1e-1, no_embed_class=True)),
    dict(name="clip", seed=3102, batch=2, smoothing=0.0,
         model=dict(BASE, pre_norm=True, act="quick_gelu", eps=1e-5)),
    dict(name="reg4_gap", seed=3103, batch=3, smoothing=0.1, adamw=True,
         model=dict(BASE, reg_tokens=4, class_token=False, global_pool="avg", fc_norm=True,
                    no_embed_class=True, init_values=1e-1)),
    dict(name="gap_norm", seed=3104, batch=2, smoothing=0.0,
         model=dict(BASE, class_token=False, global_pool="avg", fc_norm=False, qkv_bias=False)),
    dict(name="qknorm_nobias", seed=3105, batch=2, smoothing=0.1,
         model=dict(BASE, embed_dim=24, num_heads=3, qk_norm=True, qkv_bias=False)),
    dict(name="dinov2_reg", seed=3106, batch=3, smoothing=0.1,
         model=dict(BASE, style="dinov2_reg", reg_tokens=2, num_classes=4)),
]

POOL = {"token": 0, "avg": 1, "dinov2": 2}


def vit_config(m):
    """The vit_config fields (vit/vit.h) of a FamilyViT."""
    prefix = int(m.class_token) + m.reg_tokens
    if m.style != "timm":
        pos_prefix = 1
    else:
        pos_prefix = 0 if m.no_embed_class else prefix
    return dict(
        hidden_size=m.embed_dim, num_layers=m.depth, num_heads=m.num_heads,
        mlp_size=m.mlp_dim, patch_size=m.patch_size, image_size=m.img_size,
        num_channels=m.in_chans, layer_norm_eps=m.eps, num_classes=m.num_classes,
        num_prefix_tokens=prefix, no_class_token=int(not m.class_token),
        num_reg_tokens=m.reg_tokens, pos_embed_prefix=pos_prefix,
        no_embed_class=int(prefix > 0 and pos_prefix == 0),
        global_pool=POOL[m.global_pool], no_final_norm=int(m.use_fc_norm),
        fc_norm=int(m.use_fc_norm), pre_norm=int(m.pre_norm),
        act=int(m.act == "quick_gelu"), no_qkv_bias=int(not m.qkv_bias),
        qk_norm=int(m.qk_norm), layer_scale=int(bool(m.init_values)))


def make_case(case, out_dir):
    gen = torch.Generator().manual_seed(case["seed"])
    m = FamilyViT(**case["model"]).random_init(gen)
    # The file's own parameters only (mask_token is not used by training).
    params = OrderedDict((k, torch.nn.Parameter(v.clone())) for k, v in m.p.items()
                         if k != "mask_token")
    for k, v in params.items():
        m.p[k] = v
    B, S = case["batch"], m.img_size
    x = torch.randn(B, m.in_chans, S, S, generator=gen)
    y = torch.randint(0, m.num_classes, (B,), generator=gen)
    logits = m(x)["logits"]
    loss = F.cross_entropy(logits, y, label_smoothing=case["smoothing"])
    loss.backward()
    out, grads = autograd_tensors(params, x, y, loss, logits=logits.detach())
    if case.get("adamw"):
        adamw_steps(params, grads, out, 1)
    write_case(os.path.join(out_dir, "family_" + case["name"] + ".safetensors"), out,
               dict(case, config=vit_config(m)), params, loss)


def main():
    generate(CASES, make_case)


if __name__ == "__main__":
    main()
