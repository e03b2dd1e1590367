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
#include "kernels_store.h" /* store16_avx512 */

#define MR 12 /* rows of a tile: 24 accumulators + 2 weight vectors */

#define INLINE static inline __attribute__((always_inline))

/* Rows r0 .. r0 + mr - 1 x panels p .. p + np - 1 (np 1 or 2), constants
 * where inlined, so the accumulators stay in registers. */
BF16_FN INLINE void tile(const bgemm_call *g, int r0, const int mr, int p, const int np) {
    __m512 acc[MR][2];
    zero_tile_avx512(acc, mr);
    const size_t lda = (size_t)g->kpad;
    const uint16_t *a = g->inp + (size_t)r0 * lda;
    const uint16_t *w0 = g->panels + (size_t)p * g->kpad * BPANEL, *w1 = w0 + (size_t)g->kpad * BPANEL;
    const int pairs = g->kpad / 2;
    for (int k = 0; k < pairs; k++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(w0 + (size_t)k * 2 * BPANEL);
        const __m512bh b1 = np == 2 ? (__m512bh)_mm512_loadu_si512(w1 + (size_t)k * 2 * BPANEL) : b0;
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            const __m512bh x = (__m512bh)_mm512_set1_epi32((int)bf16_pair(a + i * lda + 2 * k));
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, b0);
            if (np == 2) acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b1);
        }
    }
    store_tile_avx512(&g->d, r0, mr, p, np, acc);
}

/* The micro-kernel: up to MR rows x one or two panels. */
#define TILE(m) (np == 2 ? tile(call, r0, m, p, 2) : tile(call, r0, m, p, 1))
GEMM_TILE_FN(tile_avx512bf16, BF16_FN, 12, TILE)

const gemm_tiles bgemm_tiles_avx512bf16 = {tile_avx512bf16, 2, &kernels_path_avx512};

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

#endif /* elsewhere never chosen (kernels_isa_supported): kernels_bf16.c's stand-ins */
