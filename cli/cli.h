/* cli.h — the `vit` subcommands and what they share (private to cli/).
 * The shared pieces live in one header per topic, all included here:
 *   args.h      options, numbers, threads, limits
 *   load.h      the model a command names
 *   inputs.h    the image files (PATHs, --files-from, --stream)
 *   outputs.h   protected files, output locks, CSV/JSON text
 *   progress.h  clock, timings, progress line, summary, stop signals
 *   results.h   classify's rows
 *   batch.h     the batch run of classify and eval (a vit_pipeline)
 * The model runs through vit/vit_pipeline.h. */
#ifndef CLI_H
#define CLI_H


#include "args.h"
#include "batch.h"
#include "inputs.h"
#include "load.h"
#include "outputs.h"
#include "progress.h"
#include "results.h"
#include "vit.h"
#include "vit_pipeline.h"

/* Exit statuses, the same for every subcommand. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FATAL = 1,        /* bad arguments, unusable model, unwritable output */
    CLI_EXIT_SOME_FAILED = 2   /* the run finished but some inputs failed */
};

/* What vit info prints about a model, line by line (key, value): the
 * lines of `vit info`, and GET /info of vit serve as JSON. is_default: the
 * model is the shipped one (no -m). */
typedef vit_model_description cli_info_lines; /* vit_model_describe */
void cli_info_describe(const vit_model *model, int is_default, cli_info_lines *info);

/* The same lines as a JSON object (keys with '_' for spaces) plus the
 * numbers (num_classes, image_size, ...); NULL when out of memory. */
struct cJSON *cli_info_json(const vit_model *model, int is_default);

int cli_serve(int argc, char **argv);
int cli_classify(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_info(int argc, char **argv);
int cli_attention(int argc, char **argv);
int cli_features(int argc, char **argv);
int cli_segment(int argc, char **argv);
int cli_patches(int argc, char **argv);
int cli_train(int argc, char **argv);
int cli_quantize(int argc, char **argv);

/* 'vit eval -m MODEL fashion-mnist': top-1 / top-5 on the Fashion-MNIST test
 * split (DATA_FASHION_MNIST_DIR), batch images per pass at size (0: native)
 * on `threads` threads; is_default: the model is the shipped default (no
 * -m), named in the message when its classes are not Fashion-MNIST's;
 * quiet: no timing line. Returns the exit status. */
int cli_eval_fashion_mnist(const vit_model *model, int is_default, int batch, int size, int threads,
                           int quiet, const char *confusion_png);

/* vit eval --confusion: the confusion matrix as a PNG, counts[t * classes +
 * p] images of class t predicted as p, rows named by the model's labels.
 * 0, or -1 (message printed). */
int cli_eval_confusion_png(const char *path, const vit_model *model, const size_t *counts,
                           const char *source, size_t top1, size_t scored);

#endif
