/* The compute kernels shared by inference and training (kernels.h). Hot
 * loops are plain loops over rows so gcc vectorises them; nothing here
 * allocates except kernels_alloc_floats. */
#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_gemm.h"
#include "kernels_parallel.h"
#include "kernels_rows.h"

/* OpenBLAS's own query (cblas.h declares it); OPENBLAS_OPENMP is 2. */
#define OPENBLAS_OPENMP_BUILD 2

kernels_threads kernels_threading(kernels_pass pass, int threads, kernels_isa isa) {
    kernels_threads th = {threads > 1 ? threads : 1, KERNELS_GEMM_OPENBLAS, isa, 0};
    if (pass == KERNELS_INFERENCE) th.gemm = KERNELS_GEMM_VITC;
    return th;
}

base_status kernels_check_blas(base_error *err) {
    /* A pthreads OpenBLAS would start its own threads inside our parallel
     * regions (threads x threads on the cores) and its results would not
     * be split the way the OpenMP build splits them. */
    const int kind = openblas_get_parallel();
    if (kind != OPENBLAS_OPENMP_BUILD)
        return base_error_set(err, BASE_E_UNSUPPORTED,
                             "OpenBLAS is the %s build, vitc needs the OpenMP one "
                             "(libopenblas0-openmp)",
                             kind == 0 ? "single-threaded" : "pthreads");
    return BASE_OK;
}

