/* The forward pass. One readable sequence of kernel calls (kernels.h) over
 * buffers the context owns; what stays here is the batch scheduling: whole
 * images per thread, or one image split over all threads. Nothing here
 * allocates. */
/* madvise and MADV_HUGEPAGE (Linux) beside the project's POSIX. */
#define _DEFAULT_SOURCE
#include "vit_internal.h"

#include <math.h>
#include <stdint.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels.h"
#include "kernels_parallel.h"
#include "vit_block.h"
#include "vit_inspect.h"
#include "patching.h"

struct vit_context {
    const vit_model *model;
    int max_batch, image_size, grid_h, grid_w, num_patches, num_tokens, num_threads;
    /* Attention splits each head's queries into blocks of this many rows:
     * when all threads share one image (split), and when a thread runs
     * whole images on its own (solo). Any split gives the same bits
     * (kernels.h attention_forward). */
    int split_query_rows, solo_query_rows;
    /* Position embedding of every token [T, D]: the model's rows (resampled
     * to this grid when it differs), zero for prefix tokens without one. */
    float *pos_embed;
    float *x;         /* [B*T, D] residual stream */
    float *normed;    /* [B*T, D] LayerNorm output */
    float *qkv;       /* [B*T, 3D] */
    float *attn;      /* [B*T, D] attention output before projection */
    float *hidden;    /* [B*T, M] MLP hidden */
    float *cols;      /* [B*Np, C*P*P] im2col */
    float *patches;   /* [B*Np, D] patch embeddings */
    float *scores;    /* [threads, scores_floats()] attention scratch: packed K and V, probabilities */
    float *pooled;    /* [B, pool_stride] what the head reads, per image */
    int pool_stride;  /* floats per image in pooled: vit_config_pooled_size, 2D distilled */
    /* Quantised inputs of int8 layers and their scales, one slot per
     * image run at once (NULL for a float model). */
    void *qinp;
    float *qscale;
    size_t qinp_slot_bytes, qscale_slot;
    void *binp; /* a bf16 layer's inputs rounded to bf16, per slot */
    size_t binp_slot_bytes;
    /* Capture destinations, [kind][layer + 1]: for tokens index 0 is after
     * the embedding and l + 1 after block l; attention and keys use l + 1. */
    float **captures;
    void *arena; /* every float buffer above, one allocation (context_arena) */
    size_t arena_bytes;
    double *profile; /* per-stage seconds, or NULL */
};

/* Stage timing of one forward pass; profile NULL when not timing (and on all
 * threads but one when images run in parallel). */
typedef struct stage_clock {
    double *profile;
    double start;
} stage_clock;

const char *vit_stage_name(vit_stage stage) {
    static const char *const NAMES[VIT_STAGE_COUNT] = {
        "patch embedding", "layer norm", "qkv projection", "attention", "output projection",
        "mlp fc1", "gelu", "mlp fc2", "final norm + head"};
    return stage < VIT_STAGE_COUNT ? NAMES[stage] : "?";
}

void vit_context_profile(vit_context *ctx, double *seconds) { ctx->profile = seconds; }

/* Charges the time since the last mark to stage (when profiling). */
static void mark(stage_clock *clock, vit_stage stage) {
    if (!clock->profile) return;
    const double now = omp_get_wtime();
    clock->profile[stage] += now - clock->start;
    clock->start = now;
}

/* Attention scratch of one thread, for the larger of the two query blocks. */
static size_t scores_floats(const vit_context *ctx) {
    const vit_config *c = &ctx->model->config;
    const int T = ctx->num_tokens, D = c->hidden_size, H = c->num_heads;
    const size_t solo = attention_scratch_floats(T, D, H, ctx->solo_query_rows);
    const size_t split = attention_scratch_floats(T, D, H, ctx->split_query_rows);
    return solo > split ? solo : split;
}

/* Query rows of an attention task when the threads share one image: enough
 * tasks to balance them, four whole 12-row AVX-512 tiles. */
#define SPLIT_QUERY_ROWS 48

/* The context's float buffers (*bufs[i] gets floats[i], 0: NULL) carved,
 * 64-byte aligned and zeroed, from one allocation: in 2 MiB pages where the
 * kernel allows (transparent huge pages in madvise mode), as the packed
 * weights are. Separately, their 4 KiB page faults were most of a
 * one-shot classify's context creation on the VMs here (one per 1024
 * floats, ~2.5 MiB for ViT-tiny at batch 1). Leaves every pointer NULL
 * when out of memory. */
static void context_arena(vit_context *ctx, float **const *bufs, const size_t *floats, size_t n) {
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += (floats[i] * sizeof(float) + 63) / 64 * 64;
    const size_t huge = (size_t)2 << 20;
    void *arena = NULL;
    if (bytes >= huge / 2 && posix_memalign(&arena, huge, (bytes + huge - 1) / huge * huge) == 0) {
#ifdef MADV_HUGEPAGE
        madvise(arena, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE);
#endif
    } else if (!(arena = aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64))) {
        arena = NULL;
    }
    ctx->arena = arena;
    ctx->arena_bytes = bytes;
    if (arena) memset(arena, 0, bytes);
    char *at = arena;
    for (size_t i = 0; i < n; i++) {
        *bufs[i] = arena && floats[i] ? (float *)at : NULL;
        at += (floats[i] * sizeof(float) + 63) / 64 * 64;
    }
}

