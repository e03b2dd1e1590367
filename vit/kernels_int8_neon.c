/* The int8 kernels for aarch64 (kernels_int8.h), three paths on two
 * layouts, each computing every group's exact int32 sums and then the one
 * float step per group of the generic path:
 *  - neon (any aarch64): the s8 quads of avx512vnni; smull (8 x 8 -> 16
 *    bits) of two quads' products summed by smlal in int16, then sadalp
 *    into int32 pairs, which one addp per group folds into columns;
 *  - neon-dotprod (FEAT_DotProd): the same quads, sdot: 4 products of 4
 *    columns into int32 lanes an instruction;
 *  - neon-i8mm (FEAT_I8MM): its own layout, 8 k of a column together
 *    ([panels][kpad/8][QPANEL][8]), smmla: a 2 rows x 8 k by 2 columns x 8
 *    k product into a 2 x 2 int32 block.
 * Activations are s8 here (q itself, not q + 128: quantize_forward writes
 * them so for these paths), so no offset is needed; the quads' offsets
 * stay in the layout for the x86 paths sharing it. The int16 step of the
 * neon path is exact: |q| <= 127 (quantisation clamps) and |w| <= 128, so
 * two products stay within 2 x 16256. The float step is vfmaq_f32 (one
 * rounding, fmaf's) on vcvtq_f32_s32 ((float) in C, to nearest), the
 * epilogue (residual + bias) + sum lane by lane: the generic path's bits.
 * DotProd and I8MM code is compiled for them by target attributes (the
 * build needs neither) and run only where getauxval reports them
 * (kernels_isa_supported). */
#if defined(__aarch64__)

#include <arm_neon.h>
#include <string.h>

#include "kernels_int8.h"

#define INLINE static inline __attribute__((always_inline))
/* arm_neon.h of gcc 12 defines the intrinsics for armv8.2-a plus the
 * feature, and inlines them only into functions of that target or more
 * (a bare "+dotprod" is refused); every CPU with the feature is v8.2 or
 * later. */
#define DOTPROD_FN __attribute__((target("arch=armv8.2-a+dotprod")))
#define I8MM_FN __attribute__((target("arch=armv8.2-a+i8mm")))

/* Row r's 16 sums of panel p through the epilogue (qmatmul_output's order,
 * lane by lane; a part panel through qmatmul_output itself). */
INLINE void store_row(const qmatmul_call *c, int r, int p, const float32x4_t sum[4]) {
    const int first = p * QPANEL;
    const int here = c->w->rows - first < QPANEL ? c->w->rows - first : QPANEL;
    float *out = c->d.out + (size_t)r * c->d.ldo + first;
    if (here < QPANEL) {
        float s[QPANEL];
        for (int q = 0; q < 4; q++) vst1q_f32(s + 4 * q, sum[q]);
        for (int k = 0; k < here; k++)
            out[k] = qmatmul_output(c->d.ep.residual, c->d.ep.bias, c->d.ldo, r, first + k, s[k]);
        return;
    }
    for (int q = 0; q < 4; q++) {
        float32x4_t base = c->d.ep.bias ? vld1q_f32(c->d.ep.bias + first + 4 * q) : vdupq_n_f32(0.0f);
        if (c->d.ep.residual)
            base = vaddq_f32(vld1q_f32(c->d.ep.residual + (size_t)r * c->d.ldo + first + 4 * q), base);
        vst1q_f32(out + 4 * q, vaddq_f32(base, sum[q]));
    }
}

/* sum + (float)acc * (weight scales x the input scale): fmaf's one rounding. */
INLINE float32x4_t group_step(float32x4_t sum, int32x4_t acc, const float *ws, float x) {
    return vfmaq_f32(sum, vcvtq_f32_s32(acc), vmulq_n_f32(vld1q_f32(ws), x));
}

/* Four s8 activations at p in all four words of a q register. */
INLINE int8x16_t quad_q(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return vreinterpretq_s8_s32(vdupq_n_s32(v));
}

/* ---------------------------------------------------------------- neon */

/* acc[2j], acc[2j+1] += columns 4j .. 4j+3 of quads w0 (and w1, when two)
 * times activations a0 (a1, each quad in all four words): int32 pairs (k
 * 0-1, k 2-3) of each column. */
INLINE void neon_quads(int32x4_t acc[8], const int8_t *w0, int8x16_t a0, const int8_t *w1,
                       int8x16_t a1, const int two) {
    for (int j = 0; j < 4; j++) {
        const int8x16_t v0 = vld1q_s8(w0 + 16 * j);
        int16x8_t lo = vmull_s8(vget_low_s8(v0), vget_low_s8(a0)), hi = vmull_high_s8(v0, a0);
        if (two) {
            const int8x16_t v1 = vld1q_s8(w1 + 16 * j);
            lo = vmlal_s8(lo, vget_low_s8(v1), vget_low_s8(a1));
            hi = vmlal_high_s8(hi, v1, a1);
        }
        acc[2 * j] = vpadalq_s16(acc[2 * j], lo);
        acc[2 * j + 1] = vpadalq_s16(acc[2 * j + 1], hi);
    }
}

