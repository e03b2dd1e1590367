#!/usr/bin/python3
"""Writes tests/fixtures/inspect/family_<case>.safetensors: what the inspection
commands must give on register and no-class-token models (issue 18).

For the family fixtures reg4_gap (no class token, 4 registers, fc_norm),
reg4_token (class + 4 registers), dinov2_reg_hf (HF DINOv2 with 4 registers,
head on [class ‖ mean]) and gap_implicit (no class token, no registers, final
norm per token), the reference FamilyViT (tests/torch_vit.py), loaded from the
case's model.safetensors and run on its expected.safetensors input (B = 2, at
run_size), gives as F32 (T tokens, P patches, prefix = class + registers):

  tokens_last        [B, T, D]  residual stream after the last block (not normed)
  map_<l>_mean       [B, P]     layer l's attention map, head mean
  map_<l>_head<h>    [B, P]     the same for head h
  rollout_0, rollout_50 [B, P]  rollout map through every layer, discard 0 / 0.5
  pool_mean, pool_none, pool_model (+ pool_cls with a class token)
                                features --pool (timm forward_head(pre_logits))
  patch_logits       [B, P, C]  the classifier on every patch token

The maps (vit_inspect.h, README "Looking inside"):
  - with a class token: its attention row (row 0) over the patch columns
    attn[:, :, 0, prefix:] (head h, or the mean over heads);
  - without one: the mean over the patch queries of their rows, patch columns
    only: attn[:, :, prefix:, prefix:] head-meaned, then .mean(dim=query).
  Register / class columns are left out and nothing is renormalised.
  Rollout: R as tests/gen_inspect.py (per layer head mean, discard except flat
  entry 0, (A + I) / 2, rows renormalised, R = A R) over all T tokens; the map
  is R[:, 0, prefix:] or, without a class token, R[:, prefix:, prefix:].mean(1).
Pools: mean = (final norm per token) patch tokens' mean, then fc_norm if the
  model has one; none = every final-normed token; model = what the head reads
  (FamilyViT's pooled); cls = the normed class token.
Patch logits: each patch in the pooled features' place: final norm (identity
  for fc_norm models), fc_norm, head; DINOv2's head on [class ‖ mean] reads
  [normed class ‖ normed patch], whose mean over the patches is the logits.

The generator also checks that each thing the C test compares could fail: the
stored values differ by more than 1e-3 from what a wrong rule gives (register
columns in the grid, the map renormalised over the patches, register rows in
the query mean, row 0 read as if it were a class token, registers in the mean
pool, fc_norm left out of the patch logits).

Usage: /usr/bin/python3 tests/gen_inspect_family.py [--out DIR]
"""

import os
import sys
from collections import OrderedDict

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vit import FamilyViT, load_safetensors  # noqa: E402
from fixture_io import case_named, fixture_args, save_f32  # noqa: E402
from gen_family import CASES as FAMILY_CASES  # noqa: E402
from gen_inspect import rollout  # noqa: E402

CASES = ["reg4_gap", "reg4_token", "dinov2_reg_hf", "gap_implicit"]
SEPARATION = 1e-3  # a wrong rule must be off by more than this (the C tolerance is 1e-4)


def attention_map(a, prefix, class_token):
    """a: [B, T, T] (one head, or the head mean, or a rollout matrix)."""
    if class_token:
        return a[:, 0, prefix:]
    return a[:, prefix:, prefix:].mean(dim=1)


def final_norm(m, h):
    return h if m.use_fc_norm else m._ln(h, "norm")


