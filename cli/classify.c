/* vit classify: top-k labels for image files and whole directories. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_mpi.h"

enum { OPT_MODEL, OPT_REVISION, OPT_TOPK, OPT_THREADS, OPT_SIZE, OPT_LABELS, OPT_FORMAT,
       OPT_BATCH, OPT_OUTPUT, OPT_RESUME, OPT_QUIET, OPT_NO_RECURSIVE, OPT_EXT, OPT_SHARD, OPT_NO_PREFETCH,
       OPT_POS_RESAMPLE, OPT_ALL_CLASSES, OPT_FILES_FROM, OPT_NULL, OPT_STREAM, OPT_MAX_WAIT,
       OPT_LIMITS, NUM_OPTS = OPT_LIMITS + CLI_NUM_LIMIT_OPTIONS };

#define DEFAULT_BATCH 16

static const cli_option OPTIONS[NUM_OPTS] = {
    [OPT_MODEL] = {"model", 'm', 1, "MODEL", CLI_MODEL_HELP " (default: the shipped "
                                            "ImageNet-1k ViT-Ti/16, weights/README.md)"},
    [OPT_REVISION] = CLI_REVISION_OPTION,
    [OPT_TOPK] = {"top-k", 'k', 1, "N", "labels per image (default 5)"},
    [OPT_THREADS] = CLI_THREADS_OPTION,
    [OPT_SIZE] = {"size", 0, 1, "S", "input size, position embeddings resampled (default: native)"},
    [OPT_LABELS] = CLI_LABELS_OPTION,
    [OPT_FORMAT] = {"format", 0, 1, "FMT", "text|csv|jsonl|json|hf|hf-jsonl|npy; default by -o"},
    [OPT_BATCH] = CLI_BATCH_OPTION("16"),
    [OPT_OUTPUT] = {"output", 'o', 1, "FILE", "write results to FILE instead of standard output"},
    [OPT_RESUME] = {"resume", 0, 0, "", "with -o (csv/jsonl): skip files already in FILE, append the rest "
                                       "(FILE.run.json must show the same model, labels, -k and format)"},
    [OPT_QUIET] = {"quiet", 'q', 0, "", "no progress or summary on stderr"},
    [OPT_NO_RECURSIVE] = {"no-recursive", 0, 0, "", "do not descend into subdirectories"},
    [OPT_EXT] = {"ext", 0, 1, "LIST", "extensions walked, comma-separated (default below)"},
    [OPT_SHARD] = {"shard", 0, 1, "I/N", "process only shard I of N (0 <= I < N), by a stable hash of the path"},
    [OPT_NO_PREFETCH] = {"no-prefetch", 0, 0, "", "decode each batch only when the model needs it (for benchmarks)"},
    [OPT_POS_RESAMPLE] = CLI_POS_RESAMPLE_OPTION,
    [OPT_ALL_CLASSES] = {"all-classes", 0, 1, "WHAT", "probs or logits of every class, not the top -k"},
    [OPT_FILES_FROM] = CLI_FILES_FROM_OPTION,
    [OPT_NULL] = CLI_NULL_OPTION,
    [OPT_STREAM] = {"stream", 0, 0, "", "classify paths as they come on stdin/--files-from"},
    [OPT_MAX_WAIT] = {"max-wait-ms", 0, 1, "N", "--stream: wait up to N ms to fill a batch (20)"},
    [OPT_LIMITS] = CLI_LIMIT_OPTIONS,
};

static const char USAGE[] =
    "usage: vit classify [-m MODEL] [options] PATH...\n"
    "\n"
    "Prints the top-k labels and probabilities of images. A PATH that is a\n"
    "directory is walked (recursively, sorted, hidden entries skipped) for image\n"
    "files. Rows name each image relative to the directory given (when one PATH is\n"
    "given) or by its path. Exit status: 0 all images classified, 2 some failed\n"
    "(each named on stderr and in its row), 1 fatal error, 130/143 stopped by\n"
    "SIGINT/SIGTERM (rows written are whole, a JSON array closed). In JSON, bytes\n"
    "of names that are not UTF-8 appear as \\xNN and a backslash as \\\\; CSV holds\n"
    "names as they are.\n"
    "\n"
    "--format hf writes what transformers' pipeline(\"image-classification\")\n"
    "returns: a JSON array, in input order, of one [{\"label\", \"score\"}, ...] list\n"
    "per image (a failed image: []); hf-jsonl one {\"path\", \"predictions\",\n"
    "\"error\"} a line. --all-classes probs|logits writes every class instead of the\n"
    "top -k: CSV columns path, one per class named by its label, error; JSON\n"
    "\"probs\"/\"logits\"; -o OUT.npy an images x classes float32 array (a failed\n"
    "image: NaN), written whole at the end. Outputs whose rows carry no path (npy,\n"
    "hf) get OUT.files.jsonl beside them, naming each row's image, when there are\n"
    "several images.\n"
    "\n"

    "Directories are walked for jpg jpeg png bmp gif tga pnm ppm pgm psd webp files\n"
    "(--ext); JPEG, PNG, BMP, GIF, TGA, PNM, PSD and WebP are read whatever the name.\n"
    "\n"
    "--files-from FILE adds the files FILE lists (after the PATHs; not walked; rows\n"
    "name them as listed): one per line, blank lines skipped; a line ending in \\r,\n"
    "holding a NUL byte or longer than PATH_MAX refuses the list (exit 1, nothing\n"
    "run). -0: NUL-separated, as from find DIR -print0 | vit classify\n"
    "--files-from - -0.\n"
    "\n"
    "--stream: a long-lived run. Paths come from stdin (or the --files-from FILE or\n"
    "FIFO) as they arrive; what has come within --max-wait-ms (up to -b) forms a\n"
    "batch whose rows are written and flushed at once. EOF ends the run (exit 0, or\n"
    "2 if an image failed); a bad line is one failed row. No --resume, --shard or\n"
    "progress line.";

/* Keeps the inputs for which keep(name) holds, in order. */
static void filter_inputs(cli_inputs *in, int (*keep)(const char *, const void *), const void *context) {
    size_t kept = 0;
    for (size_t i = 0; i < in->count; i++) {
        if (keep(in->names[i], context)) {
            in->paths[kept] = in->paths[i];
            in->names[kept] = in->names[i];
            kept++;
        } else {
            free(in->paths[i]);
            free(in->names[i]);
        }
    }
    in->count = kept;
}

