/* kernels_tile.h — a GEMM tile's frame per instruction set, written once
 * for the fp32 and bf16 GEMMs: the accumulators zeroed, the walk over K,
 * and gemm_epilogue (kernels_gemm.h) on the vectors of sums, lane by lane
 * in gemm_epilogue's order. A dtype brings only how it loads a step of
 * weights and adds a row's products (TILE_AVX512_DEFINE,
 * TILE_AVX2_DEFINE). Each function carries the target of the plainest
 * file that includes it (a subset of every includer's), so it inlines into
 * their tiles. Internal to the kernel layer. */
#ifndef VIT_KERNELS_TILE_H
#define VIT_KERNELS_TILE_H

#include "kernels_gemm.h"

#define TILE_INLINE static inline __attribute__((always_inline))

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* Every function of an x86 path file is compiled for its instruction set
 * (gcc and clang alike; clang ignores gcc's target pragma). */
#define AVX2_FN __attribute__((target("avx2,fma")))
#ifdef __clang__ /* clang drops a target attribute naming prefer-vector-width */
#define AVX512_FN __attribute__((target("avx512f,avx2,fma")))
#else
#define AVX512_FN __attribute__((target("avx512f,avx2,fma,prefer-vector-width=512")))
#endif

/* Row r, columns j .. j + 7 of d's out from their sums (those past n
 * neither read nor written: maskload / maskstore). */
AVX2_FN TILE_INLINE void store8_avx2(const gemm_dest *d, int r, int j, __m256 v) {
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32(d->n - j), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    if (d->ep.scaled) v = _mm256_mul_ps(v, _mm256_set1_ps(d->ep.scale));
    if (d->ep.bias) v = _mm256_add_ps(v, _mm256_maskload_ps(d->ep.bias + j, m));
    if (d->ep.residual) {
        const __m256 res = _mm256_maskload_ps(d->ep.residual + (size_t)r * d->ldo + j, m);
        if (d->ep.gamma) v = _mm256_mul_ps(_mm256_maskload_ps(d->ep.gamma + j, m), v);
        v = _mm256_add_ps(res, v);
    }
    _mm256_maskstore_ps(d->out + (size_t)r * d->ldo + j, m, v);
}

/* Row r, panel p (16 columns) of d's out from their sums, a part panel
 * under a mask. */
AVX512_FN TILE_INLINE void store16_avx512(const gemm_dest *d, int r, int p, __m512 v) {
    const int here = d->n - p * FPANEL, j0 = p * FPANEL;
    const __mmask16 m = here >= FPANEL ? (__mmask16)0xffff : (__mmask16)((1u << here) - 1);
    if (d->ep.scaled) v = _mm512_mul_ps(v, _mm512_set1_ps(d->ep.scale));
    if (d->ep.bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, d->ep.bias + j0));
    if (d->ep.residual) {
        const __m512 res = _mm512_maskz_loadu_ps(m, d->ep.residual + (size_t)r * d->ldo + j0);
        if (d->ep.gamma) v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, d->ep.gamma + j0), v);
        v = _mm512_add_ps(res, v);
    }
    _mm512_mask_storeu_ps(d->out + (size_t)r * d->ldo + j0, m, v);
}

/* The accumulators of a tile (rows x two vectors) every path's fp32 and
 * bf16 tiles share, zeroed and stored: the sums are made each their own
 * way in between. mr and np are constants where these inline, so the
 * accumulators stay in registers. */
AVX2_FN TILE_INLINE void zero_tile_avx2(__m256 acc[][2], const int mr) {
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
}

/* Rows r0 .. r0 + mr - 1 of panel p: 16 columns as two 8-lane halves, the
 * second where the output has columns there. */
AVX2_FN TILE_INLINE void store_tile_avx2(const gemm_dest *d, int r0, const int mr, int p,
                                          __m256 acc[][2]) {
    const int j0 = p * FPANEL;
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        store8_avx2(d, r0 + i, j0, acc[i][0]);
        if (d->n > j0 + 8) store8_avx2(d, r0 + i, j0 + 8, acc[i][1]);
    }
}

AVX512_FN TILE_INLINE void zero_tile_avx512(__m512 acc[][2], const int mr) {
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
}

/* Rows r0 .. r0 + mr - 1 of panels p .. p + np - 1 (np 1 or 2). */
AVX512_FN TILE_INLINE void store_tile_avx512(const gemm_dest *d, int r0, const int mr, int p,
                                              const int np, __m512 acc[][2]) {
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < np; q++) store16_avx512(d, r0 + i, p + q, acc[i][q]);
}

/* A tile, rows r0 .. r0 + mr - 1 x panels p .. p + np - 1 (np 1 or 2;
 * both constants where it inlines, so the 24 accumulators stay in
 * registers), for a dtype whose call struct CALL has inp (rows LDA
 * elements of type T apart) and panels (STEPS steps of PANEL_STEP
 * elements each). At step k, each panel's vector is LOAD(weights) and
 * each row's ROW_STEP inputs from a + k * ROW_STEP are BROADCAST(x); MADD
 * adds their products into the row's sums, in k's order. */
