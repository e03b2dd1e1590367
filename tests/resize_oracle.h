/* resize_oracle.h — data/resize.c and data_preprocess_apply as they were
 * before issue 28 (git c2bc90e), kept verbatim as the oracle that
 * tests/test_decode_same.c holds the streaming, windowed resize and the
 * fused crop and normalisation to: every byte and float the same. Only
 * the names changed (oracle_*), and the includes. */
#ifndef RESIZE_ORACLE_H
#define RESIZE_ORACLE_H

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"

/* 8 result bits plus 2 bits of headroom for the negative lobes of bicubic. */
#define PRECISION_BITS (32 - 8 - 2)

typedef double (*filter_fn)(double x);

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

static double oracle_bicubic_weight(double x, double a) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Pillow's BICUBIC: Keys' kernel with a = -0.5. */
static double bicubic_filter(double x) { return oracle_bicubic_weight(x, -0.5); }

/* Fixed-point weights for one axis: output i reads `count[i]` input samples
 * starting at `first[i]` with weights coeffs[i * taps ...]. */
typedef struct axis_weights {
    int taps;
    int *first;
    int *count;
    int32_t *coeffs;
} axis_weights;

static void axis_weights_free(axis_weights *w) {
    free(w->first);
    free(w->count);
    free(w->coeffs);
    memset(w, 0, sizeof *w);
}

static base_status axis_weights_compute(int in_size, int out_size, filter_fn filter,
                                       double filter_support, axis_weights *w,
                                       base_error *err) {
    memset(w, 0, sizeof *w);
    /* Pillow computes the box extent in float, exact for these sizes. */
    double scale = (double)(float)in_size / out_size;
    double filter_scale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support * filter_scale;
    /* support <= 2 * in_size, and in_size is bounded by DATA_MAX_PIXELS. */
    int taps = (int)ceil(support) * 2 + 1;
    if ((size_t)out_size > SIZE_MAX / sizeof(int32_t) / (size_t)taps)
        return base_error_set(err, BASE_E_LIMIT, "resize: coefficient table too large");
    w->taps = taps;
    w->first = malloc((size_t)out_size * sizeof *w->first);
    w->count = malloc((size_t)out_size * sizeof *w->count);
    w->coeffs = calloc((size_t)out_size * (size_t)taps, sizeof *w->coeffs);
    double *k = malloc((size_t)taps * sizeof *k);
    if (!w->first || !w->count || !w->coeffs || !k) {
        free(k);
        axis_weights_free(w);
        return base_error_set(err, BASE_E_NOMEM, "resize: out of memory for %d x %d weights",
                             out_size, taps);
    }
    double inv_filter_scale = 1.0 / filter_scale;
    for (int i = 0; i < out_size; i++) {
        double center = (i + 0.5) * scale;
        /* (int) truncates toward zero, as Pillow's "round" does. */
        int lo = (int)(center - support + 0.5);
        if (lo < 0) lo = 0;
        int hi = (int)(center + support + 0.5);
        if (hi > in_size) hi = in_size;
        int n = hi - lo;
        if (n > taps) n = taps; /* cannot happen; keeps writes in bounds regardless */
        double sum = 0.0;
        for (int t = 0; t < n; t++) {
            k[t] = filter((t + lo - center + 0.5) * inv_filter_scale);
            sum += k[t];
        }
        int32_t *out = w->coeffs + (size_t)i * taps;
        for (int t = 0; t < n; t++) {
            double v = sum != 0.0 ? k[t] / sum : k[t];
            double f = v * (1 << PRECISION_BITS);
            out[t] = (int32_t)(v < 0 ? f - 0.5 : f + 0.5);
        }
        w->first[i] = lo;
        w->count[i] = n;
    }
    free(k);
    return BASE_OK;
}

static inline uint8_t clip8(int32_t v) {
    /* Arithmetic shift floors, matching Pillow's lookup table index. */
    int32_t s = v >> PRECISION_BITS;
    return (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s);
}

