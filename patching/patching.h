/* patching.h — from image tensors to the token sequence a ViT encoder reads.
 *
 * The patch embedding is a strided convolution (kernel = stride = patch), done
 * here as im2col followed by one GEMM in the model. Position embeddings
 * learned at one grid size are resampled to another the way timm's
 * resample_abs_pos_embed does (torch bicubic, align_corners=False). */
#ifndef PATCHING_H
#define PATCHING_H

#include "base_error.h"

/* The patch grid for an input of height x width: floor division, as the
 * strided convolution drops a remainder. */
int patching_grid(int size, int patch);

/* Copies the patches of one planar image (channels x height x width) into
 * rows of cols: row p = gy * grid_w + gx holds the patch's values ordered
 * (channel, ky, kx), matching a Conv2d weight [D, C, P, P] read as [D, C*P*P]. */
void patching_im2col(const float *image, int channels, int height, int width, int patch,
                     float *cols);

/* Resamples the grid part of a position-embedding table. src holds
 * prefix + src_h * src_w rows of dim floats (prefix rows: class/distillation
 * tokens, copied unchanged); dst receives prefix + dst_h * dst_w rows.
 * antialias 0: torch F.interpolate(mode='bicubic', align_corners=False)
 * (A = -0.75, taps clamped at the borders), as transformers and timm < 0.9.
 * antialias 1: the same call with antialias=True, as timm >= 0.9's
 * resample_abs_pos_embed (PIL-style kernel, A = -0.5, support widened when
 * shrinking, weights renormalised at the borders). Returns BASE_E_NOMEM if
 * its scratch cannot be allocated. */
base_status patching_resample_pos_embed(const float *src, int prefix, int src_h, int src_w, int dim,
                                       float *dst, int dst_h, int dst_w, int antialias);

#endif
