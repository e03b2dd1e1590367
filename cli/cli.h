/* cli.h — pieces shared by the `vit` subcommands (private to cli/). */
#ifndef CLI_H
#define CLI_H

#include <stdio.h>
#include <sys/types.h>

#include "base_io.h"
#include "vit.h"
#include "vit_pipeline.h"

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
    char model_path[8192]; /* where a hub name given to -m was found (cli_resolve_model) */
} cli_args;

/* Parses argv (after the subcommand name) against options. On a bad option
 * prints one line naming it and returns -1; returns 1 if -h/--help was given
 * (help printed), 0 otherwise. args->positional must be freed. A "model"
 * option's value that names a model in the Hugging Face cache (with the
 * "revision" option's value, if the table has one) is replaced by the
 * snapshot directory (cli_resolve_model); one it cannot find is a bad
 * option. */
int cli_parse(const char *command, const char *usage, const cli_option *options, int num_options,
              int argc, char **argv, cli_args *args);

/* Parses an integer option within [min, max]; prints one line and returns -1
 * when it is not one. */
int cli_int(const char *command, const char *option, const char *text, long min, long max,
            long *value);

/* Sets the OpenMP and OpenBLAS thread counts (0: all cores). */
void cli_set_threads(int threads);

/* A monotonic clock in seconds, for rates and progress. */
double cli_now_seconds(void);

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
int cli_limits(const char *command, const char *const *values, int count, vit_limits *limits,
               int *allow_unused);

/* The model vitc ships as the default (weights/README.md: timm's ViT-Ti/16
 * AugReg ImageNet-1k checkpoint, int8), used when a command is given no -m. */
#define CLI_DEFAULT_MODEL_NAME "vit-tiny-augreg-int8.safetensors"

/* Its path: where the build says the source tree keeps it, else weights/
 * beside the program or one directory up (path written to buf); NULL when
 * none is readable. */
const char *cli_default_model(char *buf, size_t size);

/* Loads the model named by -m (NULL: the shipped model) with --labels,
 * --pos-resample (NULL: auto) and --allow-unused (vit_load_options),
 * printing notices and, on failure, one error line. Returns NULL on failure. */
vit_model *cli_load_model(const char *command, const char *model_path, const char *labels_path,
                          const char *pos_resample, int allow_unused);

/* The same with safety limits (NULL: defaults) and the --size the run
 * will use (0: the model's own; vit_load_options.input_size). */
vit_model *cli_load_model_limited(const char *command, const char *model_path,
                                  const char *labels_path, const char *pos_resample,
                                  const vit_limits *limits, int input_size, int allow_unused);

/* Where a batch run's time went, for the summary line. decode is the time
 * the forward pass waited for decoded images: with the prefetching loader
 * decoding overlaps the forward pass, and only the part it does not hide
 * costs time. */
typedef struct cli_timings {
    double load, decode, forward, total; /* seconds; total: the batch loop */
    double start; /* cli_batch_start: the inference context and the loader */
    int split; /* decode and forward were measured (not over MPI ranks) */
} cli_timings;

/* The pipeline's next batch into b (vit_pipeline_next), its timings
 * into t. 1: computed, 0: no batch left, -1: the forward pass failed
 * (reported). The one batch step of classify, eval, classify --stream and
 * the inspection commands. */
int cli_run_next_batch(const char *command, vit_pipeline *pipeline, data_batch *b, cli_timings *t);

/* Copies the pipeline's setup, decode-wait and forward times into t. */
void cli_timings_take(cli_timings *t, const vit_pipeline *pipeline);

/* The summary line of a batch run on stderr: "vit CMD: 500 files, 2 failed;
 * load 0.12 s, decode wait 3.4 s, forward 10.2 s; 38.1 images/s". When no
 * file succeeded: "vit CMD: 1 file, 1 failed: nothing VERBED"; when there
 * was nothing to run, the caller says why (cli_print_nothing_to_do). note,
 * when not NULL, follows the counts ("; 300 more already in out.csv"). */
void cli_print_summary(const char *command, const char *verbed, size_t files, size_t failed,
                       const char *note, const cli_timings *t);

/* With VITC_TIMINGS in the environment (bench/oneshot.sh), the stages of
 * a batch run in milliseconds on stderr, -q or not: "vit CMD: timings:
 * load 41.20 ms, start 5.10 ms, decode wait 7.91 ms, forward 10.33 ms"
 * (start: cli_batch_start). Nothing without. */
void cli_print_timings(const char *command, const cli_timings *t);

/* The image files a command works on: where to read each, and the name it
 * goes by in rows and output file names. */
typedef struct cli_inputs {
    char **paths, **names;
    size_t count, capacity;
    size_t problems; /* directories that could not be listed (each reported): exit 2 */
} cli_inputs;

