/* plot.h — charts drawn for people, with no plotting library: training
 * curves (vit train --plot) and a confusion matrix (vit eval --confusion),
 * as RGB pictures written with data_write_png. Text is picture.h's small
 * built-in font; lines are anti-aliased.
 *
 *     data_plot_series s[] = {{"train loss", loss, {31, 119, 180}}};
 *     data_image chart;
 *     data_plot_lines(&chart, 640, 400, "loss", "epoch", epochs, n, s, 1, &err);
 *     data_write_png("loss.png", chart.width, chart.height, 3, chart.pixels, &err);
 */
#ifndef DATA_PLOT_H
#define DATA_PLOT_H

#include <stddef.h>
#include <stdint.h>

#include "picture.h"

/* One curve: y[i] at x[i] (NaN: no point there, the line breaks). */
typedef struct data_plot_series {
    const char *name;
    const double *y;
    uint8_t rgb[3];
} data_plot_series;

/* A width x height line chart of num_series curves over the n points xs
 * (ascending), titled, with the x axis named x_label, ticks at round
 * numbers, a point marked at every value and a legend naming the series.
 * out is allocated (data_image_free). */
base_status data_plot_lines(data_image *out, int width, int height, const char *title,
                           const char *x_label, const double *xs, int n,
                           const data_plot_series *series, int num_series, base_error *err);

/* Places src into dst (3 channels both) with its top-left corner at x, y. */
void data_image_paste(data_image *dst, const data_image *src, int x, int y);

/* A confusion matrix: counts[t * classes + p] images of class t predicted as
 * class p, names[c] each class's name. Rows are true classes (those with
 * images; of more than max_shown, the max_shown with the most errors),
 * columns predicted ones (the rows' classes and the others they are most
 * often mistaken for, max_shown at most, the rest in an "other" column),
 * each cell shaded by its share of its row and holding its count when there
 * is room. Classes go by number, named beside the rows and, for columns
 * that are no row, in a key below. out is allocated. */
base_status data_plot_confusion(data_image *out, const char *title, const char *const *names,
                               const size_t *counts, int classes, int max_shown, base_error *err);

#endif
