/* The int8 micro-kernel for AVX2 (kernels_int8.h): vpmaddwd multiplies
 * int16 pairs and adds each pair into int32, exactly, 16 products per
 * instruction (twice the multiply-adds of an fp32 FMA of the same width).
 * Compiled for AVX2 (AVX2_FN), called only when the CPU has it. */
#if defined(__x86_64__) || defined(__i386__)
/* Every function here is compiled for the instruction set (gcc and clang
 * alike; clang ignores gcc's target pragma). */
#define AVX2_FN __attribute__((target("avx2,fma")))

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels_int8.h"

/* Rows a block of the panel runs together: 4 rows x 16 columns of int32
 * sums are 8 registers, plus two of weights and four broadcasts (gcc loads
 * them all first: with 6 rows it spilled sums); the sums in float live in
 * memory, flushed once a group. */
#define BLOCK_ROWS 4

/* The pair of int16 activations k = 2p, 2p + 1 of a row, in every lane. */
AVX2_FN static inline __m256i pair_of(const int16_t *row, size_t p) {
    int32_t pair;
    memcpy(&pair, row + 2 * p, sizeof pair);
    return _mm256_set1_epi32(pair);
}

/* sums = fma(acc, weight scales * the row's input scale for the group,
 * sums), both halves, as kernels_int8.h says. */
AVX2_FN static inline void flush(float *sums, __m256i acc0, __m256i acc1, __m256 s0, __m256 s1,
                         float row_scale) {
    const __m256 rs = _mm256_set1_ps(row_scale);
    _mm256_storeu_ps(sums, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc0), _mm256_mul_ps(s0, rs),
                                           _mm256_loadu_ps(sums)));
    _mm256_storeu_ps(sums + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc1), _mm256_mul_ps(s1, rs),
                                               _mm256_loadu_ps(sums + 8)));
}

/* acc += madd(b, w), through a scratch register: written with intrinsics,
 * gcc 12 multiplies into b, adds into the product and moves that back to
 * acc, a third more instructions than the loop needs (measured 1.2x
 * slower). */
AVX2_FN static inline __attribute__((always_inline)) __m256i madd_add(__m256i acc, __m256i b, __m256i w) {
    __m256i product;
    __asm__("vpmaddwd %[w], %[b], %[product]\n\t"
            "vpaddd %[product], %[acc], %[acc]"
            : [acc] "+x"(acc), [product] "=&x"(product)
            : [b] "x"(b), [w] "x"(w));
    return acc;
}

#define MADD(acc, b, w) acc = madd_add(acc, b, w)

/* An aligned load gcc cannot repeat: with _mm256_load_si256 it reloads
 * the weights before every multiply instead of keeping them in registers. */
AVX2_FN static inline __attribute__((always_inline)) __m256i load_once(const int16_t *p) {
    __m256i v;
    __asm__("vmovdqa %[p], %[v]" : [v] "=x"(v) : [p] "m"(*(const __m256i *)p));
    return v;
}

/* sums [BLOCK_ROWS][QPANEL] of rows a .. a + 3 (row stride kpad; their
 * input scales row_scales, groups apart). */