typedef struct shard { unsigned long index, count; } shard;

static int in_shard(const char *name, const void *context) {
    const shard *s = context;
    return data_hash(name) % s->count == s->index;
}

/* For --resume: keeps only the batches that hold a file not yet in the
 * output, whole, so every batch is the same group of images as in an
 * uninterrupted run and computes bit-identical results (the numbers of a
 * batched forward pass depend, in the last float digits, on its company).
 * Files of kept batches whose rows exist are marked skip_row. */
static int keep_unfinished_batches(cli_inputs *in, unsigned char **skip, const cli_string_set *done,
                                   size_t batch) {
    unsigned char *skip_row = *skip = calloc(in->count ? in->count : 1, 1);
    if (!skip_row) return -1;
    size_t kept = 0;
    for (size_t first = 0; first < in->count; first += batch) {
        const size_t end = first + batch < in->count ? first + batch : in->count;
        int unfinished = 0;
        for (size_t i = first; i < end; i++) {
            skip_row[i] = (unsigned char)cli_string_set_has(done, in->names[i]);
            unfinished |= !skip_row[i];
        }
        for (size_t i = first; i < end; i++) {
            if (!unfinished) {
                free(in->paths[i]);
                free(in->names[i]);
                continue;
            }
            in->paths[kept] = in->paths[i];
            in->names[kept] = in->names[i];
            skip_row[kept] = skip_row[i];
            kept++;
        }
    }
    in->count = kept;
    return 0;
}

