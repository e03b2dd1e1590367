/* The int8 kernels for AVX-512 VNNI (kernels_int8.h): vpdpbusd multiplies
 * u8 activations (q + 128) by s8 weights in fours and adds them into
 * int32, 64 products per instruction; each group's sums start at its
 * offset (-128 times the group's weight sum), which takes the 128 back out.
 * Tiles of MR rows x 32 columns (two panels): 12 int32 and 12 float
 * accumulators, per step two weight vectors and one broadcast per row.
 * Per group of 32 inputs and per 16 outputs, 8 vpdpbusd, then one
 * conversion, one multiply (weight scale x input scale) and one FMA into
 * the float sum: the scheme's one float step. Compiled for AVX-512 VNNI
 * (AVX512_VNNI_FN), called only when the CPU has it; its layout and
 * arithmetic are those of vnni-reference (kernels_int8.c), which the tests check on
 * every CPU. */
#if defined(__x86_64__) || defined(__i386__)
/* Every function here is compiled for the instruction set (gcc and clang
 * alike; clang ignores gcc's target pragma). */
#ifdef __clang__ /* clang drops a target attribute naming prefer-vector-width */
#define AVX512_VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma")))
#else
#define AVX512_VNNI_FN \
    __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma,prefer-vector-width=512")))
#endif

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels_int8.h"

#define MR 6 /* rows of a tile: 12 + 12 accumulators, 2 weight vectors, a broadcast */
#define INLINE static inline __attribute__((always_inline))

/* The four u8 activations at p, in every lane. */
AVX512_VNNI_FN INLINE __m512i quad_of(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return _mm512_set1_epi32(v);
}

/* Mask of the columns of panel p that exist. */
AVX512_VNNI_FN INLINE __mmask16 panel_mask(const kernels_qmatrix *w, int p) {
    const int here = w->rows - p * QPANEL;
    return here >= QPANEL ? (__mmask16)0xffff : (__mmask16)((1u << here) - 1);
}

/* Rows r0 .. r0 + mr - 1 x panels p .. p + np - 1 (np 1 or 2), every
 * group; mr, np and fixed_quads (quads per group when known where this is
 * inlined, else 0) are constants there, so the accumulators stay in
 * registers. */
AVX512_VNNI_FN INLINE void tile(const qmatmul_call *c, int r0, const int mr, int p, const int np,
                                const int fixed_quads) {
    const kernels_qmatrix *w = c->w;
    const int G = w->groups, quads = fixed_quads ? fixed_quads : w->kgroup / 4;
    const size_t kpad = (size_t)w->kpad;
    const int8_t *v0 = (const int8_t *)w->values + (size_t)p * kpad * QPANEL;
    const int8_t *v1 = v0 + kpad * QPANEL;
    const float *s0 = w->scales + (size_t)p * G * QPANEL, *s1 = s0 + (size_t)G * QPANEL;
    const int32_t *o0 = w->offsets + (size_t)p * G * QPANEL, *o1 = o0 + (size_t)G * QPANEL;
    const uint8_t *a = (const uint8_t *)c->qinp + (size_t)r0 * kpad;
    const float *xs = c->inp_scale + (size_t)r0 * G;
    __m512 sum[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) sum[i][0] = sum[i][1] = _mm512_setzero_ps();
    for (int g = 0; g < G; g++) {
        __m512i acc[MR][2];
        const __m512i off0 = _mm512_load_si512((const void *)(o0 + (size_t)g * QPANEL));
        const __m512i off1 = np == 2 ? _mm512_load_si512((const void *)(o1 + (size_t)g * QPANEL)) : off0;
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) acc[i][0] = off0, acc[i][1] = off1;
        const int8_t *wg0 = v0 + (size_t)g * quads * 4 * QPANEL, *wg1 = v1 + (size_t)g * quads * 4 * QPANEL;
        const uint8_t *ag = a + (size_t)g * quads * 4;
#pragma GCC unroll 8
        for (int q = 0; q < quads; q++) {
            const __m512i w0 = _mm512_load_si512((const void *)(wg0 + q * 4 * QPANEL));
            const __m512i w1 = np == 2 ? _mm512_load_si512((const void *)(wg1 + q * 4 * QPANEL)) : w0;
#pragma GCC unroll 6
            for (int i = 0; i < mr; i++) {
                const __m512i b = quad_of(ag + i * kpad + 4 * q);
                acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], b, w0);
                if (np == 2) acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], b, w1);
            }
        }
        const __m512 ws0 = _mm512_load_ps(s0 + (size_t)g * QPANEL);
        const __m512 ws1 = np == 2 ? _mm512_load_ps(s1 + (size_t)g * QPANEL) : ws0;
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            const __m512 x = _mm512_set1_ps(xs[(size_t)i * G + g]);
            sum[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][0]), _mm512_mul_ps(ws0, x), sum[i][0]);
            if (np == 2)
                sum[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][1]), _mm512_mul_ps(ws1, x), sum[i][1]);
        }
    }
    /* (residual + bias) + sum, as qmatmul_output, lane by lane. */
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < np; q++) {
            const __mmask16 m = panel_mask(w, p + q);
            const size_t at = (size_t)(r0 + i) * c->d.ldo + (size_t)(p + q) * QPANEL;
            __m512 base = c->d.ep.bias ? _mm512_maskz_loadu_ps(m, c->d.ep.bias + (size_t)(p + q) * QPANEL)
                                  : _mm512_setzero_ps();
            if (c->d.ep.residual) base = _mm512_add_ps(_mm512_maskz_loadu_ps(m, c->d.ep.residual + at), base);
            _mm512_mask_storeu_ps(c->d.out + at, m, _mm512_add_ps(base, sum[i][q]));
        }
}

/* The micro-kernel: up to MR rows x one or two panels; groups of 32
 * (every layer of a vitc int8 file) with their 8 quads unrolled. */
#define TILE_NP(m, fq) (np == 2 ? tile(call, r0, m, p, 2, fq) : tile(call, r0, m, p, 1, fq))
#define TILE(m) (((const qmatmul_call *)call)->w->kgroup == 32 ? TILE_NP(m, 8) : TILE_NP(m, 0))
GEMM_TILE_FN(tile_avx512_vnni, AVX512_VNNI_FN, 6, TILE)

const gemm_tiles qtiles_avx512_vnni = {tile_avx512_vnni, 2, &kernels_path_avx512};

/* 16 lanes, each a value in 1 .. 255, as bytes. */
AVX512_VNNI_FN INLINE void store_u8_avx512(uint8_t *q, __m512i v) {
    _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(v));
}
QSPAN_U8_DEFINE(qspan_u8_avx512, AVX512_VNNI_FN, 512, 16, (uint32_t)_mm512_reduce_max_epu32,
                store_u8_avx512)

#endif /* elsewhere never chosen (kernels_isa_supported): kernels_int8.c's stand-ins */