/* Every buffer of the context; 0 when one could not be had. */
static int alloc_buffers(vit_context *ctx) {
    const vit_model *model = ctx->model;
    const vit_config *c = &model->config;
    const int max_batch = ctx->max_batch;
    const size_t B = (size_t)max_batch, T = (size_t)ctx->num_tokens, D = (size_t)c->hidden_size;
    const size_t M = (size_t)c->mlp_size, Np = (size_t)ctx->num_patches;
    const size_t K = (size_t)c->num_channels * c->patch_size * c->patch_size;
    ctx->qscale_slot = T * (size_t)vit_model_int8_groups(model);
    const size_t slots = (size_t)(max_batch < ctx->num_threads ? max_batch : ctx->num_threads);
    if (ctx->qscale_slot)
        ctx->qinp_slot_bytes = (kernels_qinp_bytes((int)T, (int)(M > D ? M : D)) + 63) / 64 * 64;
    if (vit_model_has_bf16(model))
        ctx->binp_slot_bytes = (kernels_binp_bytes((int)T, (int)(M > D ? M : D)) + 63) / 64 * 64;
    ctx->pool_stride = c->distilled ? 2 * (int)D : vit_config_pooled_size(c);
    float *qinp, *binp;
    float **bufs[] = {&ctx->x,    &ctx->normed,  &ctx->qkv,    &ctx->attn,   &ctx->hidden,
                      &ctx->cols, &ctx->patches, &ctx->scores, &ctx->pooled, &ctx->pos_embed,
                      &qinp,      &ctx->qscale,  &binp};
    const size_t floats[] = {B * T * D, B * T * D, B * T * 3 * D, B * T * D, B * T * M, B * Np * K,
                             B * Np * D, (size_t)ctx->num_threads * scores_floats(ctx),
                             B * (size_t)ctx->pool_stride, T * D,
                             ctx->qscale_slot ? slots * ctx->qinp_slot_bytes / sizeof(float) : 0,
                             slots * ctx->qscale_slot, slots * ctx->binp_slot_bytes / sizeof(float)};
    context_arena(ctx, bufs, floats, sizeof floats / sizeof *floats);
    ctx->qinp = qinp;
    ctx->binp = binp;
    ctx->captures =
        calloc((size_t)VIT_CAPTURE_KIND_COUNT * (c->num_layers + 1), sizeof *ctx->captures);
    const int int8_missing = ctx->qscale_slot && (!ctx->qinp || !ctx->qscale);
    const int bf16_missing = ctx->binp_slot_bytes && !ctx->binp;
    return !int8_missing && !bf16_missing && ctx->x && ctx->normed && ctx->qkv && ctx->attn && ctx->hidden &&
           ctx->cols && ctx->patches && ctx->scores && ctx->pooled && ctx->captures &&
           ctx->pos_embed;
}

/* The context's position row of every token: prefix tokens with a row
 * (the first pos_embed_prefix) get it; the others (registers,
 * no_embed_class) stay zero. Only the patch positions are resampled at
 * another grid. BASE_OK, or BASE_E_NOMEM. */
static base_status fill_pos_embed(vit_context *ctx) {
    const vit_model *model = ctx->model;
    const vit_config *c = &model->config;
    const size_t D = (size_t)c->hidden_size, Np = (size_t)ctx->num_patches;
    const int native_grid = c->pos_embed_grid, pos_prefix = c->pos_embed_prefix;
    memcpy(ctx->pos_embed, model->pos_embed, sizeof(float) * (size_t)pos_prefix * D);
    float *patch_pos = ctx->pos_embed + (size_t)c->num_prefix_tokens * D;
    const float *model_patch_pos = model->pos_embed + (size_t)pos_prefix * D;
    if (ctx->grid_h == native_grid) {
        memcpy(patch_pos, model_patch_pos, sizeof(float) * Np * D);
        return BASE_OK;
    }
    return patching_resample_pos_embed(model_patch_pos, 0, native_grid, native_grid, (int)D,
                                       patch_pos, ctx->grid_h, ctx->grid_w, c->pos_embed_antialias);
}

/* An explicit thread count, 0: one per processor the process may use (a
 * property of the machine, not the process's OpenMP settings). */
int vit_threads_or_procs(int threads) { return threads > 0 ? threads : omp_get_num_procs(); }

