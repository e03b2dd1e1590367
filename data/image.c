/* image.c — decoding image files to 8-bit RGB the way PIL's
 * Image.open(path).convert('RGB') does.
 *
 * stb_image does the decoding (Debian's libstb). Where stb's conversion to
 * RGB differs from PIL's we convert ourselves; checked against Pillow 9.4:
 *
 *  - grey, grey+alpha, RGBA, palette (with or without tRNS): replicate grey,
 *    drop alpha without blending, look the palette up. stb with 3 requested
 *    channels does exactly this.
 *  - 16-bit PNG with colour (RGB, RGBA) or grey+alpha: PIL unpacks these
 *    into 8-bit modes by keeping the high byte; stb's 16 -> 8 conversion is
 *    also v >> 8, so they match.
 *  - 16-bit grey PNG: PIL opens it as mode "I" (32-bit integer) and
 *    convert('RGB') clamps the value to 0..255 (a value of 1000 becomes
 *    255, not 3). We load the 16-bit samples and clamp the same way.
 *  - binary PNM (P5/P6), decoded here rather than by stb because PIL scales
 *    by maxval and stb does not: 8-bit samples become round(v * 255 / maxval);
 *    16-bit RGB likewise; 16-bit grey becomes mode "I" holding
 *    round(v * 65535 / maxval), which convert('RGB') then clamps to 255.
 *    Rounding is half to even, as PIL's results show.
 *
 * Known differences from PIL (documented, not fixed):
 *  - JPEG: stb's IDCT, chroma upsampling and YCbCr conversion are not
 *    libjpeg-turbo's, so pixels differ by a few levels (see the tests for
 *    measured numbers). CMYK/YCCK JPEGs are converted by stb's formula.
 *  - GIF: transparent pixels of the first frame come out black, where PIL
 *    shows the palette colour of the transparent index.
 *  - ASCII PNM (P1-P3), binary bitmap PBM (P4), TIFF and Radiance HDR are
 *    refused.
 *
 * WebP (recognised by "RIFF....WEBP", whatever the name) is decoded by
 * libwebp, the library PIL's WebP plugin uses, so pixels are PIL's exactly,
 * lossy ones included (tests/test_webp.c). The canvas size is read from the
 * header and checked against the pixel cap before anything is decoded.
 * Alpha is dropped without blending, as for PNG and as convert('RGB') does.
 * An animated WebP gives its first frame, as a GIF does: composed on its
 * canvas by libwebpdemux's animation decoder, as PIL composes it (what
 * the first frame does not cover is transparent black, so black in RGB).
 *
 * Truncation: stb fills missing JPEG, BMP, GIF and TGA data with zeros
 * instead of failing, whereas PIL raises "image file is truncated". We check
 * those formats for completeness ourselves so a cut-off download is an
 * error, not a half-grey picture (GIF: the first frame's data blocks; TGA:
 * uncompressed pixel data; RLE TGA is left to stb). A JPEG must reach its
 * end-of-image marker (PIL raises without one) and every scan's data must
 * hold all its blocks (data/jpeg_scan.c). There we are stricter than PIL:
 * libjpeg only warns ("premature end of data segment") when the marker
 * comes early, and PIL loads the grey-filled picture.
 */
#include "data.h"
#include "jpeg_scan.h"
#include "png_plain.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image.h>
#include <webp/decode.h>
#include <webp/demux.h>

/* Encoded files larger than this are refused before reading. */
#define DATA_MAX_FILE_BYTES ((size_t)1 << 30)

void data_image_free(data_image *img) {
    if (!img) return;
    free(img->pixels);
    img->pixels = NULL;
    img->width = img->height = 0;
}

typedef enum image_format {
    FMT_UNKNOWN,
    FMT_PNG,
    FMT_JPEG,
    FMT_GIF,
    FMT_BMP,
    FMT_PSD,
    FMT_PNM,
    FMT_PNM_ASCII,
    FMT_PBM_BINARY,
    FMT_HDR,
    FMT_TIFF,
    FMT_WEBP
} image_format;

static const char *format_name(image_format f) {
    switch (f) {
    case FMT_PNG: return "PNG";
    case FMT_JPEG: return "JPEG";
    case FMT_GIF: return "GIF";
    case FMT_BMP: return "BMP";
    case FMT_PSD: return "PSD";
    case FMT_PNM: return "PNM";
    case FMT_PNM_ASCII: return "ASCII PNM";
    case FMT_PBM_BINARY: return "bitmap PBM (P4)";
    case FMT_HDR: return "Radiance HDR";
    case FMT_TIFF: return "TIFF";
    case FMT_WEBP: return "WebP";
    default: return "image";
    }
}

/* Where a JPEG's start-of-image marker ends (0: none). Like stb, any number
 * of 0xFF fill bytes may come before it, and junk after it. */
static size_t jpeg_soi_end(const uint8_t *b, size_t n) {
    size_t i = 0;
    while (i < n && b[i] == 0xFF) i++;
    return i > 0 && i < n && b[i] == 0xD8 ? i + 1 : 0;
}

/* Recognise the format from magic bytes, for precise messages. TGA has no
 * magic and stays FMT_UNKNOWN (stb still tries it). */
static image_format sniff_format(const uint8_t *b, size_t n) {
    if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) return FMT_PNG;
    if (jpeg_soi_end(b, n)) return FMT_JPEG;
    if (n >= 4 && memcmp(b, "GIF8", 4) == 0) return FMT_GIF;
    if (n >= 2 && b[0] == 'B' && b[1] == 'M') return FMT_BMP;
    if (n >= 4 && memcmp(b, "8BPS", 4) == 0) return FMT_PSD;
    if (n >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6')) return FMT_PNM;
    if (n >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '3') return FMT_PNM_ASCII;
    if (n >= 2 && b[0] == 'P' && b[1] == '4') return FMT_PBM_BINARY; /* binary, not ASCII */
    if (n >= 2 && b[0] == '#' && b[1] == '?') return FMT_HDR;
    if (n >= 4 && (memcmp(b, "II*\0", 4) == 0 || memcmp(b, "MM\0*", 4) == 0)) return FMT_TIFF;
    if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) return FMT_WEBP;
    return FMT_UNKNOWN;
}

