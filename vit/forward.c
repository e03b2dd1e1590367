/* The forward pass. One readable sequence of steps over buffers the context
 * owns; GEMMs go to OpenBLAS, row-wise work is split across OpenMP threads.
 * Nothing here allocates. */
#include "vit_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "patching.h"
#include "vit_math.h"

struct vit_context {
    const vit_model *model;
    int max_batch, image_size, grid_h, grid_w, num_patches, num_tokens, num_threads;
    /* Attention splits each head's queries into this many blocks: when all
     * threads share one image (split), and when a thread runs whole images
     * on its own (solo). */
    int split_query_blocks, solo_query_blocks;
    const float *pos_embed; /* the model's, or pos_resampled */
    float *pos_resampled;
    float *x;         /* [B*T, D] residual stream */
    float *normed;    /* [B*T, D] LayerNorm output */
    float *qkv;       /* [B*T, 3D] */
    float *attn;      /* [B*T, D] attention output before projection */
    float *hidden;    /* [B*T, M] MLP hidden */
    float *cols;      /* [B*Np, C*P*P] im2col */
    float *patches;   /* [B*Np, D] patch embeddings */
    float *scores;    /* [threads, scores_floats()] attention probabilities */
    float *pooled;    /* [B, prefix, D] normed prefix tokens */
    /* Capture destinations, [kind][layer + 1]: for tokens index 0 is after
     * the embedding and l + 1 after block l; attention and keys use l + 1. */
    float **captures;
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

/* Scores scratch of one thread: the larger of the two query blocks x T. */
static size_t scores_floats(const vit_context *ctx) {
    const int fewest = ctx->solo_query_blocks < ctx->split_query_blocks ? ctx->solo_query_blocks
                                                                        : ctx->split_query_blocks;
    return (size_t)((ctx->num_tokens + fewest - 1) / fewest) * ctx->num_tokens;
}

static float *alloc_floats(size_t count) {
    /* 64-byte alignment: whole AVX-512 vectors for every row start we can. */
    size_t bytes = ((count ? count : 1) * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

vit_status vit_context_create(const vit_model *model, int max_batch, int image_size,
                              vit_context **out, vit_error *err) {
    *out = NULL;
    const vit_config *c = &model->config;
    if (max_batch <= 0 || max_batch > 4096)
        return vit_error_set(err, VIT_E_ARG, "batch size %d is outside 1..4096", max_batch);
    if (image_size == 0) image_size = c->image_size;
    if (image_size < c->patch_size || image_size > 8192)
        return vit_error_set(err, VIT_E_ARG, "image size %d is outside %d..8192", image_size,
                             c->patch_size);
    vit_context *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return vit_error_set(err, VIT_E_NOMEM, "out of memory");
    ctx->model = model;
    ctx->max_batch = max_batch;
    ctx->image_size = image_size;
    ctx->grid_h = ctx->grid_w = patching_grid(image_size, c->patch_size);
    ctx->num_patches = ctx->grid_h * ctx->grid_w;
    ctx->num_tokens = c->num_prefix_tokens + ctx->num_patches;
    ctx->num_threads = omp_get_max_threads();
    /* Shared images: blocks of about 48 query rows, enough tasks to balance
     * the threads and large enough for an efficient GEMM. Solo: whole heads
     * (fewer, larger GEMMs) while the scores stay within 1 MiB. */
    const size_t tokens = (size_t)ctx->num_tokens, scores_cap = (size_t)1 << 18;
    ctx->split_query_blocks = (ctx->num_tokens + 47) / 48;
    ctx->solo_query_blocks = (int)((tokens * tokens + scores_cap - 1) / scores_cap);
    if (ctx->solo_query_blocks > ctx->split_query_blocks)
        ctx->solo_query_blocks = ctx->split_query_blocks; /* never below 48 rows */

    const size_t B = (size_t)max_batch, T = (size_t)ctx->num_tokens, D = (size_t)c->hidden_size;
    const size_t M = (size_t)c->mlp_size, Np = (size_t)ctx->num_patches;
    const size_t K = (size_t)c->num_channels * c->patch_size * c->patch_size;
    ctx->x = alloc_floats(B * T * D);
    ctx->normed = alloc_floats(B * T * D);
    ctx->qkv = alloc_floats(B * T * 3 * D);
    ctx->attn = alloc_floats(B * T * D);
    ctx->hidden = alloc_floats(B * T * M);
    ctx->cols = alloc_floats(B * Np * K);
    ctx->patches = alloc_floats(B * Np * D);
    ctx->scores = alloc_floats((size_t)ctx->num_threads * scores_floats(ctx));
    ctx->pooled = alloc_floats(B * (size_t)c->num_prefix_tokens * D);
    ctx->captures =
        calloc((size_t)VIT_CAPTURE_KIND_COUNT * (c->num_layers + 1), sizeof *ctx->captures);
    if (!ctx->x || !ctx->normed || !ctx->qkv || !ctx->attn || !ctx->hidden || !ctx->cols ||
        !ctx->patches || !ctx->scores || !ctx->pooled || !ctx->captures) {
        vit_context_free(ctx);
        return vit_error_set(err, VIT_E_NOMEM, "out of memory for a batch of %d at %dx%d",
                             max_batch, image_size, image_size);
    }

    const int native_grid = c->image_size / c->patch_size;
    if (ctx->grid_h == native_grid) {
        ctx->pos_embed = model->pos_embed;
    } else {
        ctx->pos_resampled = alloc_floats(T * D);
        if (!ctx->pos_resampled ||
            patching_resample_pos_embed(model->pos_embed, c->num_prefix_tokens, native_grid,
                                        native_grid, (int)D, ctx->pos_resampled, ctx->grid_h,
                                        ctx->grid_w, c->pos_embed_antialias) != VIT_OK) {
            vit_context_free(ctx);
            return vit_error_set(err, VIT_E_NOMEM, "out of memory");
        }
        ctx->pos_embed = ctx->pos_resampled;
    }
    *out = ctx;
    return VIT_OK;
}

void vit_context_free(vit_context *ctx) {
    if (!ctx) return;
    free(ctx->x);
    free(ctx->normed);
    free(ctx->qkv);
    free(ctx->attn);
    free(ctx->hidden);
    free(ctx->cols);
    free(ctx->patches);
    free(ctx->scores);
    free(ctx->pooled);
    free(ctx->pos_resampled);
    free(ctx->captures);
    free(ctx);
}

int vit_context_image_size(const vit_context *ctx) { return ctx->image_size; }
int vit_context_num_tokens(const vit_context *ctx) { return ctx->num_tokens; }

vit_status vit_context_capture(vit_context *ctx, vit_capture_kind kind, int layer, float *dst,
                               vit_error *err) {
    const int layers = ctx->model->config.num_layers;
    const int lowest = kind == VIT_CAPTURE_TOKENS ? -1 : 0;
    if ((unsigned)kind >= VIT_CAPTURE_KIND_COUNT)
        return vit_error_set(err, VIT_E_ARG, "unknown capture kind %d", (int)kind);
    if (layer < lowest || layer >= layers)
        return vit_error_set(err, VIT_E_ARG, "layer %d is outside %d..%d", layer, lowest,
                             layers - 1);
    ctx->captures[(size_t)kind * (layers + 1) + (layer + 1)] = dst;
    return VIT_OK;
}

vit_status vit_context_capture_tokens(vit_context *ctx, int layer, float *dst, vit_error *err) {
    return vit_context_capture(ctx, VIT_CAPTURE_TOKENS, layer, dst, err);
}

static float *capture_slot(const vit_context *ctx, vit_capture_kind kind, int layer) {
    const int layers = ctx->model->config.num_layers;
    return ctx->captures[(size_t)kind * (layers + 1) + (layer + 1)];
}

/* ------------------------------------------------------------- kernels */

/* Every kernel takes the number of threads to use: all of them when one
 * batch is split across threads, 1 when each thread runs whole images. */

/* out[rows, out_dim] = in[rows, in_dim] · W[out_dim, in_dim]ᵀ + bias, or,
 * with accumulate, out += the same (the residual add fused into the GEMM).
 * The bias is written (or added) first and the GEMM accumulates onto it with
 * beta = 1, which OpenBLAS runs without a separate pass over out. */
static void linear(const float *in, int rows, int in_dim, const float *weight, const float *bias,
                   int out_dim, float *out, int accumulate, int threads) {
    if (bias || !accumulate) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int r = 0; r < rows; r++) {
            float *row = out + (size_t)r * out_dim;
            if (!bias)
                memset(row, 0, sizeof(float) * out_dim);
            else if (accumulate)
                for (int j = 0; j < out_dim; j++) row[j] += bias[j];
            else
                memcpy(row, bias, sizeof(float) * out_dim);
        }
    }
    /* Each thread takes its own slice of output columns (whole 16-column
     * panels) and runs a single-threaded GEMM on it: measured faster than
     * OpenBLAS's own threading for these shapes, most of all at 197 rows.
     * (Inside a parallel region OpenBLAS runs on the calling thread.) */
#pragma omp parallel num_threads(threads)
    {
        const int team = omp_get_num_threads();
        const int chunk = ((out_dim + team - 1) / team + 15) / 16 * 16;
        const int first = omp_get_thread_num() * chunk;
        const int cols = out_dim - first < chunk ? out_dim - first : chunk;
        if (cols > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, in_dim, 1.0f, in, in_dim,
                        weight + (size_t)first * in_dim, in_dim, 1.0f, out + first, out_dim);
    }
}

static void layer_norm_row(const float *in, const float *w, const float *b, int dim, float eps,
                           float *out) {
    float sum = 0.0f;
    for (int i = 0; i < dim; i++) sum += in[i];
    const float mean = sum / (float)dim;
    float var = 0.0f;
    for (int i = 0; i < dim; i++) {
        const float d = in[i] - mean;
        var += d * d;
    }
    const float inv_std = 1.0f / sqrtf(var / (float)dim + eps);
    for (int i = 0; i < dim; i++) out[i] = (in[i] - mean) * inv_std * w[i] + b[i];
}

static void layer_norm(const float *in, int rows, int dim, const float *w, const float *b,
                       float eps, float *out, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int r = 0; r < rows; r++)
        layer_norm_row(in + (size_t)r * dim, w, b, dim, eps, out + (size_t)r * dim);
}