base_status vit_context_create(const vit_model *model, int max_batch, int image_size, int threads,
                              vit_context **out, base_error *err) {
    *out = NULL;
    const vit_config *c = &model->config;
    /* No kernels_check_blas: inference runs on vitc's own kernels, never
     * OpenBLAS, which training alone loads (base/base_blas.h). */
    if (max_batch <= 0 || max_batch > 4096)
        return base_error_set(err, BASE_E_ARG, "batch size %d is outside 1..4096", max_batch);
    if (threads < 0 || threads > 1024)
        return base_error_set(err, BASE_E_ARG, "thread count %d is outside 0..1024", threads);
    if (image_size == 0) image_size = c->image_size;
    if (image_size < c->patch_size || image_size > 8192)
        return base_error_set(err, BASE_E_ARG, "image size %d is outside %d..8192", image_size,
                             c->patch_size);
    /* The patch embedding would drop the pixels past the last whole patch
     * (as a strided convolution does): a 100-pixel input to a patch-16
     * model loses a 4-pixel border and gives a 6x6 grid without a word. */
    if (image_size % c->patch_size)
        return base_error_set(err, BASE_E_ARG,
                             "image size %d is not a multiple of the patch size %d (%d or %d are)",
                             image_size, c->patch_size, image_size / c->patch_size * c->patch_size,
                             (image_size / c->patch_size + 1) * c->patch_size);
    vit_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    ctx->model = model;
    ctx->max_batch = max_batch;
    ctx->image_size = image_size;
    ctx->grid_h = ctx->grid_w = patching_grid(image_size, c->patch_size);
    ctx->num_patches = ctx->grid_h * ctx->grid_w;
    ctx->num_tokens = c->num_prefix_tokens + ctx->num_patches;
    ctx->num_threads = vit_threads_or_procs(threads);
    /* Shared images: blocks of 48 query rows. Solo: whole heads (K and V
     * packed once per head) while the scores stay within 1 MiB, else the
     * most whole 48-row blocks that do. */
    const int scores_cap = 1 << 18, align = SPLIT_QUERY_ROWS;
    ctx->split_query_rows = align;
    ctx->solo_query_rows = ctx->num_tokens;
    if ((size_t)ctx->num_tokens * ctx->num_tokens > (size_t)scores_cap) {
        const int fit = scores_cap / ctx->num_tokens / align * align;
        ctx->solo_query_rows = fit > align ? fit : align; /* never below 48 rows */
    }

    if (!alloc_buffers(ctx)) {
        vit_context_free(ctx);
        return base_error_set(err, BASE_E_NOMEM, "out of memory for a batch of %d at %dx%d",
                             max_batch, image_size, image_size);
    }
    if (fill_pos_embed(ctx) != BASE_OK) {
        vit_context_free(ctx);
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    }
    *out = ctx;
    return BASE_OK;
}

void vit_context_free(vit_context *ctx) {
    if (!ctx) return;
    free(ctx->arena);
    free(ctx->captures);
    free(ctx);
}

int vit_context_image_size(const vit_context *ctx) { return ctx->image_size; }
int vit_context_num_tokens(const vit_context *ctx) { return ctx->num_tokens; }
int vit_context_threads(const vit_context *ctx) { return ctx->num_threads; }

base_status vit_context_capture(vit_context *ctx, vit_capture_kind kind, int layer, float *dst,
                               base_error *err) {
    const int layers = ctx->model->config.num_layers;
    const int lowest = kind == VIT_CAPTURE_TOKENS ? -1 : 0;
    if ((unsigned)kind >= VIT_CAPTURE_KIND_COUNT)
        return base_error_set(err, BASE_E_ARG, "unknown capture kind %d", (int)kind);
    if (layer < lowest || layer >= layers)
        return base_error_set(err, BASE_E_ARG, "layer %d is outside %d..%d", layer, lowest,
                             layers - 1);
    ctx->captures[(size_t)kind * (layers + 1) + (layer + 1)] = dst;
    return BASE_OK;
}

base_status vit_context_capture_tokens(vit_context *ctx, int layer, float *dst, base_error *err) {
    return vit_context_capture(ctx, VIT_CAPTURE_TOKENS, layer, dst, err);
}

static float *capture_slot(const vit_context *ctx, vit_capture_kind kind, int layer) {
    const int layers = ctx->model->config.num_layers;
    return ctx->captures[(size_t)kind * (layers + 1) + (layer + 1)];
}

void vit_softmax(float *values, int n) { softmax_forward(values, n); }

/* *dst = weight [rows, cols] packed (NULL when weight is: an int8 layer),
 * mapped from a packed file when it holds it (vit_packed_fmatrix). */
static base_status pack_linear(vit_model *m, const char *name, kernels_fmatrix **dst,
                              const float *weight, int rows, int cols, base_error *err) {
    *dst = NULL;
    if (!weight) return BASE_OK;
    base_status s = vit_packed_fmatrix(m, name, rows, cols, dst, err);
    if (s != BASE_OK || *dst) return s;
    if (!(*dst = kernels_fmatrix_create(rows, cols)))
        return base_error_set(err, BASE_E_NOMEM, "out of memory packing the weights");
    kernels_fmatrix_set(*dst, 0, rows, 0, cols, weight, 1.0f);
#pragma omp atomic
    m->packed++;
    return BASE_OK;
}

/* The head as vitc's GEMM runs it (vit_internal.h): with a distillation
 * head both halves halved (exact) side by side, so one sum over [class ‖
 * distillation] gives the mean of the heads. */
static base_status pack_head(vit_model *m, base_error *err) {
    const vit_config *c = &m->config;
    const int C = c->num_classes, D = c->hidden_size;
    if (C == 0 || !m->head_w) return BASE_OK;
    if (!m->head_dist_w)
        return pack_linear(m, "head", &m->head_f, m->head_w, C, vit_config_pooled_size(c), err);
    if (!(m->head_bias = malloc(sizeof(float) * (size_t)C)))
        return base_error_set(err, BASE_E_NOMEM, "out of memory packing the weights");
    for (int j = 0; j < C; j++) m->head_bias[j] = 0.5f * (m->head_b[j] + m->head_dist_b[j]);
    base_status s = vit_packed_fmatrix(m, "head", C, 2 * D, &m->head_f, err);
    if (s != BASE_OK || m->head_f) return s;
    if (!(m->head_f = kernels_fmatrix_create(C, 2 * D)))
        return base_error_set(err, BASE_E_NOMEM, "out of memory packing the weights");
    kernels_fmatrix_set(m->head_f, 0, C, 0, D, m->head_w, 0.5f);
    kernels_fmatrix_set(m->head_f, 0, C, D, D, m->head_dist_w, 0.5f);
    m->packed++;
    return BASE_OK;
}

