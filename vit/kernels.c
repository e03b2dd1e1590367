/* The compute kernels shared by inference and training (kernels.h). Hot
 * loops are plain loops over rows so gcc vectorises them; nothing here
 * allocates except kernels_alloc_floats. */
#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "kernels_parallel.h"
#include "vit_math.h"

/* OpenBLAS's own query (cblas.h declares it); OPENBLAS_OPENMP is 2. */
#define OPENBLAS_OPENMP_BUILD 2

kernels_threads kernels_threading(kernels_pass pass, int threads) {
    kernels_threads th = {threads > 1 ? threads : 1, KERNELS_GEMM_OPENBLAS, 0};
    if (pass == KERNELS_INFERENCE) th.gemm = KERNELS_GEMM_PANELS;
    return th;
}

vit_status kernels_check_blas(vit_error *err) {
    /* A pthreads OpenBLAS would start its own threads inside our parallel
     * regions (threads x threads on the cores) and its results would not
     * be split the way the OpenMP build splits them. */
    const int kind = openblas_get_parallel();
    if (kind != OPENBLAS_OPENMP_BUILD)
        return vit_error_set(err, VIT_E_UNSUPPORTED,
                             "OpenBLAS is the %s build, vitc needs the OpenMP one "
                             "(libopenblas0-openmp)",
                             kind == 0 ? "single-threaded" : "pthreads");
    return VIT_OK;
}

float *kernels_alloc_floats(size_t count) {
    size_t bytes = ((count ? count : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

/* ------------------------------------------------------------- layernorm */

/* Sum of n floats in 8 interleaved partial sums (one AVX vector), combined
 * pairwise: a fixed order for a given n, so a row's result never depends
 * on where or with what it runs, and a vector add per 8 values instead of
 * one dependent scalar add per value (a plain `sum += x[i]` loop cannot be
 * vectorised without reassociation). */
static float sum8(const float *x, int n) {
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += x[i + k];
    float sum = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) sum += x[i];
    return sum;
}

void layernorm_forward_row(float *out, float *mean, float *rstd, const float *inp,
                           const float *weight, const float *bias, int dim, float eps) {
    const float m = sum8(inp, dim) / (float)dim;
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= dim; i += 8)
        for (int k = 0; k < 8; k++) {
            const float d = inp[i + k] - m;
            acc[k] += d * d;
        }
    float var = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < dim; i++) {
        const float d = inp[i] - m;
        var += d * d;
    }
    const float s = 1.0f / sqrtf(var / (float)dim + eps);
    for (i = 0; i < dim; i++) out[i] = (inp[i] - m) * s * weight[i] + bias[i];
    if (mean) *mean = m;
    if (rstd) *rstd = s;
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int rows, int dim, float eps,
                       kernels_threads th) {
    PARALLEL_FOR(
        for (int r = 0; r < rows; r++) {
            layernorm_forward_row(out + (size_t)r * dim, mean ? mean + r : NULL,
                                  rstd ? rstd + r : NULL, inp + (size_t)r * dim, weight, bias,
                                  dim, eps);
        });
}

void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *mean,
                        const float *rstd, int rows, int dim, size_t stride, float *scratch,
                        const float *ones, kernels_threads th) {
    PARALLEL_FOR(
        for (int r = 0; r < rows; r++) {
            const float *x = inp + (size_t)r * stride * dim, *g = dout + (size_t)r * dim;
            float *dx = dinp + (size_t)r * stride * dim, *prod = scratch + (size_t)r * dim;
            const float m = mean[r], s = rstd[r];
            float sum_g = 0.0f, sum_gx = 0.0f;
            for (int i = 0; i < dim; i++) {
                const float xhat = (x[i] - m) * s, gw = g[i] * weight[i];
                prod[i] = g[i] * xhat;
                sum_g += gw;
                sum_gx += gw * xhat;
            }
            const float mg = sum_g / (float)dim, mgx = sum_gx / (float)dim;
            for (int i = 0; i < dim; i++) {
                const float xhat = (x[i] - m) * s;
                dx[i] += s * (g[i] * weight[i] - mg - xhat * mgx);
            }
        });
    cblas_sgemv(CblasRowMajor, CblasTrans, rows, dim, 1.0f, scratch, dim, ones, 1, 0.0f, dweight,
                1);
    cblas_sgemv(CblasRowMajor, CblasTrans, rows, dim, 1.0f, dout, dim, ones, 1, 0.0f, dbias, 1);
}

