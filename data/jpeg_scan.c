/* jpeg_scan.c — see jpeg_scan.h. Reads exactly the bits stb_image 2.27
 * reads (stbi__jpeg_decode_block, stbi__jpeg_decode_block_prog_dc / _ac,
 * stbi__parse_entropy_coded_data), so "truncated" means stb would have read
 * past the scan's data and filled the rest with zeros. Anything stb itself
 * refuses is left to it (UNCHECKED), never judged here. */
#include "jpeg_scan.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Codes up to this long are looked up in one step, as stb does. */
#define FAST_BITS 9
/* An AC code and its coefficient's magnitude bits up to this long together
 * are skipped in one step (the walk needs how far, not the value). */
#define SKIP_BITS 11

typedef struct huffman {
    uint16_t fast[1 << FAST_BITS]; /* length << 8 | symbol for codes of <= FAST_BITS bits; 0: longer */
    /* AC tables: for the next SKIP_BITS bits, bits (1..SKIP_BITS) | advance << 5
     * (zigzag positions: run + 1) | SKIP_END for end-of-block (advance 64)
     * and the 16-zero run (16), whose progressive meaning differs; 0: slow. */
    uint16_t skip[1 << SKIP_BITS];
    int32_t maxcode[17];           /* the largest code of each length, -1: none */
    int32_t first[17];             /* symbol index = code + first[length] */
    uint8_t symbols[256];
    int defined;
} huffman;

typedef struct component {
    int id, h, v;
    int bw, bh;        /* blocks across and down of its own size (a scan of it alone) */
    int stride, rows;  /* blocks across and down of its MCU-padded plane */
    uint64_t *nonzero; /* progressive: per block, bit k set when zigzag coefficient k is nonzero */
} component;

typedef struct scan {
    int count, which[4]; /* components, in scan order */
    int dc[4], ac[4];    /* their tables */
    int ss, se, ah;      /* spectral selection, successive approximation (high) */
} scan;

typedef struct walker {
    const uint8_t *b;
    size_t n;
    huffman dc[4], ac[4];
    component comp[4];
    int frame, progressive, count, mcux, mcuy, restart, scans;
    char *detail;
    size_t detail_size;
} walker;

/* The scan's entropy-coded bytes [pos, end), read MSB first with stuffed
 * zeros removed. Past a marker or the end it reads zeros, as stb does;
 * `fake` counts those among the low bits of acc, and consuming one of them
 * means the data ran out. */
typedef struct bitreader {
    const uint8_t *b;
    size_t pos, end;
    uint64_t acc;
    int nbits, fake, at_marker, truncated;
} bitreader;

/* Whether one of the 8 bytes of x is 0xFF (a stuffed byte or a marker). */
static inline int has_ff(uint64_t x) {
    const uint64_t y = ~x;
    return ((y - 0x0101010101010101ull) & ~y & 0x8080808080808080ull) != 0;
}

static void br_fill(bitreader *r) {
    if (!r->at_marker && r->pos + 8 <= r->end) { /* the usual case: 7 plain bytes at once */
        uint64_t x;
        memcpy(&x, r->b + r->pos, 8);
        if (!has_ff(x)) {
            const int k = (63 - r->nbits) >> 3; /* bytes that fit: 1..7 */
            x = __builtin_bswap64(x);
            r->acc = r->acc << 8 * k | x >> (64 - 8 * k);
            r->nbits += 8 * k;
            r->pos += (size_t)k;
            return;
        }
    }
    while (r->nbits <= 56) {
        unsigned byte = 0;
        if (!r->at_marker) {
            if (r->pos < r->end && r->b[r->pos] != 0xFF) {
                byte = r->b[r->pos++];
            } else if (r->pos + 1 < r->end && r->b[r->pos + 1] == 0x00) {
                byte = 0xFF;
                r->pos += 2;
            } else {
                r->at_marker = 1;
            }
        }
        if (r->at_marker) r->fake += 8;
        r->acc = r->acc << 8 | byte;
        r->nbits += 8;
    }
}

/* The next n bits (1 <= n <= 16) without consuming them. */
static inline unsigned br_peek(bitreader *r, int n) {
    if (r->nbits < n) br_fill(r);
    return (unsigned)(r->acc >> (r->nbits - n)) & ((1u << n) - 1);
}

static inline void br_drop(bitreader *r, int n) {
    r->nbits -= n;
    if (r->nbits < r->fake) r->truncated = 1;
}

