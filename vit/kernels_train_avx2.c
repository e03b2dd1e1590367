/* kernels_train.h's aᵀ b for AVX2 + FMA: tiles of 6 rows of c x 16
 * columns in 12 ymm accumulators; each element's chain is that of the C
 * path, fma for fmaf. Called only when the CPU has AVX2 and FMA. */
#if defined(__x86_64__) || defined(__i386__)
#define AVX2_FN __attribute__((target("avx2,fma")))

#include <immintrin.h>

#include "kernels_train.h"

#define MR 6
#define INLINE static inline __attribute__((always_inline))

/* All ones in the lanes of 8 columns from here columns that exist. */
AVX2_FN INLINE __m256i lanes(int here) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(here), lane);
}

/* Rows m0 .. m0 + mr - 1, columns j .. j + 15 (lanes outside the masks
 * neither read nor written): mr constant where inlined. */
AVX2_FN INLINE void tile(const tn_call *t, int m0, const int mr, int j, __m256i mask0,
                         __m256i mask1, int k0, int k1, int accumulate, const int full) {
    __m256 acc[MR][2];
    float *c = t->c + (size_t)m0 * t->ldc + j;
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        acc[i][0] = accumulate ? _mm256_maskload_ps(c + (size_t)i * t->ldc, mask0) : _mm256_setzero_ps();
        acc[i][1] = accumulate ? _mm256_maskload_ps(c + (size_t)i * t->ldc + 8, mask1) : _mm256_setzero_ps();
    }
    const float *a = t->a + (size_t)k0 * t->lda + m0, *b = t->b + (size_t)k0 * t->ldb + j;
    for (int k = k0; k < k1; k++, a += t->lda, b += t->ldb) {
        /* Whole blocks load plainly (vmaskmovps is the slower load). */
        const __m256 b0 = full ? _mm256_loadu_ps(b) : _mm256_maskload_ps(b, mask0);
        const __m256 b1 = full ? _mm256_loadu_ps(b + 8) : _mm256_maskload_ps(b + 8, mask1);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            const __m256 x = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(x, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(x, b1, acc[i][1]);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        _mm256_maskstore_ps(c + (size_t)i * t->ldc, mask0, acc[i][0]);
        _mm256_maskstore_ps(c + (size_t)i * t->ldc + 8, mask1, acc[i][1]);
    }
}

#define TILE_CASE(n, full) \
    case n: tile(t, m, n, j, mask0, mask1, k0, k1, accumulate, full); break;
#define TILE_SWITCH(mr, full)                                                             \
    switch (mr) {                                                                         \
        TILE_CASE(1, full) TILE_CASE(2, full) TILE_CASE(3, full) TILE_CASE(4, full)       \
        TILE_CASE(5, full)                                                                \
        default: tile(t, m, MR, j, mask0, mask1, k0, k1, accumulate, full);               \
    }

AVX2_FN void tn_avx2(const tn_call *t, int m0, int m1, int k0, int k1, int accumulate) {
    for (int j = 0; j < t->n; j += 16) {
        const __m256i mask0 = lanes(t->n - j), mask1 = lanes(t->n - j - 8);
        for (int m = m0; m < m1; m += MR) {
            const int mr = m1 - m < MR ? m1 - m : MR;
            if (t->n - j >= 16) {
                TILE_SWITCH(mr, 1)
            } else {
                TILE_SWITCH(mr, 0)
            }
        }
    }
}
#else
#include "kernels_train.h"
void tn_avx2(const tn_call *t, int m0, int m1, int k0, int k1, int accumulate) {
    tn_generic(t, m0, m1, k0, k1, accumulate);
}
#endif