/* Block l's float32 layers packed (or mapped). */
static base_status pack_block(vit_model *m, int l, base_error *err) {
    const int D = m->config.hidden_size, M = m->config.mlp_size;
    vit_block *b = &m->blocks[l];
    kernels_fmatrix **dst[4] = {&b->qkv_f, &b->proj_f, &b->fc1_f, &b->fc2_f};
    const float *w[4] = {b->qkv_w, b->proj_w, b->fc1_w, b->fc2_w};
    const int rows[4] = {3 * D, D, M, D}, cols[4] = {D, D, D, M};
    static const char *const WHAT[4] = {"qkv", "proj", "fc1", "fc2"};
    base_status s = BASE_OK;
    for (int i = 0; i < 4 && s == BASE_OK; i++) {
        if (*dst[i]) continue; /* mapped by take_all (model.c take_mapped) */
        char name[48];
        snprintf(name, sizeof name, "blocks.%d.%s", l, WHAT[i]);
        s = pack_linear(m, name, dst[i], w[i], rows[i], cols[i], err);
    }
    return s;
}

base_status vit_model_pack(vit_model *m, int threads, base_error *err) {
    const vit_config *c = &m->config;
    base_status s = pack_linear(m, "patch", &m->patch_f, m->patch_w, c->hidden_size,
                               c->num_channels * c->patch_size * c->patch_size, err);
    if (s == BASE_OK) s = pack_head(m, err);
    if (s != BASE_OK) return s;
    if (m->packed_f) { /* mapped: no work worth starting the threads for */
        for (int l = 0; l < c->num_layers && s == BASE_OK; l++) s = pack_block(m, l, err);
        return s;
    }
    /* The layers side by side: packing reads and writes every weight once,
     * most of a large model's load time. Only out of memory can fail. */
    int ok = 1;
#pragma omp parallel for schedule(dynamic) reduction(&& : ok) num_threads(threads)
    for (int l = 0; l < c->num_layers; l++) {
        base_error mine;
        ok = pack_block(m, l, &mine) == BASE_OK && ok;
    }
    return ok ? BASE_OK : base_error_set(err, BASE_E_NOMEM, "out of memory packing the weights");
}

void vit_model_unpack(vit_model *m) {
    kernels_fmatrix_free(m->patch_f);
    kernels_fmatrix_free(m->head_f);
    free(m->head_bias);
    m->patch_f = m->head_f = NULL;
    m->head_bias = NULL;
    for (int l = 0; m->blocks && l < m->config.num_layers; l++) {
        vit_block *b = &m->blocks[l];
        kernels_fmatrix_free(b->qkv_f);
        kernels_fmatrix_free(b->proj_f);
        kernels_fmatrix_free(b->fc1_f);
        kernels_fmatrix_free(b->fc2_f);
        b->qkv_f = b->proj_f = b->fc1_f = b->fc2_f = NULL;
    }
}

/* One run of the encoder over `count` images: the images' activations live
 * in the buffer rows of image slot `slot` onward, while captures and pooled
 * outputs go to image index `first` of the batch. */
typedef struct encode_job {
    int first, count, slot, threads;
    float *scores; /* this job's attention scratch, per thread scores_floats() */
    stage_clock clock;
} encode_job;

/* Where the attention probabilities of block l go for the job's images
 * ([count, heads, T, T] from image `first`), or NULL when not captured. */
static float *captured_attention(const vit_context *ctx, const encode_job *job, int l) {
    float *dst = capture_slot(ctx, VIT_CAPTURE_ATTENTION, l);
    const size_t T = (size_t)ctx->num_tokens;
    return dst ? dst + (size_t)job->first * ctx->model->config.num_heads * T * T : NULL;
}

/* Copies the job's residual stream (tokens) or keys to a capture buffer. */
static void capture_rows(const vit_context *ctx, const encode_job *job, float *dst, int keys) {
    if (!dst) return;
    const int T = ctx->num_tokens, D = ctx->model->config.hidden_size;
    const size_t rows = (size_t)job->count * T;
    dst += (size_t)job->first * T * D;
    if (!keys) {
        memcpy(dst, ctx->x + (size_t)job->slot * T * D, sizeof(float) * rows * D);
        return;
    }
    const float *k = ctx->qkv + (size_t)job->slot * T * 3 * D + D;
    for (size_t r = 0; r < rows; r++) memcpy(dst + r * D, k + r * 3 * D, sizeof(float) * D);
}

void vit_embed_forward(const vit_model *m, const float *images, int count, int S,
                       const float *pos_embed, float *cols, float *patches, float *out,
                       kernels_threads th) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, C = c->num_channels, P = c->patch_size, grid = patching_grid(S, P);
    const int Np = grid * grid, T = c->num_prefix_tokens + Np, K = C * P * P;
    /* Inference's one-thread jobs run inside forward's per-image region (or
     * on the caller): PARALLEL_FOR then opens no region of its own. */
    PARALLEL_FOR(
        for (int b = 0; b < count; b++)
            patching_im2col(images + (size_t)b * C * S * S, C, S, S, P, cols + (size_t)b * Np * K););
    if (m->patch_f) {
        const kernels_epilogue bias = {.bias = m->patch_b};
        kernels_linear(patches, D, cols, K, count * Np, m->patch_f, &bias, th);
    } else { /* training's plain weights */
        matmul_forward(patches, cols, m->patch_w, m->patch_b, count * Np, K, D, th);
    }
    embed_tokens_forward(out, patches, m->cls_token, m->dist_token, m->reg_tokens, pos_embed,
                         count, T, Np, D, th);
}

