/* Training: the forward pass again through the same kernels as inference
 * (kernels.h), keeping every activation the backward pass reads, then the
 * backward pass layer by layer in reverse. The inference path (forward.c)
 * stays lean; this one spends memory instead.
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

#include <cJSON.h>
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "patching.h"
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

/* ------------------------------------------------------------- the model */

/* The offset of a tensor the configuration does not have. */
#define NONE ((size_t)-1)

/* Offsets (in floats) of one block's tensors in the flat buffers; NONE for
 * a switch's tensor the model lacks (qkv bias, LayerScale, qk-norm). */
typedef struct block_offsets {
    size_t ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b;
    size_t ls1, ls2, q_norm_w, q_norm_b, k_norm_w, k_norm_b;
} block_offsets;

struct vit_train_model {
    vit_config config;
    int max_batch, grid, num_patches, num_tokens, patch_dim;
    /* Tokens: [class (has_cls)] [registers (num_reg)] [patches]; prefix =
     * has_cls + num_reg. The first pos_prefix tokens and the patches have
     * position rows (pos_rows of them). pooled_size: what the head reads. */
    int has_cls, num_reg, prefix, pos_prefix, pos_rows, pooled_size;
    vit_train_tensor *tensors;
    size_t num_tensors, num_params;
    float *params, *grads;
    size_t patch_w, patch_b, cls, reg, pos, norm_pre_w, norm_pre_b, norm_w, norm_b;
    size_t fc_norm_w, fc_norm_b, head_w, head_b;
    block_offsets *blocks;
    /* Each block's parameters as inference holds them (pointers into
     * params, the linear layers plain row-major float32): what the one
     * block forward, vit_block_forward, reads. */
    vit_block *vblocks;
    /* The model as the forward pass reads it: config and pointers into
     * params (plain float32: no packed or int8 layers). */
    vit_model view;

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

/* A parameter's values or gradient, NULL when the model lacks it. */
static const float *param(const vit_train_model *m, size_t offset) {
    return offset == NONE ? NULL : m->params + offset;
}
static float *grad(const vit_train_model *m, size_t offset) {
    return offset == NONE ? NULL : m->grads + offset;
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

/* The tensors of the configuration, in timm's names and order (a switch's
 * tensors only when the model has it). */
static void lay_out_tensors(vit_train_model *m) {
    const vit_config *c = &m->config;
    const int64_t D = c->hidden_size, M = c->mlp_size, C = c->num_classes, P = c->patch_size;
    const int64_t dh = D / c->num_heads;
    char name[48];
    m->patch_b = m->cls = m->reg = m->norm_pre_w = m->norm_pre_b = NONE;
    m->norm_w = m->norm_b = m->fc_norm_w = m->fc_norm_b = NONE;
    m->patch_w = add_tensor(m, "patch_embed.proj.weight", 4, SHAPE(D, c->num_channels, P, P), 1);
    /* timm: the patch embedding has a bias unless pre_norm (CLIP) */
    if (!c->pre_norm) m->patch_b = add_tensor(m, "patch_embed.proj.bias", 1, SHAPE(D), 0);
    if (m->has_cls) m->cls = add_tensor(m, "cls_token", 3, SHAPE(1, 1, D), 0);
    if (m->num_reg) m->reg = add_tensor(m, "reg_token", 3, SHAPE(1, m->num_reg, D), 0);
    m->pos = add_tensor(m, "pos_embed", 3, SHAPE(1, m->pos_rows, D), 0);
    if (c->pre_norm) {
        m->norm_pre_w = add_tensor(m, "norm_pre.weight", 1, SHAPE(D), 0);
        m->norm_pre_b = add_tensor(m, "norm_pre.bias", 1, SHAPE(D), 0);
    }
    for (int l = 0; l < c->num_layers; l++) {
        block_offsets *b = &m->blocks[l];
        b->qkv_b = b->ls1 = b->ls2 = b->q_norm_w = b->q_norm_b = b->k_norm_w = b->k_norm_b = NONE;
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
    if (!c->no_final_norm) {
        m->norm_w = add_tensor(m, "norm.weight", 1, SHAPE(D), 0);
        m->norm_b = add_tensor(m, "norm.bias", 1, SHAPE(D), 0);
    }
    if (c->fc_norm) {
        m->fc_norm_w = add_tensor(m, "fc_norm.weight", 1, SHAPE(D), 0);
        m->fc_norm_b = add_tensor(m, "fc_norm.bias", 1, SHAPE(D), 0);
    }
    m->head_w = add_tensor(m, "head.weight", 2, SHAPE(C, m->pooled_size), 1);
    m->head_b = add_tensor(m, "head.bias", 1, SHAPE(C), 0);
}

/* What training cannot do with configuration c (the switches of vit.h it
 * does: every one but the DeiT distillation token), into why (non-zero),
 * else 0. The Hugging Face DINOv2 head on [class ‖ mean] is saved in that
 * layout, which has no spelling for pre-norm, fc_norm or qk-norm. */
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

/* Every buffer of the model, for allocation checks and freeing. */
#define ALL_BUFFERS(m)                                                                          \
    {(m)->params, (m)->grads, (m)->cols, (m)->token_pos, (m)->emb, (m)->pre_stats, (m)->x, (m)->xmid, (m)->ln1, \
     (m)->ln2, (m)->stats1, (m)->stats2, (m)->qkv, (m)->qk_raw, (m)->qk_stats, (m)->br1,        \
     (m)->br2, (m)->probs, (m)->attn, (m)->hid, (m)->act, (m)->fin, (m)->fin_stats,             \
     (m)->pool_in, (m)->pooled, (m)->pool_stats, (m)->logits, (m)->dx, (m)->dtmp, (m)->dbranch, \
     (m)->dqkv, (m)->dhid, (m)->dscores, (m)->dlogits, (m)->dpooled, (m)->dpool_in, (m)->prod,  \
     (m)->sums, (m)->ones}

/* The parameters, gradients and every activation for batches of up to
 * m->max_batch images (ALL_BUFFERS; the caller checks them). */
static void alloc_buffers(vit_train_model *m) {
    const vit_config *c = &m->config;
    const int max_batch = m->max_batch;
    const size_t B = (size_t)max_batch, T = (size_t)m->num_tokens, D = (size_t)c->hidden_size;
    const size_t M = (size_t)c->mlp_size, L = (size_t)c->num_layers, H = (size_t)c->num_heads;
    const size_t Np = (size_t)m->num_patches, K = (size_t)m->patch_dim;
    const size_t C = (size_t)c->num_classes, BT = B * T, PS = (size_t)m->pooled_size;
    /* A switch's buffers only when the model has it: one float otherwise
     * (never read), so the allocation check below stays uniform. */
    const size_t pre = c->pre_norm, qk = c->qk_norm, ls = c->layer_scale;
    m->params = kernels_alloc_floats(m->num_params);
    m->grads = kernels_alloc_floats(m->num_params);
    m->cols = kernels_alloc_floats(B * Np * K);
    m->token_pos = kernels_alloc_floats(T * D);
    m->emb = kernels_alloc_floats(pre * BT * D);
    m->pre_stats = kernels_alloc_floats(pre * BT * 2);
    m->x = kernels_alloc_floats((L + 1) * BT * D);
    m->xmid = kernels_alloc_floats(L * BT * D);
    m->ln1 = kernels_alloc_floats(L * BT * D);
    m->ln2 = kernels_alloc_floats(L * BT * D);
    m->stats1 = kernels_alloc_floats(L * BT * 2);
    m->stats2 = kernels_alloc_floats(L * BT * 2);
    m->qkv = kernels_alloc_floats(L * BT * 3 * D);
    m->qk_raw = kernels_alloc_floats(qk * L * BT * 2 * D);
    m->qk_stats = kernels_alloc_floats(qk * L * 2 * BT * 2 * H);
    m->br1 = kernels_alloc_floats(ls * L * BT * D);
    m->br2 = kernels_alloc_floats(ls * L * BT * D);
    m->probs = kernels_alloc_floats(L * B * H * T * T);
    m->attn = kernels_alloc_floats(L * BT * D);
    m->hid = kernels_alloc_floats(L * BT * M);
    m->act = kernels_alloc_floats(L * BT * M);
    m->fin = kernels_alloc_floats(BT * D);
    m->fin_stats = kernels_alloc_floats(BT * 2);
    m->pool_in = kernels_alloc_floats(B * D);
    m->pooled = kernels_alloc_floats(B * PS);
    m->pool_stats = kernels_alloc_floats(B * 2);
    m->logits = kernels_alloc_floats(B * C);
    m->dx = kernels_alloc_floats(BT * D);
    m->dtmp = kernels_alloc_floats(BT * D);
    m->dbranch = kernels_alloc_floats(ls * BT * D);
    m->dqkv = kernels_alloc_floats(BT * 3 * D);
    m->dhid = kernels_alloc_floats(BT * M);
    m->dscores = kernels_alloc_floats(kernels_train_scratch_floats(
        m->threads.count, (int)T, (int)D, (int)H, (int)M, (int)C, (int)PS));
    m->dlogits = kernels_alloc_floats(B * C);
    m->dpooled = kernels_alloc_floats(B * PS);
    m->dpool_in = kernels_alloc_floats(B * D);
    m->prod = kernels_alloc_floats(BT * (D > C ? D : C));
    m->sums = kernels_alloc_floats(D);
    m->ones = kernels_alloc_floats(BT);
}

/* Points the view and each of its blocks at their tensors in params (NULL
 * where the model lacks a switch's tensor). */
static void point_model(vit_train_model *m, kernels_isa isa) {
    vit_model *v = &m->view;
    v->config = m->config;
    v->isa = isa;
    v->blocks = m->vblocks;
    v->patch_w = param(m, m->patch_w);
    v->patch_b = param(m, m->patch_b);
    v->cls_token = param(m, m->cls);
    v->reg_tokens = param(m, m->reg);
    v->pos_embed = param(m, m->pos);
    v->norm_pre_w = param(m, m->norm_pre_w);
    v->norm_pre_b = param(m, m->norm_pre_b);
    v->norm_w = param(m, m->norm_w);
    v->norm_b = param(m, m->norm_b);
    v->fc_norm_w = param(m, m->fc_norm_w);
    v->fc_norm_b = param(m, m->fc_norm_b);
    v->head_w = param(m, m->head_w);
    v->head_b = param(m, m->head_b);
    for (int l = 0; l < m->config.num_layers; l++) {
        const block_offsets *o = &m->blocks[l];
        m->vblocks[l] = (vit_block){
            .ln1_w = param(m, o->ln1_w), .ln1_b = param(m, o->ln1_b),
            .qkv_w = param(m, o->qkv_w), .qkv_b = param(m, o->qkv_b),
            .proj_w = param(m, o->proj_w), .proj_b = param(m, o->proj_b),
            .ln2_w = param(m, o->ln2_w), .ln2_b = param(m, o->ln2_b),
            .fc1_w = param(m, o->fc1_w), .fc1_b = param(m, o->fc1_b),
            .fc2_w = param(m, o->fc2_w), .fc2_b = param(m, o->fc2_b),
            .ls1 = param(m, o->ls1), .ls2 = param(m, o->ls2),
            .q_norm_w = param(m, o->q_norm_w), .q_norm_b = param(m, o->q_norm_b),
            .k_norm_w = param(m, o->k_norm_w), .k_norm_b = param(m, o->k_norm_b)};
    }
}

base_status vit_train_create(const vit_config *config, int max_batch, vit_train_model **out,
                            base_error *err) {
    *out = NULL;
    const vit_config *c = config;
    base_status blas = kernels_check_blas(err);
    if (blas != BASE_OK) return blas;
    if (max_batch <= 0 || max_batch > 65536)
        return base_error_set(err, BASE_E_ARG, "batch size %d is outside 1..65536", max_batch);
    base_status s = check_trainable(c, err);
    if (s != BASE_OK) return s;
    kernels_isa isa; /* for the kernels other than OpenBLAS's GEMMs */
    if ((s = kernels_isa_choose(getenv("VITC_ISA"), &isa, err)) != BASE_OK) return s;
    vit_train_model *m = calloc(1, sizeof *m);
    if (!m) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    m->config = *c;
    m->max_batch = max_batch;
    m->grid = patching_grid(c->image_size, c->patch_size);
    m->num_patches = m->grid * m->grid;
    m->has_cls = !c->no_class_token;
    m->num_reg = c->num_reg_tokens;
    m->prefix = m->has_cls + m->num_reg;
    m->pos_prefix = pos_prefix_of(c);
    m->pos_rows = m->pos_prefix + m->num_patches;
    m->pooled_size = vit_config_pooled_size(c);
    m->num_tokens = m->prefix + m->num_patches;
    /* The model's own position grid is the training size's. */
    m->config.pos_embed_prefix = m->pos_prefix;
    m->config.no_embed_class = m->prefix > 0 && m->pos_prefix == 0;
    m->config.pos_embed_grid = m->grid;
    m->patch_dim = c->num_channels * c->patch_size * c->patch_size;
    m->threads = kernels_threading(KERNELS_TRAINING, omp_get_max_threads(), isa);
    m->tensors = calloc((size_t)c->num_layers * 18 + 16, sizeof *m->tensors);
    m->blocks = calloc((size_t)c->num_layers, sizeof *m->blocks);
    m->vblocks = calloc((size_t)c->num_layers, sizeof *m->vblocks);
    if (!m->tensors || !m->blocks || !m->vblocks) {
        vit_train_free(m);
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    }
    lay_out_tensors(m);

    alloc_buffers(m);
    const size_t T = (size_t)m->num_tokens, L = (size_t)c->num_layers;
    float *const all[] = ALL_BUFFERS(m);
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (!all[i]) {
            vit_train_free(m);
            return base_error_set(err, BASE_E_NOMEM,
                                 "out of memory for training at batch %d (%zu tokens, %zu "
                                 "layers)", max_batch, T, L);
        }
    for (size_t i = 0; i < (size_t)max_batch * T; i++) m->ones[i] = 1.0f;
    point_model(m, isa);
    if (!train_packed_create(m->vblocks, &m->config)) {
        vit_train_free(m);
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    }
    *out = m;
    return BASE_OK;
}

void vit_train_free(vit_train_model *m) {
    if (!m) return;
    train_packed_free(m->vblocks, &m->config);
    float *const all[] = ALL_BUFFERS(m);
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
    free(m->tensors);
    free(m->blocks);
    free(m->vblocks);
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

/* Copies n floats of a pretrained tensor (NULL: absent) into dst. */
static base_status copy_param(float *dst, const float *src, size_t n, const char *name,
                             base_error *err) {
    if (!src) return base_error_set(err, BASE_E_SHAPE, "the pretrained model has no %s", name);
    memcpy(dst, src, n * sizeof(float));
    return BASE_OK;
}

/* A linear layer's weight: float, an int8 file's values times scales, a
 * bf16 file's values widened (h), or a packed file's mapped matrix (f: the
 * float pointer is then NULL). */
static base_status copy_linear(float *dst, const float *src, const kernels_qmatrix *q,
                              const kernels_bmatrix *h, const kernels_fmatrix *f, size_t n,
                              const char *name, base_error *err) {
    if (q) {
        kernels_qmatrix_to_f32(q, dst);
    } else if (h) {
        kernels_bmatrix_to_f32(h, dst);
    } else if (!src && f) {
        kernels_fmatrix_to_f32(f, dst);
    } else {
        return copy_param(dst, src, n, name, err);
    }
    return BASE_OK;
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
    DIFF(pos_prefix_of(a) != b->pos_embed_prefix, "position rows of the prefix tokens");
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

/* The patch embedding and position rows of src into m (vit_train_copy_from). */
static base_status copy_embedding(vit_train_model *m, const vit_model *src, base_error *err) {
    const vit_config *a = &m->config, *b = &src->config;
    const size_t D = (size_t)a->hidden_size, PP = (size_t)a->patch_size * a->patch_size;
    const size_t Np = (size_t)m->num_patches;
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
    /* Position rows: the prefix tokens' as they are, the patch grid
     * resampled (as the checkpoint's library does) when the checkpoint's is
     * another: training at another image size, or DINOv2, which keeps its
     * pre-training grid. */
    const size_t pos_prefix = (size_t)m->pos_prefix;
    memcpy(p + m->pos, src->pos_embed, pos_prefix * D * sizeof(float));
    if (b->pos_embed_grid == m->grid) {
        memcpy(p + m->pos + pos_prefix * D, src->pos_embed + pos_prefix * D, Np * D * sizeof(float));
    } else if (patching_resample_pos_embed(src->pos_embed + pos_prefix * D, 0, b->pos_embed_grid,
                                           b->pos_embed_grid, (int)D, p + m->pos + pos_prefix * D,
                                           m->grid, m->grid, b->pos_embed_antialias) != BASE_OK) {
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    }
    /* A patch bias the model being trained lacks (timm: none with
     * pre-norm) is the same constant on every patch row: folded into
     * their positions. One it has and the checkpoint lacks starts at 0. */
    if (m->patch_b != NONE) {
        if (src->patch_b) memcpy(p + m->patch_b, src->patch_b, D * sizeof(float));
        else memset(p + m->patch_b, 0, D * sizeof(float));
    } else if (src->patch_b) {
        for (size_t t = 0; t < Np; t++)
            for (size_t d = 0; d < D; d++) p[m->pos + (pos_prefix + t) * D + d] += src->patch_b[d];
    }
    return BASE_OK;
}

/* Encoder block l of src into m (vit_train_copy_from). */
static base_status copy_block(vit_train_model *m, const vit_model *src, int l, base_error *err) {
    const vit_config *a = &m->config;
    const size_t D = (size_t)a->hidden_size, M = (size_t)a->mlp_size;
    const size_t dh = D / (size_t)a->num_heads;
    float *p = m->params;
    base_status s;
    const vit_block *sb = &src->blocks[l];
    const block_offsets *o = &m->blocks[l];
    if ((s = copy_param(p + o->ln1_w, sb->ln1_w, D, "norm1", err)) ||
        (s = copy_param(p + o->ln1_b, sb->ln1_b, D, "norm1", err)) ||
        (s = copy_linear(p + o->qkv_w, sb->qkv_w, sb->qkv_q, sb->qkv_h, sb->qkv_f, 3 * D * D, "qkv", err)) ||
        (s = copy_linear(p + o->proj_w, sb->proj_w, sb->proj_q, sb->proj_h, sb->proj_f, D * D, "proj", err)) ||
        (s = copy_param(p + o->proj_b, sb->proj_b, D, "proj bias", err)) ||
        (s = copy_param(p + o->ln2_w, sb->ln2_w, D, "norm2", err)) ||
        (s = copy_param(p + o->ln2_b, sb->ln2_b, D, "norm2", err)) ||
        (s = copy_linear(p + o->fc1_w, sb->fc1_w, sb->fc1_q, sb->fc1_h, sb->fc1_f, M * D, "fc1", err)) ||
        (s = copy_param(p + o->fc1_b, sb->fc1_b, M, "fc1 bias", err)) ||
        (s = copy_linear(p + o->fc2_w, sb->fc2_w, sb->fc2_q, sb->fc2_h, sb->fc2_f, D * M, "fc2", err)) ||
        (s = copy_param(p + o->fc2_b, sb->fc2_b, D, "fc2 bias", err)))
        return s;
    if (o->ls1 != NONE &&
        ((s = copy_param(p + o->ls1, sb->ls1, D, "LayerScale", err)) ||
         (s = copy_param(p + o->ls2, sb->ls2, D, "LayerScale", err))))
        return s;
    if (o->q_norm_w != NONE &&
        ((s = copy_param(p + o->q_norm_w, sb->q_norm_w, dh, "q_norm", err)) ||
         (s = copy_param(p + o->q_norm_b, sb->q_norm_b, dh, "q_norm", err)) ||
         (s = copy_param(p + o->k_norm_w, sb->k_norm_w, dh, "k_norm", err)) ||
         (s = copy_param(p + o->k_norm_b, sb->k_norm_b, dh, "k_norm", err))))
        return s;
    /* A checkpoint without qkv bias trains one from zero when the model
     * being trained has one. */
    if (o->qkv_b != NONE) {
        if (sb->qkv_b) memcpy(p + o->qkv_b, sb->qkv_b, 3 * D * sizeof(float));
        else memset(p + o->qkv_b, 0, 3 * D * sizeof(float));
    }
    return BASE_OK;
}

base_status vit_train_copy_from(vit_train_model *m, const vit_model *src, int copy_head,
                               base_error *err) {
    const vit_config *a = &m->config, *b = &src->config;
    char why[300];
    if (train_unsupported(b, why, sizeof why))
        return base_error_set(err, BASE_E_UNSUPPORTED, "%s: %s (it can be run, not fine-tuned)",
                             weights_path(src->file), why);
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
    const size_t D = (size_t)a->hidden_size;
    float *p = m->params;
    base_status s = copy_embedding(m, src, err);
    if (s != BASE_OK) return s;
    if ((m->cls != NONE && (s = copy_param(p + m->cls, src->cls_token, D, "class token", err))) ||
        (m->reg != NONE &&
         (s = copy_param(p + m->reg, src->reg_tokens, (size_t)m->num_reg * D, "register tokens", err))) ||
        (m->norm_pre_w != NONE &&
         ((s = copy_param(p + m->norm_pre_w, src->norm_pre_w, D, "pre-norm", err)) ||
          (s = copy_param(p + m->norm_pre_b, src->norm_pre_b, D, "pre-norm", err)))) ||
        (m->norm_w != NONE &&
         ((s = copy_param(p + m->norm_w, src->norm_w, D, "final norm", err)) ||
          (s = copy_param(p + m->norm_b, src->norm_b, D, "final norm", err)))) ||
        (m->fc_norm_w != NONE &&
         ((s = copy_param(p + m->fc_norm_w, src->fc_norm_w, D, "fc_norm", err)) ||
          (s = copy_param(p + m->fc_norm_b, src->fc_norm_b, D, "fc_norm", err)))))
        return s;
    for (int l = 0; l < a->num_layers; l++)
        if ((s = copy_block(m, src, l, err)) != BASE_OK) return s;
    if (copy_head) {
        if (b->num_classes != a->num_classes || !src->head_w)
            return base_error_set(err, BASE_E_SHAPE, "the pretrained head has %d classes, not %d",
                                 b->num_classes, a->num_classes);
        memcpy(p + m->head_w, src->head_w, (size_t)a->num_classes * m->pooled_size * sizeof(float));
        memcpy(p + m->head_b, src->head_b, (size_t)a->num_classes * sizeof(float));
    }
    return BASE_OK;
}

void vit_train_freeze_backbone(vit_train_model *m, int freeze) {
    for (size_t i = 0; i < m->num_tensors; i++)
        m->tensors[i].trainable = !freeze || strncmp(m->tensors[i].name, "head.", 5) == 0;
}

/* ------------------------------------------------------------- forward */

/* Activation pointers of layer l. */
#define LAYER(buf, l, per) ((buf) + (size_t)(l) * (per))

/* Patch embedding, prefix tokens (class, registers) and position
 * embeddings into dst [n*T, D]: token t < pos_prefix gets position row t,
 * patch j row pos_prefix + j, other prefix tokens none (no_embed_class,
 * DINOv2's registers). */
static void embed(vit_train_model *m, const float *images, int n, float *dst) {
    const int D = m->config.hidden_size, T = m->num_tokens, prefix = m->prefix;
    const int pos_prefix = m->pos_prefix;
    /* Each token's position row as the context holds it at inference. */
    for (int t = 0; t < T; t++) {
        float *dst_pos = m->token_pos + (size_t)t * D;
        const int row = t < prefix ? (t < pos_prefix ? t : -1) : pos_prefix + t - prefix;
        if (row < 0) memset(dst_pos, 0, sizeof(float) * D);
        else memcpy(dst_pos, m->params + m->pos + (size_t)row * D, sizeof(float) * D);
    }
    /* The patch projections into dtmp (backward's scratch, free until then). */
    vit_embed_forward(&m->view, images, n, m->config.image_size, m->token_pos, m->cols, m->dtmp,
                      dst, m->threads);
}

/* Encoder block l on n images: m->x[l] into m->x[l + 1] through the one
 * block forward inference runs, keeping what block_backward reads. */
static void block_forward(vit_train_model *m, int n, int l) {
    const vit_config *c = &m->config;
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
    vit_block_forward(c, &m->vblocks[l], n, T, &io, m->threads);
}

/* After the blocks: the final norm, pooling, fc_norm and head of n
 * images, logits into m->logits. */
static void head_forward(vit_train_model *m, int n) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, T = m->num_tokens;
    const int rows = n * T, PS = m->pooled_size, B = m->max_batch;
    const size_t BT = (size_t)B * T;
    const float *p = m->params, eps = c->layer_norm_eps;
    const kernels_threads th = m->threads;
    /* The final norm on the tokens pooling reads (token pooling: the class
     * tokens alone, n rows into fin), then the pooling, then fc_norm. */
    const float *last = LAYER(m->x, c->num_layers, BT * D), *tokens = last;
    const int token_pool = c->global_pool == VIT_GLOBAL_POOL_TOKEN;
    if (m->norm_w != NONE) {
        if (token_pool)
            for (int b = 0; b < n; b++)
                layernorm_forward_row(m->fin + (size_t)b * D, m->fin_stats + b,
                                      m->fin_stats + BT + b, last + (size_t)b * T * D,
                                      p + m->norm_w, p + m->norm_b, D, eps);
        else
            layernorm_forward(m->fin, m->fin_stats, m->fin_stats + BT, last, p + m->norm_w,
                              p + m->norm_b, rows, D, eps, th);
        tokens = m->fin;
    }
    /* The tokens are normed already (token pooling: fin holds the class
     * rows alone, D apart). */
    float *feat = c->fc_norm ? m->pool_in : m->pooled;
    for (int b = 0; b < n; b++) {
        const float *img = token_pool && m->norm_w != NONE ? tokens + (size_t)b * D
                                                           : tokens + (size_t)b * T * D;
        pool_forward(feat + (size_t)b * PS, img, T, m->prefix, 1, D, (kernels_pool)c->global_pool,
                     NULL, NULL, eps, NULL);
    }
    if (c->fc_norm)
        layernorm_forward(m->pooled, m->pool_stats, m->pool_stats + B, m->pool_in,
                          p + m->fc_norm_w, p + m->fc_norm_b, n, D, eps, th);
    vit_head_forward(&m->view, m->pooled, PS, n, m->logits, th);
}

/* The whole forward pass for n images, keeping every activation; logits
 * into m->logits. */
static void forward(vit_train_model *m, const float *images, int n) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, T = m->num_tokens, rows = n * T;
    const size_t BT = (size_t)m->max_batch * T;
    const float *p = m->params, eps = c->layer_norm_eps;
    const kernels_threads th = m->threads;

    train_packed_refresh(m->vblocks, c, th);
    if (c->pre_norm) {
        /* CLIP's ln_pre on the embedding */
        embed(m, images, n, m->emb);
        layernorm_forward(m->x, m->pre_stats, m->pre_stats + BT, m->emb, p + m->norm_pre_w,
                          p + m->norm_pre_b, rows, D, eps, th);
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

static base_status check_batch(const vit_train_model *m, const int *labels, int n, base_error *err) {
    if (n <= 0 || n > m->max_batch)
        return base_error_set(err, BASE_E_ARG, "batch of %d images, the model holds 1..%d", n,
                             m->max_batch);
    for (int b = 0; labels && b < n; b++)
        if (labels[b] < 0 || labels[b] >= m->config.num_classes)
            return base_error_set(err, BASE_E_ARG, "label %d of image %d is outside 0..%d",
                                 labels[b], b, m->config.num_classes - 1);
    return BASE_OK;
}

base_status vit_train_forward(vit_train_model *m, const float *images, int n, float *logits,
                             float *features, base_error *err) {
    base_status s = check_batch(m, NULL, n, err);
    if (s != BASE_OK) return s;
    forward(m, images, n);
    if (logits) memcpy(logits, m->logits, sizeof(float) * n * m->config.num_classes);
    if (features) memcpy(features, m->pooled, sizeof(float) * n * m->pooled_size);
    return BASE_OK;
}

/* ------------------------------------------------------------- backward */

/* Embedding backward from demb [n*T, D] (the gradient of embed's output):
 * prefix-token and position gradients summed over images in image order;
 * patch rows gathered into gather [n*Np, D] for the patch GEMM's weight and
 * bias gradients. */
static void embed_backward(vit_train_model *m, int n, const float *demb, float *gather) {
    const int D = m->config.hidden_size, T = m->num_tokens, Np = m->num_patches;
    const int prefix = m->prefix, pos_prefix = m->pos_prefix;
    const float *p = m->params;
    float *g = m->grads;
    /* Position row r belongs to token r (prefix) or prefix + r - pos_prefix (patches). */
#pragma omp parallel for schedule(static) num_threads(m->threads.count)
    for (int r = 0; r < m->pos_rows; r++) {
        const int t = r < pos_prefix ? r : prefix + r - pos_prefix;
        float *dpos = g + m->pos + (size_t)r * D;
        memset(dpos, 0, sizeof(float) * D);
        for (int b = 0; b < n; b++) {
            const float *src = demb + ((size_t)b * T + t) * D;
            for (int d = 0; d < D; d++) dpos[d] += src[d];
        }
    }
    for (int t = 0; t < prefix; t++) {
        float *dtok = t < m->has_cls ? g + m->cls : g + m->reg + (size_t)(t - m->has_cls) * D;
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
    matmul_backward(NULL, g + m->patch_w, grad(m, m->patch_b), gather, m->cols, p + m->patch_w,
                    m->ones, n * Np, m->patch_dim, D, m->dscores, m->threads);
}

/* From d(pooled features) (m->dpooled) back through fc_norm, the pooling
 * and the final norm: d(last block's output) into m->dx. */
static void pool_backward(vit_train_model *m, int n) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, T = m->num_tokens;
    const int rows = n * T, B = m->max_batch, PS = m->pooled_size;
    const size_t BT = (size_t)B * T;
    const float *p = m->params;
    float *g = m->grads;
    const kernels_threads th = m->threads;
    const float *dfeat = m->dpooled;
    if (c->fc_norm) {
        memset(m->dpool_in, 0, sizeof(float) * n * D);
        layernorm_backward(m->dpool_in, g + m->fc_norm_w, g + m->fc_norm_b, m->dpooled,
                           m->pool_in, p + m->fc_norm_w, m->pool_stats, m->pool_stats + B, n, D,
                           1, m->prod, m->ones, th);
        dfeat = m->dpool_in;
    }
    const float *last = LAYER(m->x, c->num_layers, BT * D);
    memset(m->dx, 0, sizeof(float) * rows * D);
    if (c->global_pool == VIT_GLOBAL_POOL_TOKEN) {
        /* The class tokens alone (T rows apart). */
        if (m->norm_w != NONE)
            layernorm_backward(m->dx, g + m->norm_w, g + m->norm_b, dfeat, last, p + m->norm_w,
                               m->fin_stats, m->fin_stats + BT, n, D, (size_t)T, m->prod, m->ones,
                               th);
        else
            for (int b = 0; b < n; b++)
                memcpy(m->dx + (size_t)b * T * D, dfeat + (size_t)b * D, sizeof(float) * D);
    } else {
        /* d(tokens): the class token's part of [class ‖ mean], and the
         * mean's gradient over the patch tokens. */
        float *dtok = m->norm_w != NONE ? m->dtmp : m->dx;
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
        if (m->norm_w != NONE)
            layernorm_backward(m->dx, g + m->norm_w, g + m->norm_b, dtok, last, p + m->norm_w,
                               m->fin_stats, m->fin_stats + BT, rows, D, 1, m->prod, m->ones, th);
    }
}

/* Encoder block l backward: m->dx holds d(its output) on entry, d(its
 * input) on return; its parameters' gradients are written. */
static void block_backward(vit_train_model *m, int n, int l) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, M = c->mlp_size, T = m->num_tokens, H = c->num_heads;
    const int rows = n * T, B = m->max_batch;
    const size_t BT = (size_t)B * T;
    const float *p = m->params;
    float *g = m->grads;
    const kernels_threads th = m->threads;
    const block_offsets *o = &m->blocks[l];
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
        layer_scale_add_backward(m->dbranch, g + o->ls2, m->dx, LAYER(m->br2, l, BT * D),
                                 p + o->ls2, rows, D, m->prod, m->ones, th);
        dmlp = m->dbranch;
    }
    matmul_backward(m->dhid, g + o->fc2_w, g + o->fc2_b, dmlp, act, p + o->fc2_w, m->ones,
                    rows, M, D, m->dscores, th);
    if (c->act == VIT_ACT_QUICK_GELU) quick_gelu_backward(m->dhid, hid, m->dhid, (size_t)rows * M, th);
    else gelu_backward(m->dhid, hid, m->dhid, (size_t)rows * M, th);
    matmul_backward(m->dtmp, g + o->fc1_w, g + o->fc1_b, m->dhid, ln2, p + o->fc1_w, m->ones,
                    rows, D, M, m->dscores, th);
    layernorm_backward(m->dx, g + o->ln2_w, g + o->ln2_b, m->dtmp, xmid, p + o->ln2_w, mean2,
                       rstd2, rows, D, 1, m->prod, m->ones, th);
    /* Attention: dx is now d(xmid) = d(block input) through the residual. */
    const float *dproj = m->dx;
    if (c->layer_scale) {
        layer_scale_add_backward(m->dbranch, g + o->ls1, m->dx, LAYER(m->br1, l, BT * D),
                                 p + o->ls1, rows, D, m->prod, m->ones, th);
        dproj = m->dbranch;
    }
    matmul_backward(m->dtmp, g + o->proj_w, g + o->proj_b, dproj, attn, p + o->proj_w,
                    m->ones, rows, D, D, m->dscores, th);
    attention_backward(m->dqkv, m->dscores, m->dtmp, qkv, probs, n, T, D, H, th);
    if (c->qk_norm) {
        const float *qk_mean = LAYER(m->qk_stats, l, BT * 2 * H * 2), *qk_rstd = qk_mean + BT * 2 * H;
        qk_norm_backward(m->dqkv, g + o->q_norm_w, g + o->q_norm_b, g + o->k_norm_w,
                         g + o->k_norm_b, LAYER(m->qk_raw, l, BT * 2 * D), p + o->q_norm_w,
                         p + o->k_norm_w, qk_mean, qk_rstd, rows, D, H, m->prod, m->sums,
                         m->ones, th);
    }
    matmul_backward(m->dtmp, g + o->qkv_w, grad(m, o->qkv_b), m->dqkv, ln1, p + o->qkv_w,
                    m->ones, rows, D, 3 * D, m->dscores, th);
    layernorm_backward(m->dx, g + o->ln1_w, g + o->ln1_b, m->dtmp, x, p + o->ln1_w, mean1,
                       rstd1, rows, D, 1, m->prod, m->ones, th);
}

/* Backward from m->dlogits through the head, fc_norm, pooling and final
 * norm (filling m->dx, the gradient of the last block's output) and, with
 * full, through every block and the embedding. */
static void backward(vit_train_model *m, int n, int full) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, T = m->num_tokens;
    const int C = c->num_classes, rows = n * T, B = m->max_batch, PS = m->pooled_size;
    const size_t BT = (size_t)B * T;
    const float *p = m->params;
    float *g = m->grads;
    const kernels_threads th = m->threads;

    matmul_backward(m->dpooled, g + m->head_w, g + m->head_b, m->dlogits, m->pooled,
                    p + m->head_w, m->ones, n, PS, C, m->dscores, th);
    if (!full) return;
    pool_backward(m, n);
    for (int l = c->num_layers - 1; l >= 0; l--) block_backward(m, n, l);
    if (c->pre_norm) {
        /* d(embedding) through norm_pre into dtmp; dx is then free to gather in. */
        memset(m->dtmp, 0, sizeof(float) * rows * D);
        layernorm_backward(m->dtmp, g + m->norm_pre_w, g + m->norm_pre_b, m->dx, m->emb,
                           p + m->norm_pre_w, m->pre_stats, m->pre_stats + BT, rows, D, 1,
                           m->prod, m->ones, th);
        embed_backward(m, n, m->dtmp, m->dx);
    } else {
        embed_backward(m, n, m->dx, m->dtmp);
    }
}

base_status vit_train_step_grads_part(vit_train_model *m, const float *images, const int *labels,
                                     int n, int total, float label_smoothing, float *loss,
                                     int *correct, base_error *err) {
    base_status s = check_batch(m, labels, n, err);
    if (s != BASE_OK) return s;
    if (total < n) return base_error_set(err, BASE_E_ARG, "%d images of a batch of %d", n, total);
    forward(m, images, n);
    int hits;
    const float value = cross_entropy(m->logits, labels, n, total, m->config.num_classes,
                                      label_smoothing, m->dlogits, &hits);
    backward(m, n, 1);
    if (loss) *loss = value;
    if (correct) *correct = hits;
    return BASE_OK;
}

base_status vit_train_step_grads(vit_train_model *m, const float *images, const int *labels, int n,
                                float label_smoothing, float *loss, int *correct, base_error *err) {
    return vit_train_step_grads_part(m, images, labels, n, n, label_smoothing, loss, correct, err);
}

base_status vit_train_head_grads_part(vit_train_model *m, const float *features, const int *labels,
                                     int n, int total, float label_smoothing, float *loss,
                                     int *correct, base_error *err) {
    base_status s = check_batch(m, labels, n, err);
    if (s != BASE_OK) return s;
    if (total < n) return base_error_set(err, BASE_E_ARG, "%d images of a batch of %d", n, total);
    const int PS = m->pooled_size, C = m->config.num_classes;
    memcpy(m->pooled, features, sizeof(float) * n * PS);
    vit_head_forward(&m->view, m->pooled, PS, n, m->logits, m->threads);
    int hits;
    const float value =
        cross_entropy(m->logits, labels, n, total, C, label_smoothing, m->dlogits, &hits);
    backward(m, n, 0);
    if (loss) *loss = value;
    if (correct) *correct = hits;
    return BASE_OK;
}

base_status vit_train_head_forward(vit_train_model *m, const float *features, int n,
                                  float *logits, base_error *err) {
    if (n < 1 || n > m->max_batch)
        return base_error_set(err, BASE_E_ARG, "%d images for a batch of at most %d", n, m->max_batch);
    const int PS = m->pooled_size;
    memcpy(m->pooled, features, sizeof(float) * n * PS);
    vit_head_forward(&m->view, m->pooled, PS, n, logits, m->threads);
    return BASE_OK;
}

base_status vit_train_head_grads(vit_train_model *m, const float *features, const int *labels,
                                int n, float label_smoothing, float *loss, int *correct,
                                base_error *err) {
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

base_status vit_adamw_create(const vit_train_model *model, const vit_adamw_params *hyper,
                            vit_adamw **out, base_error *err) {
    *out = NULL;
    vit_adamw *opt = calloc(1, sizeof *opt);
    if (!opt) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    opt->hyper = *hyper;
    opt->n = model->num_params;
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

/* The Hugging Face DINOv2 name of a training tensor (timm name), for a
 * model whose head reads [class ‖ mean] (Dinov2ForImageClassification; no
 * timm spelling), as the loader's layout table spells it
 * (weights_layout_spell): into out, with *split set when the tensor is
 * timm's fused qkv, written as query, key and value (part 0..2 names each).
 * Every tensor such a model trains has a spelling (train_unsupported). */
static void dinov2_name(const vit_train_model *m, const char *timm, int part, char *out,
                        size_t size, int *split) {
    const char *prefix = m->num_reg ? "dinov2_with_registers." : "dinov2.";
    *split = weights_layout_spell(WEIGHTS_LAYOUT_HF_DINOV2, prefix, timm, part, out, size) == 1;
}

/* The model's tensors as the file stores them, into tensors (returns how
 * many): timm's, a grey patch kernel folded to RGB (into folded), or with
 * a [class ‖ mean] head the Hugging Face DINOv2 names (into names), its
 * fused qkv as query, key and value. */
static size_t file_tensors(const vit_train_model *m, weights_tensor *tensors, char (*names)[96],
                           float *folded) {
    const vit_config *c = &m->config;
    const int fold = c->num_channels == 1, dinov2 = c->global_pool == VIT_GLOBAL_POOL_TOKEN_AVG;
    const size_t D = (size_t)c->hidden_size, PP = (size_t)c->patch_size * c->patch_size;
    /* ITU-R 601-2 luma, the weights of PIL's convert('L'). */
    static const float LUMA[3] = {0.299f, 0.587f, 0.114f};
    size_t count = 0;
    for (size_t i = 0; i < m->num_tensors; i++) {
        const vit_train_tensor *t = &m->tensors[i];
        weights_tensor *w = &tensors[count++];
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
        if (!dinov2) continue;
        int split;
        dinov2_name(m, t->name, 0, names[count - 1], sizeof *names, &split);
        w->name = names[count - 1];
        if (!split) continue;
        /* rows [q; k; v] of the fused tensor, a third each */
        const weights_tensor whole = *w;
        for (int part = 0; part < 3; part++) {
            weights_tensor *q = part ? &tensors[count++] : w;
            *q = whole;
            dinov2_name(m, t->name, part, names[count - 1], sizeof *names, &split);
            q->name = names[count - 1];
            q->shape[0] = whole.shape[0] / 3;
            q->numel = whole.numel / 3;
            q->nbytes = whole.nbytes / 3;
            q->data = (const float *)whole.data + (size_t)part * q->numel;
        }
    }
    return count;
}

base_status vit_train_save(const vit_train_model *m, const char *path, const char *const *labels,
                          const data_preprocess *pre, const weights_tensor *extra,
                          size_t num_extra, const char *const *meta_keys,
                          const char *const *meta_values, size_t num_meta, base_error *err) {
    const vit_config *c = &m->config;
    const int fold = c->num_channels == 1;
    const size_t D = (size_t)c->hidden_size, PP = (size_t)c->patch_size * c->patch_size;
    /* The [class ‖ mean] head has only the Hugging Face DINOv2 spelling,
     * whose Q, K and V are three tensors: up to 3 per training tensor. */
    const int dinov2 = c->global_pool == VIT_GLOBAL_POOL_TOKEN_AVG;
    const size_t max_out = m->num_tensors * (dinov2 ? 3 : 1);
    weights_tensor *tensors = calloc(max_out + num_extra, sizeof *tensors);
    char(*names)[96] = dinov2 ? calloc(max_out, sizeof *names) : NULL;
    float *folded = fold ? malloc(D * 3 * PP * sizeof(float)) : NULL;
    const char **keys = calloc(num_meta + 2, sizeof *keys), **values = calloc(num_meta + 2, sizeof *values);
    char *config = config_json(m, fold ? 3 : c->num_channels, labels);
    char *preprocessor = pre ? data_preprocess_to_json(pre) : NULL;
    base_status status;
    if (!tensors || (dinov2 && !names) || (fold && !folded) || !keys || !values || !config ||
        (pre && !preprocessor)) {
        status = base_error_set(err, BASE_E_NOMEM, "out of memory");
        goto done;
    }
    const size_t count = file_tensors(m, tensors, names, folded);
    for (size_t i = 0; i < num_extra; i++) tensors[count + i] = extra[i];
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
    status = weights_write(path, tensors, count + num_extra, keys, values, n_meta, err);
done:
    free(tensors);
    free(names);
    free(folded);
    free(keys);
    free(values);
    free(config);
    free(preprocessor);
    return status;
}