static int parse_shard(const char *text, shard *s) {
    char *end;
    s->index = strtoul(text, &end, 10);
    if (end == text || *end != '/') return -1;
    const char *count_text = end + 1;
    s->count = strtoul(count_text, &end, 10);
    if (end == count_text || *end || s->count == 0 || s->count > 1000000 || s->index >= s->count) return -1;
    return 0;
}


/* One classify run: the shared batch run plus the rows. */
typedef struct classify_run {
    cli_batch_run run;
    const char *const *values; /* the parsed options, by OPT_ */
    const char *output;        /* -o, NULL: standard output */
    cli_results_format format;
    int all_classes; /* CLI_TOP_K, CLI_ALL_PROBS or CLI_ALL_LOGITS */
    long top_k;
    int resume, quiet, progress;
    int stream;                /* --stream */
    long max_wait_ms;          /* --max-wait-ms */
    shard part;
    char *ext_text;            /* --ext, split in place */
    cli_inputs in;
    unsigned char *skip_row;   /* resume: computed with its batch, row already written */
    cli_string_set done;       /* resume: the rows already in the output */
    cli_results results;
    int results_open;
    size_t to_write, processed, failed;
    size_t inputs; /* files of this run before --resume left out the finished ones */
    int several; /* several images, or a directory: rows named in OUT.files.jsonl (npy, hf) */
} classify_run;

/* The options besides the batch run's, checked in the order they always were. */
static int read_settings(classify_run *c, const cli_args *args) {
    const char *const *v = c->values;
    if (cli_batch_numbers(&c->run, &v[OPT_LIMITS], v[OPT_TOPK], &c->top_k, v[OPT_THREADS],
                          v[OPT_SIZE], v[OPT_BATCH]) != 0)
        return -1;
    c->output = v[OPT_OUTPUT];
    c->format = cli_results_format_for_path(c->output);
    if (v[OPT_FORMAT] && cli_results_format_parse(v[OPT_FORMAT], &c->format) != 0) {
        fprintf(stderr, "vit classify: --format expects text, csv, jsonl or json, got '%s'\n", v[OPT_FORMAT]);
        return -1;
    }
    if (v[OPT_ALL_CLASSES]) {
        if (strcmp(v[OPT_ALL_CLASSES], "probs") == 0) c->all_classes = CLI_ALL_PROBS;
        else if (strcmp(v[OPT_ALL_CLASSES], "logits") == 0) c->all_classes = CLI_ALL_LOGITS;
        else {
            fprintf(stderr, "vit classify: --all-classes expects probs or logits, got '%s'\n",
                    v[OPT_ALL_CLASSES]);
            return -1;
        }
        /* Every class on standard output: CSV, unless a format was asked for. */
        if (!v[OPT_FORMAT] && c->format == CLI_RESULTS_TEXT) c->format = CLI_RESULTS_CSV;
        if (c->format == CLI_RESULTS_TEXT || c->format == CLI_RESULTS_HF ||
            c->format == CLI_RESULTS_HF_JSONL) {
            fprintf(stderr, "vit classify: --all-classes writes csv, jsonl, json or npy, not %s\n",
                    v[OPT_FORMAT] ? v[OPT_FORMAT] : "text");
            return -1;
        }
        c->run.logits = c->all_classes == CLI_ALL_LOGITS;
    } else if (c->format == CLI_RESULTS_NPY) {
        fprintf(stderr, "vit classify: a .npy output holds every class: give --all-classes probs "
                        "or --all-classes logits\n");
        return -1;
    }
    if (c->format == CLI_RESULTS_NPY && !c->output) {
        fprintf(stderr, "vit classify: --format npy needs -o FILE.npy\n");
        return -1;
    }
    c->resume = v[OPT_RESUME] != NULL;
    if (c->resume && (!c->output || (c->format != CLI_RESULTS_CSV && c->format != CLI_RESULTS_JSONL &&
                                     c->format != CLI_RESULTS_HF_JSONL))) {
        fprintf(stderr, "vit classify: --resume needs -o FILE in csv, jsonl or hf-jsonl format%s\n",
                c->format == CLI_RESULTS_NPY ? " (a .npy is written whole at the end)" : "");
        return -1;
    }
    if (v[OPT_SHARD] && parse_shard(v[OPT_SHARD], &c->part) != 0) {
        fprintf(stderr, "vit classify: --shard expects I/N with 0 <= I < N, got '%s'\n", v[OPT_SHARD]);
        return -1;
    }
    c->stream = v[OPT_STREAM] != NULL;
    if (c->stream && (c->resume || v[OPT_SHARD])) {
        fprintf(stderr, "vit classify: --stream cannot go with %s (a stream has no end to resume "
                        "or split)\n", c->resume ? "--resume" : "--shard");
        return -1;
    }
    if (c->stream && (c->format == CLI_RESULTS_NPY || c->format == CLI_RESULTS_HF)) {
        /* Both need the number or the names of all images before the end. */
        fprintf(stderr, "vit classify: --stream writes rows as they come: text, csv, jsonl, json "
                        "or hf-jsonl, not %s\n", c->format == CLI_RESULTS_NPY ? "npy" : "hf");
        return -1;
    }
    if (c->stream && args->num_positional > 0) {
        fprintf(stderr, "vit classify: --stream reads paths from stdin or --files-from, not "
                        "PATH arguments ('%s')\n", args->positional[0]);
        return -1;
    }
    if (v[OPT_MAX_WAIT] && !c->stream) {
        fprintf(stderr, "vit classify: --max-wait-ms goes with --stream\n");
        return -1;
    }
    if (v[OPT_MAX_WAIT] && cli_int("classify", "--max-wait-ms", v[OPT_MAX_WAIT], 0, 3600000,
                                   &c->max_wait_ms) != 0)
        return -1;
    if (args->num_positional == 0 && !v[OPT_FILES_FROM] && !c->stream) {
        fprintf(stderr, "vit classify: no images given (see 'vit classify -h')\n");
        return -1;
    }
    c->quiet = v[OPT_QUIET] != NULL;
    return 0;
}