/* Patch embedding, prefix tokens and position embeddings into the job's
 * rows of ctx->x. */
static void embed(const vit_context *ctx, const encode_job *job, const float *images) {
    const vit_model *m = ctx->model;
    const vit_config *c = &m->config;
    const int D = c->hidden_size, T = ctx->num_tokens, Np = ctx->num_patches, S = ctx->image_size;
    const size_t K = (size_t)c->num_channels * c->patch_size * c->patch_size;
    vit_embed_forward(m, images + (size_t)job->first * c->num_channels * S * S, job->count, S,
                      ctx->pos_embed, ctx->cols + (size_t)job->slot * Np * K,
                      ctx->patches + (size_t)job->slot * Np * D, ctx->x + (size_t)job->slot * T * D,
                      kernels_threading(KERNELS_INFERENCE, job->threads, m->isa));
}

/* out = [residual + [gamma *]] (inp · weightᵀ + bias), with the MLP's
 * activation act in the epilogue (KERNELS_ACT_NONE: none): the int8
 * kernels when the layer is quantised (q), the bf16 ones when it is bf16
 * (h: its inputs rounded to bf16 per row first), vitc's GEMM when it is
 * packed (f), else OpenBLAS on the plain row-major weight w (training's). With
 * gamma, the int8 and plain paths write the unscaled branch into `branch`
 * first (training keeps it for the backward; inference passes its normed
 * rows, free then: the next norm refills them). */
static void block_linear(const vit_block_io *io, float *out, const float *residual,
                         const float *inp, const float *w, const kernels_fmatrix *f,
                         const kernels_qmatrix *q, const kernels_bmatrix *h, const float *bias,
                         const float *gamma,
                         float *branch, int rows, int in_dim, int out_dim, kernels_act act,
                         kernels_threads th) {
    const kernels_epilogue ep = {.bias = bias, .act = act, .residual = residual, .gamma = gamma};
    if (h) {
        bf16_round_forward(io->binp, inp, rows, in_dim, h, th);
        kernels_linear_bf16(out, out_dim, io->binp, rows, h, &ep, th);
    } else if (f) {
        kernels_linear(out, out_dim, inp, in_dim, rows, f, &ep, th);
    } else if (q) {
        quantize_forward(io->qinp, io->qscale, inp, rows, in_dim, q, th);
        if (gamma) {
            qmatmul_forward(branch, NULL, io->qinp, io->qscale, q, bias, act, rows, th);
            layer_scale_add_forward(out, branch, gamma, rows, out_dim, th);
        } else {
            qmatmul_forward(out, residual, io->qinp, io->qscale, q, bias, act, rows, th);
        }
    } else if (gamma) {
        matmul_forward(branch, inp, w, bias, rows, in_dim, out_dim, th);
        if (out != residual) memcpy(out, residual, sizeof(float) * rows * out_dim);
        layer_scale_add_forward(out, branch, gamma, rows, out_dim, th);
    } else if (residual) {
        residual_matmul_forward(out, residual, inp, w, bias, rows, in_dim, out_dim, th);
    } else {
        matmul_forward(out, inp, w, bias, rows, in_dim, out_dim, th);
        if (act != KERNELS_ACT_NONE) kernels_act_forward(out, out, (size_t)rows * out_dim, act, th);
    }
}

/* Charges the time since the last mark to stage, when io profiles. */
static void block_mark(vit_block_io *io, vit_stage stage) {
    stage_clock clock = {io->profile, io->clock};
    mark(&clock, stage);
    io->clock = clock.start;
}

/* Attention half of a block: io->mid = x + [ls1 *] proj(attention(qkv(ln1(x)))). */
static void block_attention(const vit_config *c, const vit_block *blk, int images, int T,
                            vit_block_io *io, kernels_threads th) {
    const int D = c->hidden_size, H = c->num_heads, rows = images * T;
    const float eps = c->layer_norm_eps;
    layernorm_forward(io->ln1, io->mean1, io->rstd1, io->x, blk->ln1_w, blk->ln1_b, rows, D, eps,
                      th);
    block_mark(io, VIT_STAGE_LAYER_NORM);
    block_linear(io, io->qkv, NULL, io->ln1, blk->qkv_w, blk->qkv_f, blk->qkv_q, blk->qkv_h, blk->qkv_b, NULL,
                 NULL, rows, D, 3 * D, KERNELS_ACT_NONE, th);
    if (blk->q_norm_w) {
        if (io->qk_raw) /* Q and K as they were, for the backward */
            for (int r = 0; r < rows; r++)
                memcpy(io->qk_raw + (size_t)r * 2 * D, io->qkv + (size_t)r * 3 * D,
                       sizeof(float) * 2 * D);
        qk_norm_forward(io->qkv, io->qk_mean, io->qk_rstd, rows, D, H, blk->q_norm_w,
                        blk->q_norm_b, blk->k_norm_w, blk->k_norm_b, eps, th);
    }
    block_mark(io, VIT_STAGE_QKV);
    attention_forward(io->attn, io->probs, io->qkv, images, T, D, H, io->query_rows, io->scores,
                      th);
    block_mark(io, VIT_STAGE_ATTENTION);
    block_linear(io, io->mid, io->x, io->attn, blk->proj_w, blk->proj_f, blk->proj_q, blk->proj_h, blk->proj_b,
                 blk->ls1, io->br1 ? io->br1 : io->ln1, rows, D, D, KERNELS_ACT_NONE, th);
    block_mark(io, VIT_STAGE_PROJECTION);
}

