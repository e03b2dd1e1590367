/* The bf16 GEMM on aarch64 NEON (kernels_bf16.h): tiles of 4 rows x 16
 * columns (one packed panel) in 16 q accumulators; each pair of inputs
 * widened to fp32 (exact) and added by two vfmaq_f32, the odd element's
 * first, as vdpbf16ps adds them: vfmaq rounds once, to nearest even, as an
 * x86 FMA does. What differs is the flush below FLT_MIN: FPCR.FZ would
 * flush by the value before rounding (Arm detects tininess before
 * rounding, x86 after), so instead each sum in (0, FLT_MIN] is noted, and a
 * tile that met one (never on real data) is computed again by the C path,
 * whose bf16_step settles it. Weights are read with DAZ (a damaged file's
 * subnormals), as on x86.
 * BFDOT and BFMMLA are not used: BFDOT rounds to odd and flushes its
 * intermediate sum (FEAT_EBF16 aside), BFMMLA sums four products before
 * one rounding, neither is vdpbf16ps's arithmetic (docs/arm.md). */
#if defined(__aarch64__)

#include <arm_neon.h>

#include "kernels_bf16.h"
#include "kernels_tile.h" /* store16_neon */

#define MR 4

#define INLINE static inline __attribute__((always_inline))

/* Even (low) and odd (high) bf16 of each 32-bit pair as fp32, subnormals
 * read as zeros of their sign. */
INLINE float32x4_t daz(uint32x4_t bits) {
    const uint32x4_t normal = vtstq_u32(bits, vdupq_n_u32(0x7f800000u));
    return vreinterpretq_f32_u32(vbslq_u32(normal, bits, vandq_u32(bits, vdupq_n_u32(0x80000000u))));
}
INLINE float32x4_t even_f32(uint32x4_t v) { return daz(vshlq_n_u32(v, 16)); }
INLINE float32x4_t odd_f32(uint32x4_t v) { return daz(vandq_u32(v, vdupq_n_u32(0xffff0000u))); }

/* Lanes whose sum lies in (0, FLT_MIN] in magnitude: |bits| - 1 < 2^23. */
INLINE uint32x4_t tiny(float32x4_t r) {
    const uint32x4_t m = vandq_u32(vreinterpretq_u32_f32(r), vdupq_n_u32(0x7fffffffu));
    return vcltq_u32(vsubq_u32(m, vdupq_n_u32(1)), vdupq_n_u32(0x00800000u));
}

/* Rows r0 .. r0 + mr - 1 of panel p; 0 when a sum met the flush range
 * (nothing stored then). */
INLINE int tile(const bgemm_call *g, int r0, const int mr, int p) {
    float32x4_t acc[MR][4];
    uint32x4_t met = vdupq_n_u32(0);
    zero_tile_neon(acc, mr);
    const size_t lda = (size_t)g->kpad;
    const uint16_t *a = g->inp + (size_t)r0 * lda;
    const uint16_t *w = g->panels + (size_t)p * g->kpad * BPANEL;
    for (int k = 0; k < g->kpad / 2; k++) {
        float32x4_t we[4], wo[4];
        for (int q = 0; q < 4; q++) {
            const uint32x4_t v = vld1q_u32((const uint32_t *)(w + (size_t)k * 2 * BPANEL) + 4 * q);
            we[q] = even_f32(v), wo[q] = odd_f32(v);
        }
#pragma GCC unroll 4
        for (int i = 0; i < mr; i++) {
            const uint32x4_t x = vdupq_n_u32(bf16_pair(a + i * lda + 2 * k));
            const float32x4_t xe = even_f32(x), xo = odd_f32(x);
            for (int q = 0; q < 4; q++) {
                acc[i][q] = vfmaq_f32(acc[i][q], xo, wo[q]);
                met = vorrq_u32(met, tiny(acc[i][q]));
                acc[i][q] = vfmaq_f32(acc[i][q], xe, we[q]);
                met = vorrq_u32(met, tiny(acc[i][q]));
            }
        }
    }
    if (vmaxvq_u32(met)) return 0;
    for (int i = 0; i < mr; i++) store16_neon(&g->d, r0 + i, p, acc[i]);
    return 1;
}

/* A tile whose sums met the flush range again by the C path, row by row
 * (its bits). */
INLINE void tile_or_c(const bgemm_call *g, int r0, const int mr, int p) {
    if (!tile(g, r0, mr, p))
        for (int r = r0; r < r0 + mr; r++) bgemm_row_generic(g, r, p);
}

/* The micro-kernel: one panel, tiles of up to MR rows. */
#define TILE(m) tile_or_c(call, r0, m, p)
GEMM_TILE_FN(tile_neon, , 4, TILE)

const gemm_tiles bgemm_tiles_neon = {tile_neon, 1, &kernels_path_neon};

#endif /* elsewhere never chosen (kernels_isa_supported): kernels_bf16.c's stand-ins */
