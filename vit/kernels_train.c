/* Training's backward GEMMs on vitc's own kernels (kernels.h
 * matmul_backward, attention_backward): dX = dY W and dQ = dS K on the
 * packed GEMM inference runs (kernels_gemm.h), dW = dYᵀ X, dV = Pᵀ dO and
 * dK = dSᵀ Q on the aᵀ b kernel of kernels_train.h, dP = dO Vᵀ on the
 * packed GEMM with V packed as its weights. Every element is one chain of
 * fmas over K in order, so a gradient's bits depend neither on the thread
 * count nor on the instruction-set path. Nothing here allocates. */
#include "kernels_train.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

#include "kernels_gemm.h"
#include "kernels_parallel.h"

/* ------------------------------------------------------------ aᵀ b */

void tn_generic(const tn_call *t, int m0, int m1, int k0, int k1, int accumulate) {
    for (int m = m0; m < m1; m++)
        for (int j = 0; j < t->n; j += FPANEL) {
            const int w = t->n - j < FPANEL ? t->n - j : FPANEL;
            float acc[FPANEL] = {0}, *c = t->c + (size_t)m * t->ldc + j;
            if (accumulate)
                for (int l = 0; l < w; l++) acc[l] = c[l];
            for (int k = k0; k < k1; k++) {
                const float a = t->a[(size_t)k * t->lda + m], *b = t->b + (size_t)k * t->ldb + j;
                for (int l = 0; l < w; l++) acc[l] = fmaf(a, b[l], acc[l]);
            }
            for (int l = 0; l < w; l++) c[l] = acc[l];
        }
}

static tn_fn *tn_of(kernels_isa isa) {
    const kernels_path *p = kernels_path_of(isa);
    return p == &kernels_path_avx512 ? tn_avx512 : p == &kernels_path_avx2 ? tn_avx2 : tn_generic;
}

/* Rows of the batch a block of K holds: the block's rows of a and b stay
 * in L2 while every tile of c passes over them. */
#define TN_KBLOCK 128

static void tn_rows(tn_fn *run, const tn_call *t, int m0, int m1, int K) {
    for (int k0 = 0; k0 < K; k0 += TN_KBLOCK)
        run(t, m0, m1, k0, K - k0 < TN_KBLOCK ? K : k0 + TN_KBLOCK, k0 > 0);
}

/* c [M, N] = aᵀ b over K, c's rows split statically over th's threads in
 * whole 12-row tiles (no thread ever shares an element). */
static void tn_run(float *c, int ldc, const float *a, int lda, const float *b, int ldb, int M,
                   int N, int K, kernels_threads th) {
    const tn_call t = {c, ldc, a, lda, b, ldb, N};
    tn_fn *run = tn_of(th.isa);
    const int tiles = (M + 11) / 12;
    if (th.count <= 1 || tiles < 2) {
        tn_rows(run, &t, 0, M, K);
        return;
    }
#pragma omp parallel num_threads(th.count)
    {
        const int team = omp_get_num_threads(), id = omp_get_thread_num();
        const int m0 = 12 * (int)((long)tiles * id / team);
        const int m1 = 12 * (int)((long)tiles * (id + 1) / team);
        if (m0 < M) tn_rows(run, &t, m0, m1 < M ? m1 : M, K);
    }
}

/* ------------------------------------------------------------ linear */

static size_t matmul_backward_scratch_floats(int in_dim, int out_dim) {
    return kernels_matmul_scratch_floats(out_dim, in_dim);
}

void matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                     const float *inp, const float *weight, const float *ones, int rows,
                     int in_dim, int out_dim, float *scratch, kernels_threads th) {
    tn_run(dweight, in_dim, dout, out_dim, inp, in_dim, out_dim, in_dim, rows, th);
    if (dbias)
        cblas_sgemv(CblasRowMajor, CblasTrans, rows, out_dim, 1.0f, dout, out_dim, ones, 1, 0.0f,
                    dbias, 1);
    if (dinp)
        kernels_matmul(dinp, in_dim, dout, out_dim, rows, weight, in_dim, out_dim, in_dim, scratch,
                       th);
}

/* ------------------------------------------------------------ attention */

/* A thread's part of attention_backward's scratch: V as the weights of
 * dO Vᵀ ([ceil(T / 16)][dh][16]), K's columns as those of dS K
 * ([ceil(dh / 16)][T][16]), then dS [T, T]. */
static size_t vt_floats(int T, int dh) { return (size_t)(T + FPANEL - 1) / FPANEL * FPANEL * dh; }
static size_t kc_floats(int T, int dh) { return (size_t)(dh + FPANEL - 1) / FPANEL * FPANEL * T; }

static size_t attention_backward_scratch_floats(int T, int D, int heads) {
    const int dh = D / heads;
    const size_t floats = vt_floats(T, dh) + kc_floats(T, dh) + (size_t)T * T;
    return (floats + 15) / 16 * 16;
}