void vit_block_forward(const vit_config *c, const vit_block *blk, int images, int T,
                       vit_block_io *io, kernels_threads th) {
    const int D = c->hidden_size, M = c->mlp_size, rows = images * T;
    const kernels_act act = vit_kernels_act(c->act);
    block_attention(c, blk, images, T, io, th);
    layernorm_forward(io->ln2, io->mean2, io->rstd2, io->mid, blk->ln2_w, blk->ln2_b, rows, D,
                      c->layer_norm_eps, th);
    block_mark(io, VIT_STAGE_LAYER_NORM);
    /* The activation in fc1's epilogue (float32: the profile's gelu stage
     * is inside mlp fc1), or apart when its input is kept (training). */
    block_linear(io, io->hid, NULL, io->ln2, blk->fc1_w, blk->fc1_f, blk->fc1_q, blk->fc1_h, blk->fc1_b, NULL,
                 NULL, rows, D, M, io->act ? KERNELS_ACT_NONE : act, th);
    if (io->act) kernels_act_forward(io->act, io->hid, (size_t)rows * M, act, th);
    block_mark(io, VIT_STAGE_MLP_FC1);
    /* out = mid + [ls2 *] fc2(act(fc1(ln2(mid)))) */
    block_linear(io, io->out, io->mid, io->act ? io->act : io->hid, blk->fc2_w, blk->fc2_f,
                 blk->fc2_q, blk->fc2_h, blk->fc2_b, blk->ls2, io->br2 ? io->br2 : io->ln2, rows, M, D,
                 KERNELS_ACT_NONE, th);
    block_mark(io, VIT_STAGE_MLP_FC2);
}

/* The encoder blocks over the job's rows of ctx->x, with the threads th
 * says; inside a team (th.in_team) every thread of it calls this, and
 * thread 0 alone keeps the clock and copies captures (the kernels end with
 * a barrier, so what it copies is complete, and nothing writes it again
 * before thread 0 itself has passed the next barriers: qkv, which the keys
 * are copied from after the block, is next written after the next block's
 * first LayerNorm). */
static void encode_blocks(const vit_context *ctx, encode_job *job, kernels_threads th) {
    const vit_model *m = ctx->model;
    const vit_config *c = &m->config;
    const int D = c->hidden_size, M = c->mlp_size, T = ctx->num_tokens;
    const size_t slot = (size_t)job->slot;
    float *x = ctx->x + slot * T * D, *normed = ctx->normed + slot * T * D;
    const int lead = !th.in_team || omp_get_thread_num() == 0;
    vit_block_io io = {
        .x = x, .mid = x, .out = x, .ln1 = normed, .ln2 = normed,
        .qkv = ctx->qkv + slot * T * 3 * D, .attn = ctx->attn + slot * T * D,
        .hid = ctx->hidden + slot * T * M, .scores = job->scores,
        /* Attention: blocks of query rows when the threads share the images. */
        .query_rows = job->threads > 1 ? ctx->split_query_rows : ctx->solo_query_rows,
        .qinp = ctx->qinp ? (char *)ctx->qinp + slot * ctx->qinp_slot_bytes : NULL,
        .qscale = ctx->qscale ? ctx->qscale + slot * ctx->qscale_slot : NULL,
        .binp = ctx->binp ? (char *)ctx->binp + slot * ctx->binp_slot_bytes : NULL,
        .profile = lead ? job->clock.profile : NULL, .clock = job->clock.start};
    for (int l = 0; l < c->num_layers; l++) {
        io.probs = captured_attention(ctx, job, l);
        vit_block_forward(c, &m->blocks[l], job->count, T, &io, th);
        if (lead) {
            capture_rows(ctx, job, capture_slot(ctx, VIT_CAPTURE_KEYS, l), 1);
            capture_rows(ctx, job, capture_slot(ctx, VIT_CAPTURE_TOKENS, l), 0);
        }
    }
    if (lead) job->clock.start = io.clock;
}

/* The final norm of one token (identity for a model without one). */
static void final_norm_row(const vit_model *m, float *out, const float *token) {
    const int D = m->config.hidden_size;
    if (m->norm_w)
        layernorm_forward_row(out, NULL, NULL, token, m->norm_w, m->norm_b, D, m->config.layer_norm_eps);
    else if (out != token)
        memcpy(out, token, sizeof(float) * D);
}

_Static_assert((int)KERNELS_POOL_TOKEN == (int)VIT_GLOBAL_POOL_TOKEN &&
                   (int)KERNELS_POOL_AVG == (int)VIT_GLOBAL_POOL_AVG &&
                   (int)KERNELS_POOL_TOKEN_AVG == (int)VIT_GLOBAL_POOL_TOKEN_AVG,
               "pool_forward takes vit_global_pool's values");

/* What the head reads from one image's T tokens after the last block
 * (timm forward_head(pre_logits=True)): pool_forward's pooling (the
 * final-normed class token, distilled: and distillation token, 2D; the
 * mean of the patch tokens; or [class ‖ mean], DINOv2) of the final-normed
 * tokens, then fc_norm when the model has one. scratch: D floats. */
static void pool_image(const vit_model *m, const float *tokens, int T, float *out, float *scratch) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size;
    pool_forward(out, tokens, T, c->num_prefix_tokens, 1 + c->distilled, D,
                 (kernels_pool)c->global_pool, m->norm_w, m->norm_b, c->layer_norm_eps, scratch);
    if (m->fc_norm_w)
        layernorm_forward_row(out, NULL, NULL, out, m->fc_norm_w, m->fc_norm_b, D, c->layer_norm_eps);
}