/* A DHT segment's tables (seg: the payload after the length): every table
 * holds at most 256 codes. stb_image 2.27 (Debian's) does not check this and
 * writes past its 257-entry size table (found by fuzz_image once stb was
 * instrumented; fixed upstream in 2.28). Marks each table it defines in
 * *huffman (bit 4 * class + id). */
static int jpeg_dht_ok(const uint8_t *seg, size_t len, size_t avail, unsigned *huffman) {
    /* Bytes past the end of the file read as 0, as stb reads them. */
    for (size_t i = 0; i < len;) {
        const uint8_t q = i < avail ? seg[i] : 0;
        size_t codes = 0;
        for (size_t k = 1; k <= 16; k++) codes += i + k < avail ? seg[i + k] : 0;
        if (codes > 256) return 0;
        if ((q >> 4) <= 1 && (q & 15) <= 3) *huffman |= 1u << (4 * (q >> 4) + (q & 15));
        i += 17 + codes;
    }
    return 1; /* a length that does not add up is stb's own error */
}

/* Marks in *quant each quantisation table a DQT segment defines. */
static void jpeg_dqt_mark(const uint8_t *seg, size_t len, unsigned *quant) {
    for (size_t i = 0; i < len;) {
        const uint8_t q = seg[i];
        if ((q & 15) <= 3) *quant |= 1u << (q & 15);
        i += (q >> 4) ? 129 : 65;
    }
}

/* What a JPEG's frame header (SOF) says about its components. */
typedef struct {
    int seen, progressive, count;
    uint8_t id[4], quant[4];
} jpeg_frame;

static void jpeg_sof_read(const uint8_t *seg, size_t len, uint8_t marker, jpeg_frame *f) {
    if (f->seen || len < 6) return; /* stb reads the first frame header only */
    f->seen = 1;
    f->progressive = marker == 0xC2;
    f->count = 0;
    for (size_t c = 0; c < seg[5] && c < 4 && 6 + 3 * c + 2 < len; c++) {
        f->id[c] = seg[6 + 3 * c];
        f->quant[c] = seg[8 + 3 * c];
        f->count++;
    }
}

/* True when every table the scan (SOS payload) decodes with has been
 * defined. stb_image 2.27 allocates its decoder without clearing it, so a
 * scan naming a table no DHT defined reads uninitialised memory and then
 * indexes past its symbol tables with the garbage (an out-of-bounds read
 * found by fuzz_image; 2.28 bounds the index). A DQT missing for a
 * component would put heap garbage into the pixels. */
static int jpeg_scan_tables_defined(const uint8_t *seg, size_t len, const jpeg_frame *f,
                                    unsigned huffman, unsigned quant) {
    if (!f->seen || len < 1) return 1; /* stb refuses the file itself */
    const size_t n = seg[0];
    if (len < 1 + 2 * n + 3) return 1;
    const uint8_t spec_start = seg[1 + 2 * n], succ_high = seg[3 + 2 * n] >> 4;
    for (size_t s = 0; s < n; s++) {
        int c = 0;
        while (c < f->count && f->id[c] != seg[1 + 2 * s]) c++;
        if (c == f->count) return 1; /* no such component: stb's error */
        const unsigned dc = seg[2 + 2 * s] >> 4, ac = seg[2 + 2 * s] & 15;
        if (dc > 3 || ac > 3 || f->quant[c] > 3) return 1; /* stb's error */
        /* Progressive scans decode either DC (the first pass with the DC
         * table, refinements bit by bit) or AC coefficients (AC table). */
        const int uses_dc = f->progressive ? spec_start == 0 && succ_high == 0 : 1;
        const int uses_ac = f->progressive ? spec_start != 0 : 1;
        if (uses_dc && !(huffman & (1u << dc))) return 0;
        if (uses_ac && !(huffman & (1u << (4 + ac)))) return 0;
        if (!(quant & (1u << f->quant[c]))) return 0;
    }
    return 1;
}

/* Walks the JPEG marker stream: 1 when it reaches an end-of-image marker, 0
 * when truncated, -1 when stb 2.27 would read or write out of bounds on it
 * (*problem says why). Skips APPn payloads, whose EXIF thumbnails contain
 * their own EOI, and the entropy-coded data after each SOS. */
static int jpeg_check(const uint8_t *b, size_t n, const char **problem) {
    size_t i = jpeg_soi_end(b, n);
    unsigned huffman = 0, quant = 0;
    jpeg_frame frame = {0};
    while (i < n) {
        if (b[i] != 0xFF) { /* stray bytes before a marker: libjpeg skips them too */
            i++;
            continue;
        }
        while (i < n && b[i] == 0xFF) i++; /* fill bytes */
        if (i >= n) return 0;
        uint8_t m = b[i++];
        if (m == 0xD9) return 1;
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7) || m == 0x00) continue;
        if (i + 2 > n) return 0;
        size_t len = ((size_t)b[i] << 8) | b[i + 1];
        if (len < 2) return 0;
        const uint8_t *seg = b + i + 2;
        const size_t whole = i + len <= n ? len - 2 : 0; /* segments cut short are stb's error */
        if (m == 0xC4 && !jpeg_dht_ok(seg, len - 2, i + 2 <= n ? n - i - 2 : 0, &huffman)) {
            *problem = "Huffman table with over 256 codes";
            return -1;
        }
        if (m == 0xDB) jpeg_dqt_mark(seg, whole, &quant);
        if (m == 0xC0 || m == 0xC1 || m == 0xC2) jpeg_sof_read(seg, whole, m, &frame);
        if (m == 0xDA && !jpeg_scan_tables_defined(seg, whole, &frame, huffman, quant)) {
            *problem = "a scan uses a Huffman or quantisation table the file never defines";
            return -1;
        }
        i += len;
        if (m != 0xDA) continue;
        /* Entropy-coded data: runs until a marker that is not a stuffed
         * zero or a restart marker. */
        while (i + 1 < n) {
            if (b[i] == 0xFF && b[i + 1] != 0x00 && b[i + 1] != 0xFF &&
                !(b[i + 1] >= 0xD0 && b[i + 1] <= 0xD7))
                break;
            i++;
        }
        if (i + 1 >= n) return 0;
    }
    return 0;
}

