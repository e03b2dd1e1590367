/* png_plain.h — a faster decoder for the plain PNGs photos are saved as
 * (private to data/: image.c tries it before stb_image).
 *
 * stb_image inflates a PNG into one buffer with its own zlib, unfilters it
 * into another and converts it into a third; a 451x300 photo took 6-7 ms
 * of CPU and ~300 fresh pages, which on the project's VMs cost ~16 us each
 * (bench/README.md). This inflates with zlib, row by row, unfilters each
 * row as it arrives and writes it straight into the RGB image: one buffer,
 * and zlib's inflate is 2-3x faster than stb's.
 *
 * PNG is lossless, so the pixels are the file's whatever the decoder; what
 * must match is stb_image 2.27's conversion to RGB and which files it
 * accepts. This decoder takes only 8-bit, non-interlaced grey, grey+alpha,
 * RGB, RGBA and palette images whose structure stb 2.27 accepts (its chunk
 * rules are followed check by check, png_plain.c), converts them as stb
 * does with 3 channels requested (grey replicated, alpha dropped, palette
 * looked up) and leaves everything else to stb: other depths, interlacing,
 * Apple's CgBI, anything stb would refuse, a palette index past the
 * palette (where stb reads uninitialised memory), and any file zlib finds
 * fault with (stb is laxer: it ignores the Adler-32 sum and the window
 * size). tests/test_preprocess.c checks both decoders give the same bytes. */
#ifndef DATA_PNG_PLAIN_H
#define DATA_PNG_PLAIN_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

/* Decodes the PNG b[0 .. n) into out (RGB, allocated) when it is one this
 * decoder takes and w x h <= max_pixels: 1. Otherwise 0, out zeroed:
 * stb_image decodes or refuses it as before (running out of memory here
 * also leaves it to stb). */
int data_png_plain_decode(const uint8_t *b, size_t n, int64_t max_pixels, data_image *out);

#endif
