#!/usr/bin/python3
"""Writes the synthetic parity fixtures under tests/fixtures/parity/<case>/.

Each case directory holds
  model.safetensors     random (but non-trivial) weights in the case's key layout
                        (omitted when case.json names another case's file in "model")
  config.json           when the case has one (timm-style or HF-style)
  expected.safetensors  F32: input [B,3,S,S], embed [B,T,D] (encoder input),
                        block0 [B,T,D] (output of block 0), logits [B,C]
                        (or [B,D], the normed class token, without a head)
  case.json             {"layout", "run_size", "native_size", "notes", ...}

Reference semantics: tests/torch_vit.py (plain torch, timm/HF ViT/DeiT).
Deterministic: every case draws from its own torch.Generator with a fixed seed.

Usage: /usr/bin/python3 tests/gen_parity.py [--out DIR]
"""

from collections import OrderedDict
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vit import RefViT, save_safetensors, load_safetensors  # noqa: E402
from fixture_io import case_named, fixture_args, fresh_dir, save_f32, write_json  # noqa: E402

BATCH = 2
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def timm_config(arch, num_classes, model_args, img):
    return {
        "architecture": arch,
        "num_classes": num_classes,
        "num_features": model_args["embed_dim"],
        "global_pool": "token",
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": "vitc_parity",
            "custom_load": False,
            "input_size": [3, img, img],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": 0.875,
            "crop_mode": "center",
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "num_classes": num_classes,
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": ["head", "head_dist"],
        },
    }


def hf_config(arch, model_type, m, labels):
    cfg = {
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": m.embed_dim,
        "num_hidden_layers": m.depth,
        "num_attention_heads": m.num_heads,
        "intermediate_size": m.mlp_dim,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": m.eps,
        "image_size": m.img_size,
        "patch_size": m.patch_size,
        "num_channels": 3,
        "qkv_bias": True,
        "encoder_stride": m.patch_size,
        "id2label": {str(i): n for i, n in enumerate(labels)},
        "label2id": {n: i for i, n in enumerate(labels)},
        "torch_dtype": "float32",
    }
    return cfg


NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# name, seed, model kwargs, layout, run size, notes, extra
CASES = [
    dict(name="timm_d128_h2", seed=1001, layout="timm",
         model=dict(embed_dim=128, depth=2, num_heads=2, mlp_dim=512, patch_size=8, img_size=32,
                    num_classes=10, eps=1e-6),
         run_size=32, config=None, store_dtype="F16",
         notes="timm layout, no config.json: hyper-parameters must be inferred from shapes "
               "(heads = D/64 = 2, dh 64; eps 1e-6). 16 patches + cls = 17 tokens."),
    dict(name="timm_dist_d96_h4", seed=1002, layout="timm",
         model=dict(embed_dim=96, depth=2, num_heads=4, mlp_dim=384, patch_size=8, img_size=32,
                    num_classes=7, distilled=True, eps=1e-6),
         run_size=32, config="timm_dist", store_dtype="BF16",
         notes="timm DeiT distilled (dist_token, head_dist): logits = (head(x0) + head_dist(x1)) / 2. "
               "4 heads (dh 24) from config.json model_args (D/64 would be wrong). "
               "18 tokens (cls, dist, 16 patches)."),
    dict(name="hf_vit_d48_h3", seed=1003, layout="hf_vit",
         model=dict(embed_dim=48, depth=2, num_heads=3, mlp_dim=96, patch_size=8, img_size=32,
                    num_classes=5, eps=1e-12),
         run_size=32, config="hf_vit",
         notes="HF ViTForImageClassification: separate query/key/value, 3 heads (dh 16) "
               "from config.json, layer_norm_eps 1e-12, id2label 'class zero'.. 'class four'."),
    dict(name="hf_deit_teacher_d64_h2", seed=1004, layout="hf_deit",
         model=dict(embed_dim=64, depth=3, num_heads=2, mlp_dim=128, patch_size=4, img_size=16,
                    num_classes=6, distilled=True, eps=1e-12),
         run_size=16, config="hf_deit_teacher",
         notes="HF DeiTForImageClassificationWithTeacher: deit. prefix, distillation_token, "
               "logits = (cls_classifier(x0) + distillation_classifier(x1)) / 2. "
               "2 heads (dh 32), 3 layers, patch 4, 18 tokens, eps 1e-12."),
    dict(name="timm_d128_h2_size48", seed=1005, layout="timm", same_model_as="timm_d128_h2",
         run_size=48, config=None, pos_antialias=False,
         notes="Same checkpoint as timm_d128_h2 run at 48x48: pos-embed grid 4x4 -> 6x6 resampled "
               "with F.interpolate(mode='bicubic', align_corners=False, antialias=False) "
               "(plain bicubic, a=-0.75, clamped borders), cls position kept. 37 tokens."),
    dict(name="timm_d128_h2_size48_aa", seed=1005, layout="timm", same_model_as="timm_d128_h2",
         run_size=48, config=None, pos_antialias=True,
         notes="As timm_d128_h2_size48 (same input) but the pos-embed grid resampled with "
               "antialias=True, which is what timm >= 0.9 resample_abs_pos_embed does by default "
               "(torch's antialiased bicubic: PIL-style kernel a=-0.5, weights renormalised at the "
               "borders; differs from antialias=False even when upsampling)."),
    dict(name="timm_nohead_d64_h1", seed=1006, layout="timm",
         model=dict(embed_dim=64, depth=1, num_heads=1, mlp_dim=128, patch_size=8, img_size=16,
                    num_classes=0, eps=1e-6),
         init=dict(token_std=0.01, patch_scale=0.01),
         run_size=16, config=None,
         notes="timm layout without head tensors: 'logits' is the final-LayerNorm'd class "
               "token [B, D]. 1 head (dh 64), 1 layer, 5 tokens. Tiny tokens/pos embed/patch "
               "projection (encoder-input variance ~1e-4) make the LayerNorm eps visible: timm's "
               "1e-6 is required, 1e-12 (the HF default) moves block0 by ~1e-2."),
    dict(name="hf_deit_plain_d32_h2", seed=1007, layout="hf_deit",
         model=dict(embed_dim=32, depth=1, num_heads=2, mlp_dim=64, patch_size=8, img_size=16,
                    num_classes=4, distilled=True, dist_head=False, eps=1e-12),
         run_size=16, config="hf_deit_plain",
         notes="HF DeiTForImageClassification (no teacher head): deit. prefix with "
               "distillation_token in the sequence, but a single 'classifier' reading token 0 "
               "only. 2 heads (dh 16), 6 tokens."),
    dict(name="hf_vit_eps_d32_h2", seed=1008, layout="hf_vit",
         model=dict(embed_dim=32, depth=1, num_heads=2, mlp_dim=64, patch_size=8, img_size=16,
                    num_classes=3, eps=1e-12),
         init=dict(token_std=0.01, patch_scale=0.01),
         run_size=16, config="hf_vit",
         notes="LayerNorm-eps sensitivity: tokens, pos embed and patch projection are tiny "
               "(encoder-input variance ~1e-4), so layer_norm_eps must be read from config.json "
               "(1e-12): using timm's 1e-6 instead moves block0/logits by ~1e-3. "
               "HF ViT layout, 2 heads (dh 16), 1 layer, 5 tokens."),
]


def build_config(kind, m):
    if kind is None:
        return None
    if kind == "timm_dist":
        return timm_config("deit_tiny_distilled_patch16_224", m.num_classes,
                           {"embed_dim": m.embed_dim, "depth": m.depth, "num_heads": m.num_heads,
                            "patch_size": m.patch_size, "img_size": m.img_size}, m.img_size)
    if kind == "hf_vit":
        return hf_config("ViTForImageClassification", "vit", m,
                         [f"class {NUMBER_WORDS[i]}" for i in range(m.num_classes)])
    if kind == "hf_deit_teacher":
        return hf_config("DeiTForImageClassificationWithTeacher", "deit", m,
                         [f"LABEL_{i}" for i in range(m.num_classes)])
    if kind == "hf_deit_plain":
        return hf_config("DeiTForImageClassification", "deit", m,
                         [f"label {i}" for i in range(m.num_classes)])
    raise ValueError(kind)


