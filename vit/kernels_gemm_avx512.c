/* vitc's fp32 GEMM for AVX-512F (kernels_gemm.h): tiles of 12 rows x 32
 * columns (two packed panels) in 24 zmm accumulators, each step one
 * broadcast of an input and two FMAs per row. Compiled for AVX-512F
 * (AVX512_FN), called only when the CPU has it; each element's chain is
 * that of the C path, fma for fmaf. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "kernels_gemm.h"
#include "kernels_rows.h"
#include "kernels_tile.h" /* AVX512_FN, TILE_AVX512_DEFINE */

#define INLINE static inline __attribute__((always_inline))

/* A step is one input of a row and a row of FPANEL weights: x * w added
 * by fma, as fmaf does on the C path. */
AVX512_FN INLINE __m512 broadcast_f32(const float *x) { return _mm512_set1_ps(*x); }
AVX512_FN INLINE __m512 fma_f32(__m512 acc, __m512 x, __m512 w) { return _mm512_fmadd_ps(x, w, acc); }
TILE_AVX512_DEFINE(tile, AVX512_FN, gemm_call, float, g->lda, g->k, 1, FPANEL, __m512, _mm512_loadu_ps,
                   broadcast_f32, fma_f32)

ROWS_DEFINE_ELEMENTWISE(avx512, AVX512_FN)

/* ---- softmax and LayerNorm written out in vectors: the operations of
 * kernels_rows.h's C lane by lane (16 lanes = its 16 partial sums; gcc
 * left its max reduction scalar). */

/* rows_exp on 16 lanes. */
AVX512_FN INLINE __m512 v_exp(__m512 x) {
    const __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_LO), _CMP_LT_OQ);
    const __mmask16 over = _mm512_cmp_ps_mask(x, _mm512_set1_ps(EXP_HI), _CMP_GT_OQ);
    x = _mm512_mask_blend_ps(over, x, _mm512_set1_ps(EXP_HI));
    x = _mm512_mask_blend_ps(under, x, _mm512_set1_ps(EXP_LO));
    ROWS_EXP_STEPS(__m512, _mm512_fmadd_ps, _mm512_sub_ps, _mm512_set1_ps, x, t, p)
    const __m512i bits = _mm512_slli_epi32(
        _mm512_add_epi32(_mm512_castps_si512(t), _mm512_set1_epi32((int)EXP_BIAS)), 23);
    return _mm512_maskz_mul_ps((__mmask16)~under, p, _mm512_castsi512_ps(bits));
}

/* The halves of 16 lanes: lanes 0-7 and 8-15. */
AVX512_FN INLINE __m256 low8(__m512 v) { return _mm512_castps512_ps256(v); }
AVX512_FN INLINE __m256 high8(__m512 v) {
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

/* rows_tree16: p[l] + p[l + 8], then + 4, + 2, + 1 (8 lanes given as the
 * sum of the two halves, a 128-bit step and two scalar-lane ones). */
AVX512_FN INLINE float tree_sum(__m512 p) {
    const __m256 s8 = _mm256_add_ps(low8(p), high8(p));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* rows_max16's tree: p[l] = p[l + w] > p[l] ? p[l + w] : p[l] (maxps
 * returns its first operand exactly when it is greater). */
AVX512_FN INLINE float tree_max(__m512 p) {
    const __m256 m8 = _mm256_max_ps(high8(p), low8(p));
    const __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m8, 1), _mm256_castps256_ps128(m8));
    const __m128 m2 = _mm_max_ps(_mm_movehl_ps(m4, m4), m4);
    return _mm_cvtss_f32(_mm_max_ss(_mm_shuffle_ps(m2, m2, 1), m2));
}

/* Lanes of the last part-vector of n values. */
AVX512_FN INLINE __mmask16 tail_mask(int n) { return (__mmask16)((1u << (n % 16)) - 1); }

AVX512_FN static void softmax_v512(float *x, int n) {
    const int whole = n / 16 * 16;
    const __mmask16 tail = tail_mask(n);
    __m512 p = _mm512_set1_ps(x[0]);
    for (int i = 0; i < whole; i += 16) p = _mm512_max_ps(_mm512_loadu_ps(x + i), p);
    if (tail) p = _mm512_mask_max_ps(p, tail, _mm512_maskz_loadu_ps(tail, x + whole), p);
    const __m512 max = _mm512_set1_ps(tree_max(p));
    __m512 sum = _mm512_setzero_ps();
    for (int i = 0; i < whole; i += 16) {
        const __m512 e = v_exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), max));
        _mm512_storeu_ps(x + i, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (tail) {
        const __m512 e = v_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, x + whole), max));
        _mm512_mask_storeu_ps(x + whole, tail, e);
        sum = _mm512_mask_add_ps(sum, tail, sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / tree_sum(sum));
    for (int i = 0; i < whole; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    if (tail) _mm512_mask_storeu_ps(x + whole, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + whole), inv));
}

AVX512_FN static void layernorm_v512(float *out, float *mean, float *rstd, const float *inp,
                                     const float *weight, const float *bias, int dim, float eps) {
    const int whole = dim / 16 * 16;
    const __mmask16 tail = tail_mask(dim);
    __m512 p = _mm512_setzero_ps();
    for (int i = 0; i < whole; i += 16) p = _mm512_add_ps(p, _mm512_loadu_ps(inp + i));
    if (tail) p = _mm512_mask_add_ps(p, tail, p, _mm512_maskz_loadu_ps(tail, inp + whole));
    const float m = tree_sum(p) / (float)dim;
    const __m512 vm = _mm512_set1_ps(m);
    p = _mm512_setzero_ps();
    for (int i = 0; i < whole; i += 16) {
        const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(inp + i), vm);
        p = _mm512_add_ps(p, _mm512_mul_ps(d, d));
    }
    if (tail) {
        const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(tail, inp + whole), vm);
        p = _mm512_mask_add_ps(p, tail, p, _mm512_mul_ps(d, d));
    }
    const float s = 1.0f / sqrtf(tree_sum(p) / (float)dim + eps);
    const __m512 vs = _mm512_set1_ps(s);
    for (int i = 0; i < dim; i += 16) {
        const __mmask16 k = i < whole ? (__mmask16)0xffff : tail;
        const __m512 y = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, inp + i), vm), vs),
                                       _mm512_maskz_loadu_ps(k, weight + i));
        _mm512_mask_storeu_ps(out + i, k, _mm512_add_ps(y, _mm512_maskz_loadu_ps(k, bias + i)));
    }
    if (mean) *mean = m;
    if (rstd) *rstd = s;
}

/* The micro-kernel: up to TILE_AVX512_ROWS rows x one or two panels. */
#define TILE(m) (np == 2 ? tile(call, r0, m, p, 2) : tile(call, r0, m, p, 1))
GEMM_TILE_FN(tile_avx512, AVX512_FN, TILE_AVX512_ROWS, TILE)

const kernels_path kernels_path_avx512 = {{tile_avx512, 2, &kernels_path_avx512}, act_avx512,
                                          gelu_backward_avx512, layernorm_v512, softmax_v512};

#endif /* elsewhere never chosen (kernels_isa_supported): kernels_gemm.c's stand-ins */
