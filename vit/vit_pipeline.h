/* vit_pipeline.h — image files in, one row per file out, in input order.
 *
 * The path every image takes through vitc: the loader (data/loader.c)
 * decodes and preprocesses a batch of files with its own worker threads,
 * the model runs the batch in one inference context, and each file comes
 * back as a row of the model's outputs (probabilities or logits for a model
 * with a head, pooled features without) or as the reason it failed. Every
 * command that runs a model (classify, eval, features, attention, segment,
 * patches, serve, the MPI drivers, the Fashion-MNIST evaluation) runs it
 * through one of these, and keeps for itself only its options and the
 * formatting of rows.
 *
 *     vit_pipeline_options o = {.batch = 16, .threads = 0, .prefetch = 1, .softmax = 1};
 *     vit_pipeline_source src = {.paths = paths, .count = n};
 *     vit_pipeline *p;
 *     if (vit_pipeline_create(model, &o, &src, &p, &err) != BASE_OK) ...;
 *     data_batch b;
 *     int rc;
 *     while ((rc = vit_pipeline_next(p, &b, &err)) > 0)
 *         for (int i = 0; i < b.count; i++) {
 *             const float *row = vit_pipeline_row(p, &b, i); // NULL: b.errors[i]
 *             ...                                            // file b.first + i
 *         }
 *     vit_pipeline_free(p);
 *
 * Batch sources. By default batches follow the paths in order. A source
 * with a schedule hands out batches where it says (the MPI drivers: rank 0
 * and the workers ask the job for the next batch), and vit_pipeline_open
 * gives the pipeline new paths between batches (classify --stream: the
 * paths arrive on a pipe). A caller whose images are already decoded and
 * preprocessed in memory (vit serve: request bodies; the Fashion-MNIST
 * test split) hands them in with vit_pipeline_run_images.
 *
 * Library rules: errors are values (base_error), nothing is printed, no
 * process-wide state is read or set; thread counts are parameters. The
 * loader's threads decode; the forward pass's OpenMP threads run the model
 * (outer loops only, never nested). Buffers are made once, at create: a
 * batch allocates nothing per image. Rows do not depend on the batch size,
 * the thread counts or the instruction set (vit.h).
 */
#ifndef VIT_PIPELINE_H
#define VIT_PIPELINE_H

#include <stddef.h>

#include "vit.h"

typedef struct vit_pipeline vit_pipeline;

typedef struct vit_pipeline_options {
    int batch;          /* files per forward pass (>= 1) */
    int size;           /* input size; 0: the model's own (vit_context_create) */
    int threads;        /* forward-pass threads; 0: one per processor */
    int decode_threads; /* without prefetch: threads decoding each batch (0: 1) */
    int prefetch;       /* one loader thread decodes the next batch during the forward pass */
    int softmax;        /* 1: a head's rows are probabilities; 0: logits */
} vit_pipeline_options;

/* Where the files come from: paths (borrowed: they must outlive their use)
 * and, optionally, a schedule giving the index of each batch's first file
 * (data_loader_schedule; DATA_LOADER_END when there is no more), called on
 * the loader's thread with prefetch. */
typedef struct vit_pipeline_source {
    const char *const *paths;
    size_t count;
    data_loader_schedule schedule; /* NULL: batches in order */
    void *schedule_context;
} vit_pipeline_source;

/* Where a run's time went, in seconds, added up over the batches. */
typedef struct vit_pipeline_timings {
    double start;   /* vit_pipeline_create: loader and context */
    double decode;  /* waiting for decoded images (decoding the prefetch did not hide) */
    double forward; /* the forward passes and the rows' checks */
} vit_pipeline_timings;

/* Makes the context for options->batch images at options->size on
 * options->threads threads, the row buffers and, when source is not NULL
 * (and has paths), the loader over it; the loader starts decoding before the
 * context is made, so a one-shot run's decode and setup overlap. model is
 * borrowed and must outlive the pipeline: one loaded model serves several
 * pipelines (serve's, a Python caller's, a command's at two sizes), and a
 * command reads its labels and settings before it makes one. BASE_E_UNSUPPORTED when the model
 * takes another channel count than the loader makes (RGB). */
base_status vit_pipeline_create(const vit_model *model, const vit_pipeline_options *options,
                               const vit_pipeline_source *source, vit_pipeline **out,
                               base_error *err);

/* Replaces the files (the loader over the old ones is stopped): the next
 * batch is the new source's first. decode_threads and prefetch as in
 * vit_pipeline_options. */
base_status vit_pipeline_open(vit_pipeline *p, const vit_pipeline_source *source, int decode_threads,
                             int prefetch, base_error *err);

/* Takes the loader's next batch into b and runs it: 1, with b describing
 * the files (b->first, b->count; b->row[i] -1 and b->errors[i] for a file
 * that failed: unreadable, or outputs not finite); 0 when the source has no
 * batch left (or no source was given); -1 when the forward pass failed
 * (err). */
int vit_pipeline_next(vit_pipeline *p, data_batch *b, base_error *err);

/* The row of file i of the batch last returned (vit_pipeline_row_size
 * floats), or NULL when it failed. */
const float *vit_pipeline_row(const vit_pipeline *p, const data_batch *b, int i);

/* Runs n (<= options->batch) images already decoded and preprocessed (n x
 * channels x height x width, the model's recipe at the pipeline's size):
 * row i at vit_pipeline_outputs(p) + i * vit_pipeline_row_size(p);
 * finite[i] (may be NULL) says whether row i is all finite (only finite
 * rows get the softmax). */
base_status vit_pipeline_run_images(vit_pipeline *p, const float *images, int n, int *finite,
                                   base_error *err);

/* Floats per row: the model's outputs (vit_model_output_size). */
int vit_pipeline_row_size(const vit_pipeline *p);

/* The rows of the last batch, at b->row[i] (vit_pipeline_next) or i
 * (vit_pipeline_run_images). */
const float *vit_pipeline_outputs(const vit_pipeline *p);

/* The inference context, for what a command captures from the forward pass
 * (vit_context_capture: attention maps, tokens) before vit_pipeline_next. */
vit_context *vit_pipeline_context(vit_pipeline *p);

/* The preprocessing recipe at the pipeline's size (what serve decodes
 * request bodies with). */
const data_preprocess *vit_pipeline_preprocess(const vit_pipeline *p);

const vit_pipeline_timings *vit_pipeline_get_timings(const vit_pipeline *p);

/* Stops the loader's threads and frees; NULL is allowed. */
void vit_pipeline_free(vit_pipeline *p);

#endif