float *kernels_alloc_floats(size_t count) {
    size_t bytes = ((count ? count : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

/* ------------------------------------------------------------- layernorm */

void layernorm_forward_row(float *out, float *mean, float *rstd, const float *inp,
                           const float *weight, const float *bias, int dim, float eps) {
    rows_layernorm(out, mean, rstd, inp, weight, bias, dim, eps);
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int rows, int dim, float eps,
                       kernels_threads th) {
    const kernels_path *path = kernels_path_of(th.isa);
    PARALLEL_FOR(
        for (int r = 0; r < rows; r++) {
            path->layernorm(out + (size_t)r * dim, mean ? mean + r : NULL, rstd ? rstd + r : NULL,
                            inp + (size_t)r * dim, weight, bias, dim, eps);
        });
}

/* One row of LayerNorm's backward pass, shared by the token LayerNorm and
 * qk-norm's per-head one: the input gradient into dx (added to it when
 * accumulate, else stored: qk-norm replaces dout in place, dx == dout),
 * and dout * xhat into prod for the weight gradient. */
static void layernorm_row_backward(float *dx, int accumulate, float *prod, const float *dout,
                                   const float *x, const float *weight, float mean, float rstd,
                                   int dim) {
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (int i = 0; i < dim; i++) {
        const float xhat = (x[i] - mean) * rstd, gw = dout[i] * weight[i];
        prod[i] = dout[i] * xhat;
        sum_g += gw;
        sum_gx += gw * xhat;
    }
    const float mg = sum_g / (float)dim, mgx = sum_gx / (float)dim;
    for (int i = 0; i < dim; i++) {
        const float xhat = (x[i] - mean) * rstd;
        const float d = rstd * (dout[i] * weight[i] - mg - xhat * mgx);
        dx[i] = accumulate ? dx[i] + d : d;
    }
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int rows, int dim, size_t stride, float *scratch,
                        const float *ones, kernels_threads th) {
    PARALLEL_FOR(
        for (int r = 0; r < rows; r++) {
            layernorm_row_backward(dinp + (size_t)r * stride * dim, 1,
                                   scratch + (size_t)r * dim, dout + (size_t)r * dim,
                                   inp + (size_t)r * stride * dim, weight, mean[r], rstd[r], dim);
        });
    cblas_sgemv(CblasRowMajor, CblasTrans, rows, dim, 1.0f, scratch, dim, ones, 1, 0.0f, dweight,
                1);
    cblas_sgemv(CblasRowMajor, CblasTrans, rows, dim, 1.0f, dout, dim, ones, 1, 0.0f, dbias, 1);
}

/* ------------------------------------------------------------- embedding */

void embed_tokens_forward(float *out, const float *patches, const float *cls, const float *dist,
                          const float *reg, const float *pos, int count, int T, int Np, int dim,
                          kernels_threads th) {
    const int prefix = T - Np, has_cls = cls != NULL, has_dist = dist != NULL;
    PARALLEL_FOR(
        for (int row = 0; row < count * T; row++) {
            const int b = row / T, t = row % T;
            /* [class] [distillation] [registers] [patches] */
            const int after_cls = t - has_cls, r = after_cls - has_dist;
            const float *src = t >= prefix     ? patches + ((size_t)b * Np + (t - prefix)) * dim
                               : after_cls < 0 ? cls
                               : r < 0         ? dist
                                               : reg + (size_t)r * dim;
            float *dst = out + (size_t)row * dim;
            const float *p = pos + (size_t)t * dim;
            for (int d = 0; d < dim; d++) dst[d] = src[d] + p[d];
        });
}

/* ------------------------------------------------------------- pooling */

/* One token row as pooling reads it: final-normed into out, or as it is. */
static const float *pooled_row(float *out, const float *row, int dim, const float *norm_w,
                               const float *norm_b, float eps) {
    if (!norm_w) return row;
    layernorm_forward_row(out, NULL, NULL, row, norm_w, norm_b, dim, eps);
    return out;
}

void pool_forward(float *out, const float *tokens, int T, int prefix, int class_rows, int dim,
                  kernels_pool pool, const float *norm_w, const float *norm_b, float eps,
                  float *scratch) {
    if (pool != KERNELS_POOL_AVG) {
        const int rows = pool == KERNELS_POOL_TOKEN ? class_rows : 1;
        for (int t = 0; t < rows; t++) {
            float *dst = out + (size_t)t * dim;
            const float *row = pooled_row(dst, tokens + (size_t)t * dim, dim, norm_w, norm_b, eps);
            if (row != dst) memcpy(dst, row, sizeof(float) * dim);
        }
        if (pool == KERNELS_POOL_TOKEN) return;
        out += dim;
    }
    /* The mean as torch's over dim 1 on a CPU: token order, one float per
     * channel. */
    for (int d = 0; d < dim; d++) out[d] = 0.0f;
    for (int t = prefix; t < T; t++) {
        const float *row = pooled_row(scratch, tokens + (size_t)t * dim, dim, norm_w, norm_b, eps);
        for (int d = 0; d < dim; d++) out[d] += row[d];
    }
    for (int d = 0; d < dim; d++) out[d] /= (float)(T - prefix);
}

/* ------------------------------------------------------------- matmul */

/* One GEMM of training: out's block set to bias (+ residual) first when
 * fill is set, then OpenBLAS's sgemm accumulates onto it (beta). */
typedef struct gemm_job {
    float *out;
    int ldo;
    const float *inp, *weight;
    int rows, in_dim, out_dim;
    float beta;
    int fill;              /* set out to bias (+ residual) first */
    const float *residual; /* NULL: none (rows ldo floats apart) */
    const float *bias;     /* NULL: zero */
} gemm_job;

/* Sets row r of out to bias (+ residual). */
static void gemm_job_fill(const gemm_job *g, int r) {
    float *row = g->out + (size_t)r * g->ldo;
    const float *res = g->residual ? g->residual + (size_t)r * g->ldo : NULL;
    const int n = g->out_dim;
    if (res && g->bias)
        for (int j = 0; j < n; j++) row[j] = res[j] + g->bias[j];
    else if (res && res != row)
        memcpy(row, res, sizeof(float) * (size_t)n);
    else if (!res && g->bias)
        memcpy(row, g->bias, sizeof(float) * (size_t)n);
    else if (!res)
        memset(row, 0, sizeof(float) * (size_t)n);
}

/* The fill as its own row loop, then one OpenBLAS-threaded GEMM. */
static void gemm_job_run(const gemm_job *g, kernels_threads th) {
    if (g->fill) PARALLEL_FOR(for (int r = 0; r < g->rows; r++) gemm_job_fill(g, r););
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->rows, g->out_dim, g->in_dim, 1.0f,
                g->inp, g->in_dim, g->weight, g->in_dim, g->beta, g->out, g->ldo);
}

void matmul_gemm(float *out, int ldo, const float *inp, const float *weight, int rows,
                 int in_dim, int out_dim, float beta, kernels_threads th) {
    const gemm_job g = {.out = out, .ldo = ldo, .inp = inp, .weight = weight, .rows = rows,
                        .in_dim = in_dim, .out_dim = out_dim, .beta = beta};
    gemm_job_run(&g, th);
}

void matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                    int rows, int in_dim, int out_dim, kernels_threads th) {
    const gemm_job g = {.out = out, .ldo = out_dim, .inp = inp, .weight = weight, .rows = rows,
                        .in_dim = in_dim, .out_dim = out_dim, .beta = 1.0f, .fill = 1,
                        .bias = bias};
    gemm_job_run(&g, th);
}

void residual_matmul_forward(float *out, const float *residual, const float *inp,
                             const float *weight, const float *bias, int rows, int in_dim,
                             int out_dim, kernels_threads th) {
    const gemm_job g = {.out = out, .ldo = out_dim, .inp = inp, .weight = weight, .rows = rows,
                        .in_dim = in_dim, .out_dim = out_dim, .beta = 1.0f,
                        .fill = bias || out != residual, .residual = residual, .bias = bias};
    gemm_job_run(&g, th);
}

/* ------------------------------------------------------------- gelu */


void gelu_forward(float *out, const float *inp, size_t n, kernels_threads th) {
    kernels_act_forward(out, inp, n, KERNELS_ACT_GELU, th);
}

void quick_gelu_forward(float *out, const float *inp, size_t n, kernels_threads th) {
    kernels_act_forward(out, inp, n, KERNELS_ACT_QUICK_GELU, th);
}

void quick_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n,
                         kernels_threads th) {
    PARALLEL_FOR(
        for (size_t i = 0; i < n; i++) {
            const float x = inp[i], s = 1.0f / (1.0f + expf(-1.702f * x));
            dinp[i] = dout[i] * (s + 1.702f * x * s * (1.0f - s));
        });
}

