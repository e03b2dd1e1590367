/* kernels_rows.h — the row kernels every path runs (LayerNorm, softmax,
 * GELU), written once in C. Each path file includes this and wraps the
 * functions in its own target attribute, so gcc vectorises the same C for
 * its vector width: the same operations on every element in every path
 * (no -ffast-math, -ffp-contract=off), hence the same bits.
 *
 * Reductions over a row (the LayerNorm mean and variance, the softmax max
 * and sum) use exactly 16 partial sums, x[i] into partial i mod 16, then a
 * fixed pairwise tree: one AVX-512 vector, two AVX2 ones, an array in C,
 * and one order whatever the width.
 *
 * exp and erf are written with fmaf, one fused multiply-add per step, as
 * every vector path's FMA computes it; gcc inlines fmaf as an FMA where the
 * target has one (the portable path calls libm's, the same bits). No
 * float-to-int conversion: a NaN input must stay defined behaviour.
 * Internal to the kernel layer. */
#ifndef VIT_KERNELS_ROWS_H
#define VIT_KERNELS_ROWS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"

#define ROWS_INLINE static inline __attribute__((always_inline))

#define INV_SQRT2 0.70710678118654752f

/* e^x within 1.2 ulp (62e-9 relative on the reduced range): x = n ln2 + r,
 * n = round(x log2 e) by adding 1.5 * 2^23 (which leaves n in the low bits
 * of t), r by two fused steps (Cody-Waite, ln2 = hi + lo), e^r by a degree-6
 * polynomial (1 + r + c2 r^2 + ... , least-squares fitted against the
 * relative error on |r| <= ln2 / 2), 2^n from the bits of t. Below -87.3
 * (under FLT_MIN) it is 0, above 88 it saturates at e^88. */
/* rows_exp's constants, shared with the vector paths' copies of it. */
#define EXP_HI 88.0f
#define EXP_LO (-87.3f)
#define EXP_SHIFT 0x1.8p23f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693145751953125f
#define EXP_LN2_LO 1.428606765330187e-06f
#define EXP_C6 0.001381459878757596f
#define EXP_C5 0.0083687175065279f
#define EXP_C4 0.04166838899254799f
#define EXP_C3 0.1666652113199234f
#define EXP_C2 0.4999999403953552f
#define EXP_BIAS (127u - 0x4B400000u) /* t's bits + this, shifted: 2^n */

/* rows_exp's steps from the clamped x (of type T: a float or a vector) to
 * t and p, written once for every path: FMA(a, b, c) is the path's
 * a b + c rounded once, SUB its subtraction, SET1 a constant in every
 * lane. The vector paths (kernels_gemm_avx2.c, kernels_gemm_avx512.c)
 * differ only in the clamp before and the 2^n after. */
#define ROWS_EXP_STEPS(T, FMA, SUB, SET1, x, t, p)           \
    const T t = FMA(x, SET1(EXP_LOG2E), SET1(EXP_SHIFT));   \
    const T exp_n_ = SUB(t, SET1(EXP_SHIFT));               \
    T exp_r_ = FMA(exp_n_, SET1(-EXP_LN2_HI), x);           \
    exp_r_ = FMA(exp_n_, SET1(-EXP_LN2_LO), exp_r_);        \
    T p = SET1(EXP_C6);                                     \
    p = FMA(p, exp_r_, SET1(EXP_C5));                       \
    p = FMA(p, exp_r_, SET1(EXP_C4));                       \
    p = FMA(p, exp_r_, SET1(EXP_C3));                       \
    p = FMA(p, exp_r_, SET1(EXP_C2));                       \
    p = FMA(p, exp_r_, SET1(1.0f));                         \
    p = FMA(p, exp_r_, SET1(1.0f));

#define ROWS_SUB(a, b) ((a) - (b))
#define ROWS_SCALAR(v) (v)

ROWS_INLINE float rows_exp(float x) {
    const int underflow = x < EXP_LO;
    x = x > EXP_HI ? EXP_HI : (x < EXP_LO ? EXP_LO : x); /* a NaN passes */
    ROWS_EXP_STEPS(float, fmaf, ROWS_SUB, ROWS_SCALAR, x, t, p)
    uint32_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits + EXP_BIAS) << 23; /* 2^n, n in -126..127 */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return underflow ? 0.0f : p * scale;
}

/* erf(x) within 1.5e-7 absolute (Abramowitz & Stegun 7.1.26, Horner by
 * fused steps, rows_exp). */
ROWS_INLINE float rows_erf(float x) {
    const float a = fabsf(x);
    const float t = 1.0f / fmaf(0.3275911f, a, 1.0f);
    float p = 1.061405429f;
    p = fmaf(p, t, -1.453152027f);
    p = fmaf(p, t, 1.421413741f);
    p = fmaf(p, t, -0.284496736f);
    p = fmaf(p, t, 0.254829592f);
    const float y = 1.0f - p * t * rows_exp(-(a * a));
    return x < 0.0f ? -y : y;
}