/* The next n bits (0 <= n <= 16), consumed. */
static inline unsigned br_bits(bitreader *r, int n) {
    if (n <= 0) return 0;
    const unsigned v = br_peek(r, n);
    br_drop(r, n);
    return v;
}

static void br_skip(bitreader *r, int n) {
    for (; n > 16; n -= 16) br_bits(r, 16);
    br_bits(r, n);
}

/* At a restart interval's end: the rest of the byte is padding, and a
 * restart marker must follow at once, else stb stops the scan there. */
static int br_restart(bitreader *r) {
    r->nbits -= r->nbits % 8;
    if (r->nbits > r->fake) return 0; /* data before the marker */
    size_t p = r->pos;
    while (p < r->end && r->b[p] == 0xFF) p++;
    if (p == r->pos || p >= r->end || r->b[p] < 0xD0 || r->b[p] > 0xD7) return 0;
    r->pos = p + 1;
    r->acc = 0;
    r->nbits = r->fake = r->at_marker = 0;
    return 1;
}

/* One Huffman symbol, or -1 for a code the table lacks (stb: "bad huffman code"). */
static inline int decode(bitreader *r, const huffman *h) {
    const unsigned peek = br_peek(r, 16);
    const unsigned fast = h->fast[peek >> (16 - FAST_BITS)];
    if (fast) {
        br_drop(r, (int)(fast >> 8));
        return (int)(fast & 255);
    }
    for (int len = FAST_BITS + 1; len <= 16; len++) {
        const int32_t code = (int32_t)(peek >> (16 - len));
        if (code <= h->maxcode[len]) {
            br_bits(r, len);
            return h->symbols[code + h->first[len]];
        }
    }
    return -1;
}

#define SKIP_END (1 << 12)

/* The skip entries of one AC code (see huffman.skip). */
static void skip_entry(huffman *h, int32_t code, int len, uint8_t rs) {
    const int s = rs & 15, bits = len + s;
    if (bits > SKIP_BITS || (s == 0 && rs != 0x00 && rs != 0xF0)) return;
    const unsigned advance = s ? (unsigned)(rs >> 4) + 1 : rs == 0xF0 ? 16 : 64;
    const uint16_t entry = (uint16_t)((unsigned)bits | advance << 5 | (s ? 0 : SKIP_END));
    const int shift = SKIP_BITS - len;
    for (int j = 0; j < 1 << shift; j++) h->skip[(code << shift) + j] = entry;
}

/* A DHT table from its 16 counts and its symbols; 0 when the counts are
 * impossible (stb: "bad code lengths"). Canonical codes, as stb assigns. */
static int huffman_build(huffman *h, const uint8_t *counts, const uint8_t *symbols, int total) {
    memset(h, 0, sizeof *h);
    if (total > 256) return 0;
    int32_t code = 0;
    int k = 0;
    for (int len = 1; len <= 16; len++) {
        const int c = counts[len - 1];
        if (c && code + c - 1 >= (int32_t)1 << len) return 0;
        h->first[len] = k - code;
        for (int i = 0; i < c; i++, k++, code++) {
            if (len <= FAST_BITS) {
                const int shift = FAST_BITS - len;
                for (int j = 0; j < 1 << shift; j++)
                    h->fast[(code << shift) + j] = (uint16_t)(len << 8 | symbols[k]);
            }
            skip_entry(h, code, len, symbols[k]);
        }
        h->maxcode[len] = c ? code - 1 : -1;
        code <<= 1;
    }
    memcpy(h->symbols, symbols, (size_t)total);
    h->defined = 1;
    return 1;
}

/* ---- blocks: 0 read, -1 what stb refuses */

static int block_sequential(bitreader *r, const huffman *dc, const huffman *ac) {
    const int t = decode(r, dc);
    if (t < 0 || t > 15) return -1;
    br_bits(r, t);
    for (int k = 1; k < 64;) {
        const unsigned e = ac->skip[br_peek(r, SKIP_BITS)];
        if (e) {
            br_drop(r, (int)(e & 31));
            k += (int)(e >> 5 & 127);
            continue;
        }
        const int rs = decode(r, ac);
        if (rs < 0) return -1;
        const int s = rs & 15;
        if (s == 0) {
            if (rs != 0xF0) break; /* end of block */
            k += 16;
        } else {
            k += (rs >> 4) + 1;
            br_bits(r, s);
        }
    }
    return 0;
}

