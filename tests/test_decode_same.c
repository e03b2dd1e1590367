/* test_decode_same.c — the faster decode and preprocessing of issue 28
 * give what the code before it gave, to the byte and to the float:
 *  - PNG (data/png_plain.c) and JPEG (4 channels from stb, packed in
 *    place) against stb_image asked for 3 channels, as image.c did before,
 *    on every shared photo and on synthetic files of every colour type,
 *    filter, edge size and chunk layout, damaged ones included (which
 *    must fail, or not, exactly when stb does; tests/fuzz/fuzz_png.c
 *    looks for more);
 *  - the streaming, windowed resize and the fused crop and normalisation
 *    against the code they replaced (tests/resize_oracle.h).
 * The shared photos are ../shared/images and ../shared/imagenet-sample
 * (skipped when absent). */
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <stb_image.h>
#include <stb_image_write.h>

#include "data.h"
#include "png_plain.h"
#include "resize_oracle.h"
#include "resize_rows.h"

#define SHARED VITC_SOURCE_DIR "/../shared"

/* ------------------------------------------------------------ helpers */

typedef struct bytes {
    uint8_t *data;
    size_t len, cap;
} bytes;

static void put(bytes *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->data = realloc(b->data, b->cap);
        cr_assert(b->data);
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put32(bytes *b, uint32_t v) {
    const uint8_t be[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(b, be, 4);
}

static uint8_t *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    cr_assert(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return buf;
}

/* What image.c gave before issue 28 for files stb decodes: stb's 3-channel
 * pixels (16-bit grey PNGs, clamped by image.c's own unchanged code, are
 * not asked about). 1 when stb decodes the file. */
static int stb_reference(const uint8_t *b, size_t n, data_image *ref) {
    int w, h, c;
    memset(ref, 0, sizeof *ref);
    ref->pixels = stbi_load_from_memory(b, (int)n, &w, &h, &c, 3);
    ref->width = w;
    ref->height = h;
    return ref->pixels != NULL;
}

/* Decodes b both ways; both must fail, or give the same pixels. */
static void expect_same_decode(const uint8_t *b, size_t n, const char *what) {
    data_image ours, ref;
    base_error err;
    const int ok = data_image_load_memory(b, n, what, &ours, &err) == BASE_OK;
    const int ref_ok = stb_reference(b, n, &ref);
    cr_expect_eq(ok, ref_ok, "%s: decoded %d, stb %d (%s)", what, ok, ref_ok, ok ? "" : err.message);
    if (ok && ref_ok) {
        cr_expect(ours.width == ref.width && ours.height == ref.height, "%s: size differs", what);
        cr_expect(memcmp(ours.pixels, ref.pixels, (size_t)ref.width * ref.height * 3) == 0,
                  "%s: pixels differ", what);
    }
    if (ok) data_image_free(&ours);
    stbi_image_free(ref.pixels);
}

/* -------------------------------------------------------- synthetic PNG */

enum {
    PNG_BAD_ADLER = 1,      /* stb does not check it: decodes */
    PNG_TRAILING = 2,       /* bytes after the deflate stream: ignored by both */
    PNG_TRUNCATED = 4,      /* the stream cut in half: fails */
    PNG_BAD_FILTER = 8,     /* a row with filter type 5: fails */
    PNG_ANCILLARY = 16,     /* tEXt before and between IDATs: skipped */
    PNG_TRNS = 32,          /* a valid tRNS: no effect on RGB */
    PNG_TRNS_LATE = 64,     /* tRNS after IDAT: stb refuses */
    PNG_CRITICAL = 128,     /* an unknown critical chunk: stb refuses */
    PNG_EMPTY_IDAT = 256,   /* an empty IDAT after the first */
    PNG_NO_IEND = 512,      /* no IEND: stb refuses */
    PNG_BAD_PLTE = 1024,    /* a PLTE of 7 bytes: stb refuses */
    PNG_NO_ADLER = 2048,    /* the stream ends with the data: stb may refuse */
    PNG_ONE_AFTER = 4096    /* one byte after the stream: likewise */
};

static void chunk(bytes *b, const char *type, const void *data, uint32_t len) {
    put32(b, len);
    put(b, type, 4);
    put(b, data, len);
    uLong crc = crc32(0, (const Bytef *)type, 4);
    crc = crc32(crc, data ? (const Bytef *)data : (const Bytef *)"", len);
    put32(b, (uint32_t)crc);
}

static int paeth_pred(int a, int b, int c) {
    const int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/* The filtered scanlines of raw (h rows of stride bytes, bpp per pixel):
 * filter f for every row, or -1 for 0, 1, 2, 3, 4, 0, ... row by row. */
static uint8_t *filter_rows(const uint8_t *raw, int h, size_t stride, int bpp, int f) {
    uint8_t *out = malloc((size_t)h * (stride + 1));
    cr_assert(out);
    for (int y = 0; y < h; y++) {
        const int ft = f < 0 ? y % 5 : f;
        const uint8_t *row = raw + (size_t)y * stride, *up = y ? row - stride : NULL;
        uint8_t *o = out + (size_t)y * (stride + 1);
        o[0] = (uint8_t)ft;
        for (size_t i = 0; i < stride; i++) {
            const int a = i >= (size_t)bpp ? row[i - bpp] : 0, b = up ? up[i] : 0;
            const int c = up && i >= (size_t)bpp ? up[i - bpp] : 0;
            const int pred = ft == 1 ? a : ft == 2 ? b : ft == 3 ? (a + b) / 2 : ft == 4 ? paeth_pred(a, b, c) : 0;
            o[1 + i] = (uint8_t)(row[i] - pred);
        }
    }
    return out;
}

/* A PNG of w x h pixels of colour type color (palette: indices below 16,
 * a 16-entry PLTE), IDAT data in pieces of `piece` bytes (0: one chunk). */
static bytes make_png(int w, int h, int color, const uint8_t *raw, int f, size_t piece, int flags) {
    static const int CHANNELS[7] = {1, 0, 3, 1, 2, 0, 4};
    const int bpp = CHANNELS[color];
    const size_t stride = (size_t)w * bpp;
    uint8_t *filtered = filter_rows(raw, h, stride, bpp, f);
    if (flags & PNG_BAD_FILTER) filtered[(size_t)(h / 2) * (stride + 1)] = 5;
    uLongf zlen = compressBound((uLong)(h * (stride + 1))) + 16;
    uint8_t *z = malloc(zlen);
    cr_assert(z && compress2(z, &zlen, filtered, (uLong)(h * (stride + 1)), 6) == Z_OK);
    if (flags & PNG_BAD_ADLER) z[zlen - 1] ^= 0x5a;
    if (flags & PNG_TRAILING) memcpy(z + zlen, "junk", 4), zlen += 4;
    if (flags & PNG_TRUNCATED) zlen /= 2;
    if (flags & PNG_NO_ADLER) zlen -= 4;
    if (flags & PNG_ONE_AFTER) zlen -= 3;
    bytes b = {0};
    put(&b, "\x89PNG\r\n\x1a\n", 8);
    uint8_t ihdr[13] = {0};
    ihdr[0] = (uint8_t)(w >> 24), ihdr[1] = (uint8_t)(w >> 16), ihdr[2] = (uint8_t)(w >> 8), ihdr[3] = (uint8_t)w;
    ihdr[4] = (uint8_t)(h >> 24), ihdr[5] = (uint8_t)(h >> 16), ihdr[6] = (uint8_t)(h >> 8), ihdr[7] = (uint8_t)h;
    ihdr[8] = 8, ihdr[9] = (uint8_t)color;
    chunk(&b, "IHDR", ihdr, 13);
    if (flags & PNG_ANCILLARY) chunk(&b, "tEXt", "Comment\0hello", 13);
    if (flags & PNG_CRITICAL) chunk(&b, "ABCD", "x", 1);
    uint8_t plte[48];
    for (int i = 0; i < 48; i++) plte[i] = (uint8_t)(i * 37 + 11);
    if (color == 3 || (flags & PNG_BAD_PLTE)) chunk(&b, "PLTE", plte, flags & PNG_BAD_PLTE ? 7 : 48);
    static const uint8_t trns[8] = {0, 7, 0, 9, 0, 11, 3, 4};
    const uint32_t trns_len = color == 3 ? 5 : color == 0 ? 2 : color == 2 ? 6 : 2;
    if (flags & PNG_TRNS) chunk(&b, "tRNS", trns, trns_len);
    for (size_t at = 0; at < zlen;) {
        const size_t n = piece && zlen - at > piece ? piece : zlen - at;
        chunk(&b, "IDAT", z + at, (uint32_t)n);
        if (at == 0 && (flags & PNG_EMPTY_IDAT)) chunk(&b, "IDAT", NULL, 0);
        if (at == 0 && (flags & PNG_ANCILLARY)) chunk(&b, "zzZz", "ab", 2);
        at += n;
    }
    if (flags & PNG_TRNS_LATE) chunk(&b, "tRNS", trns, trns_len);
    if (!(flags & PNG_NO_IEND)) chunk(&b, "IEND", NULL, 0);
    free(filtered);
    free(z);
    return b;
}

static uint8_t *random_pixels(size_t n, unsigned seed, int below) {
    uint8_t *p = malloc(n ? n : 1);
    cr_assert(p);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)((seed >> 16) % (unsigned)below);
    }
    return p;
}

static const int SIZES[][2] = {{1, 1}, {1, 5}, {5, 1}, {2, 3}, {17, 9}, {64, 3}, {3, 64}, {301, 7}};
static const int COLORS[] = {0, 2, 3, 4, 6};

/* Every colour type, size and filter: decoded by png_plain, as stb does. */
Test(png, plain_files_decode_as_stb) {
    for (size_t s = 0; s < sizeof SIZES / sizeof *SIZES; s++)
        for (size_t c = 0; c < sizeof COLORS / sizeof *COLORS; c++)
            for (int f = -1; f <= 4; f++) {
                const int w = SIZES[s][0], h = SIZES[s][1], color = COLORS[c];
                const int bpp = color == 2 ? 3 : color == 6 ? 4 : color == 4 ? 2 : 1;
                uint8_t *raw = random_pixels((size_t)w * h * bpp, (unsigned)(s * 31 + c * 7 + f + 9),
                                             color == 3 ? 16 : 256);
                bytes png = make_png(w, h, color, raw, f, f == 2 ? 7 : 0, 0);
                char what[96];
                snprintf(what, sizeof what, "%dx%d colour %d filter %d", w, h, color, f);
                data_image img;
                cr_expect(data_png_plain_decode(png.data, png.len, 1 << 30, &img), "%s: not taken", what);
                data_image_free(&img);
                expect_same_decode(png.data, png.len, what);
                free(png.data);
                free(raw);
            }
}

/* Chunk layouts and damage: each decodes, or fails, exactly as with stb. */
Test(png, odd_and_damaged_files_as_stb) {
    static const int FLAGS[] = {PNG_BAD_ADLER, PNG_TRAILING,  PNG_TRUNCATED,  PNG_BAD_FILTER,
                                PNG_ANCILLARY, PNG_TRNS,      PNG_TRNS_LATE,  PNG_CRITICAL,
                                PNG_EMPTY_IDAT, PNG_NO_IEND,  PNG_BAD_PLTE,   PNG_NO_ADLER,
                                PNG_ONE_AFTER,
                                PNG_ANCILLARY | PNG_TRNS | PNG_EMPTY_IDAT};
    for (size_t k = 0; k < sizeof FLAGS / sizeof *FLAGS; k++)
        for (size_t c = 0; c < sizeof COLORS / sizeof *COLORS; c++) {
            const int w = 37, h = 23, color = COLORS[c];
            const int bpp = color == 2 ? 3 : color == 6 ? 4 : color == 4 ? 2 : 1;
            uint8_t *raw = random_pixels((size_t)w * h * bpp, (unsigned)(k * 5 + c), color == 3 ? 16 : 256);
            for (size_t piece = 0; piece <= 1; piece++) {
                bytes png = make_png(w, h, color, raw, -1, piece ? 1 : 0, FLAGS[k]);
                char what[96];
                snprintf(what, sizeof what, "colour %d flags %d pieces of %zu", color, FLAGS[k], piece);
                expect_same_decode(png.data, png.len, what);
                free(png.data);
            }
            free(raw);
        }
}

/* ------------------------------------------------------- synthetic JPEG */

static void to_bytes(void *ctx, void *data, int size) { put(ctx, data, (size_t)size); }

/* Grey and colour JPEGs, 4:2:0 (quality 50) and 4:4:4 (95), odd sizes:
 * decoded through 4 channels, the same as stb's 3. */
Test(jpeg, four_channels_give_stb_three) {
    for (size_t s = 0; s < sizeof SIZES / sizeof *SIZES; s++)
        for (int comp = 1; comp <= 3; comp += 2)
            for (int q = 50; q <= 95; q += 45) {
                const int w = SIZES[s][0] * 3 + 1, h = SIZES[s][1] * 2 + 3;
                uint8_t *raw = random_pixels((size_t)w * h * comp, (unsigned)(s + q + comp), 256);
                for (size_t i = 0; i < (size_t)w * h * comp; i++) raw[i] = (uint8_t)(raw[i] / 4 + i % 97);
                bytes jpg = {0};
                cr_assert(stbi_write_jpg_to_func(to_bytes, &jpg, w, h, comp, raw, q));
                char what[64];
                snprintf(what, sizeof what, "%dx%d JPEG, %d channels, quality %d", w, h, comp, q);
                expect_same_decode(jpg.data, jpg.len, what);
                free(jpg.data);
                free(raw);
            }
}

/* ------------------------------------------------------------- resize */

static void window_row(void *ctx, int y, const uint8_t *rgb) {
    data_image *win = ctx;
    memcpy(win->pixels + (size_t)y * win->width * 3, rgb, (size_t)win->width * 3);
}

/* data_resize and windows of data_resize_rows against the old resize. */
Test(resize, streaming_windows_match_the_old_resize) {
    static const int SRC[][2] = {{1, 1}, {1, 17}, {17, 1}, {5, 186}, {64, 48}, {200, 150}, {451, 300}};
    static const int DST[][2] = {{1, 1}, {3, 5}, {17, 40}, {224, 224}, {13, 7}, {190, 20}, {372, 248}};
    static const data_resample FILTERS[] = {DATA_RESAMPLE_NEAREST, DATA_RESAMPLE_BILINEAR,
                                            DATA_RESAMPLE_BICUBIC};
    for (size_t s = 0; s < sizeof SRC / sizeof *SRC; s++) {
        data_image src = {SRC[s][0], SRC[s][1], random_pixels((size_t)SRC[s][0] * SRC[s][1] * 3, (unsigned)s, 256)};
        for (size_t d = 0; d < sizeof DST / sizeof *DST; d++)
            for (size_t f = 0; f < 3; f++) {
                const int W = DST[d][0], H = DST[d][1];
                data_image ref, got;
                base_error err;
                cr_assert_eq(oracle_resize(&src, W, H, FILTERS[f], &ref, &err), BASE_OK);
                cr_assert_eq(data_resize(&src, W, H, FILTERS[f], &got, &err), BASE_OK, "%s", err.message);
                cr_expect(memcmp(ref.pixels, got.pixels, (size_t)W * H * 3) == 0,
                          "%dx%d -> %dx%d filter %d differs", src.width, src.height, W, H, FILTERS[f]);
                data_image_free(&got);
                /* A window off the centre: rows and columns the old code computed. */
                const int x = W / 3, y = H / 4, w = W - x - W / 5 > 0 ? W - x - W / 5 : 1, h = H - y > 0 ? H - y : 1;
                data_image win = {w, h, malloc((size_t)w * h * 3)};
                cr_assert_eq(data_resize_rows(&src, W, H, FILTERS[f], x, y, w, h, window_row, &win, &err), BASE_OK);
                for (int r = 0; r < h; r++)
                    cr_expect(memcmp(win.pixels + (size_t)r * w * 3, ref.pixels + ((size_t)(y + r) * W + x) * 3,
                                     (size_t)w * 3) == 0,
                              "%dx%d -> %dx%d filter %d: window row %d differs", src.width, src.height, W, H,
                              FILTERS[f], r);
                data_image_free(&win);
                data_image_free(&ref);
            }
        data_image_free(&src);
    }
}

/* ------------------------------------------------------- shared photos */

/* Recipes that take every path: the default model's (shorter side 248,
 * bicubic, crop 224), an exact bilinear resize without a crop, nearest with
 * a crop larger than the image (padding), and no resize at all. */
static void recipes(data_preprocess r[4]) {
    data_preprocess_default(&r[0], 224);
    r[0].mean[0] = r[0].mean[1] = r[0].mean[2] = 0.5f;
    r[0].std[0] = r[0].std[1] = r[0].std[2] = 0.5f;
    data_preprocess_default(&r[1], 224);
    r[1].resize_mode = DATA_RESIZE_EXACT;
    r[1].resize_width = r[1].resize_height = 224;
    r[1].resample = DATA_RESAMPLE_BILINEAR;
    r[1].do_center_crop = 0;
    data_preprocess_default(&r[2], 300);
    r[2].resize_shortest = 256;
    r[2].resample = DATA_RESAMPLE_NEAREST;
    r[2].crop_rounding = DATA_CROP_HF;
    data_preprocess_default(&r[3], 64);
    r[3].resize_mode = DATA_RESIZE_NONE;
}

/* One photo: its pixels, then every recipe's tensor, old way and new. */
static int check_photo(const char *path) {
    size_t n;
    uint8_t *b = read_file(path, &n);
    if (!b) return 0;
    data_image ref;
    const int decodes = stb_reference(b, n, &ref) && (n < 8 || memcmp(b, "\x89PNG", 4) != 0 ||
                                                      !stbi_is_16_bit_from_memory(b, (int)n));
    if (!decodes) {
        stbi_image_free(ref.pixels);
        free(b);
        return 0;
    }
    expect_same_decode(b, n, path);
    data_preprocess r[4];
    recipes(r);
    for (int k = 0; k < 4; k++) {
        const size_t floats = 3 * (size_t)data_preprocess_out_height(&r[k]) * data_preprocess_out_width(&r[k]);
        float *want = malloc(floats * sizeof *want), *got = malloc(floats * sizeof *got);
        base_error err;
        cr_assert_eq(oracle_preprocess(&r[k], &ref, want, &err), BASE_OK, "%s: %s", path, err.message);
        cr_assert_eq(data_preprocess_memory(&r[k], b, n, path, got, &err), BASE_OK, "%s", err.message);
        cr_expect(memcmp(want, got, floats * sizeof *got) == 0, "%s: recipe %d: tensors differ", path, k);
        free(want);
        free(got);
    }
    stbi_image_free(ref.pixels);
    free(b);
    return 1;
}

static int check_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int count = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        count += check_photo(path);
    }
    closedir(d);
    return count;
}

Test(photos, shared_photos_same_pixels_and_tensors, .timeout = 1800) {
    const int samples = check_dir(VITC_SOURCE_DIR "/data/samples");
    cr_expect_geq(samples, 2, "data/samples: %d photos", samples);
    const int shared = check_dir(SHARED "/images") + check_dir(SHARED "/imagenet-sample");
    if (shared == 0) cr_skip_test("no photos in " SHARED "/images or imagenet-sample");
    fprintf(stderr, "test_decode_same: %d shared photos, %d samples: the same\n", shared, samples);
}