/* Embedding, every encoder block, and the final norm of the prefix tokens
 * (into ctx->pooled) for the job's images. */
static void encode(const vit_context *ctx, encode_job *job, const float *images) {
    const vit_model *m = ctx->model;
    const vit_config *c = &m->config;
    const int D = c->hidden_size, T = ctx->num_tokens;
    const kernels_threads th = kernels_threading(KERNELS_INFERENCE, job->threads, m->isa);
    const float eps = c->layer_norm_eps;
    float *x = ctx->x + (size_t)job->slot * T * D;

    embed(ctx, job, images);
    if (m->norm_pre_w) /* CLIP's ln_pre, in place (a row-wise LayerNorm may be) */
        layernorm_forward(x, NULL, NULL, x, m->norm_pre_w, m->norm_pre_b, job->count * T, D, eps, th);
    capture_rows(ctx, job, capture_slot(ctx, VIT_CAPTURE_TOKENS, -1), 0);
    mark(&job->clock, VIT_STAGE_PATCH_EMBED);
    if (th.count > 1) {
        /* One image over all threads: one parallel region for all the
         * blocks, the kernels sharing their work inside it (about 7
         * barriers per block instead of 7 forks and joins). */
#pragma omp parallel num_threads(th.count)
        {
            kernels_threads team = th;
            team.in_team = 1;
            encode_blocks(ctx, job, team);
        }
    } else {
        encode_blocks(ctx, job, th);
    }
    /* What the head reads, per image (only the tokens it reads are normed). */
    for (int b = 0; b < job->count; b++)
        pool_image(m, x + (size_t)b * T * D, T, ctx->pooled + (size_t)(job->first + b) * ctx->pool_stride,
                   ctx->normed + (size_t)job->slot * T * D);
}

void vit_head_forward(const vit_model *m, const float *pooled, int stride, int batch, float *out,
                      kernels_threads th) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size;
    if (c->num_classes == 0) {
        for (int b = 0; b < batch; b++)
            memcpy(out + (size_t)b * D, pooled + (size_t)b * stride, sizeof(float) * D);
        return;
    }
    if (!m->head_f) { /* training's plain weights: rows stride apart, one per pooled row */
        matmul_forward(out, pooled, m->head_w, m->head_b, batch, stride, c->num_classes, th);
        return;
    }
    const kernels_epilogue bias = {.bias = m->head_bias ? m->head_bias : m->head_b};
    kernels_linear(out, c->num_classes, pooled, stride, batch, m->head_f, &bias, th);
}

base_status vit_forward_checked(vit_context *ctx, const float *images, int batch, int channels,
                               int height, int width, float *out, base_error *err) {
    const int C = ctx->model->config.num_channels, S = ctx->image_size;
    /* vit_forward reads C x S x S floats per image whatever it is given:
     * anything smaller would be read past its end. */
    if (channels != C || height != S || width != S)
        return base_error_set(err, BASE_E_SHAPE,
                             "images of %d x %dx%d given to a model context that takes %d x %dx%d",
                             channels, width, height, C, S, S);
    return vit_forward(ctx, images, batch, out, err);
}

base_status vit_forward(vit_context *ctx, const float *images, int batch, float *out,
                       base_error *err) {
    const vit_model *m = ctx->model;
    if (batch <= 0 || batch > ctx->max_batch)
        return base_error_set(err, BASE_E_ARG, "batch of %d images, the context holds 1..%d",
                             batch, ctx->max_batch);
    const int threads = ctx->num_threads;
    const double started = omp_get_wtime();

    /* With at least one image per thread, each thread runs whole images on
     * its own, single-threaded: no barrier between the ~100 steps of a
     * forward pass, and one image's activations stay in its core's cache.
     * Measured faster than splitting every step across threads from batch
     * 2 up (bench/README.md). Images left over run split as at batch 1.
     * An image's bits do not depend on this (kernels.h: every element of
     * vitc's GEMM is one fixed sum whatever the split or the rows beside
     * it), so its outputs do not depend on -b or -t. */
    const int parallel_images = threads > 1 ? batch / threads * threads : 0;
    if (parallel_images > 0) {
#pragma omp parallel num_threads(threads)
        {
            const int id = omp_get_thread_num();
            encode_job job = {.count = 1, .slot = id, .threads = 1,
                              .scores = ctx->scores + (size_t)id * scores_floats(ctx),
                              .clock = {id == 0 ? ctx->profile : NULL, started}};
#pragma omp for schedule(dynamic, 1)
            for (int b = 0; b < parallel_images; b++) {
                job.first = b;
                encode(ctx, &job, images);
            }
        }
    }
    stage_clock clock = {ctx->profile, omp_get_wtime()};
    for (int b = parallel_images; b < batch; b++) {
        encode_job job = {.first = b, .count = 1, .slot = 0, .threads = threads,
                          .scores = ctx->scores, .clock = clock};
        encode(ctx, &job, images);
        clock = job.clock;
    }
    vit_head_forward(m, ctx->pooled, ctx->pool_stride, batch, out,
         kernels_threading(KERNELS_INFERENCE, threads, m->isa));
    mark(&clock, VIT_STAGE_HEAD);
    return BASE_OK;
}

