/* Hub key layouts. timm and Hugging Face name the same ViT tensors
 * differently; this file is the only place that knows the spellings. */
#include "weights.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *hf_prefix(const weights_file *f, weights_layout layout) {
    if (layout == WEIGHTS_LAYOUT_HF_DEIT) return "deit.";
    if (layout == WEIGHTS_LAYOUT_HF_DINOV2) {
        if (weights_find(f, "dinov2.embeddings.patch_embeddings.projection.weight")) return "dinov2.";
        if (weights_find(f, "dinov2_with_registers.embeddings.patch_embeddings.projection.weight"))
            return "dinov2_with_registers.";
        return "";
    }
    /* A bare ViTModel checkpoint has no "vit." prefix. */
    return weights_find(f, "vit.embeddings.patch_embeddings.projection.weight") ? "vit." : "";
}

weights_layout weights_layout_detect(const weights_file *f) {
    if (weights_find(f, "patch_embed.proj.weight")) return WEIGHTS_LAYOUT_TIMM;
    if (weights_find(f, "deit.embeddings.patch_embeddings.projection.weight"))
        return WEIGHTS_LAYOUT_HF_DEIT;
    /* DINOv2's blocks name their norms norm1/norm2 (ViT: layernorm_before). */
    if (weights_find(f, "dinov2.embeddings.patch_embeddings.projection.weight") ||
        weights_find(f, "dinov2_with_registers.embeddings.patch_embeddings.projection.weight") ||
        (weights_find(f, "embeddings.patch_embeddings.projection.weight") &&
         weights_find(f, "encoder.layer.0.norm1.weight")))
        return WEIGHTS_LAYOUT_HF_DINOV2;
    if (weights_find(f, "vit.embeddings.patch_embeddings.projection.weight") ||
        weights_find(f, "embeddings.patch_embeddings.projection.weight"))
        return WEIGHTS_LAYOUT_HF_VIT;
    return WEIGHTS_LAYOUT_UNKNOWN;
}

const char *weights_layout_name(weights_layout layout) {
    switch (layout) {
    case WEIGHTS_LAYOUT_TIMM: return "timm";
    case WEIGHTS_LAYOUT_HF_VIT: return "Hugging Face ViT";
    case WEIGHTS_LAYOUT_HF_DEIT: return "Hugging Face DeiT";
    case WEIGHTS_LAYOUT_HF_DINOV2: return "Hugging Face DINOv2";
    case WEIGHTS_LAYOUT_UNKNOWN: break;
    }
    return "unknown";
}

int weights_layout_num_layers(const weights_file *f, weights_layout layout) {
    char prefix[64];
    if (layout == WEIGHTS_LAYOUT_TIMM)
        snprintf(prefix, sizeof prefix, "blocks.");
    else
        snprintf(prefix, sizeof prefix, "%sencoder.layer.", hf_prefix(f, layout));
    const size_t prefix_len = strlen(prefix);
    long highest = -1;
    for (size_t i = 0; i < weights_count(f); i++) {
        const char *name = weights_at(f, i)->name;
        if (strncmp(name, prefix, prefix_len) != 0) continue;
        char *end;
        long index = strtol(name + prefix_len, &end, 10);
        if (end != name + prefix_len && *end == '.' && index > highest && index < 100000)
            highest = index;
    }
    return (int)(highest + 1);
}

/* Per-role spellings: the timm key (a printf pattern over the layer index)
 * and the Hugging Face key after the "vit."/"deit." prefix. For timm's fused
 * qkv tensor, slice says which third a Q/K/V role is (-1: whole tensor). */
typedef struct role_keys {
    const char *timm;
    const char *hf;
    const char *hf_alt; /* tried when hf is absent (DeiT with teacher) */
    int slice;
    const char *dinov2; /* HF DINOv2 where it differs from hf ("-": no such tensor) */
} role_keys;