/* For uncompressed BMPs, true when the file holds all the pixel rows its
 * header promises. RLE (compression 1, 2) is left to stb, which refuses it;
 * stb reads every other compression value as uncompressed rows, so those
 * are checked too (a junk value once let a 54-byte file decode as 5 x 186879
 * zero pixels: found by fuzz_image). */
static int bmp_is_complete(const uint8_t *b, size_t n) {
    if (n < 34) return 0;
    uint32_t offset = base_le32(b + 10), header = base_le32(b + 14);
    if (header < 40) return 1; /* OS/2 core header: not checked */
    int64_t w = (int32_t)base_le32(b + 18), h = (int32_t)base_le32(b + 22);
    uint32_t bpp = (uint32_t)b[28] | ((uint32_t)b[29] << 8);
    uint32_t compression = base_le32(b + 30);
    if (compression == 1 || compression == 2) return 1;
    if (h < 0) h = -h;
    int64_t row_bytes = ((w * bpp + 31) / 32) * 4;
    return (int64_t)offset + row_bytes * h <= (int64_t)n;
}

/* For GIF, true when the block structure up to the end of the first
 * image's data sub-blocks lies inside the file. */
static int gif_is_complete(const uint8_t *b, size_t n) {
    if (n < 13) return 0;
    size_t i = 13;
    if (b[10] & 0x80) i += (size_t)3 << ((b[10] & 7) + 1); /* global colour table */
    while (i < n) {
        const uint8_t block = b[i++];
        if (block == 0x21) { /* extension: label, then sub-blocks */
            i++;
        } else if (block == 0x2C) { /* image: descriptor, colour table, LZW code size */
            if (i + 9 > n) return 0;
            const uint8_t flags = b[i + 8];
            i += 9;
            if (flags & 0x80) i += (size_t)3 << ((flags & 7) + 1);
            i++;
        } else {
            return block != 0x3B; /* a trailer before any image; else left to stb */
        }
        for (;;) { /* data sub-blocks, ended by an empty one */
            if (i >= n) return 0;
            const uint8_t len = b[i++];
            if (len == 0) break;
            i += len;
        }
        if (block == 0x2C) return 1;
    }
    return 0;
}

/* TGA has no magic number: what stb accepts as one when nothing else matched. */
static int looks_like_tga(const uint8_t *b, size_t n) {
    return n >= 18 && b[1] <= 1 && (b[2] == 1 || b[2] == 2 || b[2] == 3 || b[2] == 9 ||
                                    b[2] == 10 || b[2] == 11);
}

/* For uncompressed TGA, true when the file holds every pixel its header
 * promises. */
static int tga_is_complete(const uint8_t *b, size_t n) {
    if (b[2] > 3) return 1; /* RLE: not checked */
    const size_t id_len = b[0], cmap_len = (size_t)b[5] | (size_t)b[6] << 8;
    const size_t cmap_bytes = b[1] ? cmap_len * (((size_t)b[7] + 7) / 8) : 0;
    const size_t w = (size_t)b[12] | (size_t)b[13] << 8, h = (size_t)b[14] | (size_t)b[15] << 8;
    return 18 + id_len + cmap_bytes + w * h * (((size_t)b[16] + 7) / 8) <= n;
}

static base_status check_dimensions(const char *name, int64_t w, int64_t h, int64_t max_pixels,
                                   base_error *err) {
    if (w <= 0 || h <= 0)
        return base_error_set(err, BASE_E_FORMAT, "%s: invalid image size %lldx%lld", name,
                             (long long)w, (long long)h);
    /* Sides up to 2^32 (PNG): compare by division, since w * h can
     * overflow int64 (found by fuzz_image). */
    if (w <= max_pixels / h) return BASE_OK;
    const double px = (double)w * (double)h;
    if (max_pixels % 1000000 == 0)
        return base_error_set(err, BASE_E_LIMIT,
                             "%s: %lldx%lld = %.*f megapixels exceeds the limit of %lld megapixels",
                             name, (long long)w, (long long)h, fmod(px, 1e6) != 0 ? 1 : 0, px / 1e6,
                             (long long)(max_pixels / 1000000));
    return base_error_set(err, BASE_E_LIMIT, "%s: %lldx%lld = %.0f pixels exceeds the limit of %lld pixels",
                         name, (long long)w, (long long)h, px, (long long)max_pixels);
}

static base_status alloc_image(const char *name, int w, int h, data_image *out, base_error *err) {
    out->pixels = malloc((size_t)w * (size_t)h * 3);
    if (!out->pixels)
        return base_error_set(err, BASE_E_NOMEM, "%s: out of memory for %dx%d pixels", name, w, h);
    out->width = w;
    out->height = h;
    return BASE_OK;
}

/* ---- binary PNM (P5 grey, P6 RGB) ---- */

