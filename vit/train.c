/* Training: the forward pass again, keeping every activation the backward
 * pass reads, then the backward pass layer by layer in reverse. The
 * inference path (forward.c) stays lean; this one spends memory instead.
 *
 * Threading and determinism: GEMMs and GEMVs are OpenBLAS calls made from
 * one thread (OpenBLAS splits them the same way for a given thread count);
 * row-wise work and attention are OpenMP loops with static or per-task
 * splits whose results do not depend on which thread ran them; sums over
 * rows (bias and LayerNorm gradients, token gradients) go through GEMV or
 * a fixed sequential order. Nothing here allocates after vit_train_create. */
#include "vit_train.h"
#include "vit_internal.h"

#include <cJSON.h>
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "patching.h"
#include "vit_math.h"
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
    float *stats1, *stats2; /* [L * BT * 2] mean and 1/std of each LayerNorm row */
    float *qkv;       /* [L * BT*3D] */
    float *probs;     /* [L * B*H*T*T] attention probabilities */
    float *attn;      /* [L * BTD] attention output before projection */
    float *hid;       /* [L * BTM] fc1 output (before GELU) */
    float *act;       /* [L * BTM] GELU output */
    float *pooled, *pool_stats; /* [B, D], [B, 2] final norm of the class token */
    float *logits;    /* [B, C] */

    /* Backward scratch. */
    float *dx, *dtmp; /* [BTD] */
    float *dqkv;      /* [BT*3D] */
    float *dhid;      /* [BTM] */
    float *dscores;   /* [threads, T*T] */
    float *dlogits, *dpooled; /* [B, C], [B, D] */
    float *prod;      /* [BTD] dy * xhat for LayerNorm weight gradients */
    float *ones;      /* [max(BT, B*Np)] for column sums by GEMV */
    int threads;
};