/* The files the PATHs name (walked with --no-recursive / --ext), this shard's. */
static int collect_inputs(classify_run *c, const cli_args *args) {
    const char *extensions[64];
    data_walk_options walk = {.recursive = !c->values[OPT_NO_RECURSIVE]};
    if (c->values[OPT_EXT]) {
        if (!(c->ext_text = strdup(c->values[OPT_EXT]))) return -1;
        walk.extensions = extensions;
        walk.num_extensions = cli_split_list(c->ext_text, extensions, 64);
    }
    if (cli_inputs_gather("classify", args->positional, args->num_positional, &walk, CLI_NAMES_ROWS,
                          c->values[OPT_FILES_FROM], c->values[OPT_NULL] != NULL, &c->in) != 0)
        return -1;
    /* As vit features: a names file when there are several images (or a
     * directory, which may hold several). */
    c->several = c->in.count > 1;
    for (int a = 0; a < args->num_positional; a++) {
        struct stat st;
        c->several |= stat(args->positional[a], &st) == 0 && S_ISDIR(st.st_mode);
    }
    if (c->part.count > 1) filter_inputs(&c->in, in_shard, &c->part);
    return 0;
}

/* Opens the rows' output (resume: reads the rows there), and for --resume
 * keeps only the batches still to do. */
