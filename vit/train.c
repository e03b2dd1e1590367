/* Training a created model (vit/params.c): the one forward pass
 * (vit_block.h: the embedding, block and head inference runs) with a buffer
 * per layer for every activation the backward pass reads, then the
 * backward pass layer by layer in reverse. The trainer (struct vit_train)
 * holds the gradients, laid out as the model's parameters, and those
 * buffers; the parameters stay the model's.
 *
 * Threading and determinism: the GEMMs run on vitc's kernels, each element
 * one fixed chain (train_packed.h, kernels_train.h); the few left on plain
 * weights and the GEMVs are OpenBLAS calls made from one thread (OpenBLAS
 * splits them the same way for a given thread count); row-wise work and
 * attention are OpenMP loops with static or per-task splits whose results
 * do not depend on which thread ran them; sums over rows (bias and LayerNorm gradients,
 * token gradients) go through GEMV or a fixed sequential order. Nothing
 * here allocates after vit_train_create. */
#include "vit_train.h"
#include "vit_block.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "train_packed.h"
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

/* ------------------------------------------------------------- the trainer */

/* The training state of a model it borrows: the gradients (laid out as the
 * model's parameters) and, for batches up to max_batch, every activation
 * the backward pass reads. */
struct vit_train {
    vit_model *model; /* the caller's (vit_model_create) */
    int max_batch, grid, num_patches, num_tokens, patch_dim;
    /* Tokens: [class (has_cls)] [registers (num_reg)] [patches]; prefix =
     * has_cls + num_reg. The first pos_prefix tokens and the patches have
     * position rows (pos_rows of them). pooled_size: what the head reads. */
    int has_cls, num_reg, prefix, pos_prefix, pos_rows, pooled_size;
    float *grads; /* vit_model_param_count floats, the model's layout */

    /* Activations, per layer l where indexed [l]: */
    float *cols;      /* [B*Np, K] im2col of the images */
    float *token_pos; /* [T, D] each token's position row (zero: none), from pos */
    float *emb, *pre_stats; /* pre_norm: [BTD] embedding before norm_pre, [2 * BT] its stats */
    float *x;         /* [(L+1) * B*T*D] block inputs; x[L] is the last output */
    float *xmid;      /* [L * BTD] after the attention residual */
    float *ln1, *ln2; /* [L * BTD] LayerNorm outputs */
    float *stats1, *stats2; /* [L * 2 * BT]: per layer the BT means, then the BT 1/stds */
    float *qkv;       /* [L * BT*3D] (Q and K after qk-norm) */
    float *qk_raw, *qk_stats; /* qk-norm: [L * BT*2D] Q and K before it, [L * 2 * BT*2H] stats */
    float *br1, *br2; /* LayerScale: [L * BTD] the branches (proj, fc2 outputs) before gamma */
    float *probs;     /* [L * B*H*T*T] attention probabilities */
    float *attn;      /* [L * BTD] attention output before projection */
    float *hid;       /* [L * BTM] fc1 output (before the activation) */
    float *act;       /* [L * BTM] activation output */
    float *fin, *fin_stats; /* final norm: [BTD] normed tokens (token pooling: the n class
                               tokens, contiguous), [2 * BT] stats */
    float *pool_in;   /* fc_norm: [B, D] pooled before it */
    float *pooled, *pool_stats; /* [B, pooled_size] what the head reads, [2, B] fc_norm stats */
    float *logits;    /* [B, C] */

    /* Backward scratch. */
    float *dx, *dtmp; /* [BTD] */
    float *dbranch;   /* [BTD] LayerScale: d(branch) */
    float *dqkv;      /* [BT*3D] */
    float *dhid;      /* [BTM] */
    float *dscores;   /* kernels_train_scratch_floats: attention's, matmul_backward's */
    float *dlogits, *dpooled, *dpool_in; /* [B, C], [B, pooled_size], [B, D] */
    float *prod;      /* [BT * max(D, C)] dy * xhat for LayerNorm weight gradients */
    float *sums;      /* [D] qk-norm column sums */
    float *ones;      /* [max(BT, B*Np)] for column sums by GEMV */
    kernels_threads threads;
};

/* The gradient of parameter p of the model (a pointer into its params),
 * NULL when the model lacks it (p NULL). */