/* Exact (erf) GELU, as torch.nn.GELU() and HF's "gelu". */
static void gelu(float *values, size_t count, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
    for (size_t i = 0; i < count; i++)
        values[i] = 0.5f * values[i] * (1.0f + fast_erff(values[i] * 0.70710678118654752f));
}

void vit_softmax(float *values, int n) {
    float max = values[0];
    for (int i = 1; i < n; i++) max = values[i] > max ? values[i] : max;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        values[i] = fast_expf(values[i] - max);
        sum += values[i];
    }
    const float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) values[i] *= inv;
}

/* One run of the encoder over `count` images: the images' activations live
 * in the buffer rows of image slot `slot` onward, while captures and pooled
 * outputs go to image index `first` of the batch. */
typedef struct encode_job {
    int first, count, slot, threads;
    float *scores; /* this job's attention scratch, per thread scores_floats() */
    stage_clock clock;
} encode_job;

/* Multi-head self-attention over qkv [B*T, 3D] into attn [B*T, D]. A task
 * is one block of query rows of one head of one image, so even a single
 * image with few heads spreads evenly over the threads; each thread keeps
 * its block's scores (rows x T) in its own part of the scratch. */
static void attention(const vit_context *ctx, const encode_job *job, float *captured) {
    const vit_config *c = &ctx->model->config;
    const int T = ctx->num_tokens, D = c->hidden_size, H = c->num_heads, dh = D / H;
    const int blocks = job->threads > 1 ? ctx->split_query_blocks : ctx->solo_query_blocks;
    const int block_rows = (T + blocks - 1) / blocks;
    const float scale = 1.0f / sqrtf((float)dh);
    const float *qkv = ctx->qkv + (size_t)job->slot * T * 3 * D;
    float *attn = ctx->attn + (size_t)job->slot * T * D;
#pragma omp parallel for schedule(dynamic) num_threads(job->threads)
    for (int task = 0; task < job->count * H * blocks; task++) {
        const int b = task / (H * blocks), h = task / blocks % H, first = task % blocks * block_rows;
        const int rows = T - first < block_rows ? T - first : block_rows;
        if (rows <= 0) continue;
        float *scores = job->scores + (size_t)omp_get_thread_num() * block_rows * T;
        const float *q = qkv + ((size_t)b * T + first) * 3 * D + (size_t)h * dh;
        const float *k = qkv + (size_t)b * T * 3 * D + D + (size_t)h * dh, *v = k + D;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, T, dh, scale, q, 3 * D, k, 3 * D,
                    0.0f, scores, T);
        for (int i = 0; i < rows; i++) vit_softmax(scores + (size_t)i * T, T);
        if (captured)
            memcpy(captured + (((size_t)(job->first + b) * H + h) * T + first) * T, scores,
                   sizeof(float) * rows * T);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dh, T, 1.0f, scores, T, v,
                    3 * D, 0.0f, attn + ((size_t)b * T + first) * D + (size_t)h * dh, D);
    }
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