/* ------------------------------------------------------------- matmul */

/* Where slice i of team starts: i/team of the rows, to the nearest multiple
 * of KERNELS_ROW_ALIGN (the last slice ends at rows). */
static int row_boundary(int rows, int i, int team) {
    if (i >= team) return rows;
    const long exact = (long)rows * i / team;
    const long aligned = (exact + KERNELS_ROW_ALIGN / 2) / KERNELS_ROW_ALIGN * KERNELS_ROW_ALIGN;
    return aligned < rows ? (int)aligned : rows;
}

/* Where column panel p of KERNELS_PANELS starts: whole 16-column blocks. */
static int panel_boundary(int out_dim, int p) {
    if (p >= KERNELS_PANELS) return out_dim;
    const int at = (out_dim * p / KERNELS_PANELS + 15) / 16 * 16;
    return at < out_dim ? at : out_dim;
}

static void gemm_block(float *out, int ldo, const float *inp, const float *weight, int in_dim,
                       int first_row, int last_row, int first_col, int last_col, float beta) {
    if (last_row > first_row && last_col > first_col)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, last_row - first_row,
                    last_col - first_col, in_dim, 1.0f, inp + (size_t)first_row * in_dim, in_dim,
                    weight + (size_t)first_col * in_dim, in_dim, beta,
                    out + (size_t)first_row * ldo + first_col, ldo);
}

static void gelu_span(float *out, const float *inp, size_t n);

/* One inference GEMM with what goes before and after it, done per block
 * by whichever thread computes that block: the block of out is first set to
 * bias (+ residual) when fill is set, the GEMM accumulates onto it
 * (beta), then GELU is applied to it when gelu is set. Each element gets
 * the same operations in the same order as in separate passes (fill, GEMM,
 * GELU), so the bits do not change; what goes away are two parallel regions
 * (two fork/join barriers) and two passes over out, done instead while the
 * block is still in the core's cache. */
typedef struct gemm_job {
    float *out;
    int ldo;
    const float *inp, *weight;
    int rows, in_dim, out_dim;
    float beta;
    int fill;              /* set the block to bias (+ residual) first */
    const float *residual; /* NULL: none (rows ldo floats apart) */
    const float *bias;     /* NULL: zero */
    int gelu;              /* GELU on the block afterwards */
} gemm_job;

/* Sets rows r0..r1, columns c0..c1 of out to bias (+ residual). */
static void gemm_job_fill(const gemm_job *g, int r0, int r1, int c0, int c1) {
    for (int r = r0; r < r1; r++) {
        float *row = g->out + (size_t)r * g->ldo;
        const float *res = g->residual ? g->residual + (size_t)r * g->ldo : NULL;
        if (res && g->bias)
            for (int j = c0; j < c1; j++) row[j] = res[j] + g->bias[j];
        else if (res && res != row)
            memcpy(row + c0, res + c0, sizeof(float) * (size_t)(c1 - c0));
        else if (!res && g->bias)
            memcpy(row + c0, g->bias + c0, sizeof(float) * (size_t)(c1 - c0));
        else if (!res)
            memset(row + c0, 0, sizeof(float) * (size_t)(c1 - c0));
    }
}

static void gemm_job_block(const gemm_job *g, int r0, int r1, int c0, int c1) {
    if (r1 <= r0 || c1 <= c0) return;
    if (g->fill) gemm_job_fill(g, r0, r1, c0, c1);
    gemm_block(g->out, g->ldo, g->inp, g->weight, g->in_dim, r0, r1, c0, c1, g->beta);
    if (g->gelu)
        for (int r = r0; r < r1; r++) {
            float *row = g->out + (size_t)r * g->ldo + c0;
            gelu_span(row, row, (size_t)(c1 - c0));
        }
}

/* Thread id's share of a gemm_job run by a team of threads. */
static void gemm_job_share(const gemm_job *g, int team, int id) {
    const int p = id % KERNELS_PANELS, slice = id / KERNELS_PANELS;
    const int slices = (team - p + KERNELS_PANELS - 1) / KERNELS_PANELS;
    if (team < KERNELS_PANELS) {
        /* Fewer threads than panels: thread id takes panels id, id + team, ... */
        for (int q = id; q < KERNELS_PANELS; q += team)
            gemm_job_block(g, 0, g->rows, panel_boundary(g->out_dim, q),
                           panel_boundary(g->out_dim, q + 1));
    } else {
        gemm_job_block(g, row_boundary(g->rows, slice, slices),
                       row_boundary(g->rows, slice + 1, slices), panel_boundary(g->out_dim, p),
                       panel_boundary(g->out_dim, p + 1));
    }
}