static int open_results(classify_run *c) {
    /* Before the output is opened (and cut): it must be none of the files
     * this run reads, and no other vit process may be writing it. */
    const int names_file = c->output && c->several &&
                           (c->format == CLI_RESULTS_NPY || c->format == CLI_RESULTS_HF);
    char *names_path = names_file ? cli_files_list_path(c->output) : NULL;
    if (names_file && !names_path) {
        fprintf(stderr, "vit classify: out of memory\n");
        return -1;
    }
    /* A .npy is renamed into place at the end: its lock is OUT.lock. */
    const int refused =
        c->output &&
        (cli_protect_run("classify", &c->run.protect, c->run.model, c->values[OPT_LABELS],
                         (const char *const *)c->in.paths, c->in.count) != 0 ||
         cli_protect_list("classify", &c->run.protect, c->values[OPT_FILES_FROM]) != 0 ||
         cli_check_output("classify", &c->run.protect, c->output) != 0 ||
         (names_path && cli_check_output("classify", &c->run.protect, names_path) != 0) ||
         cli_lock_output("classify", c->output, c->format != CLI_RESULTS_NPY, &c->run.lock) != 0);
    free(names_path);
    if (refused) return -1;
    const cli_run_settings settings = {(int)c->run.size, c->values[OPT_POS_RESAMPLE], c->values[OPT_SHARD],
                                       c->all_classes, c->in.count, names_file};
    if (cli_results_open(&c->results, c->output, c->format, (int)c->top_k, c->run.model, &settings,
                         c->resume, &c->done) != 0)
        return -1;
    c->results_open = 1;
    cli_batch_fit(&c->run, c->in.count);
    c->inputs = c->in.count;
    if (c->resume && keep_unfinished_batches(&c->in, &c->skip_row, &c->done, (size_t)c->run.batch) != 0) {
        fprintf(stderr, "vit classify: out of memory\n");
        return -1;
    }
    c->to_write = c->in.count;
    for (size_t i = 0; c->skip_row && i < c->in.count; i++) c->to_write -= c->skip_row[i];
    return 0;
}

static void add_row(void *self, size_t index, const float *probs, const char *error) {
    classify_run *c = self;
    if (c->skip_row && c->skip_row[index]) return;
    c->processed++;
    if (error) {
        c->failed++;
        cli_batch_report_failure(&c->run, c->progress, error);
    }
    cli_results_add(&c->results, c->in.names[index], probs, error);
}

static int flush_rows(void *self, const data_batch *b, double elapsed) {
    classify_run *c = self;
    (void)b;
    if (cli_results_flush(&c->results) != 0) return -1;
    if (c->progress) cli_show_progress(c->processed, c->to_write, c->failed, elapsed);
    return 0;
}

/* The exit status after the loop: the stop by a signal, or the summary. */
static int finish(classify_run *c, double seconds) {
    if (c->progress) cli_progress_clear();
    const int signo = cli_stop_requested();
    if (signo) {
        /* Stopped between batches: every row written is whole and a JSON
         * array is closed; the status says the run did not finish. */
        char of_total[32] = ""; /* a stream has no total */
        if (!c->stream) snprintf(of_total, sizeof of_total, " of %zu", c->to_write);
        fprintf(stderr, "vit classify: stopped by %s after %zu%s files%s\n",
                signo == SIGINT ? "SIGINT" : "SIGTERM", c->processed, of_total,
                /* A stream has nothing to resume: its rows are whole and
                 * that is all there is to say. */
                !c->output || c->stream ? ""
                : c->format == CLI_RESULTS_CSV || c->format == CLI_RESULTS_JSONL ||
                        c->format == CLI_RESULTS_HF_JSONL ? "; --resume continues"
                : c->format == CLI_RESULTS_JSON || c->format == CLI_RESULTS_HF
                    ? "; the JSON array holds their rows (a json file cannot be resumed: use "
                      "jsonl for that)"
                : c->format == CLI_RESULTS_NPY ? "; nothing written" : "");
        return 128 + signo;
    }
    (void)seconds; /* in c->run.timings */
    cli_print_timings("classify", &c->run.timings);
    if (c->quiet) {
    } else if (c->processed == 0 && c->resume) {
        if (c->inputs == 1)
            fprintf(stderr, "vit classify: nothing to do: the one file is already in %s\n", c->output);
        else
            fprintf(stderr, "vit classify: nothing to do: all %zu files already in %s\n", c->inputs,
                    c->output);
    } else {
        /* A resumed run counts what it did, and says what was done before. */
        char before[4200] = "";
        if (c->resume && c->inputs > c->processed)
            snprintf(before, sizeof before, "; %zu more already in %s", c->inputs - c->processed,
                     c->output);
        cli_print_summary("classify", "classified", c->processed, c->failed, before,
                          &c->run.timings);
    }
    return c->failed || c->in.problems ? CLI_EXIT_SOME_FAILED : CLI_EXIT_OK;
}