/* Horizontal pass over `rows` rows of src starting at row first_row. */
static void resample_horizontal(const uint8_t *src, int src_width, int first_row, int rows,
                                uint8_t *dst, int dst_width, const axis_weights *w) {
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src + ((size_t)(first_row + y) * src_width) * 3;
        uint8_t *out = dst + (size_t)y * dst_width * 3;
        for (int x = 0; x < dst_width; x++) {
            const uint8_t *p = in + (size_t)w->first[x] * 3;
            const int32_t *k = w->coeffs + (size_t)x * w->taps;
            int n = w->count[x];
            int32_t r = 1 << (PRECISION_BITS - 1), g = r, b = r;
            for (int t = 0; t < n; t++) {
                r += p[3 * t + 0] * k[t];
                g += p[3 * t + 1] * k[t];
                b += p[3 * t + 2] * k[t];
            }
            out[3 * x + 0] = clip8(r);
            out[3 * x + 1] = clip8(g);
            out[3 * x + 2] = clip8(b);
        }
    }
}

/* Vertical pass; src row 0 corresponds to input row row_offset. Works on
 * whole rows with an int32 accumulator row so the inner loop vectorises;
 * integer sums are order independent, so this equals Pillow's per-pixel
 * loop exactly. */
static void resample_vertical(const uint8_t *src, int row_offset, int width, uint8_t *dst,
                              int dst_height, const axis_weights *w, int32_t *acc) {
    size_t n = (size_t)width * 3;
    for (int y = 0; y < dst_height; y++) {
        for (size_t i = 0; i < n; i++) acc[i] = 1 << (PRECISION_BITS - 1);
        const int32_t *k = w->coeffs + (size_t)y * w->taps;
        int first = w->first[y] - row_offset;
        for (int t = 0; t < w->count[y]; t++) {
            const uint8_t *in = src + (size_t)(first + t) * n;
            int32_t kt = k[t];
            for (size_t i = 0; i < n; i++) acc[i] += in[i] * kt;
        }
        uint8_t *out = dst + (size_t)y * n;
        for (size_t i = 0; i < n; i++) out[i] = clip8(acc[i]);
    }
}

static base_status resize_nearest(const data_image *src, data_image *dst, base_error *err) {
    int *col = malloc((size_t)dst->width * sizeof *col);
    if (!col) return base_error_set(err, BASE_E_NOMEM, "resize: out of memory");
    double sx = (double)(float)src->width / dst->width;
    double sy = (double)(float)src->height / dst->height;
    double xo = sx * 0.5;
    for (int x = 0; x < dst->width; x++) {
        int xi = xo < 0.0 ? -1 : (int)xo;
        col[x] = xi < src->width ? xi : -1; /* -1: outside, filled with zero like PIL */
        xo += sx;
    }
    double yo = sy * 0.5;
    for (int y = 0; y < dst->height; y++) {
        int yi = yo < 0.0 ? -1 : (int)yo;
        uint8_t *out = dst->pixels + (size_t)y * dst->width * 3;
        if (yi < 0 || yi >= src->height) {
            memset(out, 0, (size_t)dst->width * 3);
        } else {
            const uint8_t *in = src->pixels + (size_t)yi * src->width * 3;
            for (int x = 0; x < dst->width; x++) {
                if (col[x] < 0) {
                    out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = 0;
                } else {
                    memcpy(out + 3 * x, in + 3 * col[x], 3);
                }
            }
        }
        yo += sy;
    }
    free(col);
    return BASE_OK;
}

/* BILINEAR/BICUBIC: the separable convolution into dst (allocated, of the
 * target size): horizontal pass first, each pass only when its side changes. */