static int block_dc(bitreader *r, const huffman *dc, const scan *sc, uint64_t *nonzero) {
    if (sc->ah) { /* refinement: one bit */
        br_bits(r, 1);
        return 0;
    }
    if (nonzero) *nonzero = 0; /* stb clears the block on its first DC scan */
    const int t = decode(r, dc);
    if (t < 0 || t > 15) return -1;
    br_bits(r, t);
    return 0;
}

/* An EOB run of 2^r - 1 + r more bits blocks after this one. */
static int eob_run(bitreader *r, int run) { return (1 << run) - 1 + (int)br_bits(r, run); }

static int block_ac_first(bitreader *r, const huffman *ac, const scan *sc, uint64_t *nonzero,
                          int *eobrun) {
    if (*eobrun) {
        (*eobrun)--;
        return 0;
    }
    int k = sc->ss;
    do {
        const unsigned e = ac->skip[br_peek(r, SKIP_BITS)];
        if (e && !(e & SKIP_END)) {
            br_drop(r, (int)(e & 31));
            k += (int)(e >> 5 & 127);
            *nonzero |= 1ull << (k - 1 > 63 ? 63 : k - 1);
            continue;
        }
        const int rs = decode(r, ac);
        if (rs < 0) return -1;
        const int s = rs & 15, run = rs >> 4;
        if (s == 0) {
            if (run < 15) {
                *eobrun = eob_run(r, run);
                break;
            }
            k += 16;
        } else {
            k += run;
            *nonzero |= 1ull << (k > 63 ? 63 : k); /* stb's de-zigzag table ends in 63s */
            k++;
            br_bits(r, s);
        }
    } while (k <= sc->se);
    return 0;
}

static int block_ac_refine(bitreader *r, const huffman *ac, const scan *sc, uint64_t *nonzero,
                           int *eobrun) {
    if (*eobrun) { /* one correction bit per coefficient already nonzero */
        (*eobrun)--;
        const uint64_t band = (~0ull >> (63 - sc->se)) & (~0ull << sc->ss);
        br_skip(r, __builtin_popcountll(*nonzero & band));
        return 0;
    }
    int k = sc->ss;
    do {
        const int rs = decode(r, ac);
        if (rs < 0) return -1;
        int s = rs & 15, run = rs >> 4;
        if (s == 0) {
            if (run < 15) {
                *eobrun = eob_run(r, run);
                run = 64; /* refine the rest of the band, place nothing */
            }
        } else {
            if (s != 1) return -1;
            br_bits(r, 1); /* sign */
        }
        while (k <= sc->se) {
            const uint64_t bit = 1ull << k++;
            if (*nonzero & bit) {
                br_bits(r, 1);
            } else {
                if (run == 0) {
                    if (s) *nonzero |= bit;
                    break;
                }
                run--;
            }
        }
    } while (k <= sc->se);
    return 0;
}

/* One block of component c at (bx, by) of its plane. */
static int block(walker *w, bitreader *r, const scan *sc, int i, int bx, int by, int *eobrun) {
    component *c = &w->comp[sc->which[i]];
    const huffman *dc = &w->dc[sc->dc[i]], *ac = &w->ac[sc->ac[i]];
    if (!w->progressive) return block_sequential(r, dc, ac);
    uint64_t *nonzero = c->nonzero ? &c->nonzero[(size_t)by * c->stride + bx] : NULL;
    if (sc->ss == 0) return block_dc(r, dc, sc, nonzero);
    return sc->ah ? block_ac_refine(r, ac, sc, nonzero, eobrun)
                  : block_ac_first(r, ac, sc, nonzero, eobrun);
}

static data_jpeg_scans truncated(walker *w, long done, long total, int single, const char *why) {
    snprintf(w->detail, w->detail_size, "scan %d: %s after %ld of %ld %s", w->scans, why, done, total,
             single ? "blocks" : "MCUs");
    return DATA_JPEG_SCANS_TRUNCATED;
}

