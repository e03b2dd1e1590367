/* kernels_gemm.h — inside vitc's fp32 GEMM and the row kernels it shares
 * with the rest of the forward pass: the packed layout, one call's
 * arguments, the GEMM driver every dtype runs (fp32, bf16, int8: gemm_run
 * over a path's micro-kernel, gemm_tiles), and each instruction-set path's
 * entry points (kernels_gemm.c dispatches; kernels_gemm_avx2.c and
 * kernels_gemm_avx512.c are compiled for their instruction sets and called
 * only on CPUs that have them). Internal to the kernel layer.
 *
 * The same bits on every path: an output element is
 *   s = 0; for k = 0 .. K-1 in order: s = fma(a[k], w[k], s)
 * then the epilogue (kernels.h) in one fixed order, each step rounded as
 * C rounds it (every file is compiled with -ffp-contract=off). A path's
 * tile shape, K blocking or thread split only decide which elements are
 * computed together, never an element's arithmetic. */
#ifndef VIT_KERNELS_GEMM_H
#define VIT_KERNELS_GEMM_H

#include <stddef.h>

#include "kernels.h"

/* Output columns per packed panel: one AVX-512 vector, two AVX2 ones. */
#define FPANEL 16

/* bytes (rounded up to 64) 64-byte aligned for packed panels, in 2 MiB
 * pages from 2 MiB up where the kernel allows; free() frees it. */
void *kernels_alloc_panels(size_t bytes);

/* Packed copies (vit/packed.c) store values as they are: a change to this
 * layout must change kernels_fmatrix_layout's name (kernels_gemm.c). */
struct kernels_fmatrix {
    int rows, cols, panels; /* outputs, inputs (K), ceil(rows / FPANEL) */
    float *values;          /* [panels][cols][FPANEL], 64-byte aligned */
    int wrapped;            /* values belong to the caller (kernels_fmatrix_wrap) */
};

/* Where a GEMM's sums go, the same for every dtype: out [rows, n], rows
 * ldo floats apart, through the epilogue ep (its activation run by the
 * driver, gemm_drive). Each dtype's call struct starts with one. */
typedef struct gemm_dest {
    float *out;
    int ldo, rows, n;
    kernels_epilogue ep;
} gemm_dest;

/* One GEMM: out [rows, n] = epilogue(inp [rows, k] x packed panels). */
typedef struct gemm_call {
    gemm_dest d;
    const float *inp;
    int lda;
    const float *panels; /* [ceil(n / FPANEL)][k][FPANEL] */
    int k;
} gemm_call;

struct kernels_path;

/* A path's micro-kernel: rows r0 .. r1 - 1 x panels p .. p + np - 1 of
 * call (a dtype's call struct, whose gemm_dest is first) into its out
 * through the epilogue, activation aside; np <= the tiles' np. Written
 * with GEMM_TILE_FN, which walks the rows in the ISA's tiles. The per-ISA
 * code of a GEMM is this and its packing. */
typedef void gemm_tile_fn(const void *call, int r0, int r1, int p, int np);

typedef struct gemm_tiles {
    gemm_tile_fn *tile;
    int np;                          /* panels a tile computes together: 1 or 2 */
    const struct kernels_path *rows; /* whose act runs the activation */
} gemm_tiles;

/* Every dtype's driver: panels p0 .. p1 - 1 of every row of call on the
 * calling thread, np panels at a time, then the activation over those
 * columns. One indirect call per np panels of every row: a call per tile
 * cost int8's 6-row tiles 1-2% (bench/README.md, issue 26). */
void gemm_drive(const void *call, const gemm_tiles *t, int p0, int p1);

/* gemm_drive over every panel on th's threads: whole pairs of panels (an
 * AVX-512 tile's width) per thread, contiguous, as even as they split.
 * The split decides which thread computes an output, never its bits. */
void gemm_run(const void *call, const gemm_tiles *t, kernels_threads th);

/* A switch on a tile's rows mr (1 .. n) calling CALL(m) with m a
 * constant, so an ISA's inline tile is compiled once per row count and
 * its accumulators stay in registers. */
