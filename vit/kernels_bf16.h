/* kernels_bf16.h — inside the bf16 GEMM (kernels.h kernels_linear_bf16):
 * the packed layout, one call's arguments, the arithmetic every path
 * reproduces, and each path's entry point (kernels_bf16.c dispatches;
 * kernels_bf16_avx512.c and kernels_bf16_avx2.c are compiled for their
 * instruction sets and called only on CPUs that have them). Internal to
 * the kernel layer.
 *
 * The definition is vdpbf16ps's (Intel SDM, VDPBF16PS), as AMD Zen 5 runs
 * it, checked bit for bit against the instruction (tests/test_bf16.c):
 * for each output, s = 0, then for each pair of inputs in order
 *   s = step(a[2i+1], w[2i+1], s); s = step(a[2i], w[2i], s)
 * where step(x, y, s) is x * y + s (a bf16 product is exact in fp32)
 * rounded once to nearest even as if the exponent were unbounded, then
 * flushed to a zero of its sign when that is below FLT_MIN (FTZ,
 * tininess after rounding); subnormal inputs read as zeros (DAZ: the
 * packing and bf16_round_forward write none). An fma gives the same
 * rounding except in the flushed range, which bf16_step settles: so the
 * AVX2 path is two FMAs per pair with MXCSR's FTZ on around its loop, and
 * the C path is bf16_step. Then the epilogue of kernels_gemm.h in its
 * order. Packed copies (vit/packed.c) store the layout as it is: a change
 * must change kernels_bmatrix_layout's name. */
#ifndef VIT_KERNELS_BF16_H
#define VIT_KERNELS_BF16_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels.h"
#include "kernels_gemm.h"

#define BPANEL 16 /* outputs per panel: one zmm of fp32 sums */

struct kernels_bmatrix {
    int rows, cols, kpad, panels; /* kpad: cols rounded up to even */
    uint16_t *values;             /* [panels][kpad / 2][BPANEL][2], 64-byte aligned */
    int wrapped;                  /* values belong to the caller */
};

/* One bf16 GEMM: out [rows, n] = epilogue(inp [rows, kpad] x panels). */
typedef struct bgemm_call {
    gemm_dest d;
    const uint16_t *inp; /* [rows][kpad] bf16 */
    const uint16_t *panels;
    int kpad;
} bgemm_call;

/* Each path's micro-kernel (kernels_gemm.h gemm_tiles) on a bgemm_call;
 * the driver is gemm_drive, the fp32 GEMM's. */
extern const gemm_tiles bgemm_tiles_generic;
extern const gemm_tiles bgemm_tiles_avx2;       /* kernels_bf16_avx2.c */
extern const gemm_tiles bgemm_tiles_avx512bf16; /* kernels_bf16_avx512.c */
extern const gemm_tiles bgemm_tiles_neon;       /* kernels_bf16_neon.c */

/* The C micro-kernel: row r of panel p through the epilogue, the
 * definition's bits (the NEON tile's fallback). */
void bgemm_row_generic(const bgemm_call *g, int r, int p);

/* A row of n floats rounded as bf16_round into dst (vcvtne2ps2bf16, whose
 * rounding is bf16_round's: RNE, DAZ, NaN quieted); kernels_bf16_avx512.c. */
void bf16_round_row_avx512bf16(uint16_t *dst, const float *x, int n);

/* The two bf16 at a (an input pair: a[0] low, a[1] high) as one 32-bit
 * word, which every vector tile broadcasts. */
static inline uint32_t bf16_pair(const uint16_t *a) {
    uint32_t pair;
    memcpy(&pair, a, sizeof pair);
    return pair;
}

static inline float bf16_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* step(x, y, s) where fmaf's result r is at most FLT_MIN in magnitude (the
 * rare case, out of line): r below FLT_MIN is flushed; r = FLT_MIN stays
 * unless the exact x y + s lies below FLT_MIN - 2^-151, the midpoint
 * under which rounding to 24 bits with an unbounded exponent gives less
 * than FLT_MIN. The exact sum is v + e, by a double product (exact: 16
 * significant bits) and Knuth's two-sum (exact). */
float bf16_step_tiny(float x, float y, float s, float r);

static inline float bf16_step(float x, float y, float s) {
    const float r = fmaf(x, y, s);
    if (__builtin_expect(!(fabsf(r) <= 0x1p-126f), 1)) return r; /* NaN too */
    return bf16_step_tiny(x, y, s, r);
}

/* float -> bf16, round to nearest even; subnormals -> zeros of their sign;
 * NaN -> a quiet NaN of its sign and high payload. */
static inline uint16_t bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0) return (uint16_t)(u >> 16 & 0x8000u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)(u >> 16 | 0x0040u);
    return (uint16_t)((u + 0x7fffu + (u >> 16 & 1u)) >> 16);
}

#endif
