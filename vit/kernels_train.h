/* kernels_train.h — the transposed-left product of training's backward
 * pass (kernels_train.c): c = aᵀ b with a [K, M] and b [K, N] both read
 * row-major where they lie (dW = dYᵀ X over the batch's rows, attention's
 * dV = Pᵀ dO and dK = dSᵀ Q), no packing and no transposed copies. Each
 * path computes an element as
 *   s = (accumulate ? c : 0); for k = k0 .. k1-1 in order: s = fma(a[k][m], b[k][n], s)
 * so a K split into blocks continues one chain (a float stored and read
 * back is the same float): the same bits on every path and for any split
 * of the rows over threads. Internal to the kernel layer. */
#ifndef VIT_KERNELS_TRAIN_H
#define VIT_KERNELS_TRAIN_H

#include "kernels.h"

/* One product: c [M, n] (rows ldc apart) = aᵀ b, a rows lda apart and b
 * rows ldb apart. */
typedef struct tn_call {
    float *c;
    int ldc;
    const float *a;
    int lda;
    const float *b;
    int ldb;
    int n;
} tn_call;

/* Rows m0 .. m1 - 1 of c over k0 .. k1 - 1, adding to c when accumulate. */
typedef void tn_fn(const tn_call *t, int m0, int m1, int k0, int k1, int accumulate);

tn_fn tn_generic, tn_avx2, tn_avx512;

#endif