static float *alloc_floats(size_t count) {
    size_t bytes = ((count ? count : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

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

vit_status vit_train_create(const vit_config *config, int max_batch, vit_train_model **out,
                            vit_error *err) {
    *out = NULL;
    const vit_config *c = config;
    if (max_batch <= 0 || max_batch > 65536)
        return vit_error_set(err, VIT_E_ARG, "batch size %d is outside 1..65536", max_batch);
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
    else if (c->num_prefix_tokens != 1)
        snprintf(why, sizeof why, "training needs exactly one prefix (class) token, not %d",
                 c->num_prefix_tokens);
    else if (!(c->layer_norm_eps > 0))
        snprintf(why, sizeof why, "layer norm eps %g must be positive", (double)c->layer_norm_eps);
    if (why[0])
        return vit_error_set(err, VIT_E_ARG,
                             "cannot train this configuration: %s (hidden %d, heads %d, layers %d, "
                             "MLP %d, patch %d, image %d, channels %d, classes %d, prefix %d)",
                             why, c->hidden_size, c->num_heads, c->num_layers, c->mlp_size,
                             c->patch_size, c->image_size, c->num_channels, c->num_classes,
                             c->num_prefix_tokens);
    vit_train_model *m = calloc(1, sizeof *m);
    if (!m) return vit_error_set(err, VIT_E_NOMEM, "out of memory");
    m->config = *c;
    m->config.pos_embed_antialias = 0;
    m->max_batch = max_batch;
    m->grid = patching_grid(c->image_size, c->patch_size);
    m->num_patches = m->grid * m->grid;
    m->num_tokens = 1 + m->num_patches;
    m->patch_dim = c->num_channels * c->patch_size * c->patch_size;
    m->threads = omp_get_max_threads();
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
    m->params = alloc_floats(m->num_params);
    m->grads = alloc_floats(m->num_params);
    m->cols = alloc_floats(B * Np * K);
    m->x = alloc_floats((L + 1) * BT * D);
    m->xmid = alloc_floats(L * BT * D);
    m->ln1 = alloc_floats(L * BT * D);
    m->ln2 = alloc_floats(L * BT * D);
    m->stats1 = alloc_floats(L * BT * 2);
    m->stats2 = alloc_floats(L * BT * 2);
    m->qkv = alloc_floats(L * BT * 3 * D);
    m->probs = alloc_floats(L * B * H * T * T);
    m->attn = alloc_floats(L * BT * D);
    m->hid = alloc_floats(L * BT * M);
    m->act = alloc_floats(L * BT * M);
    m->pooled = alloc_floats(B * D);
    m->pool_stats = alloc_floats(B * 2);
    m->logits = alloc_floats(B * C);
    m->dx = alloc_floats(BT * D);
    m->dtmp = alloc_floats(BT * D);
    m->dqkv = alloc_floats(BT * 3 * D);
    m->dhid = alloc_floats(BT * M);
    m->dscores = alloc_floats((size_t)m->threads * T * T);
    m->dlogits = alloc_floats(B * C);
    m->dpooled = alloc_floats(B * D);
    m->prod = alloc_floats(BT * (D > C ? D : C));
    m->ones = alloc_floats(BT);
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

vit_status vit_train_copy_from(vit_train_model *m, const vit_model *src, int copy_head,
                               vit_error *err) {
    const vit_config *a = &m->config, *b = &src->config;
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
            (s = copy_param(p + o->qkv_w, sb->qkv_w, 3 * D * D, "qkv", err)) ||
            (s = copy_param(p + o->proj_w, sb->proj_w, D * D, "proj", err)) ||
            (s = copy_param(p + o->proj_b, sb->proj_b, D, "proj bias", err)) ||
            (s = copy_param(p + o->ln2_w, sb->ln2_w, D, "norm2", err)) ||
            (s = copy_param(p + o->ln2_b, sb->ln2_b, D, "norm2", err)) ||
            (s = copy_param(p + o->fc1_w, sb->fc1_w, M * D, "fc1", err)) ||
            (s = copy_param(p + o->fc1_b, sb->fc1_b, M, "fc1 bias", err)) ||
            (s = copy_param(p + o->fc2_w, sb->fc2_w, D * M, "fc2", err)) ||
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

/* ------------------------------------------------------------- kernels */

/* out[rows, n_out] = in[rows, n_in] · W[n_out, n_in]ᵀ + bias. */
static void linear_forward(const float *in, int rows, int n_in, const float *w, const float *bias,
                           int n_out, float *out) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) memcpy(out + (size_t)r * n_out, bias, sizeof(float) * n_out);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_out, n_in, 1.0f, in, n_in, w,
                n_in, 1.0f, out, n_out);
}

/* Given dout [rows, n_out]: dW = doutᵀ · in, db = column sums of dout, and
 * din = dout · W (added to din when accumulate, skipped when din is NULL). */
static void linear_backward(const float *in, int rows, int n_in, const float *w, int n_out,
                            const float *dout, const float *ones, float *dw, float *db, float *din,
                            int accumulate) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n_out, n_in, rows, 1.0f, dout, n_out, in,
                n_in, 0.0f, dw, n_in);
    cblas_sgemv(CblasRowMajor, CblasTrans, rows, n_out, 1.0f, dout, n_out, ones, 1, 0.0f, db, 1);
    if (din)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, n_in, n_out, 1.0f, dout,
                    n_out, w, n_in, accumulate ? 1.0f : 0.0f, din, n_in);
}

/* LayerNorm of one row, keeping the mean and 1/std for the backward pass
 * (biased variance, as torch). */
static void norm_row_keep(const float *in, const float *w, const float *b, int dim, float eps,
                          float *out, float *stats) {
    float sum = 0.0f;
    for (int i = 0; i < dim; i++) sum += in[i];
    const float mean = sum / (float)dim;
    float var = 0.0f;
    for (int i = 0; i < dim; i++) var += (in[i] - mean) * (in[i] - mean);
    const float rstd = 1.0f / sqrtf(var / (float)dim + eps);
    for (int i = 0; i < dim; i++) out[i] = (in[i] - mean) * rstd * w[i] + b[i];
    stats[0] = mean;
    stats[1] = rstd;
}