/* Rows r0 .. r0 + mr - 1 of panel p (mr a constant where inlined). */
INLINE void neon_tile(const qmatmul_call *c, int r0, const int mr, int p) {
    const kernels_qmatrix *w = c->w;
    const int G = w->groups, quads = w->kgroup / 4;
    const size_t kpad = (size_t)w->kpad;
    const int8_t *v = (const int8_t *)w->values + (size_t)p * kpad * QPANEL;
    const float *s = w->scales + (size_t)p * G * QPANEL;
    const int8_t *a = (const int8_t *)c->qinp + (size_t)r0 * kpad;
    float32x4_t sum[2][4];
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < 4; q++) sum[i][q] = vdupq_n_f32(0.0f);
    for (int g = 0; g < G; g++) {
        int32x4_t acc[2][8];
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < 8; j++) acc[i][j] = vdupq_n_s32(0);
        const int8_t *wg = v + (size_t)g * quads * 4 * QPANEL;
        const int8_t *ag = a + (size_t)g * quads * 4;
        int q = 0;
        for (; q + 2 <= quads; q += 2)
            for (int i = 0; i < mr; i++)
                neon_quads(acc[i], wg + q * 4 * QPANEL, quad_q(ag + i * kpad + 4 * q),
                           wg + (q + 1) * 4 * QPANEL, quad_q(ag + i * kpad + 4 * q + 4), 1);
        if (q < quads)
            for (int i = 0; i < mr; i++)
                neon_quads(acc[i], wg + q * 4 * QPANEL, quad_q(ag + i * kpad + 4 * q), NULL,
                           vdupq_n_s8(0), 0);
        for (int i = 0; i < mr; i++) {
            const float x = c->inp_scale[(size_t)(r0 + i) * G + g];
            for (int j = 0; j < 4; j++)
                sum[i][j] = group_step(sum[i][j], vpaddq_s32(acc[i][2 * j], acc[i][2 * j + 1]),
                                       s + (size_t)g * QPANEL + 4 * j, x);
        }
    }
    for (int i = 0; i < mr; i++) store_row(c, r0 + i, p, sum[i]);
}

/* The micro-kernel: one panel, two rows at a time. */
#define TILE(m) neon_tile(call, r0, m, p)
GEMM_TILE_FN(tile_neon, , 2, TILE)
#undef TILE

const gemm_tiles qtiles_neon = {tile_neon, 1, &kernels_path_neon};

/* ------------------------------------------------------------- dotprod */

#define DMR 3 /* rows of a dotprod tile: 12 int32 + 12 float accumulators, 4 weights */

DOTPROD_FN INLINE void dot_tile(const qmatmul_call *c, int r0, const int mr, int p,
                                const int fixed_quads) {
    const kernels_qmatrix *w = c->w;
    const int G = w->groups, quads = fixed_quads ? fixed_quads : w->kgroup / 4;
    const size_t kpad = (size_t)w->kpad;
    const int8_t *v = (const int8_t *)w->values + (size_t)p * kpad * QPANEL;
    const float *s = w->scales + (size_t)p * G * QPANEL;
    const int8_t *a = (const int8_t *)c->qinp + (size_t)r0 * kpad;
    float32x4_t sum[DMR][4];
#pragma GCC unroll 3
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < 4; j++) sum[i][j] = vdupq_n_f32(0.0f);
    for (int g = 0; g < G; g++) {
        int32x4_t acc[DMR][4];
#pragma GCC unroll 3
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < 4; j++) acc[i][j] = vdupq_n_s32(0);
        const int8_t *wg = v + (size_t)g * quads * 4 * QPANEL;
        const int8_t *ag = a + (size_t)g * quads * 4;
#pragma GCC unroll 2
        for (int q = 0; q < quads; q++) {
            const int8_t *wq = wg + q * 4 * QPANEL;
            const int8x16_t w0 = vld1q_s8(wq), w1 = vld1q_s8(wq + 16), w2 = vld1q_s8(wq + 32),
                            w3 = vld1q_s8(wq + 48);
#pragma GCC unroll 3
            for (int i = 0; i < mr; i++) {
                const int8x16_t x = quad_q(ag + i * kpad + 4 * q);
                acc[i][0] = vdotq_s32(acc[i][0], w0, x);
                acc[i][1] = vdotq_s32(acc[i][1], w1, x);
                acc[i][2] = vdotq_s32(acc[i][2], w2, x);
                acc[i][3] = vdotq_s32(acc[i][3], w3, x);
            }
        }