#define TILE_ROWS_1(CALL)
#define TILE_ROWS_2(CALL) TILE_ROWS_1(CALL) case 1: CALL(1); break;
#define TILE_ROWS_3(CALL) TILE_ROWS_2(CALL) case 2: CALL(2); break;
#define TILE_ROWS_4(CALL) TILE_ROWS_3(CALL) case 3: CALL(3); break;
#define TILE_ROWS_5(CALL) TILE_ROWS_4(CALL) case 4: CALL(4); break;
#define TILE_ROWS_6(CALL) TILE_ROWS_5(CALL) case 5: CALL(5); break;
#define TILE_ROWS_7(CALL) TILE_ROWS_6(CALL) case 6: CALL(6); break;
#define TILE_ROWS_8(CALL) TILE_ROWS_7(CALL) case 7: CALL(7); break;
#define TILE_ROWS_9(CALL) TILE_ROWS_8(CALL) case 8: CALL(8); break;
#define TILE_ROWS_10(CALL) TILE_ROWS_9(CALL) case 9: CALL(9); break;
#define TILE_ROWS_11(CALL) TILE_ROWS_10(CALL) case 10: CALL(10); break;
#define TILE_ROWS_12(CALL) TILE_ROWS_11(CALL) case 11: CALL(11); break;
#define TILE_ROWS(n, mr, CALL) \
    switch (mr) { TILE_ROWS_##n(CALL) default: CALL(n); }

/* An ISA's micro-kernel `name` (a gemm_tile_fn with attributes attr) in
 * tiles of n rows, the last one fewer: CALL(m) runs its inline tile on
 * rows r0 .. r0 + m - 1, panels p .. p + np - 1 of call (names it may
 * use). */
#define GEMM_TILE_FN(name, attr, n, CALL)                                    \
    attr static void name(const void *call, int r0, int r1, int p, int np) { \
        (void)call, (void)p, (void)np;                                       \
        for (; r0 < r1; r0 += n) {                                           \
            TILE_ROWS(n, r1 - r0 < n ? r1 - r0 : n, CALL)                    \
        }                                                                    \
    }

/* A path's row kernels; the same C (kernels_rows.h) compiled for each
 * instruction set, so the same operations per element. */
typedef struct kernels_path {
    gemm_tiles gemm; /* the fp32 GEMM's micro-kernel */
    /* out[0 .. n) = act(inp); out may be inp */
    void (*act)(float *out, const float *inp, size_t n, kernels_act act);
    /* GELU's gradient (kernels.h gelu_backward), n floats */
    void (*gelu_backward)(float *dinp, const float *inp, const float *dout, size_t n);
    /* LayerNorm of one row (kernels.h layernorm_forward_row) */
    void (*layernorm)(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                      const float *bias, int dim, float eps);
    /* softmax of one row, in place */
    void (*softmax)(float *x, int n);
} kernels_path;

extern const kernels_path kernels_path_generic, kernels_path_avx2, kernels_path_avx512,
    kernels_path_neon;

/* The fp32 path of isa (generic for paths without one of their own). */
const kernels_path *kernels_path_of(kernels_isa isa);

/* Floats of a thread's scratch for inference attention before its
 * scores: a head's K and V packed, a whole number of 16-float vectors. */
size_t attention_pack_floats(int T, int dh);

/* Inference attention (kernels.h attention_forward, KERNELS_GEMM_VITC):
 * each thread's part of scratch is slot floats. */
void attention_forward_vitc(float *out, float *att, const float *qkv, int batch, int T, int D,
                            int heads, int block_rows, float *scratch, size_t slot,
                            kernels_threads th);

/* The scalar epilogue (kernels.h), before the activation, of sum s in
 * column j; res_row: the residual's row or NULL. What every path computes
 * per element, written once here for the C path and the vector paths'
 * partial tiles. */
static inline float gemm_epilogue(const kernels_epilogue *ep, float s, int j, const float *res_row) {
    float v = s;
    if (ep->scaled) v = v * ep->scale;
    if (ep->bias) v = v + ep->bias[j];
    if (!res_row) return v;
    if (ep->gamma) return res_row[j] + ep->gamma[j] * v;
    return res_row[j] + v;
}

/* Row r's columns of panel p from their sums through gemm_epilogue (the C
 * paths' store, and the vector paths' where no masked store serves). */
static inline void gemm_store_row(const gemm_dest *d, int r, int p, const float sums[FPANEL]) {
    const int j0 = p * FPANEL, here = d->n - j0 < FPANEL ? d->n - j0 : FPANEL;
    float *out = d->out + (size_t)r * d->ldo;
    const float *res = d->ep.residual ? d->ep.residual + (size_t)r * d->ldo : NULL;
    for (int c = 0; c < here; c++) out[j0 + c] = gemm_epilogue(&d->ep, sums[c], j0 + c, res);
}

#endif
