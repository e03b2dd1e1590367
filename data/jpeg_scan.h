/* jpeg_scan.h — whether a JPEG's entropy-coded data holds every block its
 * frame declares (private to data/: image.c asks before decoding).
 *
 * stb_image, like libjpeg, fills what a scan lacks with zeros and reports
 * success: a 200-byte file declaring 10000x10000 pixels, its end-of-image
 * marker after 50 bytes of scan data, decoded to 300 MB of grey in seconds.
 * This walks every scan as stb_image decodes it (its Huffman codes, EOB
 * runs, progressive refinements and restart intervals) but computes no
 * coefficient and no pixel, so it costs a fraction of the decode and runs
 * before the image is allocated. */
#ifndef DATA_JPEG_SCAN_H
#define DATA_JPEG_SCAN_H

#include <stddef.h>
#include <stdint.h>

typedef enum data_jpeg_scans {
    DATA_JPEG_SCANS_COMPLETE,  /* every scan decodes all its blocks from its own data */
    DATA_JPEG_SCANS_TRUNCATED, /* a scan's data ends before its last block (detail says where) */
    DATA_JPEG_SCANS_UNCHECKED, /* something stb_image refuses itself (corrupt codes, bad
                                  headers, arithmetic coding): left to it */
    DATA_JPEG_SCANS_NOMEM      /* no memory for the progressive refinement state */
} data_jpeg_scans;

/* Walks the scans of the JPEG b[0 .. n) (a file whose marker structure has
 * been checked to reach an end-of-image marker). On TRUNCATED, detail gets
 * "scan K ends after M of N blocks" (or MCUs). */
data_jpeg_scans data_jpeg_scans_check(const uint8_t *b, size_t n, char *detail, size_t detail_size);

#endif