/* Runs a gemm_job as KERNELS_GEMM_PANELS says (kernels.h). */
static void gemm_job_panels(const gemm_job *g, kernels_threads th) {
    /* Panels: the same GEMM calls whatever the thread count, so an element
     * never depends on it; one thread runs them one after the other. */
    if (th.count <= 1) {
        for (int p = 0; p < KERNELS_PANELS; p++)
            gemm_job_block(g, 0, g->rows, panel_boundary(g->out_dim, p),
                           panel_boundary(g->out_dim, p + 1));
        return;
    }
    /* Thread id runs panel id % KERNELS_PANELS; threads beyond the panels
     * share one by row slices on KERNELS_ROW_ALIGN boundaries, which keep
     * every element's bits (kernels.h). Inside the parallel region
     * OpenBLAS runs on the calling thread, so each thread's GEMM is its own. */
    if (th.in_team) {
        gemm_job_share(g, omp_get_num_threads(), omp_get_thread_num());
#pragma omp barrier
        return;
    }
#pragma omp parallel num_threads(th.count)
    gemm_job_share(g, omp_get_num_threads(), omp_get_thread_num());
}

/* Training (KERNELS_GEMM_OPENBLAS): the fill as its own row loop, then one
 * OpenBLAS-threaded GEMM, then GELU. */
static void gemm_job_openblas(const gemm_job *g, kernels_threads th) {
    if (g->fill) PARALLEL_FOR(for (int r = 0; r < g->rows; r++) gemm_job_fill(g, r, r + 1, 0, g->out_dim););
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->rows, g->out_dim, g->in_dim, 1.0f,
                g->inp, g->in_dim, g->weight, g->in_dim, g->beta, g->out, g->ldo);
    if (g->gelu) gelu_forward(g->out, g->out, (size_t)g->rows * g->out_dim, th);
}

static void gemm_job_run(const gemm_job *g, kernels_threads th) {
    if (th.gemm == KERNELS_GEMM_OPENBLAS)
        gemm_job_openblas(g, th);
    else
        gemm_job_panels(g, th);
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

void matmul_gelu_forward(float *out, const float *inp, const float *weight, const float *bias,
                         int rows, int in_dim, int out_dim, kernels_threads th) {
    const gemm_job g = {.out = out, .ldo = out_dim, .inp = inp, .weight = weight, .rows = rows,
                        .in_dim = in_dim, .out_dim = out_dim, .beta = 1.0f, .fill = 1,
                        .bias = bias, .gelu = 1};
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

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, const float *ones, int rows,
                     int in_dim, int out_dim) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out_dim, in_dim, rows, 1.0f, dout,
                out_dim, inp, in_dim, 0.0f, dweight, in_dim);
    if (dbias)
        cblas_sgemv(CblasRowMajor, CblasTrans, rows, out_dim, 1.0f, dout, out_dim, ones, 1, 0.0f,
                    dbias, 1);
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, in_dim, out_dim, 1.0f, dout,
                    out_dim, weight, in_dim, 0.0f, dinp, in_dim);
}

/* ------------------------------------------------------------- gelu */

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

static void gelu_span(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = 0.5f * inp[i] * (1.0f + fast_erff(inp[i] * INV_SQRT2));
}

void gelu_forward(float *out, const float *inp, size_t n, kernels_threads th) {
    PARALLEL_FOR(
        for (size_t i = 0; i < n; i++) {
            out[i] = 0.5f * inp[i] * (1.0f + fast_erff(inp[i] * INV_SQRT2));
        });
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n,
                   kernels_threads th) {
    PARALLEL_FOR(
        for (size_t i = 0; i < n; i++) {
            const float h = inp[i];
            dinp[i] = dout[i] * (0.5f * (1.0f + fast_erff(h * INV_SQRT2)) +
                                 h * INV_SQRT_2PI * fast_expf(-0.5f * h * h));
        });
}