/* Several processes (cli_mpi.h): rank 0 checks the arguments, walks and
 * loads first, so a mistake is reported once; then the other ranks load
 * the model, rank 0 opens the output (reading it for --resume) and sends
 * them the files still to do. Only rank 0 writes and reports. */
static int start_ranks(classify_run *c, const cli_args *args) {
    const int root = cli_mpi_rank() == 0;
    const int ready = root && read_settings(c, args) == 0 && collect_inputs(c, args) == 0 &&
                      cli_batch_load_model(&c->run, c->values[OPT_MODEL], c->values[OPT_LABELS],
                                           c->values[OPT_POS_RESAMPLE], " (it outputs features)") == 0;
    if (!cli_mpi_go(ready)) return -1;
    const int loaded = root || (read_settings(c, args) == 0 &&
                                cli_batch_load_model(&c->run, c->values[OPT_MODEL], c->values[OPT_LABELS],
                                                     c->values[OPT_POS_RESAMPLE], "") == 0);
    if (!cli_mpi_agree("classify", loaded) || !cli_mpi_go(!root || open_results(c) == 0)) return -1;
    return cli_mpi_share_inputs("classify", &c->in, &c->run.batch);
}

static int run_stream(classify_run *c);

static int run_classify(classify_run *c, const cli_args *args) {
    const int ranks = cli_mpi_active();
    if (c->values[OPT_STREAM]) {
        if (ranks) {
            fprintf(stderr, "vit classify: --stream runs in one process, not under mpirun\n");
            return CLI_EXIT_FATAL;
        }
        return read_settings(c, args) != 0 ? CLI_EXIT_FATAL : run_stream(c);
    }
    if (ranks ? start_ranks(c, args) != 0
              : read_settings(c, args) != 0 || collect_inputs(c, args) != 0 ||
                    cli_batch_load_model(&c->run, c->values[OPT_MODEL], c->values[OPT_LABELS],
                                         c->values[OPT_POS_RESAMPLE], " (it outputs features)") != 0 ||
                    open_results(c) != 0)
        return CLI_EXIT_FATAL;
    const int prefetch = !c->values[OPT_NO_PREFETCH];
    const char *const *paths = (const char *const *)c->in.paths;
    if (cli_batch_start(&c->run, ranks ? NULL : paths, c->in.count,
                        prefetch ? 1 : cli_thread_count((int)c->run.threads), prefetch) != 0) {
        cli_mpi_abort(CLI_EXIT_FATAL); /* the other ranks are already running */
        return CLI_EXIT_FATAL;
    }
    const int root = cli_mpi_rank() == 0;
    c->progress = root && !c->quiet && isatty(STDERR_FILENO);
    const cli_batch_handlers rows = {add_row, flush_rows, c};
    double seconds;
    if ((ranks ? cli_batch_each_mpi(&c->run, paths, c->in.count, &rows, &seconds)
               : cli_batch_each(&c->run, paths, &rows, &seconds)) != 0)
        return CLI_EXIT_FATAL;
    if (!root) return CLI_EXIT_OK; /* rank 0 says how the job went */
    c->results_open = 0;
    if (cli_results_close(&c->results) != 0) return CLI_EXIT_FATAL;
    return finish(c, seconds);
}

