/* A model made for training: the same vit_model as a loaded one, its
 * parameters plain float32 in one owned buffer with a table of timm-named
 * tensors (vit_param), the model's pointers (patch_w, blocks[l].qkv_w, ...)
 * pointing into it. Created fresh (vit_model_create, vit_model_init),
 * filled from a loaded checkpoint (vit_model_assign), and written back in
 * the names the loader reads (vit_model_save). The trainer (vit/train.c)
 * borrows it and keeps its gradients in a buffer of the same layout. */
#include "vit_train.h"
#include "vit_internal.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patching.h"

/* Appends a tensor to the table; returns where its values sit (NULL on the
 * counting pass, before params exists). */
static const float *add_tensor(vit_model *m, const char *name, int ndim, const int64_t *shape,
                               int decay) {
    vit_param *t = &m->tensors[m->num_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->offset = m->param_count;
    t->decay = decay;
    t->trainable = 1;
    m->param_count += t->numel;
    return m->params ? m->params + t->offset : NULL;
}

#define SHAPE(...) (const int64_t[]){__VA_ARGS__}

/* Encoder block l's tensors, in timm's names and order. */
static void lay_out_block(vit_model *m, int l) {
    const vit_config *c = &m->config;
    const int64_t D = c->hidden_size, M = c->mlp_size, dh = D / c->num_heads;
    vit_block *b = &m->blocks[l];
    char name[48];
#define BLOCK_TENSOR(field, suffix, decay, ...)                           \
    snprintf(name, sizeof name, "blocks.%d." suffix, l);                  \
    b->field = add_tensor(m, name, (int)(sizeof(SHAPE(__VA_ARGS__)) / sizeof(int64_t)), \
                          SHAPE(__VA_ARGS__), decay)
    BLOCK_TENSOR(ln1_w, "norm1.weight", 0, D);
    BLOCK_TENSOR(ln1_b, "norm1.bias", 0, D);
    BLOCK_TENSOR(qkv_w, "attn.qkv.weight", 1, 3 * D, D);
    if (!c->no_qkv_bias) {
        BLOCK_TENSOR(qkv_b, "attn.qkv.bias", 0, 3 * D);
    }
    if (c->qk_norm) {
        BLOCK_TENSOR(q_norm_w, "attn.q_norm.weight", 0, dh);
        BLOCK_TENSOR(q_norm_b, "attn.q_norm.bias", 0, dh);
        BLOCK_TENSOR(k_norm_w, "attn.k_norm.weight", 0, dh);
        BLOCK_TENSOR(k_norm_b, "attn.k_norm.bias", 0, dh);
    }
    BLOCK_TENSOR(proj_w, "attn.proj.weight", 1, D, D);
    BLOCK_TENSOR(proj_b, "attn.proj.bias", 0, D);
    if (c->layer_scale) {
        BLOCK_TENSOR(ls1, "ls1.gamma", 0, D);
    }
    BLOCK_TENSOR(ln2_w, "norm2.weight", 0, D);
    BLOCK_TENSOR(ln2_b, "norm2.bias", 0, D);
    BLOCK_TENSOR(fc1_w, "mlp.fc1.weight", 1, M, D);
    BLOCK_TENSOR(fc1_b, "mlp.fc1.bias", 0, M);
    BLOCK_TENSOR(fc2_w, "mlp.fc2.weight", 1, D, M);
    BLOCK_TENSOR(fc2_b, "mlp.fc2.bias", 0, D);
    if (c->layer_scale) {
        BLOCK_TENSOR(ls2, "ls2.gamma", 0, D);
    }
#undef BLOCK_TENSOR
}

/* The tensors of the configuration, in timm's names and order (a switch's
 * tensors only when the model has it), the model's pointers set to them.
 * Run twice: to count (params NULL), then to point. */
static void lay_out_tensors(vit_model *m) {
    const vit_config *c = &m->config;
    const int64_t D = c->hidden_size, C = c->num_classes, P = c->patch_size;
    const int64_t R = c->num_reg_tokens;
    const int64_t rows = c->pos_embed_prefix + (int64_t)c->pos_embed_grid * c->pos_embed_grid;
    m->num_tensors = 0;
    m->param_count = 0;
    m->patch_w = add_tensor(m, "patch_embed.proj.weight", 4, SHAPE(D, c->num_channels, P, P), 1);
    /* timm: the patch embedding has a bias unless pre_norm (CLIP) */
    if (!c->pre_norm) m->patch_b = add_tensor(m, "patch_embed.proj.bias", 1, SHAPE(D), 0);
    if (!c->no_class_token) m->cls_token = add_tensor(m, "cls_token", 3, SHAPE(1, 1, D), 0);
    if (R) m->reg_tokens = add_tensor(m, "reg_token", 3, SHAPE(1, R, D), 0);
    m->pos_embed = add_tensor(m, "pos_embed", 3, SHAPE(1, rows, D), 0);
    if (c->pre_norm) {
        m->norm_pre_w = add_tensor(m, "norm_pre.weight", 1, SHAPE(D), 0);
        m->norm_pre_b = add_tensor(m, "norm_pre.bias", 1, SHAPE(D), 0);
    }
    for (int l = 0; l < c->num_layers; l++) lay_out_block(m, l);
    if (!c->no_final_norm) {
        m->norm_w = add_tensor(m, "norm.weight", 1, SHAPE(D), 0);
        m->norm_b = add_tensor(m, "norm.bias", 1, SHAPE(D), 0);
    }
    if (c->fc_norm) {
        m->fc_norm_w = add_tensor(m, "fc_norm.weight", 1, SHAPE(D), 0);
        m->fc_norm_b = add_tensor(m, "fc_norm.bias", 1, SHAPE(D), 0);
    }
    m->head_w = add_tensor(m, "head.weight", 2, SHAPE(C, vit_config_pooled_size(c)), 1);
    m->head_b = add_tensor(m, "head.bias", 1, SHAPE(C), 0);
}

/* The leading prefix tokens with a position row: none with no_embed_class,
 * the class token's alone where the config says 1 with registers (DINOv2),
 * else all (a config that states only sizes, pos_embed_prefix 0, is the
 * original ViT's). */
static int pos_prefix_of(const vit_config *c) {
    const int prefix = !c->no_class_token + c->num_reg_tokens;
    if (c->no_embed_class) return 0;
    if (c->pos_embed_prefix == 1 && !c->no_class_token) return 1;
    return prefix;
}

/* What training cannot do with configuration c (the switches of vit.h it
 * does: every one but the DeiT distillation token), into why (non-zero),
 * else 0. The Hugging Face DINOv2 head on [class ‖ mean] is saved in that
 * layout, which has no spelling for pre-norm, fc_norm or qk-norm. */
static int train_unsupported(const vit_config *c, char *why, size_t size) {
    const int prefix = !c->no_class_token + c->num_reg_tokens, pos_prefix = pos_prefix_of(c);
    if (c->distilled)
        snprintf(why, size, "training does not support the DeiT distillation token");
    else if (c->num_reg_tokens < 0 || c->num_reg_tokens > 64)
        snprintf(why, size, "%d register tokens is outside 0..64", c->num_reg_tokens);
    else if (c->no_class_token && c->global_pool != VIT_GLOBAL_POOL_AVG)
        snprintf(why, size, "a model without a class token needs average pooling");
    else if (c->global_pool == VIT_GLOBAL_POOL_TOKEN_AVG &&
             (c->no_class_token || c->fc_norm || c->pre_norm || c->qk_norm ||
              pos_prefix != 1 || c->no_final_norm || c->act != VIT_ACT_GELU))
        snprintf(why, size, "the [class, mean of patches] head is DINOv2's, whose layout has no "
                 "pre-norm, fc_norm, qk-norm, QuickGELU or position rows for other than the class "
                 "token");
    else if (c->global_pool != VIT_GLOBAL_POOL_TOKEN_AVG && pos_prefix == 1 && prefix > 1)
        snprintf(why, size, "a position row for the class token alone (DINOv2) needs DINOv2's "
                 "[class, mean of patches] head");
    else
        return 0;
    return 1;
}

static base_status check_trainable(const vit_config *c, base_error *err) {
    /* The first thing wrong, in words: a bare "cannot train" leaves the
     * user guessing which of nine numbers to change. */
    char why[300] = "";
    if (c->hidden_size <= 0 || c->num_heads <= 0)
        snprintf(why, sizeof why, "hidden size %d and heads %d must be positive", c->hidden_size,
                 c->num_heads);
    else if (c->hidden_size % c->num_heads)
        snprintf(why, sizeof why, "hidden size %d is not divisible by %d heads", c->hidden_size,
                 c->num_heads);
    else if (c->num_layers <= 0 || c->mlp_size <= 0 || c->num_channels <= 0 || c->num_classes <= 0)
        snprintf(why, sizeof why, "layers, MLP size, channels and classes must be positive");
    else if (c->patch_size <= 0)
        snprintf(why, sizeof why, "patch size %d must be positive", c->patch_size);
    else if (c->image_size < c->patch_size)
        snprintf(why, sizeof why, "image size %d is smaller than patch size %d, so there are no "
                 "patches", c->image_size, c->patch_size);
    else if (train_unsupported(c, why, sizeof why))
        ; /* why says what */
    else if (c->num_prefix_tokens != !c->no_class_token + c->num_reg_tokens)
        snprintf(why, sizeof why, "%d prefix tokens, not the class token%s and %d registers",
                 c->num_prefix_tokens, c->no_class_token ? " (none)" : "", c->num_reg_tokens);
    else if (!(c->layer_norm_eps > 0))
        snprintf(why, sizeof why, "layer norm eps %g must be positive", (double)c->layer_norm_eps);
    if (!why[0]) return BASE_OK;
    return base_error_set(err, BASE_E_ARG,
                         "cannot train this configuration: %s (hidden %d, heads %d, layers %d, "
                         "MLP %d, patch %d, image %d, channels %d, classes %d, prefix %d)",
                         why, c->hidden_size, c->num_heads, c->num_layers, c->mlp_size,
                         c->patch_size, c->image_size, c->num_channels, c->num_classes,
                         c->num_prefix_tokens);
}

base_status vit_model_create(const vit_config *config, vit_model **out, base_error *err) {
    *out = NULL;
    base_status s = check_trainable(config, err);
    if (s != BASE_OK) return s;
    kernels_isa isa; /* for the kernels other than OpenBLAS's GEMMs */
    if ((s = kernels_isa_choose(getenv("VITC_ISA"), &isa, err)) != BASE_OK) return s;
    vit_model *m = calloc(1, sizeof *m);
    if (!m) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    m->config = *config;
    /* The model's own position grid is its image size's. */
    vit_config *c = &m->config;
    const int pos_prefix = pos_prefix_of(config);
    c->pos_embed_prefix = pos_prefix;
    c->no_embed_class = c->num_prefix_tokens > 0 && pos_prefix == 0;
    c->pos_embed_grid = patching_grid(c->image_size, c->patch_size);
    m->isa = isa;
    m->layout = WEIGHTS_LAYOUT_TIMM;
    m->library_antialias = c->pos_embed_antialias;
    snprintf(m->config_source, sizeof m->config_source, "vit_model_create");
    snprintf(m->labels_source, sizeof m->labels_source, "none");
    snprintf(m->dtypes, sizeof m->dtypes, "F32");
    data_preprocess_default(&m->preprocess, c->image_size);
    m->tensors = calloc((size_t)c->num_layers * 18 + 16, sizeof *m->tensors);
    m->blocks = calloc((size_t)c->num_layers, sizeof *m->blocks);
    if (m->tensors && m->blocks) {
        lay_out_tensors(m); /* counts */
        m->params = kernels_alloc_floats(m->param_count);
    }
    if (!m->params) {
        vit_model_free(m);
        return base_error_set(err, BASE_E_NOMEM, "out of memory for the model's parameters");
    }
    lay_out_tensors(m); /* points */
    memset(m->params, 0, m->param_count * sizeof(float));
    *out = m;
    return BASE_OK;
}

float *vit_model_params(vit_model *m) { return m->params; }
size_t vit_model_num_tensors(const vit_model *m) { return m->params ? m->num_tensors : 0; }
vit_param *vit_model_tensor_at(vit_model *m, size_t i) {
    return i < vit_model_num_tensors(m) ? &m->tensors[i] : NULL;
}

vit_param *vit_model_find(vit_model *m, const char *name) {
    for (size_t i = 0; i < vit_model_num_tensors(m); i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

/* timm's trunc_normal_(std=0.02): a normal cut at +-2 (absolute, so for
 * std 0.02 nothing is ever cut in practice; kept for fidelity). */
static void trunc_normal(vit_train_rng *rng, float *dst, size_t n, double std) {
    for (size_t i = 0; i < n; i++) {
        double v;
        do v = vit_train_rng_normal(rng) * std;
        while (v < -2.0 || v > 2.0);
        dst[i] = (float)v;
    }
}

void vit_model_init(vit_model *m, uint64_t seed) {
    vit_train_rng rng;
    vit_train_rng_seed(&rng, seed);
    for (size_t i = 0; i < vit_model_num_tensors(m); i++) {
        const vit_param *t = &m->tensors[i];
        float *p = m->params + t->offset;
        const size_t len = strlen(t->name);
        if (t->decay || strcmp(t->name, "cls_token") == 0 || strcmp(t->name, "reg_token") == 0 ||
            strcmp(t->name, "pos_embed") == 0)
            trunc_normal(&rng, p, t->numel, 0.02);
        else if (len > 6 && strcmp(t->name + len - 6, ".gamma") == 0) /* LayerScale */
            for (size_t j = 0; j < t->numel; j++) p[j] = 1e-5f; /* timm's usual init_values */
        else if (len > 7 && strcmp(t->name + len - 7, ".weight") == 0) /* LayerNorm */
            for (size_t j = 0; j < t->numel; j++) p[j] = 1.0f;
        else
            memset(p, 0, t->numel * sizeof(float));
    }
}

/* Where a parameter of m (a pointer of the model, into params) may be
 * written: params is m's own, so the same address without the const. */
static float *own(vit_model *m, const float *p) { return m->params + (p - m->params); }

/* Copies n floats of a pretrained tensor (NULL: absent) into m's tensor dst. */
static base_status copy_param(vit_model *m, const float *dst, const float *src, size_t n,
                             const char *name, base_error *err) {
    if (!src) return base_error_set(err, BASE_E_SHAPE, "the pretrained model has no %s", name);
    memcpy(own(m, dst), src, n * sizeof(float));
    return BASE_OK;
}

/* A linear layer's weight: float, an int8 file's values times scales, a
 * bf16 file's values widened (h), or a packed file's mapped matrix (f: the
 * float pointer is then NULL). */
static base_status copy_linear(vit_model *m, const float *dst, const float *src,
                              const kernels_qmatrix *q, const kernels_bmatrix *h,
                              const kernels_fmatrix *f, size_t n, const char *name,
                              base_error *err) {
    if (q) {
        kernels_qmatrix_to_f32(q, own(m, dst));
    } else if (h) {
        kernels_bmatrix_to_f32(h, own(m, dst));
    } else if (!src && f) {
        kernels_fmatrix_to_f32(f, own(m, dst));
    } else {
        return copy_param(m, dst, src, n, name, err);
    }
    return BASE_OK;
}

/* Copies n floats of src into m's tensor dst, or zeros when src is NULL
 * (a bias the checkpoint lacks: trained from zero). */
static void copy_or_zero(vit_model *m, const float *dst, const float *src, size_t n) {
    if (src) memcpy(own(m, dst), src, n * sizeof(float));
    else memset(own(m, dst), 0, n * sizeof(float));
}

/* The switches of a and b that differ, named into buf (empty when none);
 * the pooling only when the head is copied (a new head may read other
 * features of the same backbone), a qkv bias only when b has one a lacks
 * (a missing one is trained from zero). */
static void switch_differences(const vit_config *a, const vit_config *b, int copy_head, char *buf,
                               size_t size) {
    size_t n = 0;
    buf[0] = '\0';
#define DIFF(cond, what) \
    if ((cond) && n < size) n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", what)
    DIFF(a->no_class_token != b->no_class_token, "class token");
    DIFF(a->num_reg_tokens != b->num_reg_tokens, "register tokens");
    DIFF(a->pos_embed_prefix != b->pos_embed_prefix, "position rows of the prefix tokens");
    DIFF(copy_head && a->global_pool != b->global_pool, "pooling");
    DIFF(a->no_final_norm != b->no_final_norm, "final norm");
    DIFF(a->fc_norm != b->fc_norm, "fc_norm");
    DIFF(a->pre_norm != b->pre_norm, "pre-norm");
    DIFF(a->act != b->act, "activation");
    DIFF(a->no_qkv_bias && !b->no_qkv_bias, "qkv bias");
    DIFF(a->qk_norm != b->qk_norm, "qk-norm");
    DIFF(a->layer_scale != b->layer_scale, "LayerScale");
#undef DIFF
}

/* The patch embedding and position rows of src into m (vit_model_assign). */
static base_status copy_embedding(vit_model *m, const vit_model *src, base_error *err) {
    const vit_config *a = &m->config, *b = &src->config;
    const size_t D = (size_t)a->hidden_size, PP = (size_t)a->patch_size * a->patch_size;
    const int grid = a->pos_embed_grid;
    const size_t Np = (size_t)grid * grid;
    float *patch_w = own(m, m->patch_w), *pos = own(m, m->pos_embed);
    if (a->num_channels == b->num_channels) {
        memcpy(patch_w, src->patch_w, D * a->num_channels * PP * sizeof(float));
    } else {
        /* Grey input replicated to three channels meets the sum of the kernels. */
        for (size_t d = 0; d < D; d++)
            for (size_t k = 0; k < PP; k++) {
                const float *w = src->patch_w + d * 3 * PP;
                patch_w[d * PP + k] = w[k] + w[PP + k] + w[2 * PP + k];
            }
    }
    /* Position rows: the prefix tokens' as they are, the patch grid
     * resampled (as the checkpoint's library does) when the checkpoint's is
     * another: training at another image size, or DINOv2, which keeps its
     * pre-training grid. */
    const size_t pos_prefix = (size_t)a->pos_embed_prefix;
    memcpy(pos, src->pos_embed, pos_prefix * D * sizeof(float));
    if (b->pos_embed_grid == grid) {
        memcpy(pos + pos_prefix * D, src->pos_embed + pos_prefix * D, Np * D * sizeof(float));
    } else if (patching_resample_pos_embed(src->pos_embed + pos_prefix * D, 0, b->pos_embed_grid,
                                           b->pos_embed_grid, (int)D, pos + pos_prefix * D, grid,
                                           grid, b->pos_embed_antialias) != BASE_OK) {
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    }
    /* A patch bias the model being trained lacks (timm: none with
     * pre-norm) is the same constant on every patch row: folded into
     * their positions. One it has and the checkpoint lacks starts at 0. */
    if (m->patch_b) {
        copy_or_zero(m, m->patch_b, src->patch_b, D);
    } else if (src->patch_b) {
        for (size_t t = 0; t < Np; t++)
            for (size_t d = 0; d < D; d++) pos[(pos_prefix + t) * D + d] += src->patch_b[d];
    }
    return BASE_OK;
}

/* Encoder block l of src into m (vit_model_assign). */
static base_status copy_block(vit_model *m, const vit_model *src, int l, base_error *err) {
    const vit_config *a = &m->config;
    const size_t D = (size_t)a->hidden_size, M = (size_t)a->mlp_size;
    const size_t dh = D / (size_t)a->num_heads;
    base_status s;
    const vit_block *sb = &src->blocks[l], *o = &m->blocks[l];
    if ((s = copy_param(m, o->ln1_w, sb->ln1_w, D, "norm1", err)) ||
        (s = copy_param(m, o->ln1_b, sb->ln1_b, D, "norm1", err)) ||
        (s = copy_linear(m, o->qkv_w, sb->qkv_w, sb->qkv_q, sb->qkv_h, sb->qkv_f, 3 * D * D, "qkv", err)) ||
        (s = copy_linear(m, o->proj_w, sb->proj_w, sb->proj_q, sb->proj_h, sb->proj_f, D * D, "proj", err)) ||
        (s = copy_param(m, o->proj_b, sb->proj_b, D, "proj bias", err)) ||
        (s = copy_param(m, o->ln2_w, sb->ln2_w, D, "norm2", err)) ||
        (s = copy_param(m, o->ln2_b, sb->ln2_b, D, "norm2", err)) ||
        (s = copy_linear(m, o->fc1_w, sb->fc1_w, sb->fc1_q, sb->fc1_h, sb->fc1_f, M * D, "fc1", err)) ||
        (s = copy_param(m, o->fc1_b, sb->fc1_b, M, "fc1 bias", err)) ||
        (s = copy_linear(m, o->fc2_w, sb->fc2_w, sb->fc2_q, sb->fc2_h, sb->fc2_f, D * M, "fc2", err)) ||
        (s = copy_param(m, o->fc2_b, sb->fc2_b, D, "fc2 bias", err)))
        return s;
    if (o->ls1 &&
        ((s = copy_param(m, o->ls1, sb->ls1, D, "LayerScale", err)) ||
         (s = copy_param(m, o->ls2, sb->ls2, D, "LayerScale", err))))
        return s;
    if (o->q_norm_w &&
        ((s = copy_param(m, o->q_norm_w, sb->q_norm_w, dh, "q_norm", err)) ||
         (s = copy_param(m, o->q_norm_b, sb->q_norm_b, dh, "q_norm", err)) ||
         (s = copy_param(m, o->k_norm_w, sb->k_norm_w, dh, "k_norm", err)) ||
         (s = copy_param(m, o->k_norm_b, sb->k_norm_b, dh, "k_norm", err))))
        return s;
    /* A checkpoint without qkv bias trains one from zero when the model
     * being trained has one. */
    if (o->qkv_b) copy_or_zero(m, o->qkv_b, sb->qkv_b, 3 * D);
    return BASE_OK;
}

/* Why src cannot fill m (BASE_E_UNSUPPORTED, BASE_E_SHAPE), else BASE_OK. */
static base_status check_assign(const vit_model *m, const vit_model *src, int copy_head,
                                base_error *err) {
    const vit_config *a = &m->config, *b = &src->config;
    char why[300];
    if (!m->params)
        return base_error_set(err, BASE_E_ARG, "the model to fill was loaded, not created");
    if (train_unsupported(b, why, sizeof why))
        return base_error_set(err, BASE_E_UNSUPPORTED, "%s: %s (it can be run, not fine-tuned)",
                             vit_model_weights_path(src), why);
    if (a->hidden_size != b->hidden_size || a->num_layers != b->num_layers ||
        a->mlp_size != b->mlp_size || a->patch_size != b->patch_size ||
        a->num_heads != b->num_heads ||
        !(a->num_channels == b->num_channels || (a->num_channels == 1 && b->num_channels == 3)))
        return base_error_set(err, BASE_E_SHAPE,
                             "the pretrained model (hidden %d, %d layers, %d heads, MLP %d, patch "
                             "%d, image %d, %d channels, %d prefix tokens) does not match the one "
                             "being trained (hidden %d, %d layers, %d heads, MLP %d, patch %d, "
                             "image %d, %d channels)",
                             b->hidden_size, b->num_layers, b->num_heads, b->mlp_size,
                             b->patch_size, b->image_size, b->num_channels, b->num_prefix_tokens,
                             a->hidden_size, a->num_layers, a->num_heads, a->mlp_size,
                             a->patch_size, a->image_size, a->num_channels);
    switch_differences(a, b, copy_head, why, sizeof why);
    if (why[0])
        return base_error_set(err, BASE_E_SHAPE, "the pretrained model differs from the one being "
                             "trained in: %s", why);
    if (copy_head && (b->num_classes != a->num_classes || !src->head_w))
        return base_error_set(err, BASE_E_SHAPE, "the pretrained head has %d classes, not %d",
                             b->num_classes, a->num_classes);
    return BASE_OK;
}

base_status vit_model_assign(vit_model *m, const vit_model *src, int copy_head, base_error *err) {
    base_status s = check_assign(m, src, copy_head, err);
    if (s != BASE_OK) return s;
    const size_t D = (size_t)m->config.hidden_size;
    if ((s = copy_embedding(m, src, err)) != BASE_OK) return s;
    if ((m->cls_token &&
         (s = copy_param(m, m->cls_token, src->cls_token, D, "class token", err))) ||
        (m->reg_tokens &&
         (s = copy_param(m, m->reg_tokens, src->reg_tokens, (size_t)m->config.num_reg_tokens * D,
                         "register tokens", err))) ||
        (m->norm_pre_w &&
         ((s = copy_param(m, m->norm_pre_w, src->norm_pre_w, D, "pre-norm", err)) ||
          (s = copy_param(m, m->norm_pre_b, src->norm_pre_b, D, "pre-norm", err)))) ||
        (m->norm_w &&
         ((s = copy_param(m, m->norm_w, src->norm_w, D, "final norm", err)) ||
          (s = copy_param(m, m->norm_b, src->norm_b, D, "final norm", err)))) ||
        (m->fc_norm_w &&
         ((s = copy_param(m, m->fc_norm_w, src->fc_norm_w, D, "fc_norm", err)) ||
          (s = copy_param(m, m->fc_norm_b, src->fc_norm_b, D, "fc_norm", err)))))
        return s;
    for (int l = 0; l < m->config.num_layers; l++)
        if ((s = copy_block(m, src, l, err)) != BASE_OK) return s;
    if (copy_head) {
        const size_t C = (size_t)m->config.num_classes;
        const size_t PS = (size_t)vit_config_pooled_size(&m->config);
        memcpy(own(m, m->head_w), src->head_w, C * PS * sizeof(float));
        memcpy(own(m, m->head_b), src->head_b, C * sizeof(float));
    }
    return BASE_OK;
}

void vit_model_freeze_backbone(vit_model *m, int freeze) {
    for (size_t i = 0; i < vit_model_num_tensors(m); i++)
        m->tensors[i].trainable = !freeze || strncmp(m->tensors[i].name, "head.", 5) == 0;
}

/* ------------------------------------------------------------- saving */

/* The Hugging Face config.json vit_model_load reads from __metadata__. */
static char *config_json(const vit_model *m, int channels, const char *const *labels) {
    const vit_config *c = &m->config;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model_type", c->global_pool != VIT_GLOBAL_POOL_TOKEN_AVG ? "vit"
                                             : c->num_reg_tokens ? "dinov2_with_registers"
                                                                 : "dinov2");
    cJSON_AddStringToObject(j, "trained_with", "vitc vit train");
    vit_config_to_hf_json(c, channels, j);
    if (labels) {
        cJSON *id2label = cJSON_AddObjectToObject(j, "id2label");
        for (int i = 0; i < c->num_classes; i++) {
            char key[16];
            snprintf(key, sizeof key, "%d", i);
            cJSON_AddStringToObject(id2label, key, labels[i]);
        }
    }
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return text;
}

/* The name a tensor (timm name) takes in the file, as the loader's layout
 * table spells it (weights_layout_spell): timm's own, or for a model whose
 * head reads [class ‖ mean] the Hugging Face DINOv2 names
 * (Dinov2ForImageClassification; no timm spelling). Into out, with *split
 * set when the layout stores a third of the tensor (timm's fused qkv as
 * DINOv2's query, key and value: part 0..2 names each). Every tensor a
 * created model has is spelt (train_unsupported); one that were not would
 * keep its timm name. */
static void file_name(const vit_model *m, const char *timm, int part, char *out, size_t size,
                      int *split) {
    const int dinov2 = m->config.global_pool == VIT_GLOBAL_POOL_TOKEN_AVG;
    const weights_layout layout = dinov2 ? WEIGHTS_LAYOUT_HF_DINOV2 : WEIGHTS_LAYOUT_TIMM;
    const char *prefix = m->config.num_reg_tokens ? "dinov2_with_registers." : "dinov2.";
    const int spelt = weights_layout_spell(layout, prefix, timm, part, out, size);
    if (spelt < 0) snprintf(out, size, "%s", timm);
    *split = spelt == 1;
}

/* Tensor t of m as the file stores it: timm's, a grey patch kernel folded
 * to RGB (into folded). */
static void file_tensor(const vit_model *m, const vit_param *t, float *folded,
                        weights_tensor *w) {
    const vit_config *c = &m->config;
    const size_t D = (size_t)c->hidden_size, PP = (size_t)c->patch_size * c->patch_size;
    /* ITU-R 601-2 luma, the weights of PIL's convert('L'). */
    static const float LUMA[3] = {0.299f, 0.587f, 0.114f};
    const float *data = m->params + t->offset;
    *w = (weights_tensor){.name = t->name, .dtype = WEIGHTS_F32, .ndim = t->ndim,
                          .numel = t->numel, .nbytes = t->numel * sizeof(float), .data = data};
    memcpy(w->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
    if (c->num_channels != 1 || data != m->patch_w) return;
    for (size_t d = 0; d < D; d++)
        for (int ch = 0; ch < 3; ch++)
            for (size_t k = 0; k < PP; k++)
                folded[(d * 3 + ch) * PP + k] = LUMA[ch] * data[d * PP + k];
    w->shape[1] = 3;
    w->numel *= 3;
    w->nbytes *= 3;
    w->data = folded;
}

/* The model's tensors as the file stores them, into tensors (returns how
 * many): file_tensor's, named as the loader's layout spells them
 * (file_name, into names), a fused qkv the layout stores as query, key and
 * value written as three. */
static size_t file_tensors(const vit_model *m, weights_tensor *tensors, char (*names)[96],
                           float *folded) {
    size_t count = 0;
    for (size_t i = 0; i < m->num_tensors; i++) {
        const vit_param *t = &m->tensors[i];
        weights_tensor *w = &tensors[count++];
        file_tensor(m, t, folded, w);
        int split;
        file_name(m, t->name, 0, names[count - 1], sizeof *names, &split);
        w->name = names[count - 1];
        if (!split) continue;
        /* rows [q; k; v] of the fused tensor, a third each */
        const weights_tensor whole = *w;
        for (int part = 0; part < 3; part++) {
            weights_tensor *q = part ? &tensors[count++] : w;
            *q = whole;
            file_name(m, t->name, part, names[count - 1], sizeof *names, &split);
            q->name = names[count - 1];
            q->shape[0] = whole.shape[0] / 3;
            q->numel = whole.numel / 3;
            q->nbytes = whole.nbytes / 3;
            q->data = (const float *)whole.data + (size_t)part * q->numel;
        }
    }
    return count;
}

/* The __metadata__ pairs: config, preprocessing (when non-NULL), then the
 * caller's n. Returns how many. */
static size_t file_metadata(const char **keys, const char **values, char *config,
                            char *preprocessor, const char *const *meta_keys,
                            const char *const *meta_values, size_t n) {
    size_t count = 0;
    keys[count] = "config";
    values[count++] = config;
    if (preprocessor) {
        keys[count] = "preprocessor_config";
        values[count++] = preprocessor;
    }
    for (size_t i = 0; i < n; i++) {
        keys[count] = meta_keys[i];
        values[count++] = meta_values[i];
    }
    return count;
}

base_status vit_model_save(const vit_model *m, const char *path, const char *const *labels,
                          const data_preprocess *pre, const weights_tensor *extra,
                          size_t num_extra, const char *const *meta_keys,
                          const char *const *meta_values, size_t num_meta, base_error *err) {
    if (!m->params)
        return base_error_set(err, BASE_E_ARG, "only a created model is saved (a loaded one: "
                             "vit_model_quantize)");
    const vit_config *c = &m->config;
    const int fold = c->num_channels == 1;
    const size_t D = (size_t)c->hidden_size, PP = (size_t)c->patch_size * c->patch_size;
    /* The [class ‖ mean] head has only the Hugging Face DINOv2 spelling,
     * whose Q, K and V are three tensors: up to 3 per tensor. */
    const int dinov2 = c->global_pool == VIT_GLOBAL_POOL_TOKEN_AVG;
    const size_t max_out = m->num_tensors * (dinov2 ? 3 : 1);
    weights_tensor *tensors = calloc(max_out + num_extra, sizeof *tensors);
    char(*names)[96] = calloc(max_out, sizeof *names);
    float *folded = fold ? malloc(D * 3 * PP * sizeof(float)) : NULL;
    const char **keys = calloc(num_meta + 2, sizeof *keys), **values = calloc(num_meta + 2, sizeof *values);
    char *config = config_json(m, fold ? 3 : c->num_channels, labels);
    char *preprocessor = pre ? data_preprocess_to_json(pre) : NULL;
    base_status status;
    if (!tensors || !names || (fold && !folded) || !keys || !values || !config ||
        (pre && !preprocessor)) {
        status = base_error_set(err, BASE_E_NOMEM, "out of memory");
    } else {
        const size_t count = file_tensors(m, tensors, names, folded);
        for (size_t i = 0; i < num_extra; i++) tensors[count + i] = extra[i];
        const size_t n_meta = file_metadata(keys, values, config, preprocessor, meta_keys,
                                            meta_values, num_meta);
        status = weights_write(path, tensors, count + num_extra, keys, values, n_meta, err);
    }
    free(tensors);
    free(names);
    free(folded);
    free(keys);
    free(values);
    free(config);
    free(preprocessor);
    return status;
}
