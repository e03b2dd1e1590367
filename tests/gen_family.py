#!/usr/bin/python3
"""Writes the ViT-family fixtures (issue 18) under tests/fixtures/family/.

Each case directory family/<case>/ holds
  model.safetensors     random (non-trivial) weights in the case's key layout
                        (omitted when case.json names another case's file in "model")
  config.json           timm style ("architecture", "model_args", "pretrained_cfg")
                        or HF style ("model_type": "dinov2" / "dinov2_with_registers")
  expected.safetensors  F32: input [B,3,S,S] (already normalised pixels),
                        embed [B,T,D] (encoder input: prefix tokens + pos embed, before norm_pre),
                        block0 [B,T,D] (residual stream after block 0),
                        attn0 [B,H,T,T] (block 0's softmax probabilities, row = query),
                        tokens [B,T,D] (after the final norm; the last block's output
                        when the model has fc_norm and norm is identity),
                        pooled [B,D'] (what the classifier sees: timm pre_logits;
                        DINOv2 cat[CLS, mean(patch tokens)], D' = 2D),
                        logits [B,C]
  case.json             {"layout", "switches", "run_size", "native_size",
                         "num_prefix_tokens", "notes", ...}
and family/hostile/<fault>/{model.safetensors, config.json} with
family/hostile/manifest.json: {"<fault>/model.safetensors": "<substring the error must contain>"}.

Reference semantics: tests/torch_vit.py FamilyViT (timm VisionTransformer /
transformers Dinov2*), cross-checked here against its loop-based float64
formulation. Deterministic: fixed seed per case.

Usage: /usr/bin/python3 tests/gen_family.py [--out DIR]
"""

import copy
import os
import sys
from collections import OrderedDict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vit import (FamilyViT, _independent_family_forward, load_safetensors,  # noqa: E402
                       save_safetensors)
from fixture_io import case_named, fixture_args, fresh_dir, save_f32, write_json  # noqa: E402

BATCH = 2
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


# ---------------------------------------------------------------- configs

