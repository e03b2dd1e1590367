/* vit_pipeline (vit/vit_pipeline.h): rows in input order, the same bits as
 * a plain forward pass whatever the batch size, threads, prefetch or batch
 * source; failed files in their place. */
#include <math.h>
#include <string.h>

#include "test_util.h"
#include "vit_pipeline.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures"
#define MODEL FIXTURES "/parity/hf_vit_d48_h3"
#define APPLE FIXTURES "/real/apple.png"
#define POLARS FIXTURES "/real/polars.png"
#define MISSING FIXTURES "/real/no-such-image.png"

static const char *const PATHS[] = {APPLE, POLARS, MISSING, POLARS, APPLE};
#define COUNT 5

/* Runs every batch of a pipeline and copies the rows (NaN where a file
 * failed) into rows, in input order; returns the files seen. */
static size_t run_all(vit_pipeline *p, float *rows, int n) {
    data_batch b;
    base_error err;
    int rc;
    size_t seen = 0;
    while ((rc = vit_pipeline_next(p, &b, &err)) > 0) {
        for (int i = 0; i < b.count; i++) {
            const float *row = vit_pipeline_row(p, &b, i);
            float *dst = rows + (b.first + (size_t)i) * (size_t)n;
            for (int c = 0; c < n; c++) dst[c] = row ? row[c] : NAN;
            seen++;
        }
    }
    cr_assert_eq(rc, 0, "%s", err.message);
    return seen;
}

static size_t run_with(const vit_model *model, vit_pipeline_options o,
                       const vit_pipeline_source *src, float *rows) {
    vit_pipeline *p;
    base_error err;
    cr_assert(vit_pipeline_create(model, &o, src, &p, &err) == BASE_OK, "%s", err.message);
    const size_t seen = run_all(p, rows, vit_pipeline_row_size(p));
    vit_pipeline_free(p);
    return seen;
}

/* A batch source that hands out the batches backwards (as an MPI job's
 * schedule may hand them out in any order). */
typedef struct backwards {
    size_t next;
    int batch;
} backwards;

static size_t schedule_backwards(void *self) {
    backwards *s = self;
    if (s->next == DATA_LOADER_END) return DATA_LOADER_END;
    const size_t first = s->next;
    s->next = first == 0 ? DATA_LOADER_END : first - (size_t)s->batch;
    return first;
}

Test(pipeline, rows_match_forward_in_order_whatever_the_batching) {
    vit_model *model;
    base_error err;
    cr_assert(vit_model_load(MODEL, NULL, &model, &err) == BASE_OK, "%s", err.message);
    const int n = vit_model_output_size(model);
    float want[COUNT * 64], got[COUNT * 64];
    cr_assert(n <= 64);
    /* The reference: one file at a time, plain forward pass and softmax. */
    const vit_pipeline_source all = {PATHS, COUNT, NULL, NULL};
    vit_pipeline_options one = {.batch = 1, .threads = 1, .softmax = 1};
    cr_assert_eq(run_with(model, one, &all, want), COUNT);
    cr_assert(isnan(want[2 * n]), "the missing file fails in its place");
    for (int c = 0; c < n; c++) cr_assert(!isnan(want[c]) && !isnan(want[4 * n + c]));

    const vit_pipeline_options variants[] = {
        {.batch = 2, .threads = 2, .prefetch = 1, .softmax = 1},
        {.batch = 3, .threads = 1, .decode_threads = 2, .softmax = 1},
        {.batch = 8, .threads = 2, .prefetch = 1, .softmax = 1},
    };
    for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
        cr_assert_eq(run_with(model, variants[v], &all, got), COUNT);
        for (int i = 0; i < COUNT * n; i++)
            cr_assert(isnan(want[i]) ? isnan(got[i]) : want[i] == got[i],
                      "variant %zu, value %d differs", v, i);
    }
    /* A scheduled source: batches come in another order, rows stay put. */
    backwards s = {.next = 4, .batch = 2};
    const vit_pipeline_source scheduled = {PATHS, COUNT, schedule_backwards, &s};
    const vit_pipeline_options two = {.batch = 2, .threads = 1, .prefetch = 1, .softmax = 1};
    cr_assert_eq(run_with(model, two, &scheduled, got), COUNT);
    for (int i = 0; i < COUNT * n; i++)
        cr_assert(isnan(want[i]) ? isnan(got[i]) : want[i] == got[i], "scheduled: value %d", i);
    vit_model_free(model);
}

