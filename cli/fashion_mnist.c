/* The Fashion-MNIST test split as an evaluation source ('vit eval -m MODEL
 * fashion-mnist'). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The ten classes of Fashion-MNIST (T-shirt/top ... ankle boot). */
#define FASHION_MNIST_CLASSES 10

/* Test images first..first+n-1 as their PNGs would arrive (grey
 * replicated to RGB), through the model's own preprocessing into images
 * (per floats each); the first that fails, or -1. */
static int prepare_batch(const data_mnist *set, int first, int n, const data_preprocess *pre,
                         float *images, size_t per, int *failed) {
    const int W = set->width, H = set->height;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < n; b++) {
        const uint8_t *px = set->pixels + (size_t)(first + b) * W * H;
        data_image rgb = {W, H, malloc((size_t)W * H * 3)};
        base_error e;
        failed[b] = !rgb.pixels;
        for (int i = 0; rgb.pixels && i < W * H; i++) memset(rgb.pixels + 3 * i, px[i], 3);
        if (rgb.pixels) failed[b] = data_preprocess_apply(pre, &rgb, images + b * per, &e) != BASE_OK;
        data_image_free(&rgb);
    }
    for (int b = 0; b < n; b++)
        if (failed[b]) return first + b;
    return -1;
}

/* Top-1/top-5 hits and the confusion counts of n images' logits. */
static void score_batch(const float *logits, const uint8_t *labels, int n, int classes,
                        size_t *top1, size_t *top5, size_t *counts) {
    for (int b = 0; b < n; b++) {
        int top[5];
        const int k = vit_top_k(logits + (size_t)b * classes, classes, 5, top);
        const int truth = labels[b];
        *top1 += top[0] == truth;
        for (int i = 0; i < k; i++) *top5 += top[i] == truth;
        counts[(size_t)truth * classes + top[0]]++;
    }
}

int cli_eval_fashion_mnist(const vit_model *model, int is_default, int batch, int size, int threads,
                           int quiet, const char *confusion_png) {
    const int classes = vit_model_config(model)->num_classes;
    if (classes != FASHION_MNIST_CLASSES) {
        /* An accuracy of a 1000-class model on 10 classes would be a
         * number with no meaning; say which model is meant instead. */
        fprintf(stderr, "vit eval: fashion-mnist has %d classes, %s has %d%s\n",
                FASHION_MNIST_CLASSES, is_default ? "the default (ImageNet-1k) model" : "the model",
                classes, is_default ? ": use -m weights/fashion-mnist-vit.safetensors" : "");
        return CLI_EXIT_FATAL;
    }
    data_mnist set;
    base_error err;
    if (data_mnist_load(NULL, 0, &set, &err) != BASE_OK) {
        fprintf(stderr, "vit eval: %s\n", err.message);
        return CLI_EXIT_FATAL;
    }
    vit_pipeline *pipeline = NULL;
    if (batch > set.count) batch = set.count;
    int exit_code = CLI_EXIT_FATAL;
    /* Logits, not probabilities: the top-5 as the model ranks them. */
    const vit_pipeline_options options = {.batch = batch, .size = size, .threads = threads};
    if (vit_pipeline_create(model, &options, NULL, &pipeline, &err) != BASE_OK) {
        fprintf(stderr, "vit eval: %s\n", err.message);
        data_mnist_free(&set);
        return CLI_EXIT_FATAL;
    }
    const data_preprocess *pre = vit_pipeline_preprocess(pipeline);
    /* Sized by the recipe, which writes the images; the pipeline then
     * refuses them if the context expects another size. */
    const int out_h = data_preprocess_out_height(pre), out_w = data_preprocess_out_width(pre);
    const size_t per = (size_t)vit_model_config(model)->num_channels * out_h * out_w;
    float *images = malloc(sizeof(float) * per * batch);
    int *failed = calloc((size_t)batch, sizeof *failed);
    size_t *counts = calloc((size_t)classes * classes, sizeof *counts);
    if (!images || !failed || !counts) {
        fprintf(stderr, "vit eval: out of memory\n");
        goto done;
    }
    size_t top1 = 0, top5 = 0;
    const double start = cli_now_seconds();
    for (int first = 0; first < set.count; first += batch) {
        const int n = set.count - first < batch ? set.count - first : batch;
        const int bad = prepare_batch(&set, first, n, pre, images, per, failed);
        if (bad >= 0) {
            fprintf(stderr, "vit eval: cannot preprocess test image %d\n", bad);
            goto done;
        }
        if (vit_pipeline_run_images(pipeline, images, n, NULL, &err) != BASE_OK) {
            fprintf(stderr, "vit eval: %s\n", err.message);
            goto done;
        }
        score_batch(vit_pipeline_outputs(pipeline), set.labels + first, n, classes, &top1, &top5,
                    counts);
    }
    const double seconds = cli_now_seconds() - start;
    printf("top-1 %.2f%% (%zu/%d)  top-5 %.2f%% (%zu/%d)\n", 100.0 * top1 / set.count, top1,
           set.count, 100.0 * top5 / set.count, top5, set.count);
    if (!quiet)
        fprintf(stderr, "vit eval: %d images in %.1f s (%.1f images/s), Fashion-MNIST test split\n",
                set.count, seconds, seconds > 0 ? set.count / seconds : 0.0);
    exit_code = CLI_EXIT_OK;
    if (confusion_png && cli_eval_confusion_png(confusion_png, model, counts,
                                                "Fashion-MNIST test split", top1,
                                                (size_t)set.count) != 0)
        exit_code = CLI_EXIT_FATAL;
done:
    free(counts);
    free(images);
    free(failed);
    vit_pipeline_free(pipeline);
    data_mnist_free(&set);
    return exit_code;
}
