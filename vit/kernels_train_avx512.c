/* kernels_train.h's aᵀ b for AVX-512F: tiles of 12 rows of c (12 floats
 * of a row of a, broadcast) x 32 columns (two vectors of a row of b) in 24
 * zmm accumulators; each element's chain is that of the C path, fma for
 * fmaf. Called only when the CPU has AVX-512F. */
#if defined(__x86_64__) || defined(__i386__)
#ifdef __clang__
#define AVX512_FN __attribute__((target("avx512f,avx2,fma")))
#else
#define AVX512_FN __attribute__((target("avx512f,avx2,fma,prefer-vector-width=512")))
#endif

#include <immintrin.h>

#include "kernels_train.h"

#define MR 12
#define INLINE static inline __attribute__((always_inline))

/* Rows m0 .. m0 + mr - 1, columns j .. j + 16 nv - 1 (lanes past mask0 /
 * mask1 neither read nor written): mr and nv constants where inlined. */
AVX512_FN INLINE void tile(const tn_call *t, int m0, const int mr, int j, const int nv,
                           __mmask16 mask0, __mmask16 mask1, int k0, int k1, int accumulate,
                           const int full) {
    __m512 acc[MR][2];
    float *c = t->c + (size_t)m0 * t->ldc + j;
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        acc[i][0] = accumulate ? _mm512_maskz_loadu_ps(mask0, c + (size_t)i * t->ldc)
                               : _mm512_setzero_ps();
        acc[i][1] = accumulate && nv == 2 ? _mm512_maskz_loadu_ps(mask1, c + (size_t)i * t->ldc + 16)
                                          : _mm512_setzero_ps();
    }
    const float *a = t->a + (size_t)k0 * t->lda + m0, *b = t->b + (size_t)k0 * t->ldb + j;
    for (int k = k0; k < k1; k++, a += t->lda, b += t->ldb) {
        /* Whole blocks load unmasked: no mask register live in the loop. */
        const __m512 b0 = full ? _mm512_loadu_ps(b) : _mm512_maskz_loadu_ps(mask0, b);
        const __m512 b1 = nv == 1 ? b0 : full ? _mm512_loadu_ps(b + 16) : _mm512_maskz_loadu_ps(mask1, b + 16);
#pragma GCC unroll 12
        for (int i = 0; i < mr; i++) {
            const __m512 x = _mm512_set1_ps(a[i]);
            acc[i][0] = _mm512_fmadd_ps(x, b0, acc[i][0]);
            if (nv == 2) acc[i][1] = _mm512_fmadd_ps(x, b1, acc[i][1]);
        }
    }
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        _mm512_mask_storeu_ps(c + (size_t)i * t->ldc, mask0, acc[i][0]);
        if (nv == 2) _mm512_mask_storeu_ps(c + (size_t)i * t->ldc + 16, mask1, acc[i][1]);
    }
}

#define TILE_CASE(n, nv, full) \
    case n: tile(t, m, n, j, nv, mask0, mask1, k0, k1, accumulate, full); break;
#define TILE_SWITCH(mr, nv, full)                                                         \
    switch (mr) {                                                                         \
        TILE_CASE(1, nv, full) TILE_CASE(2, nv, full) TILE_CASE(3, nv, full)              \
        TILE_CASE(4, nv, full) TILE_CASE(5, nv, full) TILE_CASE(6, nv, full)              \
        TILE_CASE(7, nv, full) TILE_CASE(8, nv, full) TILE_CASE(9, nv, full)              \
        TILE_CASE(10, nv, full) TILE_CASE(11, nv, full)                                   \
        default: tile(t, m, MR, j, nv, mask0, mask1, k0, k1, accumulate, full);           \
    }

static __mmask16 lanes(int here) {
    return here >= 16 ? (__mmask16)0xffff : here <= 0 ? 0 : (__mmask16)((1u << here) - 1);
}

/* Column blocks of 32 outside, rows inside: the block's rows of b stay in
 * L1 while every tile of rows reads them. */
AVX512_FN void tn_avx512(const tn_call *t, int m0, int m1, int k0, int k1, int accumulate) {
    for (int j = 0; j < t->n; j += 32) {
        const int here = t->n - j;
        const __mmask16 mask0 = lanes(here), mask1 = lanes(here - 16);
        for (int m = m0; m < m1; m += MR) {
            const int mr = m1 - m < MR ? m1 - m : MR;
            if (here >= 32) {
                TILE_SWITCH(mr, 2, 1)
            } else if (here > 16) {
                TILE_SWITCH(mr, 2, 0)
            } else if (here == 16) {
                TILE_SWITCH(mr, 1, 1)
            } else {
                TILE_SWITCH(mr, 1, 0)
            }
        }
    }
}
#else
#include "kernels_train.h"
void tn_avx512(const tn_call *t, int m0, int m1, int k0, int k1, int accumulate) {
    tn_generic(t, m0, m1, k0, k1, accumulate);
}
#endif
