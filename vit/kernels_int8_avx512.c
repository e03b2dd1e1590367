/* The int8 panel kernel for AVX-512 VNNI (kernels_int8.h): vpdpbusd
 * multiplies u8 activations (q + 128) by s8 weights in fours and adds them
 * into int32, 64 products per instruction; the group's column sums take
 * the 128 back out. Compiled for AVX-512 VNNI (AVX512_VNNI_FN), called only
 * when the CPU has it; its layout and arithmetic are those of
 * qpanel_vnni_reference, which the tests check on every CPU. */
#if defined(__x86_64__) || defined(__i386__)
/* Every function here is compiled for the instruction set (gcc and clang
 * alike; clang ignores gcc's target pragma). */
#define AVX512_VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vnni")))

#include <immintrin.h>
#include <string.h>

#include "kernels_int8.h"

/* 8 rows x 16 columns: 8 sum and 8 int32 registers of the 32. */
#define BLOCK_ROWS 8

AVX512_VNNI_FN static inline __attribute__((always_inline)) void panel_rows(const kernels_qmatrix *w,
                                                             const int8_t *values,
                                                             const float *scales,
                                                             const int32_t *col_sums,
                                                             const uint8_t *a,
                                                             const float *row_scales, int count,
                                                             float sums[][QPANEL]) {
    const int quads = w->kgroup / 4;
    __m512 sum[BLOCK_ROWS];
    for (int r = 0; r < count; r++) sum[r] = _mm512_setzero_ps();
    for (int g = 0; g < w->groups; g++) {
        __m512i acc[BLOCK_ROWS];
        for (int r = 0; r < count; r++) acc[r] = _mm512_setzero_si512();
        const int8_t *group_values = values + (size_t)g * quads * QPANEL * 4;
        for (int p = 0; p < quads; p++) {
            const __m512i wq = _mm512_load_si512((const void *)(group_values + p * 64));
            for (int r = 0; r < count; r++) {
                int32_t quad;
                memcpy(&quad, a + (size_t)r * w->kpad + 4 * ((size_t)g * quads + p), sizeof quad);
                acc[r] = _mm512_dpbusd_epi32(acc[r], _mm512_set1_epi32(quad), wq);
            }
        }
        const __m512i offset = _mm512_slli_epi32(_mm512_load_si512((const void *)(col_sums + g * QPANEL)), 7);
        const __m512 s = _mm512_load_ps(scales + g * QPANEL);
        for (int r = 0; r < count; r++) {
            const __m512i exact = _mm512_sub_epi32(acc[r], offset);
            const __m512 step = _mm512_mul_ps(s, _mm512_set1_ps(row_scales[(size_t)r * w->groups + g]));
            sum[r] = _mm512_add_ps(sum[r], _mm512_mul_ps(_mm512_cvtepi32_ps(exact), step));
        }
    }
    for (int r = 0; r < count; r++) _mm512_storeu_ps(sums[r], sum[r]);
}

AVX512_VNNI_FN void qpanel_avx512_vnni(float *out, int ldo, const float *residual, const void *qinp,
                        const float *inp_scale, const kernels_qmatrix *w, int panel,
                        const float *bias, int rows) {
    const int first = panel * QPANEL;
    const int here = w->rows - first < QPANEL ? w->rows - first : QPANEL;
    const int8_t *values = (const int8_t *)w->values + (size_t)panel * w->kpad * QPANEL;
    const float *scales = w->scales + (size_t)panel * w->groups * QPANEL;
    const int32_t *col_sums = w->col_sums + (size_t)panel * w->groups * QPANEL;
    float sums[BLOCK_ROWS][QPANEL];
    for (int r0 = 0; r0 < rows; r0 += BLOCK_ROWS) {
        const uint8_t *a = (const uint8_t *)qinp + (size_t)r0 * w->kpad;
        const int count = rows - r0 < BLOCK_ROWS ? rows - r0 : BLOCK_ROWS;
        if (count == BLOCK_ROWS)
            panel_rows(w, values, scales, col_sums, a, inp_scale + (size_t)r0 * w->groups,
                       BLOCK_ROWS, sums);
        else
            for (int r = 0; r < count; r++)
                panel_rows(w, values, scales, col_sums, a + (size_t)r * w->kpad,
                           inp_scale + (size_t)(r0 + r) * w->groups, 1, sums + r);
        for (int r = 0; r < count; r++)
            for (int c = 0; c < here; c++)
                out[(size_t)(r0 + r) * ldo + first + c] = qmatmul_output(
                    residual, bias, ldo, r0 + r, first + c, sums[r][c]);
    }
}

#else /* not x86: never chosen (kernels_isa_supported), kept linkable */

#include "kernels_int8.h"

void qpanel_avx512_vnni(float *out, int ldo, const float *residual, const void *qinp, const float *inp_scale,
        const kernels_qmatrix *w, int panel, const float *bias, int rows) {
    qpanel_generic(out, ldo, residual, qinp, inp_scale, w, panel, bias, rows);
}

#endif
