/* png_plain.c — plain 8-bit PNGs decoded row by row with zlib
 * (png_plain.h says which, and why the result is stb_image's).
 *
 * scan() walks the chunks as stb_image 2.27's stbi__parse_png_file does
 * and gives up wherever stb would fail, or would do something this file
 * does not: the comments name stb's message for each. The zlib stream is
 * inflated raw (after stb's own header checks) because stb checks neither
 * the window size nor the Adler-32 sum: a file stb accepts with a wrong
 * sum must not be refused here, only handed back. */
#include "png_plain.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "base_io.h"

enum { MAX_SIDE = 1 << 24 }; /* stb's STBI_MAX_DIMENSIONS */

typedef struct png_header {
    uint32_t width, height;
    int channels;            /* bytes per pixel as stored: 1 grey or palette, 2, 3, 4 */
    int palette_image;
    int palette_len;
    uint8_t palette[256][3];
    size_t first_chunk;      /* offset of the chunk after IHDR */
} png_header;

static int chunk_is(const uint8_t *c, const char *type) { return memcmp(c + 4, type, 4) == 0; }

/* IHDR, with stb's checks ("bad IHDR len", "too large", "1/2/4/8/16-bit
 * only", "bad ctype", "bad comp method", "bad filter method", "bad
 * interlace method", "0-pixel image") and this decoder's own limits. */
static int read_ihdr(const uint8_t *d, png_header *h) {
    h->width = base_be32(d);
    h->height = base_be32(d + 4);
    const int depth = d[8], color = d[9];
    if (h->width == 0 || h->height == 0 || h->width > MAX_SIDE || h->height > MAX_SIDE) return 0;
    if (depth != 8 || d[12] != 0) return 0;           /* other depths, Adam7: stb's */
    if (color > 6 || (color & 1 && color != 3) || d[10] || d[11]) return 0;
    h->palette_image = color == 3;
    h->channels = h->palette_image ? 1 : (color & 2 ? 3 : 1) + (color & 4 ? 1 : 0);
    const uint32_t out_n = h->palette_image ? 4 : (uint32_t)h->channels;
    if ((1u << 30) / h->width / out_n < h->height) return 0; /* "too large" */
    return 1;
}

/* The palette chunk ("invalid PLTE"): later entries keep their values, as
 * in stb's array. */
static int read_plte(const uint8_t *d, uint32_t len, png_header *h) {
    if (len > 256 * 3 || len % 3) return 0;
    h->palette_len = (int)(len / 3);
    memcpy(h->palette, d, len);
    return 1;
}

/* tRNS changes nothing in RGB; only stb's refusals matter ("tRNS after
 * IDAT", "tRNS before PLTE", "bad tRNS len", "tRNS with alpha"). */
static int trns_ok(uint32_t len, const png_header *h, uint64_t idat_bytes) {
    if (idat_bytes) return 0;
    if (h->palette_image) return h->palette_len > 0 && len <= (uint32_t)h->palette_len;
    return (h->channels & 1) && len == (uint32_t)h->channels * 2;
}

