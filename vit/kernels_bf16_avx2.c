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
#include "kernels_tile.h" /* AVX2_FN, TILE_AVX2_DEFINE */

#define MR 4 /* rows of a tile: 8 accumulators + 4 weight vectors + 2 inputs */
#define MXCSR_FTZ_DAZ 0x8040u

#define INLINE static inline __attribute__((always_inline))

/* The even (low) and odd (high) bf16 of each 32-bit pair, as fp32. */
AVX2_FN INLINE __m256 even_f32(__m256i v) { return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)); }
AVX2_FN INLINE __m256 odd_f32(__m256i v) {
    return _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u)));
}

/* A step is a pair of inputs of a row and of each of the panel's 16
 * columns: the weights' 32 bf16 widened to the even and odd fp32 of each
 * half, and the odd product added first, as vdpbf16ps adds them. */
typedef struct {
    __m256 even_lo, odd_lo, even_hi, odd_hi;
} pairs;
AVX2_FN INLINE pairs load_pairs(const uint16_t *w) {
    const __m256i lo = _mm256_loadu_si256((const __m256i *)w);
    const __m256i hi = _mm256_loadu_si256((const __m256i *)(w + 16));
    return (pairs){even_f32(lo), odd_f32(lo), even_f32(hi), odd_f32(hi)};
}
AVX2_FN INLINE void dot_row(__m256 acc[2], const uint16_t *x, pairs w) {
    const __m256i both = _mm256_set1_epi32((int)bf16_pair(x));
    const __m256 xe = even_f32(both), xo = odd_f32(both);
    acc[0] = _mm256_fmadd_ps(xe, w.even_lo, _mm256_fmadd_ps(xo, w.odd_lo, acc[0]));
    acc[1] = _mm256_fmadd_ps(xe, w.even_hi, _mm256_fmadd_ps(xo, w.odd_hi, acc[1]));
}

/* MXCSR with flushing on for the sums; its old value, to put back. */
AVX2_FN INLINE unsigned flush_on(void) {
    const unsigned mxcsr = _mm_getcsr();
    _mm_setcsr(mxcsr | MXCSR_FTZ_DAZ);
    return mxcsr;
}
TILE_AVX2_DEFINE(tile, AVX2_FN, bgemm_call, uint16_t, MR, g->kpad, g->kpad / 2, 2, 2 * BPANEL, pairs,
                 load_pairs, dot_row, flush_on(), _mm_setcsr)

/* The micro-kernel: one panel, up to MR rows. */
#define TILE(m) tile(call, r0, m, p)
GEMM_TILE_FN(tile_avx2, AVX2_FN, 4, TILE)

const gemm_tiles bgemm_tiles_avx2 = {tile_avx2, 1, &kernels_path_avx2};

#endif /* elsewhere never chosen (kernels_isa_supported): kernels_bf16.c's stand-ins */
