/* The inference pipeline (vit_pipeline.h): loader, context, row buffers and
 * the per-batch step every command used to put together itself. */
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "vit_pipeline.h"

/* What the loader makes (data/preprocess.h): planar RGB. */
#define PIPELINE_CHANNELS 3

struct vit_pipeline {
    const vit_model *model;
    vit_context *ctx;
    data_preprocess pre; /* the model's recipe at the pipeline's size */
    data_loader *loader;
    const char *const *paths; /* the loader's, for the rows' error messages */
    int batch, channels, row_floats, softmax;
    float *outputs; /* batch x row_floats */
    vit_pipeline_timings timings;
};

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

base_status vit_pipeline_open(vit_pipeline *p, const vit_pipeline_source *source, int decode_threads,
                             int prefetch, base_error *err) {
    p->paths = source->paths;
    const int threads = decode_threads > 0 ? decode_threads : 1;
    /* classify --stream opens every batch: its loader and buffers stay. */
    if (p->loader && !prefetch && !source->schedule &&
        data_loader_restart(p->loader, source->paths, source->count, threads) == 0)
        return BASE_OK;
    data_loader_free(p->loader);
    p->loader = NULL;
    if (source->schedule)
        return data_loader_create_scheduled(&p->pre, source->paths, source->count, p->batch, threads,
                                            prefetch, source->schedule, source->schedule_context,
                                            &p->loader, err);
    return data_loader_create(&p->pre, source->paths, source->count, p->batch, threads, prefetch,
                              &p->loader, err);
}

base_status vit_pipeline_create(const vit_model *model, const vit_pipeline_options *options,
                               const vit_pipeline_source *source, vit_pipeline **out,
                               base_error *err) {
    *out = NULL;
    const vit_config *config = vit_model_config(model);
    if (options->batch < 1)
        return base_error_set(err, BASE_E_ARG, "batch size %d: must be at least 1", options->batch);
    if (config->num_channels != PIPELINE_CHANNELS)
        return base_error_set(err, BASE_E_UNSUPPORTED,
                             "the model takes %d input channels; images are read as RGB (%d)",
                             config->num_channels, PIPELINE_CHANNELS);
    vit_pipeline *p = calloc(1, sizeof *p);
    if (!p) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    p->model = model;
    p->batch = options->batch;
    p->channels = config->num_channels;
    p->softmax = options->softmax;
    p->row_floats = vit_model_output_size(model);
    p->pre = *vit_model_preprocess(model);
    if (options->size) data_preprocess_set_size(&p->pre, options->size);
    const double start = now_seconds();
    /* The loader first: its thread decodes the first batch while this one
     * makes the context (a one-shot run's decode and context overlap). */
    base_status st = BASE_OK;
    if (source && source->paths)
        st = vit_pipeline_open(p, source, options->decode_threads, options->prefetch, err);
    if (st == BASE_OK)
        st = vit_context_create(model, p->batch, options->size, options->threads, &p->ctx, err);
    if (st == BASE_OK &&
        !(p->outputs = malloc(sizeof(float) * (size_t)p->row_floats * (size_t)p->batch)))
        st = base_error_set(err, BASE_E_NOMEM, "out of memory");
    if (st != BASE_OK) {
        vit_pipeline_free(p);
        return st;
    }
    p->timings.start = now_seconds() - start;
    *out = p;
    return BASE_OK;
}

/* Whether a row is all finite: NaN/Inf weights, or a preprocessing std
 * that overflows the pixels, give outputs no result can be made of (and
 * that JSON cannot carry). The rows that are get the softmax. */
static int finish_row(const vit_pipeline *p, float *row) {
    int finite = 1;
    for (int c = 0; c < p->row_floats; c++) finite &= isfinite(row[c]) != 0;
    if (finite && p->softmax && vit_model_config(p->model)->num_classes > 0)
        vit_softmax(row, p->row_floats);
    return finite;
}

base_status vit_pipeline_run_images(vit_pipeline *p, const float *images, int n, int *finite,
                                   base_error *err) {
    if (n < 0 || n > p->batch)
        return base_error_set(err, BASE_E_ARG, "%d images for a pipeline of batch %d", n, p->batch);
    if (n == 0) return BASE_OK;
    const base_status st =
        vit_forward_checked(p->ctx, images, n, p->channels, data_preprocess_out_height(&p->pre),
                            data_preprocess_out_width(&p->pre), p->outputs, err);
    if (st != BASE_OK) return st;
    for (int i = 0; i < n; i++) {
        const int ok = finish_row(p, p->outputs + (size_t)i * p->row_floats);
        if (finite) finite[i] = ok;
    }
    return BASE_OK;
}

/* The forward pass of a loaded batch; files whose rows are not finite are
 * failed in b, naming the file and the cause. */
static base_status run_batch(vit_pipeline *p, data_batch *b, base_error *err) {
    if (b->num_good == 0) return BASE_OK;
    const base_status st = vit_forward_checked(p->ctx, b->images, b->num_good, p->channels,
                                              b->height, b->width, p->outputs, err);
    if (st != BASE_OK) return st;
    for (int i = 0; i < b->count; i++) {
        const int row = b->row[i];
        if (row < 0 || finish_row(p, p->outputs + (size_t)row * p->row_floats)) continue;
        b->row[i] = -1;
        base_error_set(&b->errors[i], BASE_E_FORMAT, "%s: model output is not finite (NaN/Inf)",
                      p->paths[b->first + (size_t)i]);
    }
    return BASE_OK;
}

int vit_pipeline_next(vit_pipeline *p, data_batch *b, base_error *err) {
    if (!p->loader) return 0;
    /* How long the model waits for the loader: decoding that the prefetch
     * did not hide behind the previous forward pass. */
    const double wait = now_seconds();
    if (data_loader_next(p->loader, b) <= 0) return 0;
    const double forward = now_seconds();
    p->timings.decode += forward - wait;
    const base_status st = run_batch(p, b, err);
    p->timings.forward += now_seconds() - forward;
    return st == BASE_OK ? 1 : -1;
}

const float *vit_pipeline_row(const vit_pipeline *p, const data_batch *b, int i) {
    const int row = b->row[i];
    return row < 0 ? NULL : p->outputs + (size_t)row * p->row_floats;
}

int vit_pipeline_row_size(const vit_pipeline *p) { return p->row_floats; }
const float *vit_pipeline_outputs(const vit_pipeline *p) { return p->outputs; }
vit_context *vit_pipeline_context(vit_pipeline *p) { return p->ctx; }
const data_preprocess *vit_pipeline_preprocess(const vit_pipeline *p) { return &p->pre; }
const vit_pipeline_timings *vit_pipeline_get_timings(const vit_pipeline *p) { return &p->timings; }

void vit_pipeline_free(vit_pipeline *p) {
    if (!p) return;
    data_loader_free(p->loader);
    vit_context_free(p->ctx);
    free(p->outputs);
    free(p);
}