base_status vit_token_logits(const vit_model *model, const float *tokens, int n, int threads,
                            float *out, base_error *err) {
    const vit_config *c = &model->config;
    if (c->num_classes == 0 || !model->head_w)
        return base_error_set(err, BASE_E_ARG, "the model has no classifier head");
    if (c->global_pool == VIT_GLOBAL_POOL_TOKEN_AVG)
        return base_error_set(err, BASE_E_UNSUPPORTED, "the model's head reads [class token, mean of "
                             "patches], not one token");
    const int D = c->hidden_size;
    float *normed = kernels_alloc_floats((size_t)n * 2 * D);
    if (!normed) return base_error_set(err, BASE_E_NOMEM, "out of memory for %d tokens", n);
    /* Each token fills the class (and distillation) slot of a pooled row:
     * final norm, then fc_norm, as the pooled features get. */
    for (int i = 0; i < n; i++) {
        float *row = normed + (size_t)i * 2 * D;
        final_norm_row(model, row, tokens + (size_t)i * D);
        if (model->fc_norm_w)
            layernorm_forward_row(row, NULL, NULL, row, model->fc_norm_w, model->fc_norm_b, D,
                                  c->layer_norm_eps);
        memcpy(row + D, row, sizeof(float) * D);
    }
    vit_head_forward(model, normed, 2 * D, n, out,
         kernels_threading(KERNELS_INFERENCE, vit_threads_or_procs(threads), model->isa));
    free(normed);
    return BASE_OK;
}

base_status vit_patch_logits(const vit_model *model, const float *tokens, int num_tokens,
                            int threads, float *out, base_error *err) {
    const vit_config *c = &model->config;
    const int D = c->hidden_size, prefix = c->num_prefix_tokens, n = num_tokens - prefix;
    if (n < 1 || !tokens || !out)
        return base_error_set(err, BASE_E_ARG, "%d tokens hold no patch after %d prefix tokens",
                             num_tokens, prefix);
    if (c->global_pool != VIT_GLOBAL_POOL_TOKEN_AVG)
        return vit_token_logits(model, tokens + (size_t)prefix * D, n, threads, out, err);
    if (c->num_classes == 0 || !model->head_w)
        return base_error_set(err, BASE_E_ARG, "the model has no classifier head");
    float *rows = kernels_alloc_floats((size_t)n * 2 * D);
    if (!rows) return base_error_set(err, BASE_E_NOMEM, "out of memory for %d tokens", n);
    /* [class ‖ patch]: the same class half for every patch, the patch in the
     * mean's half; fc_norm (DINOv2 has none) exactly where pool_image puts it. */
    for (int i = 0; i < n; i++) {
        float *row = rows + (size_t)i * 2 * D;
        final_norm_row(model, row, tokens);
        if (model->fc_norm_w)
            layernorm_forward_row(row, NULL, NULL, row, model->fc_norm_w, model->fc_norm_b, D,
                                  c->layer_norm_eps);
        final_norm_row(model, row + D, tokens + (size_t)(prefix + i) * D);
    }
    vit_head_forward(model, rows, 2 * D, n, out,
         kernels_threading(KERNELS_INFERENCE, vit_threads_or_procs(threads), model->isa));
    free(rows);
    return BASE_OK;
}

base_status vit_pool_tokens(const vit_model *model, const float *tokens, int num_tokens,
                           vit_pool pool, int l2, float *out, float *scratch, base_error *err) {
    const vit_config *c = &model->config;
    const int D = c->hidden_size, prefix = c->num_prefix_tokens;
    if (num_tokens <= prefix || ((pool == VIT_POOL_MEAN || pool == VIT_POOL_MODEL) && !scratch) ||
        (pool != VIT_POOL_CLS && pool != VIT_POOL_MEAN && pool != VIT_POOL_NONE &&
         pool != VIT_POOL_MODEL))
        return base_error_set(err, BASE_E_ARG, "cannot pool %d tokens this way", num_tokens);
    if (pool == VIT_POOL_CLS && c->no_class_token)
        return base_error_set(err, BASE_E_ARG, "the model has no class token");
    int rows = 1, width = D;
    if (pool == VIT_POOL_CLS) {
        final_norm_row(model, out, tokens);
    } else if (pool == VIT_POOL_NONE) {
        rows = num_tokens;
        for (int t = 0; t < num_tokens; t++)
            final_norm_row(model, out + (size_t)t * D, tokens + (size_t)t * D);
    } else if (pool == VIT_POOL_MEAN) {
        pool_forward(out, tokens, num_tokens, prefix, 1, D, KERNELS_POOL_AVG, model->norm_w,
                     model->norm_b, c->layer_norm_eps, scratch);
        if (model->fc_norm_w)
            layernorm_forward_row(out, NULL, NULL, out, model->fc_norm_w, model->fc_norm_b, D,
                                  c->layer_norm_eps);
    } else {
        /* The model's own: pool_image without the distillation token. */
        width = vit_config_pooled_size(c);
        if (c->distilled) {
            final_norm_row(model, out, tokens);
        } else {
            pool_image(model, tokens, num_tokens, out, scratch);
        }
    }
    if (l2) vit_l2_normalize_rows(out, rows, width);
    return BASE_OK;
}

int vit_top_k(const float *values, int n, int k, int *indices) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    int count = 0;
    for (int j = 0; j < n; j++) {
        /* Strict comparisons keep the lower index first among ties. */
        if (count == k && !(values[j] > values[indices[k - 1]])) continue;
        int pos = count < k ? count++ : k - 1;
        while (pos > 0 && values[j] > values[indices[pos - 1]]) {
            indices[pos] = indices[pos - 1];
            pos--;
        }
        indices[pos] = j;
    }
    return k;
}
