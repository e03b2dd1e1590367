/* output.c — what the inspection commands write: .npy arrays, PNG pictures
 * (stb_image_write), heatmap and label overlays, and a little text. All
 * files are written atomically (temporary file beside the target, renamed
 * into place). */
#include "data.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image_write.h>
#include <zlib.h>

/* stb_easy_font.h is all static functions; we use only some of them. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-braces"
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

/* ------------------------------------------------------------- .npy */

base_status data_npy_header(data_npy_dtype dtype, const int64_t *shape, int ndim,
                           unsigned char header[DATA_NPY_MAX_HEADER], size_t *length,
                           base_error *err) {
    *length = 0;
    if (ndim < 0 || ndim > DATA_NPY_MAX_DIMS)
        return base_error_set(err, BASE_E_ARG, ".npy of %d dimensions", ndim);
    /* Format 1.0: magic, version, uint16 header length, then a Python dict
     * literal padded with spaces so that the data starts at a multiple of
     * 64 bytes, ending in '\n'. A 1-tuple needs its trailing comma. */
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     dtype == DATA_NPY_I32 ? "<i4" : "<f4");
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return base_error_set(err, BASE_E_ARG, ".npy with a negative dimension");
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%lld%s", (long long)shape[d],
                      d + 1 < ndim || ndim == 1 ? ", " : "");
    }
    if (ndim == 1) n -= 1; /* "(5,)" rather than "(5, )" */
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    const size_t prefix = 10, unpadded = prefix + (size_t)n + 1;
    const size_t total = (unpadded + 63) / 64 * 64;
    memcpy(header, "\x93NUMPY\x01\x00", 8);
    const size_t hlen = total - prefix;
    header[8] = (unsigned char)(hlen & 0xff);
    header[9] = (unsigned char)(hlen >> 8);
    memcpy(header + prefix, dict, (size_t)n);
    memset(header + prefix + n, ' ', total - unpadded);
    header[total - 1] = '\n';
    *length = total;
    return BASE_OK;
}

base_status data_npy_open(const char *path, data_npy_dtype dtype, const int64_t *shape, int ndim,
                         base_atomic_file **out, base_error *err) {
    *out = NULL;
    unsigned char header[DATA_NPY_MAX_HEADER];
    size_t total;
    base_status st = data_npy_header(dtype, shape, ndim, header, &total, err);
    if (st != BASE_OK) {
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err ? err->message : "");
        return base_error_set(err, st, "%s: %s", path, msg);
    }
    if ((st = base_atomic_open(path, out, err)) != BASE_OK) return st;
    if ((st = base_atomic_write(*out, header, total, err)) != BASE_OK) {
        base_atomic_abort(*out);
        *out = NULL;
    }
    return st;
}

base_status data_write_npy(const char *path, data_npy_dtype dtype, const int64_t *shape, int ndim,
                          const void *data, base_error *err) {
    size_t count = 1;
    for (int d = 0; d < ndim; d++) count *= (size_t)(shape[d] > 0 ? shape[d] : 0);
    base_atomic_file *f;
    base_status st = data_npy_open(path, dtype, shape, ndim, &f, err);
    if (st != BASE_OK) return st;
    if ((st = base_atomic_write(f, data, count * 4, err)) != BASE_OK) {
        base_atomic_abort(f);
        return st;
    }
    return base_atomic_commit(f, err);
}

/* ------------------------------------------------------------- PNG */

typedef struct byte_buffer {
    unsigned char *data;
    size_t length, capacity;
    int failed;
} byte_buffer;

/* stb_image_write hands us the encoded file in pieces. */
static void append_bytes(void *context, void *bytes, int size) {
    byte_buffer *b = context;
    if (b->failed || size <= 0) return;
    if (b->length + (size_t)size > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 65536;
        while (capacity < b->length + (size_t)size) capacity *= 2;
        unsigned char *data = realloc(b->data, capacity);
        if (!data) {
            b->failed = 1;
            return;
        }
        b->data = data;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, bytes, (size_t)size);
    b->length += (size_t)size;
}