/* Patch embedding, prefix tokens and position embeddings into the job's
 * rows of ctx->x. */
static void embed(const vit_context *ctx, const encode_job *job, const float *images) {
    const vit_model *m = ctx->model;
    const vit_config *c = &m->config;
    const int D = c->hidden_size, T = ctx->num_tokens, Np = ctx->num_patches, S = ctx->image_size;
    const int K = c->num_channels * c->patch_size * c->patch_size, prefix = c->num_prefix_tokens;
    float *cols = ctx->cols + (size_t)job->slot * Np * K;
    float *patches = ctx->patches + (size_t)job->slot * Np * D;
    float *x = ctx->x + (size_t)job->slot * T * D;
#pragma omp parallel for schedule(static) num_threads(job->threads)
    for (int b = 0; b < job->count; b++)
        patching_im2col(images + (size_t)(job->first + b) * c->num_channels * S * S,
                        c->num_channels, S, S, c->patch_size, cols + (size_t)b * Np * K);
    linear(cols, job->count * Np, K, m->patch_w, m->patch_b, D, patches, 0, job->threads);
#pragma omp parallel for schedule(static) num_threads(job->threads)
    for (int row = 0; row < job->count * T; row++) {
        const int b = row / T, t = row % T;
        float *dst = x + (size_t)row * D;
        const float *pos = ctx->pos_embed + (size_t)t * D;
        const float *src = t == 0        ? m->cls_token
                           : t < prefix ? m->dist_token
                                        : patches + ((size_t)b * Np + (t - prefix)) * D;
        for (int d = 0; d < D; d++) dst[d] = src[d] + pos[d];
    }
}