def state_dict_for(m, layout):
    if layout == "timm":
        return m.timm_state_dict()
    if layout == "hf_vit":
        return m.hf_state_dict("vit")
    if layout == "hf_deit":
        return m.hf_state_dict("deit")
    raise ValueError(layout)


def main():
    args = fixture_args(__doc__, "parity")
    torch.set_num_threads(1)  # deterministic reduction order

    models = {}
    for c in CASES:
        d = os.path.join(args.out, c["name"])
        fresh_dir(d)
        g = torch.Generator().manual_seed(c["seed"])
        if "same_model_as" in c:
            base = case_named(CASES, c["same_model_as"])
            m = models[base["name"]]
            m.pos_antialias = c.get("pos_antialias", False)
            model_ref = f"../{base['name']}/model.safetensors"
        else:
            m = RefViT(**c["model"]).random_init(g, **c.get("init", {}))
            m.eval()
            store = {"F16": torch.float16, "BF16": torch.bfloat16}.get(c.get("store_dtype"))
            if store is not None:
                # Half-size checkpoints keep the fixtures small and exercise
                # the converting load path; the reference runs on exactly the
                # rounded values the file holds.
                with torch.no_grad():
                    for param in m.parameters():
                        param.copy_(param.to(store).float())
            models[c["name"]] = m
            sd = state_dict_for(m, c["layout"])
            if store is not None:
                sd = OrderedDict((k, v.to(store)) for k, v in sd.items())
            mpath = os.path.join(d, "model.safetensors")
            save_safetensors(mpath, sd, {"format": "pt"})
            # round trip: the file on disk reproduces the model exactly
            sd2, _ = load_safetensors(mpath)
            sd2 = OrderedDict((k, v.float()) for k, v in sd2.items())
            m2 = RefViT.from_state_dict(sd2, num_heads=m.num_heads, eps=m.eps)
            model_ref = None
        cfg = build_config(c.get("config"), m)
        if cfg is not None:
            write_json(os.path.join(d, "config.json"), cfg)

        S = c["run_size"]
        x = torch.randn(BATCH, 3, S, S, generator=g)
        with torch.no_grad():
            r = m(x, return_intermediates=True)
            if model_ref is None:
                assert torch.equal(m2(x), r["logits"])
        exp = {"input": x, "embed": r["embed"], "block0": r["block0"], "logits": r["logits"]}
        save_f32(os.path.join(d, "expected.safetensors"), exp, case=c["name"],
                 generator="tests/gen_parity.py")

        info = {
            "layout": c["layout"],
            "run_size": S,
            "native_size": m.img_size,
            "patch_size": m.patch_size,
            "embed_dim": m.embed_dim,
            "depth": m.depth,
            "num_heads": m.num_heads,
            "mlp_dim": m.mlp_dim,
            "num_classes": m.num_classes,
            "distilled": m.distilled,
            "layer_norm_eps": m.eps,
            "pos_embed_antialias": m.pos_antialias,
            "tokens": int(r["embed"].shape[1]),
            "has_config": cfg is not None,
            "notes": c["notes"],
        }
        if model_ref:
            info["model"] = model_ref
        write_json(os.path.join(d, "case.json"), info)
        lg = r["logits"]
        print(f"{c['name']:26s} S={S:2d} T={info['tokens']:2d} D={m.embed_dim:3d} "
              f"logits {list(lg.shape)} |logits|max={lg.abs().max().item():.2f} "
              f"|block0|max={r['block0'].abs().max().item():.2f}")


if __name__ == "__main__":
    main()
