/* kernels_int8.h — inside the int8 kernels: the packed layouts and the
 * per-path panel kernels (kernels_int8.c dispatches; the AVX2 and AVX-512
 * files are compiled for their instruction sets and called only on CPUs
 * that have them). Internal to the kernel layer.
 *
 * Layouts, for output columns (weight rows) in panels of QPANEL:
 *   int16 pairs (generic, avx2): values int16 [panels][kpad/2][QPANEL][2],
 *     activations int16 [rows][kpad];
 *   u8 x s8 quads (vnni, vnni-reference): values int8 [panels][kpad/4][QPANEL][4],
 *     activations uint8 [rows][kpad] holding q + 128, and col_sums the sum
 *     of each group's weights, so sum (q + 128) w - 128 sum w = sum q w.
 * scales and col_sums are [panels][groups][QPANEL]; kpad is cols rounded
 * up to a multiple of 4 (padding weights are 0), and a group whose size is
 * the whole row covers kpad. Packed copies (vit/packed.c) store these
 * bytes as they are: a change to either layout must change its name in
 * kernels_qmatrix_layout (kernels_int8.c), or old files are misread. */
#ifndef VIT_KERNELS_INT8_H
#define VIT_KERNELS_INT8_H

#include <stdint.h>

#include "kernels.h"

#define QPANEL 16

struct kernels_qmatrix {
    kernels_isa isa;
    int rows, cols, group; /* as given */
    int kpad, kgroup;      /* padded row length and group length in it */
    int groups, panels;
    void *values;
    float *scales;
    int32_t *col_sums; /* quad layouts only */
    int wrapped;       /* the arrays belong to the caller (kernels_qmatrix_wrap) */
};

/* One panel's columns for rows rows of activations (row stride kpad):
 * out[r, panel * QPANEL + c] for c < cols_here, as qmatmul_forward says. */
typedef void qpanel_kernel(float *out, int ldo, const float *residual, const void *qinp,
                           const float *inp_scale, const kernels_qmatrix *w, int panel,
                           const float *bias, int rows);

qpanel_kernel qpanel_generic, qpanel_vnni_reference;
qpanel_kernel qpanel_avx2;        /* kernels_int8_avx2.c */
qpanel_kernel qpanel_avx512_vnni; /* kernels_int8_avx512.c */

/* 32 inputs quantised into the int16 layout (kernels_int8.c's
 * quantize_span, the same bits); returns their scale. AVX2 only. */
float qspan32_avx2(const float *x, int16_t *q);

/* The epilogue every path computes, per element: (residual + bias) + sum,
 * where sum adds up, group by group, (float)int_sum * (weight scale *
 * input scale). */
static inline float qmatmul_output(const float *residual, const float *bias, int ldo, int r,
                                   int n, float sum) {
    float base = bias ? bias[n] : 0.0f;
    if (residual) base = residual[(size_t)r * ldo + n] + base;
    return base + sum;
}

#endif
