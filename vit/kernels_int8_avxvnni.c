/* The int8 kernel for AVX-VNNI (kernels_int8.h): the VEX-encoded vpdpbusd
 * of Intel's client CPUs without AVX-512 (Alder Lake on), u8 x s8 in
 * fours into int32 on ymm registers, 32 products per instruction, on the
 * quad layout of avx512vnni. Tiles of 4 rows x 16 columns: 8 int32
 * accumulators, 2 weight vectors and a broadcast of the 16 registers; the
 * float sums live in memory (L1), folded in once per group. Compiled for
 * AVX2 + FMA + AVX-VNNI (AVXVNNI_FN), called only when the CPU has them;
 * the same arithmetic as vnni-reference (kernels_int8.c), so the same bits. */
#if defined(__x86_64__) || defined(__i386__)
#define AVXVNNI_FN __attribute__((target("avx2,fma,avxvnni")))

#include <immintrin.h>
#include <string.h>

#include "kernels_int8.h"

#define MR 4
#define INLINE static inline __attribute__((always_inline))

AVXVNNI_FN INLINE __m256i quad_of(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm256_set1_epi32(v);
}

/* Rows r0 .. r0 + mr - 1 of panel p from their sums (qmatmul_output's
 * order: (residual + bias) + sum). */
AVXVNNI_FN INLINE void store_rows(const qmatmul_call *c, int r0, int mr, int p, float sums[MR][QPANEL]) {
    const int first = p * QPANEL, here = c->w->rows - first < QPANEL ? c->w->rows - first : QPANEL;
    for (int i = 0; i < mr; i++) {
        const size_t at = (size_t)(r0 + i) * c->d.ldo + first;
        if (here == QPANEL) {
            for (int h = 0; h < 2; h++) {
                __m256 base = c->d.ep.bias ? _mm256_loadu_ps(c->d.ep.bias + first + 8 * h) : _mm256_setzero_ps();
                if (c->d.ep.residual) base = _mm256_add_ps(_mm256_loadu_ps(c->d.ep.residual + at + 8 * h), base);
                _mm256_storeu_ps(c->d.out + at + 8 * h, _mm256_add_ps(base, _mm256_loadu_ps(sums[i] + 8 * h)));
            }
            continue;
        }
        for (int k = 0; k < here; k++)
            c->d.out[at + k] = qmatmul_output(c->d.ep.residual, c->d.ep.bias, c->d.ldo, r0 + i, first + k, sums[i][k]);
    }
}

/* Rows r0 .. r0 + mr - 1 of panel p; mr and fixed_quads (quads per group
 * when known where this is inlined, else 0) are constants where this is
 * inlined. The float sums live in memory (L1), folded in once a group. */
AVXVNNI_FN INLINE void tile(const qmatmul_call *c, int r0, const int mr, int p, const int fixed_quads) {
    const kernels_qmatrix *w = c->w;
    const int G = w->groups, quads = fixed_quads ? fixed_quads : w->kgroup / 4;
    const size_t kpad = (size_t)w->kpad;
    const int8_t *v = (const int8_t *)w->values + (size_t)p * kpad * QPANEL;
    const float *s = w->scales + (size_t)p * G * QPANEL;
    const int32_t *o = w->offsets + (size_t)p * G * QPANEL;
    const uint8_t *a = (const uint8_t *)c->qinp + (size_t)r0 * kpad;
    const float *xs = c->inp_scale + (size_t)r0 * G;
    float sums[MR][QPANEL];
    memset(sums, 0, sizeof sums);
    for (int g = 0; g < G; g++) {
        __m256i acc[MR][2];
        const __m256i off0 = _mm256_load_si256((const __m256i *)(o + (size_t)g * QPANEL));
        const __m256i off1 = _mm256_load_si256((const __m256i *)(o + (size_t)g * QPANEL + 8));
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) acc[i][0] = off0, acc[i][1] = off1;
        const int8_t *wg = v + (size_t)g * quads * 4 * QPANEL;
        const uint8_t *ag = a + (size_t)g * quads * 4;
#pragma GCC unroll 8
        for (int q = 0; q < quads; q++) {
            const __m256i w0 = _mm256_load_si256((const __m256i *)(wg + q * 4 * QPANEL));
            const __m256i w1 = _mm256_load_si256((const __m256i *)(wg + q * 4 * QPANEL + 32));
#pragma GCC unroll 4
            for (int i = 0; i < mr; i++) {
                const __m256i b = quad_of(ag + i * kpad + 4 * q);
                acc[i][0] = _mm256_dpbusd_avx_epi32(acc[i][0], b, w0);
                acc[i][1] = _mm256_dpbusd_avx_epi32(acc[i][1], b, w1);
            }
        }
        const __m256 ws0 = _mm256_load_ps(s + (size_t)g * QPANEL);
        const __m256 ws1 = _mm256_load_ps(s + (size_t)g * QPANEL + 8);
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            const __m256 x = _mm256_set1_ps(xs[(size_t)i * G + g]);
            _mm256_storeu_ps(sums[i], _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][0]), _mm256_mul_ps(ws0, x),
                                                      _mm256_loadu_ps(sums[i])));
            _mm256_storeu_ps(sums[i] + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][1]), _mm256_mul_ps(ws1, x),
                                                          _mm256_loadu_ps(sums[i] + 8)));
        }
    }
    store_rows(c, r0, mr, p, sums);
}

/* The micro-kernel: one panel, up to MR rows; groups of 32 (every layer
 * of a vitc int8 file) with their 8 quads unrolled. */
#define TILE(m) (((const qmatmul_call *)call)->w->kgroup == 32 ? tile(call, r0, m, p, 8) : tile(call, r0, m, p, 0))
GEMM_TILE_FN(tile_avx_vnni, AVXVNNI_FN, 4, TILE)

const gemm_tiles qtiles_avx_vnni = {tile_avx_vnni, 1, &kernels_path_avx2};

#endif /* elsewhere never chosen (kernels_isa_supported): kernels_int8.c's stand-ins */