/* Every MCU of one scan (a block each when it has one component). */
static data_jpeg_scans walk_scan(walker *w, const scan *sc, bitreader *r) {
    const int single = sc->count == 1;
    const component *first = &w->comp[sc->which[0]];
    const int across = single ? first->bw : w->mcux, down = single ? first->bh : w->mcuy;
    const long total = (long)across * down;
    int eobrun = 0, todo = w->restart ? w->restart : INT_MAX;
    for (long mcu = 0; mcu < total; mcu++) {
        const int mx = (int)(mcu % across), my = (int)(mcu / across);
        for (int i = 0; i < sc->count; i++) {
            const component *c = &w->comp[sc->which[i]];
            const int h = single ? 1 : c->h, v = single ? 1 : c->v;
            for (int y = 0; y < v; y++)
                for (int x = 0; x < h; x++)
                    if (block(w, r, sc, i, mx * h + x, my * v + y, &eobrun) != 0)
                        return DATA_JPEG_SCANS_UNCHECKED;
        }
        if (r->truncated) return truncated(w, mcu, total, single, "data ends");
        if (--todo <= 0 && mcu + 1 < total) {
            if (!br_restart(r)) return truncated(w, mcu + 1, total, single, "no restart marker");
            todo = w->restart;
            eobrun = 0;
        }
    }
    return DATA_JPEG_SCANS_COMPLETE;
}

/* ---- segments: 0 fine, -1 what stb refuses */

static int read_dht(walker *w, const uint8_t *seg, size_t len) {
    for (size_t p = 0; p < len;) {
        const int tc = seg[p] >> 4, th = seg[p] & 15;
        if (tc > 1 || th > 3 || p + 17 > len) return -1;
        int total = 0;
        for (int i = 1; i <= 16; i++) total += seg[p + i];
        if (p + 17 + (size_t)total > len ||
            !huffman_build(tc ? &w->ac[th] : &w->dc[th], seg + p + 1, seg + p + 17, total))
            return -1;
        p += 17 + (size_t)total;
    }
    return 0;
}

static int read_sof(walker *w, const uint8_t *seg, size_t len, int progressive) {
    if (w->frame || len < 6) return -1;
    const int height = seg[1] << 8 | seg[2], width = seg[3] << 8 | seg[4], count = seg[5];
    if (seg[0] != 8 || !width || !height || (count != 1 && count != 3 && count != 4) ||
        len != 6 + 3 * (size_t)count)
        return -1;
    int hmax = 1, vmax = 1;
    for (int c = 0; c < count; c++) {
        component *k = &w->comp[c];
        k->id = seg[6 + 3 * c];
        k->h = seg[7 + 3 * c] >> 4;
        k->v = seg[7 + 3 * c] & 15;
        if (k->h < 1 || k->h > 4 || k->v < 1 || k->v > 4 || seg[8 + 3 * c] > 3) return -1;
        if (k->h > hmax) hmax = k->h;
        if (k->v > vmax) vmax = k->v;
    }
    w->mcux = (width + 8 * hmax - 1) / (8 * hmax);
    w->mcuy = (height + 8 * vmax - 1) / (8 * vmax);
    for (int c = 0; c < count; c++) {
        component *k = &w->comp[c];
        k->bw = ((width * k->h + hmax - 1) / hmax + 7) / 8;
        k->bh = ((height * k->v + vmax - 1) / vmax + 7) / 8;
        k->stride = w->mcux * k->h;
        k->rows = w->mcuy * k->v;
    }
    w->frame = 1;
    w->progressive = progressive;
    w->count = count;
    return 0;
}

/* The scan header; -1 for anything stb refuses (and tables never defined,
 * which image.c's own check refuses first). */
static int read_sos(walker *w, const uint8_t *seg, size_t len, scan *sc) {
    if (!w->frame || len < 1) return -1;
    const int ns = seg[0];
    if (ns < 1 || ns > 4 || ns > w->count || len != 4 + 2 * (size_t)ns) return -1;
    memset(sc, 0, sizeof *sc);
    sc->count = ns;
    for (int s = 0; s < ns; s++) {
        int c = 0;
        while (c < w->count && w->comp[c].id != seg[1 + 2 * s]) c++;
        if (c == w->count) return -1;
        sc->which[s] = c;
        sc->dc[s] = seg[2 + 2 * s] >> 4;
        sc->ac[s] = seg[2 + 2 * s] & 15;
        if (sc->dc[s] > 3 || sc->ac[s] > 3) return -1;
    }
    sc->ss = seg[1 + 2 * ns];
    sc->se = seg[2 + 2 * ns];
    sc->ah = seg[3 + 2 * ns] >> 4;
    const int al = seg[3 + 2 * ns] & 15;
    if (!w->progressive) {
        if (sc->ss || sc->ah || al) return -1;
        sc->se = 63;
    } else if (sc->ss > 63 || sc->se > 63 || sc->ss > sc->se || sc->ah > 13 || al > 13 ||
               (sc->ss == 0 && sc->se != 0) || (sc->ss > 0 && ns > 1)) {
        return -1;
    }
    for (int s = 0; s < ns; s++) {
        const int uses_dc = !w->progressive || (sc->ss == 0 && sc->ah == 0);
        const int uses_ac = !w->progressive || sc->ss > 0;
        if ((uses_dc && !w->dc[sc->dc[s]].defined) || (uses_ac && !w->ac[sc->ac[s]].defined))
            return -1;
    }
    return 0;
}