static float *grad(const vit_train *m, const float *p) {
    return p ? m->grads + (p - m->model->params) : NULL;
}

/* Every buffer of the trainer and its size in floats, into bufs and floats
 * (returns how many): what vit_train_create allocates and vit_train_free
 * frees. A switch's buffers are one float without it (never read), so the
 * allocation check stays uniform. */
#define NUM_BUFFERS 38
static size_t buffers(vit_train *m, float **bufs[NUM_BUFFERS], size_t floats[NUM_BUFFERS]) {
    const vit_config *c = &m->model->config;
    const size_t B = (size_t)m->max_batch, T = (size_t)m->num_tokens, D = (size_t)c->hidden_size;
    const size_t M = (size_t)c->mlp_size, L = (size_t)c->num_layers, H = (size_t)c->num_heads;
    const size_t Np = (size_t)m->num_patches, K = (size_t)m->patch_dim;
    const size_t C = (size_t)c->num_classes, BT = B * T, PS = (size_t)m->pooled_size;
    const size_t pre = c->pre_norm, qk = c->qk_norm, ls = c->layer_scale;
    const struct {
        float **buf;
        size_t floats;
    } all[NUM_BUFFERS] = {
        {&m->grads, vit_model_param_count(m->model)}, {&m->cols, B * Np * K},
        {&m->token_pos, T * D}, {&m->emb, pre * BT * D}, {&m->pre_stats, pre * BT * 2},
        {&m->x, (L + 1) * BT * D}, {&m->xmid, L * BT * D}, {&m->ln1, L * BT * D},
        {&m->ln2, L * BT * D}, {&m->stats1, L * BT * 2}, {&m->stats2, L * BT * 2},
        {&m->qkv, L * BT * 3 * D}, {&m->qk_raw, qk * L * BT * 2 * D},
        {&m->qk_stats, qk * L * 2 * BT * 2 * H}, {&m->br1, ls * L * BT * D},
        {&m->br2, ls * L * BT * D}, {&m->probs, L * B * H * T * T}, {&m->attn, L * BT * D},
        {&m->hid, L * BT * M}, {&m->act, L * BT * M}, {&m->fin, BT * D},
        {&m->fin_stats, BT * 2}, {&m->pool_in, B * D}, {&m->pooled, B * PS},
        {&m->pool_stats, B * 2}, {&m->logits, B * C}, {&m->dx, BT * D}, {&m->dtmp, BT * D},
        {&m->dbranch, ls * BT * D}, {&m->dqkv, BT * 3 * D}, {&m->dhid, BT * M},
        {&m->dscores, kernels_train_scratch_floats(m->threads.count, (int)T, (int)D, (int)H,
                                                  (int)M, (int)C, (int)PS)}, {&m->dlogits, B * C},
        {&m->dpooled, B * PS}, {&m->dpool_in, B * D}, {&m->prod, BT * (D > C ? D : C)},
        {&m->sums, D}, {&m->ones, BT}};
    for (size_t i = 0; i < NUM_BUFFERS; i++) {
        bufs[i] = all[i].buf;
        floats[i] = all[i].floats;
    }
    return NUM_BUFFERS;
}

base_status vit_train_create(vit_model *model, int max_batch, vit_train **out, base_error *err) {
    *out = NULL;
    base_status blas = kernels_check_blas(err);
    if (blas != BASE_OK) return blas;
    if (!model->params)
        return base_error_set(err, BASE_E_ARG, "training needs a created model (vit_model_create)");
    if (max_batch <= 0 || max_batch > 65536)
        return base_error_set(err, BASE_E_ARG, "batch size %d is outside 1..65536", max_batch);
    const vit_config *c = &model->config;
    vit_train *m = calloc(1, sizeof *m);
    if (!m) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    m->model = model;
    m->max_batch = max_batch;
    m->grid = c->pos_embed_grid;
    m->num_patches = m->grid * m->grid;
    m->has_cls = !c->no_class_token;
    m->num_reg = c->num_reg_tokens;
    m->prefix = m->has_cls + m->num_reg;
    m->pos_prefix = c->pos_embed_prefix;
    m->pos_rows = m->pos_prefix + m->num_patches;
    m->pooled_size = vit_config_pooled_size(c);
    m->num_tokens = m->prefix + m->num_patches;
    m->patch_dim = c->num_channels * c->patch_size * c->patch_size;
    m->threads = kernels_threading(KERNELS_TRAINING, omp_get_max_threads(), model->isa);
    float **bufs[NUM_BUFFERS];
    size_t floats[NUM_BUFFERS];
    const size_t n = buffers(m, bufs, floats);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= (*bufs[i] = kernels_alloc_floats(floats[i])) != NULL;
    const size_t T = (size_t)m->num_tokens;
    if (!ok) {
        vit_train_free(m);
        return base_error_set(err, BASE_E_NOMEM,
                             "out of memory for training at batch %d (%zu tokens, %d layers)",
                             max_batch, T, c->num_layers);
    }
    for (size_t i = 0; i < (size_t)max_batch * T; i++) m->ones[i] = 1.0f;
    if (!train_packed_create(m->model->blocks, &m->model->config)) {
        vit_train_free(m);
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    }
    *out = m;
    return BASE_OK;
}