static int pnm_space(uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Reads one header integer, skipping whitespace and # comments. */
static int pnm_int(const uint8_t *b, size_t n, size_t *pos, long *value) {
    size_t i = *pos;
    for (;;) {
        while (i < n && pnm_space(b[i])) i++;
        if (i < n && b[i] == '#') {
            while (i < n && b[i] != '\n' && b[i] != '\r') i++;
            continue;
        }
        break;
    }
    if (i >= n || b[i] < '0' || b[i] > '9') return 0;
    long v = 0;
    while (i < n && b[i] >= '0' && b[i] <= '9') {
        if (v > 100000000) return 0;
        v = v * 10 + (b[i] - '0');
        i++;
    }
    *pos = i;
    *value = v;
    return 1;
}

static base_status decode_pnm(const uint8_t *b, size_t n, const char *name, int64_t max_pixels,
                             data_image *out, base_error *err) {
    int channels = b[1] == '6' ? 3 : 1;
    size_t pos = 2;
    long w, h, maxval;
    if (!pnm_int(b, n, &pos, &w) || !pnm_int(b, n, &pos, &h) || !pnm_int(b, n, &pos, &maxval) ||
        pos >= n || !pnm_space(b[pos]))
        return base_error_set(err, BASE_E_FORMAT, "%s: corrupt PNM header", name);
    pos++; /* exactly one whitespace byte ends the header */
    if (maxval < 1 || maxval > 65535)
        return base_error_set(err, BASE_E_FORMAT, "%s: PNM maxval %ld out of range", name, maxval);
    base_status st = check_dimensions(name, w, h, max_pixels, err);
    if (st != BASE_OK) return st;
    size_t bytes_per_sample = maxval > 255 ? 2 : 1;
    size_t samples = (size_t)w * (size_t)h * (size_t)channels;
    if (n - pos < samples * bytes_per_sample)
        return base_error_set(err, BASE_E_FORMAT, "%s: truncated PNM (%zu of %zu pixel bytes)", name,
                             n - pos, samples * bytes_per_sample);
    st = alloc_image(name, (int)w, (int)h, out, err);
    if (st != BASE_OK) return st;
    const uint8_t *p = b + pos;
    /* Grey with 16-bit samples goes through PIL's 32-bit "I" mode, i.e. it is
     * scaled to 0..65535 and then clamped; everything else scales to 0..255. */
    double target = (channels == 1 && maxval > 255) ? 65535.0 : 255.0;
    uint8_t *dst = out->pixels;
    for (size_t i = 0; i < samples; i++) {
        long v = bytes_per_sample == 2 ? ((long)p[2 * i] << 8) | p[2 * i + 1] : p[i];
        double s = nearbyint((double)v * target / (double)maxval);
        uint8_t q = (uint8_t)(s > 255.0 ? 255.0 : s);
        if (channels == 1) {
            dst[3 * i] = dst[3 * i + 1] = dst[3 * i + 2] = q;
        } else {
            dst[i] = q;
        }
    }
    return BASE_OK;
}

base_status data_image_load_memory(const void *bytes, size_t size, const char *name,
                                  data_image *out, base_error *err) {
    return data_image_load_memory_capped(bytes, size, name, 0, out, err);
}

/* stb's reason for its last refusal, never empty in a message. */
static const char *stb_reason(void) {
    const char *reason = stbi_failure_reason();
    return reason && reason[0] ? reason : "no reason given";
}

/* A copy of the PNG without its empty IDAT chunks, or NULL when it has none
 * (or memory is short: stb then sees the original). An empty IDAT is legal,
 * but when it comes first stb 2.27 reads it to a NULL buffer plus zero, an
 * undefined pointer operation (found by fuzz_image with stb instrumented);
 * it carries no data, so dropping it changes nothing else. */
static uint8_t *png_without_empty_idat(const uint8_t *b, size_t n, size_t *out_size) {
    int found = 0;
    for (size_t i = 8; i + 12 <= n && base_be32(b + i) <= n - i - 12; i += 12 + base_be32(b + i))
        if (base_be32(b + i) == 0 && memcmp(b + i + 4, "IDAT", 4) == 0) found = 1;
    if (!found) return NULL;
    uint8_t *copy = malloc(n);
    if (!copy) return NULL;
    memcpy(copy, b, 8);
    size_t i = 8, o = 8;
    for (; i + 12 <= n && base_be32(b + i) <= n - i - 12; i += 12 + base_be32(b + i)) {
        const size_t chunk = 12 + base_be32(b + i);
        if (chunk == 12 && memcmp(b + i + 4, "IDAT", 4) == 0) continue;
        memcpy(copy + o, b + i, chunk);
        o += chunk;
    }
    memcpy(copy + o, b + i, n - i); /* a truncated last chunk, as it was */
    *out_size = o + (n - i);
    return copy;
}

static base_status decode_with_stb(const uint8_t *b, size_t size, image_format fmt, const char *name,
                                  int64_t max_pixels, data_image *out, base_error *err);

/* The first chunk before IEND whose declared length runs past the end of
 * the file, or 0. stb 2.27 grows its IDAT buffer to a chunk's declared
 * length before reading it, so a 348-byte file claiming a 1.2 GB IDAT made
 * it reallocate 2 GiB (found by fuzz_image); such a file is truncated. */
static size_t png_chunk_overrun(const uint8_t *b, size_t n, uint32_t *declared) {
    for (size_t i = 8; i + 8 <= n; i += 12 + (size_t)base_be32(b + i)) {
        if (memcmp(b + i + 4, "IEND", 4) == 0) return 0;
        if (base_be32(b + i) > n - i - 8) {
            *declared = base_be32(b + i);
            return i;
        }
        if (n - i - 8 - base_be32(b + i) < 4) return 0; /* no CRC: stb's own refusal */
    }
    return 0;
}

/* libwebp's reason for a refusal, for messages. */
static const char *webp_reason(VP8StatusCode status) {
    switch (status) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt data";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "truncated";
    default: return "cannot decode";
    }
}

/* An animated WebP's first frame on its canvas (see the top of the file). */
static base_status decode_webp_first_frame(const uint8_t *b, size_t size, const char *name,
                                          data_image *out, base_error *err) {
    WebPAnimDecoderOptions options;
    if (!WebPAnimDecoderOptionsInit(&options))
        return base_error_set(err, BASE_E_UNSUPPORTED, "%s: libwebp version mismatch", name);
    options.color_mode = MODE_RGBA; /* not premultiplied: alpha is just dropped */
    options.use_threads = 0;
    const WebPData data = {b, size};
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&data, &options);
    if (!dec) return base_error_set(err, BASE_E_FORMAT, "%s: corrupt or truncated animated WebP", name);
    WebPAnimInfo info;
    uint8_t *rgba = NULL;
    int timestamp;
    base_status st = BASE_OK;
    if (!WebPAnimDecoderGetInfo(dec, &info) || !WebPAnimDecoderGetNext(dec, &rgba, &timestamp))
        st = base_error_set(err, BASE_E_FORMAT, "%s: corrupt or truncated animated WebP (first frame)",
                           name);
    else if ((int)info.canvas_width != out->width || (int)info.canvas_height != out->height)
        st = base_error_set(err, BASE_E_FORMAT, "%s: inconsistent WebP size", name);
    const size_t n = (size_t)out->width * (size_t)out->height;
    for (size_t i = 0; st == BASE_OK && i < n; i++) memcpy(out->pixels + 3 * i, rgba + 4 * i, 3);
    WebPAnimDecoderDelete(dec);
    return st;
}

