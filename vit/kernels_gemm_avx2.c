/* vitc's fp32 GEMM for AVX2 + FMA (kernels_gemm.h): tiles of 6 rows x 16
 * columns (one packed panel, two ymm) in 12 accumulators, each step one
 * broadcast of an input and two FMAs per row. Compiled for AVX2 + FMA
 * (AVX2_FN), called only when the CPU has both; each element's chain is
 * that of the C path, fma for fmaf. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "kernels_gemm.h"
#include "kernels_rows.h"
#include "kernels_tile.h" /* AVX2_FN, TILE_AVX2_DEFINE */

#define MR 6 /* rows of a tile: 12 accumulators + 2 weight vectors of 16 */

#define INLINE static inline __attribute__((always_inline))

/* A step is one input of a row and a row of the panel's 16 weights, as
 * two halves: x * w added by fma, as fmaf does on the C path. */
typedef struct {
    __m256 lo, hi;
} halves;
AVX2_FN INLINE halves load_halves(const float *w) {
    return (halves){_mm256_loadu_ps(w), _mm256_loadu_ps(w + 8)};
}
AVX2_FN INLINE void fma_row(__m256 acc[2], const float *x, halves w) {
    const __m256 v = _mm256_broadcast_ss(x);
    acc[0] = _mm256_fmadd_ps(v, w.lo, acc[0]);
    acc[1] = _mm256_fmadd_ps(v, w.hi, acc[1]);
}
TILE_AVX2_DEFINE(tile, AVX2_FN, gemm_call, float, MR, g->lda, g->k, 1, FPANEL, halves, load_halves,
                 fma_row, 0u, (void))

ROWS_DEFINE_ELEMENTWISE(avx2, AVX2_FN)

/* ---- softmax and LayerNorm written out in vectors: the operations of
 * kernels_rows.h's C lane by lane, its 16 partial sums as two vectors
 * (lanes 0-7, 8-15; gcc left its max reduction scalar). */

/* rows_exp on 8 lanes. */
AVX2_FN INLINE __m256 v_exp(__m256 x) {
    const __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_LO), _CMP_LT_OQ);
    const __m256 over = _mm256_cmp_ps(x, _mm256_set1_ps(EXP_HI), _CMP_GT_OQ);
    x = _mm256_blendv_ps(x, _mm256_set1_ps(EXP_HI), over);
    x = _mm256_blendv_ps(x, _mm256_set1_ps(EXP_LO), under);
    ROWS_EXP_STEPS(__m256, _mm256_fmadd_ps, _mm256_sub_ps, _mm256_set1_ps, x, t, p)
    const __m256i bits = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_castps_si256(t), _mm256_set1_epi32((int)EXP_BIAS)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(bits)));
}

/* rows_tree16 of lanes a (0-7) and b (8-15). */
AVX2_FN INLINE float tree_sum(__m256 a, __m256 b) {
    const __m256 s8 = _mm256_add_ps(a, b);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}

/* rows_max16's tree (maxps returns its first operand exactly when it is
 * greater). */
AVX2_FN INLINE float tree_max(__m256 a, __m256 b) {
    const __m256 m8 = _mm256_max_ps(b, a);
    const __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(m8, 1), _mm256_castps256_ps128(m8));
    const __m128 m2 = _mm_max_ps(_mm_movehl_ps(m4, m4), m4);
    return _mm_cvtss_f32(_mm_max_ss(_mm_shuffle_ps(m2, m2, 1), m2));
}

/* The lanes of the last part of n values that exist, in the half from
 * lane `from` (0 or 8): all ones where they do, as maskload wants. */
AVX2_FN INLINE __m256i tail8(int n, int from) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n % 16 - from), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

