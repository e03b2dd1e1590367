/* The bf16 GEMM (kernels.h kernels_linear_bf16, kernels_bf16.h): packing,
 * rounding activations, splitting output panels over threads, choosing a
 * path, and the portable C path, the definition the others reproduce.
 * Compiled with -ffp-contract=off (CMakeLists.txt): its two-sum must not
 * be fused. */
/* madvise and MADV_HUGEPAGE (Linux) beside the project's POSIX. */
#define _DEFAULT_SOURCE
#include "kernels_bf16.h"

#include <omp.h>
#include <stdlib.h>
#include <sys/mman.h>

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
    const size_t bytes = (kernels_bmatrix_bytes(w) + 63) / 64 * 64, huge = (size_t)2 << 20;
    void *values = NULL;
    /* Large matrices in 2 MiB pages where allowed (as kernels_fmatrix). */
    if (bytes >= huge && posix_memalign(&values, huge, (bytes + huge - 1) / huge * huge) == 0) {
#ifdef MADV_HUGEPAGE
        madvise(values, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE);
#endif
    } else {
        values = aligned_alloc(64, bytes);
    }
    if (!values) {
        free(w);
        return NULL;
    }
    memset(values, 0, bytes);
    w->values = values;
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

/* One row's 16 columns of panel p through the epilogue. */
static void generic_row_panel(const bgemm_call *g, int r, int p) {
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
    const int j0 = p * BPANEL, here = g->n - j0 < BPANEL ? g->n - j0 : BPANEL;
    float *out = g->out + (size_t)r * g->ldo;
    const float *res = g->ep.residual ? g->ep.residual + (size_t)r * g->ldo : NULL;
    for (int c = 0; c < here; c++) out[j0 + c] = gemm_epilogue(&g->ep, acc[c], j0 + c, res);
    if (g->ep.act != KERNELS_ACT_NONE)
        kernels_path_generic.act(out + j0, out + j0, (size_t)here, g->ep.act);
}

void bgemm_panels_generic(const bgemm_call *g, int p0, int p1) {
    for (int p = p0; p < p1; p++)
        for (int r = 0; r < g->rows; r++) generic_row_panel(g, r, p);
}

/* ------------------------------------------------------------ dispatch */

static bgemm_panels_fn *path_of(kernels_isa isa) {
    switch (isa) {
    case KERNELS_ISA_AVX512_BF16: return bgemm_panels_avx512bf16;
    case KERNELS_ISA_AVX2:
    case KERNELS_ISA_AVX_VNNI:
    case KERNELS_ISA_AVX512:
    case KERNELS_ISA_AVX512_VNNI: return bgemm_panels_avx2;
    case KERNELS_ISA_NEON:
    case KERNELS_ISA_NEON_DOTPROD:
    case KERNELS_ISA_NEON_I8MM: return bgemm_panels_neon;
    default: return bgemm_panels_generic;
    }
}

const char *kernels_bf16_path(kernels_isa isa) {
    bgemm_panels_fn *f = path_of(isa);
    return f == bgemm_panels_avx512bf16 ? "avx512bf16 (vdpbf16ps)"
           : f == bgemm_panels_avx2     ? "avx2 (fma)"
           : f == bgemm_panels_neon     ? "neon (vfmaq)"
                                        : "generic (C)";
}

/* Thread id of team's share: whole pairs of panels, as gemm_share. */
static void bgemm_share(const bgemm_call *g, bgemm_panels_fn *run, int team, int id) {
    const int panels = (g->n + BPANEL - 1) / BPANEL, pairs = (panels + 1) / 2;
    const int first = 2 * (int)((long)pairs * id / team);
    const int last = 2 * (int)((long)pairs * (id + 1) / team);
    if (first < panels) run(g, first, last < panels ? last : panels);
}

void kernels_linear_bf16(float *out, int ldo, const uint16_t *binp, int rows,
                         const kernels_bmatrix *w, const kernels_epilogue *ep,
                         kernels_threads th) {
    static const kernels_epilogue plain = {0};
    const bgemm_call g = {out, ldo, binp, rows, w->values, w->rows, w->kpad, ep ? *ep : plain};
    bgemm_panels_fn *run = path_of(th.isa);
    if (rows <= 0) return;
    if (th.count <= 1) {
        run(&g, 0, w->panels);
    } else if (th.in_team) {
        bgemm_share(&g, run, omp_get_num_threads(), omp_get_thread_num());
#pragma omp barrier
    } else {
#pragma omp parallel num_threads(th.count)
        bgemm_share(&g, run, omp_get_num_threads(), omp_get_thread_num());
    }
}