static void norm_forward(const float *in, int rows, int dim, const float *w, const float *b,
                         float eps, float *out, float *stats) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        norm_row_keep(in + (size_t)r * dim, w, b, dim, eps, out + (size_t)r * dim, stats + 2 * r);
}

/* LayerNorm backward over rows whose input rows sit `stride` rows apart in
 * in and din (1: contiguous): din += the input gradient; dw, db (the
 * parameter gradients) are column sums of dy * xhat and dy, by GEMV over
 * prod so the order of the sum is fixed. */
static void norm_backward(const float *in, size_t stride, int rows, int dim, const float *w,
                          const float *stats, const float *dy, float *din, float *prod,
                          const float *ones, float *dw, float *db) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *x = in + (size_t)r * stride * dim, *g = dy + (size_t)r * dim;
        float *dxr = din + (size_t)r * stride * dim, *pr = prod + (size_t)r * dim;
        const float mean = stats[2 * r], rstd = stats[2 * r + 1];
        float sum_g = 0.0f, sum_gx = 0.0f;
        for (int i = 0; i < dim; i++) {
            const float xhat = (x[i] - mean) * rstd, gw = g[i] * w[i];
            pr[i] = g[i] * xhat;
            sum_g += gw;
            sum_gx += gw * xhat;
        }
        const float mg = sum_g / (float)dim, mgx = sum_gx / (float)dim;
        for (int i = 0; i < dim; i++) {
            const float xhat = (x[i] - mean) * rstd;
            dxr[i] += rstd * (g[i] * w[i] - mg - xhat * mgx);
        }
    }
    cblas_sgemv(CblasRowMajor, CblasTrans, rows, dim, 1.0f, prod, dim, ones, 1, 0.0f, dw, 1);
    cblas_sgemv(CblasRowMajor, CblasTrans, rows, dim, 1.0f, dy, dim, ones, 1, 0.0f, db, 1);
}

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

/* Exact (erf) GELU into act, keeping its input hid. */
static void gelu_forward(const float *hid, float *act, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) act[i] = 0.5f * hid[i] * (1.0f + fast_erff(hid[i] * INV_SQRT2));
}

/* d *= GELU'(hid) = Phi(h) + h phi(h). */
static void gelu_backward(const float *hid, float *d, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const float h = hid[i];
        d[i] *= 0.5f * (1.0f + fast_erff(h * INV_SQRT2)) + h * INV_SQRT_2PI * fast_expf(-0.5f * h * h);
    }
}

/* ------------------------------------------------------------- forward */

/* Activation pointers of layer l. */
#define LAYER(buf, l, per) ((buf) + (size_t)(l) * (per))

static void attention_forward(vit_train_model *m, int n, int l) {
    const vit_config *c = &m->config;
    const int T = m->num_tokens, D = c->hidden_size, H = c->num_heads, dh = D / H;
    const size_t BT = (size_t)m->max_batch * T;
    const float *qkv = LAYER(m->qkv, l, BT * 3 * D);
    float *probs = LAYER(m->probs, l, (size_t)m->max_batch * H * T * T);
    float *attn = LAYER(m->attn, l, BT * D);
    const float scale = 1.0f / sqrtf((float)dh);
#pragma omp parallel for schedule(static)
    for (int task = 0; task < n * H; task++) {
        const int b = task / H, h = task % H;
        const float *q = qkv + (size_t)b * T * 3 * D + (size_t)h * dh, *k = q + D, *v = q + 2 * D;
        float *p = probs + (size_t)task * T * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, dh, scale, q, 3 * D, k, 3 * D,
                    0.0f, p, T);
        for (int i = 0; i < T; i++) vit_softmax(p + (size_t)i * T, T);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, dh, T, 1.0f, p, T, v, 3 * D, 0.0f,
                    attn + (size_t)b * T * D + (size_t)h * dh, D);
    }
}

/* out[r] = in[r] + bias for rows of dim: a residual with the next
 * layer's bias, onto which its GEMM accumulates. */
static void add_rows(const float *in, const float *bias, int rows, int dim, float *out) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int d = 0; d < dim; d++) out[(size_t)r * dim + d] = in[(size_t)r * dim + d] + bias[d];
}