AVX2_FN static void panel_block(const kernels_qmatrix *w, const int16_t *values, const float *scales,
                        const int16_t *a, const float *row_scales, float sums[][QPANEL]) {
    const int G = w->groups;
    const int pairs = w->kgroup / 2;
    const size_t kpad = (size_t)w->kpad;
    const int16_t *a0 = a, *a1 = a + kpad, *a2 = a + 2 * kpad, *a3 = a + 3 * kpad;
    memset(sums, 0, sizeof(float) * BLOCK_ROWS * QPANEL);
    for (int g = 0; g < w->groups; g++) {
        __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
                c21 = c00, c30 = c00, c31 = c00;
        const int16_t *v = values + (size_t)g * pairs * QPANEL * 2;
        for (size_t p = (size_t)g * pairs; p < (size_t)(g + 1) * pairs; p++, v += 32) {
            const __m256i w0 = load_once(v), w1 = load_once(v + 16);
            __m256i b = pair_of(a0, p);
            MADD(c00, b, w0);
            MADD(c01, b, w1);
            b = pair_of(a1, p);
            MADD(c10, b, w0);
            MADD(c11, b, w1);
            b = pair_of(a2, p);
            MADD(c20, b, w0);
            MADD(c21, b, w1);
            b = pair_of(a3, p);
            MADD(c30, b, w0);
            MADD(c31, b, w1);
        }
        const __m256 s0 = _mm256_load_ps(scales + g * QPANEL);
        const __m256 s1 = _mm256_load_ps(scales + g * QPANEL + 8);
        flush(sums[0], c00, c01, s0, s1, row_scales[0 * G + g]);
        flush(sums[1], c10, c11, s0, s1, row_scales[1 * G + g]);
        flush(sums[2], c20, c21, s0, s1, row_scales[2 * G + g]);
        flush(sums[3], c30, c31, s0, s1, row_scales[3 * G + g]);
    }
}

/* sums [QPANEL] of one row. */
AVX2_FN static void panel_row(const kernels_qmatrix *w, const int16_t *values, const float *scales,
                      const int16_t *a, const float *row_scales, float *sums) {
    const int pairs = w->kgroup / 2;
    memset(sums, 0, sizeof(float) * QPANEL);
    for (int g = 0; g < w->groups; g++) {
        __m256i c0 = _mm256_setzero_si256(), c1 = c0;
        const int16_t *v = values + (size_t)g * pairs * QPANEL * 2;
        for (size_t p = (size_t)g * pairs; p < (size_t)(g + 1) * pairs; p++, v += 32) {
            const __m256i b = pair_of(a, p);
            MADD(c0, b, _mm256_load_si256((const __m256i *)v));
            MADD(c1, b, _mm256_load_si256((const __m256i *)(v + 16)));
        }
        flush(sums, c0, c1, _mm256_load_ps(scales + g * QPANEL),
              _mm256_load_ps(scales + g * QPANEL + 8), row_scales[g]);
    }
}

/* qmatmul_output for 8 columns at once, in its order: (residual + bias) + sum. */
AVX2_FN static inline __m256 output8(const float *residual, const float *bias, __m256 sum) {
    __m256 base = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
    if (residual) base = _mm256_add_ps(_mm256_loadu_ps(residual), base);
    return _mm256_add_ps(base, sum);
}

/* Writes rows rows of sums (a whole panel when here is QPANEL). */
AVX2_FN static void write_rows(float *out, int ldo, const float *residual, const float *bias,
                       int r0, int rows, int first, int here,
                       float sums[][QPANEL]) {
    for (int r = 0; r < rows; r++) {
        const size_t at = (size_t)(r0 + r) * ldo + first;
        if (here == QPANEL) {
            for (int half = 0; half < 2; half++) {
                const __m256 y = output8(residual ? residual + at + 8 * half : NULL,
                                         bias ? bias + first + 8 * half : NULL,
                                         _mm256_loadu_ps(sums[r] + 8 * half));
                _mm256_storeu_ps(out + at + 8 * half, y);
            }
            continue;
        }
        for (int c = 0; c < here; c++)
            out[at + c] = qmatmul_output(residual, bias, ldo, r0 + r, first + c, sums[r][c]);
    }
}

/* Rows r0 .. r0 + mr - 1 of panel p: a block of BLOCK_ROWS, or fewer
 * rows one at a time. */