/* ------------------------------------------------------------ --stream
 * Paths arrive on a pipe for as long as the writer likes. The model stays
 * loaded; a batch is what has arrived within --max-wait-ms of its first
 * path (at most -b), decoded and run at once, its rows written with one
 * write(2) as soon as it is done, so a reader at the other end of a pipe
 * sees each answer without waiting for more input. Only the batch in hand
 * is kept in memory, however long the run. Results are those of a plain
 * run: an image's numbers do not depend on its batch (README). */

/* Waits until fd has input (or its end) or timeout_ms pass (-1: without
 * limit), sleeping in poll(2). 1: there is input; 0: timed out or a signal
 * came (cli_stop_requested says which); -1: poll failed. */
static int wait_for_input(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    const int n = poll(&p, 1, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -1;
    return n > 0;
}

/* The entries of one stream batch beside c->in: why an entry is no path
 * (NULL: it is one), and the paths the loader gets. */
typedef struct stream_batch {
    char **problem;
    const char **paths;
} stream_batch;

/* Reads entries into c->in until the batch is full, --max-wait-ms have
 * passed since its first entry, the input ends or a stop signal comes.
 * -1 after one line when the input cannot be read. */
static int stream_collect(classify_run *c, cli_path_reader *r, stream_batch *sb) {
    double deadline = 0;
    while (c->in.count < (size_t)c->run.batch && !cli_stop_requested()) {
        const char *path, *problem;
        if (cli_path_reader_next(r, &path, &problem)) {
            if (cli_inputs_add(&c->in, path, path) != 0 ||
                (problem && !(sb->problem[c->in.count - 1] = strdup(problem)))) {
                fprintf(stderr, "vit classify: out of memory\n");
                return -1;
            }
            if (c->in.count == 1) deadline = cli_now_seconds() + c->max_wait_ms / 1000.0;
            continue;
        }
        if (r->eof) break;
        int timeout = -1; /* nothing yet: sleep until something comes */
        if (c->in.count > 0) {
            const double left = deadline - cli_now_seconds();
            if (left <= 0) break;
            timeout = (int)(left * 1000.0 + 0.999);
        }
        const int ready = wait_for_input(r->fd, timeout);
        if (ready < 0 || (ready > 0 && cli_path_reader_fill(r) != 0)) {
            fprintf(stderr, "vit classify: %s: cannot read: %s\n", r->name, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Decodes and classifies the entries in c->in, writes their rows in order
 * and empties the batch. -1 when the forward pass or the output failed. */
static int stream_run_batch(classify_run *c, stream_batch *sb, double start) {
    cli_batch_run *run = &c->run;
    size_t good = 0;
    for (size_t i = 0; i < c->in.count; i++)
        if (!sb->problem[i]) sb->paths[good++] = c->in.paths[i];
    data_batch b = {0};
    base_error err;
    int status = 0;
    if (good > 0) {
        /* The batch's paths as the pipeline's source. No prefetch here:
         * the summary's decode wait is all the decoding. */
        const vit_pipeline_source source = {.paths = sb->paths, .count = good};
        if (vit_pipeline_open(run->pipeline, &source, cli_thread_count((int)run->threads), 0,
                              &err) != BASE_OK) {
            fprintf(stderr, "vit classify: %s\n", err.message);
            return -1;
        }
        if (cli_run_next_batch("classify", run->pipeline, &b, &run->timings) <= 0) status = -1;
    }
    for (size_t i = 0, g = 0; status == 0 && i < c->in.count; i++) {
        if (sb->problem[i]) {
            add_row(c, i, NULL, sb->problem[i]);
            continue;
        }
        const float *row = vit_pipeline_row(run->pipeline, &b, (int)g);
        add_row(c, i, row, row ? NULL : b.errors[g].message);
        g++;
    }
    if (status == 0) status = flush_rows(c, &b, cli_now_seconds() - start);
    for (size_t i = 0; i < c->in.count; i++) {
        free(sb->problem[i]);
        sb->problem[i] = NULL;
    }
    cli_inputs_free(&c->in);
    return status;
}

static int run_stream(classify_run *c) {
    const char *list = c->values[OPT_FILES_FROM] ? c->values[OPT_FILES_FROM] : "-";
    cli_path_reader reader;
    stream_batch sb = {0};
    if (cli_batch_load_model(&c->run, c->values[OPT_MODEL], c->values[OPT_LABELS],
                             c->values[OPT_POS_RESAMPLE], " (it outputs features)") != 0)
        return CLI_EXIT_FATAL;
    /* The images to come are unknown: only the model's files and the list
     * itself are protected from -o. */
    if (c->output &&
        (cli_protect_run("classify", &c->run.protect, c->run.model, c->values[OPT_LABELS], NULL,
                         0) != 0 ||
         cli_protect_list("classify", &c->run.protect, list) != 0 ||
         cli_check_output("classify", &c->run.protect, c->output) != 0 ||
         cli_lock_output("classify", c->output, 1, &c->run.lock) != 0))
        return CLI_EXIT_FATAL;
    const cli_run_settings settings = {(int)c->run.size, c->values[OPT_POS_RESAMPLE], NULL,
                                       c->all_classes, 0, 0};
    if (cli_results_open(&c->results, c->output, c->format, (int)c->top_k, c->run.model, &settings, 0,
                         &c->done) != 0)
        return CLI_EXIT_FATAL;
    c->results_open = 1;
    if (cli_batch_start(&c->run, NULL, 0, 0, 0) != 0 ||
        cli_path_reader_open("classify", list, c->values[OPT_NULL] != NULL, &reader) != 0)
        return CLI_EXIT_FATAL;
    int status = 0;
    sb.problem = calloc((size_t)c->run.batch, sizeof *sb.problem);
    sb.paths = calloc((size_t)c->run.batch, sizeof *sb.paths);
    if (!sb.problem || !sb.paths) {
        fprintf(stderr, "vit classify: out of memory\n");
        status = -1;
    }
    cli_catch_stop_signals();
    const double start = cli_now_seconds();
    while (status == 0 && !cli_stop_requested()) {
        status = stream_collect(c, &reader, &sb);
        if (status != 0 || c->in.count == 0) break; /* the end, or a stop with nothing read */
        status = stream_run_batch(c, &sb, start);
    }
    const double seconds = cli_now_seconds() - start;
    /* images/s over the whole run, the time waiting for paths included. */
    c->run.timings.total = seconds;
    c->run.timings.split = 1;
    for (size_t i = 0; sb.problem && i < c->in.count; i++) free(sb.problem[i]);
    free(sb.problem);
    free(sb.paths);
    cli_path_reader_close(&reader);
    if (status != 0) return CLI_EXIT_FATAL;
    c->results_open = 0;
    if (cli_results_close(&c->results) != 0) return CLI_EXIT_FATAL;
    c->to_write = c->processed;
    return finish(c, seconds);
}

int cli_classify(int argc, char **argv) {
    cli_args args;
    int parsed = cli_parse("classify", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0) return cli_parse_exit(parsed);
    classify_run c = {.run = {.command = "classify", .batch = DEFAULT_BATCH},
                      .values = args.values,
                      .top_k = 5,
                      .part = {0, 1},
                      .max_wait_ms = 20};
    const int exit_code = run_classify(&c, &args);
    if (c.results_open) {
        c.results.abandon = 1; /* a fatal error: a .npy is not left half-made */
        cli_results_close(&c.results);
    }
    cli_batch_free(&c.run);
    free(c.ext_text);
    cli_inputs_free(&c.in);
    free(c.skip_row);
    cli_string_set_free(&c.done);
    free(args.positional);
    return exit_code;
}
