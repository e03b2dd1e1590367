/* plot.c — line charts and a confusion matrix on RGB pictures (plot.h). */
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t BLACK[3] = {0, 0, 0}, GREY[3] = {128, 128, 128}, LIGHT[3] = {225, 225, 225};

static base_status blank(data_image *img, int width, int height, base_error *err) {
    img->width = width;
    img->height = height;
    if (!(img->pixels = malloc((size_t)width * height * 3)))
        return base_error_set(err, BASE_E_NOMEM, "out of memory for a %dx%d chart", width, height);
    memset(img->pixels, 255, (size_t)width * height * 3);
    return BASE_OK;
}

void data_image_paste(data_image *dst, const data_image *src, int x, int y) {
    for (int r = 0; r < src->height; r++) {
        if (y + r < 0 || y + r >= dst->height) continue;
        for (int c = 0; c < src->width; c++)
            if (x + c >= 0 && x + c < dst->width)
                memcpy(dst->pixels + ((size_t)(y + r) * dst->width + x + c) * 3,
                       src->pixels + ((size_t)r * src->width + c) * 3, 3);
    }
}

/* Blends rgb into pixel (x, y) at coverage a (0..1); outside: nothing. */
static void blend(data_image *img, int x, int y, const uint8_t rgb[3], double a) {
    if (x < 0 || y < 0 || x >= img->width || y >= img->height || a <= 0) return;
    if (a > 1) a = 1;
    uint8_t *p = img->pixels + ((size_t)y * img->width + x) * 3;
    for (int c = 0; c < 3; c++) p[c] = (uint8_t)lround(p[c] + (rgb[c] - p[c]) * a);
}

/* A line of the given half-width from (x0, y0) to (x1, y1), anti-aliased
 * by each pixel's distance to the segment. */
static void line(data_image *img, double x0, double y0, double x1, double y1, double half,
                 const uint8_t rgb[3]) {
    const double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    const int xa = (int)floor(fmin(x0, x1) - half - 1), xb = (int)ceil(fmax(x0, x1) + half + 1);
    const int ya = (int)floor(fmin(y0, y1) - half - 1), yb = (int)ceil(fmax(y0, y1) + half + 1);
    for (int y = ya; y <= yb; y++)
        for (int x = xa; x <= xb; x++) {
            double t = len2 > 0 ? ((x - x0) * dx + (y - y0) * dy) / len2 : 0;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            const double d = hypot(x - (x0 + t * dx), y - (y0 + t * dy));
            blend(img, x, y, rgb, half + 0.5 - d);
        }
}

/* A round step near range / ticks: 1, 2 or 5 times a power of ten. */
static double nice_step(double range, int ticks) {
    const double raw = range / ticks, power = pow(10, floor(log10(raw)));
    const double f = raw / power;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * power;
}

/* Decimals that show a tick step exactly enough. */
static int step_decimals(double step) {
    const int d = (int)ceil(-log10(step) - 1e-9);
    return d < 0 ? 0 : d > 6 ? 6 : d;
}

typedef struct axes {
    int left, top, right, bottom; /* the plot area's edges */
    double x0, x1, y0, y1;        /* the values at those edges */
} axes;

static double to_px(const axes *a, double x) {
    return a->left + (x - a->x0) / (a->x1 - a->x0) * (a->right - a->left);
}
static double to_py(const axes *a, double y) {
    return a->bottom - (y - a->y0) / (a->y1 - a->y0) * (a->bottom - a->top);
}

/* The range of the finite values of every series, padded, never empty. */
static void value_range(const data_plot_series *series, int num_series, int n, double *lo,
                        double *hi) {
    *lo = INFINITY;
    *hi = -INFINITY;
    for (int s = 0; s < num_series; s++)
        for (int i = 0; i < n; i++)
            if (isfinite(series[s].y[i])) {
                *lo = fmin(*lo, series[s].y[i]);
                *hi = fmax(*hi, series[s].y[i]);
            }
    if (!isfinite(*lo)) *lo = 0, *hi = 1;
    const double pad = *hi > *lo ? 0.05 * (*hi - *lo) : fmax(fabs(*hi) * 0.1, 0.5);
    *lo -= pad;
    *hi += pad;
}