static base_status decode_webp(const uint8_t *b, size_t size, const char *name, int64_t max_pixels,
                              data_image *out, base_error *err) {
    WebPBitstreamFeatures features;
    const VP8StatusCode status = WebPGetFeatures(b, size, &features);
    if (status != VP8_STATUS_OK)
        return base_error_set(err, status == VP8_STATUS_UNSUPPORTED_FEATURE ? BASE_E_UNSUPPORTED : BASE_E_FORMAT,
                             "%s: %s WebP header", name,
                             status == VP8_STATUS_NOT_ENOUGH_DATA ? "truncated" : webp_reason(status));
    /* The header's size (the canvas, for an animation) before any pixel. */
    base_status st = check_dimensions(name, features.width, features.height, max_pixels, err);
    if (st != BASE_OK) return st;
    if ((st = alloc_image(name, features.width, features.height, out, err)) != BASE_OK) return st;
    if (features.has_animation) st = decode_webp_first_frame(b, size, name, out, err);
    else {
        /* Straight into our pixels: RGB, alpha dropped. */
        WebPDecoderConfig config;
        if (!WebPInitDecoderConfig(&config)) {
            st = base_error_set(err, BASE_E_UNSUPPORTED, "%s: libwebp version mismatch", name);
        } else {
            config.output.colorspace = MODE_RGB;
            config.output.is_external_memory = 1;
            config.output.u.RGBA.rgba = out->pixels;
            config.output.u.RGBA.stride = 3 * out->width;
            config.output.u.RGBA.size = (size_t)out->width * (size_t)out->height * 3;
            const VP8StatusCode decoded = WebPDecode(b, size, &config);
            if (decoded != VP8_STATUS_OK)
                st = base_error_set(err, BASE_E_FORMAT, "%s: %s WebP data", name,
                                   decoded == VP8_STATUS_NOT_ENOUGH_DATA ? "truncated"
                                                                         : webp_reason(decoded));
            else if (config.output.width != out->width || config.output.height != out->height)
                st = base_error_set(err, BASE_E_FORMAT, "%s: inconsistent WebP size", name);
        }
    }
    if (st != BASE_OK) data_image_free(out);
    return st;
}

base_status data_image_load_memory_capped(const void *bytes, size_t size, const char *name,
                                         int64_t max_pixels, data_image *out, base_error *err) {
    if (max_pixels <= 0) max_pixels = DATA_MAX_PIXELS;
    if (!name) name = "(memory)";
    if (!out) return base_error_set(err, BASE_E_ARG, "%s: no output image", name);
    memset(out, 0, sizeof *out);
    if (!bytes || size == 0) return base_error_set(err, BASE_E_FORMAT, "%s: empty file", name);
    if (size > (size_t)INT_MAX)
        return base_error_set(err, BASE_E_LIMIT, "%s: file of %zu bytes is too large", name, size);
    const uint8_t *b = bytes;
    image_format fmt = sniff_format(b, size);
    switch (fmt) {
    case FMT_PNM: return decode_pnm(b, size, name, max_pixels, out, err);
    case FMT_WEBP: return decode_webp(b, size, name, max_pixels, out, err);
    case FMT_PNM_ASCII:
    case FMT_PBM_BINARY:
    case FMT_HDR:
    case FMT_TIFF:
        return base_error_set(err, BASE_E_UNSUPPORTED, "%s: %s images are not supported", name,
                             format_name(fmt));
    default: break;
    }
    /* Plain 8-bit PNGs (most photos) decode faster without stb, to the
     * same pixels (png_plain.h); the rest go on to stb. */
    if (fmt == FMT_PNG && data_png_plain_decode(b, size, max_pixels, out)) return BASE_OK;
    if (fmt == FMT_PNG) {
        size_t clean_size;
        uint8_t *clean = png_without_empty_idat(b, size, &clean_size);
        if (clean) {
            base_status st = decode_with_stb(clean, clean_size, fmt, name, max_pixels, out, err);
            free(clean);
            return st;
        }
    }
    return decode_with_stb(b, size, fmt, name, max_pixels, out, err);
}

/* A 16-bit grey image of w x h (stb's header) as RGB, clamped as PIL's
 * "I" -> "RGB" conversion does. */
static base_status decode_grey16(const uint8_t *b, size_t size, image_format fmt, const char *name,
                                int w, int h, data_image *out, base_error *err) {
    int dw = 0, dh = 0, dcomp = 0;
    stbi_us *grey = stbi_load_16_from_memory(b, (int)size, &dw, &dh, &dcomp, 1);
    if (!grey)
        return base_error_set(err, BASE_E_FORMAT, "%s: corrupt %s data (%s)", name,
                             format_name(fmt), stb_reason());
    if (dw != w || dh != h) {
        stbi_image_free(grey);
        return base_error_set(err, BASE_E_FORMAT, "%s: inconsistent %s size", name,
                             format_name(fmt));
    }
    base_status st = alloc_image(name, w, h, out, err);
    if (st == BASE_OK) {
        size_t n = (size_t)w * (size_t)h;
        for (size_t i = 0; i < n; i++) {
            uint8_t q = grey[i] > 255 ? 255 : (uint8_t)grey[i];
            out->pixels[3 * i] = out->pixels[3 * i + 1] = out->pixels[3 * i + 2] = q;
        }
    }
    stbi_image_free(grey);
    return st;
}

/* What stb 2.27 would mishandle in a PNG, checked first: a size beyond
 * 2^30 bytes of pixels (stb says only "unknown image type") and a chunk
 * longer than the file (png_chunk_overrun). */
static base_status png_check_before_stb(const uint8_t *b, size_t size, const char *name,
                                        int64_t max_pixels, base_error *err) {
    if (size < 24 || memcmp(b + 12, "IHDR", 4) != 0) return BASE_OK;
    base_status st = check_dimensions(name, base_be32(b + 16), base_be32(b + 20), max_pixels, err);
    if (st != BASE_OK) return st;
    uint32_t declared = 0;
    const size_t at = png_chunk_overrun(b, size, &declared);
    if (!at) return BASE_OK;
    char type[5] = "????";
    for (int k = 0; k < 4; k++)
        if (isalpha(b[at + 4 + k])) type[k] = (char)b[at + 4 + k];
    return base_error_set(err, BASE_E_FORMAT,
                          "%s: truncated PNG (the %s chunk at byte %zu declares %u bytes, %zu remain)",
                          name, type, at, declared, size - at - 8);
}