/* How cli_inputs_collect names files. */
typedef enum cli_naming {
    CLI_NAMES_ROWS,   /* relative to the directory when one PATH is given, else the path */
    CLI_NAMES_OUTPUTS /* relative to its directory argument; a file given itself: its base name */
} cli_naming;

/* Appends copies of path and name; -1 when out of memory. */
int cli_inputs_add(cli_inputs *in, const char *path, const char *name);
void cli_inputs_free(cli_inputs *in);

/* Adds the files the command-line PATHs name: a file is taken whatever its
 * extension (a missing one, or a FIFO, fails later, as a bad file), a
 * directory is walked for regular files. A directory in the tree that
 * cannot be listed is printed on one line, counted in in->problems and left
 * out; the rest goes on. Prints one line and returns -1 on failure, and
 * when nothing at all was found ("no images found in DIR"). */
int cli_inputs_collect(const char *command, const char *const *paths, int num_paths,
                       const data_walk_options *walk, cli_naming naming, cli_inputs *in);

/* --files-from FILE and -0: a list of image paths instead of, or after,
 * the PATH arguments (every command that takes PATHs). */
#define CLI_FILES_FROM_OPTION \
    {"files-from", 0, 1, "FILE", "image paths from FILE, one a line ('-': stdin)"}
#define CLI_NULL_OPTION {"null", '0', 0, "", "--files-from entries end in NUL (find -print0)"}

/* Reads a list of paths, one entry at a time, from a file, a FIFO or
 * standard input: for --files-from (to its end) and classify --stream (as
 * the entries arrive; poll fd, then cli_path_reader_fill). */
typedef struct cli_path_reader {
    int fd, owns_fd;
    int nul;           /* entries end in '\0', else in '\n' */
    int eof, skipping; /* skipping: inside an overlong entry */
    const char *name;  /* the list as messages name it ("standard input" for -) */
    char *buf;
    size_t start, length, capacity;
    unsigned long line; /* entries seen so far (line number of the last one) */
    char message[4608], display[80];
} cli_path_reader;

/* Opens list ("-": standard input). Prints one line naming it and returns
 * -1 when it cannot be read. */
int cli_path_reader_open(const char *command, const char *list, int nul, cli_path_reader *r);

/* One read(2) of what is there (blocks if nothing is: poll first to wait
 * with a timeout); sets r->eof at the end. -1 on a read error (errno). */
int cli_path_reader_fill(cli_path_reader *r);

/* The next whole entry already read: returns 1 with *path (valid until the
 * next call), 0 when more input is needed (or, with r->eof, the list is
 * done). Empty entries are skipped. An entry that cannot be a path gets
 * *problem, one line naming the list and line: longer than PATH_MAX (*path
 * then shows its start; the rest is skipped), or in line mode holding a NUL
 * byte or ending in "\r" (not stripped: a CRLF list is refused rather than
 * silently read as other names). The last entry needs no separator. */
int cli_path_reader_next(cli_path_reader *r, const char **path, const char **problem);
void cli_path_reader_close(cli_path_reader *r);

/* Appends the paths listed in list (--files-from; nul: -0) to in as files,
 * never walked, named as listed (CLI_NAMES_OUTPUTS: by base name, as a file
 * argument); *added counts them. A list that cannot be read or holds an
 * entry with a problem is one line and -1. */
int cli_inputs_read_list(const char *command, const char *list, int nul, cli_naming naming,
                         cli_inputs *in, size_t *added);

/* cli_inputs_collect of the PATHs, then the list (NULL: none): the usual
 * errors, and when both together give no image at all one line saying so. */
int cli_inputs_gather(const char *command, const char *const *paths, int num_paths,
                      const data_walk_options *walk, cli_naming naming, const char *list, int nul,
                      cli_inputs *in);

/* ------------------------------------------------------ the user's files
 * Files a run reads and must never write: the model's files and the inputs.
 * They are compared with outputs by device and inode, so another spelling
 * of a path, a symlink or a hard link is caught too. Every command checks
 * every output it plans against them before it writes anything. */
typedef struct cli_protected_file {
    dev_t dev;
    ino_t ino;
    char *path;
    int is_input; /* 0: a model file, 1: an input, 2: the --files-from list */
} cli_protected_file;

typedef struct cli_protected {
    cli_protected_file *files;
    size_t count, capacity;
    int sorted;
    /* Inputs are only stat'ed when some planned output already exists (a
     * new output cannot be an input): a big directory costs nothing extra. */
    const char *const *inputs;
    size_t num_inputs;
    int inputs_added;
} cli_protected;

/* The weights file of model, config.json and preprocessor_config.json beside
 * it, and labels_path (NULL: none). -1 when out of memory. */
int cli_protect_model(cli_protected *p, const vit_model *model, const char *labels_path);

/* One file (missing: ignored), named in messages as a model file or an input. */
int cli_protect_file(cli_protected *p, const char *path, int is_input);

