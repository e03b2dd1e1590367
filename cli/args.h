/* args.h — a subcommand's options: the option table, parsing, numbers,
 * threads, the safety limits and the option entries several commands share
 * (private to cli/; cli/args.c) */
#ifndef CLI_ARGS_H
#define CLI_ARGS_H

#include <stddef.h>
#include <stdio.h>
#include "vit.h"

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
    char model_path[8192]; /* where a hub name given to -m was found (cli_resolve_model) */
} cli_args;

/* Parses argv (after the subcommand name) against options. On a bad option
 * prints one line naming it and returns -1; returns 1 if -h/--help was given
 * (help printed), 0 otherwise; args->positional must then be freed (not
 * after -1 or 1: cli_parse_exit gives the command's exit code). A "model"
 * option's value that names a model in the Hugging Face cache (with the
 * "revision" option's value, if the table has one) is replaced by the
 * snapshot directory (cli_resolve_model); one it cannot find is a bad
 * option. */
int cli_parse(const char *command, const char *usage, const cli_option *options, int num_options,
              int argc, char **argv, cli_args *args);

/* The exit code of a command whose cli_parse returned parsed != 0: 0 after
 * help, 1 after a bad option. */
static inline int cli_parse_exit(int parsed) { return parsed > 0 ? 0 : 1; }

/* Parses an integer option within [min, max]; prints one line and returns -1
 * when it is not one. */
int cli_int(const char *command, const char *option, const char *text, long min, long max,
            long *value);

/* Sets the OpenMP and OpenBLAS thread counts (0: all cores). */
void cli_set_threads(int threads);

/* The thread count -t means (0: all cores). */
int cli_thread_count(int threads);

/* Option table entries several commands share word for word. */
#define CLI_THREADS_OPTION {"threads", 't', 1, "N", "threads (default: all cores)"}
#define CLI_LABELS_OPTION {"labels", 0, 1, "FILE", "class labels, one per line"}
#define CLI_BATCH_OPTION(DEFAULT) {"batch", 'b', 1, "N", "images per forward pass (default " DEFAULT ")"}

/* The --pos-resample option every model-running command offers. */
/* -m's help text, and --revision for every command that takes -m. */
#define CLI_MODEL_HELP "model directory, .safetensors file, or hub name org/name (HF cache)"
#define CLI_REVISION_OPTION \
    {"revision", 0, 1, "REV", "with -m org/name: a branch/tag in the cache, or a commit (default main)"}

/* Resolves -m VALUE: an existing path, or anything not shaped like org/name,
 * is used as it is (*path = value); a hub name is looked up in the Hugging
 * Face cache (hub_cache.h) at revision (NULL: main) and *path set to the
 * snapshot directory written to buf. --revision without a hub name, or a
 * name the cache does not hold, prints one line to say (NULL: silent)
 * telling the user to run scripts/get-model, and returns -1. */
int cli_resolve_model(const char *command, const char *value, const char *revision, char *buf,
                      size_t size, FILE *say, const char **path);

#define CLI_POS_RESAMPLE_OPTION                                                              \
    {"pos-resample", 0, 1, "MODE",                                                          \
     "position embeddings at another --size: auto (as the checkpoint's library), "          \
     "bicubic, bicubic-aa"}

/* The safety-limit options of every command that reads a model and images,
 * as CLI_NUM_LIMIT_OPTIONS consecutive entries of an option table (put
 * `[OPT_LIMITS] = CLI_LIMIT_OPTIONS` last and leave CLI_NUM_LIMIT_OPTIONS
 * slots for it in the enum). A command that reads no images (info) takes
 * the first CLI_NUM_MODEL_LIMIT_OPTIONS: CLI_MODEL_LIMIT_OPTIONS. */
/* --allow-unused, offered by every command that loads a model (inside
 * CLI_MODEL_LIMIT_OPTIONS, and on its own in the tables of the commands
 * that take no limits): the allow_unused of cli_load_model*. */
#define CLI_ALLOW_UNUSED_OPTION                                                              \
    {"allow-unused", 0, 0, "", "load a checkpoint holding tensors the model does not use "   \
                               "(named in a warning)"}


#define CLI_NUM_MODEL_LIMIT_OPTIONS 5
#define CLI_NUM_LIMIT_OPTIONS (CLI_NUM_MODEL_LIMIT_OPTIONS + 1)
#define CLI_MODEL_LIMIT_OPTIONS                                                               \
    {"max-header-mb", 0, 1, "N", "refuse checkpoints whose header exceeds N MiB (default 100)"}, \
    {"max-tensors", 0, 1, "N", "refuse checkpoints with over N tensors (default 100000)"},      \
    {"max-json-kb", 0, 1, "N", "refuse config JSON files over N KiB (default 16384)"},        \
    {"max-json-depth", 0, 1, "N", "refuse JSON nested deeper than N levels (default 64)"},    \
    CLI_ALLOW_UNUSED_OPTION
#define CLI_LIMIT_OPTIONS                                                                     \
    CLI_MODEL_LIMIT_OPTIONS,                                                                  \
    {"max-pixels", 0, 1, "N", "refuse images over N pixels, before decoding (default 100000000)"}

/* Reads the values of the first count limit options (values[0 ..
 * count-1], NULL where not given; count is CLI_NUM_LIMIT_OPTIONS or
 * CLI_NUM_MODEL_LIMIT_OPTIONS) into limits, and whether --allow-unused was
 * given into *allow_unused. Prints one line and returns -1 on a bad value. */
int cli_limits(const char *command, const char *const *values, int count, base_limits *limits,
               int *allow_unused);

/* Splits a comma-separated list in place (text is modified); returns the
 * number of items stored in list (at most max). */
size_t cli_split_list(char *text, const char **list, size_t max);

#endif
