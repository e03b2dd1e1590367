/* kernels_int8.h — inside the int8 kernels: the packed layouts and the
 * per-path panel kernels (kernels_int8.c dispatches; the AVX2, AVX-VNNI and
 * AVX-512 files, and the DotProd and I8MM code of kernels_int8_neon.c, are
 * compiled for their instruction sets and called only on CPUs that have
 * them). Internal to the kernel layer.
 *
 * Layouts, for output columns (weight rows) in panels of QPANEL:
 *   int16 pairs (generic, avx2): values int16 [panels][kpad/2][QPANEL][2],
 *     activations int16 [rows][kpad];
 *   u8 x s8 quads (avx512vnni, avxvnni, vnni-reference): values int8
 *     [panels][kpad/4][QPANEL][4], activations uint8 [rows][kpad] holding
 *     q + 128, and offsets -128 times each group's weight sum, the int32
 *     sums' starting value: offset + sum (q + 128) w = sum q w, exactly;
 *     the NEON paths (neon, neon-dotprod) take the same weights with
 *     activations int8 [rows][kpad] holding q (signed products need no
 *     offset);
 *   s8 octs (neon-i8mm, smmla): values int8 [panels][kpad/8][QPANEL][8],
 *     activations int8 q [rows][kpad], kpad a multiple of 8; no offsets.
 * scales and offsets are [panels][groups][QPANEL]; kpad is cols rounded up
 * to a multiple of 4 (of 8 for octs; padding weights are 0), and a group whose size is
 * the whole row covers kpad.
 *
 * Every path computes each output element the same way (the generic C is
 * the definition): per group g, the exact int32 sum s_g of the products,
 * then
 *   sum = 0; for g in order: sum = fma((float)s_g, scale[n, g] * inp_scale[r, g], sum)
 *   out = (residual + bias) + sum, then the activation (kernels_rows.h),
 * so every path gives the same bits, whatever rows or columns it computes
 * together. Packed copies (vit/packed.c) store these bytes as they are: a
 * change to either layout must change its name in kernels_qmatrix_layout
 * (kernels_int8.c), or old files are misread. */
#ifndef VIT_KERNELS_INT8_H
#define VIT_KERNELS_INT8_H

#include <stdint.h>

#include "kernels.h"
#include "kernels_gemm.h"

#define QPANEL 16

struct kernels_qmatrix {
    kernels_isa isa;
    int rows, cols, group; /* as given */
    int kpad, kgroup;      /* padded row length and group length in it */
    int groups, panels;
    void *values;
    float *scales;
    int32_t *offsets; /* quad layouts only: -128 * the group's weight sum */
    int wrapped;      /* the arrays belong to the caller (kernels_qmatrix_wrap) */
};

/* One qmatmul_forward call, as the panel kernels see it. */
typedef struct qmatmul_call {
    float *out;
    int ldo; /* = w->rows */
    const float *residual, *bias;
    const void *qinp; /* [rows][kpad] in w's layout */
    const float *inp_scale; /* [rows][groups] */
    const kernels_qmatrix *w;
    int rows;
    kernels_act act;
} qmatmul_call;

/* Panels first .. first + count - 1 of every row: out[r, n] for the
 * columns n they hold, as kernels_int8.h says, activation included. */
typedef void qpanel_kernel(const qmatmul_call *c, int first, int count);

qpanel_kernel qpanel_generic, qpanel_vnni_reference;
qpanel_kernel qpanel_avx2;        /* kernels_int8_avx2.c */
qpanel_kernel qpanel_avx_vnni;    /* kernels_int8_avxvnni.c */
qpanel_kernel qpanel_avx512_vnni; /* kernels_int8_avx512.c */
/* kernels_int8_neon.c: s8 activations; quads (neon, dotprod), octs (i8mm) */
qpanel_kernel qpanel_neon, qpanel_neon_dotprod, qpanel_neon_i8mm;

/* The activation of rows r0 .. r0 + rows - 1, columns first .. first + n
 * - 1 of c->out, in place, on path's row kernels (kernels_int8.c). */
void qmatmul_act(const qmatmul_call *c, const kernels_path *path, int r0, int rows, int first,
                 int n);

/* One group of inputs quantised (kernels_int8.c's quantize_span, the same
 * bits) into q: returns its scale. */
float qspan32_avx2(const float *x, int16_t *q);           /* int16, 32 inputs; AVX2 */
float qspan_u8_avx2(const float *x, int len, uint8_t *q);  /* u8 (q + 128), len % 8 == 0; AVX2 */
float qspan_u8_avx512(const float *x, int len, uint8_t *q); /* u8, len % 16 == 0; AVX-512BW */

/* The epilogue every path computes, per element: (residual + bias) + sum. */
static inline float qmatmul_output(const float *residual, const float *bias, int ldo, int r,
                                   int n, float sum) {
    float base = bias ? bias[n] : 0.0f;
    if (residual) base = residual[(size_t)r * ldo + n] + base;
    return base + sum;
}

/* The inverse step of a group whose largest magnitude is max_abs (finite):
 * 127 / max_abs, at most FLT_MAX (a group of magnitudes below ~4e-37 would
 * otherwise get an infinite one, and 0 * inf is NaN); 0 for a zero group. */
static inline float qinv(float max_abs) {
    if (!(max_abs > 0.0f)) return 0.0f;
    const float inv = 127.0f / max_abs;
    return inv < 3.40282347e+38f ? inv : 3.40282347e+38f;
}

#endif
