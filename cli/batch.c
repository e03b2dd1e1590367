/* The batch runner classify and eval share: decode and preprocess a batch of
 * files in parallel, run the good ones through one forward pass, and keep
 * each file's result or error. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_batch_init(cli_batch *b, const vit_model *model, int capacity, int size,
                   const char *command) {
    memset(b, 0, sizeof *b);
    b->model = model;
    b->capacity = capacity;
    b->pre = *vit_model_preprocess(model);
    if (size) data_preprocess_set_size(&b->pre, size);
    vit_error err;
    if (vit_context_create(model, capacity, size, &b->ctx, &err) != VIT_OK) {
        fprintf(stderr, "vit %s: %s\n", command, err.message);
        return -1;
    }
    const int S = vit_context_image_size(b->ctx);
    b->image_floats = (size_t)3 * S * S;
    b->num_outputs = vit_model_output_size(model);
    b->inputs = malloc(sizeof(float) * b->image_floats * (size_t)capacity);
    b->outputs = malloc(sizeof(float) * (size_t)b->num_outputs * capacity);
    b->status = malloc(sizeof *b->status * (size_t)capacity);
    b->errors = malloc(sizeof *b->errors * (size_t)capacity);
    b->row = malloc(sizeof *b->row * (size_t)capacity);
    if (!b->inputs || !b->outputs || !b->status || !b->errors || !b->row) {
        fprintf(stderr, "vit %s: out of memory for a batch of %d\n", command, capacity);
        cli_batch_free(b);
        return -1;
    }
    return 0;
}

void cli_batch_run(cli_batch *b, const char *const *paths, int count) {
#pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < count; i++)
        b->status[i] = data_preprocess_file(&b->pre, paths[i], b->inputs + (size_t)i * b->image_floats,
                                            &b->errors[i]);
    /* Pack the good images together so one forward pass serves them all. */
    int good = 0;
    for (int i = 0; i < count; i++) {
        b->row[i] = -1;
        if (b->status[i] != VIT_OK) continue;
        if (good != i)
            memmove(b->inputs + (size_t)good * b->image_floats, b->inputs + (size_t)i * b->image_floats,
                    sizeof(float) * b->image_floats);
        b->row[i] = good++;
    }
    vit_error err;
    if (good > 0 && vit_forward(b->ctx, b->inputs, good, b->outputs, &err) != VIT_OK) {
        for (int i = 0; i < count; i++)
            if (b->status[i] == VIT_OK) {
                b->status[i] = err.code;
                b->errors[i] = err;
                b->row[i] = -1;
            }
        return;
    }
    if (vit_model_config(b->model)->num_classes > 0)
        for (int r = 0; r < good; r++) vit_softmax(b->outputs + (size_t)r * b->num_outputs, b->num_outputs);
}

const float *cli_batch_output(const cli_batch *b, int i) {
    return b->row[i] < 0 ? NULL : b->outputs + (size_t)b->row[i] * b->num_outputs;
}

void cli_batch_free(cli_batch *b) {
    vit_context_free(b->ctx);
    free(b->inputs);
    free(b->outputs);
    free(b->status);
    free(b->errors);
    free(b->row);
    memset(b, 0, sizeof *b);
}
