/* Training's backward kernels on vitc's own GEMMs (issue 27, item 6):
 * matmul_backward's dW, dbias and dX and attention_backward's dQ, dK, dV
 * are within the rounding bound of a double-precision sum, and every
 * instruction-set path this CPU runs, on 1 and 2 threads, gives the bits
 * of the portable C path on one thread (edge shapes: rows, inputs and
 * outputs off the tiles, K over several of the aᵀ b kernel's blocks). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static const kernels_isa PATHS[] = {KERNELS_ISA_GENERIC, KERNELS_ISA_AVX2, KERNELS_ISA_AVX512,
                                    KERNELS_ISA_AVX512_VNNI, KERNELS_ISA_AVX_VNNI,
                                    KERNELS_ISA_AVX512_BF16, KERNELS_ISA_NEON};
#define NUM_PATHS (sizeof PATHS / sizeof PATHS[0])

static uint32_t lcg(uint32_t *state) { return *state = *state * 1664525u + 1013904223u; }
static float uniform(uint32_t *state) { return (float)(lcg(state) >> 8) / 16777216.0f * 2 - 1; }

static float *random_floats(size_t n, uint32_t *seed) {
    float *x = kernels_alloc_floats(n);
    cr_assert(x);
    for (size_t i = 0; i < n; i++) x[i] = uniform(seed);
    return x;
}

/* |got - want| within K float roundings of the sum of |terms|. */
static void expect_near(float got, double want, double abs_sum, int K, const char *what, size_t i) {
    const double bound = (K + 2) * 1.2e-7 * abs_sum + 1e-30;
    cr_expect(fabs(got - want) <= bound, "%s[%zu]: %.9g, double %.9g (bound %.3g)", what, i, got,
              want, bound);
}

static void expect_same(const float *a, const float *b, size_t n, const char *what,
                        kernels_isa isa, int threads) {
    cr_expect(memcmp(a, b, n * sizeof(float)) == 0, "%s: path %s on %d threads differs from C",
              what, kernels_isa_name(isa), threads);
}

static void check_linear(int rows, int in_dim, int out_dim) {
    uint32_t seed = (uint32_t)(rows * 131 + in_dim * 7 + out_dim);
    float *x = random_floats((size_t)rows * in_dim, &seed);
    float *dy = random_floats((size_t)rows * out_dim, &seed);
    float *w = random_floats((size_t)out_dim * in_dim, &seed);
    float *ones = kernels_alloc_floats(rows), *scratch = kernels_alloc_floats(
        kernels_matmul_scratch_floats(out_dim, in_dim));
    for (int r = 0; r < rows; r++) ones[r] = 1.0f;
    float *want[3], *got[3];
    const size_t n[3] = {(size_t)out_dim * in_dim, (size_t)out_dim, (size_t)rows * in_dim};
    for (int i = 0; i < 3; i++) want[i] = kernels_alloc_floats(n[i]), got[i] = kernels_alloc_floats(n[i]);
    matmul_backward(want[2], want[0], want[1], dy, x, w, ones, rows, in_dim, out_dim, scratch,
                    kernels_threading(KERNELS_TRAINING, 1, KERNELS_ISA_GENERIC));
    for (int o = 0; o < out_dim; o++)
        for (int i = 0; i < in_dim; i++) {
            double s = 0, a = 0;
            for (int r = 0; r < rows; r++) {
                const double t = (double)dy[(size_t)r * out_dim + o] * x[(size_t)r * in_dim + i];
                s += t, a += fabs(t);
            }
            expect_near(want[0][(size_t)o * in_dim + i], s, a, rows, "dW", (size_t)o * in_dim + i);
        }
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < in_dim; i++) {
            double s = 0, a = 0;
            for (int o = 0; o < out_dim; o++) {
                const double t = (double)dy[(size_t)r * out_dim + o] * w[(size_t)o * in_dim + i];
                s += t, a += fabs(t);
            }
            expect_near(want[2][(size_t)r * in_dim + i], s, a, out_dim, "dX", (size_t)r * in_dim + i);
        }
    for (size_t p = 0; p < NUM_PATHS; p++) {
        if (!kernels_isa_supported(PATHS[p])) continue;
        for (int threads = 1; threads <= 2; threads++) {
            matmul_backward(got[2], got[0], got[1], dy, x, w, ones, rows, in_dim, out_dim, scratch,
                            kernels_threading(KERNELS_TRAINING, threads, PATHS[p]));
            expect_same(got[0], want[0], n[0], "dW", PATHS[p], threads);
            expect_same(got[2], want[2], n[2], "dX", PATHS[p], threads);
        }
    }
    for (int i = 0; i < 3; i++) free(want[i]), free(got[i]);
    free(x), free(dy), free(w), free(ones), free(scratch);
}