def main():
    args = fixture_args(__doc__, "inspect", family="family")
    torch.set_num_threads(1)

    for name in CASES:
        c = case_named(FAMILY_CASES, name)
        d = os.path.join(args.family, name)
        sd, _ = load_safetensors(os.path.join(d, "model.safetensors"))
        m = FamilyViT(**c["model"]).load(sd, c.get("hf_layout", "timm"))
        expected, _ = load_safetensors(os.path.join(d, "expected.safetensors"))
        x = expected["input"]
        prefix, R, cls = m.num_prefix, m.reg_tokens, m.class_token
        with torch.no_grad():
            r = m(x)
            assert torch.equal(r["logits"], expected["logits"]), name
            h, attn = m.encode(x)
            normed = final_norm(m, h)
            assert torch.equal(normed, r["tokens"]), name
            out = OrderedDict(tokens_last=h)
            wrong = []  # (what, stored, the wrong rule's value)
            for l, a in enumerate(attn):
                out[f"map_{l}_mean"] = attention_map(a.mean(dim=1), prefix, cls)
                for hd in range(m.num_heads):
                    out[f"map_{l}_head{hd}"] = attention_map(a[:, hd], prefix, cls)
                am = a.mean(dim=1)
                P = am.shape[-1] - prefix
                good = out[f"map_{l}_mean"]
                if prefix:  # without prefix tokens the rows over the patches sum to 1
                    wrong.append((f"layer {l}: renormalised over the patches", good,
                                  good / good.sum(-1, keepdim=True)))
                if R:
                    # register columns kept (keys from the first register on): the grid
                    # would start with them
                    q = am[:, 0] if cls else am[:, prefix:].mean(dim=1)
                    wrong.append((f"layer {l}: register columns kept", good, q[:, prefix - R:][:, :P]))
                if not cls:
                    # register rows in the query mean / token 0 taken for a class token
                    if R:
                        wrong.append((f"layer {l}: register rows too", out[f"map_{l}_mean"],
                                      am[:, :, prefix:].mean(dim=1)))
                    wrong.append((f"layer {l}: row 0", out[f"map_{l}_mean"], am[:, 0, prefix:]))
            for key, discard in (("rollout_0", 0.0), ("rollout_50", 0.5)):
                ro = rollout(attn, discard)
                out[key] = attention_map(ro, prefix, cls)
                if not cls:
                    wrong.append((f"{key}: row 0", out[key], ro[:, 0, prefix:]))
                    if R:
                        wrong.append((f"{key}: register rows too", out[key], ro[:, :, prefix:].mean(dim=1)))

            patches = normed[:, prefix:]
            mean = patches.mean(dim=1)
            out["pool_mean"] = m._ln(mean, "fc_norm") if m.use_fc_norm else mean
            out["pool_none"] = normed
            out["pool_model"] = r["pooled"]
            if cls:
                out["pool_cls"] = normed[:, 0]
            if m.global_pool == "dinov2":
                rows = torch.cat([normed[:, :1].expand_as(patches), patches], dim=2)
                # the head is linear: the patch logits' mean is the model's logits
                pl = F.linear(rows, m.p["head.weight"], m.p["head.bias"])
                assert (pl.mean(dim=1) - r["logits"]).abs().max() < 1e-5, name
            else:
                rows = m._ln(patches, "fc_norm") if m.use_fc_norm else patches
                pl = F.linear(rows, m.p["head.weight"], m.p["head.bias"])
            out["patch_logits"] = pl
            if m.use_fc_norm:
                # fc_norm left out per patch (the identity norm only) must show
                wrong.append(("patch logits without fc_norm", pl,
                              F.linear(patches, m.p["head.weight"], m.p["head.bias"])))
            if R:
                wrong.append(("mean pool with registers", out["pool_mean"],
                              (lambda v: m._ln(v, "fc_norm") if m.use_fc_norm else v)(
                                  normed[:, 1 if cls else 0:].mean(dim=1))))
        for what, good, bad in wrong:
            delta = (good - bad).abs().max().item()
            assert delta > SEPARATION, (name, what, delta)
        out = save_f32(os.path.join(args.out, f"family_{name}.safetensors"), out, case=name,
                       generator="tests/gen_inspect_family.py")
        print(f"{name:14s} T={h.shape[1]} prefix={prefix} registers={R} class_token={cls} "
              f"map sum {out['map_1_mean' if m.depth > 1 else 'map_0_mean'][0].sum().item():.3f} "
              f"smallest wrong-rule delta "
              f"{min((g - b).abs().max().item() for _, g, b in wrong) if wrong else 0:.3g}")


if __name__ == "__main__":
    main()
