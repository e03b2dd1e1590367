/* picture.h — pictures and arrays written for people to look at or load.
 *
 * What the inspection commands (vit attention, features, segment, patches)
 * write: NumPy .npy arrays, PNG files, attention heatmaps (turbo colormap)
 * and per-patch label overlays blended over the image, with a legend drawn
 * in stb_easy_font. Every file is written atomically (base_io.h), so a
 * reader never sees half a file and a failed run leaves none.
 *
 *     double box[4];
 *     data_preprocess_source_box(&pre, img.width, img.height, box);
 *     data_overlay_heatmap(&img, box, grid, gh, gw, lo, hi, 0.5f, &out, &err);
 *     data_write_png("map.png", out.width, out.height, 3, out.pixels, &err);
 */
#ifndef DATA_PICTURE_H
#define DATA_PICTURE_H

#include <stddef.h>
#include <stdint.h>

#include "base_io.h"
#include "preprocess.h"
#include "base_error.h"

/* Element types of .npy arrays. */
typedef enum data_npy_dtype {
    DATA_NPY_F32, /* '<f4' */
    DATA_NPY_I32  /* '<i4' */
} data_npy_dtype;

#define DATA_NPY_MAX_DIMS 8

/* The header of a NumPy .npy array (format 1.0, C order, little-endian,
 * padded with spaces to a multiple of 64 bytes, ending in a newline) into
 * header; *length gets its size. For arrays sent rather than written (vit
 * serve); data_npy_open writes the same header. */
#define DATA_NPY_MAX_HEADER 640
base_status data_npy_header(data_npy_dtype dtype, const int64_t *shape, int ndim,
                           unsigned char header[DATA_NPY_MAX_HEADER], size_t *length,
                           base_error *err);

/* Starts a NumPy .npy file (format 1.0, C order, little-endian, header
 * padded with spaces to a multiple of 64 bytes and ending in a newline);
 * the caller appends exactly prod(shape) elements with base_atomic_write
 * (little-endian, as this machine stores them) and commits. */
base_status data_npy_open(const char *path, data_npy_dtype dtype, const int64_t *shape, int ndim,
                         base_atomic_file **out, base_error *err);

/* Writes a whole .npy file: prod(shape) elements from data. */
base_status data_write_npy(const char *path, data_npy_dtype dtype, const int64_t *shape, int ndim,
                          const void *data, base_error *err);

/* Writes 8-bit pixels (channels 1: grey, 3: RGB, 4: RGBA; rows top to
 * bottom, no padding) as a PNG file with stb_image_write. */
base_status data_write_png(const char *path, int width, int height, int channels,
                          const uint8_t *pixels, base_error *err);

/* Writes one byte per pixel as an indexed PNG (colour type 3): each byte
 * indexes palette (colors RGB triples, at most 256; a byte past them is
 * invalid for the reader). Image viewers show the colours, while PIL and
 * other readers that keep the index (PIL mode "P") give back the bytes. */
base_status data_write_png_indexed(const char *path, int width, int height, const uint8_t *pixels,
                                  const uint8_t *palette, int colors, base_error *err);

/* Resizes a single-channel sh x sw grid to dh x dw as
 * torch.nn.functional.interpolate(mode='bilinear', align_corners=False). */
void data_upsample_bilinear(const float *src, int sh, int sw, float *dst, int dh, int dw);

/* Colour of t in [0, 1] (clamped) on the "turbo" colormap (Google, 2019): a
 * perceptually smoothed rainbow, dark blue (0) through green to dark red (1). */
void data_colormap_turbo(float t, uint8_t rgb[3]);

/* A distinct colour for category `index` (20 colours, then repeating
 * lighter/darker). */
void data_palette_color(int index, uint8_t rgb[3]);

/* A copy of img with grid (gh x gw values, raster order) laid over box
 * (data_preprocess_source_box): values mapped linearly from [lo, hi] to the
 * turbo colormap, bilinearly upsampled to the box as F.interpolate would,
 * blended with opacity alpha; pixels outside the box (which the model did not
 * see) are dimmed. out is allocated. */
base_status data_overlay_heatmap(const data_image *img, const double box[4], const float *grid,
                                int gh, int gw, float lo, float hi, float alpha, data_image *out,
                                base_error *err);

/* The same for categories: labels (gh x gw, raster order) upsampled to the
 * box by nearest neighbour (F.interpolate mode='nearest') and drawn with
 * colors[label] (3 bytes each; label < 0: left as is) at opacity alpha. */
base_status data_overlay_labels(const data_image *img, const double box[4], const int *labels,
                               int gh, int gw, const uint8_t *colors, float alpha,
                               data_image *out, base_error *err);

/* The label grid upsampled to the whole width x height image by nearest
 * neighbour within box, `outside` elsewhere: one byte per pixel into out. */
void data_label_mask(const double box[4], const int *labels, int gh, int gw, int width,
                     int height, uint8_t outside, uint8_t *out);

/* Fills a rectangle, blending rgb at opacity alpha; clipped to the image. */
void data_fill_rect(data_image *img, int x, int y, int w, int h, const uint8_t rgb[3],
                    float alpha);

/* Draws ASCII text with its top-left corner at (x, y) in a small built-in
 * font (stb_easy_font) magnified `scale` times; clipped to the image.
 * Returns the width drawn, in pixels. data_text_height is a line's height. */
int data_draw_text(data_image *img, int x, int y, int scale, const char *text,
                   const uint8_t rgb[3]);
int data_text_width(const char *text, int scale);
int data_text_height(int scale);

#endif
