/* The batch run classify and eval share: numeric options, model loading,
 * context and loader, and the loop that feeds batches through the model
 * with SIGINT/SIGTERM stopping it between batches. Each command keeps only
 * what is its own (rows, accuracy tables) in callbacks. */
#include <stdlib.h>

#include "cli.h"
#include "cli_mpi.h"

int cli_batch_numbers(cli_batch_run *run, const char *const *limit_values, const char *top_k_text,
                      long *top_k, const char *threads_text, const char *size_text,
                      const char *batch_text) {
    const char *command = run->command;
    /* The order of the checks decides which of several bad values is named. */
    if (cli_limits(command, limit_values, CLI_NUM_LIMIT_OPTIONS, &run->limits, &run->allow_unused) != 0 ||
        (top_k_text && cli_int(command, "-k", top_k_text, 1, 1000, top_k)) ||
        (threads_text && cli_int(command, "-t", threads_text, 1, 1024, &run->threads)) ||
        (size_text && cli_int(command, "--size", size_text, 1, 8192, &run->size)) ||
        (batch_text && cli_int(command, "-b", batch_text, 1, 1024, &run->batch)))
        return -1;
    return 0;
}

int cli_batch_load_model(cli_batch_run *run, const char *model_path, const char *labels_path,
                         const char *pos_resample, const char *no_head_note) {
    cli_set_threads((int)run->threads);
    const double start = cli_now_seconds();
    run->model = cli_load_model_limited(run->command, model_path, labels_path, pos_resample,
                                        &run->limits, (int)run->size, run->allow_unused);
    run->timings.load = cli_now_seconds() - start;
    if (!run->model) return -1;
    if (vit_model_config(run->model)->num_classes == 0) {
        fprintf(stderr, "vit %s: %s has no classification head%s\n", run->command,
                vit_model_weights_path(run->model), no_head_note);
        return -1;
    }
    run->classes = vit_model_config(run->model)->num_classes;
    return 0;
}

void cli_batch_fit(cli_batch_run *run, size_t count) {
    if ((size_t)run->batch > count && count > 0) run->batch = (long)count;
}

int cli_batch_start(cli_batch_run *run, const char *const *paths, size_t count, int workers,
                    int prefetch) {
    const vit_pipeline_options options = {.batch = (int)run->batch,
                                          .size = (int)run->size,
                                          .threads = cli_thread_count((int)run->threads),
                                          .decode_threads = workers,
                                          .prefetch = prefetch,
                                          .softmax = !run->logits};
    const vit_pipeline_source source = {.paths = paths, .count = count};
    base_error err;
    if (vit_pipeline_create(run->model, &options, &source, &run->pipeline, &err) != BASE_OK) {
        fprintf(stderr, "vit %s: %s\n", run->command, err.message);
        return -1;
    }
    cli_timings_take(&run->timings, run->pipeline);
    return 0;
}

/* Over MPI the pipeline has run the batch: its rows are the results. */
static int batch_rows(void *self, data_batch *b, float **results) {
    (void)b;
    cli_batch_run *run = self;
    *results = (float *)vit_pipeline_outputs(run->pipeline);
    return 0;
}

int cli_batch_each_mpi(cli_batch_run *run, const char *const *paths, size_t count,
                       const cli_batch_handlers *h, double *seconds) {
    const cli_mpi_job job = {.command = run->command,
                             .pipeline = run->pipeline,
                             .paths = paths,
                             .count = count,
                             .batch = (int)run->batch,
                             .floats = (size_t)vit_pipeline_row_size(run->pipeline),
                             .rows = batch_rows,
                             .handlers = *h,
                             .self = run};
    const int rc = cli_mpi_run(&job, seconds);
    run->timings.total = *seconds;
    run->timings.split = 0;
    return rc;
}

int cli_run_next_batch(const char *command, vit_pipeline *pipeline, data_batch *b, cli_timings *t) {
    base_error err;
    const int rc = vit_pipeline_next(pipeline, b, &err);
    cli_timings_take(t, pipeline);
    if (rc < 0) fprintf(stderr, "vit %s: %s\n", command, err.message);
    return rc;
}

int cli_batch_each(cli_batch_run *run, const char *const *paths, const cli_batch_handlers *h,
                   double *seconds) {
    (void)paths; /* the pipeline's source */
    const double start = cli_now_seconds();
    data_batch b;
    cli_catch_stop_signals();
    cli_timings *t = &run->timings;
    t->split = 1;
    for (;;) {
        if (cli_stop_requested()) break;
        const int rc = cli_run_next_batch(run->command, run->pipeline, &b, t);
        if (rc == 0) break;
        if (rc < 0) return -1;
        for (int i = 0; i < b.count; i++) {
            const float *row = vit_pipeline_row(run->pipeline, &b, i);
            h->item(h->self, b.first + (size_t)i, row, row ? NULL : b.errors[i].message);
        }
        if (h->batch_done(h->self, &b, cli_now_seconds() - start) != 0) return -1;
    }
    *seconds = t->total = cli_now_seconds() - start;
    return 0;
}

void cli_batch_report_failure(const cli_batch_run *run, int progress, const char *message) {
    /* The message replaces the progress line rather than joining it. */
    if (progress) cli_progress_clear();
    fprintf(stderr, "vit %s: %s\n", run->command, message);
}

void cli_batch_free(cli_batch_run *run) {
    cli_unlock_output(&run->lock);
    cli_protected_free(&run->protect);
    vit_pipeline_free(run->pipeline);
    vit_model_free(run->model);
}