/* The whole forward pass for n images, keeping every activation; logits
 * into m->logits. */
static void forward(vit_train_model *m, const float *images, int n) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, M = c->mlp_size, T = m->num_tokens, Np = m->num_patches;
    const int K = m->patch_dim, S = c->image_size, C = c->num_classes, rows = n * T;
    const size_t BT = (size_t)m->max_batch * T;
    const float *p = m->params, eps = c->layer_norm_eps;
    float *x0 = m->x;

#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++)
        patching_im2col(images + (size_t)b * c->num_channels * S * S, c->num_channels, S, S,
                        c->patch_size, m->cols + (size_t)b * Np * K);
    /* Patch rows of image b are rows 1..Np of its token block: one GEMM per
     * image writes them in place (ldc = D). */
    for (int b = 0; b < n; b++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Np, D, K, 1.0f,
                    m->cols + (size_t)b * Np * K, K, p + m->patch_w, K, 0.0f,
                    x0 + ((size_t)b * T + 1) * D, D);
#pragma omp parallel for schedule(static)
    for (int row = 0; row < rows; row++) {
        const int t = row % T;
        float *dst = x0 + (size_t)row * D;
        const float *pos = p + m->pos + (size_t)t * D;
        if (t == 0)
            for (int d = 0; d < D; d++) dst[d] = p[m->cls + d] + pos[d];
        else
            for (int d = 0; d < D; d++) dst[d] += p[m->patch_b + d] + pos[d];
    }

    for (int l = 0; l < c->num_layers; l++) {
        const block_offsets *o = &m->blocks[l];
        const float *x = LAYER(m->x, l, BT * D);
        float *xmid = LAYER(m->xmid, l, BT * D), *out = LAYER(m->x, l + 1, BT * D);
        float *ln1 = LAYER(m->ln1, l, BT * D), *ln2 = LAYER(m->ln2, l, BT * D);
        float *hid = LAYER(m->hid, l, BT * M), *act = LAYER(m->act, l, BT * M);
        norm_forward(x, rows, D, p + o->ln1_w, p + o->ln1_b, eps, ln1, LAYER(m->stats1, l, BT * 2));
        linear_forward(ln1, rows, D, p + o->qkv_w, p + o->qkv_b, 3 * D, LAYER(m->qkv, l, BT * 3 * D));
        attention_forward(m, n, l);
        add_rows(x, p + o->proj_b, rows, D, xmid);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, D, D, 1.0f,
                    LAYER(m->attn, l, BT * D), D, p + o->proj_w, D, 1.0f, xmid, D);
        norm_forward(xmid, rows, D, p + o->ln2_w, p + o->ln2_b, eps, ln2, LAYER(m->stats2, l, BT * 2));
        linear_forward(ln2, rows, D, p + o->fc1_w, p + o->fc1_b, M, hid);
        gelu_forward(hid, act, (size_t)rows * M);
        add_rows(xmid, p + o->fc2_b, rows, D, out);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, D, M, 1.0f, act, M,
                    p + o->fc2_w, M, 1.0f, out, D);
    }
    const float *last = LAYER(m->x, c->num_layers, BT * D);
    for (int b = 0; b < n; b++)
        norm_row_keep(last + (size_t)b * T * D, p + m->norm_w, p + m->norm_b, D, eps,
                      m->pooled + (size_t)b * D, m->pool_stats + 2 * b);
    linear_forward(m->pooled, n, D, p + m->head_w, p + m->head_b, C, m->logits);
}

/* Mean cross-entropy with label smoothing over n rows of logits, its
 * gradient (dlogits, already divided by n) and the top-1 hits. */
static float cross_entropy(const float *logits, const int *labels, int n, int C, float smoothing,
                           float *dlogits, int *correct) {
    double total = 0.0;
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
            g[j] = (float)((exp(logp) - target) / n);
        }
        total += loss;
        hits += best == labels[b];
    }
    *correct = hits;
    return (float)(total / n);
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