def timm_config(arch, m, model_args, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """A timm hub config.json (as timm's push_to_hf_hub writes it)."""
    return {
        "architecture": arch,
        "num_classes": m.num_classes,
        "num_features": m.embed_dim,
        "global_pool": m.global_pool,
        "model_args": model_args,
        "pretrained_cfg": {
            "tag": "vitc_family",
            "custom_load": False,
            "input_size": [3, m.img_size, m.img_size],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": mean,
            "std": std,
            "num_classes": m.num_classes,
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": "head",
        },
    }


def spelled_args(m, extra_keys=()):
    """model_args with the dimensions and every switch spelled out."""
    a = OrderedDict(img_size=m.img_size, patch_size=m.patch_size, embed_dim=m.embed_dim,
                    depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_dim / m.embed_dim)
    if m.init_values:
        a["init_values"] = m.init_values
    if m.no_embed_class:
        a["no_embed_class"] = True
    if m.reg_tokens:
        a["reg_tokens"] = m.reg_tokens
    if not m.class_token:
        a["class_token"] = False
    if m.global_pool != "token":
        a["global_pool"] = m.global_pool
    if m.use_fc_norm and m.global_pool != "avg":
        a["fc_norm"] = True
    if not m.use_fc_norm and m.global_pool == "avg":
        a["fc_norm"] = False
    if m.pre_norm:
        a["pre_norm"] = True
    if m.act != "gelu":
        a["act_layer"] = m.act
    if not m.qkv_bias:
        a["qkv_bias"] = False
    if m.qk_norm:
        a["qk_norm"] = True
    return dict(a)


def dims_only_args(m):
    return dict(img_size=m.img_size, patch_size=m.patch_size, embed_dim=m.embed_dim,
                depth=m.depth, num_heads=m.num_heads)


def hf_dinov2_config(m, arch, labels):
    reg = m.style == "dinov2_reg"
    cfg = OrderedDict()
    cfg["architectures"] = [arch] if arch else ["Dinov2Model" if not reg else "Dinov2WithRegistersModel"]
    cfg["model_type"] = "dinov2_with_registers" if reg else "dinov2"
    cfg["hidden_size"] = m.embed_dim
    cfg["num_hidden_layers"] = m.depth
    cfg["num_attention_heads"] = m.num_heads
    cfg["mlp_ratio"] = m.mlp_dim // m.embed_dim
    cfg["hidden_act"] = "gelu"
    cfg["hidden_dropout_prob"] = 0.0
    cfg["attention_probs_dropout_prob"] = 0.0
    cfg["initializer_range"] = 0.02
    cfg["layer_norm_eps"] = m.eps
    cfg["image_size"] = m.img_size
    cfg["patch_size"] = m.patch_size
    cfg["num_channels"] = 3
    cfg["qkv_bias"] = True
    cfg["layerscale_value"] = 1.0
    cfg["drop_path_rate"] = 0.0
    cfg["use_swiglu_ffn"] = False
    if reg:
        cfg["num_register_tokens"] = m.reg_tokens
    else:
        cfg["use_mask_token"] = True
    cfg["out_features"] = [f"stage{m.depth}"]
    cfg["out_indices"] = [m.depth]
    cfg["apply_layernorm"] = True
    cfg["reshape_hidden_states"] = True
    if labels:
        cfg["id2label"] = {str(i): n for i, n in enumerate(labels)}
        cfg["label2id"] = {n: i for i, n in enumerate(labels)}
    cfg["torch_dtype"] = "float32"
    return dict(cfg)


# ---------------------------------------------------------------- cases

DEIT3 = dict(init_values=1e-6, no_embed_class=True, eps=1e-6)

CASES = [
    dict(name="deit3", seed=1801, layout="timm",
         model=dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, patch_size=4, img_size=16,
                    num_classes=5, **DEIT3),
         run_size=16, arch="deit3_small_patch16_224", args="spelled",
         switches=["layer_scale", "no_embed_class"],
         notes="DeiT III (timm deit3_*): LayerScale (blocks.N.ls1.gamma / ls2.gamma, values "
               "U(-0.4, 1.2), not the 1e-6 init) and no_embed_class (pos_embed [1, 16, D] covers "
               "the 16 patches (4x4 of patch 4) only; the class token is concatenated after the patches got their "
               "positions). eps 1e-6. model_args spell the switches out. T = 1 + 16 = 17."),
    dict(name="deit3_implicit", seed=1802, layout="timm",
         model=dict(embed_dim=32, depth=1, num_heads=2, mlp_dim=128, patch_size=8, img_size=16,
                    num_classes=3, **DEIT3),
         run_size=16, arch="deit3_small_patch16_224", args="dims",
         switches=["layer_scale", "no_embed_class", "implied_by_architecture"],
         notes="Same switches as deit3 but config.json's model_args hold only the dimensions "
               "(img_size, patch_size, embed_dim, depth, num_heads): no_embed_class and "
               "init_values come from the architecture name deit3_* (timm's deit3_* "
               "entrypoints pass no_embed_class=True, init_values=1e-6), see the table in "
               "family/README.md. Tensors agree: pos_embed [1, 4, D] for a 2x2 grid, ls1/ls2 present. "
               "T = 5."),
    dict(name="clip_ft", seed=1803, layout="timm",
         model=dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, patch_size=4, img_size=16,
                    num_classes=4, pre_norm=True, act="quick_gelu", eps=1e-5),
         init=dict(token_std=0.01, patch_scale=0.01),
         run_size=16, arch="vit_base_patch16_clip_quickgelu_224", args="spelled",
         mean=CLIP_MEAN, std=CLIP_STD,
         switches=["pre_norm", "no_patch_bias", "quick_gelu", "eps_1e-5"],
         notes="CLIP fine-tune (timm vit_*_clip_quickgelu_*): norm_pre (LayerNorm on the encoder "
               "input, before block 0), no patch_embed.proj.bias (timm: bias = not pre_norm), "
               "QuickGELU x*sigmoid(1.702x) in the MLP, LayerNorm eps 1e-5 everywhere (the *_clip_* "
               "entrypoints pass norm_layer=nn.LayerNorm; not expressible in model_args, so it comes "
               "from the architecture table). Tiny tokens / pos embed / patch projection (encoder "
               "input variance ~1e-4) make norm_pre's eps visible. Class-token pooling. T = 17. "
               "This is also the positive 'norm_pre must not be ignored' case."),
    dict(name="clip_implicit", seed=1804, layout="timm",
         model=dict(embed_dim=32, depth=1, num_heads=2, mlp_dim=128, patch_size=8, img_size=16,
                    num_classes=3, pre_norm=True, act="gelu", eps=1e-5),
         init=dict(token_std=0.01, patch_scale=0.01),
         run_size=16, arch="vit_base_patch16_clip_224", args="dims",
         mean=CLIP_MEAN, std=CLIP_STD,
         switches=["pre_norm", "no_patch_bias", "eps_1e-5", "implied_by_architecture"],
         notes="CLIP fine-tune as timm publishes vit_*_clip_224.openai_ft_in1k / laion2b_ft_in1k: "
               "architecture vit_base_patch16_clip_224 (pre_norm=True, norm_layer=nn.LayerNorm "
               "-> eps 1e-5, act GELU (erf) - the timm fine-tunes of OpenAI CLIP use nn.GELU, only "
               "*_clip_quickgelu_* use QuickGELU), model_args with dimensions only. T = 5."),
    dict(name="reg4_gap", seed=1805, layout="timm",
         model=dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, patch_size=4, img_size=16,
                    num_classes=6, reg_tokens=4, class_token=False, global_pool="avg",
                    no_embed_class=True, init_values=1e-5, eps=1e-6),
         run_size=16, arch="vit_medium_patch16_reg4_gap_256", args="spelled",
         switches=["reg_tokens", "no_class_token", "global_pool_avg", "fc_norm", "no_embed_class",
                   "layer_scale"],
         notes="timm vit_*_reg4_gap_*: 4 register tokens (reg_token [1, 4, D]), no class token, "
               "global_pool 'avg' over the patch tokens only (registers are prefix tokens, left "
               "out), fc_norm (norm is identity: 'tokens' is the last block's output; "
               "fc_norm.weight/bias applied to the pooled vector), no_embed_class (pos_embed "
               "[1, 16, D]), LayerScale. Sequence: reg0..reg3, 16 patches; T = 20."),
    dict(name="reg4_token", seed=1806, layout="timm",
         model=dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, patch_size=4, img_size=16,
                    num_classes=4, reg_tokens=4, class_token=True, no_embed_class=True,
                    init_values=1e-5, eps=1e-6),
         run_size=16, arch="vit_small_patch14_reg4_dinov2", args="spelled",
         switches=["reg_tokens", "no_embed_class", "layer_scale"],
         notes="Register tokens with a class token (timm vit_*_reg4_dinov2 layout): sequence "
               "cls, reg0..reg3, 16 patches (T = 21); pos_embed [1, 16, D] for the patches only; "
               "class-token pooling; LayerScale. num_prefix_tokens 5."),
    dict(name="reg4_token_s24", seed=1807, layout="timm", same_model_as="reg4_token",
         run_size=24,
         switches=["reg_tokens", "no_embed_class", "layer_scale", "pos_resample"],
         notes="The reg4_token checkpoint run at 24x24 (native 16): only the 4x4 patch positions "
               "are resampled to 6x6 (timm resample_abs_pos_embed with num_prefix_tokens=0 "
               "because no_embed_class; bicubic, align_corners=False, antialias=True as timm >= "
               "0.9 does by default); cls/reg tokens have no positions. T = 5 + 36 = 41."),
    dict(name="reg2_embed_class", seed=1808, layout="timm",
         model=dict(embed_dim=32, depth=1, num_heads=2, mlp_dim=64, patch_size=8, img_size=16,
                    num_classes=3, reg_tokens=2, class_token=True, no_embed_class=False, eps=1e-6),
         run_size=16, arch="vit_base_patch16_224", args="spelled",
         switches=["reg_tokens"],
         notes="Register tokens WITHOUT no_embed_class (a legal timm combination): pos_embed "
               "[1, 1 + 2 + 4, D] covers cls, reg0, reg1 and the 4 patches, added after the "
               "concatenation. T = 7."),
    dict(name="gap_implicit", seed=1814, layout="timm",
         model=dict(embed_dim=32, depth=1, num_heads=2, mlp_dim=128, patch_size=4, img_size=16,
                    num_classes=3, class_token=False, global_pool="avg", fc_norm=False,
                    qkv_bias=False, init_values=1e-6, eps=1e-6),
         run_size=16, arch="vit_medium_patch16_gap_256", args="dims",
         switches=["no_class_token", "global_pool_avg", "qkv_bias_false", "layer_scale",
                   "implied_by_architecture"],
         notes="timm vit_medium_patch16_gap_256 (model_args with dimensions only): the entrypoint "
               "passes class_token=False, global_pool='avg', fc_norm=False, qkv_bias=False, "
               "init_values=1e-6. fc_norm=False: the final norm stays per token BEFORE the mean "
               "(norm.weight/bias present, no fc_norm.*), 'tokens' are normed. No prefix tokens: "
               "pos_embed [1, 16, D] and the sequence is the 16 patches (T = 16)."),
    dict(name="qknorm_nobias", seed=1809, layout="timm",
         model=dict(embed_dim=32, depth=2, num_heads=4, mlp_dim=64, patch_size=4, img_size=16,
                    num_classes=3, qk_norm=True, qkv_bias=False, eps=1e-6),
         run_size=16, arch="vit_base_patch16_224", args="spelled",
         switches=["qk_norm", "qkv_bias_false"],
         notes="qk_norm: blocks.N.attn.q_norm / k_norm, LayerNorm over head_dim (8; 4 heads) with "
               "weight and bias [8] shared by the heads, eps 1e-6, applied to q and k of every head "
               "before the dh^-0.5 scaling (timm Attention). qkv_bias=False: no "
               "blocks.N.attn.qkv.bias (attn.proj keeps its bias). T = 17."),
    dict(name="dinov2_hf", seed=1810, layout="hf", hf_layout="hf_dinov2",
         model=dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, patch_size=4, img_size=28,
                    num_classes=5, style="dinov2", eps=1e-6),
         run_size=16, arch="Dinov2ForImageClassification",
         switches=["layer_scale", "dinov2_classifier", "pos_resample", "mask_token_unused"],
         notes="HF Dinov2ForImageClassification (dinov2. prefix): layer_scale1/2.lambda1, "
               "embeddings.mask_token [1, D] present but unused at inference, classifier "
               "[C, 2D] on cat[CLS, mean(patch tokens)]. Trained at image_size 28 (7x7 positions, "
               "like 518 = 37x37 for the real models), run at 16: the patch positions are "
               "resized 7x7 -> 4x4 by interpolate_pos_encoding: F.interpolate(size=(4, 4), "
               "mode='bicubic', align_corners=False, antialias=False) in float32, class position "
               "kept (current transformers; older versions passed scale_factor=((h/P + 0.1)/7, "
               "(w/P + 0.1)/7) instead of size=, the DINO +0.1 offset, and torch then maps "
               "coordinates with that scale: 0.10 off in the logits here, see the ablations - the "
               "fixture follows size=). eps 1e-6, GELU (erf). T = 17."),
    dict(name="dinov2_hf_native", seed=1811, layout="hf", hf_layout="hf_dinov2",
         same_model_as="dinov2_hf", run_size=28,
         switches=["layer_scale", "dinov2_classifier", "mask_token_unused"],
         notes="The dinov2_hf checkpoint at its native 28x28: no interpolation (HF skips it when "
               "num_patches == num_positions and height == width). T = 50."),
    dict(name="dinov2_reg_hf", seed=1812, layout="hf", hf_layout="hf_dinov2_reg",
         model=dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, patch_size=4, img_size=28,
                    num_classes=4, style="dinov2_reg", reg_tokens=4, eps=1e-6),
         run_size=16, arch="Dinov2WithRegistersForImageClassification",
         switches=["layer_scale", "dinov2_classifier", "reg_tokens", "pos_resample",
                   "mask_token_unused"],
         notes="HF Dinov2WithRegistersForImageClassification (dinov2_with_registers. prefix): "
               "embeddings.register_tokens [1, 4, D]; position_embeddings [1, 1 + 49, D] cover "
               "cls + patches and are added BEFORE the registers are inserted after the class "
               "token (registers get no position): sequence cls, reg0..reg3, 16 patches, T = 21. "
               "Positions 7x7 -> 4x4 with F.interpolate(size=, mode='bicubic', "
               "align_corners=False, antialias=TRUE) (Dinov2WithRegistersEmbeddings differs from "
               "Dinov2Embeddings here). Classifier on cat[CLS, mean(sequence[:, 1 + 4:])]."),
    dict(name="dinov2_model_hf", seed=1813, layout="hf", hf_layout="hf_dinov2_model",
         model=dict(embed_dim=32, depth=2, num_heads=2, mlp_dim=64, patch_size=4, img_size=24,
                    num_classes=0, style="dinov2", eps=1e-6),
         run_size=16, arch="Dinov2Model",
         switches=["layer_scale", "pos_resample", "mask_token_unused", "no_head"],
         notes="HF Dinov2Model (bare backbone: keys without prefix - embeddings.*, encoder.layer.N.*, "
               "layernorm.* - and no classifier). No head: 'logits' and 'pooled' are the "
               "pooler_output, the final-layernormed class token [B, D]. Positions 6x6 -> 4x4 "
               "(antialias=False). T = 17."),
]