AVX2_FN static void softmax_v256(float *x, int n) {
    const int whole = n / 16 * 16;
    const __m256i m0 = tail8(n, 0), m1 = tail8(n, 8);
    float *t = x + whole;
    __m256 a = _mm256_set1_ps(x[0]), b = a;
    for (int i = 0; i < whole; i += 16) {
        a = _mm256_max_ps(_mm256_loadu_ps(x + i), a);
        b = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), b);
    }
    if (n % 16) {
        a = _mm256_blendv_ps(a, _mm256_max_ps(_mm256_maskload_ps(t, m0), a), _mm256_castsi256_ps(m0));
        b = _mm256_blendv_ps(b, _mm256_max_ps(_mm256_maskload_ps(t + 8, m1), b), _mm256_castsi256_ps(m1));
    }
    const __m256 max = _mm256_set1_ps(tree_max(a, b));
    __m256 sa = _mm256_setzero_ps(), sb = sa;
    for (int i = 0; i < whole; i += 16) {
        const __m256 ea = v_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), max));
        const __m256 eb = v_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), max));
        _mm256_storeu_ps(x + i, ea), _mm256_storeu_ps(x + i + 8, eb);
        sa = _mm256_add_ps(sa, ea), sb = _mm256_add_ps(sb, eb);
    }
    if (n % 16) {
        const __m256 ea = v_exp(_mm256_sub_ps(_mm256_maskload_ps(t, m0), max));
        const __m256 eb = v_exp(_mm256_sub_ps(_mm256_maskload_ps(t + 8, m1), max));
        _mm256_maskstore_ps(t, m0, ea), _mm256_maskstore_ps(t + 8, m1, eb);
        sa = _mm256_blendv_ps(sa, _mm256_add_ps(sa, ea), _mm256_castsi256_ps(m0));
        sb = _mm256_blendv_ps(sb, _mm256_add_ps(sb, eb), _mm256_castsi256_ps(m1));
    }
    const __m256 inv = _mm256_set1_ps(1.0f / tree_sum(sa, sb));
    for (int i = 0; i < whole; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    if (n % 16) {
        _mm256_maskstore_ps(t, m0, _mm256_mul_ps(_mm256_maskload_ps(t, m0), inv));
        _mm256_maskstore_ps(t + 8, m1, _mm256_mul_ps(_mm256_maskload_ps(t + 8, m1), inv));
    }
}

/* Sum of x[i] (dev: of (x[i] - m)^2) over the 16 partials, as
 * rows_sum16 / rows_sq_dev16 take them. */
AVX2_FN INLINE float sum16(const float *x, int n, int dev, float m) {
    const int whole = n / 16 * 16;
    const __m256 vm = _mm256_set1_ps(m);
    __m256 a = _mm256_setzero_ps(), b = a;
    for (int i = 0; i < n; i += 16) {
        const __m256i m0 = i < whole ? _mm256_set1_epi32(-1) : tail8(n, 0);
        const __m256i m1 = i < whole ? _mm256_set1_epi32(-1) : tail8(n, 8);
        __m256 va = _mm256_maskload_ps(x + i, m0), vb = _mm256_maskload_ps(x + i + 8, m1);
        if (dev) {
            va = _mm256_sub_ps(va, vm), vb = _mm256_sub_ps(vb, vm);
            va = _mm256_mul_ps(va, va), vb = _mm256_mul_ps(vb, vb);
        }
        a = _mm256_blendv_ps(a, _mm256_add_ps(a, va), _mm256_castsi256_ps(m0));
        b = _mm256_blendv_ps(b, _mm256_add_ps(b, vb), _mm256_castsi256_ps(m1));
    }
    return tree_sum(a, b);
}

AVX2_FN static void layernorm_v256(float *out, float *mean, float *rstd, const float *inp,
                                   const float *weight, const float *bias, int dim, float eps) {
    const float m = sum16(inp, dim, 0, 0.0f) / (float)dim;
    const float s = 1.0f / sqrtf(sum16(inp, dim, 1, m) / (float)dim + eps);
    const __m256 vm = _mm256_set1_ps(m), vs = _mm256_set1_ps(s);
    for (int i = 0; i < dim; i += 8) {
        const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32(dim - i), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const __m256 y = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_maskload_ps(inp + i, k), vm), vs),
                                       _mm256_maskload_ps(weight + i, k));
        _mm256_maskstore_ps(out + i, k, _mm256_add_ps(y, _mm256_maskload_ps(bias + i, k)));
    }
    if (mean) *mean = m;
    if (rstd) *rstd = s;
}

/* The micro-kernel: one panel, up to MR rows. */
#define TILE(m) tile(call, r0, m, p)
GEMM_TILE_FN(tile_avx2, AVX2_FN, 6, TILE)

const kernels_path kernels_path_avx2 = {{tile_avx2, 1, &kernels_path_avx2}, act_avx2,
                                        gelu_backward_avx2, layernorm_v256, softmax_v256};

#endif /* elsewhere never chosen (kernels_isa_supported): kernels_gemm.c's stand-ins */