Test(train_kernels, linear_backward_edges) {
    check_linear(1, 1, 1);
    check_linear(37, 19, 45);
    check_linear(300, 64, 192); /* K over three blocks of 128 */
    check_linear(130, 33, 13);
    check_linear(50, 128, 64);
}

/* Probabilities [batch*H, T, T]: rows of a softmax of random scores. */
static float *random_probs(int tasks, int T, uint32_t *seed) {
    float *p = random_floats((size_t)tasks * T * T, seed);
    for (size_t r = 0; r < (size_t)tasks * T; r++) {
        float *row = p + r * T, sum = 0;
        for (int j = 0; j < T; j++) sum += row[j] = expf(2 * row[j]);
        for (int j = 0; j < T; j++) row[j] /= sum;
    }
    return p;
}

/* dQ, dK, dV of one (image, head) in double, into want [T, 3D]'s columns. */
static void attention_reference(double *want, const float *qkv, const float *dout, const float *p,
                                int T, int D, int dh, int h) {
    const double scale = 1.0 / sqrt((double)dh);
    double *ds = calloc((size_t)T * T, sizeof *ds);
    cr_assert(ds);
    for (int i = 0; i < T; i++) {
        double dot = 0;
        for (int j = 0; j < T; j++) {
            double s = 0;
            for (int d = 0; d < dh; d++)
                s += (double)dout[(size_t)i * D + h * dh + d] * qkv[(size_t)j * 3 * D + 2 * D + h * dh + d];
            ds[(size_t)i * T + j] = s;
            dot += s * p[(size_t)i * T + j];
        }
        for (int j = 0; j < T; j++)
            ds[(size_t)i * T + j] = p[(size_t)i * T + j] * (ds[(size_t)i * T + j] - dot) * scale;
    }
    for (int t = 0; t < T; t++)
        for (int d = 0; d < dh; d++) {
            double q = 0, k = 0, v = 0;
            for (int j = 0; j < T; j++) {
                q += ds[(size_t)t * T + j] * qkv[(size_t)j * 3 * D + D + h * dh + d];
                k += ds[(size_t)j * T + t] * qkv[(size_t)j * 3 * D + h * dh + d];
                v += (double)p[(size_t)j * T + t] * dout[(size_t)j * D + h * dh + d];
            }
            double *row = want + (size_t)t * 3 * D + h * dh + d;
            row[0] = q, row[D] = k, row[2 * D] = v;
        }
    free(ds);
}

static void check_attention(int batch, int T, int D, int heads) {
    uint32_t seed = (uint32_t)(T * 31 + D);
    const size_t nq = (size_t)batch * T * 3 * D;
    float *qkv = random_floats(nq, &seed), *dout = random_floats((size_t)batch * T * D, &seed);
    float *p = random_probs(batch * heads, T, &seed);
    float *scratch = kernels_alloc_floats(kernels_train_scratch_floats(2, T, D, heads, D, 1, D));
    float *want = kernels_alloc_floats(nq), *got = kernels_alloc_floats(nq);
    attention_backward(want, scratch, dout, qkv, p, batch, T, D, heads,
                       kernels_threading(KERNELS_TRAINING, 1, KERNELS_ISA_GENERIC));
    double *ref = calloc((size_t)T * 3 * D, sizeof *ref);
    cr_assert(ref);
    const int dh = D / heads;
    for (int h = 0; h < heads; h++) /* image 0, within a loose bound (two chained products) */
        attention_reference(ref, qkv, dout, p + (size_t)h * T * T, T, D, dh, h);
    for (size_t i = 0; i < (size_t)T * 3 * D; i++)
        cr_expect(fabs(want[i] - ref[i]) <= 1e-5 * (1 + fabs(ref[i])), "dqkv[%zu]: %.9g, double %.9g",
                  i, want[i], ref[i]);
    for (size_t k = 0; k < NUM_PATHS; k++) {
        if (!kernels_isa_supported(PATHS[k])) continue;
        for (int threads = 1; threads <= 2; threads++) {
            memset(got, 0, nq * sizeof *got);
            attention_backward(got, scratch, dout, qkv, p, batch, T, D, heads,
                               kernels_threading(KERNELS_TRAINING, threads, PATHS[k]));
            expect_same(got, want, nq, "dqkv", PATHS[k], threads);
        }
    }
    free(ref), free(qkv), free(dout), free(p), free(scratch), free(want), free(got);
}

Test(train_kernels, attention_backward_edges) {
    check_attention(2, 5, 12, 3);  /* dh 4 */
    check_attention(3, 50, 64, 4); /* the shipped model's shape */
    check_attention(1, 197, 192, 3); /* DeiT-Tiny's */
    check_attention(2, 17, 40, 2);   /* dh 20: a panel and a part */
}