def state_dict_for(m, c):
    if c["layout"] == "timm":
        return m.state_dict("timm")
    return m.state_dict(c["hf_layout"])


def build_config(c, m):
    if c["layout"] == "timm":
        args = spelled_args(m) if c["args"] == "spelled" else dims_only_args(m)
        return timm_config(c["arch"], m, args, c.get("mean", IMAGENET_MEAN), c.get("std", IMAGENET_STD))
    labels = [f"label {i}" for i in range(m.num_classes)] if m.num_classes else None
    return hf_dinov2_config(m, c["arch"], labels)


# ---------------------------------------------------------------- ablations
# Each: what a loader that missed one fact would compute; max |delta logits|
# goes into case.json so the fixture's power to catch it is on record.

def _variant(m, **attrs):
    v = copy.copy(m)
    v.p = OrderedDict(m.p)
    for k, val in attrs.items():
        setattr(v, k, val)
    return v


def _old_hf_dinov2_pos(m, S):
    """transformers' Dinov2 interpolate_pos_encoding before the size= rewrite:
    scale_factor=((g + 0.1) / sqrt(N), (g + 0.1) / sqrt(N)) (the DINO +0.1
    offset); torch then maps coordinates with that scale, not with g / sqrt(N)."""
    pos = m.p["pos_embed"]
    n = pos.shape[1] - 1
    gs = int(round(n ** 0.5))
    g = S // m.patch_size + 0.1
    grid = pos[:, 1:].reshape(1, gs, gs, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, scale_factor=(g / gs, g / gs), mode="bicubic",
                                           align_corners=False, antialias=m.pos_antialias)
    assert grid.shape[-1] == S // m.patch_size
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1])], dim=1)


