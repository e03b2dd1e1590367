/* image.h — decoding image files into 8-bit RGB.
 *
 * stb_image decodes JPEG (baseline and progressive), PNG, BMP, GIF, TGA,
 * PSD and binary PNM, libwebp WebP (an animation: its first frame); grey,
 * palette and alpha images become RGB (alpha
 * dropped), as PIL's convert("RGB") does, and EXIF orientation is ignored as
 * PIL's Image.open does. Before stb sees a file its header is checked: the
 * pixel count against a cap (before any pixel is decoded), truncated BMP,
 * GIF and TGA files, the JPEG and PNG structures stb 2.27 mishandles
 * (tests/fuzz/README.md). Files are read without blocking on FIFOs.
 *
 *     data_image img;
 *     if (data_image_load("cat.jpg", &img, &err) == BASE_OK) { ... data_image_free(&img); }
 */
#ifndef DATA_IMAGE_H
#define DATA_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base_error.h"
#include "base_limits.h"

/* Refuse images larger than this before decoding pixels (width*height), by
 * default; data_image_load_capped and data_preprocess.max_pixels override. */
#define DATA_MAX_PIXELS BASE_DEFAULT_MAX_PIXELS

/* An 8-bit RGB image, rows top to bottom, pixels interleaved R,G,B. */
typedef struct data_image {
    int width, height;
    uint8_t *pixels; /* width*height*3 bytes, owned */
} data_image;

/* Decodes an image file (JPEG incl. progressive, PNG incl. 16-bit/palette/
 * grey/alpha, BMP, GIF first frame, TGA, PNM, PSD, WebP lossy/lossless/
 * animated first frame) to 8-bit RGB the way PIL's
 * convert('RGB') does: grey is replicated, alpha is dropped (not blended), and
 * 16-bit samples are reduced to 8 bits. The dimensions are read and checked
 * against DATA_MAX_PIXELS before pixels are decoded. EXIF orientation is
 * ignored, as PIL's Image.open and the reference pipelines do. */
base_status data_image_load(const char *path, data_image *out, base_error *err);

/* The same for an image held in memory; name is used in messages. */
base_status data_image_load_memory(const void *bytes, size_t size, const char *name,
                                  data_image *out, base_error *err);

/* The same two with a pixel cap other than DATA_MAX_PIXELS (max_pixels <= 0:
 * the default). Headers are read first: a file whose dimensions exceed the
 * cap is refused (BASE_E_LIMIT, naming the file, its size and the cap) before
 * any pixel memory is allocated. */
base_status data_image_load_capped(const char *path, int64_t max_pixels, data_image *out,
                                  base_error *err);
base_status data_image_load_memory_capped(const void *bytes, size_t size, const char *name,
                                         int64_t max_pixels, data_image *out, base_error *err);

/* Frees the pixels; safe on a zeroed or already freed image. */
void data_image_free(data_image *img);

/* What decoding an image held in memory takes at most, read from its
 * header alone: no pixel is decoded and stb's decoders are not run (a
 * server admits the decode against a memory budget with it). */
typedef struct data_image_probe {
    const char *format; /* "PNG", "JPEG", "WebP" ... ("image": TGA, which has no magic) */
    int width, height;  /* as declared: an animated WebP's canvas, a GIF's screen */
    size_t peak_bytes;  /* the most data_image_load_memory_capped and data_preprocess_memory
                           hold at once for it: declared pixels times the decoder's
                           bytes per pixel (measured, image.c), plus the file's size */
} data_image_probe;

/* Fills out from the header of bytes. Refuses what the decoder refuses at
 * its header, with the same status and message (an empty or unknown file,
 * an unsupported format, a header it cannot read, a size over max_pixels;
 * <= 0: the default cap); a file it accepts may still fail to decode. */
base_status data_image_probe_memory(const void *bytes, size_t size, const char *name,
                                   int64_t max_pixels, data_image_probe *out, base_error *err);

#endif