Test(pipeline, images_in_memory_and_new_sources_between_batches) {
    vit_model *model;
    base_error err;
    cr_assert(vit_model_load(MODEL, NULL, &model, &err) == BASE_OK, "%s", err.message);
    const vit_pipeline_options o = {.batch = 2, .threads = 1, .softmax = 0};
    vit_pipeline *p;
    cr_assert(vit_pipeline_create(model, &o, NULL, &p, &err) == BASE_OK, "%s", err.message);
    data_batch b;
    cr_assert_eq(vit_pipeline_next(p, &b, &err), 0, "no source: no batch");
    /* Logits from files, one source after another (classify --stream). */
    const int n = vit_pipeline_row_size(p);
    float from_files[2 * 64];
    for (int k = 0; k < 2; k++) {
        const vit_pipeline_source src = {PATHS + k, 1, NULL, NULL};
        cr_assert(vit_pipeline_open(p, &src, 1, 0, &err) == BASE_OK, "%s", err.message);
        cr_assert_eq(vit_pipeline_next(p, &b, &err), 1, "%s", err.message);
        memcpy(from_files + k * n, vit_pipeline_row(p, &b, 0), sizeof(float) * (size_t)n);
        cr_assert_eq(vit_pipeline_next(p, &b, &err), 0);
    }
    /* A third source of two files, one missing, on the same loader (kept
     * between sources without prefetch): the good one's row, the other's
     * error. */
    const vit_pipeline_source two = {PATHS + 1, 2, NULL, NULL};
    cr_assert(vit_pipeline_open(p, &two, 2, 0, &err) == BASE_OK, "%s", err.message);
    cr_assert_eq(vit_pipeline_next(p, &b, &err), 1, "%s", err.message);
    cr_assert_eq(b.count, 2);
    cr_assert(memcmp(vit_pipeline_row(p, &b, 0), from_files + n, sizeof(float) * (size_t)n) == 0);
    cr_assert_null(vit_pipeline_row(p, &b, 1));
    cr_assert_eq(vit_pipeline_next(p, &b, &err), 0);
    /* The same images decoded by the caller (vit serve, Fashion-MNIST). */
    const data_preprocess *pre = vit_pipeline_preprocess(p);
    const size_t per = (size_t)3 * data_preprocess_out_height(pre) * data_preprocess_out_width(pre);
    float *images = malloc(sizeof(float) * per * 2);
    cr_assert(images);
    for (int k = 0; k < 2; k++) {
        data_image img;
        cr_assert(data_image_load(PATHS[k], &img, &err) == BASE_OK, "%s", err.message);
        cr_assert(data_preprocess_apply(pre, &img, images + k * per, &err) == BASE_OK, "%s",
                  err.message);
        data_image_free(&img);
    }
    int finite[2];
    cr_assert(vit_pipeline_run_images(p, images, 2, finite, &err) == BASE_OK, "%s", err.message);
    cr_assert(finite[0] && finite[1]);
    cr_assert(memcmp(vit_pipeline_outputs(p), from_files, sizeof(float) * 2 * (size_t)n) == 0,
              "images in memory give the files' logits");
    cr_assert(vit_pipeline_run_images(p, images, 3, NULL, &err) == BASE_E_ARG,
              "more images than the batch is an error, not an overflow");
    free(images);
    vit_pipeline_free(p);
    vit_model_free(model);
}
