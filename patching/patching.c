#include "patching.h"

#include "data.h"

#include <math.h>
#include <stdlib.h>
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

/* The antialiased path's kernel: PIL's bicubic (A = -0.5), as torch uses. */
static double aa_cubic(double x) { return data_bicubic_weight(x, DATA_BICUBIC_A_PIL); }

static int clamp_index(int i, int n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

/* Fills weights[out_size][in_size]: output i = sum_j weights[i][j] * in[j]. */
static void axis_weights(int in_size, int out_size, int antialias, float *weights) {
    const double scale = (double)in_size / out_size;
    memset(weights, 0, sizeof(float) * (size_t)in_size * out_size);
    for (int i = 0; i < out_size; i++) {
        float *row = weights + (size_t)i * in_size;
        if (!antialias) {
            /* The source coordinate is not clamped for bicubic, only the taps. */
            const float src = (float)scale * ((float)i + 0.5f) - 0.5f;
            const float base = floorf(src);
            float w[4];
            cubic_weights(src - base, w);
            for (int k = 0; k < 4; k++) row[clamp_index((int)base - 1 + k, in_size)] += w[k];
            continue;
        }
        const double support_scale = scale > 1.0 ? scale : 1.0;
        const double support = 2.0 * support_scale, center = scale * (i + 0.5);
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        double total = 0.0;
        for (int j = lo; j < hi; j++) total += aa_cubic((j - center + 0.5) / support_scale);
        for (int j = lo; j < hi; j++)
            row[j] = total != 0.0 ? (float)(aa_cubic((j - center + 0.5) / support_scale) / total) : 0.0f;
    }
}

base_status patching_resample_pos_embed(const float *src, int prefix, int src_h, int src_w, int dim,
                                       float *dst, int dst_h, int dst_w, int antialias) {
    float *wx = malloc(sizeof(float) * (size_t)src_w * dst_w);
    float *wy = malloc(sizeof(float) * (size_t)src_h * dst_h);
    float *rows = calloc((size_t)src_h * dst_w * dim, sizeof(float)); /* after the x pass */
    if (!wx || !wy || !rows) {
        free(wx); free(wy); free(rows);
        return base_error_set(NULL, BASE_E_NOMEM, "out of memory");
    }
    axis_weights(src_w, dst_w, antialias, wx);
    axis_weights(src_h, dst_h, antialias, wy);
    memcpy(dst, src, sizeof(float) * (size_t)prefix * dim);
    const float *src_grid = src + (size_t)prefix * dim;
    float *dst_grid = dst + (size_t)prefix * dim;
    /* Along x, then along y, as torch does. */
    for (int y = 0; y < src_h; y++)
        for (int x = 0; x < dst_w; x++) {
            float *out = rows + ((size_t)y * dst_w + x) * dim;
            for (int j = 0; j < src_w; j++) {
                const float w = wx[(size_t)x * src_w + j];
                if (w == 0.0f) continue;
                const float *in = src_grid + ((size_t)y * src_w + j) * dim;
                for (int d = 0; d < dim; d++) out[d] += w * in[d];
            }
        }
    memset(dst_grid, 0, sizeof(float) * (size_t)dst_h * dst_w * dim);
    for (int y = 0; y < dst_h; y++)
        for (int j = 0; j < src_h; j++) {
            const float w = wy[(size_t)y * src_h + j];
            if (w == 0.0f) continue;
            for (int x = 0; x < dst_w; x++) {
                float *out = dst_grid + ((size_t)y * dst_w + x) * dim;
                const float *in = rows + ((size_t)j * dst_w + x) * dim;
                for (int d = 0; d < dim; d++) out[d] += w * in[d];
            }
        }
    free(wx); free(wy); free(rows);
    return BASE_OK;
}
