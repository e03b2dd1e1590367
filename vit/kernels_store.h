/* kernels_store.h — gemm_epilogue (kernels_gemm.h) on a vector of sums,
 * per instruction set: the fp32 and bf16 tiles compute their sums each
 * their own way but store them through one epilogue, so it is written once
 * here, lane by lane in gemm_epilogue's order. Each function carries the
 * target of the plainest file that includes it (a subset of every
 * includer's), so it inlines into their tiles. Internal to the kernel
 * layer. */
#ifndef VIT_KERNELS_STORE_H
#define VIT_KERNELS_STORE_H

#include "kernels_gemm.h"

#define STORE_INLINE static inline __attribute__((always_inline))

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
AVX2_FN STORE_INLINE void store8_avx2(const gemm_dest *d, int r, int j, __m256 v) {
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
AVX512_FN STORE_INLINE void store16_avx512(const gemm_dest *d, int r, int p, __m512 v) {
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
AVX2_FN STORE_INLINE void zero_tile_avx2(__m256 acc[][2], const int mr) {
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
}

/* Rows r0 .. r0 + mr - 1 of panel p: 16 columns as two 8-lane halves, the
 * second where the output has columns there. */
AVX2_FN STORE_INLINE void store_tile_avx2(const gemm_dest *d, int r0, const int mr, int p,
                                          __m256 acc[][2]) {
    const int j0 = p * FPANEL;
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        store8_avx2(d, r0 + i, j0, acc[i][0]);
        if (d->n > j0 + 8) store8_avx2(d, r0 + i, j0 + 8, acc[i][1]);
    }
}

AVX512_FN STORE_INLINE void zero_tile_avx512(__m512 acc[][2], const int mr) {
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
}

/* Rows r0 .. r0 + mr - 1 of panels p .. p + np - 1 (np 1 or 2). */
AVX512_FN STORE_INLINE void store_tile_avx512(const gemm_dest *d, int r0, const int mr, int p,
                                              const int np, __m512 acc[][2]) {
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < np; q++) store16_avx512(d, r0 + i, p + q, acc[i][q]);
}
#endif

#if defined(__aarch64__)
#include <arm_neon.h>

/* Row r's columns of panel p from their sums acc[0..3]; a part panel
 * through the scalar epilogue (NEON has no masked store). */
STORE_INLINE void store16_neon(const gemm_dest *d, int r, int p, const float32x4_t acc[4]) {
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
STORE_INLINE void zero_tile_neon(float32x4_t acc[][4], const int mr) {
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < 4; q++) acc[i][q] = vdupq_n_f32(0.0f);
}
#endif

#endif