static base_status resize_convolution(const data_image *src, data_image *dst, filter_fn fn,
                                     double support, base_error *err) {
    const int width = dst->width, height = dst->height;
    const int need_horizontal = width != src->width, need_vertical = height != src->height;
    axis_weights wx = {0}, wy = {0};
    uint8_t *tmp = NULL;
    int32_t *acc = NULL;
    base_status st = BASE_OK;
    if (need_horizontal) st = axis_weights_compute(src->width, width, fn, support, &wx, err);
    if (st == BASE_OK && need_vertical)
        st = axis_weights_compute(src->height, height, fn, support, &wy, err);
    if (st != BASE_OK) goto done;

    if (!need_vertical) {
        resample_horizontal(src->pixels, src->width, 0, height, dst->pixels, width, &wx);
        goto done;
    }
    /* Only the input rows the vertical filter touches need the horizontal pass. */
    int row_first = wy.first[0];
    int row_last = wy.first[height - 1] + wy.count[height - 1];
    const uint8_t *vsrc = src->pixels;
    int row_offset = 0;
    if (need_horizontal) {
        tmp = malloc((size_t)width * (size_t)(row_last - row_first) * 3);
        if (!tmp) {
            st = base_error_set(err, BASE_E_NOMEM, "resize: out of memory");
            goto done;
        }
        resample_horizontal(src->pixels, src->width, row_first, row_last - row_first, tmp, width,
                            &wx);
        vsrc = tmp;
        row_offset = row_first;
    }
    acc = malloc((size_t)width * 3 * sizeof *acc);
    if (!acc) {
        st = base_error_set(err, BASE_E_NOMEM, "resize: out of memory");
        goto done;
    }
    resample_vertical(vsrc, row_offset, width, dst->pixels, height, &wy, acc);

done:
    free(acc);
    free(tmp);
    axis_weights_free(&wx);
    axis_weights_free(&wy);
    return st;
}

static base_status oracle_resize(const data_image *src, int width, int height, data_resample filter,
                       data_image *dst, base_error *err) {
    if (!dst) return base_error_set(err, BASE_E_ARG, "resize: no destination image");
    memset(dst, 0, sizeof *dst);
    if (!src || !src->pixels || src->width <= 0 || src->height <= 0)
        return base_error_set(err, BASE_E_ARG, "resize: empty source image");
    if (width <= 0 || height <= 0)
        return base_error_set(err, BASE_E_ARG, "resize: invalid target size %dx%d", width, height);
    if ((int64_t)width * height > DATA_MAX_PIXELS)
        return base_error_set(err, BASE_E_LIMIT,
                             "resize: target %dx%d exceeds the limit of %lld megapixels", width,
                             height, (long long)(DATA_MAX_PIXELS / 1000000));
    filter_fn fn;
    double support;
    switch (filter) {
    case DATA_RESAMPLE_NEAREST: fn = NULL; support = 0; break;
    case DATA_RESAMPLE_BILINEAR: fn = bilinear_filter; support = 1.0; break;
    case DATA_RESAMPLE_BICUBIC: fn = bicubic_filter; support = 2.0; break;
    default: return base_error_set(err, BASE_E_UNSUPPORTED, "resize: unsupported filter %d", (int)filter);
    }
    size_t out_bytes = (size_t)width * height * 3;
    dst->pixels = malloc(out_bytes);
    if (!dst->pixels)
        return base_error_set(err, BASE_E_NOMEM, "resize: out of memory for %dx%d", width, height);
    dst->width = width;
    dst->height = height;

    if (width == src->width && height == src->height) {
        memcpy(dst->pixels, src->pixels, out_bytes);
        return BASE_OK;
    }
    if (filter == DATA_RESAMPLE_NEAREST) {
        base_status st = resize_nearest(src, dst, err);
        if (st != BASE_OK) data_image_free(dst);
        return st;
    }

    base_status st = resize_convolution(src, dst, fn, support, err);
    if (st != BASE_OK) data_image_free(dst);
    return st;
}

/* Python's int(round(x / 2)) for an integer x: halves go to the even side. */
static int oracle_half_round_even(int x) {
    int q = x / 2; /* x >= 0 here */
    if (x % 2 == 0) return q;
    return (q % 2 == 0) ? q : q + 1;
}

/* Source start and destination offset of a centre crop along one axis. */
static void oracle_crop_axis(int size, int crop, data_crop_rounding rounding, int *src_start,
                      int *dst_start, int *count) {
    if (size >= crop) {
        int margin = size - crop;
        *src_start = rounding == DATA_CROP_TORCHVISION ? oracle_half_round_even(margin) : margin / 2;
        *dst_start = 0;
        *count = crop;
    } else {
        int pad = crop - size;
        *src_start = 0;
        *dst_start = rounding == DATA_CROP_TORCHVISION ? pad / 2 : (pad + 1) / 2;
        *count = size;
    }
}