/* Walks the chunks up to IEND; 1 when stb would reach IEND and decode. */
static int scan(const uint8_t *b, size_t n, png_header *h) {
    static const uint8_t SIGNATURE[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    if (n < 8 + 8 + 13 || memcmp(b, SIGNATURE, 8) != 0) return 0;
    /* "first not IHDR" (or Apple's CgBI first, left to stb). */
    if (base_be32(b + 8) != 13 || !chunk_is(b + 8, "IHDR") || !read_ihdr(b + 16, h)) return 0;
    h->first_chunk = 8 + 12 + 13;
    uint64_t idat_bytes = 0;
    for (size_t i = h->first_chunk;;) {
        /* Past the end stb reads zeros: a chunk of type 0 it refuses. */
        if (i > n || n - i < 8) return 0;
        const uint32_t len = base_be32(b + i);
        const uint8_t *c = b + i;
        if (chunk_is(c, "IEND")) return idat_bytes > 0; /* "no IDAT" */
        if (len > n - i - 8) return 0; /* its data cut: stb's reads fail or run into zeros */
        const uint8_t *d = c + 8;
        if (chunk_is(c, "IHDR") || chunk_is(c, "CgBI")) return 0; /* "multiple IHDR", iPhone */
        if (chunk_is(c, "PLTE")) {
            if (!read_plte(d, len, h)) return 0;
        } else if (chunk_is(c, "tRNS")) {
            if (!trns_ok(len, h, idat_bytes)) return 0;
        } else if (chunk_is(c, "IDAT")) {
            if (h->palette_image && !h->palette_len) return 0; /* "no PLTE" */
            idat_bytes += len;
            if (idat_bytes > INT_MAX) return 0;
        } else if (!(c[4] & 0x20)) {
            return 0; /* an unknown critical chunk: "PNG chunk not known" */
        }
        i += 12 + (size_t)len;
    }
}

/* The IDAT chunks' data, one after the other, as zlib's input. */
typedef struct idat_reader {
    const uint8_t *b;
    size_t n, next; /* the chunk to look at next */
} idat_reader;

/* Points strm at the next non-empty IDAT chunk; 0 at IEND. */
static int next_idat(idat_reader *r, z_stream *strm) {
    while (!chunk_is(r->b + r->next, "IEND")) {
        const uint32_t len = base_be32(r->b + r->next);
        const size_t at = r->next + 8;
        r->next += 12 + (size_t)len;
        if (len && chunk_is(r->b + at - 8, "IDAT")) {
            strm->next_in = (Bytef *)(uintptr_t)(r->b + at); /* zlib does not write it */
            strm->avail_in = len;
            return 1;
        }
    }
    return 0;
}

/* Fills dst[0 .. len) from the stream; 0, or -1 when the data ends or is
 * bad (stb: "not enough pixels", or a zlib error). *ended: the deflate
 * stream has ended. */
static int inflate_exact(z_stream *strm, idat_reader *r, uint8_t *dst, size_t len, int *ended) {
    strm->next_out = dst;
    strm->avail_out = (uInt)len;
    while (strm->avail_out > 0) {
        if (*ended) return -1;
        /* With no input left, inflate may still hold output: it says
         * Z_BUF_ERROR when it can make no progress. */
        if (strm->avail_in == 0) next_idat(r, strm);
        const int rc = inflate(strm, Z_NO_FLUSH);
        if (rc == Z_STREAM_END) *ended = 1;
        else if (rc != Z_OK) return -1;
    }
    return 0;
}

/* After the last row: the rest of the stream must inflate too, as stb
 * inflates all of it before looking at a row (1 GiB at most here: stb
 * gives up on an output of 2 GiB or more). */
static int inflate_rest(z_stream *strm, idat_reader *r, int ended) {
    uint8_t sink[16384];
    for (uint64_t total = 0; !ended; total += sizeof sink - strm->avail_out) {
        if (total > (1u << 30)) return -1;
        strm->next_out = sink;
        strm->avail_out = sizeof sink;
        if (strm->avail_in == 0) next_idat(r, strm);
        const int rc = inflate(strm, Z_NO_FLUSH);
        if (rc == Z_STREAM_END) ended = 1;
        else if (rc != Z_OK) return -1;
    }
    return 0;
}

/* The IDAT bytes left after the deflate stream's end. stb 2.27 refuses to
 * decode a Huffman symbol once it has read its last byte with fewer than
 * 16 bits left ("bad huffman code"), so a stream that ends within 2 bytes
 * of the data (no Adler-32 sum after it, say) may fail there though zlib
 * reads it: with 2 bytes or more after the end, every symbol starts at
 * least 17 bits before the data's end, and stb decodes it. */
static size_t bytes_after_stream(const z_stream *strm, idat_reader *r) {
    size_t left = strm->avail_in;
    for (size_t i = r->next; !chunk_is(r->b + i, "IEND"); i += 12 + (size_t)base_be32(r->b + i))
        if (chunk_is(r->b + i, "IDAT")) left += base_be32(r->b + i);
    return left;
}

/* The Paeth predictor as the PNG specification (and stb) writes it, with
 * the choices as selects rather than branches: photos are mostly Paeth
 * rows, and the branches mispredicted on almost every byte. */
static int paeth(int a, int b, int c) {
    const int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    const int not_a = pb <= pc ? b : c, rest = pb <= pc ? pb : pc;
    return pa <= rest ? a : not_a;
}

/* Sub, Average and Paeth for bpp bytes per pixel, a constant where it is
 * inlined: the pixel to the left (a) and the one above it (c) stay in
 * registers, so each channel is one chain of arithmetic instead of a
 * store and a reload per byte. a = c = 0 before the first pixel is the
 * specification's rule for it. */
static inline void unfilter_left(int filter, uint8_t *cur, const uint8_t *prior, size_t stride,
                                 const int bpp) {
    int a[4] = {0, 0, 0, 0}, c[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < stride; i += (size_t)bpp)
        for (int k = 0; k < bpp; k++) {
            const int b = prior[i + k];
            const int pred = filter == 1 ? a[k] : filter == 3 ? (a[k] + b) >> 1 : paeth(a[k], b, c[k]);
            a[k] = cur[i + k] = (uint8_t)(cur[i + k] + pred);
            c[k] = b;
        }
}

/* Undoes one row's filter in place (prior: the row above, zeros for the
 * first, which is what stb's first-row filters amount to). -1 for a
 * filter type other than 0-4 (stb: "invalid filter"). */
static int unfilter(int filter, uint8_t *cur, const uint8_t *prior, size_t stride, int bpp) {
    if (filter == 0) return 0;
    if (filter == 2) {
        for (size_t i = 0; i < stride; i++) cur[i] = (uint8_t)(cur[i] + prior[i]);
        return 0;
    }
    if (filter > 4) return -1;
    switch (bpp) {
    case 1: unfilter_left(filter, cur, prior, stride, 1); break;
    case 2: unfilter_left(filter, cur, prior, stride, 2); break;
    case 3: unfilter_left(filter, cur, prior, stride, 3); break;
    default: unfilter_left(filter, cur, prior, stride, 4); break;
    }
    return 0;
}

/* One unfiltered row into RGB, as stb converts with 3 channels asked
 * for; -1 on a palette index past the palette. */
static int to_rgb(const png_header *h, const uint8_t *row, uint8_t *out) {
    const uint32_t w = h->width;
    if (h->palette_image) {
        for (uint32_t x = 0; x < w; x++) {
            if (row[x] >= h->palette_len) return -1;
            memcpy(out + 3 * (size_t)x, h->palette[row[x]], 3);
        }
    } else if (h->channels == 4) {
        for (uint32_t x = 0; x < w; x++) memcpy(out + 3 * (size_t)x, row + 4 * (size_t)x, 3);
    } else {
        for (uint32_t x = 0; x < w; x++)
            out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = row[(size_t)x * h->channels];
    }
    return 0;
}

/* Inflates, unfilters and converts every row into out->pixels. An RGB
 * row is inflated and unfiltered where it belongs in the image; the
 * others go through two row buffers. */
static int decode_rows(const uint8_t *b, size_t n, const png_header *h, data_image *out) {
    const size_t stride = (size_t)h->width * (size_t)h->channels;
    const int direct = h->channels == 3 && !h->palette_image;
    /* Two row buffers (unless direct), then a row of zeros. */
    uint8_t *rows = calloc(direct ? stride : 3 * stride, 1);
    idat_reader r = {b, n, h->first_chunk};
    z_stream strm;
    memset(&strm, 0, sizeof strm);
    uint8_t zhead[2];
    int ended = 0, ok = rows && inflateInit2(&strm, -15) == Z_OK;
    if (!ok) {
        free(rows);
        return 0;
    }
    /* The zlib header, checked as stb does ("bad zlib header", "no preset
     * dict", "bad compression"): raw inflate skips it. */
    for (int k = 0; ok && k < 2; k++) {
        if (strm.avail_in == 0 && !next_idat(&r, &strm)) ok = 0;
        else zhead[k] = *strm.next_in++, strm.avail_in--;
    }
    ok = ok && (zhead[0] * 256 + zhead[1]) % 31 == 0 && !(zhead[1] & 32) && (zhead[0] & 15) == 8;
    const uint8_t *prior = direct ? rows : rows + 2 * stride; /* zeros */
    for (uint32_t y = 0; ok && y < h->height; y++) {
        uint8_t filter;
        uint8_t *cur = direct ? out->pixels + y * stride : rows + (y & 1) * stride;
        ok = inflate_exact(&strm, &r, &filter, 1, &ended) == 0 &&
             inflate_exact(&strm, &r, cur, stride, &ended) == 0 &&
             unfilter(filter, cur, prior, stride, h->channels) == 0 &&
             (direct || to_rgb(h, cur, out->pixels + y * 3 * (size_t)h->width) == 0);
        prior = cur;
    }
    ok = ok && inflate_rest(&strm, &r, ended) == 0 && bytes_after_stream(&strm, &r) >= 2;
    inflateEnd(&strm);
    free(rows);
    return ok;
}

int data_png_plain_decode(const uint8_t *b, size_t n, int64_t max_pixels, data_image *out) {
    memset(out, 0, sizeof *out);
    png_header h;
    memset(&h, 0, sizeof h);
    if (!scan(b, n, &h) || (int64_t)h.width * h.height > max_pixels) return 0;
    const size_t bytes = (size_t)h.width * h.height * 3;
    if (!(out->pixels = malloc(bytes))) return 0;
    out->width = (int)h.width;
    out->height = (int)h.height;
    if (decode_rows(b, n, &h, out)) return 1;
    data_image_free(out);
    return 0;
}
