/* The bf16 GEMM on AVX2 + FMA (kernels_bf16.h), for CPUs without AVX-512
 * BF16: tiles of 4 rows x 16 columns (one packed panel) in 8 ymm
 * accumulators; each pair of inputs widened to fp32 (exact: a shift or a
 * mask) and added as two FMAs, the odd element's first, as vdpbf16ps
 * adds them. A bf16 product is exact in fp32, so each FMA rounds as the
 * instruction's add does; its flush of results below FLT_MIN (after
 * rounding) is MXCSR's FTZ, switched on around the sums only (DAZ too, for
 * a damaged file's subnormal weights) and the caller's MXCSR put back
 * before the epilogue. Compiled for AVX2 + FMA (AVX2_FN). */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "kernels_bf16.h"
#include "kernels_store.h" /* AVX2_FN, store8_avx2 */

#define MR 4 /* rows of a tile: 8 accumulators + 4 weight vectors + 2 inputs */
#define MXCSR_FTZ_DAZ 0x8040u

#define INLINE static inline __attribute__((always_inline))

/* The even (low) and odd (high) bf16 of each 32-bit pair, as fp32. */
AVX2_FN INLINE __m256 even_f32(__m256i v) { return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)); }
AVX2_FN INLINE __m256 odd_f32(__m256i v) {
    return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u)));
}

AVX2_FN INLINE void tile(const bgemm_call *g, int r0, const int mr, int p) {
    __m256 acc[MR][2];
    zero_tile_avx2(acc, mr);
    const size_t lda = (size_t)g->kpad;
    const uint16_t *a = g->inp + (size_t)r0 * lda;
    const uint16_t *w = g->panels + (size_t)p * g->kpad * BPANEL;
    const int pairs = g->kpad / 2;
    const unsigned mxcsr = _mm_getcsr();
    _mm_setcsr(mxcsr | MXCSR_FTZ_DAZ);
    for (int k = 0; k < pairs; k++) {
        const __m256i lo = _mm256_loadu_si256((const __m256i *)(w + (size_t)k * 2 * BPANEL));
        const __m256i hi = _mm256_loadu_si256((const __m256i *)(w + (size_t)k * 2 * BPANEL + 16));
        const __m256 e0 = even_f32(lo), o0 = odd_f32(lo), e1 = even_f32(hi), o1 = odd_f32(hi);
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            const __m256i x = _mm256_set1_epi32((int)bf16_pair(a + i * lda + 2 * k));
            const __m256 xe = even_f32(x), xo = odd_f32(x);
            acc[i][0] = _mm256_fmadd_ps(xe, e0, _mm256_fmadd_ps(xo, o0, acc[i][0]));
            acc[i][1] = _mm256_fmadd_ps(xe, e1, _mm256_fmadd_ps(xo, o1, acc[i][1]));
        }
    }
    _mm_setcsr(mxcsr);
    store_tile_avx2(&g->d, r0, mr, p, acc);
}

/* The micro-kernel: one panel, up to MR rows. */
#define TILE(m) tile(call, r0, m, p)
GEMM_TILE_FN(tile_avx2, AVX2_FN, 4, TILE)

const gemm_tiles bgemm_tiles_avx2 = {tile_avx2, 1, &kernels_path_avx2};

#endif /* elsewhere never chosen (kernels_isa_supported): kernels_bf16.c's stand-ins */