static const role_keys ROLE_KEYS[WEIGHTS_ROLE_COUNT] = {
    [WEIGHTS_PATCH_W] = {"patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight", NULL, -1, NULL},
    [WEIGHTS_PATCH_B] = {"patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias", NULL, -1, NULL},
    [WEIGHTS_CLS_TOKEN] = {"cls_token", "embeddings.cls_token", NULL, -1, NULL},
    [WEIGHTS_DIST_TOKEN] = {"dist_token", "embeddings.distillation_token", NULL, -1, "-"},
    [WEIGHTS_POS_EMBED] = {"pos_embed", "embeddings.position_embeddings", NULL, -1, NULL},
    [WEIGHTS_LN1_W] = {"blocks.%d.norm1.weight", "encoder.layer.%d.layernorm_before.weight", NULL, -1, "encoder.layer.%d.norm1.weight"},
    [WEIGHTS_LN1_B] = {"blocks.%d.norm1.bias", "encoder.layer.%d.layernorm_before.bias", NULL, -1, "encoder.layer.%d.norm1.bias"},
    [WEIGHTS_Q_W] = {"blocks.%d.attn.qkv.weight", "encoder.layer.%d.attention.attention.query.weight", NULL, 0, NULL},
    [WEIGHTS_Q_B] = {"blocks.%d.attn.qkv.bias", "encoder.layer.%d.attention.attention.query.bias", NULL, 0, NULL},
    [WEIGHTS_K_W] = {"blocks.%d.attn.qkv.weight", "encoder.layer.%d.attention.attention.key.weight", NULL, 1, NULL},
    [WEIGHTS_K_B] = {"blocks.%d.attn.qkv.bias", "encoder.layer.%d.attention.attention.key.bias", NULL, 1, NULL},
    [WEIGHTS_V_W] = {"blocks.%d.attn.qkv.weight", "encoder.layer.%d.attention.attention.value.weight", NULL, 2, NULL},
    [WEIGHTS_V_B] = {"blocks.%d.attn.qkv.bias", "encoder.layer.%d.attention.attention.value.bias", NULL, 2, NULL},
    [WEIGHTS_PROJ_W] = {"blocks.%d.attn.proj.weight", "encoder.layer.%d.attention.output.dense.weight", NULL, -1, NULL},
    [WEIGHTS_PROJ_B] = {"blocks.%d.attn.proj.bias", "encoder.layer.%d.attention.output.dense.bias", NULL, -1, NULL},
    [WEIGHTS_LN2_W] = {"blocks.%d.norm2.weight", "encoder.layer.%d.layernorm_after.weight", NULL, -1, "encoder.layer.%d.norm2.weight"},
    [WEIGHTS_LN2_B] = {"blocks.%d.norm2.bias", "encoder.layer.%d.layernorm_after.bias", NULL, -1, "encoder.layer.%d.norm2.bias"},
    [WEIGHTS_FC1_W] = {"blocks.%d.mlp.fc1.weight", "encoder.layer.%d.intermediate.dense.weight", NULL, -1, "encoder.layer.%d.mlp.fc1.weight"},
    [WEIGHTS_FC1_B] = {"blocks.%d.mlp.fc1.bias", "encoder.layer.%d.intermediate.dense.bias", NULL, -1, "encoder.layer.%d.mlp.fc1.bias"},
    [WEIGHTS_FC2_W] = {"blocks.%d.mlp.fc2.weight", "encoder.layer.%d.output.dense.weight", NULL, -1, "encoder.layer.%d.mlp.fc2.weight"},
    [WEIGHTS_FC2_B] = {"blocks.%d.mlp.fc2.bias", "encoder.layer.%d.output.dense.bias", NULL, -1, "encoder.layer.%d.mlp.fc2.bias"},
    [WEIGHTS_NORM_W] = {"norm.weight", "layernorm.weight", NULL, -1, NULL},
    [WEIGHTS_NORM_B] = {"norm.bias", "layernorm.bias", NULL, -1, NULL},
    /* The heads sit outside the "vit."/"deit." prefix in Hugging Face files. */
    [WEIGHTS_HEAD_W] = {"head.weight", "/classifier.weight", "/cls_classifier.weight", -1, NULL},
    [WEIGHTS_HEAD_B] = {"head.bias", "/classifier.bias", "/cls_classifier.bias", -1, NULL},
    [WEIGHTS_HEAD_DIST_W] = {"head_dist.weight", "/distillation_classifier.weight", NULL, -1, "-"},
    [WEIGHTS_HEAD_DIST_B] = {"head_dist.bias", "/distillation_classifier.bias", NULL, -1, "-"},
    /* "-": the Hugging Face ViT/DeiT models have no such tensor. */
    [WEIGHTS_REG_TOKEN] = {"reg_token", "-", NULL, -1, "embeddings.register_tokens"},
    [WEIGHTS_NORM_PRE_W] = {"norm_pre.weight", "-", NULL, -1, "-"},
    [WEIGHTS_NORM_PRE_B] = {"norm_pre.bias", "-", NULL, -1, "-"},
    [WEIGHTS_FC_NORM_W] = {"fc_norm.weight", "-", NULL, -1, "-"},
    [WEIGHTS_FC_NORM_B] = {"fc_norm.bias", "-", NULL, -1, "-"},
    [WEIGHTS_LS1] = {"blocks.%d.ls1.gamma", "-", NULL, -1, "encoder.layer.%d.layer_scale1.lambda1"},
    [WEIGHTS_LS2] = {"blocks.%d.ls2.gamma", "-", NULL, -1, "encoder.layer.%d.layer_scale2.lambda1"},
    [WEIGHTS_Q_NORM_W] = {"blocks.%d.attn.q_norm.weight", "-", NULL, -1, "-"},
    [WEIGHTS_Q_NORM_B] = {"blocks.%d.attn.q_norm.bias", "-", NULL, -1, "-"},
    [WEIGHTS_K_NORM_W] = {"blocks.%d.attn.k_norm.weight", "-", NULL, -1, "-"},
    [WEIGHTS_K_NORM_B] = {"blocks.%d.attn.k_norm.bias", "-", NULL, -1, "-"},
};

