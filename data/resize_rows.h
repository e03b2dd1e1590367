/* resize_rows.h — PIL's resize as a stream of output rows (private to
 * data/: preprocess.c crops and normalises each row as it comes, with no
 * resized image in between; data_resize is built on it). */
#ifndef DATA_RESIZE_ROWS_H
#define DATA_RESIZE_ROWS_H

#include <stdint.h>

#include "image.h"
#include "preprocess.h"

/* Receives row y (0: the window's first) of w RGB pixels; the row is valid
 * during the call only. */
typedef void (*data_resize_row_fn)(void *ctx, int y, const uint8_t *rgb);

/* The window [x, x + w) x [y, y + h) of data_resize(src, width, height,
 * filter), every pixel the same, its rows handed to emit in order. Only
 * the input rows and columns the window reads are resampled. */
base_status data_resize_rows(const data_image *src, int width, int height, data_resample filter,
                            int x, int y, int w, int h, data_resize_row_fn emit, void *ctx,
                            base_error *err);

#endif