/* Attention backward of layer l: m->dtmp holds d(attention output) [BT, D];
 * writes d(qkv) into m->dqkv. Per image and head, with P the probabilities
 * and O = P V: dP = dO Vᵀ, dV = Pᵀ dO, dS = P ⊙ (dP - rowsum(dP ⊙ P)),
 * dQ = scale dS K, dK = scale dSᵀ Q. */
static void attention_backward(vit_train_model *m, int n, int l) {
    const vit_config *c = &m->config;
    const int T = m->num_tokens, D = c->hidden_size, H = c->num_heads, dh = D / H;
    const size_t BT = (size_t)m->max_batch * T;
    const float *qkv = LAYER(m->qkv, l, BT * 3 * D);
    const float *probs = LAYER(m->probs, l, (size_t)m->max_batch * H * T * T);
    const float scale = 1.0f / sqrtf((float)dh);
#pragma omp parallel for schedule(static)
    for (int task = 0; task < n * H; task++) {
        const int b = task / H, h = task % H;
        const size_t base = (size_t)b * T * 3 * D + (size_t)h * dh;
        const float *q = qkv + base, *k = q + D, *v = q + 2 * D;
        float *dq = m->dqkv + base, *dk = dq + D, *dv = dq + 2 * D;
        const float *p = probs + (size_t)task * T * T;
        const float *dout = m->dtmp + (size_t)b * T * D + (size_t)h * dh;
        float *ds = m->dscores + (size_t)omp_get_thread_num() * T * T;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, dh, 1.0f, dout, D, v, 3 * D,
                    0.0f, ds, T);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, dh, T, 1.0f, p, T, dout, D, 0.0f,
                    dv, 3 * D);
        for (int i = 0; i < T; i++) {
            float *dsr = ds + (size_t)i * T;
            const float *pr = p + (size_t)i * T;
            float dot = 0.0f;
            for (int j = 0; j < T; j++) dot += dsr[j] * pr[j];
            for (int j = 0; j < T; j++) dsr[j] = pr[j] * (dsr[j] - dot);
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, dh, T, scale, ds, T, k, 3 * D,
                    0.0f, dq, 3 * D);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, dh, T, scale, ds, T, q, 3 * D,
                    0.0f, dk, 3 * D);
    }
}

/* Backward from m->dlogits through the head and final norm (filling the
 * class-token rows of m->dx) and, with full, through every block and the
 * embedding. */
