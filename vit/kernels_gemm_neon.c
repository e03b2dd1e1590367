/* vitc's fp32 GEMM for aarch64 NEON (kernels_gemm.h): tiles of 6 rows x 16
 * columns (one packed panel) in 24 of the 32 q registers, each step one
 * broadcast load of an input and four vfmaq_f32 per row. vfmaq_f32 rounds
 * once, as fmaf and the x86 FMA instructions do, and each element's chain
 * runs over k in order: the bits of the C path and of the x86 paths. The
 * row kernels are kernels_rows.h's C, which gcc vectorises for NEON. */
#if defined(__aarch64__)

#include <arm_neon.h>

#include "kernels_gemm.h"
#include "kernels_rows.h"

#define MR 6 /* rows of a tile: 24 accumulators + 4 weight vectors */

#define INLINE static inline __attribute__((always_inline))

/* Row r's columns of panel p from their sums acc[0..3], through the
 * epilogue (gemm_epilogue's order, lane by lane); a part panel through
 * the scalar epilogue. */
INLINE void store(const gemm_call *g, int r, int p, const float32x4_t acc[4]) {
    const int j0 = p * FPANEL, here = g->n - j0 < FPANEL ? g->n - j0 : FPANEL;
    float *out = g->out + (size_t)r * g->ldo + j0;
    const float *res = g->ep.residual ? g->ep.residual + (size_t)r * g->ldo : NULL;
    if (here < FPANEL) {
        float sums[FPANEL];
        for (int q = 0; q < 4; q++) vst1q_f32(sums + 4 * q, acc[q]);
        for (int c = 0; c < here; c++) out[c] = gemm_epilogue(&g->ep, sums[c], j0 + c, res);
        return;
    }
    for (int q = 0; q < 4; q++) {
        float32x4_t v = acc[q];
        const int j = j0 + 4 * q;
        if (g->ep.scaled) v = vmulq_n_f32(v, g->ep.scale);
        if (g->ep.bias) v = vaddq_f32(v, vld1q_f32(g->ep.bias + j));
        if (res) {
            if (g->ep.gamma) v = vmulq_f32(vld1q_f32(g->ep.gamma + j), v);
            v = vaddq_f32(vld1q_f32(res + j), v);
        }
        vst1q_f32(out + 4 * q, v);
    }
}

/* Rows r0 .. r0 + mr - 1 of panel p: mr is a constant where this is
 * inlined, so the accumulators stay in registers. */
INLINE void tile(const gemm_call *g, int r0, const int mr, int p) {
    float32x4_t acc[MR][4];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < 4; q++) acc[i][q] = vdupq_n_f32(0.0f);
    const size_t lda = (size_t)g->lda;
    const float *a = g->inp + (size_t)r0 * lda;
    const float *w = g->panels + (size_t)p * g->k * FPANEL;
    for (int k = 0; k < g->k; k++) {
        const float *wk = w + (size_t)k * FPANEL;
        const float32x4_t b0 = vld1q_f32(wk), b1 = vld1q_f32(wk + 4), b2 = vld1q_f32(wk + 8),
                          b3 = vld1q_f32(wk + 12);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            const float32x4_t x = vld1q_dup_f32(a + i * lda + k);
            acc[i][0] = vfmaq_f32(acc[i][0], x, b0);
            acc[i][1] = vfmaq_f32(acc[i][1], x, b1);
            acc[i][2] = vfmaq_f32(acc[i][2], x, b2);
            acc[i][3] = vfmaq_f32(acc[i][3], x, b3);
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) store(g, r0 + i, p, acc[i]);
}

ROWS_DEFINE_ELEMENTWISE(neon, )
ROWS_DEFINE_REDUCTIONS(neon, )

static void gemm_panels_neon(const gemm_call *g, int p0, int p1) {
    for (int p = p0; p < p1; p++) {
        for (int r0 = 0; r0 < g->rows; r0 += MR) {
            switch (g->rows - r0 < MR ? g->rows - r0 : MR) {
            case 1: tile(g, r0, 1, p); break;
            case 2: tile(g, r0, 2, p); break;
            case 3: tile(g, r0, 3, p); break;
            case 4: tile(g, r0, 4, p); break;
            case 5: tile(g, r0, 5, p); break;
            default: tile(g, r0, MR, p);
            }
        }
        if (g->ep.act == KERNELS_ACT_NONE) continue;
        const int j0 = p * FPANEL, cols = g->n - j0 < FPANEL ? g->n - j0 : FPANEL;
        for (int r = 0; r < g->rows; r++) {
            float *row = g->out + (size_t)r * g->ldo + j0;
            act_neon(row, row, (size_t)cols, g->ep.act);
        }
    }
}

const kernels_path kernels_path_neon = {gemm_panels_neon, act_neon, gelu_backward_neon,
                                        layernorm_neon, softmax_neon};

#else /* not aarch64: never chosen (kernels_isa_supported), kept linkable */

#include "kernels_gemm.h"

const kernels_path kernels_path_neon = {0};

#endif