void vit_train_free(vit_train *m) {
    if (!m) return;
    train_packed_free(m->model->blocks, &m->model->config);
    float **bufs[NUM_BUFFERS];
    size_t floats[NUM_BUFFERS];
    const size_t n = buffers(m, bufs, floats);
    for (size_t i = 0; i < n; i++) free(*bufs[i]);
    free(m);
}

vit_model *vit_train_model(const vit_train *m) { return m->model; }
const vit_config *vit_train_config(const vit_train *m) { return &m->model->config; }
int vit_train_max_batch(const vit_train *m) { return m->max_batch; }
float *vit_train_grads(vit_train *m) { return m->grads; }

/* Activation pointers of layer l. */
#define LAYER(buf, l, per) ((buf) + (size_t)(l) * (per))

/* Patch embedding, prefix tokens (class, registers) and position
 * embeddings into dst [n*T, D]: token t < pos_prefix gets position row t,
 * patch j row pos_prefix + j, other prefix tokens none (no_embed_class,
 * DINOv2's registers). */
static void embed(vit_train *m, const float *images, int n, float *dst) {
    const vit_model *v = m->model;
    const int D = v->config.hidden_size, T = m->num_tokens, prefix = m->prefix;
    const int pos_prefix = m->pos_prefix;
    /* Each token's position row as the context holds it at inference. */
    for (int t = 0; t < T; t++) {
        float *dst_pos = m->token_pos + (size_t)t * D;
        const int row = t < prefix ? (t < pos_prefix ? t : -1) : pos_prefix + t - prefix;
        if (row < 0) memset(dst_pos, 0, sizeof(float) * D);
        else memcpy(dst_pos, v->pos_embed + (size_t)row * D, sizeof(float) * D);
    }
    /* The patch projections into dtmp (backward's scratch, free until then). */
    vit_embed_forward(v, images, n, v->config.image_size, m->token_pos, m->cols, m->dtmp,
                      dst, m->threads);
}

/* Encoder block l on n images: m->x[l] into m->x[l + 1] through the one
 * block forward inference runs, keeping what block_backward reads. */
static void block_forward(vit_train *m, int n, int l) {
    const vit_model *v = m->model;
    const vit_config *c = &v->config;
    const int D = c->hidden_size, M = c->mlp_size, T = m->num_tokens, H = c->num_heads;
    const size_t BT = (size_t)m->max_batch * T;
    float *mean1 = LAYER(m->stats1, l, BT * 2), *mean2 = LAYER(m->stats2, l, BT * 2);
    float *qk_mean = LAYER(m->qk_stats, l, BT * 2 * H * 2);
    vit_block_io io = {
        .x = LAYER(m->x, l, BT * D), .mid = LAYER(m->xmid, l, BT * D),
        .out = LAYER(m->x, l + 1, BT * D), .ln1 = LAYER(m->ln1, l, BT * D),
        .ln2 = LAYER(m->ln2, l, BT * D), .qkv = LAYER(m->qkv, l, BT * 3 * D),
        .attn = LAYER(m->attn, l, BT * D), .hid = LAYER(m->hid, l, BT * M),
        .act = LAYER(m->act, l, BT * M),
        .probs = LAYER(m->probs, l, (size_t)m->max_batch * H * T * T), .query_rows = T,
        .scores = m->dscores,
        .mean1 = mean1, .rstd1 = mean1 + BT, .mean2 = mean2, .rstd2 = mean2 + BT,
        .qk_raw = c->qk_norm ? LAYER(m->qk_raw, l, BT * 2 * D) : NULL,
        .qk_mean = c->qk_norm ? qk_mean : NULL, .qk_rstd = c->qk_norm ? qk_mean + BT * 2 * H : NULL,
        .br1 = c->layer_scale ? LAYER(m->br1, l, BT * D) : NULL,
        .br2 = c->layer_scale ? LAYER(m->br2, l, BT * D) : NULL};
    vit_block_forward(c, &v->blocks[l], n, T, &io, m->threads);
}

