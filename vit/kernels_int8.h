/* kernels_int8.h — inside the int8 kernels: the packed layouts and the
 * per-path micro-kernels (kernels_int8.c dispatches; the AVX2, AVX-VNNI and
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

/* One qmatmul_forward call, as the micro-kernels see it: d.n = w->rows,
 * d.ldo = w->rows, d.ep's bias, residual and act (the epilogue is
 * qmatmul_output's, not gemm_epilogue's: no scale or gamma). */
typedef struct qmatmul_call {
    gemm_dest d;
    const void *qinp;       /* [rows][kpad] in w's layout */
    const float *inp_scale; /* [rows][groups] */
    const kernels_qmatrix *w;
} qmatmul_call;

/* Each int8 path's micro-kernel (kernels_gemm.h gemm_tiles) on a
 * qmatmul_call, run by the fp32 GEMM's driver (gemm_run). */
extern const gemm_tiles qtiles_generic, qtiles_vnni_reference;
extern const gemm_tiles qtiles_avx2;        /* kernels_int8_avx2.c */
extern const gemm_tiles qtiles_avx_vnni;    /* kernels_int8_avxvnni.c */
extern const gemm_tiles qtiles_avx512_vnni; /* kernels_int8_avx512.c */
/* kernels_int8_neon.c: s8 activations; quads (neon, dotprod), octs (i8mm) */
extern const gemm_tiles qtiles_neon, qtiles_neon_dotprod, qtiles_neon_i8mm;

/* One group of inputs quantised (kernels_int8.c's quantize_span, the same
 * bits) into q: returns its scale. */
float qspan32_avx2(const float *x, int16_t *q);           /* int16, 32 inputs; AVX2 */
float qspan_u8_avx2(const float *x, int len, uint8_t *q);  /* u8 (q + 128), len % 8 == 0; AVX2 */
float qspan_u8_avx512(const float *x, int len, uint8_t *q); /* u8, len % 16 == 0; AVX-512BW */

/* The body of qspan_u8_avx2 and qspan_u8_avx512, one for both widths (W
 * 256 or 512 bits, LANES floats): max of the magnitudes' bit patterns
 * (MAX_U32 of the lanes), inv = qinv(max), x * inv rounded to nearest even
 * (the default rounding mode), clamped to +-127, plus 128; STORE_U8(q, v)
 * narrows a vector's lanes to bytes. A NaN or infinity: a NaN scale over
 * zeros (q = 128). */
#define QSPAN_U8_DEFINE(NAME, FN, W, LANES, MAX_U32, STORE_U8)                                  \
    FN float NAME(const float *x, int len, uint8_t *q) {                                       \
        const __m##W##i magnitude = _mm##W##_set1_epi32(0x7fffffff);                           \
        __m##W##i top = _mm##W##_setzero_si##W();                                              \
        for (int k = 0; k < len; k += LANES)                                                   \
            top = _mm##W##_max_epu32(                                                          \
                top, _mm##W##_and_si##W(_mm##W##_castps_si##W(_mm##W##_loadu_ps(x + k)), magnitude)); \
        const uint32_t max_bits = MAX_U32(top);                                                \
        if (max_bits >= 0x7f800000u) {                                                         \
            memset(q, 128, (size_t)len);                                                       \
            return NAN;                                                                        \
        }                                                                                      \
        float max_abs;                                                                         \
        memcpy(&max_abs, &max_bits, sizeof max_abs);                                           \
        const __m##W inv = _mm##W##_set1_ps(qinv(max_abs));                                    \
        const __m##W##i lo = _mm##W##_set1_epi32(-127), hi = _mm##W##_set1_epi32(127);        \
        const __m##W##i zero_point = _mm##W##_set1_epi32(128);                                 \
        for (int k = 0; k < len; k += LANES) {                                                 \
            __m##W##i v = _mm##W##_cvtps_epi32(_mm##W##_mul_ps(_mm##W##_loadu_ps(x + k), inv));  \
            v = _mm##W##_add_epi32(_mm##W##_min_epi32(_mm##W##_max_epi32(v, lo), hi), zero_point); \
            STORE_U8(q + k, v);                                                                \
        }                                                                                      \
        return max_abs > 0.0f ? max_abs / 127.0f : 1.0f;                                       \
    }

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
