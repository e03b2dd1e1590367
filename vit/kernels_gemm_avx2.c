/* vitc's fp32 GEMM for AVX2 + FMA (kernels_gemm.h): tiles of 6 rows x 16
 * columns (one packed panel, two ymm) in 12 accumulators, each step one
 * broadcast of an input and two FMAs per row. Compiled for AVX2 + FMA
 * (AVX2_FN), called only when the CPU has both; each element's chain is
 * that of the C path, fma for fmaf. */
#if defined(__x86_64__) || defined(__i386__)
/* Every function here is compiled for the instruction set (gcc and clang
 * alike; clang ignores gcc's target pragma). */
#define AVX2_FN __attribute__((target("avx2,fma")))

#include <immintrin.h>

#include "kernels_gemm.h"
#include "kernels_rows.h"

#define MR 6 /* rows of a tile: 12 accumulators + 2 weight vectors of 16 */

#define INLINE static inline __attribute__((always_inline))

/* The lanes of a half panel (8 columns from j) that exist, as maskload
 * wants them: all ones in a lane that does. */
AVX2_FN INLINE __m256i half_mask(const gemm_call *g, int j) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(g->n - j), lane);
}

/* Row r, columns j .. j + 7 of out from their sums: gemm_epilogue lane by
 * lane, in its order. */
AVX2_FN INLINE void store_half(const gemm_call *g, int r, int j, __m256 v) {
    const __m256i m = half_mask(g, j);
    if (g->ep.scaled) v = _mm256_mul_ps(v, _mm256_set1_ps(g->ep.scale));
    if (g->ep.bias) v = _mm256_add_ps(v, _mm256_maskload_ps(g->ep.bias + j, m));
    if (g->ep.residual) {
        const __m256 res = _mm256_maskload_ps(g->ep.residual + (size_t)r * g->ldo + j, m);
        if (g->ep.gamma) v = _mm256_mul_ps(_mm256_maskload_ps(g->ep.gamma + j, m), v);
        v = _mm256_add_ps(res, v);
    }
    _mm256_maskstore_ps(g->out + (size_t)r * g->ldo + j, m, v);
}

/* Rows r0 .. r0 + mr - 1 x panel p: mr is a constant where this is
 * inlined, so the accumulators stay in registers. */
AVX2_FN INLINE void tile(const gemm_call *g, int r0, const int mr, int p) {
    __m256 acc[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    const size_t lda = (size_t)g->lda;
    const float *a = g->inp + (size_t)r0 * lda;
    const float *w = g->panels + (size_t)p * g->k * FPANEL;
    const int K = g->k;
    for (int k = 0; k < K; k++) {
        const __m256 b0 = _mm256_loadu_ps(w + (size_t)k * FPANEL);
        const __m256 b1 = _mm256_loadu_ps(w + (size_t)k * FPANEL + 8);
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            const __m256 x = _mm256_broadcast_ss(a + i * lda + k);
            acc[i][0] = _mm256_fmadd_ps(x, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(x, b1, acc[i][1]);
        }
    }
    const int j0 = p * FPANEL;
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        store_half(g, r0 + i, j0, acc[i][0]);
        if (g->n > j0 + 8) store_half(g, r0 + i, j0 + 8, acc[i][1]);
    }
}

ROWS_DEFINE_PATH(avx2, AVX2_FN)

AVX2_FN static void gemm_panels_avx2(const gemm_call *g, int p0, int p1) {
    for (int p = p0; p < p1; p++) {
        for (int r0 = 0; r0 < g->rows; r0 += MR) {
            switch (g->rows - r0 < MR ? g->rows - r0 : MR) {
            case 1: tile(g, r0, 1, p); break;
            case 2: tile(g, r0, 2, p); break;
            case 3: tile(g, r0, 3, p); break;
            case 4: tile(g, r0, 4, p); break;
            case 5: tile(g, r0, 5, p); break;
            default: tile(g, r0, MR, p);
            }
        }
        if (g->ep.act == KERNELS_ACT_NONE) continue;
        const int j0 = p * FPANEL, cols = g->n - j0 < FPANEL ? g->n - j0 : FPANEL;
        for (int r = 0; r < g->rows; r++) act_avx2(g->out + (size_t)r * g->ldo + j0, g->out + (size_t)r * g->ldo + j0, (size_t)cols,
                   g->ep.act);
    }
}

const kernels_path kernels_path_avx2 = {gemm_panels_avx2, act_avx2, gelu_backward_avx2, layernorm_avx2, softmax_avx2};

#else /* not x86: never chosen (kernels_isa_supported), kept linkable */

#include "kernels_gemm.h"

const kernels_path kernels_path_avx2 = {0};

#endif