static base_status oracle_preprocess(const data_preprocess *p, const data_image *img, float *out,
                                 base_error *err) {
    if (!p || !img || !out) return base_error_set(err, BASE_E_ARG, "preprocess: missing argument");
    if (!img->pixels || img->width <= 0 || img->height <= 0)
        return base_error_set(err, BASE_E_ARG, "preprocess: empty image");
    base_status st = BASE_OK;

    /* 1. resize, with torchvision's/transformers' output size rule. */
    int rw = img->width, rh = img->height;
    if (p->resize_mode == DATA_RESIZE_EXACT) {
        rw = p->resize_width;
        rh = p->resize_height;
    } else if (p->resize_mode == DATA_RESIZE_SHORTEST_EDGE) {
        int64_t s = p->resize_shortest;
        if (img->width <= img->height) {
            rw = (int)s;
            double l = (double)(s * img->height) / img->width;
            rh = l > 2e9 ? INT32_MAX : (int)l;
        } else {
            rh = (int)s;
            double l = (double)(s * img->width) / img->height;
            rw = l > 2e9 ? INT32_MAX : (int)l;
        }
    }
    data_image resized = {0};
    const data_image *cur = img;
    /* The resized image is held in memory too: the same pixel cap applies,
     * which bounds the work an extreme aspect ratio can cause (a 5 x 186879
     * image resized to 18 x 672764 made fuzz_image time out). */
    const int64_t max_pixels = p->max_pixels > 0 ? p->max_pixels : DATA_MAX_PIXELS;
    if ((rw != img->width || rh != img->height) && rw > max_pixels / rh)
        return base_error_set(err, BASE_E_LIMIT,
                             "preprocess: resizing %dx%d to %dx%d exceeds the limit of %lld pixels",
                             img->width, img->height, rw, rh, (long long)max_pixels);
    if (rw != img->width || rh != img->height) {
        st = oracle_resize(img, rw, rh, p->resample, &resized, err);
        if (st != BASE_OK) return st;
        cur = &resized;
    }

    /* 2. per-channel lookup from 8-bit value to the normalised float. */
    float lut[3][256];
    int exact_255 = p->rescale_factor == 1.0f / 255.0f;
    for (int c = 0; c < 3; c++) {
        for (int v = 0; v < 256; v++) {
            float x;
            if (!p->do_rescale) x = (float)v;
            else if (exact_255) x = (float)(v / 255.0);
            else x = (float)(v * (double)p->rescale_factor);
            if (p->do_normalize) x = (x - p->mean[c]) / p->std[c];
            lut[c][v] = x;
        }
    }

    /* 3. centre crop (zero-padded when the crop is larger) into CHW. */
    int oh = p->do_center_crop ? p->crop_height : cur->height;
    int ow = p->do_center_crop ? p->crop_width : cur->width;
    int sy = 0, dy = 0, ny = oh, sx = 0, dx = 0, nx = ow;
    if (p->do_center_crop) {
        oracle_crop_axis(cur->height, oh, p->crop_rounding, &sy, &dy, &ny);
        oracle_crop_axis(cur->width, ow, p->crop_rounding, &sx, &dx, &nx);
    }
    size_t plane = (size_t)oh * ow;
    if (ny < oh || nx < ow)
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < plane; i++) out[c * plane + i] = lut[c][0];
    for (int y = 0; y < ny; y++) {
        const uint8_t *row = cur->pixels + ((size_t)(sy + y) * cur->width + sx) * 3;
        size_t o = (size_t)(dy + y) * ow + dx;
        for (int x = 0; x < nx; x++) {
            out[o + x] = lut[0][row[3 * x]];
            out[plane + o + x] = lut[1][row[3 * x + 1]];
            out[2 * plane + o + x] = lut[2][row[3 * x + 2]];
        }
    }
    data_image_free(&resized);
    return BASE_OK;
}


#endif
