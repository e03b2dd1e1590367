/* cli.h — pieces shared by the `vit` subcommands (private to cli/). */
#ifndef CLI_H
#define CLI_H

#include <stdio.h>

#include "vit.h"

/* Exit statuses, the same for every subcommand. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FATAL = 1,        /* bad arguments, unusable model, unwritable output */
    CLI_EXIT_SOME_FAILED = 2   /* the run finished but some inputs failed */
};

/* One option a subcommand accepts. Values land in cli_args.values[index]. */
typedef struct cli_option {
    const char *long_name; /* without the leading "--" */
    char short_name;       /* 0: none */
    int takes_value;
    const char *value_name; /* for help: "N", "FILE" ... */
    const char *help;
} cli_option;

#define CLI_MAX_OPTIONS 32

typedef struct cli_args {
    const char *values[CLI_MAX_OPTIONS]; /* value, or "" for a flag given, NULL if absent */
    const char **positional;
    int num_positional;
} cli_args;

/* Parses argv (after the subcommand name) against options. On a bad option
 * prints one line naming it and returns -1; returns 1 if -h/--help was given
 * (help printed), 0 otherwise. args->positional must be freed. */
int cli_parse(const char *command, const char *usage, const cli_option *options, int num_options,
              int argc, char **argv, cli_args *args);

/* Parses an integer option within [min, max]; prints one line and returns -1
 * when it is not one. */
int cli_int(const char *command, const char *option, const char *text, long min, long max,
            long *value);

/* Sets the OpenMP and OpenBLAS thread counts (0: all cores). */
void cli_set_threads(int threads);

/* The --pos-resample option every model-running command offers. */
#define CLI_POS_RESAMPLE_OPTION                                                              \
    {"pos-resample", 0, 1, "MODE",                                                          \
     "position embeddings at another --size: auto (as the checkpoint's library), "          \
     "bicubic, bicubic-aa"}

/* Loads the model named by -m with --labels and --pos-resample (NULL: auto),
 * printing notices and, on failure, one error line. Returns NULL on failure. */
vit_model *cli_load_model(const char *command, const char *model_path, const char *labels_path,
                          const char *pos_resample);

/* A reusable batch: buffers for `capacity` images and their outputs. */
typedef struct cli_batch {
    const vit_model *model;
    vit_context *ctx;
    data_preprocess pre;
    int capacity, num_outputs;
    size_t image_floats;
    float *inputs, *outputs;
    vit_status *status; /* per file of the last run */
    vit_error *errors;
    int *row;           /* output row per file, -1 when it failed */
} cli_batch;

/* Prepares a batch for model at input size `size` (0: native); prints one
 * line and returns -1 on failure. */
int cli_batch_init(cli_batch *b, const vit_model *model, int capacity, int size,
                   const char *command);

/* Decodes, preprocesses and classifies count (<= capacity) files. Outputs are
 * probabilities (softmax) for a model with a head, features otherwise. */
void cli_batch_run(cli_batch *b, const char *const *paths, int count);

/* File i's output from the last run, or NULL when it failed. */
const float *cli_batch_output(const cli_batch *b, int i);

void cli_batch_free(cli_batch *b);

int cli_classify(int argc, char **argv);
int cli_eval(int argc, char **argv);
int cli_info(int argc, char **argv);

#endif
