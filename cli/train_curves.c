/* vit train --log FILE.csv and --plot FILE.png: the training curves, from
 * the trainer's history (vit_trainer_epoch), rewritten whole and atomically
 * after every epoch so a reader never sees half a file. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "plot.h"
#include "train_curves.h"

/* The columns of timm's summary.csv, then ours. Accuracies in percent, as
 * timm writes them. */
static const char LOG_HEADER[] =
    "epoch,train_loss,eval_loss,eval_top1,eval_top5,lr,images_per_s,train_top1\n";

/* The images/s of epochs an earlier run logged (not in the state: a
 * timing is not a result), read back from the log being continued. */
static double logged_speed(const char *old_log, long epoch) {
    if (!old_log) return NAN;
    for (const char *line = strchr(old_log, '\n'); line && *++line; line = strchr(line, '\n')) {
        char *end;
        if (strtol(line, &end, 10) != epoch || *end != ',') continue;
        const char *field = end; /* the comma before train_loss, field 1 */
        for (int k = 1; k < 6 && field; k++) field = strchr(field + 1, ','); /* to field 6's */
        return field ? strtod(field + 1, NULL) : NAN;
    }
    return NAN;
}

/* A value, or an empty field for NaN (no validation). */
static void field(FILE *fp, const char *format, double v) {
    fputc(',', fp);
    if (isfinite(v)) fprintf(fp, format, v);
}

int cli_train_write_log(const char *path, const vit_trainer_epoch *history, size_t count,
                        const double *speeds, long first_epoch_here, const char *old_log) {
    base_atomic_file *file = NULL;
    base_error err;
    FILE *fp = NULL;
    if (base_atomic_open(path, &file, &err) != BASE_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        return -1;
    }
    if (!(fp = base_atomic_stream(file))) {
        fprintf(stderr, "vit train: %s: cannot write: %s\n", path, strerror(errno));
        base_atomic_abort(file);
        return -1;
    }
    fputs(LOG_HEADER, fp);
    for (size_t i = 0; i < count; i++) {
        const vit_trainer_epoch *e = &history[i];
        const double speed = e->epoch > first_epoch_here ? speeds[e->epoch - first_epoch_here - 1]
                                                         : logged_speed(old_log, e->epoch);
        fprintf(fp, "%ld", e->epoch);
        field(fp, "%.6g", e->train_loss);
        field(fp, "%.6g", e->eval_loss);
        field(fp, "%.4f", 100.0 * e->eval_top1);
        field(fp, "%.4f", 100.0 * e->eval_top5);
        field(fp, "%.6g", e->lr);
        field(fp, "%.1f", speed);
        field(fp, "%.4f", 100.0 * e->train_top1);
        fputc('\n', fp);
    }
    if (base_atomic_commit(file, &err) != BASE_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        return -1;
    }
    return 0;
}

/* A curve of the history: which field, its name and colour. */
typedef struct curve {
    int field; /* 0 train loss, 1 eval loss, 2 train top-1, 3 eval top-1, 4 eval top-5 */
    const char *name;
    uint8_t rgb[3];
} curve;

static double field_of(const vit_trainer_epoch *e, int field) {
    const double all[5] = {e->train_loss, e->eval_loss, 100 * e->train_top1, 100 * e->eval_top1,
                           100 * e->eval_top5};
    return all[field];
}

/* One 640x440 chart of the curves against the epoch; values: scratch for
 * num_curves x count points. */
static base_status chart(data_image *out, const char *title, const vit_trainer_epoch *history,
                        size_t count, const double *epochs, double *values, const curve *curves,
                        int num_curves, base_error *err) {
    data_plot_series series[3];
    for (int s = 0; s < num_curves; s++) {
        double *y = values + (size_t)s * count;
        for (size_t i = 0; i < count; i++) y[i] = field_of(&history[i], curves[s].field);
        series[s] = (data_plot_series){curves[s].name, y,
                                       {curves[s].rgb[0], curves[s].rgb[1], curves[s].rgb[2]}};
    }
    return data_plot_lines(out, 640, 440, title, "epoch", epochs, (int)count, series, num_curves,
                           err);
}

/* Two charts side by side into both: loss, and accuracy. */
static base_status draw_curves(data_image *both, const vit_trainer_epoch *history, size_t count,
                              const double *epochs, double *values, base_error *err) {
    static const curve LOSSES[2] = {{0, "train (smoothed)", {31, 119, 180}},
                                    {1, "validation", {255, 127, 14}}};
    static const curve ACCURACY[3] = {{2, "train top-1", {31, 119, 180}},
                                      {3, "val top-1", {255, 127, 14}},
                                      {4, "val top-5", {44, 160, 44}}};
    const int val = isfinite(history[count - 1].eval_top1); /* validation images given */
    data_image loss = {0}, acc = {0};
    base_status st = chart(&loss, "loss (cross-entropy)", history, count, epochs, values, LOSSES,
                          1 + val, err);
    if (st == BASE_OK)
        st = chart(&acc, "accuracy (%)", history, count, epochs, values, ACCURACY, val ? 3 : 1, err);
    if (st == BASE_OK) {
        *both = (data_image){loss.width + acc.width, loss.height,
                             malloc((size_t)(loss.width + acc.width) * loss.height * 3)};
        if (!both->pixels) st = base_error_set(err, BASE_E_NOMEM, "out of memory");
    }
    if (st == BASE_OK) {
        data_image_paste(both, &loss, 0, 0);
        data_image_paste(both, &acc, loss.width, 0);
    }
    data_image_free(&loss);
    data_image_free(&acc);
    return st;
}

int cli_train_plot(const char *path, const vit_trainer_epoch *history, size_t count) {
    if (count == 0) return 0;
    double *epochs = malloc(sizeof *epochs * count), *values = malloc(sizeof *values * 3 * count);
    data_image both = {0};
    base_error err = {0};
    base_status st = epochs && values ? BASE_OK : base_error_set(&err, BASE_E_NOMEM, "out of memory");
    for (size_t i = 0; st == BASE_OK && i < count; i++) epochs[i] = (double)history[i].epoch;
    if (st == BASE_OK) st = draw_curves(&both, history, count, epochs, values, &err);
    if (st == BASE_OK) st = data_write_png(path, both.width, both.height, 3, both.pixels, &err);
    if (st != BASE_OK) fprintf(stderr, "vit train: --plot %s: %s\n", path, err.message);
    data_image_free(&both);
    free(epochs);
    free(values);
    return st == BASE_OK ? 0 : -1;
}