void layer_scale_add_forward(float *x, const float *branch, const float *gamma, int rows, int dim,
                             kernels_threads th) {
    PARALLEL_FOR(
        for (int r = 0; r < rows; r++) {
            float *xr = x + (size_t)r * dim;
            const float *br = branch + (size_t)r * dim;
            for (int d = 0; d < dim; d++) xr[d] += gamma[d] * br[d];
        });
}

void layer_scale_add_backward(float *dbranch, float *dgamma, const float *dout,
                              const float *branch, const float *gamma, int rows, int dim,
                              float *scratch, const float *ones, kernels_threads th) {
    PARALLEL_FOR(
        for (int r = 0; r < rows; r++) {
            const float *g = dout + (size_t)r * dim, *br = branch + (size_t)r * dim;
            float *db = dbranch + (size_t)r * dim, *prod = scratch + (size_t)r * dim;
            for (int d = 0; d < dim; d++) {
                prod[d] = g[d] * br[d];
                db[d] = g[d] * gamma[d];
            }
        });
    cblas_sgemv(CblasRowMajor, CblasTrans, rows, dim, 1.0f, scratch, dim, ones, 1, 0.0f, dgamma,
                1);
}

void qk_norm_forward(float *qkv, float *mean, float *rstd, int rows, int D, int heads,
                     const float *qw, const float *qb, const float *kw, const float *kb, float eps,
                     kernels_threads th) {
    const int dh = D / heads;
    PARALLEL_FOR(
        for (int r = 0; r < rows; r++) {
            float *q = qkv + (size_t)r * 3 * D, *k = q + D;
            const size_t sq = (size_t)r * 2 * heads, sk = sq + heads;
            for (int h = 0; h < heads; h++) {
                layernorm_forward_row(q + h * dh, mean ? mean + sq + h : NULL,
                                      rstd ? rstd + sq + h : NULL, q + h * dh, qw, qb, dh, eps);
                layernorm_forward_row(k + h * dh, mean ? mean + sk + h : NULL,
                                      rstd ? rstd + sk + h : NULL, k + h * dh, kw, kb, dh, eps);
            }
        });
}