/* Embedding, every encoder block, and the final norm of the prefix tokens
 * (into ctx->pooled) for the job's images. */
static void encode(const vit_context *ctx, encode_job *job, const float *images) {
    const vit_model *m = ctx->model;
    const vit_config *c = &m->config;
    const int D = c->hidden_size, M = c->mlp_size, T = ctx->num_tokens, rows = job->count * T;
    const int threads = job->threads;
    const float eps = c->layer_norm_eps;
    float *x = ctx->x + (size_t)job->slot * T * D, *normed = ctx->normed + (size_t)job->slot * T * D;
    float *qkv = ctx->qkv + (size_t)job->slot * T * 3 * D;
    float *attn = ctx->attn + (size_t)job->slot * T * D;
    float *hidden = ctx->hidden + (size_t)job->slot * T * M;
    stage_clock *clock = &job->clock;

    embed(ctx, job, images);
    capture_rows(ctx, job, capture_slot(ctx, VIT_CAPTURE_TOKENS, -1), 0);
    mark(clock, VIT_STAGE_PATCH_EMBED);
    for (int l = 0; l < c->num_layers; l++) {
        const vit_block *blk = &m->blocks[l];
        layer_norm(x, rows, D, blk->ln1_w, blk->ln1_b, eps, normed, threads);
        mark(clock, VIT_STAGE_LAYER_NORM);
        linear(normed, rows, D, blk->qkv_w, blk->qkv_b, 3 * D, qkv, 0, threads);
        capture_rows(ctx, job, capture_slot(ctx, VIT_CAPTURE_KEYS, l), 1);
        mark(clock, VIT_STAGE_QKV);
        attention(ctx, job, capture_slot(ctx, VIT_CAPTURE_ATTENTION, l));
        mark(clock, VIT_STAGE_ATTENTION);
        linear(attn, rows, D, blk->proj_w, blk->proj_b, D, x, 1, threads);
        mark(clock, VIT_STAGE_PROJECTION);
        layer_norm(x, rows, D, blk->ln2_w, blk->ln2_b, eps, normed, threads);
        mark(clock, VIT_STAGE_LAYER_NORM);
        linear(normed, rows, D, blk->fc1_w, blk->fc1_b, M, hidden, 0, threads);
        mark(clock, VIT_STAGE_MLP_FC1);
        gelu(hidden, (size_t)rows * M, threads);
        mark(clock, VIT_STAGE_GELU);
        linear(hidden, rows, M, blk->fc2_w, blk->fc2_b, D, x, 1, threads);
        capture_rows(ctx, job, capture_slot(ctx, VIT_CAPTURE_TOKENS, l), 0);
        mark(clock, VIT_STAGE_MLP_FC2);
    }
    /* Only the prefix tokens feed the head: normalise just those. */
    const int prefix = c->num_prefix_tokens;
    for (int b = 0; b < job->count; b++)
        for (int t = 0; t < prefix; t++)
            layer_norm_row(x + ((size_t)b * T + t) * D, m->norm_w, m->norm_b, D, eps,
                           ctx->pooled + ((size_t)(job->first + b) * prefix + t) * D);
}

