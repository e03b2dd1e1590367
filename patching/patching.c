#include "patching.h"

#include <math.h>
#include <string.h>

int patching_grid(int size, int patch) { return patch > 0 ? size / patch : 0; }

void patching_im2col(const float *image, int channels, int height, int width, int patch,
                     float *cols) {
    const int grid_h = patching_grid(height, patch), grid_w = patching_grid(width, patch);
    const int row_len = channels * patch * patch;
    for (int gy = 0; gy < grid_h; gy++)
        for (int gx = 0; gx < grid_w; gx++) {
            float *row = cols + (size_t)(gy * grid_w + gx) * row_len;
            for (int c = 0; c < channels; c++)
                for (int ky = 0; ky < patch; ky++) {
                    const float *src = image + ((size_t)c * height + gy * patch + ky) * width
                                       + (size_t)gx * patch;
                    memcpy(row + (c * patch + ky) * patch, src, sizeof(float) * patch);
                }
        }
}

/* torch's cubic convolution kernel (upsample_bicubic2d, A = -0.75). */
static void cubic_weights(float t, float w[4]) {
    const float A = -0.75f;
    float x;
    x = t + 1.0f;
    w[0] = ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
    x = t;
    w[1] = ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
    x = 1.0f - t;
    w[2] = ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
    x = 2.0f - t;
    w[3] = ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
}

static int clamp_index(int i, int n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

/* Source taps and weights for one output coordinate. Unlike the linear modes,
 * torch does not clamp the source coordinate for bicubic: only the taps are. */
static void cubic_taps(int out_index, int in_size, int out_size, int taps[4], float w[4]) {
    const float scale = (float)in_size / (float)out_size;
    const float src = scale * ((float)out_index + 0.5f) - 0.5f;
    const float base = floorf(src);
    cubic_weights(src - base, w);
    for (int k = 0; k < 4; k++) taps[k] = clamp_index((int)base - 1 + k, in_size);
}

void patching_resample_pos_embed(const float *src, int prefix, int src_h, int src_w, int dim,
                                 float *dst, int dst_h, int dst_w) {
    memcpy(dst, src, sizeof(float) * (size_t)prefix * dim);
    const float *src_grid = src + (size_t)prefix * dim;
    float *dst_grid = dst + (size_t)prefix * dim;
    for (int y = 0; y < dst_h; y++) {
        int ty[4], tx[4];
        float wy[4], wx[4];
        cubic_taps(y, src_h, dst_h, ty, wy);
        for (int x = 0; x < dst_w; x++) {
            cubic_taps(x, src_w, dst_w, tx, wx);
            float *out = dst_grid + ((size_t)y * dst_w + x) * dim;
            memset(out, 0, sizeof(float) * dim);
            for (int i = 0; i < 4; i++) {
                /* Interpolate along x first, then y, as torch does. */
                for (int j = 0; j < 4; j++) {
                    const float w = wy[i] * wx[j];
                    const float *in = src_grid + ((size_t)ty[i] * src_w + tx[j]) * dim;
                    for (int d = 0; d < dim; d++) out[d] += w * in[d];
                }
            }
        }
    }
}