AVX2_FN static inline void block(const qmatmul_call *c, int r0, int mr, int p) {
    const kernels_qmatrix *w = c->w;
    const int first = p * QPANEL;
    const int here = w->rows - first < QPANEL ? w->rows - first : QPANEL;
    const int16_t *values = (const int16_t *)w->values + (size_t)p * w->kpad * QPANEL;
    const float *scales = w->scales + (size_t)p * w->groups * QPANEL;
    const int16_t *a = (const int16_t *)c->qinp + (size_t)r0 * w->kpad;
    float sums[BLOCK_ROWS][QPANEL];
    if (mr == BLOCK_ROWS)
        panel_block(w, values, scales, a, c->inp_scale + (size_t)r0 * w->groups, sums);
    else
        for (int r = 0; r < mr; r++)
            panel_row(w, values, scales, a + (size_t)r * w->kpad,
                      c->inp_scale + (size_t)(r0 + r) * w->groups, sums[r]);
    write_rows(c->d.out, c->d.ldo, c->d.ep.residual, c->d.ep.bias, r0, mr, first, here, sums);
}

/* The micro-kernel: one panel, blocks of BLOCK_ROWS rows. */
#define BLOCK(m) block(call, r0, m, p)
GEMM_TILE_FN(tile_avx2, AVX2_FN, 4, BLOCK)

const gemm_tiles qtiles_avx2 = {tile_avx2, 1, &kernels_path_avx2};

/* The largest of 8 unsigned lanes. */
AVX2_FN static inline uint32_t max_u32_avx2(__m256i v) {
    __m128i half = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    half = _mm_max_epu32(half, _mm_shuffle_epi32(half, 0x4e));
    half = _mm_max_epu32(half, _mm_shuffle_epi32(half, 0xb1));
    return (uint32_t)_mm_cvtsi128_si32(half);
}

/* quantize_span (kernels_int8.c) of 32 values into the int16 layout, the
 * same bits: max of the magnitudes' bit patterns, 127 / max, x * inv
 * rounded to nearest even, clamped to +-127. */
AVX2_FN float qspan32_avx2(const float *x, int16_t *q) {
    const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
    __m256 v[4];
    __m256i top = _mm256_setzero_si256();
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        top = _mm256_max_epu32(top, _mm256_and_si256(_mm256_castps_si256(v[i]), magnitude));
    }
    const uint32_t max_bits = max_u32_avx2(top);
    if (max_bits >= 0x7f800000u) {
        memset(q, 0, 32 * sizeof *q);
        return __builtin_nanf("");
    }
    float max_abs;
    memcpy(&max_abs, &max_bits, sizeof max_abs);
    const __m256 inv = _mm256_set1_ps(qinv(max_abs));
    const __m256 hi = _mm256_set1_ps(127.0f), lo = _mm256_set1_ps(-127.0f);
    __m256i ints[4];
    for (int i = 0; i < 4; i++) {
        __m256 r = _mm256_round_ps(_mm256_mul_ps(v[i], inv),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        r = _mm256_max_ps(_mm256_min_ps(r, hi), lo);
        ints[i] = _mm256_cvtps_epi32(r);
    }
    /* packs works within 128-bit lanes: put the quarters back in order. */
    const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    for (int i = 0; i < 2; i++) {
        const __m256i packed = _mm256_packs_epi32(ints[2 * i], ints[2 * i + 1]);
        _mm256_storeu_si256((__m256i *)(q + 16 * i),
                            _mm256_permutevar8x32_epi32(packed, order));
    }
    return max_abs > 0.0f ? max_abs / 127.0f : 1.0f;
}

/* 8 lanes, each a value in 1 .. 255, as bytes. */
AVX2_FN static inline void store_u8_avx2(uint8_t *q, __m256i v) {
    const __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64((__m128i *)q, _mm_packus_epi16(words, words));
}

/* quantize_span into the u8 layout, for the AVX-VNNI path. */
QSPAN_U8_DEFINE(qspan_u8_avx2, AVX2_FN, 256, 8, max_u32_avx2, store_u8_avx2)

#endif /* elsewhere never chosen (kernels_isa_supported): kernels_int8.c's stand-ins */
