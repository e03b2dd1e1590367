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
#include "kernels_tile.h" /* store16_neon */

#define MR 6 /* rows of a tile: 24 accumulators + 4 weight vectors */

#define INLINE static inline __attribute__((always_inline))

/* Rows r0 .. r0 + mr - 1 of panel p: mr is a constant where this is
 * inlined, so the accumulators stay in registers. */
INLINE void tile(const gemm_call *g, int r0, const int mr, int p) {
    float32x4_t acc[MR][4];
    zero_tile_neon(acc, mr);
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
    for (int i = 0; i < mr; i++) store16_neon(&g->d, r0 + i, p, acc[i]);
}

ROWS_DEFINE_ELEMENTWISE(neon, )
ROWS_DEFINE_REDUCTIONS(neon, )

/* The micro-kernel: one panel, up to MR rows. */
#define TILE(m) tile(call, r0, m, p)
GEMM_TILE_FN(tile_neon, , 6, TILE)

const kernels_path kernels_path_neon = {{tile_neon, 1, &kernels_path_neon}, act_neon,
                                        gelu_backward_neon, layernorm_neon, softmax_neon};

#endif /* elsewhere never chosen (kernels_isa_supported): kernels_gemm.c's stand-ins */