/* The --files-from list (NULL: none; "-": standard input, protected when
 * it is a regular file), so that -o cannot cut the list the user wrote.
 * -1 (printed) when out of memory. */
int cli_protect_list(const char *command, cli_protected *p, const char *list);

/* Input files (paths borrowed: they must outlive p). */
void cli_protect_inputs(cli_protected *p, const char *const *paths, size_t count);

/* Both of the above (model NULL: no model), printing "out of memory" on failure. */
int cli_protect_run(const char *command, cli_protected *p, const vit_model *model,
                    const char *labels_path, const char *const *inputs, size_t num_inputs);

/* 0 when writing path (existing or not) harms none of p's files; otherwise
 * prints "vit CMD: PATH: would overwrite ..." and returns -1. */
int cli_check_output(const char *command, cli_protected *p, const char *path);

void cli_protected_free(cli_protected *p);

/* An exclusive lock (flock) held while a run writes an output, so a second
 * vit process writing the same output stops at once instead of mixing its
 * rows or files with ours. The kernel drops it when the process ends, even
 * by kill -9. Where it lives depends on how the output is written:
 *  - a directory (per-input outputs): the directory itself;
 *  - a file written in place (classify -o, appended batch by batch): the
 *    file itself (opened without truncating: truncation comes after);
 *  - a file replaced by rename (atomic writers): "PATH.lock" beside it, as
 *    the rename replaces PATH's inode and a lock on it would not hold. The
 *    lock file is removed at the end (when empty, as vit leaves it); one
 *    left by a killed run blocks nothing and the next run removes it.
 * Only regular files and directories are locked (-o /dev/null is not). */
typedef struct cli_lock {
    int held, fd;
    char *remove_path; /* the PATH.lock file to remove on release */
} cli_lock;

/* Takes the lock for path (in_place: the file is written in place).
 * Prints one line ("... is being written by another vit process", or why
 * the output cannot be written) and returns -1 on failure. */
int cli_lock_output(const char *command, const char *path, int in_place, cli_lock *lock);

/* Releases the lock (removing a PATH.lock file); a zeroed lock is allowed. */
void cli_unlock_output(cli_lock *lock);

/* Creates the directories leading to path (mkdir -p of its dirname). */
int cli_make_parents(const char *path);

/* Splits a comma-separated list in place (text is modified); returns the
 * number of items stored in list (at most max). */
size_t cli_split_list(char *text, const char **list, size_t max);

/* The "done/total files, images/s, ETA, failed" line a batch run redraws on
 * a terminal. */
void cli_show_progress(size_t done, size_t total, size_t failed, double elapsed);

/* Redraws the progress line on stderr (a terminal) with printf-style text,
 * cut to the terminal's width so that it never wraps and scrolls. */
void cli_progress_line(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Erases the progress line (before an error line or the summary). */
void cli_progress_clear(void);

/* s as one CSV field, quoted when it holds a comma, quote or line break
 * (malloc'd; NULL when out of memory). */
char *cli_csv_quote(const char *s);

/* Writes s to out as one CSV field; -1 when out of memory (nothing written). */
int cli_csv_write_field(FILE *out, const char *s);

/* s as vitc writes every string into JSON: valid UTF-8 whatever the bytes,
 * and reversible. Each byte that is not part of a valid UTF-8 sequence
 * becomes the four characters \xNN (lower-case hex) and each backslash two
 * backslashes; everything else is kept. (malloc'd; NULL when out of memory.) */
char *cli_json_text(const char *s);

/* The bytes cli_json_text(s) was made from (malloc'd; NULL when out of
 * memory); a backslash not starting \\ or \xNN is kept as it is. */
char *cli_json_text_decode(const char *s);

/* From now on SIGINT and SIGTERM only set a flag, which cli_stop_requested
 * returns (the signal number, 0 if none came): a batch run checks it between
 * batches and finishes its output cleanly. A second signal kills at once. */
void cli_catch_stop_signals(void);
int cli_stop_requested(void);

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

/* ------------------------------------------------------ batch runs
 * What classify and eval share (cli/batch.c): a model with a head run over
 * a list of image files batch by batch. Fields are filled step by step;
 * cli_batch_free releases whatever was made (a zeroed run is allowed). */
typedef struct cli_batch_run {
    const char *command;     /* "classify": names the command in messages */
    long threads, size, batch; /* -t (0: all cores), --size (0: native), -b */
    vit_limits limits;
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

/* What vit info prints about a model, line by line (key, value): the
 * lines of `vit info`, and GET /info of vit serve as JSON. is_default: the
 * model is the shipped one (no -m). */
#define CLI_INFO_MAX_LINES 20
typedef struct cli_info_lines {
    int count;
    struct {
        const char *key;
        char value[1024];
    } lines[CLI_INFO_MAX_LINES];
} cli_info_lines;
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
