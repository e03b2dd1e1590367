/* Training: the forward pass again through the same kernels as inference
 * (kernels.h), keeping every activation the backward pass reads, then the
 * backward pass layer by layer in reverse. The inference path (forward.c)
 * stays lean; this one spends memory instead.
 *
 * Threading and determinism: GEMMs and GEMVs are OpenBLAS calls made from
 * one thread (kernels_threading(KERNELS_TRAINING): OpenBLAS splits them the
 * same way for a given thread count); row-wise work and attention are
 * OpenMP loops with static or per-task splits whose results do not depend
 * on which thread ran them; sums over rows (bias and LayerNorm gradients,
 * token gradients) go through GEMV or a fixed sequential order. Nothing
 * here allocates after vit_train_create. */
#include "vit_train.h"
#include "vit_internal.h"

#include <cJSON.h>
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "patching.h"
#include "vit_rng.h"

/* ------------------------------------------------------------- randomness */

void vit_train_rng_seed(vit_train_rng *rng, uint64_t seed) {
    for (int i = 0; i < 4; i++) rng->s[i] = vit_splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t vit_train_rng_next(vit_train_rng *rng) {
    uint64_t *s = rng->s;
    const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double vit_train_rng_uniform(vit_train_rng *rng) {
    return (double)(vit_train_rng_next(rng) >> 11) * 0x1.0p-53;
}

double vit_train_rng_uniform_cb(void *rng) { return vit_train_rng_uniform(rng); }

uint32_t vit_train_rng_below(vit_train_rng *rng, uint32_t n) {
    /* Multiply-shift: bias below 2^-32 per draw, far under any effect here. */
    return (uint32_t)(((vit_train_rng_next(rng) >> 32) * (uint64_t)n) >> 32);
}

double vit_train_rng_normal(vit_train_rng *rng) {
    const double u = 1.0 - vit_train_rng_uniform(rng), v = vit_train_rng_uniform(rng);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

/* ------------------------------------------------------------- the model */

/* Offsets (in floats) of one block's tensors in the flat buffers. */
typedef struct block_offsets {
    size_t ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
} block_offsets;

struct vit_train_model {
    vit_config config;
    int max_batch, grid, num_patches, num_tokens, patch_dim;
    vit_train_tensor *tensors;
    size_t num_tensors, num_params;
    float *params, *grads;
    size_t patch_w, patch_b, cls, pos, norm_w, norm_b, head_w, head_b;
    block_offsets *blocks;

    /* Activations, per layer l where indexed [l]: */
    float *cols;      /* [B*Np, K] im2col of the images */
    float *x;         /* [(L+1) * B*T*D] block inputs; x[L] is the last output */
    float *xmid;      /* [L * BTD] after the attention residual */
    float *ln1, *ln2; /* [L * BTD] LayerNorm outputs */
    float *stats1, *stats2; /* [L * 2 * BT]: per layer the BT means, then the BT 1/stds */
    float *qkv;       /* [L * BT*3D] */
    float *probs;     /* [L * B*H*T*T] attention probabilities */
    float *attn;      /* [L * BTD] attention output before projection */
    float *hid;       /* [L * BTM] fc1 output (before GELU) */
    float *act;       /* [L * BTM] GELU output */
    float *pooled, *pool_stats; /* [B, D], [2, B] final norm of the class token (means, 1/stds) */
    float *logits;    /* [B, C] */

    /* Backward scratch. */
    float *dx, *dtmp; /* [BTD] */
    float *dqkv;      /* [BT*3D] */
    float *dhid;      /* [BTM] */
    float *dscores;   /* [threads, T*T] */
    float *dlogits, *dpooled; /* [B, C], [B, D] */
    float *prod;      /* [BTD] dy * xhat for LayerNorm weight gradients */
    float *ones;      /* [max(BT, B*Np)] for column sums by GEMV */
    kernels_threads threads;
};

/* Appends a tensor to the table; returns its offset. */
static size_t add_tensor(vit_train_model *m, const char *name, int ndim, const int64_t *shape,
                         int decay) {
    vit_train_tensor *t = &m->tensors[m->num_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        t->numel *= (size_t)shape[i];
    }
    t->offset = m->num_params;
    t->decay = decay;
    t->trainable = 1;
    m->num_params += t->numel;
    return t->offset;
}

#define SHAPE(...) (const int64_t[]){__VA_ARGS__}

static void lay_out_tensors(vit_train_model *m) {
    const vit_config *c = &m->config;
    const int64_t D = c->hidden_size, M = c->mlp_size, C = c->num_classes, P = c->patch_size;
    char name[48];
    m->patch_w = add_tensor(m, "patch_embed.proj.weight", 4, SHAPE(D, c->num_channels, P, P), 1);
    m->patch_b = add_tensor(m, "patch_embed.proj.bias", 1, SHAPE(D), 0);
    m->cls = add_tensor(m, "cls_token", 3, SHAPE(1, 1, D), 0);
    m->pos = add_tensor(m, "pos_embed", 3, SHAPE(1, m->num_tokens, D), 0);
    for (int l = 0; l < c->num_layers; l++) {
        block_offsets *b = &m->blocks[l];
#define BLOCK_TENSOR(field, suffix, decay, ...)                           \
    snprintf(name, sizeof name, "blocks.%d." suffix, l);                  \
    b->field = add_tensor(m, name, (int)(sizeof(SHAPE(__VA_ARGS__)) / sizeof(int64_t)), \
                          SHAPE(__VA_ARGS__), decay)
        BLOCK_TENSOR(ln1_w, "norm1.weight", 0, D);
        BLOCK_TENSOR(ln1_b, "norm1.bias", 0, D);
        BLOCK_TENSOR(qkv_w, "attn.qkv.weight", 1, 3 * D, D);
        BLOCK_TENSOR(qkv_b, "attn.qkv.bias", 0, 3 * D);
        BLOCK_TENSOR(proj_w, "attn.proj.weight", 1, D, D);
        BLOCK_TENSOR(proj_b, "attn.proj.bias", 0, D);
        BLOCK_TENSOR(ln2_w, "norm2.weight", 0, D);
        BLOCK_TENSOR(ln2_b, "norm2.bias", 0, D);
        BLOCK_TENSOR(fc1_w, "mlp.fc1.weight", 1, M, D);
        BLOCK_TENSOR(fc1_b, "mlp.fc1.bias", 0, M);
        BLOCK_TENSOR(fc2_w, "mlp.fc2.weight", 1, D, M);
        BLOCK_TENSOR(fc2_b, "mlp.fc2.bias", 0, D);
#undef BLOCK_TENSOR
    }
    m->norm_w = add_tensor(m, "norm.weight", 1, SHAPE(D), 0);
    m->norm_b = add_tensor(m, "norm.bias", 1, SHAPE(D), 0);
    m->head_w = add_tensor(m, "head.weight", 2, SHAPE(C, D), 1);
    m->head_b = add_tensor(m, "head.bias", 1, SHAPE(C), 0);
}

/* VIT_OK when training supports configuration c, else the first thing
 * wrong with it. */
/* The switches of the wider ViT family (vit_config) training does not
 * implement yet: names them into why (non-zero) or returns 0. QKV without
 * bias trains (the bias starts at zero and is learned, as before). */
static int train_unsupported(const vit_config *c, char *why, size_t size) {
    vit_config plain = *c;
    plain.no_qkv_bias = 0;
    char found[120];
    vit_config_describe_switches(&plain, found, sizeof found);
    if (!found[0]) return 0;
    snprintf(why, size, "training does not support %.120s yet", found);
    return 1;
}

static vit_status check_trainable(const vit_config *c, vit_error *err) {
    /* The first thing wrong, in words: a bare "cannot train" leaves the
     * user guessing which of nine numbers to change. */
    char why[160] = "";
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
        ; /* why names the switches */
    else if (c->num_prefix_tokens != 1)
        snprintf(why, sizeof why, "training needs exactly one prefix (class) token, not %d",
                 c->num_prefix_tokens);
    else if (!(c->layer_norm_eps > 0))
        snprintf(why, sizeof why, "layer norm eps %g must be positive", (double)c->layer_norm_eps);
    if (!why[0]) return VIT_OK;
    return vit_error_set(err, VIT_E_ARG,
                         "cannot train this configuration: %s (hidden %d, heads %d, layers %d, "
                         "MLP %d, patch %d, image %d, channels %d, classes %d, prefix %d)",
                         why, c->hidden_size, c->num_heads, c->num_layers, c->mlp_size,
                         c->patch_size, c->image_size, c->num_channels, c->num_classes,
                         c->num_prefix_tokens);
}

vit_status vit_train_create(const vit_config *config, int max_batch, vit_train_model **out,
                            vit_error *err) {
    *out = NULL;
    const vit_config *c = config;
    vit_status blas = kernels_check_blas(err);
    if (blas != VIT_OK) return blas;
    if (max_batch <= 0 || max_batch > 65536)
        return vit_error_set(err, VIT_E_ARG, "batch size %d is outside 1..65536", max_batch);
    vit_status s = check_trainable(c, err);
    if (s != VIT_OK) return s;
    vit_train_model *m = calloc(1, sizeof *m);
    if (!m) return vit_error_set(err, VIT_E_NOMEM, "out of memory");
    m->config = *c;
    m->config.pos_embed_antialias = 0;
    m->max_batch = max_batch;
    m->grid = patching_grid(c->image_size, c->patch_size);
    m->num_patches = m->grid * m->grid;
    m->num_tokens = 1 + m->num_patches;
    m->patch_dim = c->num_channels * c->patch_size * c->patch_size;
    m->threads = kernels_threading(KERNELS_TRAINING, omp_get_max_threads());
    m->tensors = calloc((size_t)c->num_layers * 12 + 8, sizeof *m->tensors);
    m->blocks = calloc((size_t)c->num_layers, sizeof *m->blocks);
    if (!m->tensors || !m->blocks) {
        vit_train_free(m);
        return vit_error_set(err, VIT_E_NOMEM, "out of memory");
    }
    lay_out_tensors(m);

    const size_t B = (size_t)max_batch, T = (size_t)m->num_tokens, D = (size_t)c->hidden_size;
    const size_t M = (size_t)c->mlp_size, L = (size_t)c->num_layers, H = (size_t)c->num_heads;
    const size_t Np = (size_t)m->num_patches, K = (size_t)m->patch_dim;
    const size_t C = (size_t)c->num_classes, BT = B * T;
    m->params = kernels_alloc_floats(m->num_params);
    m->grads = kernels_alloc_floats(m->num_params);
    m->cols = kernels_alloc_floats(B * Np * K);
    m->x = kernels_alloc_floats((L + 1) * BT * D);
    m->xmid = kernels_alloc_floats(L * BT * D);
    m->ln1 = kernels_alloc_floats(L * BT * D);
    m->ln2 = kernels_alloc_floats(L * BT * D);
    m->stats1 = kernels_alloc_floats(L * BT * 2);
    m->stats2 = kernels_alloc_floats(L * BT * 2);
    m->qkv = kernels_alloc_floats(L * BT * 3 * D);
    m->probs = kernels_alloc_floats(L * B * H * T * T);
    m->attn = kernels_alloc_floats(L * BT * D);
    m->hid = kernels_alloc_floats(L * BT * M);
    m->act = kernels_alloc_floats(L * BT * M);
    m->pooled = kernels_alloc_floats(B * D);
    m->pool_stats = kernels_alloc_floats(B * 2);
    m->logits = kernels_alloc_floats(B * C);
    m->dx = kernels_alloc_floats(BT * D);
    m->dtmp = kernels_alloc_floats(BT * D);
    m->dqkv = kernels_alloc_floats(BT * 3 * D);
    m->dhid = kernels_alloc_floats(BT * M);
    m->dscores = kernels_alloc_floats((size_t)m->threads.count * T * T);
    m->dlogits = kernels_alloc_floats(B * C);
    m->dpooled = kernels_alloc_floats(B * D);
    m->prod = kernels_alloc_floats(BT * (D > C ? D : C));
    m->ones = kernels_alloc_floats(BT);
    float *const all[] = {m->params, m->grads, m->cols, m->x, m->xmid, m->ln1, m->ln2, m->stats1,
                          m->stats2, m->qkv, m->probs, m->attn, m->hid, m->act, m->pooled,
                          m->pool_stats, m->logits, m->dx, m->dtmp, m->dqkv, m->dhid, m->dscores,
                          m->dlogits, m->dpooled, m->prod, m->ones};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (!all[i]) {
            vit_train_free(m);
            return vit_error_set(err, VIT_E_NOMEM,
                                 "out of memory for training at batch %d (%zu tokens, %zu "
                                 "layers)", max_batch, T, L);
        }
    for (size_t i = 0; i < BT; i++) m->ones[i] = 1.0f;
    *out = m;
    return VIT_OK;
}

void vit_train_free(vit_train_model *m) {
    if (!m) return;
    float *const all[] = {m->params, m->grads, m->cols, m->x, m->xmid, m->ln1, m->ln2, m->stats1,
                          m->stats2, m->qkv, m->probs, m->attn, m->hid, m->act, m->pooled,
                          m->pool_stats, m->logits, m->dx, m->dtmp, m->dqkv, m->dhid, m->dscores,
                          m->dlogits, m->dpooled, m->prod, m->ones};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
    free(m->tensors);
    free(m->blocks);
    free(m);
}

const vit_config *vit_train_config(const vit_train_model *m) { return &m->config; }
int vit_train_max_batch(const vit_train_model *m) { return m->max_batch; }
size_t vit_train_num_params(const vit_train_model *m) { return m->num_params; }
float *vit_train_params(vit_train_model *m) { return m->params; }
float *vit_train_grads(vit_train_model *m) { return m->grads; }
size_t vit_train_num_tensors(const vit_train_model *m) { return m->num_tensors; }
vit_train_tensor *vit_train_tensor_at(vit_train_model *m, size_t i) {
    return i < m->num_tensors ? &m->tensors[i] : NULL;
}

vit_train_tensor *vit_train_find(vit_train_model *m, const char *name) {
    for (size_t i = 0; i < m->num_tensors; i++)
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

void vit_train_init(vit_train_model *m, uint64_t seed) {
    vit_train_rng rng;
    vit_train_rng_seed(&rng, seed);
    for (size_t i = 0; i < m->num_tensors; i++) {
        const vit_train_tensor *t = &m->tensors[i];
        float *p = m->params + t->offset;
        const size_t len = strlen(t->name);
        if (t->decay || strcmp(t->name, "cls_token") == 0 || strcmp(t->name, "pos_embed") == 0)
            trunc_normal(&rng, p, t->numel, 0.02);
        else if (len > 7 && strcmp(t->name + len - 7, ".weight") == 0) /* LayerNorm */
            for (size_t j = 0; j < t->numel; j++) p[j] = 1.0f;
        else
            memset(p, 0, t->numel * sizeof(float));
    }
}

/* Copies n floats of a pretrained tensor (NULL: absent) into dst. */
static vit_status copy_param(float *dst, const float *src, size_t n, const char *name,
                             vit_error *err) {
    if (!src) return vit_error_set(err, VIT_E_SHAPE, "the pretrained model has no %s", name);
    memcpy(dst, src, n * sizeof(float));
    return VIT_OK;
}

/* A linear layer's weight: float, or an int8 file's values times scales. */
static vit_status copy_linear(float *dst, const float *src, const kernels_qmatrix *q, size_t n,
                              const char *name, vit_error *err) {
    if (!q) return copy_param(dst, src, n, name, err);
    kernels_qmatrix_to_f32(q, dst);
    return VIT_OK;
}

vit_status vit_train_copy_from(vit_train_model *m, const vit_model *src, int copy_head,
                               vit_error *err) {
    const vit_config *a = &m->config, *b = &src->config;
    char why[300];
    if (train_unsupported(b, why, sizeof why))
        return vit_error_set(err, VIT_E_UNSUPPORTED, "%s: %s (it can be run, not fine-tuned)",
                             weights_path(src->file), why);
    if (a->hidden_size != b->hidden_size || a->num_layers != b->num_layers ||
        a->mlp_size != b->mlp_size || a->patch_size != b->patch_size ||
        a->image_size != b->image_size || a->num_heads != b->num_heads ||
        b->num_prefix_tokens != 1 ||
        !(a->num_channels == b->num_channels || (a->num_channels == 1 && b->num_channels == 3)))
        return vit_error_set(err, VIT_E_SHAPE,
                             "the pretrained model (hidden %d, %d layers, %d heads, MLP %d, patch "
                             "%d, image %d, %d channels, %d prefix tokens) does not match the one "
                             "being trained (hidden %d, %d layers, %d heads, MLP %d, patch %d, "
                             "image %d, %d channels)",
                             b->hidden_size, b->num_layers, b->num_heads, b->mlp_size,
                             b->patch_size, b->image_size, b->num_channels, b->num_prefix_tokens,
                             a->hidden_size, a->num_layers, a->num_heads, a->mlp_size,
                             a->patch_size, a->image_size, a->num_channels);
    const size_t D = (size_t)a->hidden_size, M = (size_t)a->mlp_size, PP = (size_t)a->patch_size * a->patch_size;
    float *p = m->params;
    if (a->num_channels == b->num_channels) {
        memcpy(p + m->patch_w, src->patch_w, D * m->patch_dim * sizeof(float));
    } else {
        /* Grey input replicated to three channels meets the sum of the kernels. */
        for (size_t d = 0; d < D; d++)
            for (size_t k = 0; k < PP; k++) {
                const float *w = src->patch_w + d * 3 * PP;
                p[m->patch_w + d * PP + k] = w[k] + w[PP + k] + w[2 * PP + k];
            }
    }
    vit_status s = VIT_OK;
    if ((s = copy_param(p + m->patch_b, src->patch_b, D, "patch bias", err)) ||
        (s = copy_param(p + m->cls, src->cls_token, D, "class token", err)) ||
        (s = copy_param(p + m->pos, src->pos_embed, (size_t)m->num_tokens * D, "position embeddings", err)) ||
        (s = copy_param(p + m->norm_w, src->norm_w, D, "final norm", err)) ||
        (s = copy_param(p + m->norm_b, src->norm_b, D, "final norm", err)))
        return s;
    for (int l = 0; l < a->num_layers; l++) {
        const vit_block *sb = &src->blocks[l];
        const block_offsets *o = &m->blocks[l];
        if ((s = copy_param(p + o->ln1_w, sb->ln1_w, D, "norm1", err)) ||
            (s = copy_param(p + o->ln1_b, sb->ln1_b, D, "norm1", err)) ||
            (s = copy_linear(p + o->qkv_w, sb->qkv_w, sb->qkv_q, 3 * D * D, "qkv", err)) ||
            (s = copy_param(p + o->proj_w, sb->proj_w, D * D, "proj", err)) ||
            (s = copy_param(p + o->proj_b, sb->proj_b, D, "proj bias", err)) ||
            (s = copy_param(p + o->ln2_w, sb->ln2_w, D, "norm2", err)) ||
            (s = copy_param(p + o->ln2_b, sb->ln2_b, D, "norm2", err)) ||
            (s = copy_linear(p + o->fc1_w, sb->fc1_w, sb->fc1_q, M * D, "fc1", err)) ||
            (s = copy_param(p + o->fc1_b, sb->fc1_b, M, "fc1 bias", err)) ||
            (s = copy_linear(p + o->fc2_w, sb->fc2_w, sb->fc2_q, D * M, "fc2", err)) ||
            (s = copy_param(p + o->fc2_b, sb->fc2_b, D, "fc2 bias", err)))
            return s;
        /* A checkpoint without qkv bias trains one from zero. */
        if (sb->qkv_b) memcpy(p + o->qkv_b, sb->qkv_b, 3 * D * sizeof(float));
        else memset(p + o->qkv_b, 0, 3 * D * sizeof(float));
    }
    if (copy_head) {
        if (b->num_classes != a->num_classes || !src->head_w)
            return vit_error_set(err, VIT_E_SHAPE, "the pretrained head has %d classes, not %d",
                                 b->num_classes, a->num_classes);
        memcpy(p + m->head_w, src->head_w, (size_t)a->num_classes * D * sizeof(float));
        memcpy(p + m->head_b, src->head_b, (size_t)a->num_classes * sizeof(float));
    }
    return VIT_OK;
}

void vit_train_freeze_backbone(vit_train_model *m, int freeze) {
    for (size_t i = 0; i < m->num_tensors; i++)
        m->tensors[i].trainable = !freeze || strncmp(m->tensors[i].name, "head.", 5) == 0;
}

/* ------------------------------------------------------------- forward */

/* Activation pointers of layer l. */
#define LAYER(buf, l, per) ((buf) + (size_t)(l) * (per))

/* Patch embedding, class token and position embeddings into m->x[0]. */
static void embed(vit_train_model *m, const float *images, int n) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, T = m->num_tokens, Np = m->num_patches;
    const int K = m->patch_dim, S = c->image_size, rows = n * T;
    const float *p = m->params;
    float *x0 = m->x;
#pragma omp parallel for schedule(static) num_threads(m->threads.count)
    for (int b = 0; b < n; b++)
        patching_im2col(images + (size_t)b * c->num_channels * S * S, c->num_channels, S, S,
                        c->patch_size, m->cols + (size_t)b * Np * K);
    /* Patch rows of image b are rows 1..Np of its token block: one GEMM per
     * image writes them in place (rows D apart). */
    for (int b = 0; b < n; b++)
        matmul_gemm(x0 + ((size_t)b * T + 1) * D, D, m->cols + (size_t)b * Np * K,
                    p + m->patch_w, Np, K, D, 0.0f, m->threads);
#pragma omp parallel for schedule(static) num_threads(m->threads.count)
    for (int row = 0; row < rows; row++) {
        const int t = row % T;
        float *dst = x0 + (size_t)row * D;
        const float *pos = p + m->pos + (size_t)t * D;
        if (t == 0)
            for (int d = 0; d < D; d++) dst[d] = p[m->cls + d] + pos[d];
        else
            for (int d = 0; d < D; d++) dst[d] += p[m->patch_b + d] + pos[d];
    }
}

/* The whole forward pass for n images, keeping every activation; logits
 * into m->logits. */
static void forward(vit_train_model *m, const float *images, int n) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, M = c->mlp_size, T = m->num_tokens, H = c->num_heads;
    const int C = c->num_classes, rows = n * T;
    const size_t BT = (size_t)m->max_batch * T;
    const float *p = m->params, eps = c->layer_norm_eps;
    const kernels_threads th = m->threads;

    embed(m, images, n);
    for (int l = 0; l < c->num_layers; l++) {
        const block_offsets *o = &m->blocks[l];
        const float *x = LAYER(m->x, l, BT * D);
        float *xmid = LAYER(m->xmid, l, BT * D), *out = LAYER(m->x, l + 1, BT * D);
        float *ln1 = LAYER(m->ln1, l, BT * D), *ln2 = LAYER(m->ln2, l, BT * D);
        float *mean1 = LAYER(m->stats1, l, BT * 2), *rstd1 = mean1 + BT;
        float *mean2 = LAYER(m->stats2, l, BT * 2), *rstd2 = mean2 + BT;
        float *qkv = LAYER(m->qkv, l, BT * 3 * D), *attn = LAYER(m->attn, l, BT * D);
        float *probs = LAYER(m->probs, l, (size_t)m->max_batch * H * T * T);
        float *hid = LAYER(m->hid, l, BT * M), *act = LAYER(m->act, l, BT * M);
        layernorm_forward(ln1, mean1, rstd1, x, p + o->ln1_w, p + o->ln1_b, rows, D, eps, th);
        matmul_forward(qkv, ln1, p + o->qkv_w, p + o->qkv_b, rows, D, 3 * D, th);
        attention_forward(attn, probs, qkv, n, T, D, H, T, NULL, th);
        /* xmid = x + proj(attn) */
        residual_matmul_forward(xmid, x, attn, p + o->proj_w, p + o->proj_b, rows, D, D, th);
        layernorm_forward(ln2, mean2, rstd2, xmid, p + o->ln2_w, p + o->ln2_b, rows, D, eps, th);
        matmul_forward(hid, ln2, p + o->fc1_w, p + o->fc1_b, rows, D, M, th);
        gelu_forward(act, hid, (size_t)rows * M, th);
        /* out = xmid + fc2(act) */
        residual_matmul_forward(out, xmid, act, p + o->fc2_w, p + o->fc2_b, rows, M, D, th);
    }
    const float *last = LAYER(m->x, c->num_layers, BT * D);
    const int B = m->max_batch;
    for (int b = 0; b < n; b++)
        layernorm_forward_row(m->pooled + (size_t)b * D, m->pool_stats + b,
                              m->pool_stats + B + b, last + (size_t)b * T * D, p + m->norm_w,
                              p + m->norm_b, D, eps);
    matmul_forward(m->logits, m->pooled, p + m->head_w, p + m->head_b, n, D, C, th);
}

/* Cross-entropy with label smoothing over n rows of logits, summed and
 * divided by total (n: the mean), its gradient (dlogits, likewise divided
 * by total) and the top-1 hits. */
static float cross_entropy(const float *logits, const int *labels, int n, int total, int C,
                           float smoothing, float *dlogits, int *correct) {
    double sum_loss = 0.0;
    int hits = 0;
    for (int b = 0; b < n; b++) {
        const float *z = logits + (size_t)b * C;
        float *g = dlogits + (size_t)b * C;
        int best = 0;
        float max = z[0];
        for (int j = 1; j < C; j++)
            if (z[j] > max) max = z[j], best = j;
        double sum = 0.0;
        for (int j = 0; j < C; j++) sum += exp((double)z[j] - max);
        const double log_sum = log(sum) + max;
        /* target: (1 - s) on the label plus s / C everywhere */
        double loss = 0.0;
        for (int j = 0; j < C; j++) {
            const double target = (j == labels[b] ? 1.0 - smoothing : 0.0) + smoothing / C;
            const double logp = (double)z[j] - log_sum;
            loss -= target * logp;
            g[j] = (float)((exp(logp) - target) / total);
        }
        sum_loss += loss;
        hits += best == labels[b];
    }
    *correct = hits;
    return (float)(sum_loss / total);
}

static vit_status check_batch(const vit_train_model *m, const int *labels, int n, vit_error *err) {
    if (n <= 0 || n > m->max_batch)
        return vit_error_set(err, VIT_E_ARG, "batch of %d images, the model holds 1..%d", n,
                             m->max_batch);
    for (int b = 0; labels && b < n; b++)
        if (labels[b] < 0 || labels[b] >= m->config.num_classes)
            return vit_error_set(err, VIT_E_ARG, "label %d of image %d is outside 0..%d",
                                 labels[b], b, m->config.num_classes - 1);
    return VIT_OK;
}

vit_status vit_train_forward(vit_train_model *m, const float *images, int n, float *logits,
                             float *features, vit_error *err) {
    vit_status s = check_batch(m, NULL, n, err);
    if (s != VIT_OK) return s;
    forward(m, images, n);
    if (logits) memcpy(logits, m->logits, sizeof(float) * n * m->config.num_classes);
    if (features) memcpy(features, m->pooled, sizeof(float) * n * m->config.hidden_size);
    return VIT_OK;
}

/* ------------------------------------------------------------- backward */

/* Embedding backward from m->dx: class token and position gradients
 * summed over images in image order; patch rows gathered into dtmp for the
 * patch GEMM's weight and bias gradients. */
static void embed_backward(vit_train_model *m, int n) {
    const int D = m->config.hidden_size, T = m->num_tokens, Np = m->num_patches;
    const float *p = m->params;
    float *g = m->grads;
#pragma omp parallel for schedule(static) num_threads(m->threads.count)
    for (int t = 0; t < T; t++) {
        float *dpos = g + m->pos + (size_t)t * D;
        memset(dpos, 0, sizeof(float) * D);
        for (int b = 0; b < n; b++) {
            const float *src = m->dx + ((size_t)b * T + t) * D;
            for (int d = 0; d < D; d++) dpos[d] += src[d];
        }
    }
    memcpy(g + m->cls, g + m->pos, sizeof(float) * D);
#pragma omp parallel for schedule(static) num_threads(m->threads.count)
    for (int b = 0; b < n; b++)
        memcpy(m->dtmp + (size_t)b * Np * D, m->dx + ((size_t)b * T + 1) * D,
               sizeof(float) * Np * D);
    matmul_backward(NULL, g + m->patch_w, g + m->patch_b, m->dtmp, m->cols, p + m->patch_w,
                    m->ones, n * Np, m->patch_dim, D);
}

/* Backward from m->dlogits through the head and final norm (filling the
 * class-token rows of m->dx) and, with full, through every block and the
 * embedding. */
static void backward(vit_train_model *m, int n, int full) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, M = c->mlp_size, T = m->num_tokens, H = c->num_heads;
    const int C = c->num_classes, rows = n * T, B = m->max_batch;
    const size_t BT = (size_t)B * T;
    const float *p = m->params;
    float *g = m->grads;
    const kernels_threads th = m->threads;

    matmul_backward(m->dpooled, g + m->head_w, g + m->head_b, m->dlogits, m->pooled,
                    p + m->head_w, m->ones, n, D, C);
    if (!full) return;
    memset(m->dx, 0, sizeof(float) * rows * D);
    /* The final norm read only the class-token rows (T rows apart). */
    layernorm_backward(m->dx, g + m->norm_w, g + m->norm_b, m->dpooled,
                       LAYER(m->x, c->num_layers, BT * D), p + m->norm_w, m->pool_stats,
                       m->pool_stats + B, n, D, (size_t)T, m->prod, m->ones, th);

    for (int l = c->num_layers - 1; l >= 0; l--) {
        const block_offsets *o = &m->blocks[l];
        const float *x = LAYER(m->x, l, BT * D), *xmid = LAYER(m->xmid, l, BT * D);
        const float *ln1 = LAYER(m->ln1, l, BT * D), *ln2 = LAYER(m->ln2, l, BT * D);
        const float *mean1 = LAYER(m->stats1, l, BT * 2), *rstd1 = mean1 + BT;
        const float *mean2 = LAYER(m->stats2, l, BT * 2), *rstd2 = mean2 + BT;
        const float *qkv = LAYER(m->qkv, l, BT * 3 * D), *attn = LAYER(m->attn, l, BT * D);
        const float *probs = LAYER(m->probs, l, (size_t)B * H * T * T);
        const float *hid = LAYER(m->hid, l, BT * M), *act = LAYER(m->act, l, BT * M);
        /* MLP: dx is d(block output) = d(xmid) through the residual. */
        matmul_backward(m->dhid, g + o->fc2_w, g + o->fc2_b, m->dx, act, p + o->fc2_w, m->ones,
                        rows, M, D);
        gelu_backward(m->dhid, hid, m->dhid, (size_t)rows * M, th);
        matmul_backward(m->dtmp, g + o->fc1_w, g + o->fc1_b, m->dhid, ln2, p + o->fc1_w, m->ones,
                        rows, D, M);
        layernorm_backward(m->dx, g + o->ln2_w, g + o->ln2_b, m->dtmp, xmid, p + o->ln2_w, mean2,
                           rstd2, rows, D, 1, m->prod, m->ones, th);
        /* Attention: dx is now d(xmid) = d(block input) through the residual. */
        matmul_backward(m->dtmp, g + o->proj_w, g + o->proj_b, m->dx, attn, p + o->proj_w,
                        m->ones, rows, D, D);
        attention_backward(m->dqkv, m->dscores, m->dtmp, qkv, probs, n, T, D, H, th);
        matmul_backward(m->dtmp, g + o->qkv_w, g + o->qkv_b, m->dqkv, ln1, p + o->qkv_w, m->ones,
                        rows, D, 3 * D);
        layernorm_backward(m->dx, g + o->ln1_w, g + o->ln1_b, m->dtmp, x, p + o->ln1_w, mean1,
                           rstd1, rows, D, 1, m->prod, m->ones, th);
    }
    embed_backward(m, n);
}

vit_status vit_train_step_grads_part(vit_train_model *m, const float *images, const int *labels,
                                     int n, int total, float label_smoothing, float *loss,
                                     int *correct, vit_error *err) {
    vit_status s = check_batch(m, labels, n, err);
    if (s != VIT_OK) return s;
    if (total < n) return vit_error_set(err, VIT_E_ARG, "%d images of a batch of %d", n, total);
    forward(m, images, n);
    int hits;
    const float value = cross_entropy(m->logits, labels, n, total, m->config.num_classes,
                                      label_smoothing, m->dlogits, &hits);
    backward(m, n, 1);
    if (loss) *loss = value;
    if (correct) *correct = hits;
    return VIT_OK;
}

vit_status vit_train_step_grads(vit_train_model *m, const float *images, const int *labels, int n,
                                float label_smoothing, float *loss, int *correct, vit_error *err) {
    return vit_train_step_grads_part(m, images, labels, n, n, label_smoothing, loss, correct, err);
}

vit_status vit_train_head_grads_part(vit_train_model *m, const float *features, const int *labels,
                                     int n, int total, float label_smoothing, float *loss,
                                     int *correct, vit_error *err) {
    vit_status s = check_batch(m, labels, n, err);
    if (s != VIT_OK) return s;
    if (total < n) return vit_error_set(err, VIT_E_ARG, "%d images of a batch of %d", n, total);
    const int D = m->config.hidden_size, C = m->config.num_classes;
    memcpy(m->pooled, features, sizeof(float) * n * D);
    matmul_forward(m->logits, m->pooled, m->params + m->head_w, m->params + m->head_b, n, D, C,
                   m->threads);
    int hits;
    const float value =
        cross_entropy(m->logits, labels, n, total, C, label_smoothing, m->dlogits, &hits);
    backward(m, n, 0);
    if (loss) *loss = value;
    if (correct) *correct = hits;
    return VIT_OK;
}

vit_status vit_train_head_grads(vit_train_model *m, const float *features, const int *labels,
                                int n, float label_smoothing, float *loss, int *correct,
                                vit_error *err) {
    return vit_train_head_grads_part(m, features, labels, n, n, label_smoothing, loss, correct,
                                     err);
}

/* ------------------------------------------------------------- optimiser */

double vit_train_clip_grad_norm(vit_train_model *m, float max_norm) {
    /* Sum of squares in double, tensor by tensor in table order. */
    double total = 0.0;
    for (size_t i = 0; i < m->num_tensors; i++) {
        const vit_train_tensor *t = &m->tensors[i];
        if (!t->trainable) continue;
        const float *g = m->grads + t->offset;
        double sum = 0.0;
        for (size_t j = 0; j < t->numel; j++) sum += (double)g[j] * g[j];
        total += sum;
    }
    const double norm = sqrt(total);
    if (max_norm > 0 && norm > max_norm) {
        const float scale = (float)(max_norm / (norm + 1e-6));
        for (size_t i = 0; i < m->num_tensors; i++) {
            const vit_train_tensor *t = &m->tensors[i];
            if (!t->trainable) continue;
            float *g = m->grads + t->offset;
            for (size_t j = 0; j < t->numel; j++) g[j] *= scale;
        }
    }
    return norm;
}

vit_status vit_adamw_create(const vit_train_model *model, const vit_adamw_params *hyper,
                            vit_adamw **out, vit_error *err) {
    *out = NULL;
    vit_adamw *opt = calloc(1, sizeof *opt);
    if (!opt) return vit_error_set(err, VIT_E_NOMEM, "out of memory");
    opt->hyper = *hyper;
    opt->n = model->num_params;
    opt->m = kernels_alloc_floats(opt->n);
    opt->v = kernels_alloc_floats(opt->n);
    if (!opt->m || !opt->v) {
        vit_adamw_free(opt);
        return vit_error_set(err, VIT_E_NOMEM, "out of memory for the optimiser state");
    }
    *out = opt;
    return VIT_OK;
}

void vit_adamw_free(vit_adamw *opt) {
    if (!opt) return;
    free(opt->m);
    free(opt->v);
    free(opt);
}

void vit_adamw_step(vit_adamw *opt, vit_train_model *model, float lr) {
    const vit_adamw_params *h = &opt->hyper;
    opt->step++;
    const float b1 = h->beta1, b2 = h->beta2, eps = h->eps;
    const float step_size = lr / (float)(1.0 - pow(b1, (double)opt->step));
    const float bc2_sqrt = (float)sqrt(1.0 - pow(b2, (double)opt->step));
    for (size_t i = 0; i < model->num_tensors; i++) {
        const vit_train_tensor *t = &model->tensors[i];
        if (!t->trainable) continue;
        float *p = model->params + t->offset, *mm = opt->m + t->offset, *vv = opt->v + t->offset;
        const float *g = model->grads + t->offset;
        const float keep = t->decay ? 1.0f - lr * h->weight_decay : 1.0f;
        const long n = (long)t->numel;
#pragma omp parallel for schedule(static) if (n > 4096)
        for (long j = 0; j < n; j++) {
            p[j] *= keep;
            mm[j] += (g[j] - mm[j]) * (1.0f - b1);
            vv[j] = vv[j] * b2 + (1.0f - b2) * g[j] * g[j];
            p[j] -= step_size * mm[j] / (sqrtf(vv[j]) / bc2_sqrt + eps);
        }
    }
}

float vit_train_lr_at(long step, const vit_train_schedule *s) {
    if (step < s->warmup_steps) return s->base_lr * (float)(step + 1) / (float)s->warmup_steps;
    const long span = s->total_steps - s->warmup_steps;
    if (span <= 0) return s->base_lr;
    double progress = (double)(step - s->warmup_steps) / (double)span;
    if (progress > 1.0) progress = 1.0;
    return s->min_lr + 0.5f * (s->base_lr - s->min_lr) * (float)(1.0 + cos(3.14159265358979323846 * progress));
}

/* ------------------------------------------------------------- saving */

/* The Hugging Face config.json vit_model_load reads from __metadata__. */
static char *config_json(const vit_train_model *m, int channels, const char *const *labels) {
    const vit_config *c = &m->config;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model_type", "vit");
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

vit_status vit_train_save(const vit_train_model *m, const char *path, const char *const *labels,
                          const data_preprocess *pre, const weights_tensor *extra,
                          size_t num_extra, const char *const *meta_keys,
                          const char *const *meta_values, size_t num_meta, vit_error *err) {
    const vit_config *c = &m->config;
    const int fold = c->num_channels == 1;
    const size_t D = (size_t)c->hidden_size, PP = (size_t)c->patch_size * c->patch_size;
    /* ITU-R 601-2 luma, the weights of PIL's convert('L'). */
    static const float LUMA[3] = {0.299f, 0.587f, 0.114f};
    weights_tensor *tensors = calloc(m->num_tensors + num_extra, sizeof *tensors);
    float *folded = fold ? malloc(D * 3 * PP * sizeof(float)) : NULL;
    const char **keys = calloc(num_meta + 2, sizeof *keys), **values = calloc(num_meta + 2, sizeof *values);
    char *config = config_json(m, fold ? 3 : c->num_channels, labels);
    char *preprocessor = pre ? data_preprocess_to_json(pre) : NULL;
    vit_status status;
    if (!tensors || (fold && !folded) || !keys || !values || !config || (pre && !preprocessor)) {
        status = vit_error_set(err, VIT_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < m->num_tensors; i++) {
        const vit_train_tensor *t = &m->tensors[i];
        weights_tensor *w = &tensors[i];
        w->name = t->name;
        w->dtype = WEIGHTS_F32;
        w->ndim = t->ndim;
        memcpy(w->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
        w->numel = t->numel;
        w->nbytes = t->numel * sizeof(float);
        w->data = m->params + t->offset;
        if (fold && t->offset == m->patch_w) {
            for (size_t d = 0; d < D; d++)
                for (int ch = 0; ch < 3; ch++)
                    for (size_t k = 0; k < PP; k++)
                        folded[(d * 3 + ch) * PP + k] = LUMA[ch] * m->params[m->patch_w + d * PP + k];
            w->shape[1] = 3;
            w->numel *= 3;
            w->nbytes *= 3;
            w->data = folded;
        }
    }
    for (size_t i = 0; i < num_extra; i++) tensors[m->num_tensors + i] = extra[i];
    size_t n_meta = 0;
    keys[n_meta] = "config";
    values[n_meta++] = config;
    if (preprocessor) {
        keys[n_meta] = "preprocessor_config";
        values[n_meta++] = preprocessor;
    }
    for (size_t i = 0; i < num_meta; i++) {
        keys[n_meta] = meta_keys[i];
        values[n_meta++] = meta_values[i];
    }
    status = weights_write(path, tensors, m->num_tensors + num_extra, keys, values, n_meta, err);
done:
    free(tensors);
    free(folded);
    free(keys);
    free(values);
    free(config);
    free(preprocessor);
    return status;
}