static void backward(vit_train_model *m, int n, int full) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, M = c->mlp_size, T = m->num_tokens, Np = m->num_patches;
    const int K = m->patch_dim, C = c->num_classes, rows = n * T;
    const size_t BT = (size_t)m->max_batch * T;
    const float *p = m->params;
    float *g = m->grads;

    linear_backward(m->pooled, n, D, p + m->head_w, C, m->dlogits, m->ones, g + m->head_w,
                    g + m->head_b, m->dpooled, 0);
    if (!full) return;
    memset(m->dx, 0, sizeof(float) * rows * D);
    /* The final norm read only the class-token rows (T rows apart). */
    norm_backward(LAYER(m->x, c->num_layers, BT * D), (size_t)T, n, D, p + m->norm_w,
                  m->pool_stats, m->dpooled, m->dx, m->prod, m->ones, g + m->norm_w,
                  g + m->norm_b);

    for (int l = c->num_layers - 1; l >= 0; l--) {
        const block_offsets *o = &m->blocks[l];
        const float *x = LAYER(m->x, l, BT * D), *xmid = LAYER(m->xmid, l, BT * D);
        const float *ln1 = LAYER(m->ln1, l, BT * D), *ln2 = LAYER(m->ln2, l, BT * D);
        const float *hid = LAYER(m->hid, l, BT * M), *act = LAYER(m->act, l, BT * M);
        /* MLP: dx is d(block output) = d(xmid) through the residual. */
        linear_backward(act, rows, M, p + o->fc2_w, D, m->dx, m->ones, g + o->fc2_w,
                        g + o->fc2_b, m->dhid, 0);
        gelu_backward(hid, m->dhid, (size_t)rows * M);
        linear_backward(ln2, rows, D, p + o->fc1_w, M, m->dhid, m->ones, g + o->fc1_w,
                        g + o->fc1_b, m->dtmp, 0);
        norm_backward(xmid, 1, rows, D, p + o->ln2_w, LAYER(m->stats2, l, BT * 2), m->dtmp, m->dx,
                      m->prod, m->ones, g + o->ln2_w, g + o->ln2_b);
        /* Attention: dx is now d(xmid) = d(block input) through the residual. */
        linear_backward(LAYER(m->attn, l, BT * D), rows, D, p + o->proj_w, D, m->dx, m->ones,
                        g + o->proj_w, g + o->proj_b, m->dtmp, 0);
        attention_backward(m, n, l);
        linear_backward(ln1, rows, D, p + o->qkv_w, 3 * D, m->dqkv, m->ones, g + o->qkv_w,
                        g + o->qkv_b, m->dtmp, 0);
        norm_backward(x, 1, rows, D, p + o->ln1_w, LAYER(m->stats1, l, BT * 2), m->dtmp, m->dx,
                      m->prod, m->ones, g + o->ln1_w, g + o->ln1_b);
    }

    /* Embedding: class token and position gradients summed over images in
     * image order; patch rows gathered into dtmp for the kernel's GEMM. */
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++) {
        float *dpos = g + m->pos + (size_t)t * D;
        memset(dpos, 0, sizeof(float) * D);
        for (int b = 0; b < n; b++) {
            const float *src = m->dx + ((size_t)b * T + t) * D;
            for (int d = 0; d < D; d++) dpos[d] += src[d];
        }
    }
    memcpy(g + m->cls, g + m->pos, sizeof(float) * D);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++)
        memcpy(m->dtmp + (size_t)b * Np * D, m->dx + ((size_t)b * T + 1) * D,
               sizeof(float) * Np * D);
    linear_backward(m->cols, n * Np, K, p + m->patch_w, D, m->dtmp, m->ones, g + m->patch_w,
                    g + m->patch_b, NULL, 0);
}

vit_status vit_train_step_grads(vit_train_model *m, const float *images, const int *labels, int n,
                                float label_smoothing, float *loss, int *correct, vit_error *err) {
    vit_status s = check_batch(m, labels, n, err);
    if (s != VIT_OK) return s;
    forward(m, images, n);
    int hits;
    const float value = cross_entropy(m->logits, labels, n, m->config.num_classes,
                                      label_smoothing, m->dlogits, &hits);
    backward(m, n, 1);
    if (loss) *loss = value;
    if (correct) *correct = hits;
    return VIT_OK;
}

vit_status vit_train_head_grads(vit_train_model *m, const float *features, const int *labels,
                                int n, float label_smoothing, float *loss, int *correct,
                                vit_error *err) {
    vit_status s = check_batch(m, labels, n, err);
    if (s != VIT_OK) return s;
    const int D = m->config.hidden_size, C = m->config.num_classes;
    memcpy(m->pooled, features, sizeof(float) * n * D);
    linear_forward(m->pooled, n, D, m->params + m->head_w, m->params + m->head_b, C, m->logits);
    int hits;
    const float value = cross_entropy(m->logits, labels, n, C, label_smoothing, m->dlogits, &hits);
    backward(m, n, 0);
    if (loss) *loss = value;
    if (correct) *correct = hits;
    return VIT_OK;
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
    opt->m = alloc_floats(opt->n);
    opt->v = alloc_floats(opt->n);
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
    cJSON_AddNumberToObject(j, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->num_layers);
    cJSON_AddNumberToObject(j, "num_attention_heads", c->num_heads);
    cJSON_AddNumberToObject(j, "intermediate_size", c->mlp_size);
    cJSON_AddNumberToObject(j, "patch_size", c->patch_size);
    cJSON_AddNumberToObject(j, "image_size", c->image_size);
    cJSON_AddNumberToObject(j, "num_channels", channels);
    cJSON_AddNumberToObject(j, "layer_norm_eps", c->layer_norm_eps);
    cJSON_AddStringToObject(j, "hidden_act", "gelu");
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