/* Grid lines and tick labels on both axes. */
static void draw_ticks(data_image *img, const axes *a, int scale, int integer_x) {
    char text[32];
    const int th = data_text_height(scale);
    const double ystep = nice_step(a->y1 - a->y0, 5);
    for (double v = ceil(a->y0 / ystep) * ystep; v <= a->y1 + 1e-9 * ystep; v += ystep) {
        const int py = (int)lround(to_py(a, v));
        data_fill_rect(img, a->left, py, a->right - a->left, 1, LIGHT, 1.0f);
        snprintf(text, sizeof text, "%.*f", step_decimals(ystep), fabs(v) < 1e-12 ? 0.0 : v);
        data_draw_text(img, a->left - 6 * scale - data_text_width(text, scale), py - th / 2, scale,
                       text, BLACK);
    }
    double xstep = nice_step(a->x1 - a->x0 > 0 ? a->x1 - a->x0 : 1, 8);
    if (integer_x && xstep < 1) xstep = 1;
    for (double v = ceil(a->x0 / xstep) * xstep; v <= a->x1 + 1e-9 * xstep; v += xstep) {
        const int px = (int)lround(to_px(a, v));
        data_fill_rect(img, px, a->top, 1, a->bottom - a->top, LIGHT, 1.0f);
        snprintf(text, sizeof text, "%.*f", integer_x ? 0 : step_decimals(xstep), v);
        data_draw_text(img, px - data_text_width(text, scale) / 2, a->bottom + 4 * scale, scale,
                       text, BLACK);
    }
    data_fill_rect(img, a->left, a->top, 1, a->bottom - a->top + 1, GREY, 1.0f);
    data_fill_rect(img, a->left, a->bottom, a->right - a->left + 1, 1, GREY, 1.0f);
}

/* Each series as a line through its finite points, with a dot on each. */
static void draw_series(data_image *img, const axes *a, const double *xs, int n,
                        const data_plot_series *s, int scale) {
    for (int i = 0; i < n; i++) {
        if (!isfinite(s->y[i])) continue;
        const double px = to_px(a, xs[i]), py = to_py(a, s->y[i]);
        if (i + 1 < n && isfinite(s->y[i + 1]))
            line(img, px, py, to_px(a, xs[i + 1]), to_py(a, s->y[i + 1]), scale, s->rgb);
        line(img, px, py, px, py, 2.0 * scale + 0.5, s->rgb);
    }
}

/* The series' names with a swatch each, in one row from (x, y). */
static void draw_legend_row(data_image *img, int x, int y, const data_plot_series *series,
                            int num_series, int scale) {
    const int th = data_text_height(scale);
    for (int s = 0; s < num_series; s++) {
        data_fill_rect(img, x, y + th / 2 - scale, 14 * scale, 3 * scale, series[s].rgb, 1.0f);
        x += 18 * scale;
        x += data_draw_text(img, x, y, scale, series[s].name, BLACK) + 14 * scale;
    }
}

base_status data_plot_lines(data_image *out, int width, int height, const char *title,
                           const char *x_label, const double *xs, int n,
                           const data_plot_series *series, int num_series, base_error *err) {
    *out = (data_image){0};
    if (width < 120 || height < 100 || n < 1 || num_series < 1)
        return base_error_set(err, BASE_E_ARG, "a %dx%d chart of %d points cannot be drawn", width,
                             height, n);
    base_status st = blank(out, width, height, err);
    if (st != BASE_OK) return st;
    const int scale = width >= 560 ? 2 : 1, th = data_text_height(scale);
    axes a = {.top = 3 * th + 10 * scale, .right = width - 24 * scale, /* a last tick's label */
              .bottom = height - 2 * th - 14 * scale};
    value_range(series, num_series, n, &a.y0, &a.y1);
    a.x0 = xs[0];
    a.x1 = xs[n - 1] > xs[0] ? xs[n - 1] : xs[0] + 1;
    /* Room at the left for the wider of the extreme tick labels. */
    const double ystep = nice_step(a.y1 - a.y0, 5);
    char low[32], high[32];
    snprintf(low, sizeof low, "%.*f", step_decimals(ystep), ceil(a.y0 / ystep) * ystep);
    snprintf(high, sizeof high, "%.*f", step_decimals(ystep), floor(a.y1 / ystep) * ystep);
    a.left = 10 * scale + (int)fmax(data_text_width(low, scale), data_text_width(high, scale));
    data_draw_text(out, a.left, 4 * scale, scale, title, BLACK);
    draw_legend_row(out, a.left, 4 * scale + th + 4 * scale, series, num_series, scale);
    int integer_x = 1;
    for (int i = 0; i < n; i++) integer_x &= xs[i] == floor(xs[i]);
    draw_ticks(out, &a, scale, integer_x);
    for (int s = 0; s < num_series; s++) draw_series(out, &a, xs, n, &series[s], scale);
    data_draw_text(out, (a.left + a.right - data_text_width(x_label, scale)) / 2,
                   height - th - 4 * scale, scale, x_label, BLACK);
    return BASE_OK;
}

