/* resize.c — a bit-exact reimplementation of Pillow 9.4's Image.resize for
 * 8-bit RGB images (NEAREST, BILINEAR, BICUBIC).
 *
 * The reference pipelines (timm/torchvision and Hugging Face image processors)
 * all resize with PIL, so matching PIL's integer arithmetic exactly is what
 * makes our tensors equal theirs. The algorithm, as Pillow implements it:
 *
 *  - BILINEAR/BICUBIC: separable convolution. For each output coordinate the
 *    filter is centred at (i + 0.5) * scale in input space; when
 *    downscaling, the filter's support is widened by the scale (antialiasing).
 *    Weights are normalised by their sum, then converted to fixed point with
 *    22 fractional bits (rounded away from zero). The horizontal pass runs
 *    first and is rounded and clamped to 8 bits, then the vertical pass. A
 *    pass whose dimension does not change is skipped; the horizontal pass
 *    only computes the rows the vertical pass will read (results are the
 *    same, it only saves work).
 *  - NEAREST: an affine scale whose source coordinate is accumulated in
 *    double precision (x += scale per pixel, starting at scale / 2) and then
 *    truncated; the accumulation, not a closed form, decides which pixel is
 *    picked at exact .0 boundaries, so we accumulate the same way.
 *  - Same size: a plain copy.
 *
 * The passes run as a stream over a window of the output (data_resize_rows):
 * output rows come out one at a time, and each input row is resampled
 * horizontally once, when the first output row needs it, into a ring of
 * as many rows as the vertical filter has taps. Every output pixel is
 * computed by the same sums as before; a window only leaves out pixels a
 * centre crop would drop, and the ring replaces an intermediate image
 * (fresh pages cost ~16 us each on the project's VMs).
 */
#include "data.h"
#include "resize_rows.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* 8 result bits plus 2 bits of headroom for the negative lobes of bicubic. */
#define PRECISION_BITS (32 - 8 - 2)

typedef double (*filter_fn)(double x);

static double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