static void hf_key(const weights_file *f, weights_layout layout, const char *pattern, int layer,
                   char *key, size_t size) {
    char body[128];
    const int unprefixed = pattern[0] == '/';
    snprintf(body, sizeof body, unprefixed ? pattern + 1 : pattern, layer);
    snprintf(key, size, "%s%s", unprefixed ? "" : hf_prefix(f, layout), body);
}

base_status weights_layout_find(const weights_file *f, weights_layout layout, weights_role role,
                               int layer, weights_ref *ref, base_error *err) {
    memset(ref, 0, sizeof *ref);
    if ((int)role < 0 || role >= WEIGHTS_ROLE_COUNT || layout == WEIGHTS_LAYOUT_UNKNOWN)
        return base_error_set(err, BASE_E_ARG, "%s: no key layout for tensor role %d",
                             weights_path(f), (int)role);
    const role_keys *keys = &ROLE_KEYS[role];
    if (layout == WEIGHTS_LAYOUT_TIMM) {
        snprintf(ref->key, sizeof ref->key, keys->timm, layer);
        ref->tensor = weights_find(f, ref->key);
        if (ref->tensor && keys->slice >= 0) {
            const int64_t rows = ref->tensor->ndim >= 1 ? ref->tensor->shape[0] : 0;
            if (rows % 3 != 0)
                return base_error_set(err, BASE_E_SHAPE,
                                     "%s: tensor '%s': fused qkv has %lld rows, not a multiple of 3",
                                     weights_path(f), ref->key, (long long)rows);
            ref->row_count = rows / 3;
            ref->row_start = keys->slice * ref->row_count;
        }
        return BASE_OK;
    }
    const char *pattern = layout == WEIGHTS_LAYOUT_HF_DINOV2 && keys->dinov2 ? keys->dinov2 : keys->hf;
    if (strcmp(pattern, "-") == 0) return BASE_OK; /* no such tensor in this layout */
    hf_key(f, layout, pattern, layer, ref->key, sizeof ref->key);
    ref->tensor = weights_find(f, ref->key);
    if (!ref->tensor && keys->hf_alt) {
        char alt[sizeof ref->key];
        hf_key(f, layout, keys->hf_alt, layer, alt, sizeof alt);
        if ((ref->tensor = weights_find(f, alt))) memcpy(ref->key, alt, sizeof alt);
    }
    return BASE_OK;
}

/* The role (and layer) timm spells as name: -1 when none does. A fused
 * qkv tensor matches its Q role (slice 0). */
static int timm_role(const char *name, int *layer) {
    int used = 0;
    *layer = 0;
    if (sscanf(name, "blocks.%d.%n", layer, &used) < 1 || !used) *layer = 0;
    for (int role = 0; role < WEIGHTS_ROLE_COUNT; role++) {
        char key[160];
        snprintf(key, sizeof key, ROLE_KEYS[role].timm, *layer);
        if (strcmp(key, name) == 0) return role;
    }
    return -1;
}

int weights_layout_spell(weights_layout layout, const char *prefix, const char *timm_name,
                         int part, char *out, size_t size) {
    int layer;
    int role = timm_role(timm_name, &layer);
    if (role < 0 || layout == WEIGHTS_LAYOUT_UNKNOWN) return -1;
    const int fused = ROLE_KEYS[role].slice >= 0;
    if (layout == WEIGHTS_LAYOUT_TIMM) {
        snprintf(out, size, "%s", timm_name);
        return 0;
    }
    /* Q, K and V of one kind are two roles apart (weights_role). */
    if (fused) role += 2 * (part < 0 ? 0 : part > 2 ? 2 : part);
    const role_keys *keys = &ROLE_KEYS[role];
    const char *pattern = layout == WEIGHTS_LAYOUT_HF_DINOV2 && keys->dinov2 ? keys->dinov2 : keys->hf;
    if (strcmp(pattern, "-") == 0) return -1;
    char body[128];
    const int unprefixed = pattern[0] == '/';
    snprintf(body, sizeof body, unprefixed ? pattern + 1 : pattern, layer);
    snprintf(out, size, "%s%s", unprefixed || !prefix ? "" : prefix, body);
    return fused;
}

int weights_layout_known_unneeded(weights_layout layout, const char *name) {
    if (layout == WEIGHTS_LAYOUT_TIMM || layout == WEIGHTS_LAYOUT_UNKNOWN) return 0;
    /* The prefix ("vit.", "deit.", "dinov2.", "dinov2_with_registers." or
     * none) does not matter. */
    static const char *const UNNEEDED[] = {
        "embeddings.mask_token", /* masked-image modelling only (DINOv2, ViT with use_mask_token) */
        "pooler.dense.weight",   /* ViTModel/DeiTModel's pooler: not what features or the */
        "pooler.dense.bias",     /* classifiers read (README) */
    };
    const char *dot = strchr(name, '.');
    for (size_t i = 0; i < sizeof UNNEEDED / sizeof *UNNEEDED; i++)
        if (strcmp(name, UNNEEDED[i]) == 0 || (dot && strcmp(dot + 1, UNNEEDED[i]) == 0 &&
                                               strncmp(name, "embeddings.", 11) != 0 &&
                                               strncmp(name, "pooler.", 7) != 0))
            return 1;
    return 0;
}