/* The progressive state of the scan's component, made on its first AC scan. */
static int make_nonzero(walker *w, const scan *sc) {
    component *c = &w->comp[sc->which[0]];
    if (!w->progressive || sc->ss == 0 || c->nonzero) return 0;
    c->nonzero = calloc((size_t)c->stride * (size_t)c->rows, sizeof *c->nonzero);
    return c->nonzero ? 0 : -1;
}

/* Where the entropy-coded data starting at i ends: the first marker that is
 * neither a stuffed zero nor a restart marker (image.c checked there is one). */
static size_t scan_end(const uint8_t *b, size_t n, size_t i) {
    while (i + 1 < n && !(b[i] == 0xFF && b[i + 1] != 0x00 && b[i + 1] != 0xFF &&
                          !(b[i + 1] >= 0xD0 && b[i + 1] <= 0xD7)))
        i++;
    return i;
}

/* A segment the walk reads (DHT, DRI, SOF, SOS with its scan); i is just
 * past the segment, and moves past the scan's data. */
static data_jpeg_scans segment(walker *w, uint8_t m, const uint8_t *seg, size_t len, size_t *i) {
    if (m == 0xC4) return read_dht(w, seg, len) ? DATA_JPEG_SCANS_UNCHECKED : DATA_JPEG_SCANS_COMPLETE;
    if (m == 0xDD) {
        if (len != 2) return DATA_JPEG_SCANS_UNCHECKED;
        w->restart = seg[0] << 8 | seg[1];
    } else if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
        if (m > 0xC2 || read_sof(w, seg, len, m == 0xC2)) return DATA_JPEG_SCANS_UNCHECKED;
    } else if (m == 0xDA) {
        scan sc;
        if (read_sos(w, seg, len, &sc)) return DATA_JPEG_SCANS_UNCHECKED;
        if (make_nonzero(w, &sc)) return DATA_JPEG_SCANS_NOMEM;
        w->scans++;
        const size_t end = scan_end(w->b, w->n, *i);
        bitreader r = {.b = w->b, .pos = *i, .end = end};
        *i = end;
        return walk_scan(w, &sc, &r);
    }
    return DATA_JPEG_SCANS_COMPLETE;
}

/* The marker walk of image.c's jpeg_check, reading what the scans need. */
static data_jpeg_scans walk(walker *w) {
    const uint8_t *b = w->b;
    const size_t n = w->n;
    size_t i = 0;
    while (i < n && b[i] == 0xFF) i++;
    i++; /* SOI */
    while (i < n) {
        if (b[i] != 0xFF) { /* stray bytes before a marker */
            i++;
            continue;
        }
        while (i < n && b[i] == 0xFF) i++;
        if (i >= n) break;
        const uint8_t m = b[i++];
        if (m == 0xD9) return w->scans ? DATA_JPEG_SCANS_COMPLETE : DATA_JPEG_SCANS_UNCHECKED;
        if (m == 0x01 || (m >= 0xD0 && m <= 0xD7) || m == 0x00) continue;
        if (i + 2 > n) break;
        const size_t len = (size_t)b[i] << 8 | b[i + 1];
        if (len < 2 || i + len > n) break;
        const uint8_t *seg = b + i + 2;
        i += len;
        const data_jpeg_scans v = segment(w, m, seg, len - 2, &i);
        if (v != DATA_JPEG_SCANS_COMPLETE) return v;
    }
    return DATA_JPEG_SCANS_UNCHECKED;
}

data_jpeg_scans data_jpeg_scans_check(const uint8_t *b, size_t n, char *detail, size_t detail_size) {
    if (detail_size) detail[0] = '\0';
    walker *w = calloc(1, sizeof *w);
    if (!w) return DATA_JPEG_SCANS_NOMEM;
    w->b = b;
    w->n = n;
    w->detail = detail;
    w->detail_size = detail_size;
    const data_jpeg_scans verdict = walk(w);
    for (int c = 0; c < 4; c++) free(w->comp[c].nonzero);
    free(w);
    return verdict;
}