/* Everything stb decodes (PNG, JPEG, GIF, BMP, TGA, PSD), after our own
 * checks of what stb 2.27 would mishandle. */
static base_status decode_with_stb(const uint8_t *b, size_t size, image_format fmt, const char *name,
                                  int64_t max_pixels, data_image *out, base_error *err) {
    const base_status png = fmt == FMT_PNG ? png_check_before_stb(b, size, name, max_pixels, err) : BASE_OK;
    if (png != BASE_OK) return png;
    /* Before stb sees the file at all: its header reader builds Huffman
     * tables too. */
    const char *jpeg_problem = "";
    const int jpeg_state = fmt == FMT_JPEG ? jpeg_check(b, size, &jpeg_problem) : 1;
    if (jpeg_state < 0) return base_error_set(err, BASE_E_FORMAT, "%s: corrupt JPEG (%s)", name, jpeg_problem);
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_memory(b, (int)size, &w, &h, &comp)) {
        if (fmt == FMT_UNKNOWN)
            return base_error_set(err, BASE_E_FORMAT, "%s: not an image (unknown format)", name);
        return base_error_set(err, BASE_E_FORMAT, "%s: corrupt or truncated %s header (%s)", name,
                             format_name(fmt), stb_reason());
    }
    /* stb 2.27's BMP info hands back the header's height as stored: a
     * top-down BMP (valid, PIL opens it) stores it negated. Its decoder
     * takes the absolute value and flips, so the size is the magnitude. */
    if (fmt == FMT_BMP && h < 0 && h != INT_MIN) h = -h;
    base_status st = check_dimensions(name, w, h, max_pixels, err);
    if (st != BASE_OK) return st;
    if (jpeg_state == 0)
        return base_error_set(err, BASE_E_FORMAT, "%s: truncated JPEG (no end-of-image marker)", name);
    if (fmt == FMT_JPEG) {
        /* Before the pixels are allocated: an end-of-image marker after a
         * few bytes of scan data would otherwise decode to a full-size grey
         * picture (data/jpeg_scan.h). */
        char detail[160];
        const data_jpeg_scans scans = data_jpeg_scans_check(b, size, detail, sizeof detail);
        if (scans == DATA_JPEG_SCANS_TRUNCATED)
            return base_error_set(err, BASE_E_FORMAT, "%s: truncated JPEG (%s)", name, detail);
        if (scans == DATA_JPEG_SCANS_NOMEM)
            return base_error_set(err, BASE_E_NOMEM, "%s: out of memory checking the JPEG data", name);
    }
    if (fmt == FMT_BMP && !bmp_is_complete(b, size))
        return base_error_set(err, BASE_E_FORMAT, "%s: truncated BMP (pixel data missing)", name);
    if (fmt == FMT_GIF && !gif_is_complete(b, size))
        return base_error_set(err, BASE_E_FORMAT, "%s: truncated GIF (image data missing)", name);
    if (fmt == FMT_UNKNOWN && looks_like_tga(b, size) && !tga_is_complete(b, size))
        return base_error_set(err, BASE_E_FORMAT, "%s: truncated TGA (pixel data missing)", name);

    if (comp == 1 && stbi_is_16_bit_from_memory(b, (int)size))
        return decode_grey16(b, size, fmt, name, w, h, out, err);
    int dw = 0, dh = 0, dcomp = 0;

    /* A JPEG is asked for 4 channels: stb converts YCbCr to RGB with SIMD
     * only then, by the same arithmetic as its scalar 3-channel path (its
     * comment says so; tests/test_preprocess.c checks the bytes), 10-30%
     * faster. */
    const int channels = fmt == FMT_JPEG ? 4 : 3;
    stbi_uc *px = stbi_load_from_memory(b, (int)size, &dw, &dh, &dcomp, channels);
    if (!px)
        return base_error_set(err, BASE_E_FORMAT, "%s: corrupt or truncated %s data (%s)", name,
                             format_name(fmt), stb_reason());
    if (dw != w || dh != h) {
        stbi_image_free(px);
        return base_error_set(err, BASE_E_FORMAT, "%s: inconsistent %s size", name,
                             format_name(fmt));
    }
    /* stb's pixels become the image: stbi_image_free is free() (Debian's
     * libstb and tests/fuzz/stb_image_impl.c use stb's default allocator),
     * and a copy would cost fresh pages as well as the copying. */
    const size_t n = (size_t)w * (size_t)h;
    if (channels == 4) {
        /* Packed in place, 4 bytes read and 4 written per pixel: the
         * fourth byte written lands on one already read (3i + 3 < 4i + 4). */
        for (size_t i = 0; i < n; i++) {
            uint32_t v;
            memcpy(&v, px + 4 * i, 4);
            memcpy(px + 3 * i, &v, 4);
        }
        /* Not shrunk: glibc would give the tail back (mremap) and take
         * fresh pages for the next image's buffer, a page fault per 4 KiB. */
    }
    out->pixels = px;
    out->width = w;
    out->height = h;
    return BASE_OK;
}

/* Opens a file to read, refusing directories, anything but regular files
 * and oversized files. Never blocks on opening: a FIFO without a
 * writer would wait forever in open(2) and hang a whole batch run, so the
 * file is opened with O_NONBLOCK and what was opened is checked with fstat
 * (the name could be swapped between a stat and the open). */