/* After the blocks: the final norm, pooling, fc_norm and head of n
 * images, logits into m->logits. */
static void head_forward(vit_train *m, int n) {
    const vit_model *v = m->model;
    const vit_config *c = &v->config;
    const int D = c->hidden_size, T = m->num_tokens;
    const int rows = n * T, PS = m->pooled_size, B = m->max_batch;
    const size_t BT = (size_t)B * T;
    const float eps = c->layer_norm_eps;
    const kernels_threads th = m->threads;
    /* The final norm on the tokens pooling reads (token pooling: the class
     * tokens alone, n rows into fin), then the pooling, then fc_norm. */
    const float *last = LAYER(m->x, c->num_layers, BT * D), *tokens = last;
    const int token_pool = c->global_pool == VIT_GLOBAL_POOL_TOKEN;
    if (v->norm_w) {
        if (token_pool)
            for (int b = 0; b < n; b++)
                layernorm_forward_row(m->fin + (size_t)b * D, m->fin_stats + b,
                                      m->fin_stats + BT + b, last + (size_t)b * T * D,
                                      v->norm_w, v->norm_b, D, eps);
        else
            layernorm_forward(m->fin, m->fin_stats, m->fin_stats + BT, last, v->norm_w,
                              v->norm_b, rows, D, eps, th);
        tokens = m->fin;
    }
    /* The tokens are normed already (token pooling: fin holds the class
     * rows alone, D apart). */
    float *feat = c->fc_norm ? m->pool_in : m->pooled;
    for (int b = 0; b < n; b++) {
        const float *img = token_pool && v->norm_w ? tokens + (size_t)b * D
                                                           : tokens + (size_t)b * T * D;
        pool_forward(feat + (size_t)b * PS, img, T, m->prefix, 1, D, (kernels_pool)c->global_pool,
                     NULL, NULL, eps, NULL);
    }
    if (c->fc_norm)
        layernorm_forward(m->pooled, m->pool_stats, m->pool_stats + B, m->pool_in,
                          v->fc_norm_w, v->fc_norm_b, n, D, eps, th);
    vit_head_forward(v, m->pooled, PS, n, m->logits, th);
}

/* The whole forward pass for n images, keeping every activation; logits
 * into m->logits. */
