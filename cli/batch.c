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
    run->pre = *vit_model_preprocess(run->model);
    if (run->size) data_preprocess_set_size(&run->pre, (int)run->size);
    vit_error err;
    const double start = cli_now_seconds();
    /* The loader first: its thread decodes the first batch while this one
     * makes the context (a one-shot run's decode and context overlap). */
    if ((paths && data_loader_create(&run->pre, paths, count, (int)run->batch, workers, prefetch,
                                     &run->loader, &err) != VIT_OK) ||
        vit_context_create(run->model, (int)run->batch, (int)run->size,
                           cli_thread_count((int)run->threads), &run->ctx, &err) != VIT_OK) {
        fprintf(stderr, "vit %s: %s\n", run->command, err.message);
        return -1;
    }
    run->timings.start = cli_now_seconds() - start;
    if (!(run->outputs = malloc(sizeof(float) * (size_t)run->classes * (size_t)run->batch))) {
        fprintf(stderr, "vit %s: out of memory\n", run->command);
        return -1;
    }
    return 0;
}

static int compute_batch(void *self, data_batch *b, float *results) {
    cli_batch_run *run = self;
    return cli_run_batch_softmax(run->command, run->ctx, run->model, run->paths, b, results,
                                 !run->logits);
}

int cli_batch_each_mpi(cli_batch_run *run, const char *const *paths, size_t count,
                       const cli_batch_handlers *h, double *seconds) {
    run->paths = paths;
    const cli_mpi_job job = {.command = run->command,
                             .pre = &run->pre,
                             .paths = paths,
                             .count = count,
                             .batch = (int)run->batch,
                             .floats = (size_t)vit_model_output_size(run->model),
                             .compute = compute_batch,
                             .handlers = *h,
                             .self = run};
    const int rc = cli_mpi_run(&job, seconds);
    run->timings.total = *seconds;
    run->timings.split = 0;
    return rc;
}

int cli_run_next_batch(const char *command, vit_context *ctx, const vit_model *model,
                       data_loader *loader, const char *const *paths, data_batch *b,
                       float *outputs, int softmax, cli_timings *t) {
    /* How long the model waits for the loader: decoding that the prefetch
     * did not hide behind the previous forward pass. */
    const double wait = cli_now_seconds();
    if (data_loader_next(loader, b) <= 0) return 0;
    const double forward = cli_now_seconds();
    t->decode += forward - wait;
    const int rc = cli_run_batch_softmax(command, ctx, model, paths, b, outputs, softmax);
    t->forward += cli_now_seconds() - forward;
    return rc != 0 ? -1 : 1;
}

int cli_batch_each(cli_batch_run *run, const char *const *paths, const cli_batch_handlers *h,
                   double *seconds) {
    const double start = cli_now_seconds();
    data_batch b;
    cli_catch_stop_signals();
    cli_timings *t = &run->timings;
    t->split = 1;
    for (;;) {
        if (cli_stop_requested()) break;
        const int rc = cli_run_next_batch(run->command, run->ctx, run->model, run->loader, paths,
                                          &b, run->outputs, !run->logits, t);
        if (rc == 0) break;
        if (rc < 0) return -1;
        for (int i = 0; i < b.count; i++) {
            const size_t index = b.first + (size_t)i;
            if (b.row[i] < 0)
                h->item(h->self, index, NULL, b.errors[i].message);
            else
                h->item(h->self, index, run->outputs + (size_t)b.row[i] * run->classes, NULL);
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
    data_loader_free(run->loader);
    vit_context_free(run->ctx);
    free(run->outputs);
    vit_model_free(run->model);
}
