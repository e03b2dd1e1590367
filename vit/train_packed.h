/* train_packed.h — training's linear layers on vitc's GEMM (train.c): each
 * block's weights packed for kernels_linear, so the one block forward
 * (forward.c block_linear) runs them as inference does. Packed again at
 * every training forward pass (the optimiser changed them): O(out · in) a
 * layer against the GEMM's O(rows · out · in). LayerScale's projections
 * stay on the plain weights: training keeps their unscaled branch, which
 * the fused epilogue never writes. */
#ifndef VIT_TRAIN_PACKED_H
#define VIT_TRAIN_PACKED_H

#include "vit_internal.h"

/* Creates blocks' packed matrices (their *_f); 0 when out of memory (what
 * was created is freed by train_packed_free). */
int train_packed_create(vit_block *blocks, const vit_config *c);

/* Packs every block's current weights, on th's threads. */
void train_packed_refresh(vit_block *blocks, const vit_config *c, kernels_threads th);

void train_packed_free(vit_block *blocks, const vit_config *c);

#endif
