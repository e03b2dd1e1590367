/* vitc's fp32 GEMM for AVX-512F (kernels_gemm.h): tiles of 12 rows x 32
 * columns (two packed panels) in 24 zmm accumulators, each step one
 * broadcast of an input and two FMAs per row. Compiled for AVX-512F
 * (AVX512_FN), called only when the CPU has it; each element's chain is
 * that of the C path, fma for fmaf. */
#if defined(__x86_64__) || defined(__i386__)
/* Every function here is compiled for the instruction set (gcc and clang
 * alike; clang ignores gcc's target pragma). */
#define AVX512_FN __attribute__((target("avx512f,avx2,fma,prefer-vector-width=512")))

#include <immintrin.h>

#include "kernels_gemm.h"
#include "kernels_rows.h"

#define MR 12 /* rows of a tile: 24 accumulators + 2 weight vectors of 32 */

#define INLINE static inline __attribute__((always_inline))

/* Mask of the columns of panel p that exist (a last panel may be part). */
AVX512_FN INLINE __mmask16 panel_mask(const gemm_call *g, int p) {
    const int here = g->n - p * FPANEL;
    return here >= FPANEL ? (__mmask16)0xffff : (__mmask16)((1u << here) - 1);
}

/* Row r, panel p of out from its sum: the epilogue of gemm_epilogue, lane
 * by lane, in its order. */
AVX512_FN INLINE void store(const gemm_call *g, int r, int p, __m512 v) {
    const __mmask16 m = panel_mask(g, p);
    const int j0 = p * FPANEL;
    if (g->ep.scaled) v = _mm512_mul_ps(v, _mm512_set1_ps(g->ep.scale));
    if (g->ep.bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, g->ep.bias + j0));
    if (g->ep.residual) {
        const __m512 res = _mm512_maskz_loadu_ps(m, g->ep.residual + (size_t)r * g->ldo + j0);
        if (g->ep.gamma) v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, g->ep.gamma + j0), v);
        v = _mm512_add_ps(res, v);
    }
    _mm512_mask_storeu_ps(g->out + (size_t)r * g->ldo + j0, m, v);
}

/* Rows r0 .. r0 + mr - 1 x panels p .. p + np - 1 (np 1 or 2): mr and np
 * are constants where this is inlined, so the accumulators stay in
 * registers. */
AVX512_FN INLINE void tile(const gemm_call *g, int r0, const int mr, int p, const int np) {
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const size_t lda = (size_t)g->lda;
    const float *a = g->inp + (size_t)r0 * lda;
    const float *w0 = g->panels + (size_t)p * g->k * FPANEL, *w1 = w0 + (size_t)g->k * FPANEL;
    const int K = g->k;
    for (int k = 0; k < K; k++) {
        const __m512 b0 = _mm512_loadu_ps(w0 + (size_t)k * FPANEL);
        const __m512 b1 = np == 2 ? _mm512_loadu_ps(w1 + (size_t)k * FPANEL) : b0;
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            const __m512 x = _mm512_set1_ps(a[i * lda + k]);
            acc[i][0] = _mm512_fmadd_ps(x, b0, acc[i][0]);
            if (np == 2) acc[i][1] = _mm512_fmadd_ps(x, b1, acc[i][1]);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < np; q++) store(g, r0 + i, p + q, acc[i][q]);
}

#define TILE_CASE(n, np) \
    case n: tile(g, r0, n, p, np); break;
#define TILE_SWITCH(mr, np)                                                               \
    switch (mr) {                                                                         \
        TILE_CASE(1, np) TILE_CASE(2, np) TILE_CASE(3, np) TILE_CASE(4, np)               \
        TILE_CASE(5, np) TILE_CASE(6, np) TILE_CASE(7, np) TILE_CASE(8, np)               \
        TILE_CASE(9, np) TILE_CASE(10, np) TILE_CASE(11, np) default: tile(g, r0, MR, p, np); \
    }

ROWS_DEFINE_PATH(avx512, AVX512_FN)

AVX512_FN static void gemm_panels_avx512(const gemm_call *g, int p0, int p1) {
    for (int p = p0; p < p1; p += 2) {
        const int np = p1 - p >= 2 ? 2 : 1;
        for (int r0 = 0; r0 < g->rows; r0 += MR) {
            const int mr = g->rows - r0 < MR ? g->rows - r0 : MR;
            if (np == 2) {
                TILE_SWITCH(mr, 2)
            } else {
                TILE_SWITCH(mr, 1)
            }
        }
        if (g->ep.act == KERNELS_ACT_NONE) continue;
        const int j0 = p * FPANEL, cols = g->n - j0 < np * FPANEL ? g->n - j0 : np * FPANEL;
        for (int r = 0; r < g->rows; r++) act_avx512(g->out + (size_t)r * g->ldo + j0, g->out + (size_t)r * g->ldo + j0, (size_t)cols,
                   g->ep.act);
    }
}

const kernels_path kernels_path_avx512 = {gemm_panels_avx512, act_avx512, gelu_backward_avx512, layernorm_avx512,
                                          softmax_avx512};

#else /* not x86: never chosen (kernels_isa_supported), kept linkable */

#include "kernels_gemm.h"

const kernels_path kernels_path_avx512 = {0};

#endif