/* x [rows, cols] (rows ld apart) as the weights of a product with xᵀ:
 * panels of its rows, lanes past rows zero. */
static void pack_rows(float *dst, const float *x, size_t ld, int rows, int cols) {
    for (int t = 0; t < (rows + FPANEL - 1) / FPANEL * FPANEL; t++) {
        float *d = dst + (size_t)(t / FPANEL) * cols * FPANEL + t % FPANEL;
        for (int c = 0; c < cols; c++) d[(size_t)c * FPANEL] = t < rows ? x[t * ld + c] : 0.0f;
    }
}

/* x [rows, cols] as the weights of a product with x: panels of its
 * columns, lanes past cols zero. */
static void pack_cols(float *dst, const float *x, size_t ld, int rows, int cols) {
    for (int j0 = 0; j0 < cols; j0 += FPANEL) {
        const int w = cols - j0 < FPANEL ? cols - j0 : FPANEL;
        float *panel = dst + (size_t)j0 * rows;
        for (int r = 0; r < rows; r++) {
            for (int l = 0; l < w; l++) panel[(size_t)r * FPANEL + l] = x[r * ld + j0 + l];
            for (int l = w; l < FPANEL; l++) panel[(size_t)r * FPANEL + l] = 0.0f;
        }
    }
}

/* dS = P ⊙ (dP - rowsum(dP ⊙ P)), times scale (dQ = dS K and dK = dSᵀ Q
 * then need no scaling of their own), in place of dP. */
static void softmax_backward(float *ds, const float *p, int T, float scale) {
    for (int i = 0; i < T; i++) {
        float *dsr = ds + (size_t)i * T;
        const float *pr = p + (size_t)i * T;
        float dot = 0.0f;
        for (int j = 0; j < T; j++) dot += dsr[j] * pr[j];
        for (int j = 0; j < T; j++) dsr[j] = pr[j] * (dsr[j] - dot) * scale;
    }
}

/* One (image, head) of attention_backward with its thread's scratch. */
static void attention_backward_head(float *dq, const float *q, const float *dO, const float *p,
                                    int T, int D, int dh, float *mine, kernels_isa isa) {
    const kernels_path *path = kernels_path_of(isa);
    const int ld = 3 * D;
    const float *k = q + D, *v = q + 2 * D;
    float *dk = dq + D, *dv = dq + 2 * D;
    float *vt = mine, *kc = vt + vt_floats(T, dh), *ds = kc + kc_floats(T, dh);
    pack_rows(vt, v, (size_t)ld, T, dh);
    const gemm_call dp = {{ds, T, T, T, {0}}, dO, D, vt, dh};
    gemm_drive(&dp, &path->gemm, 0, (T + FPANEL - 1) / FPANEL);
    const tn_call dvc = {dv, ld, p, T, dO, D, dh};
    tn_of(isa)(&dvc, 0, T, 0, T, 0);
    softmax_backward(ds, p, T, 1.0f / sqrtf((float)dh));
    pack_cols(kc, k, (size_t)ld, T, dh);
    const gemm_call dqc = {{dq, ld, T, dh, {0}}, ds, T, kc, T};
    gemm_drive(&dqc, &path->gemm, 0, (dh + FPANEL - 1) / FPANEL);
    const tn_call dkc = {dk, ld, ds, T, q, ld, dh};
    tn_of(isa)(&dkc, 0, T, 0, T, 0);
}

void attention_backward(float *dqkv, float *scratch, const float *dout, const float *qkv,
                        const float *att, int batch, int T, int D, int heads,
                        kernels_threads th) {
    const int H = heads, dh = D / H;
    const size_t slot = attention_backward_scratch_floats(T, D, heads);
    PARALLEL_FOR(
        for (int task = 0; task < batch * H; task++) {
            const int b = task / H, h = task % H;
            const size_t base = (size_t)b * T * 3 * D + (size_t)h * dh;
            attention_backward_head(dqkv + base, qkv + base, dout + (size_t)b * T * D + (size_t)h * dh,
                                    att + (size_t)task * T * T, T, D, dh,
                                    scratch + (size_t)scratch_slot(th) * slot, th.isa);
        });
}

size_t kernels_train_scratch_floats(int threads, int T, int D, int heads, int mlp, int classes,
                                    int pooled) {
    const size_t fwd = attention_scratch_floats(T, D, heads, T);
    const size_t bwd = attention_backward_scratch_floats(T, D, heads);
    size_t floats = (size_t)(threads > 1 ? threads : 1) * (fwd > bwd ? fwd : bwd);
    const size_t packs[] = {matmul_backward_scratch_floats(D, 3 * D),
                            matmul_backward_scratch_floats(D, D),
                            matmul_backward_scratch_floats(D, mlp),
                            matmul_backward_scratch_floats(mlp, D),
                            matmul_backward_scratch_floats(pooled, classes > 0 ? classes : 1)};
    for (size_t i = 0; i < sizeof packs / sizeof *packs; i++)
        if (packs[i] > floats) floats = packs[i];
    return floats;
}