/* Partial i (mod 16) combined: lanes l and l + 8, then l and l + 4, ... */
ROWS_INLINE float rows_tree16(float p[16]) {
    for (int l = 0; l < 8; l++) p[l] = p[l] + p[l + 8];
    for (int l = 0; l < 4; l++) p[l] = p[l] + p[l + 4];
    for (int l = 0; l < 2; l++) p[l] = p[l] + p[l + 2];
    return p[0] + p[1];
}

ROWS_INLINE float rows_sum16(const float *x, int n) {
    float p[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) p[l] = p[l] + x[i + l];
    for (int l = 0; i + l < n; l++) p[l] = p[l] + x[i + l];
    return rows_tree16(p);
}

/* Sum of (x[i] - m)^2 in the same 16 partials. */
ROWS_INLINE float rows_sq_dev16(const float *x, int n, float m) {
    float p[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            const float d = x[i + l] - m;
            p[l] = p[l] + d * d;
        }
    for (int l = 0; i + l < n; l++) {
        const float d = x[i + l] - m;
        p[l] = p[l] + d * d;
    }
    return rows_tree16(p);
}

/* max by x > m ? x : m, also in 16 partials and a fixed tree (so a NaN or
 * a signed zero lands the same way on every path). */
ROWS_INLINE float rows_max16(const float *x, int n) {
    float p[16];
    for (int l = 0; l < 16; l++) p[l] = x[0];
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) p[l] = x[i + l] > p[l] ? x[i + l] : p[l];
    for (int l = 0; i + l < n; l++) p[l] = x[i + l] > p[l] ? x[i + l] : p[l];
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) p[l] = p[l + w] > p[l] ? p[l + w] : p[l];
    return p[0];
}

ROWS_INLINE void rows_layernorm(float *out, float *mean, float *rstd, const float *inp,
                                const float *weight, const float *bias, int dim, float eps) {
    const float m = rows_sum16(inp, dim) / (float)dim;
    const float var = rows_sq_dev16(inp, dim, m);
    const float s = 1.0f / sqrtf(var / (float)dim + eps);
    for (int i = 0; i < dim; i++) out[i] = (inp[i] - m) * s * weight[i] + bias[i];
    if (mean) *mean = m;
    if (rstd) *rstd = s;
}

/* The exponentials and their sum (rows_sum16's partials and tree) in one
 * pass. */
ROWS_INLINE void rows_softmax(float *x, int n) {
    const float max = rows_max16(x, n);
    float p[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            const float e = rows_exp(x[i + l] - max);
            x[i + l] = e;
            p[l] = p[l] + e;
        }
    for (int l = 0; i + l < n; l++) {
        const float e = rows_exp(x[i + l] - max);
        x[i + l] = e;
        p[l] = p[l] + e;
    }
    const float inv = 1.0f / rows_tree16(p);
    for (i = 0; i < n; i++) x[i] = x[i] * inv;
}

/* out = act(inp); out may be inp. */
ROWS_INLINE void rows_act(float *out, const float *inp, size_t n, kernels_act act) {
    if (act == KERNELS_ACT_GELU)
        for (size_t i = 0; i < n; i++) out[i] = 0.5f * inp[i] * (1.0f + rows_erf(inp[i] * INV_SQRT2));
    else if (act == KERNELS_ACT_QUICK_GELU)
        for (size_t i = 0; i < n; i++) out[i] = inp[i] * (1.0f / (1.0f + rows_exp(-1.702f * inp[i])));
}

#define INV_SQRT_2PI 0.39894228040143268f

/* dinp = dout (Phi(h) + h phi(h)), h = inp: GELU's gradient (training);
 * dinp may be dout. */
ROWS_INLINE void rows_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float h = inp[i];
        dinp[i] = dout[i] * (0.5f * (1.0f + rows_erf(h * INV_SQRT2)) +
                             h * INV_SQRT_2PI * rows_exp(-0.5f * h * h));
    }
}

/* The path's elementwise kernels, each compiled with attribute attr. */
#define ROWS_DEFINE_ELEMENTWISE(suffix, attr)                                                   \
    attr static void act_##suffix(float *out, const float *inp, size_t n, kernels_act act) {    \
        rows_act(out, inp, n, act);                                                             \
    }                                                                                           \
    attr static void gelu_backward_##suffix(float *dinp, const float *inp, const float *dout,   \
                                            size_t n) {                                         \
        rows_gelu_backward(dinp, inp, dout, n);                                                 \
    }

/* The reductions, as C (the vector paths write theirs out: gcc leaves the
 * max reduction scalar). */
#define ROWS_DEFINE_REDUCTIONS(suffix, attr)                                                    \
    attr static void layernorm_##suffix(float *out, float *mean, float *rstd, const float *inp, \
                                        const float *weight, const float *bias, int dim,        \
                                        float eps) {                                            \
        rows_layernorm(out, mean, rstd, inp, weight, bias, dim, eps);                           \
    }                                                                                           \
    attr static void softmax_##suffix(float *x, int n) { rows_softmax(x, n); }

#endif
