/* The bf16 GEMM on AVX-512 BF16 (kernels_bf16.h): tiles of 12 rows x 32
 * columns (two packed panels) in 24 zmm accumulators, each step one
 * broadcast of an input pair and two vdpbf16ps per row (four products).
 * vdpbf16ps is the definition's arithmetic itself (tests/test_bf16.c
 * checks it against the C path). Compiled for AVX-512F + BF16
 * (BF16_FN), called only when the CPU has it (kernels_isa_supported). */
#if defined(__x86_64__) || defined(__i386__)
#ifdef __clang__ /* clang drops a target attribute naming prefer-vector-width */
#define BF16_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))
#else
#define BF16_FN __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,prefer-vector-width=512")))
#endif

#include <immintrin.h>

#include "kernels_bf16.h"

#define MR 12 /* rows of a tile: 24 accumulators + 2 weight vectors */

#define INLINE static inline __attribute__((always_inline))

/* Row r, panel p of out from its sums: gemm_epilogue lane by lane, in its
 * order (as kernels_gemm_avx512.c's store). */
BF16_FN INLINE void store(const bgemm_call *g, int r, int p, __m512 v) {
    const int here = g->n - p * BPANEL, j0 = p * BPANEL;
    const __mmask16 m = here >= BPANEL ? (__mmask16)0xffff : (__mmask16)((1u << here) - 1);
    if (g->ep.scaled) v = _mm512_mul_ps(v, _mm512_set1_ps(g->ep.scale));
    if (g->ep.bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, g->ep.bias + j0));
    if (g->ep.residual) {
        const __m512 res = _mm512_maskz_loadu_ps(m, g->ep.residual + (size_t)r * g->ldo + j0);
        if (g->ep.gamma) v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, g->ep.gamma + j0), v);
        v = _mm512_add_ps(res, v);
    }
    _mm512_mask_storeu_ps(g->out + (size_t)r * g->ldo + j0, m, v);
}

/* Rows r0 .. r0 + mr - 1 x panels p .. p + np - 1 (np 1 or 2), constants
 * where inlined, so the accumulators stay in registers. */
BF16_FN INLINE void tile(const bgemm_call *g, int r0, const int mr, int p, const int np) {
    __m512 acc[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const size_t lda = (size_t)g->kpad;
    const uint16_t *a = g->inp + (size_t)r0 * lda;
    const uint16_t *w0 = g->panels + (size_t)p * g->kpad * BPANEL, *w1 = w0 + (size_t)g->kpad * BPANEL;
    const int pairs = g->kpad / 2;
    for (int k = 0; k < pairs; k++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(w0 + (size_t)k * 2 * BPANEL);
        const __m512bh b1 = np == 2 ? (__m512bh)_mm512_loadu_si512(w1 + (size_t)k * 2 * BPANEL) : b0;
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            int32_t pair;
            memcpy(&pair, a + i * lda + 2 * k, sizeof pair);
            const __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, b0);
            if (np == 2) acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b1);
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

BF16_FN void bgemm_panels_avx512bf16(const bgemm_call *g, int p0, int p1) {
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
        const int j0 = p * BPANEL, cols = g->n - j0 < np * BPANEL ? g->n - j0 : np * BPANEL;
        for (int r = 0; r < g->rows; r++) {
            float *row = g->out + (size_t)r * g->ldo + j0;
            kernels_path_avx512.act(row, row, (size_t)cols, g->ep.act);
        }
    }
}

BF16_FN void bf16_round_row_avx512bf16(uint16_t *dst, const float *x, int n) {
    int k = 0;
    for (; k + 32 <= n; k += 32) {
        const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(x + k));
        _mm512_storeu_si512(dst + k, (__m512i)v);
    }
    for (; k < n; k += 16) {
        const __mmask16 m = n - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - k)) - 1);
        const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + k));
        _mm256_mask_storeu_epi16(dst + k, m, (__m256i)v);
    }
}

#else /* not x86: never chosen (kernels_isa_supported), kept linkable */

#include "kernels_bf16.h"

void bf16_round_row_avx512bf16(uint16_t *dst, const float *x, int n) {
    for (int k = 0; k < n; k++) dst[k] = bf16_round(x[k]);
}

void bgemm_panels_avx512bf16(const bgemm_call *g, int p0, int p1) { bgemm_panels_generic(g, p0, p1); }

#endif
