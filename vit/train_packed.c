/* Training's packed linear layers (train_packed.h). */
#include "train_packed.h"

#include <omp.h>

/* A block's four linear layers: where the packed copy goes, the plain
 * weight it copies, and its shape. */
typedef struct packed_layer {
    kernels_fmatrix **f;
    const float *w;
    int out, in;
} packed_layer;

static int layers_of(vit_block *blk, const vit_config *c, packed_layer *out) {
    const int D = c->hidden_size, M = c->mlp_size;
    int n = 0;
    out[n++] = (packed_layer){&blk->qkv_f, blk->qkv_w, 3 * D, D};
    if (!blk->ls1) out[n++] = (packed_layer){&blk->proj_f, blk->proj_w, D, D};
    out[n++] = (packed_layer){&blk->fc1_f, blk->fc1_w, M, D};
    if (!blk->ls2) out[n++] = (packed_layer){&blk->fc2_f, blk->fc2_w, D, M};
    return n;
}

int train_packed_create(vit_block *blocks, const vit_config *c) {
    for (int l = 0; l < c->num_layers; l++) {
        packed_layer layers[4];
        const int n = layers_of(&blocks[l], c, layers);
        for (int i = 0; i < n; i++)
            if (!(*layers[i].f = kernels_fmatrix_create(layers[i].out, layers[i].in))) return 0;
    }
    return 1;
}

void train_packed_refresh(vit_block *blocks, const vit_config *c, kernels_threads th) {
    const int L = c->num_layers;
#pragma omp parallel for schedule(static) num_threads(th.count) if (th.count > 1)
    for (int l = 0; l < L; l++) {
        packed_layer layers[4];
        const int n = layers_of(&blocks[l], c, layers);
        for (int i = 0; i < n; i++)
            kernels_fmatrix_set(*layers[i].f, 0, layers[i].out, 0, layers[i].in, layers[i].w, 1.0f);
    }
}

void train_packed_free(vit_block *blocks, const vit_config *c) {
    if (!blocks) return;
    for (int l = 0; l < c->num_layers; l++) {
        vit_block *blk = &blocks[l];
        kernels_fmatrix_free(blk->qkv_f);
        kernels_fmatrix_free(blk->proj_f);
        kernels_fmatrix_free(blk->fc1_f);
        kernels_fmatrix_free(blk->fc2_f);
        blk->qkv_f = blk->proj_f = blk->fc1_f = blk->fc2_f = NULL;
    }
}
