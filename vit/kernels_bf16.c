/* The bf16 GEMM (kernels.h kernels_linear_bf16, kernels_bf16.h): packing,
 * rounding activations, choosing a path, and the portable C micro-kernel,
 * the definition the others reproduce; the driver and the thread split are
 * the fp32 GEMM's (kernels_gemm.c gemm_run). Compiled with
 * -ffp-contract=off (CMakeLists.txt): its two-sum must not be fused. */
#include "kernels_bf16.h"

#include <stdlib.h>

#include "kernels_parallel.h"

float bf16_step_tiny(float x, float y, float s, float r) {
    if (fabsf(r) < 0x1p-126f) return copysignf(0.0f, r);
    const double t = (double)x * (double)y, v = t + (double)s, b = v - t;
    const double e = (t - (v - b)) + ((double)s - b);
    const double lim = 0x1p-126 - 0x1p-151, av = fabs(v);
    const int below = av < lim || (av == lim && (v > 0 ? e < 0 : e > 0));
    return below ? copysignf(0.0f, r) : r;
}

kernels_bmatrix *kernels_bmatrix_create(int rows, int cols) {
    if (rows <= 0 || cols <= 0) return NULL;
    kernels_bmatrix *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    *w = (kernels_bmatrix){rows, cols, (cols + 1) / 2 * 2, (rows + BPANEL - 1) / BPANEL, NULL, 0};
    w->values = kernels_alloc_panels(kernels_bmatrix_bytes(w));
    if (!w->values) {
        free(w);
        return NULL;
    }
    /* Zeroed: the padding lanes and the odd column past cols must be. */
    memset(w->values, 0, kernels_bmatrix_bytes(w));
    return w;
}

/* Where weight (n, k) lives. */
static size_t bindex(const kernels_bmatrix *w, int n, int k) {
    return (((size_t)(n / BPANEL) * (size_t)(w->kpad / 2) + (size_t)(k / 2)) * BPANEL +
            (size_t)(n % BPANEL)) * 2 + (size_t)(k % 2);
}

void kernels_bmatrix_set_rows(kernels_bmatrix *w, int first_row, int count,
                              const void *values) {
    for (int i = 0; i < count; i++) {
        const unsigned char *row = (const unsigned char *)values + (size_t)i * w->cols * 2;
        for (int k = 0; k < w->cols; k++) {
            uint16_t h;
            memcpy(&h, row + 2 * (size_t)k, sizeof h);
            w->values[bindex(w, first_row + i, k)] = (h & 0x7f80u) ? h : (uint16_t)(h & 0x8000u);
        }
    }
}

void kernels_bmatrix_to_f32(const kernels_bmatrix *w, float *dst) {
    for (int n = 0; n < w->rows; n++)
        for (int k = 0; k < w->cols; k++)
            dst[(size_t)n * w->cols + k] = bf16_f32(w->values[bindex(w, n, k)]);
}

size_t kernels_bmatrix_bytes(const kernels_bmatrix *w) {
    return (size_t)w->panels * BPANEL * (size_t)w->kpad * sizeof(uint16_t);
}

void kernels_bmatrix_free(kernels_bmatrix *w) {
    if (!w) return;
    if (!w->wrapped) free(w->values);
    free(w);
}

/* Version 1: [panels][kpad / 2][16][2] bf16, panel p holding outputs 16p
 * .. 16p + 15 (lanes past rows and the odd column past cols 0, subnormals
 * flushed), one part. */
const char *kernels_bmatrix_layout(void) { return "bmatrix-bf16-pair-panel16-v1"; }

void kernels_bmatrix_parts(const kernels_bmatrix *w, kernels_packed *out) {
    *out = (kernels_packed){.count = 1, .part = {w->values}, .bytes = {kernels_bmatrix_bytes(w)}};
}

kernels_bmatrix *kernels_bmatrix_wrap(int rows, int cols, const kernels_packed *p) {
    if (rows <= 0 || cols <= 0 || p->count != 1 || (uintptr_t)p->part[0] % 64 != 0) return NULL;
    kernels_bmatrix *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    *w = (kernels_bmatrix){rows, cols, (cols + 1) / 2 * 2, (rows + BPANEL - 1) / BPANEL,
                           (uint16_t *)p->part[0], 1};
    if (p->bytes[0] != kernels_bmatrix_bytes(w)) {
        free(w);
        return NULL;
    }
    return w;
}

size_t kernels_binp_bytes(int rows, int cols) {
    return (size_t)rows * (size_t)((cols + 1) / 2 * 2) * sizeof(uint16_t);
}

