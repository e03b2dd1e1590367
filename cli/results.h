/* results.h — classify's result rows in every format, resumable (private to
 * cli/; cli/results.c) */
#ifndef CLI_RESULTS_H
#define CLI_RESULTS_H

#include <stddef.h>
#include "base_io.h"
#include "vit.h"

/* A growable set of owned strings; sort once, then look up. */
typedef struct cli_string_set {
    char **items;
    size_t count, capacity;
} cli_string_set;

int cli_string_set_add(cli_string_set *set, char *owned);
void cli_string_set_sort(cli_string_set *set);
int cli_string_set_has(const cli_string_set *set, const char *text);
void cli_string_set_free(cli_string_set *set);

/* Result rows of classify. */
typedef enum cli_results_format {
    CLI_RESULTS_TEXT,
    CLI_RESULTS_CSV,
    CLI_RESULTS_JSONL,
    CLI_RESULTS_JSON,
    CLI_RESULTS_HF,       /* a JSON array of pipeline("image-classification") lists */
    CLI_RESULTS_HF_JSONL, /* one {"path", "predictions": that list, "error"} a line */
    CLI_RESULTS_NPY       /* --all-classes: images x classes float32, atomically */
} cli_results_format;

/* What classify writes of each image: the top -k, or every class. */
enum { CLI_TOP_K = 0, CLI_ALL_PROBS, CLI_ALL_LOGITS };

typedef struct cli_results {
    cli_results_format format;
    int all_classes; /* CLI_TOP_K, or CLI_ALL_*: values holds every class */
    int fd, owns_fd, top_k, header_written;
    base_atomic_file *npy; /* the .npy being written (renamed into place at close) */
    float *nan_row;        /* a failed image's .npy row */
    char *names;           /* OUT.files.jsonl's lines so far (NULL: not written) */
    size_t names_length, names_capacity;
    char *names_path;
    int abandon; /* close drops the .npy instead of committing it (a fatal error) */
    int failed;   /* out of memory formatting a row */
    int reported; /* an error was printed: the output is unusable, say nothing more */
    size_t rows;
    const vit_model *model;
    const char *display_name;
    char *buffer; /* rows of the batch not yet written */
    size_t length, capacity;
} cli_results;

/* Parses "text|csv|jsonl|json|hf|hf-jsonl|npy"; -1 if it is none. */
int cli_results_format_parse(const char *text, cli_results_format *format);

/* The format an output file's extension implies (.csv, .jsonl, .json, .npy;
 * else text). */
cli_results_format cli_results_format_for_path(const char *path);

/* The settings of a run that a --resume must share with the run that
 * wrote the file, besides the model, -k and the format. */
typedef struct cli_run_settings {
    int size;                 /* --size, 0: native */
    const char *pos_resample; /* --pos-resample, NULL: auto */
    const char *shard;        /* --shard I/N, NULL: all files */
    int all_classes;          /* CLI_TOP_K or --all-classes CLI_ALL_PROBS / CLI_ALL_LOGITS */
    size_t images;            /* rows the run will write (the .npy's first dimension) */
    int names_file;           /* write OUT.files.jsonl beside -o (npy, hf): several images */
} cli_run_settings;

/* OUT.npy or OUT.json -> OUT.files.jsonl, the names of the rows of an output
 * that does not name them itself (malloc'd; NULL when out of memory). */
char *cli_files_list_path(const char *path);

/* Opens path (NULL: stdout). A csv or jsonl file (a regular file, or one
 * not there yet) gets a run record beside it, PATH.run.json, naming the
 * model (path, size, a fingerprint of its tensors), the labels' hash, -k,
 * the format and settings. With resume, the record must match this run
 * (an output without one, from an older vitc, is resumed with a warning);
 * then the rows already in path are read into done (names as the inputs
 * have them, sorted, for cli_string_set_has) and an incomplete last row is
 * cut. A damaged row elsewhere refuses the file. Prints one line and
 * returns -1 on failure. */
int cli_results_open(cli_results *r, const char *path, cli_results_format format, int top_k,
                     const vit_model *model, const cli_run_settings *settings, int resume,
                     cli_string_set *done);

/* Adds one file's row: probs (top-k taken from them; with all_classes every
 * class's value, probabilities or logits) or an error. */
void cli_results_add(cli_results *r, const char *path, const float *probs, const char *error);

/* Writes the rows added since the last flush with one write(2). */
int cli_results_flush(cli_results *r);

/* Finishes (closing a JSON array), flushes and closes. */
int cli_results_close(cli_results *r);

#endif