double data_bicubic_weight(double x, double a) {
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Pillow's BICUBIC: Keys' kernel with a = -0.5. */
static double bicubic_filter(double x) { return data_bicubic_weight(x, DATA_BICUBIC_A_PIL); }

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

/* Weights for the outputs first .. first + count - 1 of an axis resized
 * from in_size to out_size (the centres are those of the whole axis). */
static base_status axis_weights_compute(int in_size, int out_size, int first, int count,
                                       filter_fn filter, double filter_support, axis_weights *w,
                                       base_error *err) {
    memset(w, 0, sizeof *w);
    /* Pillow computes the box extent in float, exact for these sizes. */
    double scale = (double)(float)in_size / out_size;
    double filter_scale = scale < 1.0 ? 1.0 : scale;
    double support = filter_support * filter_scale;
    /* support <= 2 * in_size, and in_size is bounded by DATA_MAX_PIXELS. */
    int taps = (int)ceil(support) * 2 + 1;
    if ((size_t)count > SIZE_MAX / sizeof(int32_t) / (size_t)taps)
        return base_error_set(err, BASE_E_LIMIT, "resize: coefficient table too large");
    w->taps = taps;
    w->first = malloc((size_t)count * sizeof *w->first);
    w->count = malloc((size_t)count * sizeof *w->count);
    w->coeffs = calloc((size_t)count * (size_t)taps, sizeof *w->coeffs);
    double *k = malloc((size_t)taps * sizeof *k);
    if (!w->first || !w->count || !w->coeffs || !k) {
        free(k);
        axis_weights_free(w);
        return base_error_set(err, BASE_E_NOMEM, "resize: out of memory for %d x %d weights",
                             count, taps);
    }
    double inv_filter_scale = 1.0 / filter_scale;
    for (int j = 0; j < count; j++) {
        const int i = first + j;
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
        int32_t *out = w->coeffs + (size_t)j * taps;
        for (int t = 0; t < n; t++) {
            double v = sum != 0.0 ? k[t] / sum : k[t];
            double f = v * (1 << PRECISION_BITS);
            out[t] = (int32_t)(v < 0 ? f - 0.5 : f + 0.5);
        }
        w->first[j] = lo;
        w->count[j] = n;
    }
    free(k);
    return BASE_OK;
}

static inline uint8_t clip8(int32_t v) {
    /* Arithmetic shift floors, matching Pillow's lookup table index. */
    int32_t s = v >> PRECISION_BITS;
    return (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s);
}

/* The horizontal pass for one input row: the outputs wx describes. */
static void horizontal_row(const uint8_t *in, uint8_t *out, int width, const axis_weights *wx) {
    for (int x = 0; x < width; x++) {
        const uint8_t *p = in + (size_t)wx->first[x] * 3;
        const int32_t *k = wx->coeffs + (size_t)x * wx->taps;
        int n = wx->count[x];
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

/* The vertical pass for one output row from its count input rows. Whole
 * rows with an int32 accumulator row so the inner loop vectorises; integer
 * sums are order independent, so this equals Pillow's per-pixel loop. */
static void vertical_row(const uint8_t *const *rows, int count, const int32_t *k, size_t n,
                         int32_t *acc, uint8_t *out) {
    for (size_t i = 0; i < n; i++) acc[i] = 1 << (PRECISION_BITS - 1);
    for (int t = 0; t < count; t++) {
        const uint8_t *in = rows[t];
        const int32_t kt = k[t];
        for (size_t i = 0; i < n; i++) acc[i] += in[i] * kt;
    }
    for (size_t i = 0; i < n; i++) out[i] = clip8(acc[i]);
}

/* A window of a BILINEAR/BICUBIC resize in progress. wx.taps (wy.taps) is
 * 0 when the width (height) does not change and its pass is skipped. */
typedef struct resize_stream {
    const data_image *src;
    int x0, y0, w, h;
    axis_weights wx, wy;
    uint8_t *ring;       /* ring_rows input rows after the horizontal pass */
    int ring_rows, next; /* next: the next input row to pass horizontally */
    const uint8_t **rows; /* the rows one output row reads */
    uint8_t *row;        /* one output row */
    int32_t *acc;
} resize_stream;

/* Input row r after the horizontal pass. Rows are passed in order, each
 * once, and those below first (no output row reads them) are skipped; the
 * ring holds as many rows as an output row reads at most. */
static const uint8_t *input_row(resize_stream *s, int first, int r) {
    const size_t bytes = (size_t)s->w * 3;
    if (!s->wx.taps) return s->src->pixels + ((size_t)r * s->src->width + s->x0) * 3;
    if (s->next < first) s->next = first;
    for (; s->next <= r; s->next++)
        horizontal_row(s->src->pixels + (size_t)s->next * s->src->width * 3,
                       s->ring + (size_t)(s->next % s->ring_rows) * bytes, s->w, &s->wx);
    return s->ring + (size_t)(r % s->ring_rows) * bytes;
}

static base_status stream_start(resize_stream *s, int width, int height, filter_fn fn,
                               double support, base_error *err) {
    const data_image *src = s->src;
    base_status st = BASE_OK;
    if (width != src->width) st = axis_weights_compute(src->width, width, s->x0, s->w, fn, support, &s->wx, err);
    if (st == BASE_OK && height != src->height)
        st = axis_weights_compute(src->height, height, s->y0, s->h, fn, support, &s->wy, err);
    if (st != BASE_OK) return st;
    const size_t bytes = (size_t)s->w * 3;
    s->ring_rows = s->wy.taps ? s->wy.taps : 1;
    if (s->ring_rows > src->height) s->ring_rows = src->height;
    s->ring = s->wx.taps ? malloc((size_t)s->ring_rows * bytes) : NULL;
    s->rows = malloc((size_t)(s->wy.taps ? s->wy.taps : 1) * sizeof *s->rows);
    s->row = malloc(bytes);
    s->acc = malloc(bytes * sizeof *s->acc);
    if ((s->wx.taps && !s->ring) || !s->rows || !s->row || !s->acc)
        return base_error_set(err, BASE_E_NOMEM, "resize: out of memory");
    return BASE_OK;
}

static void stream_free(resize_stream *s) {
    axis_weights_free(&s->wx);
    axis_weights_free(&s->wy);
    free(s->ring);
    free(s->rows);
    free(s->row);
    free(s->acc);
}

/* BILINEAR/BICUBIC: the window's rows, one at a time, to emit. */
static base_status resize_convolution(resize_stream *s, int width, int height, filter_fn fn,
                                     double support, data_resize_row_fn emit, void *ctx,
                                     base_error *err) {
    base_status st = stream_start(s, width, height, fn, support, err);
    for (int y = 0; st == BASE_OK && y < s->h; y++) {
        if (!s->wy.taps) {
            emit(ctx, y, input_row(s, s->y0 + y, s->y0 + y));
            continue;
        }
        const int first = s->wy.first[y], count = s->wy.count[y];
        for (int t = 0; t < count; t++) s->rows[t] = input_row(s, first, first + t);
        vertical_row(s->rows, count, s->wy.coeffs + (size_t)y * s->wy.taps, (size_t)s->w * 3,
                     s->acc, s->row);
        emit(ctx, y, s->row);
    }
    stream_free(s);
    return st;
}

/* NEAREST: the source coordinates are accumulated over the whole axis,
 * as Pillow does, and the window's are used. */
static base_status resize_nearest(const resize_stream *s, int width, int height,
                                 data_resize_row_fn emit, void *ctx, base_error *err) {
    const data_image *src = s->src;
    int *col = malloc((size_t)width * sizeof *col);
    uint8_t *row = malloc((size_t)s->w * 3);
    if (!col || !row) {
        free(col);
        free(row);
        return base_error_set(err, BASE_E_NOMEM, "resize: out of memory");
    }
    double sx = (double)(float)src->width / width;
    double sy = (double)(float)src->height / height;
    double xo = sx * 0.5;
    for (int x = 0; x < width; x++) {
        int xi = xo < 0.0 ? -1 : (int)xo;
        col[x] = xi < src->width ? xi : -1; /* -1: outside, filled with zero like PIL */
        xo += sx;
    }
    double yo = sy * 0.5;
    for (int y = 0; y < s->y0 + s->h; y++, yo += sy) {
        if (y < s->y0) continue;
        int yi = yo < 0.0 ? -1 : (int)yo;
        const uint8_t *in = yi < 0 || yi >= src->height ? NULL : src->pixels + (size_t)yi * src->width * 3;
        for (int x = 0; x < s->w; x++) {
            const int c = col[s->x0 + x];
            if (!in || c < 0) row[3 * x] = row[3 * x + 1] = row[3 * x + 2] = 0;
            else memcpy(row + 3 * x, in + 3 * c, 3);
        }
        emit(ctx, y - s->y0, row);
    }
    free(col);
    free(row);
    return BASE_OK;
}

/* What both resizes refuse: no source, an empty target, or one over the
 * pixel limit. */
static base_status check_resize(const data_image *src, int width, int height, base_error *err) {
    if (!src || !src->pixels || src->width <= 0 || src->height <= 0)
        return base_error_set(err, BASE_E_ARG, "resize: empty source image");
    if (width <= 0 || height <= 0)
        return base_error_set(err, BASE_E_ARG, "resize: invalid target size %dx%d", width, height);
    if ((int64_t)width * height > DATA_MAX_PIXELS)
        return base_error_set(err, BASE_E_LIMIT,
                             "resize: target %dx%d exceeds the limit of %lld megapixels", width,
                             height, (long long)(DATA_MAX_PIXELS / 1000000));
    return BASE_OK;
}

base_status data_resize_rows(const data_image *src, int width, int height, data_resample filter,
                            int x, int y, int w, int h, data_resize_row_fn emit, void *ctx,
                            base_error *err) {
    const base_status bad = check_resize(src, width, height, err);
    if (bad != BASE_OK) return bad;
    if (x < 0 || y < 0 || w <= 0 || h <= 0 || x > width - w || y > height - h)
        return base_error_set(err, BASE_E_ARG, "resize: window %dx%d at %d,%d is outside %dx%d", w,
                             h, x, y, width, height);
    resize_stream s = {.src = src, .x0 = x, .y0 = y, .w = w, .h = h};
    if (width == src->width && height == src->height) {
        for (int r = 0; r < h; r++) emit(ctx, r, src->pixels + ((size_t)(y + r) * src->width + x) * 3);
        return BASE_OK;
    }
    switch (filter) {
    case DATA_RESAMPLE_NEAREST: return resize_nearest(&s, width, height, emit, ctx, err);
    case DATA_RESAMPLE_BILINEAR:
        return resize_convolution(&s, width, height, bilinear_filter, 1.0, emit, ctx, err);
    case DATA_RESAMPLE_BICUBIC:
        return resize_convolution(&s, width, height, bicubic_filter, 2.0, emit, ctx, err);
    default: return base_error_set(err, BASE_E_UNSUPPORTED, "resize: unsupported filter %d", (int)filter);
    }
}

/* data_resize's rows go into its image. */
static void store_row(void *ctx, int y, const uint8_t *rgb) {
    data_image *dst = ctx;
    memcpy(dst->pixels + (size_t)y * dst->width * 3, rgb, (size_t)dst->width * 3);
}

base_status data_resize(const data_image *src, int width, int height, data_resample filter,
                       data_image *dst, base_error *err) {
    if (!dst) return base_error_set(err, BASE_E_ARG, "resize: no destination image");
    memset(dst, 0, sizeof *dst);
    const base_status bad = check_resize(src, width, height, err);
    if (bad != BASE_OK) return bad;
    if (filter != DATA_RESAMPLE_NEAREST && filter != DATA_RESAMPLE_BILINEAR &&
        filter != DATA_RESAMPLE_BICUBIC)
        return base_error_set(err, BASE_E_UNSUPPORTED, "resize: unsupported filter %d", (int)filter);
    dst->pixels = malloc((size_t)width * height * 3);
    if (!dst->pixels)
        return base_error_set(err, BASE_E_NOMEM, "resize: out of memory for %dx%d", width, height);
    dst->width = width;
    dst->height = height;
    base_status st = data_resize_rows(src, width, height, filter, 0, 0, width, height, store_row, dst, err);
    if (st != BASE_OK) data_image_free(dst);
    return st;
}