static base_status open_regular_file(const char *path, FILE **file, off_t *file_size, base_error *err) {
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        const int e = errno;
        struct stat sb;
        /* A socket cannot be opened at all (ENXIO): say what it is. */
        if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode) && !S_ISDIR(sb.st_mode))
            return base_error_set(err, BASE_E_IO, "%s: not a regular file (%s)", path,
                                 base_file_kind(sb.st_mode));
        return base_error_set(err, BASE_E_IO, "%s: cannot open (%s)", path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return base_error_set(err, BASE_E_IO, "%s: cannot stat (%s)", path, strerror(e));
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        return base_error_set(err, BASE_E_IO, "%s: is a directory, not an image file", path);
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return base_error_set(err, BASE_E_IO, "%s: not a regular file (%s)", path,
                             base_file_kind(sb.st_mode));
    }
    if ((uint64_t)sb.st_size > DATA_MAX_FILE_BYTES) {
        close(fd);
        return base_error_set(err, BASE_E_LIMIT, "%s: file of %lld bytes exceeds the limit of %zu MiB",
                             path, (long long)sb.st_size, DATA_MAX_FILE_BYTES >> 20);
    }
    FILE *f = base_fdopen_blocking(fd);
    if (!f) {
        int e = errno;
        close(fd);
        return base_error_set(err, BASE_E_IO, "%s: cannot open (%s)", path, strerror(e));
    }
    *file = f;
    *file_size = sb.st_size;
    return BASE_OK;
}

/* Reads f to its end into *buf_out (NULL when out of memory). */
static base_status read_growing(FILE *f, const char *path, off_t file_size, uint8_t **buf_out,
                               size_t *len_out, base_error *err) {
    /* Grow as we read, so files that change size meanwhile work too. */
    size_t cap = file_size > 0 ? (size_t)file_size + 1 : 65536;
    uint8_t *buf = malloc(cap);
    size_t len = 0;
    base_status st = BASE_OK;
    while (buf) {
        if (len == cap) {
            if (cap >= DATA_MAX_FILE_BYTES) {
                st = base_error_set(err, BASE_E_LIMIT, "%s: file exceeds the limit of %zu MiB",
                                   path, DATA_MAX_FILE_BYTES >> 20);
                break;
            }
            size_t grown = cap * 2;
            uint8_t *nb = realloc(buf, grown);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap = grown;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                st = base_error_set(err, BASE_E_IO, "%s: read error (%s)", path, strerror(errno));
            break;
        }
    }
    *buf_out = buf;
    *len_out = len;
    return st;
}

/* The whole of a regular file (see open_regular_file); an empty one is refused. */
static base_status read_file(const char *path, uint8_t **bytes, size_t *size, base_error *err) {
    *bytes = NULL;
    *size = 0;
    FILE *f = NULL;
    off_t file_size = 0;
    base_status st = open_regular_file(path, &f, &file_size, err);
    if (st != BASE_OK) return st;
    uint8_t *buf;
    size_t len;
    st = read_growing(f, path, file_size, &buf, &len, err);
    fclose(f);
    if (!buf) return base_error_set(err, BASE_E_NOMEM, "%s: out of memory reading the file", path);
    if (st != BASE_OK) {
        free(buf);
        return st;
    }
    if (len == 0) {
        free(buf);
        return base_error_set(err, BASE_E_FORMAT, "%s: empty file", path);
    }
    *bytes = buf;
    *size = len;
    return BASE_OK;
}

base_status data_image_load(const char *path, data_image *out, base_error *err) {
    return data_image_load_capped(path, 0, out, err);
}

base_status data_image_load_capped(const char *path, int64_t max_pixels, data_image *out,
                                  base_error *err) {
    if (out) memset(out, 0, sizeof *out);
    if (!path) return base_error_set(err, BASE_E_ARG, "no image path given");
    if (!out) return base_error_set(err, BASE_E_ARG, "%s: no output image", path);
    uint8_t *bytes;
    size_t size;
    base_status st = read_file(path, &bytes, &size, err);
    if (st != BASE_OK) return st;
    st = data_image_load_memory_capped(bytes, size, path, max_pixels, out, err);
    free(bytes);
    return st;
}

/* ---- what a decode takes, from the header alone (vit serve's budget) ---- */

/* Bytes per declared pixel that decoding (and preprocessing) holds at its
 * peak, measured by bench/decode_memory.py on 4000 x 4000 images of each
 * variant (bench/README.md) and rounded up by at least one byte: stb's
 * output and our RGB copy live together, PNG adds its inflated rows,
 * progressive JPEG its coefficients, libwebp's animation decoder two RGBA
 * canvases, stb's GIF reader three screen-sized buffers. */
enum {
    PER_PIXEL_PNM = 4,              /* our RGB only: 2.9 */
    PER_PIXEL_WEBP_LOSSY = 6,       /* 3.0, with alpha 4.5 */
    PER_PIXEL_WEBP_LOSSLESS = 8,    /* ARGB + RGB: 7.0 */
    PER_PIXEL_WEBP_ANIMATED = 12,   /* two RGBA canvases + RGB: 11.0 */
    PER_PIXEL_GIF = 10,             /* 9 allocated (8.0 touched) */
    PER_PIXEL_BMP = 7,              /* 6.0 */
    PER_PIXEL_OTHER = 8             /* TGA, PSD: 7.0 */
};

/* PNG: the inflated rows and stb's image of c channels of d bytes each
 * live together (Adam7: plus a pass), then stb's 3-channel copy and ours;
 * palette images count as RGBA (their tRNS is not looked for).
 * Measured: RGB 8 6.0, RGBA 16 16.0, RGBA 16 interlaced 20.1. A plain
 * 8-bit PNG (png_plain.h) takes only its RGB image, 3 bytes, but one whose
 * data png_plain refuses goes on to stb, so stb's peak is what counts. */
static size_t png_per_pixel(const uint8_t *ihdr) {
    static const int CHANNELS[7] = {1, 0, 3, 4, 2, 0, 4};
    const int depth_bytes = ihdr[8] == 16 ? 2 : 1;
    const int channels = ihdr[9] < 7 && CHANNELS[ihdr[9]] ? CHANNELS[ihdr[9]] : 4;
    const size_t n = (size_t)(ihdr[12] ? 3 : 2) * (size_t)channels * (size_t)depth_bytes;
    return (n > 6 ? n : 6) + 1;
}

/* JPEG: the frame header's size and stb's planes (one byte per component
 * and pixel) and its RGBA output, which becomes our RGB in place
 * (decode_with_stb); a progressive file keeps two bytes of coefficients
 * per component and pixel besides. Measured with RGB output and a copy
 * (one byte less): baseline 4:4:4 6.0, CMYK 7.0, progressive 4:4:4 12.0,
 * progressive CMYK 15.0.
 * Walks the segments itself, without stb: stb's header reader builds the
 * Huffman tables that jpeg_check guards it from. */
