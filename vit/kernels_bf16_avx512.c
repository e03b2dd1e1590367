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
#include "kernels_tile.h" /* TILE_AVX512_DEFINE */

#define INLINE static inline __attribute__((always_inline))

/* A step is a pair of a row's inputs and of each weight column: vdpbf16ps
 * adds both products. */
BF16_FN INLINE __m512bh load_pairs(const uint16_t *w) { return (__m512bh)_mm512_loadu_si512(w); }
BF16_FN INLINE __m512bh broadcast_pair(const uint16_t *x) {
    return (__m512bh)_mm512_set1_epi32((int)bf16_pair(x));
}
BF16_FN INLINE __m512 dot_pairs(__m512 acc, __m512bh x, __m512bh w) { return _mm512_dpbf16_ps(acc, x, w); }
TILE_AVX512_DEFINE(tile, BF16_FN, bgemm_call, uint16_t, g->kpad, g->kpad / 2, 2, 2 * BPANEL, __m512bh,
                   load_pairs, broadcast_pair, dot_pairs)

/* The micro-kernel: up to TILE_AVX512_ROWS rows x one or two panels. */
#define TILE(m) (np == 2 ? tile(call, r0, m, p, 2) : tile(call, r0, m, p, 1))
GEMM_TILE_FN(tile_avx512bf16, BF16_FN, TILE_AVX512_ROWS, TILE)

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
