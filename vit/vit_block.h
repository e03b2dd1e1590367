/* vit_block.h — the one forward pass's pieces (forward.c): the embedding,
 * the encoder block and the head, called by inference (vit_forward) and by
 * training (vit/train.c), so every switch (registers, no class token,
 * LayerScale, qk-norm, QKV without bias, QuickGELU) is written once. Not
 * part of the public API. */
#ifndef VIT_BLOCK_H
#define VIT_BLOCK_H

#include "vit_internal.h"

/* Where one block's forward reads and writes, for rows = images * T token
 * rows. Inference points x, mid and out at one residual stream (in place),
 * ln1 and ln2 at one buffer, and leaves the record fields NULL; training
 * gives each its own per-layer buffer and keeps what the backward reads. */
typedef struct vit_block_io {
    const float *x; /* [rows, D] block input */
    float *mid;     /* [rows, D] x + attention branch (may be x) */
    float *out;     /* [rows, D] block output (may be mid) */
    float *ln1, *ln2; /* [rows, D] LayerNorm outputs (may be one buffer) */
    float *qkv;     /* [rows, 3D]: Q and K after qk-norm */
    float *attn;    /* [rows, D] attention before the projection */
    float *hid;     /* [rows, M] fc1's output: activated unless act is given */
    float *act;     /* [rows, M] the activation of hid; NULL: fused into fc1 */
    float *probs;   /* [images, H, T, T] attention probabilities, or NULL */
    float *scores;  /* attention scratch (attention_scratch_floats), or NULL */
    int query_rows; /* attention's query block (T: whole heads) */
    /* int8 layers' quantised inputs and scales (NULL for a float model). */
    void *qinp;
    float *qscale;
    /* bf16 layers' inputs rounded to bf16 (NULL without bf16 layers). */
    void *binp;
    /* Kept for the backward (NULL: not kept): the LayerNorms' means and
     * 1/stds [rows] each, Q and K before qk-norm [rows, 2D] and its stats
     * [2 * rows * 2H], LayerScale's unscaled branches [rows, D]. */
    float *mean1, *rstd1, *mean2, *rstd2;
    float *qk_raw, *qk_mean, *qk_rstd;
    float *br1, *br2;
    double *profile; /* per-stage seconds (vit_stage), or NULL */
    double clock;    /* the last stage's end, when profiling */
} vit_block_io;

/* Encoder block blk of config c over `images` images of T tokens: the
 * linear layers as the block holds them (int8, bf16, packed float32, or plain
 * row-major float32 weights: training's, through matmul_forward). With th
 * in a team every thread of it calls this. Allocates nothing. */
void vit_block_forward(const vit_config *c, const vit_block *blk, int images, int T,
                       vit_block_io *io, kernels_threads th);

/* Patch embedding, prefix tokens and position rows of `count` images
 * (C x S x S floats each) into out [count * T, D]: im2col into cols
 * [count * Np, C*P*P], the patch projection into patches [count * Np, D]
 * (packed when the model is, else training's plain weights), then
 * embed_tokens_forward with pos_embed [T, D] (a row per token, zero for
 * tokens without one). */
void vit_embed_forward(const vit_model *m, const float *images, int count, int S,
                       const float *pos_embed, float *cols, float *patches, float *out,
                       kernels_threads th);

/* Class logits (or, without a head, the pooled features) of `batch`
 * pooled rows (stride floats apart) into out: one GEMM on the packed head,
 * whose rows' bits do not depend on the batch, or training's plain head
 * weights (stride then the pooled size: rows side by side). */
void vit_head_forward(const vit_model *m, const float *pooled, int stride, int batch, float *out,
                      kernels_threads th);

#endif