void quick_gelu_forward(float *out, const float *inp, size_t n, kernels_threads th) {
    PARALLEL_FOR(
        for (size_t i = 0; i < n; i++) {
            const float x = inp[i];
            out[i] = x * (1.0f / (1.0f + expf(-1.702f * x)));
        });
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
                const float m = mean[stat], s = rstd[stat];
                float sum_g = 0.0f, sum_gx = 0.0f;
                for (int i = 0; i < dh; i++) {
                    const float xhat = (x[i] - m) * s, gw = g[i] * weight[i];
                    prod[i] = g[i] * xhat;
                    sum_g += gw;
                    sum_gx += gw * xhat;
                }
                const float mg = sum_g / (float)dh, mgx = sum_gx / (float)dh;
                for (int i = 0; i < dh; i++) {
                    const float xhat = (x[i] - m) * s;
                    g[i] = s * (g[i] * weight[i] - mg - xhat * mgx);
                }
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

void softmax_forward(float *values, int n) {
    /* Max and sum in 8 lanes (sum8), the exponentials in their own loop so
     * that it vectorises. */
    float lanes[8];
    for (int k = 0; k < 8; k++) lanes[k] = values[0];
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) lanes[k] = values[i + k] > lanes[k] ? values[i + k] : lanes[k];
    float max = lanes[0];
    for (int k = 1; k < 8; k++) max = lanes[k] > max ? lanes[k] : max;
    for (; i < n; i++) max = values[i] > max ? values[i] : max;
    for (i = 0; i < n; i++) values[i] = fast_expf(values[i] - max);
    const float inv = 1.0f / sum8(values, n);
    for (i = 0; i < n; i++) values[i] *= inv;
}

int attention_scratch_rows(int T, int block_rows) {
    if (block_rows >= T) return T;
    const int last = T - (T / block_rows - 1) * block_rows; /* the last block's rows */
    return last > block_rows ? last : block_rows;
}

void attention_forward(float *out, float *att, const float *qkv, int batch, int T, int D,
                       int heads, int block_rows, float *scratch, kernels_threads th) {
    const int H = heads, dh = D / H;
    if (block_rows > T) block_rows = T;
    /* The rows left after the last whole block join it (197 tokens in 48-row
     * blocks: 48, 48, 48, 53), rather than making a task of their own that
     * would pack all of K and V for a few queries. Blocks still start on
     * multiples of block_rows, which is what keeps the bits (kernels.h). */
    const int blocks = T / block_rows, slot_rows = attention_scratch_rows(T, block_rows);
    const float scale = 1.0f / sqrtf((float)dh);
    /* Dynamic: the last block of a head is longer. */
    PARALLEL_FOR_DYNAMIC(
        for (int task = 0; task < batch * H * blocks; task++) {
            const int b = task / (H * blocks), h = task / blocks % H, first = task % blocks * block_rows;
            const int rows = task % blocks == blocks - 1 ? T - first : block_rows;
            float *scores = att ? att + (((size_t)b * H + h) * T + first) * T
                                : scratch + (size_t)scratch_slot(th) * slot_rows * T;
            const float *q = qkv + ((size_t)b * T + first) * 3 * D + (size_t)h * dh;
            const float *k = qkv + (size_t)b * T * 3 * D + D + (size_t)h * dh, *v = k + D;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, T, dh, scale, q, 3 * D, k, 3 * D,
                        0.0f, scores, T);
            for (int i = 0; i < rows; i++) softmax_forward(scores + (size_t)i * T, T);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dh, T, 1.0f, scores, T, v,
                        3 * D, 0.0f, out + ((size_t)b * T + first) * D + (size_t)h * dh, D);
        });
}

void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                        const float *att, int batch, int T, int D, int heads,
                        kernels_threads th) {
    const int H = heads, dh = D / H;
    const float scale = 1.0f / sqrtf((float)dh);
    PARALLEL_FOR(
        for (int task = 0; task < batch * H; task++) {
            const int b = task / H, h = task % H;
            const size_t base = (size_t)b * T * 3 * D + (size_t)h * dh;
            const float *q = qkv + base, *k = q + D, *v = q + 2 * D;
            float *dq = dqkv + base, *dk = dq + D, *dv = dq + 2 * D;
            const float *p = att + (size_t)task * T * T;
            const float *dO = dout + (size_t)b * T * D + (size_t)h * dh;
            float *ds = scratch + (size_t)scratch_slot(th) * T * T;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, dh, 1.0f, dO, D, v, 3 * D,
                        0.0f, ds, T);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, dh, T, 1.0f, p, T, dO, D, 0.0f,
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
        });
}