static void forward(vit_train *m, const float *images, int n) {
    const vit_model *v = m->model;
    const vit_config *c = &v->config;
    const int D = c->hidden_size, T = m->num_tokens, rows = n * T;
    const size_t BT = (size_t)m->max_batch * T;
    const float eps = c->layer_norm_eps;
    const kernels_threads th = m->threads;

    train_packed_refresh(m->model->blocks, c, th);
    if (c->pre_norm) {
        /* CLIP's ln_pre on the embedding */
        embed(m, images, n, m->emb);
        layernorm_forward(m->x, m->pre_stats, m->pre_stats + BT, m->emb, v->norm_pre_w,
                          v->norm_pre_b, rows, D, eps, th);
    } else {
        embed(m, images, n, m->x);
    }
    for (int l = 0; l < c->num_layers; l++) block_forward(m, n, l);
    head_forward(m, n);
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

static base_status check_batch(const vit_train *m, const int *labels, int n, base_error *err) {
    const vit_model *v = m->model;
    if (n <= 0 || n > m->max_batch)
        return base_error_set(err, BASE_E_ARG, "batch of %d images, the model holds 1..%d", n,
                             m->max_batch);
    for (int b = 0; labels && b < n; b++)
        if (labels[b] < 0 || labels[b] >= v->config.num_classes)
            return base_error_set(err, BASE_E_ARG, "label %d of image %d is outside 0..%d",
                                 labels[b], b, v->config.num_classes - 1);
    return BASE_OK;
}

base_status vit_train_forward(vit_train *m, const float *images, int n, float *logits,
                             float *features, base_error *err) {
    base_status s = check_batch(m, NULL, n, err);
    if (s != BASE_OK) return s;
    forward(m, images, n);
    if (logits) memcpy(logits, m->logits, sizeof(float) * n * m->model->config.num_classes);
    if (features) memcpy(features, m->pooled, sizeof(float) * n * m->pooled_size);
    return BASE_OK;
}

/* ------------------------------------------------------------- backward */

/* Embedding backward from demb [n*T, D] (the gradient of embed's output):
 * prefix-token and position gradients summed over images in image order;
 * patch rows gathered into gather [n*Np, D] for the patch GEMM's weight and
 * bias gradients. */
static void embed_backward(vit_train *m, int n, const float *demb, float *gather) {
    const vit_model *v = m->model;
    const int D = v->config.hidden_size, T = m->num_tokens, Np = m->num_patches;
    const int prefix = m->prefix, pos_prefix = m->pos_prefix;
    /* Position row r belongs to token r (prefix) or prefix + r - pos_prefix (patches). */
#pragma omp parallel for schedule(static) num_threads(m->threads.count)
    for (int r = 0; r < m->pos_rows; r++) {
        const int t = r < pos_prefix ? r : prefix + r - pos_prefix;
        float *dpos = grad(m, v->pos_embed) + (size_t)r * D;
        memset(dpos, 0, sizeof(float) * D);
        for (int b = 0; b < n; b++) {
            const float *src = demb + ((size_t)b * T + t) * D;
            for (int d = 0; d < D; d++) dpos[d] += src[d];
        }
    }
    for (int t = 0; t < prefix; t++) {
        float *dtok = t < m->has_cls ? grad(m, v->cls_token)
                                     : grad(m, v->reg_tokens) + (size_t)(t - m->has_cls) * D;
        memset(dtok, 0, sizeof(float) * D);
        for (int b = 0; b < n; b++) {
            const float *src = demb + ((size_t)b * T + t) * D;
            for (int d = 0; d < D; d++) dtok[d] += src[d];
        }
    }
#pragma omp parallel for schedule(static) num_threads(m->threads.count)
    for (int b = 0; b < n; b++)
        memcpy(gather + (size_t)b * Np * D, demb + ((size_t)b * T + prefix) * D,
               sizeof(float) * Np * D);
    matmul_backward(NULL, grad(m, v->patch_w), grad(m, v->patch_b), gather, m->cols, v->patch_w,
                    m->ones, n * Np, m->patch_dim, D, m->dscores, m->threads);
}

/* From d(pooled features) (m->dpooled) back through fc_norm, the pooling
 * and the final norm: d(last block's output) into m->dx. */
static void pool_backward(vit_train *m, int n) {
    const vit_model *v = m->model;
    const vit_config *c = &v->config;
    const int D = c->hidden_size, T = m->num_tokens;
    const int rows = n * T, B = m->max_batch, PS = m->pooled_size;
    const size_t BT = (size_t)B * T;
    const kernels_threads th = m->threads;
    const float *dfeat = m->dpooled;
    if (c->fc_norm) {
        memset(m->dpool_in, 0, sizeof(float) * n * D);
        layernorm_backward(m->dpool_in, grad(m, v->fc_norm_w), grad(m, v->fc_norm_b), m->dpooled,
                           m->pool_in, v->fc_norm_w, m->pool_stats, m->pool_stats + B, n, D,
                           1, m->prod, m->ones, th);
        dfeat = m->dpool_in;
    }
    const float *last = LAYER(m->x, c->num_layers, BT * D);
    memset(m->dx, 0, sizeof(float) * rows * D);
    if (c->global_pool == VIT_GLOBAL_POOL_TOKEN) {
        /* The class tokens alone (T rows apart). */
        if (v->norm_w)
            layernorm_backward(m->dx, grad(m, v->norm_w), grad(m, v->norm_b), dfeat, last,
                               v->norm_w, m->fin_stats, m->fin_stats + BT, n, D, (size_t)T,
                               m->prod, m->ones, th);
        else
            for (int b = 0; b < n; b++)
                memcpy(m->dx + (size_t)b * T * D, dfeat + (size_t)b * D, sizeof(float) * D);
    } else {
        /* d(tokens): the class token's part of [class ‖ mean], and the
         * mean's gradient over the patch tokens. */
        float *dtok = v->norm_w ? m->dtmp : m->dx;
        const int count = T - m->prefix, token_avg = c->global_pool == VIT_GLOBAL_POOL_TOKEN_AVG;
        memset(dtok, 0, sizeof(float) * rows * D);
        for (int b = 0; b < n; b++) {
            const float *f = dfeat + (size_t)b * PS;
            float *img = dtok + (size_t)b * T * D;
            if (token_avg) memcpy(img, f, sizeof(float) * D);
            const float *fmean = f + (token_avg ? D : 0);
            for (int t = m->prefix; t < T; t++)
                for (int d = 0; d < D; d++) img[(size_t)t * D + d] = fmean[d] / (float)count;
        }
        if (v->norm_w)
            layernorm_backward(m->dx, grad(m, v->norm_w), grad(m, v->norm_b), dtok, last, v->norm_w,
                               m->fin_stats, m->fin_stats + BT, rows, D, 1, m->prod, m->ones, th);
    }
}

/* Encoder block l backward: m->dx holds d(its output) on entry, d(its
 * input) on return; its parameters' gradients are written. */
static void block_backward(vit_train *m, int n, int l) {
    const vit_model *v = m->model;
    const vit_config *c = &v->config;
    const int D = c->hidden_size, M = c->mlp_size, T = m->num_tokens, H = c->num_heads;
    const int rows = n * T, B = m->max_batch;
    const size_t BT = (size_t)B * T;
    const kernels_threads th = m->threads;
    const vit_block *o = &v->blocks[l];
    const float *x = LAYER(m->x, l, BT * D), *xmid = LAYER(m->xmid, l, BT * D);
    const float *ln1 = LAYER(m->ln1, l, BT * D), *ln2 = LAYER(m->ln2, l, BT * D);
    const float *mean1 = LAYER(m->stats1, l, BT * 2), *rstd1 = mean1 + BT;
    const float *mean2 = LAYER(m->stats2, l, BT * 2), *rstd2 = mean2 + BT;
    const float *qkv = LAYER(m->qkv, l, BT * 3 * D), *attn = LAYER(m->attn, l, BT * D);
    const float *probs = LAYER(m->probs, l, (size_t)B * H * T * T);
    const float *hid = LAYER(m->hid, l, BT * M), *act = LAYER(m->act, l, BT * M);
    /* MLP: dx is d(block output) = d(xmid) through the residual; the
     * branch's gradient is dx, or dx * ls2 with LayerScale. */
    const float *dmlp = m->dx;
    if (c->layer_scale) {
        layer_scale_add_backward(m->dbranch, grad(m, o->ls2), m->dx, LAYER(m->br2, l, BT * D),
                                 o->ls2, rows, D, m->prod, m->ones, th);
        dmlp = m->dbranch;
    }
    matmul_backward(m->dhid, grad(m, o->fc2_w), grad(m, o->fc2_b), dmlp, act, o->fc2_w, m->ones,
                    rows, M, D, m->dscores, th);
    if (c->act == VIT_ACT_QUICK_GELU) quick_gelu_backward(m->dhid, hid, m->dhid, (size_t)rows * M, th);
    else gelu_backward(m->dhid, hid, m->dhid, (size_t)rows * M, th);
    matmul_backward(m->dtmp, grad(m, o->fc1_w), grad(m, o->fc1_b), m->dhid, ln2, o->fc1_w, m->ones,
                    rows, D, M, m->dscores, th);
    layernorm_backward(m->dx, grad(m, o->ln2_w), grad(m, o->ln2_b), m->dtmp, xmid, o->ln2_w, mean2,
                       rstd2, rows, D, 1, m->prod, m->ones, th);
    /* Attention: dx is now d(xmid) = d(block input) through the residual. */
    const float *dproj = m->dx;
    if (c->layer_scale) {
        layer_scale_add_backward(m->dbranch, grad(m, o->ls1), m->dx, LAYER(m->br1, l, BT * D),
                                 o->ls1, rows, D, m->prod, m->ones, th);
        dproj = m->dbranch;
    }
    matmul_backward(m->dtmp, grad(m, o->proj_w), grad(m, o->proj_b), dproj, attn, o->proj_w,
                    m->ones, rows, D, D, m->dscores, th);
    attention_backward(m->dqkv, m->dscores, m->dtmp, qkv, probs, n, T, D, H, th);
    if (c->qk_norm) {
        const float *qk_mean = LAYER(m->qk_stats, l, BT * 2 * H * 2), *qk_rstd = qk_mean + BT * 2 * H;
        qk_norm_backward(m->dqkv, grad(m, o->q_norm_w), grad(m, o->q_norm_b), grad(m, o->k_norm_w),
                         grad(m, o->k_norm_b), LAYER(m->qk_raw, l, BT * 2 * D), o->q_norm_w,
                         o->k_norm_w, qk_mean, qk_rstd, rows, D, H, m->prod, m->sums,
                         m->ones, th);
    }
    matmul_backward(m->dtmp, grad(m, o->qkv_w), grad(m, o->qkv_b), m->dqkv, ln1, o->qkv_w,
                    m->ones, rows, D, 3 * D, m->dscores, th);
    layernorm_backward(m->dx, grad(m, o->ln1_w), grad(m, o->ln1_b), m->dtmp, x, o->ln1_w, mean1,
                       rstd1, rows, D, 1, m->prod, m->ones, th);
}

/* Backward from m->dlogits through the head, fc_norm, pooling and final
 * norm (filling m->dx, the gradient of the last block's output) and, with
 * full, through every block and the embedding. */
static void backward(vit_train *m, int n, int full) {
    const vit_model *v = m->model;
    const vit_config *c = &v->config;
    const int D = c->hidden_size, T = m->num_tokens;
    const int C = c->num_classes, rows = n * T, B = m->max_batch, PS = m->pooled_size;
    const size_t BT = (size_t)B * T;
    const kernels_threads th = m->threads;

    matmul_backward(m->dpooled, grad(m, v->head_w), grad(m, v->head_b), m->dlogits, m->pooled,
                    v->head_w, m->ones, n, PS, C, m->dscores, th);
    if (!full) return;
    pool_backward(m, n);
    for (int l = c->num_layers - 1; l >= 0; l--) block_backward(m, n, l);
    if (c->pre_norm) {
        /* d(embedding) through norm_pre into dtmp; dx is then free to gather in. */
        memset(m->dtmp, 0, sizeof(float) * rows * D);
        layernorm_backward(m->dtmp, grad(m, v->norm_pre_w), grad(m, v->norm_pre_b), m->dx, m->emb,
                           v->norm_pre_w, m->pre_stats, m->pre_stats + BT, rows, D, 1,
                           m->prod, m->ones, th);
        embed_backward(m, n, m->dtmp, m->dx);
    } else {
        embed_backward(m, n, m->dx, m->dtmp);
    }
}

base_status vit_train_step_grads_part(vit_train *m, const float *images, const int *labels,
                                     int n, int total, float label_smoothing, float *loss,
                                     int *correct, base_error *err) {
    base_status s = check_batch(m, labels, n, err);
    if (s != BASE_OK) return s;
    if (total < n) return base_error_set(err, BASE_E_ARG, "%d images of a batch of %d", n, total);
    forward(m, images, n);
    int hits;
    const float value = cross_entropy(m->logits, labels, n, total, m->model->config.num_classes,
                                      label_smoothing, m->dlogits, &hits);
    backward(m, n, 1);
    if (loss) *loss = value;
    if (correct) *correct = hits;
    return BASE_OK;
}

base_status vit_train_step_grads(vit_train *m, const float *images, const int *labels, int n,
                                float label_smoothing, float *loss, int *correct, base_error *err) {
    return vit_train_step_grads_part(m, images, labels, n, n, label_smoothing, loss, correct, err);
}

base_status vit_train_head_grads_part(vit_train *m, const float *features, const int *labels,
                                     int n, int total, float label_smoothing, float *loss,
                                     int *correct, base_error *err) {
    base_status s = check_batch(m, labels, n, err);
    if (s != BASE_OK) return s;
    if (total < n) return base_error_set(err, BASE_E_ARG, "%d images of a batch of %d", n, total);
    const int PS = m->pooled_size, C = m->model->config.num_classes;
    memcpy(m->pooled, features, sizeof(float) * n * PS);
    vit_head_forward(m->model, m->pooled, PS, n, m->logits, m->threads);
    int hits;
    const float value =
        cross_entropy(m->logits, labels, n, total, C, label_smoothing, m->dlogits, &hits);
    backward(m, n, 0);
    if (loss) *loss = value;
    if (correct) *correct = hits;
    return BASE_OK;
}

base_status vit_train_head_forward(vit_train *m, const float *features, int n,
                                  float *logits, base_error *err) {
    if (n < 1 || n > m->max_batch)
        return base_error_set(err, BASE_E_ARG, "%d images for a batch of at most %d", n, m->max_batch);
    const int PS = m->pooled_size;
    memcpy(m->pooled, features, sizeof(float) * n * PS);
    vit_head_forward(m->model, m->pooled, PS, n, logits, m->threads);
    return BASE_OK;
}

base_status vit_train_head_grads(vit_train *m, const float *features, const int *labels,
                                int n, float label_smoothing, float *loss, int *correct,
                                base_error *err) {
    return vit_train_head_grads_part(m, features, labels, n, n, label_smoothing, loss, correct,
                                     err);
}

/* ------------------------------------------------------------- optimiser */

double vit_train_clip_grad_norm(vit_train *m, float max_norm) {
    /* Sum of squares in double, tensor by tensor in table order. */
    double total = 0.0;
    vit_model *model = m->model;
    for (size_t i = 0; i < vit_model_num_tensors(model); i++) {
        const vit_param *t = vit_model_tensor_at(model, i);
        if (!t->trainable) continue;
        const float *g = m->grads + t->offset;
        double sum = 0.0;
        for (size_t j = 0; j < t->numel; j++) sum += (double)g[j] * g[j];
        total += sum;
    }
    const double norm = sqrt(total);
    if (max_norm > 0 && norm > max_norm) {
        const float scale = (float)(max_norm / (norm + 1e-6));
        for (size_t i = 0; i < vit_model_num_tensors(model); i++) {
            const vit_param *t = vit_model_tensor_at(model, i);
            if (!t->trainable) continue;
            float *g = m->grads + t->offset;
            for (size_t j = 0; j < t->numel; j++) g[j] *= scale;
        }
    }
    return norm;
}

base_status vit_adamw_create(const vit_model *model, const vit_adamw_params *hyper,
                            vit_adamw **out, base_error *err) {
    *out = NULL;
    vit_adamw *opt = calloc(1, sizeof *opt);
    if (!opt) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    opt->hyper = *hyper;
    opt->n = vit_model_param_count(model);
    opt->m = kernels_alloc_floats(opt->n);
    opt->v = kernels_alloc_floats(opt->n);
    if (!opt->m || !opt->v) {
        vit_adamw_free(opt);
        return base_error_set(err, BASE_E_NOMEM, "out of memory for the optimiser state");
    }
    *out = opt;
    return BASE_OK;
}

void vit_adamw_free(vit_adamw *opt) {
    if (!opt) return;
    free(opt->m);
    free(opt->v);
    free(opt);
}

void vit_adamw_step(vit_adamw *opt, vit_train *train, float lr) {
    vit_model *model = train->model;
    const vit_adamw_params *h = &opt->hyper;
    opt->step++;
    const float b1 = h->beta1, b2 = h->beta2, eps = h->eps;
    const float step_size = lr / (float)(1.0 - pow(b1, (double)opt->step));
    const float bc2_sqrt = (float)sqrt(1.0 - pow(b2, (double)opt->step));
    for (size_t i = 0; i < vit_model_num_tensors(model); i++) {
        const vit_param *t = vit_model_tensor_at(model, i);
        if (!t->trainable) continue;
        float *p = model->params + t->offset, *mm = opt->m + t->offset, *vv = opt->v + t->offset;
        const float *g = train->grads + t->offset;
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