/* One of Q (part 0) or K (part 1) of qk_norm_backward. */
static void qk_norm_backward_part(float *dqkv, float *dweight, float *dbias, const float *inp,
                                  const float *weight, const float *mean, const float *rstd,
                                  int rows, int D, int heads, int part, float *scratch,
                                  float *sums, const float *ones, kernels_threads th) {
    const int dh = D / heads;
    /* Bias: column sums of the incoming gradient, before it is replaced. */
    cblas_sgemv(CblasRowMajor, CblasTrans, rows, D, 1.0f, dqkv + (size_t)part * D, 3 * D, ones, 1,
                0.0f, sums, 1);
    for (int i = 0; i < dh; i++) {
        float total = 0.0f;
        for (int h = 0; h < heads; h++) total += sums[h * dh + i];
        dbias[i] = total;
    }
    PARALLEL_FOR(
        for (int r = 0; r < rows; r++) {
            for (int h = 0; h < heads; h++) {
                const float *x = inp + (size_t)r * 2 * D + (size_t)part * D + h * dh;
                float *g = dqkv + (size_t)r * 3 * D + (size_t)part * D + h * dh;
                float *prod = scratch + (size_t)r * D + h * dh;
                const size_t stat = ((size_t)r * 2 + part) * heads + h;
                layernorm_row_backward(g, 0, prod, g, x, weight, mean[stat], rstd[stat], dh);
            }
        });
    cblas_sgemv(CblasRowMajor, CblasTrans, rows, D, 1.0f, scratch, D, ones, 1, 0.0f, sums, 1);
    for (int i = 0; i < dh; i++) {
        float total = 0.0f;
        for (int h = 0; h < heads; h++) total += sums[h * dh + i];
        dweight[i] = total;
    }
}

void qk_norm_backward(float *dqkv, float *dqw, float *dqb, float *dkw, float *dkb,
                      const float *inp, const float *qw, const float *kw, const float *mean,
                      const float *rstd, int rows, int D, int heads, float *scratch, float *sums,
                      const float *ones, kernels_threads th) {
    qk_norm_backward_part(dqkv, dqw, dqb, inp, qw, mean, rstd, rows, D, heads, 0, scratch, sums,
                          ones, th);
    qk_norm_backward_part(dqkv, dkw, dkb, inp, kw, mean, rstd, rows, D, heads, 1, scratch, sums,
                          ones, th);
}

/* ------------------------------------------------------------- attention */

void softmax_forward(float *values, int n) { rows_softmax(values, n); }

/* The rows of the largest task of a head split in blocks of block_rows:
 * the last block also takes the T % block_rows rows after it. */
static int attention_block_rows(int T, int block_rows) {
    if (block_rows >= T) return T;
    const int last = T - (T / block_rows - 1) * block_rows;
    return last > block_rows ? last : block_rows;
}

size_t attention_scratch_floats(int T, int D, int heads, int block_rows) {
    const size_t floats = attention_pack_floats(T, D / heads) + (size_t)attention_block_rows(T, block_rows) * T;
    return (floats + 15) / 16 * 16; /* every thread's part 64-byte aligned */
}

void attention_forward(float *out, float *att, const float *qkv, int batch, int T, int D,
                       int heads, int block_rows, float *scratch, kernels_threads th) {
    attention_forward_vitc(out, att, qkv, batch, T, D, heads, block_rows, scratch,
                           attention_scratch_floats(T, D, heads, block_rows), th);
}