/* Class logits (or pooled features) of `batch` pooled rows into out. */
static void head(const vit_model *m, const float *pooled, int prefix, int batch, float *out) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size;
    if (c->num_classes == 0) {
        for (int b = 0; b < batch; b++)
            memcpy(out + (size_t)b * D, pooled + (size_t)b * prefix * D, sizeof(float) * D);
        return;
    }
    const int C = c->num_classes;
    /* Class token rows sit prefix*D apart in pooled: a strided GEMM input. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, C, D, 1.0f, pooled, prefix * D,
                m->head_w, D, 0.0f, out, C);
    if (m->head_dist_w) {
        /* Distilled DeiT at inference: the mean of both heads (timm, HF). */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, batch, C, D, 0.5f, pooled + D,
                    prefix * D, m->head_dist_w, D, 0.5f, out, C);
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < C; j++)
                out[(size_t)b * C + j] += 0.5f * (m->head_b[j] + m->head_dist_b[j]);
    } else {
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < C; j++) out[(size_t)b * C + j] += m->head_b[j];
    }
}

vit_status vit_forward_checked(vit_context *ctx, const float *images, int batch, int channels,
                               int height, int width, float *out, vit_error *err) {
    const int C = ctx->model->config.num_channels, S = ctx->image_size;
    /* vit_forward reads C x S x S floats per image whatever it is given:
     * anything smaller would be read past its end. */
    if (channels != C || height != S || width != S)
        return vit_error_set(err, VIT_E_SHAPE,
                             "images of %d x %dx%d given to a model context that takes %d x %dx%d",
                             channels, width, height, C, S, S);
    return vit_forward(ctx, images, batch, out, err);
}

vit_status vit_forward(vit_context *ctx, const float *images, int batch, float *out,
                       vit_error *err) {
    const vit_model *m = ctx->model;
    if (batch <= 0 || batch > ctx->max_batch)
        return vit_error_set(err, VIT_E_ARG, "batch of %d images, the context holds 1..%d",
                             batch, ctx->max_batch);
    const int threads = ctx->num_threads;
    const double started = omp_get_wtime();

    /* With at least one image per thread, each thread runs whole images on
     * its own, single-threaded: no barrier between the ~100 steps of a
     * forward pass, and one image's activations stay in its core's cache.
     * Measured faster than splitting every step across threads from batch
     * 2 up (bench/README.md). Images left over run split as at batch 1. */
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
    if (batch > parallel_images) {
        encode_job job = {.first = parallel_images, .count = batch - parallel_images, .slot = 0,
                          .threads = threads, .scores = ctx->scores, .clock = clock};
        encode(ctx, &job, images);
        clock = job.clock;
    }
    head(m, ctx->pooled, m->config.num_prefix_tokens, batch, out);
    mark(&clock, VIT_STAGE_HEAD);
    return VIT_OK;
}

vit_status vit_token_logits(const vit_model *model, const float *tokens, int n, float *out,
                            vit_error *err) {
    const vit_config *c = &model->config;
    if (c->num_classes == 0 || !model->head_w)
        return vit_error_set(err, VIT_E_ARG, "the model has no classifier head");
    const int D = c->hidden_size;
    float *normed = alloc_floats((size_t)n * 2 * D);
    if (!normed) return vit_error_set(err, VIT_E_NOMEM, "out of memory for %d tokens", n);
    /* Each token fills the class (and distillation) slot of a pooled row. */
    for (int i = 0; i < n; i++) {
        layer_norm_row(tokens + (size_t)i * D, model->norm_w, model->norm_b, D,
                       c->layer_norm_eps, normed + (size_t)i * 2 * D);
        memcpy(normed + ((size_t)i * 2 + 1) * D, normed + (size_t)i * 2 * D, sizeof(float) * D);
    }
    head(model, normed, 2, n, out);
    free(normed);
    return VIT_OK;
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