/* One row, in plain C that gcc vectorises (the same bits on every path). */
static void round_row(uint16_t *dst, const float *x, int cols, int kpad) {
    for (int k = 0; k < cols; k++) dst[k] = bf16_round(x[k]);
    for (int k = cols; k < kpad; k++) dst[k] = 0;
}

void bf16_round_forward(uint16_t *binp, const float *inp, int rows, int cols,
                        const kernels_bmatrix *w, kernels_threads th) {
    const int kpad = w->kpad;
    /* The instruction where there is one: SSE2's C took a fifth of a
     * narrow layer's time (DeiT-tiny's proj and fc2). */
    const int hw = th.isa == KERNELS_ISA_AVX512_BF16;
    PARALLEL_FOR(for (int r = 0; r < rows; r++) {
        uint16_t *dst = binp + (size_t)r * kpad;
        if (hw) {
            bf16_round_row_avx512bf16(dst, inp + (size_t)r * cols, cols);
            if (cols < kpad) dst[cols] = 0;
        } else {
            round_row(dst, inp + (size_t)r * cols, cols, kpad);
        }
    });
}

/* ------------------------------------------------------------ generic */

void bgemm_row_generic(const bgemm_call *g, int r, int p) {
    const uint16_t *a = g->inp + (size_t)r * g->kpad;
    const uint16_t *w = g->panels + (size_t)p * g->kpad * BPANEL;
    float acc[BPANEL] = {0};
    for (int i = 0; i < g->kpad / 2; i++) {
        const float a0 = bf16_f32(a[2 * i]), a1 = bf16_f32(a[2 * i + 1]);
        const uint16_t *wi = w + (size_t)i * BPANEL * 2;
        for (int c = 0; c < BPANEL; c++) {
            /* DAZ on the weights too: a mapped file's bytes were packed by
             * vitc (no subnormals) or damaged; either way as vdpbf16ps. */
            const uint16_t w0 = wi[2 * c], w1 = wi[2 * c + 1];
            const float y0 = bf16_f32((w0 & 0x7f80u) ? w0 : (uint16_t)(w0 & 0x8000u));
            const float y1 = bf16_f32((w1 & 0x7f80u) ? w1 : (uint16_t)(w1 & 0x8000u));
            acc[c] = bf16_step(a0, y0, bf16_step(a1, y1, acc[c]));
        }
    }
    gemm_store_row(&g->d, r, p, acc);
}

#define ROW(m) bgemm_row_generic(call, r0, p)
GEMM_TILE_FN(tile_generic, , 1, ROW)

const gemm_tiles bgemm_tiles_generic = {tile_generic, 1, &kernels_path_generic};

/* ------------------------------------------------------------ dispatch */

static const gemm_tiles *path_of(kernels_isa isa) {
    switch (isa) {
    case KERNELS_ISA_AVX512_BF16: return &bgemm_tiles_avx512bf16;
    case KERNELS_ISA_AVX2:
    case KERNELS_ISA_AVX_VNNI:
    case KERNELS_ISA_AVX512:
    case KERNELS_ISA_AVX512_VNNI: return &bgemm_tiles_avx2;
    case KERNELS_ISA_NEON:
    case KERNELS_ISA_NEON_DOTPROD:
    case KERNELS_ISA_NEON_I8MM: return &bgemm_tiles_neon;
    default: return &bgemm_tiles_generic;
    }
}

const char *kernels_bf16_path(kernels_isa isa) {
    const gemm_tiles *t = path_of(isa);
    return t == &bgemm_tiles_avx512bf16 ? "avx512bf16 (vdpbf16ps)"
           : t == &bgemm_tiles_avx2     ? "avx2 (fma)"
           : t == &bgemm_tiles_neon     ? "neon (vfmaq)"
                                        : "generic (C)";
}

void kernels_linear_bf16(float *out, int ldo, const uint16_t *binp, int rows,
                         const kernels_bmatrix *w, const kernels_epilogue *ep,
                         kernels_threads th) {
    static const kernels_epilogue plain = {0};
    const bgemm_call g = {{out, ldo, rows, w->rows, ep ? *ep : plain}, binp, w->values, w->kpad};
    gemm_run(&g, path_of(th.isa), th);
}

/* The paths of another architecture: never chosen (kernels_isa_supported),
 * kept linkable. */
#if !defined(__x86_64__) && !defined(__i386__)
const gemm_tiles bgemm_tiles_avx2 = {0}, bgemm_tiles_avx512bf16 = {0};

void bf16_round_row_avx512bf16(uint16_t *dst, const float *x, int n) {
    for (int k = 0; k < n; k++) dst[k] = bf16_round(x[k]);
}
#endif
#if !defined(__aarch64__)
const gemm_tiles bgemm_tiles_neon = {0};
#endif