#pragma GCC unroll 3
        for (int i = 0; i < mr; i++) {
            const float x = c->inp_scale[(size_t)(r0 + i) * G + g];
            for (int j = 0; j < 4; j++)
                sum[i][j] = group_step(sum[i][j], acc[i][j], s + (size_t)g * QPANEL + 4 * j, x);
        }
    }
#pragma GCC unroll 3
    for (int i = 0; i < mr; i++) store_row(c, r0 + i, p, sum[i]);
}

/* The micro-kernel: one panel, up to DMR rows; groups of 32 (every
 * layer of a vitc int8 file) unrolled. */
#define TILE(m) \
    (((const qmatmul_call *)call)->w->kgroup == 32 ? dot_tile(call, r0, m, p, 8) : dot_tile(call, r0, m, p, 0))
GEMM_TILE_FN(tile_neon_dotprod, DOTPROD_FN, 3, TILE)
#undef TILE

const gemm_tiles qtiles_neon_dotprod = {tile_neon_dotprod, 1, &kernels_path_neon};

/* ---------------------------------------------------------------- i8mm */

/* Rows r0 and r1 (r1 == r0 for a last odd row: computed twice, stored
 * once) of panel p. acc[j] holds the 2 x 2 block rows r0, r1 x columns
 * 2j, 2j + 1. */
I8MM_FN INLINE void mm_tile(const qmatmul_call *c, int r0, int r1, int p, const int fixed_octs) {
    const kernels_qmatrix *w = c->w;
    const int G = w->groups, octs = fixed_octs ? fixed_octs : w->kgroup / 8;
    const size_t kpad = (size_t)w->kpad;
    const int8_t *v = (const int8_t *)w->values + (size_t)p * kpad * QPANEL;
    const float *s = w->scales + (size_t)p * G * QPANEL;
    const int8_t *a0 = (const int8_t *)c->qinp + (size_t)r0 * kpad;
    const int8_t *a1 = (const int8_t *)c->qinp + (size_t)r1 * kpad;
    float32x4_t sum[2][4];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) sum[i][j] = vdupq_n_f32(0.0f);
    for (int g = 0; g < G; g++) {
        int32x4_t acc[8];
        for (int j = 0; j < 8; j++) acc[j] = vdupq_n_s32(0);
        const int8_t *wg = v + (size_t)g * octs * 8 * QPANEL;
        const size_t k0 = (size_t)g * octs * 8;
#pragma GCC unroll 4
        for (int o = 0; o < octs; o++) {
            const int8x16_t x = vcombine_s8(vld1_s8(a0 + k0 + 8 * o), vld1_s8(a1 + k0 + 8 * o));
            const int8_t *wo = wg + o * 8 * QPANEL;
            for (int j = 0; j < 8; j++) acc[j] = vmmlaq_s32(acc[j], x, vld1q_s8(wo + 16 * j));
        }
        const float x0 = c->inp_scale[(size_t)r0 * G + g], x1 = c->inp_scale[(size_t)r1 * G + g];
        for (int j = 0; j < 4; j++) {
            /* columns 4j .. 4j+3: the low halves (row r0) of blocks 2j, 2j+1, then the high */
            const int64x2_t b0 = vreinterpretq_s64_s32(acc[2 * j]);
            const int64x2_t b1 = vreinterpretq_s64_s32(acc[2 * j + 1]);
            const float *ws = s + (size_t)g * QPANEL + 4 * j;
            sum[0][j] = group_step(sum[0][j], vreinterpretq_s32_s64(vzip1q_s64(b0, b1)), ws, x0);
            sum[1][j] = group_step(sum[1][j], vreinterpretq_s32_s64(vzip2q_s64(b0, b1)), ws, x1);
        }
    }
    store_row(c, r0, p, sum[0]);
    if (r1 != r0) store_row(c, r1, p, sum[1]);
}

/* The micro-kernel: one panel, rows r0 and r0 + 1 at a time (a last odd
 * row computed twice, stored once); groups of 32 (vitc int8 files)
 * unrolled. */
#define TILE(m)                                                          \
    (((const qmatmul_call *)call)->w->kgroup == 32 ? mm_tile(call, r0, r0 + m - 1, p, 4) \
                                                    : mm_tile(call, r0, r0 + m - 1, p, 0))
GEMM_TILE_FN(tile_neon_i8mm, I8MM_FN, 2, TILE)

const gemm_tiles qtiles_neon_i8mm = {tile_neon_i8mm, 1, &kernels_path_neon};

#endif /* elsewhere never chosen (kernels_isa_supported): kernels_int8.c's stand-ins */