base_status data_write_png(const char *path, int width, int height, int channels,
                          const uint8_t *pixels, base_error *err) {
    if (width <= 0 || height <= 0 || channels < 1 || channels > 4 ||
        (int64_t)width * channels > INT32_MAX)
        return base_error_set(err, BASE_E_ARG, "%s: cannot write a %dx%d PNG with %d channels", path,
                             width, height, channels);
    byte_buffer b = {0};
    const int ok = stbi_write_png_to_func(append_bytes, &b, width, height, channels, pixels,
                                          width * channels);
    base_status st;
    if (!ok || b.failed)
        st = base_error_set(err, BASE_E_NOMEM, "%s: cannot encode the PNG (out of memory)", path);
    else
        st = base_write_file_atomic(path, b.data, b.length, err);
    free(b.data);
    return st;
}

/* A PNG chunk: length, type, data, CRC-32 of type and data. */
static void png_chunk(byte_buffer *b, const char type[4], const unsigned char *data, size_t n) {
    const unsigned char length[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                                     (unsigned char)(n >> 8), (unsigned char)n};
    append_bytes(b, (void *)length, 4);
    append_bytes(b, (void *)type, 4);
    if (n) append_bytes(b, (void *)data, (int)n);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (n) crc = crc32(crc, data, (uInt)n);
    const unsigned char sum[4] = {(unsigned char)(crc >> 24), (unsigned char)(crc >> 16),
                                  (unsigned char)(crc >> 8), (unsigned char)crc};
    append_bytes(b, (void *)sum, 4);
}

/* The image data of an indexed PNG: each row behind filter byte 0 (none),
 * deflated. malloc'd into *out, NULL when out of memory. */
static unsigned char *png_index_data(int width, int height, const uint8_t *pixels, uLongf *size) {
    const size_t row = (size_t)width + 1, raw_size = row * (size_t)height;
    unsigned char *raw = malloc(raw_size);
    *size = compressBound((uLong)raw_size);
    unsigned char *packed = raw ? malloc(*size) : NULL;
    if (packed) {
        for (int y = 0; y < height; y++) {
            raw[(size_t)y * row] = 0;
            memcpy(raw + (size_t)y * row + 1, pixels + (size_t)y * width, (size_t)width);
        }
        if (compress2(packed, size, raw, (uLong)raw_size, 6) != Z_OK) {
            free(packed);
            packed = NULL;
        }
    }
    free(raw);
    return packed;
}

base_status data_write_png_indexed(const char *path, int width, int height, const uint8_t *pixels,
                                  const uint8_t *palette, int colors, base_error *err) {
    if (width <= 0 || height <= 0 || colors < 1 || colors > 256 || (size_t)width >= (1u << 31) ||
        (size_t)height >= (1u << 31))
        return base_error_set(err, BASE_E_ARG, "%s: cannot write a %dx%d PNG with %d colours", path,
                             width, height, colors);
    uLongf packed_size;
    unsigned char *packed = png_index_data(width, height, pixels, &packed_size);
    byte_buffer b = {0};
    if (packed) {
        const unsigned char ihdr[13] = {
            (unsigned char)(width >> 24),  (unsigned char)(width >> 16),  (unsigned char)(width >> 8),
            (unsigned char)width,          (unsigned char)(height >> 24), (unsigned char)(height >> 16),
            (unsigned char)(height >> 8),  (unsigned char)height,
            8, 3, 0, 0, 0}; /* 8 bits per index, colour type 3 (palette), no interlace */
        append_bytes(&b, (void *)"\x89PNG\r\n\x1a\n", 8);
        png_chunk(&b, "IHDR", ihdr, sizeof ihdr);
        png_chunk(&b, "PLTE", palette, (size_t)colors * 3);
        png_chunk(&b, "IDAT", packed, packed_size);
        png_chunk(&b, "IEND", NULL, 0);
    }
    base_status st;
    if (!packed || b.failed)
        st = base_error_set(err, BASE_E_NOMEM, "%s: cannot encode the PNG (out of memory)", path);
    else
        st = base_write_file_atomic(path, b.data, b.length, err);
    free(packed);
    free(b.data);
    return st;
}

/* ------------------------------------------------------------- resampling */

