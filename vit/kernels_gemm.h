/* kernels_gemm.h — inside vitc's fp32 GEMM and the row kernels it shares
 * with the rest of the forward pass: the packed layout, one call's
 * arguments, and each instruction-set path's entry points (kernels_gemm.c
 * dispatches; kernels_gemm_avx2.c and kernels_gemm_avx512.c are compiled
 * for their instruction sets and called only on CPUs that have them).
 * Internal to the kernel layer.
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

/* Packed copies (vit/packed.c) store values as they are: a change to this
 * layout must change kernels_fmatrix_layout's name (kernels_gemm.c). */
struct kernels_fmatrix {
    int rows, cols, panels; /* outputs, inputs (K), ceil(rows / FPANEL) */
    float *values;          /* [panels][cols][FPANEL], 64-byte aligned */
    int wrapped;            /* values belong to the caller (kernels_fmatrix_wrap) */
};

/* One GEMM: out [rows, n] = epilogue(inp [rows, k] x packed panels). */
typedef struct gemm_call {
    float *out;
    int ldo;
    const float *inp;
    int lda;
    int rows;
    const float *panels; /* [ceil(n / FPANEL)][k][FPANEL] */
    int n, k;
    kernels_epilogue ep;
} gemm_call;

/* A path's GEMM over every row and the panels p0 .. p1 - 1 (their columns
 * of out), epilogue and activation included, on the calling thread. */
typedef void gemm_panels_fn(const gemm_call *g, int p0, int p1);

/* A path's row kernels; the same C (kernels_rows.h) compiled for each
 * instruction set, so the same operations per element. */
typedef struct kernels_path {
    gemm_panels_fn *gemm;
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

#endif