static base_status probe_jpeg(const uint8_t *b, size_t n, const char *name, int64_t *w, int64_t *h,
                             size_t *per_pixel, base_error *err) {
    size_t i = jpeg_soi_end(b, n);
    while (i + 4 <= n) {
        if (b[i] != 0xFF) {
            i++;
            continue;
        }
        while (i < n && b[i] == 0xFF) i++;
        if (i + 3 > n) break;
        const uint8_t m = b[i++];
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7) || m == 0x00) continue;
        if (m == 0xDA || m == 0xD9) break; /* a scan or the end before any frame header */
        const size_t len = ((size_t)b[i] << 8) | b[i + 1];
        const int sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
        if (sof && len >= 8 && i + 8 <= n) {
            *h = ((int64_t)b[i + 3] << 8) | b[i + 4];
            *w = ((int64_t)b[i + 5] << 8) | b[i + 6];
            const size_t components = b[i + 7] ? b[i + 7] : 4;
            const int progressive = m == 0xC2 || m == 0xC6 || m == 0xCA || m == 0xCE;
            const size_t bytes = progressive ? 3 * components + 4 : components + 4;
            *per_pixel = (bytes > 6 ? bytes : 6) + 1;
            return BASE_OK;
        }
        i += len;
    }
    return base_error_set(err, BASE_E_FORMAT, "%s: corrupt or truncated JPEG header (no frame header)",
                         name);
}

/* Everything else stb reads: its own header reader, as decode_with_stb. */
static base_status probe_stb(const uint8_t *b, size_t size, image_format fmt, const char *name,
                            int64_t *w, int64_t *h, size_t *per_pixel, base_error *err) {
    if (fmt == FMT_PNG && size >= 33 && memcmp(b + 12, "IHDR", 4) == 0) {
        *w = base_be32(b + 16);
        *h = base_be32(b + 20);
        *per_pixel = png_per_pixel(b + 16);
        return BASE_OK;
    }
    int iw = 0, ih = 0, comp = 0;
    if (!stbi_info_from_memory(b, (int)size, &iw, &ih, &comp)) {
        if (fmt == FMT_UNKNOWN)
            return base_error_set(err, BASE_E_FORMAT, "%s: not an image (unknown format)", name);
        return base_error_set(err, BASE_E_FORMAT, "%s: corrupt or truncated %s header (%s)", name,
                             format_name(fmt), stb_reason());
    }
    if (fmt == FMT_BMP && ih < 0 && ih != INT_MIN) ih = -ih; /* top-down, as decode_with_stb */
    *w = iw;
    *h = ih;
    *per_pixel = fmt == FMT_GIF ? PER_PIXEL_GIF : fmt == FMT_BMP ? PER_PIXEL_BMP : PER_PIXEL_OTHER;
    return BASE_OK;
}

base_status data_image_probe_memory(const void *bytes, size_t size, const char *name,
                                   int64_t max_pixels, data_image_probe *out, base_error *err) {
    if (max_pixels <= 0) max_pixels = DATA_MAX_PIXELS;
    if (!name) name = "(memory)";
    if (!out) return base_error_set(err, BASE_E_ARG, "%s: no probe result", name);
    memset(out, 0, sizeof *out);
    if (!bytes || size == 0) return base_error_set(err, BASE_E_FORMAT, "%s: empty file", name);
    if (size > (size_t)INT_MAX)
        return base_error_set(err, BASE_E_LIMIT, "%s: file of %zu bytes is too large", name, size);
    const uint8_t *b = bytes;
    const image_format fmt = sniff_format(b, size);
    int64_t w = 0, h = 0;
    size_t per_pixel = PER_PIXEL_OTHER;
    base_status st = BASE_OK;
    if (fmt == FMT_PNM_ASCII || fmt == FMT_PBM_BINARY || fmt == FMT_HDR || fmt == FMT_TIFF)
        return base_error_set(err, BASE_E_UNSUPPORTED, "%s: %s images are not supported", name,
                             format_name(fmt));
    if (fmt == FMT_PNM) {
        size_t pos = 2;
        long pw, ph;
        if (!pnm_int(b, size, &pos, &pw) || !pnm_int(b, size, &pos, &ph))
            return base_error_set(err, BASE_E_FORMAT, "%s: corrupt PNM header", name);
        w = pw;
        h = ph;
        per_pixel = PER_PIXEL_PNM;
    } else if (fmt == FMT_WEBP) {
        WebPBitstreamFeatures f;
        const VP8StatusCode status = WebPGetFeatures(b, size, &f);
        if (status != VP8_STATUS_OK)
            return base_error_set(err, status == VP8_STATUS_UNSUPPORTED_FEATURE ? BASE_E_UNSUPPORTED
                                                                               : BASE_E_FORMAT,
                                 "%s: %s WebP header", name,
                                 status == VP8_STATUS_NOT_ENOUGH_DATA ? "truncated" : webp_reason(status));
        w = f.width;
        h = f.height;
        per_pixel = f.has_animation ? PER_PIXEL_WEBP_ANIMATED
                    : f.format == 2 ? PER_PIXEL_WEBP_LOSSLESS : PER_PIXEL_WEBP_LOSSY;
    } else if (fmt == FMT_JPEG) {
        st = probe_jpeg(b, size, name, &w, &h, &per_pixel, err);
    } else {
        st = probe_stb(b, size, fmt, name, &w, &h, &per_pixel, err);
    }
    if (st == BASE_OK) st = check_dimensions(name, w, h, max_pixels, err);
    if (st != BASE_OK) return st;
    out->format = format_name(fmt);
    out->width = (int)w;
    out->height = (int)h;
    /* Plus the file itself (PNG copies its data once or twice) and the
     * decoders' and the resize's fixed tables; saturated, for a cap raised
     * past what memory can hold. */
    const size_t pixels = (size_t)w * (size_t)h, extra = size + ((size_t)1 << 20);
    out->peak_bytes = pixels > (SIZE_MAX - extra) / per_pixel ? SIZE_MAX : per_pixel * pixels + extra;
    return BASE_OK;
}