/* Source index pair and weight of output index i along an axis of in -> out
 * samples, as torch's upsample_bilinear2d (align_corners=False) computes
 * them: in float, source = (i + 0.5) * in / out - 0.5, clamped at 0. */
static void bilinear_index(int i, int in, int out, int *i0, int *i1, float *lambda) {
    const float scale = (float)in / (float)out;
    float src = scale * ((float)i + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
    int j = (int)src;
    if (j > in - 1) j = in - 1;
    *i0 = j;
    *i1 = j + (j < in - 1);
    float l = src - (float)j;
    *lambda = l < 0.0f ? 0.0f : l > 1.0f ? 1.0f : l;
}

static float bilinear_at(const float *src, int sh, int sw, int dh, int dw, int y, int x) {
    int y0, y1, x0, x1;
    float ly, lx;
    bilinear_index(y, sh, dh, &y0, &y1, &ly);
    bilinear_index(x, sw, dw, &x0, &x1, &lx);
    const float *r0 = src + (size_t)y0 * sw, *r1 = src + (size_t)y1 * sw;
    return (1.0f - ly) * ((1.0f - lx) * r0[x0] + lx * r0[x1]) +
           ly * ((1.0f - lx) * r1[x0] + lx * r1[x1]);
}

void data_upsample_bilinear(const float *src, int sh, int sw, float *dst, int dh, int dw) {
    for (int y = 0; y < dh; y++)
        for (int x = 0; x < dw; x++) dst[(size_t)y * dw + x] = bilinear_at(src, sh, sw, dh, dw, y, x);
}

/* torch's 'nearest': floor(i * in / out) in float, capped at in - 1. */
static int nearest_index(int i, int in, int out) {
    const int j = (int)floorf((float)i * ((float)in / (float)out));
    return j < in - 1 ? j : in - 1;
}

void data_preprocess_source_box(const data_preprocess *p, int width, int height, double box[4]) {
    /* Size after the resize step, as data_preprocess_apply computes it. */
    double rw = width, rh = height;
    if (p->resize_mode == DATA_RESIZE_EXACT) {
        rw = p->resize_width;
        rh = p->resize_height;
    } else if (p->resize_mode == DATA_RESIZE_SHORTEST_EDGE) {
        const double s = p->resize_shortest;
        if (width <= height) {
            rw = s;
            rh = floor(s * height / width);
        } else {
            rh = s;
            rw = floor(s * width / height);
        }
    }
    double cw = rw, ch = rh;
    if (p->do_center_crop) {
        cw = p->crop_width;
        ch = p->crop_height;
    }
    /* The crop in resized pixels, mapped back through the resize scale. */
    const double sx = width / rw, sy = height / rh;
    box[0] = (rw - cw) / 2 * sx;
    box[1] = (rh - ch) / 2 * sy;
    box[2] = box[0] + cw * sx;
    box[3] = box[1] + ch * sy;
}

/* The box in whole pixels: left, top, width, height (at least 1x1). */
static void box_pixels(const double box[4], int *bx, int *by, int *bw, int *bh) {
    *bx = (int)lround(box[0]);
    *by = (int)lround(box[1]);
    *bw = (int)lround(box[2]) - *bx;
    *bh = (int)lround(box[3]) - *by;
    if (*bw < 1) *bw = 1;
    if (*bh < 1) *bh = 1;
}

/* ------------------------------------------------------------- colours */

/* Turbo (Mikhailov, Google 2019) sampled at 33 evenly spaced points of
 * Google's published 256-entry table and interpolated linearly between them:
 * within 2 levels of the full table everywhere. */
static const uint8_t TURBO[33][3] = {
    {48, 18, 59},    {57, 42, 115},   {64, 64, 161},   {68, 86, 199},   {70, 107, 227},
    {70, 127, 246},  {66, 147, 255},  {55, 167, 250},  {41, 187, 236},  {29, 205, 216},
    {24, 220, 195},  {30, 232, 176},  {49, 242, 153},  {76, 249, 126},  {107, 253, 100},
    {138, 255, 77},  {163, 253, 60},  {184, 247, 53},  {204, 237, 52},  {222, 224, 55},
    {237, 208, 58},  {248, 192, 58},  {253, 174, 53},  {254, 152, 44},  {251, 128, 34},
    {245, 104, 23},  {236, 82, 15},   {224, 64, 9},    {210, 49, 5},    {192, 35, 2},
    {172, 23, 1},    {149, 13, 1},    {122, 4, 3},
};

void data_colormap_turbo(float t, uint8_t rgb[3]) {
    if (!(t > 0.0f)) t = 0.0f; /* NaN too */
    if (t > 1.0f) t = 1.0f;
    const float pos = t * 32.0f;
    int i = (int)pos;
    if (i > 31) i = 31;
    const float f = pos - (float)i;
    for (int c = 0; c < 3; c++)
        rgb[c] = (uint8_t)lroundf((1.0f - f) * TURBO[i][c] + f * TURBO[i + 1][c]);
}

/* matplotlib's tab20 order (strong colours first, then their light tints). */
static const uint8_t PALETTE[20][3] = {
    {31, 119, 180}, {255, 127, 14}, {44, 160, 44},  {214, 39, 40},   {148, 103, 189},
    {140, 86, 75},  {227, 119, 194}, {127, 127, 127}, {188, 189, 34}, {23, 190, 207},
    {174, 199, 232}, {255, 187, 120}, {152, 223, 138}, {255, 152, 150}, {197, 176, 213},
    {196, 156, 148}, {247, 182, 210}, {199, 199, 199}, {219, 219, 141}, {158, 218, 229},
};

void data_palette_color(int index, uint8_t rgb[3]) {
    if (index < 0) index = -index;
    const uint8_t *c = PALETTE[index % 20];
    const int round = index / 20 % 3; /* 0 as is, 1 darker, 2 lighter */
    for (int k = 0; k < 3; k++)
        rgb[k] = round == 0 ? c[k] : round == 1 ? (uint8_t)(c[k] * 2 / 3)
                                                : (uint8_t)(c[k] + (255 - c[k]) / 2);
}

static uint8_t mix(uint8_t under, uint8_t over, float alpha) {
    return (uint8_t)lroundf(under + alpha * ((float)over - (float)under));
}

/* A copy of img with the pixels outside the box dimmed. */
static base_status copy_dimmed(const data_image *img, int bx, int by, int bw, int bh,
                              data_image *out, base_error *err) {
    const size_t bytes = (size_t)img->width * img->height * 3;
    out->width = img->width;
    out->height = img->height;
    if (!(out->pixels = malloc(bytes)))
        return base_error_set(err, BASE_E_NOMEM, "overlay: out of memory (%dx%d)", img->width,
                             img->height);
    for (int y = 0; y < img->height; y++) {
        const int inside_y = y >= by && y < by + bh;
        const uint8_t *s = img->pixels + (size_t)y * img->width * 3;
        uint8_t *d = out->pixels + (size_t)y * img->width * 3;
        for (int x = 0; x < img->width; x++) {
            const int inside = inside_y && x >= bx && x < bx + bw;
            for (int c = 0; c < 3; c++) d[3 * x + c] = inside ? s[3 * x + c] : s[3 * x + c] / 3;
        }
    }
    return BASE_OK;
}

base_status data_overlay_heatmap(const data_image *img, const double box[4], const float *grid,
                                int gh, int gw, float lo, float hi, float alpha, data_image *out,
                                base_error *err) {
    int bx, by, bw, bh;
    box_pixels(box, &bx, &by, &bw, &bh);
    base_status st = copy_dimmed(img, bx, by, bw, bh, out, err);
    if (st != BASE_OK) return st;
    const float range = hi > lo ? hi - lo : 1.0f;
    for (int y = by < 0 ? 0 : by; y < by + bh && y < img->height; y++) {
        uint8_t *row = out->pixels + (size_t)y * img->width * 3;
        for (int x = bx < 0 ? 0 : bx; x < bx + bw && x < img->width; x++) {
            /* Sampled per pixel, so no box-sized float buffer is needed. */
            const float v = bilinear_at(grid, gh, gw, bh, bw, y - by, x - bx);
            uint8_t rgb[3];
            data_colormap_turbo((v - lo) / range, rgb);
            for (int c = 0; c < 3; c++) row[3 * x + c] = mix(row[3 * x + c], rgb[c], alpha);
        }
    }
    return BASE_OK;
}

base_status data_overlay_labels(const data_image *img, const double box[4], const int *labels,
                               int gh, int gw, const uint8_t *colors, float alpha,
                               data_image *out, base_error *err) {
    int bx, by, bw, bh;
    box_pixels(box, &bx, &by, &bw, &bh);
    base_status st = copy_dimmed(img, bx, by, bw, bh, out, err);
    if (st != BASE_OK) return st;
    for (int y = by < 0 ? 0 : by; y < by + bh && y < img->height; y++) {
        uint8_t *row = out->pixels + (size_t)y * img->width * 3;
        const int *lrow = labels + (size_t)nearest_index(y - by, gh, bh) * gw;
        for (int x = bx < 0 ? 0 : bx; x < bx + bw && x < img->width; x++) {
            const int label = lrow[nearest_index(x - bx, gw, bw)];
            if (label < 0) continue;
            const uint8_t *rgb = colors + 3 * (size_t)label;
            for (int c = 0; c < 3; c++) row[3 * x + c] = mix(row[3 * x + c], rgb[c], alpha);
        }
    }
    return BASE_OK;
}

void data_label_mask(const double box[4], const int *labels, int gh, int gw, int width,
                     int height, uint8_t outside, uint8_t *out) {
    int bx, by, bw, bh;
    box_pixels(box, &bx, &by, &bw, &bh);
    for (int y = 0; y < height; y++) {
        uint8_t *row = out + (size_t)y * width;
        const int inside_y = y >= by && y < by + bh;
        const int *lrow = inside_y ? labels + (size_t)nearest_index(y - by, gh, bh) * gw : NULL;
        for (int x = 0; x < width; x++)
            row[x] = inside_y && x >= bx && x < bx + bw
                         ? (uint8_t)lrow[nearest_index(x - bx, gw, bw)]
                         : outside;
    }
}

/* ------------------------------------------------------------- drawing */

void data_fill_rect(data_image *img, int x, int y, int w, int h, const uint8_t rgb[3],
                    float alpha) {
    const int x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    const int x1 = x + w < img->width ? x + w : img->width;
    const int y1 = y + h < img->height ? y + h : img->height;
    for (int yy = y0; yy < y1; yy++) {
        uint8_t *row = img->pixels + (size_t)yy * img->width * 3;
        for (int xx = x0; xx < x1; xx++)
            for (int c = 0; c < 3; c++) row[3 * xx + c] = mix(row[3 * xx + c], rgb[c], alpha);
    }
}

/* stb_easy_font indexes a table by character - 32: keep to printable ASCII. */
static char printable(char c) { return c >= 32 && c < 127 ? c : '?'; }

int data_text_width(const char *text, int scale) {
    int w = 0;
    for (; *text; text++) {
        char one[2] = {printable(*text), 0};
        w += stb_easy_font_width(one);
    }
    return w * scale;
}

int data_text_height(int scale) { return 12 * scale; }

int data_draw_text(data_image *img, int x, int y, int scale, const char *text,
                   const uint8_t rgb[3]) {
    /* One character at a time, so a small fixed vertex buffer suffices
     * (a glyph is at most a few dozen quads of 64 bytes). */
    float quads[1024];
    int pen = 0;
    for (; *text; text++) {
        char one[2] = {printable(*text), 0};
        const int n = stb_easy_font_print(0.0f, 0.0f, one, NULL, quads, (int)sizeof quads);
        for (int q = 0; q < n; q++) {
            const float *v = quads + 16 * q; /* 4 vertices of x, y, z, colour */
            const int qx0 = (int)v[0], qy0 = (int)v[1], qx1 = (int)v[8], qy1 = (int)v[9];
            data_fill_rect(img, x + (pen + qx0) * scale, y + qy0 * scale, (qx1 - qx0) * scale,
                           (qy1 - qy0) * scale, rgb, 1.0f);
        }
        pen += stb_easy_font_width(one);
    }
    return pen * scale;
}