def ablations(m, S):
    out = []
    if m.style != "timm" and S != m.img_size:
        v = _variant(m, grid=(S // m.patch_size,) * 2)
        v.p["pos_embed"] = _old_hf_dinov2_pos(m, S)
        out.append(("old transformers scale_factor=(g+0.1)/sqrt(N) interpolation", v))
    if m.init_values:
        out.append(("LayerScale ignored", _variant(m, init_values=None)))
    if m.pre_norm:
        out.append(("norm_pre ignored", _variant(m, pre_norm=False)))
    if m.act == "quick_gelu":
        out.append(("erf GELU instead of QuickGELU", _variant(m, act="gelu")))
    if m.eps != 1e-6:
        out.append(("eps 1e-6 instead of %g" % m.eps, _variant(m, eps=1e-6)))
    if m.qk_norm:
        out.append(("qk_norm ignored", _variant(m, qk_norm=False)))
    if m.use_fc_norm:
        v = _variant(m, use_fc_norm=False)
        v.p["norm.weight"], v.p["norm.bias"] = m.p["fc_norm.weight"], m.p["fc_norm.bias"]
        out.append(("fc_norm applied per token before the pool (as norm)", v))
    if m.global_pool == "avg" and not m.use_fc_norm:
        v = _variant(m, use_fc_norm=True)
        v.p["fc_norm.weight"], v.p["fc_norm.bias"] = m.p["norm.weight"], m.p["norm.bias"]
        out.append(("norm applied after the pool (as fc_norm)", v))
    if m.global_pool == "avg" and m.reg_tokens and m.no_embed_class:
        out.append(("register tokens included in the mean", _variant(m, num_prefix=0)))
    if m.style == "timm":
        out.append(("pos resample antialias=False (timm <= 0.6 / HF ViT)", _variant(m, pos_antialias=False)))
    if m.style == "dinov2_reg":
        out.append(("antialias=False (Dinov2 instead of WithRegisters)", _variant(m, pos_antialias=False)))
    if m.style == "dinov2":
        out.append(("antialias=True", _variant(m, pos_antialias=True)))
    return out


# ---------------------------------------------------------------- hostile

def hostile_cases():
    """(name, base, mutate(sd) -> sd, substring, description)."""
    def drop(*names):
        def f(sd):
            for n in names:
                del sd[n]
            return sd
        return f

    def reshape(name, shape):
        def f(sd):
            sd[name] = torch.linspace(-1, 1, int(torch.tensor(shape).prod())).reshape(shape)
            return sd
        return f

    def add(name, shape):
        def f(sd):
            sd[name] = torch.ones(shape)
            return sd
        return f

    D = 16
    return [
        ("ls1_gamma_shape", "timm", reshape("blocks.0.ls1.gamma", [D + 8]), "blocks.0.ls1.gamma",
         "blocks.0.ls1.gamma has shape [24] (must be [16])"),
        ("ls1_without_ls2", "timm", drop("blocks.1.ls2.gamma"), "blocks.1.ls2.gamma",
         "block 1 has ls1.gamma but no ls2.gamma (block 0 has both)"),
        ("reg_token_shape", "timm", reshape("reg_token", [1, 2, D + 8]), "reg_token",
         "reg_token [1, 2, 24] (embed_dim is 16)"),
        ("norm_pre_without_bias", "timm", drop("norm_pre.bias"), "norm_pre.bias",
         "norm_pre.weight without norm_pre.bias"),
        ("q_norm_without_k_norm", "timm", drop("blocks.0.attn.k_norm.weight", "blocks.0.attn.k_norm.bias"),
         "blocks.0.attn.k_norm", "blocks.0.attn.q_norm.* present, blocks.0.attn.k_norm.* missing"),
        ("q_norm_shape", "timm", reshape("blocks.1.attn.q_norm.weight", [D]), "blocks.1.attn.q_norm.weight",
         "blocks.1.attn.q_norm.weight [16] (LayerNorm over head_dim: must be [8])"),
        ("unused_tensor", "timm", add("blocks.0.foo.weight", [D]), "blocks.0.foo.weight",
         "an extra tensor no switch uses (must be refused, not ignored; --allow-unused loads it with a warning)"),
        ("fc_norm_without_bias", "timm_gap", drop("fc_norm.bias"), "fc_norm.bias",
         "fc_norm.weight without fc_norm.bias"),
        ("dinov2_lambda1_shape", "hf_dinov2", reshape("dinov2.encoder.layer.0.layer_scale1.lambda1", [D // 2]),
         "dinov2.encoder.layer.0.layer_scale1.lambda1", "layer_scale1.lambda1 [8] (must be [16])"),
        ("dinov2_missing_layer_scale2", "hf_dinov2", drop("dinov2.encoder.layer.1.layer_scale2.lambda1"),
         "dinov2.encoder.layer.1.layer_scale2.lambda1", "layer 1 lacks layer_scale2.lambda1"),
        ("dinov2_register_tokens_shape", "hf_dinov2_reg",
         reshape("dinov2_with_registers.embeddings.register_tokens", [1, 4, D + 8]),
         "register_tokens", "register_tokens [1, 4, 24] (hidden_size 16)"),
        ("dinov2_register_count_mismatch", "hf_dinov2_reg_cfg3", lambda sd: sd, "num_register_tokens",
         "config.json says num_register_tokens 3, the file holds register_tokens [1, 4, 16]"),
        # Issue 24: a per-block switch is decided from every block, so a tensor
        # missing from block 0 is named, not taken as the switch being off
        # (which left the other blocks' tensors loaded and unused).
        ("ls1_missing_in_block0", "timm", drop("blocks.0.ls1.gamma"), "blocks.0.ls1.gamma",
         "blocks.0.ls1.gamma missing, block 1 has ls1/ls2 and block 0 ls2"),
        ("ls2_only", "timm", drop("blocks.0.ls1.gamma", "blocks.1.ls1.gamma"), "blocks.0.ls1.gamma",
         "every block has ls2.gamma, none ls1.gamma"),
        ("q_norm_missing_in_block0", "timm",
         drop("blocks.0.attn.q_norm.weight", "blocks.0.attn.q_norm.bias"), "blocks.0.attn.q_norm.weight",
         "block 0 has k_norm but no q_norm; block 1 has both"),
        ("qkv_bias_missing_in_block0", "timm", drop("blocks.0.attn.qkv.bias"), "blocks.0.attn.qkv.bias",
         "block 1 has a qkv bias, block 0 none"),
        ("dinov2_lambda1_missing_in_layer0", "hf_dinov2",
         drop("dinov2.encoder.layer.0.layer_scale1.lambda1"),
         "dinov2.encoder.layer.0.layer_scale1.lambda1", "layer 0 lacks layer_scale1.lambda1"),
        ("ambiguous_pos_embed", "timm_ambiguous", lambda sd: sd, "pos_embed",
         "no config.json; cls_token + reg_token [1, 4, D] + pos_embed [1, 9, D]: either 9 patch "
         "positions (no_embed_class, 3x3 grid, native 24) or 5 prefix + 4 patch positions (2x2 "
         "grid, native 16) - undecidable from the tensors"),
    ]


def hostile_bases(seed):
    g = torch.Generator().manual_seed(seed)
    timm = FamilyViT(16, 2, 2, 32, 8, 16, num_classes=3, class_token=True, reg_tokens=2,
                     no_embed_class=True, init_values=1e-5, pre_norm=True, qk_norm=True,
                     eps=1e-6).random_init(g)
    gap = FamilyViT(16, 2, 2, 32, 8, 16, num_classes=3, class_token=False, reg_tokens=0,
                    global_pool="avg", eps=1e-6).random_init(g)
    d2 = FamilyViT(16, 2, 2, 32, 8, 16, num_classes=3, style="dinov2", eps=1e-6).random_init(g)
    d2r = FamilyViT(16, 2, 2, 32, 8, 16, num_classes=3, style="dinov2_reg", reg_tokens=4,
                    eps=1e-6).random_init(g)
    amb = FamilyViT(16, 1, 2, 32, 8, 24, num_classes=3, class_token=True, reg_tokens=4,
                    no_embed_class=True, eps=1e-6).random_init(g)
    labels = ["a", "b", "c"]
    cfg3 = hf_dinov2_config(d2r, "Dinov2WithRegistersForImageClassification", labels)
    cfg3["num_register_tokens"] = 3
    return {
        "timm": (timm, "timm", timm_config("vit_base_patch16_224", timm, spelled_args(timm))),
        "timm_gap": (gap, "timm", timm_config("vit_base_patch16_gap_224", gap, spelled_args(gap))),
        "hf_dinov2": (d2, "hf_dinov2", hf_dinov2_config(d2, "Dinov2ForImageClassification", labels)),
        "hf_dinov2_reg": (d2r, "hf_dinov2_reg",
                          hf_dinov2_config(d2r, "Dinov2WithRegistersForImageClassification", labels)),
        "hf_dinov2_reg_cfg3": (d2r, "hf_dinov2_reg", cfg3),
        "timm_ambiguous": (amb, "timm", None),
    }


def main():
    args = fixture_args(__doc__, "family")
    torch.set_num_threads(1)  # deterministic reduction order

    models = {}
    for c in CASES:
        d = os.path.join(args.out, c["name"])
        fresh_dir(d)
        g = torch.Generator().manual_seed(c["seed"])
        model_ref = None
        if "same_model_as" in c:
            base = case_named(CASES, c["same_model_as"])
            m = models[base["name"]]
            model_ref = f"../{base['name']}/model.safetensors"
            cfg = build_config(base, m)
            arch = base["arch"]
        else:
            m = FamilyViT(**c["model"]).random_init(g, **c.get("init", {}))
            models[c["name"]] = m
            sd = state_dict_for(m, c)
            mpath = os.path.join(d, "model.safetensors")
            save_safetensors(mpath, sd, {"format": "pt"})
            # round trip: the file on disk, read back by name, reproduces the model
            sd2, _ = load_safetensors(mpath)
            m2 = FamilyViT(**c["model"]).load(sd2, c.get("hf_layout", "timm"))
            cfg = build_config(c, m)
            arch = c["arch"]
        write_json(os.path.join(d, "config.json"), cfg)

        S = c["run_size"]
        x = torch.randn(BATCH, 3, S, S, generator=g)
        r = m(x)
        if model_ref is None:
            assert torch.equal(m2(x)["logits"], r["logits"])
        # independent float64 formulation
        t64, p64, l64, a64 = _independent_family_forward(m, x)
        err = max((r["tokens"].double() - t64).abs().max().item(),
                  (r["pooled"].double() - p64).abs().max().item(),
                  (r["logits"].double() - l64).abs().max().item(),
                  (r["attention"][0].double() - a64).abs().max().item())
        assert err < 2e-5, (c["name"], err)
        exp = OrderedDict(input=x, logits=r["logits"], tokens=r["tokens"], attn0=r["attention"][0],
                          pooled=r["pooled"], embed=r["embed"], block0=r["block0"])
        save_f32(os.path.join(d, "expected.safetensors"), exp, case=c["name"],
                 generator="tests/gen_family.py")

        abl = OrderedDict()
        for desc, v in ablations(m, S):
            delta = (v(x)["logits"] - r["logits"]).abs().max().item()
            if delta == 0 and desc.startswith("pos resample"):
                continue  # not resampled at this size
            abl[desc] = float("%.3g" % delta)
        info = OrderedDict()
        info["layout"] = c["layout"]
        if c["layout"] == "hf":
            info["hf_class"] = arch
            info["key_prefix"] = {"hf_dinov2": "dinov2.", "hf_dinov2_reg": "dinov2_with_registers.",
                                  "hf_dinov2_model": ""}[c["hf_layout"]]
        else:
            info["architecture"] = arch
            info["model_args"] = "spelled" if (c.get("args") or case_named(
                CASES, c.get("same_model_as"))["args"]) == "spelled" else "dims_only"
        info["switches"] = c["switches"]
        info["run_size"] = S
        info["native_size"] = m.img_size
        info["num_prefix_tokens"] = m.num_prefix
        info["num_register_tokens"] = m.reg_tokens
        info["class_token"] = m.class_token
        info["tokens"] = int(r["tokens"].shape[1])
        info["patch_size"] = m.patch_size
        info["embed_dim"] = m.embed_dim
        info["depth"] = m.depth
        info["num_heads"] = m.num_heads
        info["mlp_dim"] = m.mlp_dim
        info["num_classes"] = m.num_classes
        info["layer_norm_eps"] = m.eps
        info["act"] = m.act
        info["global_pool"] = {"dinov2": "cls+mean" if m.num_classes else "cls"}.get(m.global_pool, m.global_pool)
        info["fc_norm"] = m.use_fc_norm
        info["pos_embed_antialias"] = m.pos_antialias
        info["pos_embed_resampled"] = S != m.img_size
        info["max_err_vs_float64_loops"] = float("%.2g" % err)
        info["ablations_max_abs_logits_delta"] = abl
        info["notes"] = c["notes"]
        if model_ref:
            info["model"] = model_ref
        write_json(os.path.join(d, "case.json"), info)
        print(f"{c['name']:18s} S={S:2d} T={info['tokens']:2d} D={m.embed_dim:2d} "
              f"logits {list(r['logits'].shape)} |logits|max={r['logits'].abs().max().item():.2f} "
              f"err64={err:.1e} ablations {dict(abl)}")

    # hostile
    hd = os.path.join(args.out, "hostile")
    fresh_dir(hd)
    bases = hostile_bases(1899)
    manifest = OrderedDict()
    for name, base, mutate, substring, desc in hostile_cases():
        m, layout, cfg = bases[base]
        sd = mutate(m.state_dict(layout))
        dd = os.path.join(hd, name)
        os.makedirs(dd)
        save_safetensors(os.path.join(dd, "model.safetensors"), sd,
                         {"format": "pt", "fault": desc})
        if cfg is not None:
            write_json(os.path.join(dd, "config.json"), cfg)
        manifest[f"{name}/model.safetensors"] = substring
        # the reference loader refuses it too (config-level faults excepted)
        if name not in ("dinov2_register_count_mismatch", "ambiguous_pos_embed"):
            try:
                FamilyViT(**_ctor_args(m)).load(sd, layout)
            except (KeyError, RuntimeError, AssertionError):
                pass
            else:
                raise SystemExit(f"hostile {name}: the reference loader accepted it")
        print(f"hostile {name:32s} -> {substring!r}")
    write_json(os.path.join(hd, "manifest.json"), manifest)


def _ctor_args(m):
    return dict(embed_dim=m.embed_dim, depth=m.depth, num_heads=m.num_heads, mlp_dim=m.mlp_dim,
                patch_size=m.patch_size, img_size=m.img_size, num_classes=m.num_classes,
                style=m.style, class_token=m.class_token, reg_tokens=m.reg_tokens,
                no_embed_class=m.no_embed_class, init_values=m.init_values, pre_norm=m.pre_norm,
                global_pool=m.global_pool if m.style == "timm" else "token", act=m.act,
                qkv_bias=m.qkv_bias, qk_norm=m.qk_norm, eps=m.eps)


if __name__ == "__main__":
    main()