/* ------------------------------------------------------------- confusion */

typedef struct shown_classes {
    int *rows, *cols;      /* the classes drawn as rows (true) and columns (predicted) */
    int num_rows, num_cols;
    int other;             /* a column for predictions outside cols */
} shown_classes;

static size_t row_sum(const size_t *counts, int classes, int t) {
    size_t sum = 0;
    for (int p = 0; p < classes; p++) sum += counts[(size_t)t * classes + p];
    return sum;
}

static int compare_ints(const void *a, const void *b) {
    const int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* The max_shown entries of ids (count n) with the largest score, ties to
 * the lower class, then sorted by class: into ids, returning how many. */
static int keep_largest(int *ids, int n, const size_t *score, int max_shown) {
    while (n > max_shown) {
        int drop = 0;
        for (int i = 1; i < n; i++)
            if (score[ids[i]] <= score[ids[drop]]) drop = i;
        memmove(ids + drop, ids + drop + 1, sizeof *ids * (size_t)(n - drop - 1));
        n--;
    }
    qsort(ids, (size_t)n, sizeof *ids, compare_ints);
    return n;
}

/* Rows: the classes with images, or of more than max_shown those with the
 * most errors. Columns: the classes those rows' images are predicted as,
 * of more than max_shown the most frequent (right or wrong). */
static base_status choose_classes(const size_t *counts, int classes, int max_shown,
                                 shown_classes *out, base_error *err) {
    const size_t n = (size_t)(classes > 0 ? classes : 1);
    out->rows = malloc(sizeof *out->rows * n);
    out->cols = malloc(sizeof *out->cols * n);
    size_t *errors = calloc(n, sizeof *errors), *taken = calloc(n, sizeof *taken);
    if (!out->rows || !out->cols || !errors || !taken) {
        free(errors);
        free(taken);
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    }
    for (int t = 0; t < classes; t++) {
        const size_t total = row_sum(counts, classes, t);
        errors[t] = total ? total - counts[(size_t)t * classes + t] : 0;
        if (total) out->rows[out->num_rows++] = t;
    }
    out->num_rows = keep_largest(out->rows, out->num_rows, errors, max_shown);
    for (int i = 0; i < out->num_rows; i++)
        for (int p = 0; p < classes; p++)
            taken[p] += counts[(size_t)out->rows[i] * classes + p];
    for (int p = 0; p < classes; p++)
        if (taken[p]) out->cols[out->num_cols++] = p;
    const int all = out->num_cols;
    out->num_cols = keep_largest(out->cols, out->num_cols, taken, max_shown);
    out->other = all > out->num_cols;
    free(errors);
    free(taken);
    return BASE_OK;
}

/* A cell: white to dark blue by share, its count written when it fits. */
static void draw_cell(data_image *img, int x, int y, int cell, size_t count, size_t row_total,
                      int scale) {
    const double share = row_total ? (double)count / row_total : 0;
    const uint8_t rgb[3] = {(uint8_t)lround(255 - share * (255 - 8)),
                            (uint8_t)lround(255 - share * (255 - 48)),
                            (uint8_t)lround(255 - share * (255 - 107))};
    data_fill_rect(img, x, y, cell - 1, cell - 1, rgb, 1.0f);
    if (!count) return;
    char text[24];
    snprintf(text, sizeof text, "%zu", count);
    const uint8_t white[3] = {255, 255, 255};
    if (data_text_width(text, scale) <= cell - 3)
        data_draw_text(img, x + (cell - 1 - data_text_width(text, scale)) / 2,
                       y + (cell - 1 - data_text_height(scale)) / 2, scale, text,
                       share > 0.5 ? white : BLACK);
}

/* The number a class goes by in the picture: its row's, else rows + its
 * place among the column-only classes; -1 when not drawn. */
static int class_number(const shown_classes *sh, int c) {
    int k = 0;
    for (int i = 0; i < sh->num_rows; i++)
        if (sh->rows[i] == c) return i;
    for (int j = 0; j < sh->num_cols; j++) {
        int in_rows = 0;
        for (int i = 0; i < sh->num_rows; i++) in_rows |= sh->rows[i] == sh->cols[j];
        if (in_rows) continue;
        if (sh->cols[j] == c) return sh->num_rows + k;
        k++;
    }
    return -1;
}

/* "12 ankle boot": a class's label in the picture, its name cut short. */
static void class_label(char *out, size_t size, int number, const char *name) {
    snprintf(out, size, "%d %.28s", number, name ? name : "");
}

typedef struct confusion_layout {
    int cell, scale, th, x0, y0, label_w, key_lines;
} confusion_layout;

static confusion_layout confusion_measure(const shown_classes *sh, const char *const *names) {
    const int n = sh->num_rows > sh->num_cols ? sh->num_rows : sh->num_cols;
    confusion_layout l = {.cell = n <= 12 ? 48 : n <= 24 ? 32 : 22};
    l.scale = l.cell >= 32 ? 2 : 1;
    l.th = data_text_height(l.scale);
    char text[64];
    for (int i = 0; i < sh->num_rows; i++) {
        class_label(text, sizeof text, i, names[sh->rows[i]]);
        if (data_text_width(text, l.scale) > l.label_w) l.label_w = data_text_width(text, l.scale);
    }
    for (int j = 0; j < sh->num_cols; j++) l.key_lines += class_number(sh, sh->cols[j]) >= sh->num_rows;
    l.x0 = l.label_w + 12 * l.scale;
    l.y0 = 3 * l.th + 14 * l.scale;
    return l;
}

/* The column headers, and a key below the matrix naming the columns that
 * are no row's class. */
static void draw_columns(data_image *img, const shown_classes *sh, const char *const *names,
                         const confusion_layout *l) {
    char text[64];
    int key_y = l->y0 + sh->num_rows * l->cell + l->th;
    for (int j = 0; j <= sh->num_cols; j++) {
        if (j == sh->num_cols && !sh->other) break;
        const int number = j < sh->num_cols ? class_number(sh, sh->cols[j]) : -1;
        snprintf(text, sizeof text, number >= 0 ? "%d" : "other", number);
        data_draw_text(img, l->x0 + j * l->cell + (l->cell - data_text_width(text, l->scale)) / 2,
                       l->y0 - l->th - 2 * l->scale, l->scale, text, BLACK);
        if (number < sh->num_rows) continue;
        class_label(text, sizeof text, number, names[sh->cols[j]]);
        data_draw_text(img, l->x0, key_y, l->scale, text, GREY);
        key_y += l->th + 2 * l->scale;
    }
}

base_status data_plot_confusion(data_image *out, const char *title, const char *const *names,
                               const size_t *counts, int classes, int max_shown, base_error *err) {
    *out = (data_image){0};
    shown_classes sh = {0};
    base_status st = choose_classes(counts, classes, max_shown, &sh, err);
    const confusion_layout l = confusion_measure(&sh, names);
    const int width = l.x0 + (sh.num_cols + sh.other) * l.cell + 8 * l.scale;
    const int title_w = data_text_width(title, l.scale) + 16 * l.scale;
    const int height = l.y0 + sh.num_rows * l.cell + (l.key_lines + 1) * (l.th + 2 * l.scale) + 8 * l.scale;
    if (st == BASE_OK) st = blank(out, width > title_w ? width : title_w, height, err);
    if (st != BASE_OK) goto done;
    data_draw_text(out, 6 * l.scale, 4 * l.scale, l.scale, title, BLACK);
    data_draw_text(out, l.x0, 6 * l.scale + l.th, l.scale, "predicted (columns) by true class (rows)", GREY);
    draw_columns(out, &sh, names, &l);
    char text[64];
    for (int i = 0; i < sh.num_rows; i++) {
        const int t = sh.rows[i], y = l.y0 + i * l.cell;
        const size_t total = row_sum(counts, classes, t);
        class_label(text, sizeof text, i, names[t]);
        data_draw_text(out, l.x0 - 6 * l.scale - data_text_width(text, l.scale), y + (l.cell - l.th) / 2,
                       l.scale, text, BLACK);
        size_t elsewhere = total;
        for (int j = 0; j < sh.num_cols; j++) {
            const size_t c = counts[(size_t)t * classes + sh.cols[j]];
            elsewhere -= c;
            draw_cell(out, l.x0 + j * l.cell, y, l.cell, c, total, l.scale);
        }
        if (sh.other) draw_cell(out, l.x0 + sh.num_cols * l.cell, y, l.cell, elsewhere, total, l.scale);
    }
done:
    free(sh.rows);
    free(sh.cols);
    return st;
}