#define TILE_AVX512_ROWS 12
#define TILE_AVX512_DEFINE(NAME, FN, CALL, T, LDA, STEPS, ROW_STEP, PANEL_STEP, VEC, LOAD,       \
                           BROADCAST, MADD)                                                   \
    FN TILE_INLINE void NAME(const CALL *g, int r0, const int mr, int p, const int np) {       \
        __m512 acc[TILE_AVX512_ROWS][2];                                                      \
        zero_tile_avx512(acc, mr);                                                            \
        const size_t lda = (size_t)(LDA);                                                     \
        const int steps = (STEPS);                                                            \
        const T *a = g->inp + (size_t)r0 * lda;                                               \
        const T *w0 = g->panels + (size_t)p * steps * (PANEL_STEP);                           \
        const T *w1 = w0 + (size_t)steps * (PANEL_STEP);                                      \
        for (int k = 0; k < steps; k++) {                                                     \
            const VEC b0 = LOAD(w0 + (size_t)k * (PANEL_STEP));                               \
            const VEC b1 = np == 2 ? LOAD(w1 + (size_t)k * (PANEL_STEP)) : b0;                \
            _Pragma("GCC unroll 12") for (int i = 0; i < mr; i++) {                           \
                const VEC x = BROADCAST(a + i * lda + (size_t)k * (ROW_STEP));                \
                acc[i][0] = MADD(acc[i][0], x, b0);                                           \
                if (np == 2) acc[i][1] = MADD(acc[i][1], x, b1);                              \
            }                                                                                 \
        }                                                                                     \
        store_tile_avx512(&g->d, r0, mr, p, np, acc);                                         \
    }

/* The same on AVX2, one panel (two 8-lane halves) and up to ROWS rows: at
 * step k the panel's step is LOAD(weights), a WEIGHTS value, and
 * MADD(acc[i], x, weights) adds row i's products (x its inputs from k *
 * ROW_STEP) into its two vectors. ENTER, an unsigned expression, runs
 * before the sums and LEAVE(its value) after them, before the epilogue
 * (bf16 switches MXCSR's flushing on for its sums only). */
#define TILE_AVX2_DEFINE(NAME, FN, CALL, T, ROWS, LDA, STEPS, ROW_STEP, PANEL_STEP, WEIGHTS,     \
                         LOAD, MADD, ENTER, LEAVE)                                             \
    FN TILE_INLINE void NAME(const CALL *g, int r0, const int mr, int p) {                    \
        __m256 acc[ROWS][2];                                                                  \
        zero_tile_avx2(acc, mr);                                                              \
        const size_t lda = (size_t)(LDA);                                                     \
        const int steps = (STEPS);                                                            \
        const T *a = g->inp + (size_t)r0 * lda;                                               \
        const T *w = g->panels + (size_t)p * steps * (PANEL_STEP);                            \
        const unsigned entered = (ENTER);                                                     \
        for (int k = 0; k < steps; k++) {                                                     \
            const WEIGHTS b = LOAD(w + (size_t)k * (PANEL_STEP));                             \
            _Pragma("GCC unroll 12") for (int i = 0; i < mr; i++)                             \
                MADD(acc[i], a + i * lda + (size_t)k * (ROW_STEP), b);                        \
        }                                                                                     \
        LEAVE(entered);                                                                       \
        store_tile_avx2(&g->d, r0, mr, p, acc);                                               \
    }
#endif

#if defined(__aarch64__)
#include <arm_neon.h>

/* Row r's columns of panel p from their sums acc[0..3]; a part panel
 * through the scalar epilogue (NEON has no masked store). */
TILE_INLINE void store16_neon(const gemm_dest *d, int r, int p, const float32x4_t acc[4]) {
    const int j0 = p * FPANEL;
    float *out = d->out + (size_t)r * d->ldo + j0;
    const float *res = d->ep.residual ? d->ep.residual + (size_t)r * d->ldo : NULL;
    if (d->n - j0 < FPANEL) {
        float sums[FPANEL];
        for (int q = 0; q < 4; q++) vst1q_f32(sums + 4 * q, acc[q]);
        gemm_store_row(d, r, p, sums);
        return;
    }
    for (int q = 0; q < 4; q++) {
        float32x4_t v = acc[q];
        const int j = j0 + 4 * q;
        if (d->ep.scaled) v = vmulq_n_f32(v, d->ep.scale);
        if (d->ep.bias) v = vaddq_f32(v, vld1q_f32(d->ep.bias + j));
        if (res) {
            if (d->ep.gamma) v = vmulq_f32(vld1q_f32(d->ep.gamma + j), v);
            v = vaddq_f32(vld1q_f32(res + j), v);
        }
        vst1q_f32(out + 4 * q, v);
    }
}

/* A tile's accumulators (rows x the panel's four vectors), zeroed. */
TILE_INLINE void zero_tile_neon(float32x4_t acc[][4], const int mr) {
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < 4; q++) acc[i][q] = vdupq_n_f32(0.0f);
}
#endif

#endif
