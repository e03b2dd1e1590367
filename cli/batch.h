/* batch.h — the batch run classify and eval share, on a vit_pipeline
 * (private to cli/; cli/batch.c) */
#ifndef CLI_BATCH_H
#define CLI_BATCH_H

#include <stddef.h>
#include "outputs.h"
#include "progress.h"
#include "vit_pipeline.h"

/* The pipeline's next batch into b (vit_pipeline_next), its timings
 * into t. 1: computed, 0: no batch left, -1: the forward pass failed
 * (reported). The one batch step of classify, eval, classify --stream and
 * the inspection commands. */
int cli_run_next_batch(const char *command, vit_pipeline *pipeline, data_batch *b, cli_timings *t);

/* ------------------------------------------------------ batch runs
 * What classify and eval share (cli/batch.c): a model with a head run over
 * a list of image files batch by batch. Fields are filled step by step;
 * cli_batch_free releases whatever was made (a zeroed run is allowed). */
typedef struct cli_batch_run {
    const char *command;     /* "classify": names the command in messages */
    long threads, size, batch; /* -t (0: all cores), --size (0: native), -b */
    base_limits limits;
    int allow_unused;        /* --allow-unused */
    vit_model *model;
    int classes;             /* of the model's head */
    vit_pipeline *pipeline;  /* context, loader and rows (vit_pipeline.h) */
    cli_protected protect;   /* files the outputs must not overwrite */
    cli_lock lock;           /* held while the outputs are written */
    int logits;              /* outputs are the head's logits, not probabilities */
    cli_timings timings;     /* load, decode wait, forward and loop time */
} cli_batch_run;

/* Parses the limit options, then -k (top_k_text NULL: the command has
 * none), -t, --size and -b (NULL: absent, the defaults stay), printing one
 * line and returning -1 at the first bad value. */
int cli_batch_numbers(cli_batch_run *run, const char *const *limit_values, const char *top_k_text,
                      long *top_k, const char *threads_text, const char *size_text,
                      const char *batch_text);

/* Sets the threads and loads the model; a model without a head is refused
 * with "... has no classification head" + no_head_note. -1 after one line. */
int cli_batch_load_model(cli_batch_run *run, const char *model_path, const char *labels_path,
                         const char *pos_resample, const char *no_head_note);

/* No batch larger than the images there are (no memory for empty rows). */
void cli_batch_fit(cli_batch_run *run, size_t count);

/* The pipeline: the inference context, the loader over paths (workers
 * decoding threads, prefetch: decode the next batch while the model runs;
 * paths NULL: no loader yet, for cli_batch_each_mpi and --stream) and the
 * rows. */
int cli_batch_start(cli_batch_run *run, const char *const *paths, size_t count, int workers,
                    int prefetch);

/* What a command does with each image and after each batch. item gets the
 * image's index in paths and its probabilities, or NULL and why it failed.
 * batch_done returns -1 to stop the run as failed. */
typedef struct cli_batch_handlers {
    void (*item)(void *self, size_t index, const float *probs, const char *error);
    int (*batch_done)(void *self, const data_batch *b, double elapsed);
    void *self;
} cli_batch_handlers;

/* Runs every batch until the end or a SIGINT/SIGTERM (cli_stop_requested
 * says which); seconds gets the time taken. -1 when the forward pass or a
 * handler failed (reported). */
int cli_batch_each(cli_batch_run *run, const char *const *paths, const cli_batch_handlers *h,
                   double *seconds);

/* cli_batch_each over the processes of an MPI job (cli_mpi.h): every rank
 * computes, rank 0's handlers see every file in order. */
int cli_batch_each_mpi(cli_batch_run *run, const char *const *paths, size_t count,
                       const cli_batch_handlers *h, double *seconds);

/* "vit CMD: message" for an image that failed, over the progress line. */
void cli_batch_report_failure(const cli_batch_run *run, int progress, const char *message);

void cli_batch_free(cli_batch_run *run);

#endif
