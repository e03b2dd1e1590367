/* vit classify: top-k labels for image files and whole directories. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

enum { OPT_MODEL, OPT_TOPK, OPT_THREADS, OPT_SIZE, OPT_LABELS, OPT_FORMAT, OPT_BATCH, OPT_OUTPUT,
       OPT_RESUME, OPT_QUIET, OPT_NO_RECURSIVE, OPT_EXT, OPT_SHARD, OPT_NO_PREFETCH,
       OPT_POS_RESAMPLE, OPT_LIMITS, NUM_OPTS = OPT_LIMITS + CLI_NUM_LIMIT_OPTIONS };

#define DEFAULT_BATCH 16

static const cli_option OPTIONS[NUM_OPTS] = {
    [OPT_MODEL] = {"model", 'm', 1, "PATH", "model directory or .safetensors file (default: the "
                                           "shipped Fashion-MNIST model, weights/README.md)"},
    [OPT_TOPK] = {"top-k", 'k', 1, "N", "labels per image (default 5)"},
    [OPT_THREADS] = {"threads", 't', 1, "N", "threads (default: all cores)"},
    [OPT_SIZE] = {"size", 0, 1, "S", "input size, position embeddings resampled (default: native)"},
    [OPT_LABELS] = {"labels", 0, 1, "FILE", "class labels, one per line"},
    [OPT_FORMAT] = {"format", 0, 1, "FMT", "text, csv, jsonl or json (default: from -o's extension, else text)"},
    [OPT_BATCH] = {"batch", 'b', 1, "N", "images per forward pass (default 16)"},
    [OPT_OUTPUT] = {"output", 'o', 1, "FILE", "write results to FILE instead of standard output"},
    [OPT_RESUME] = {"resume", 0, 0, "", "with -o (csv/jsonl): skip files already in FILE, append the rest "
                                       "(FILE.run.json must show the same model, labels, -k and format)"},
    [OPT_QUIET] = {"quiet", 'q', 0, "", "no progress or summary on stderr"},
    [OPT_NO_RECURSIVE] = {"no-recursive", 0, 0, "", "do not descend into subdirectories"},
    [OPT_EXT] = {"ext", 0, 1, "LIST", "image extensions, comma-separated (default jpg,jpeg,png,bmp,gif,tga,pnm,ppm,pgm,psd)"},
    [OPT_SHARD] = {"shard", 0, 1, "I/N", "process only shard I of N (0 <= I < N), by a stable hash of the path"},
    [OPT_NO_PREFETCH] = {"no-prefetch", 0, 0, "", "decode each batch only when the model needs it (for benchmarks)"},
    [OPT_POS_RESAMPLE] = CLI_POS_RESAMPLE_OPTION,
    [OPT_LIMITS] = CLI_LIMIT_OPTIONS,
};

static const char USAGE[] =
    "usage: vit classify -m MODEL [options] PATH...\n"
    "\n"
    "Prints the top-k labels and probabilities of images. A PATH that is a directory\n"
    "is walked (recursively, sorted, hidden entries skipped) for image files. Rows name\n"
    "each image relative to the directory given (when one PATH is given) or by its path.\n"
    "Exit status: 0 all images classified, 2 some failed (each named on stderr and in\n"
    "its row), 1 fatal error, 130/143 stopped by SIGINT/SIGTERM (rows written are\n"
    "whole, a JSON array closed). In JSON, bytes of names that are not UTF-8 appear as\n"
    "\\xNN and a backslash as \\\\; CSV holds names as they are.";

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


int cli_classify(int argc, char **argv) {
    cli_args args;
    int parsed = cli_parse("classify", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0) {
        free(args.positional);
        return parsed > 0 ? CLI_EXIT_OK : CLI_EXIT_FATAL;
    }
    int exit_code = CLI_EXIT_FATAL;
    vit_model *model = NULL;
    vit_context *ctx = NULL;
    data_loader *loader = NULL;
    float *outputs = NULL;
    cli_inputs in = {0};
    unsigned char *skip_row = NULL; /* resume: computed with its batch, row already written */
    cli_string_set done = {0};
    cli_results results = {0};
    int results_open = 0;
    cli_protected protect = {0};
    cli_lock lock = {0};
    char *ext_text = NULL;
    long top_k = 5, threads = 0, size = 0, batch = DEFAULT_BATCH;
    vit_limits limits;
    if (cli_limits("classify", &args.values[OPT_LIMITS], &limits) != 0 ||
        (args.values[OPT_TOPK] && cli_int("classify", "-k", args.values[OPT_TOPK], 1, 1000, &top_k)) ||
        (args.values[OPT_THREADS] && cli_int("classify", "-t", args.values[OPT_THREADS], 1, 1024, &threads)) ||
        (args.values[OPT_SIZE] && cli_int("classify", "--size", args.values[OPT_SIZE], 1, 8192, &size)) ||
        (args.values[OPT_BATCH] && cli_int("classify", "-b", args.values[OPT_BATCH], 1, 1024, &batch)))
        goto done;
    const char *output = args.values[OPT_OUTPUT];
    cli_results_format format = cli_results_format_for_path(output);
    if (args.values[OPT_FORMAT] && cli_results_format_parse(args.values[OPT_FORMAT], &format) != 0) {
        fprintf(stderr, "vit classify: --format expects text, csv, jsonl or json, got '%s'\n",
                args.values[OPT_FORMAT]);
        goto done;
    }
    const int resume = args.values[OPT_RESUME] != NULL;
    if (resume && (!output || (format != CLI_RESULTS_CSV && format != CLI_RESULTS_JSONL))) {
        fprintf(stderr, "vit classify: --resume needs -o FILE in csv or jsonl format\n");
        goto done;
    }
    shard part = {0, 1};
    if (args.values[OPT_SHARD] && parse_shard(args.values[OPT_SHARD], &part) != 0) {
        fprintf(stderr, "vit classify: --shard expects I/N with 0 <= I < N, got '%s'\n", args.values[OPT_SHARD]);
        goto done;
    }
    if (args.num_positional == 0) {
        fprintf(stderr, "vit classify: no images given (see 'vit classify -h')\n");
        goto done;
    }
    const int quiet = args.values[OPT_QUIET] != NULL;

    const char *extensions[64];
    data_walk_options walk = {.recursive = !args.values[OPT_NO_RECURSIVE]};
    if (args.values[OPT_EXT]) {
        if (!(ext_text = strdup(args.values[OPT_EXT]))) goto done;
        walk.extensions = extensions;
        walk.num_extensions = cli_split_list(ext_text, extensions, 64);
    }
    if (cli_inputs_collect("classify", args.positional, args.num_positional, &walk, CLI_NAMES_ROWS,
                           &in) != 0)
        goto done;
    if (part.count > 1) filter_inputs(&in, in_shard, &part);

    cli_set_threads((int)threads);
    model = cli_load_model_limited("classify", args.values[OPT_MODEL], args.values[OPT_LABELS],
                                   args.values[OPT_POS_RESAMPLE], &limits, (int)size);
    if (!model) goto done;
    if (vit_model_config(model)->num_classes == 0) {
        fprintf(stderr, "vit classify: %s has no classification head (it outputs features)\n",
                vit_model_weights_path(model));
        goto done;
    }
    /* Before the output is opened (and cut): it must be none of the files
     * this run reads, and no other vit process may be writing it. */
    if (output &&
        (cli_protect_run("classify", &protect, model, args.values[OPT_LABELS],
                         (const char *const *)in.paths, in.count) != 0 ||
         cli_check_output("classify", &protect, output) != 0 ||
         cli_lock_output("classify", output, 1, &lock) != 0))
        goto done;
    const cli_run_settings settings = {(int)size, args.values[OPT_POS_RESAMPLE], args.values[OPT_SHARD]};
    if (cli_results_open(&results, output, format, (int)top_k, model, &settings, resume, &done) != 0)
        goto done;
    results_open = 1;
    if ((size_t)batch > in.count && in.count > 0) batch = (long)in.count;
    if (resume && keep_unfinished_batches(&in, &skip_row, &done, (size_t)batch) != 0) {
        fprintf(stderr, "vit classify: out of memory\n");
        goto done;
    }
    size_t to_write = in.count;
    for (size_t i = 0; skip_row && i < in.count; i++) to_write -= skip_row[i];

    data_preprocess pre = *vit_model_preprocess(model);
    if (size) data_preprocess_set_size(&pre, (int)size);
    vit_error err;
    if (vit_context_create(model, (int)batch, (int)size, &ctx, &err) != VIT_OK ||
        data_loader_create(&pre, (const char *const *)in.paths, in.count, (int)batch,
                           args.values[OPT_NO_PREFETCH] ? cli_thread_count((int)threads) : 1,
                           !args.values[OPT_NO_PREFETCH], &loader,
                           &err) != VIT_OK) {
        fprintf(stderr, "vit classify: %s\n", err.message);
        goto done;
    }
    if (!(outputs = malloc(sizeof(float) * vit_model_output_size(model) * (size_t)batch))) {
        fprintf(stderr, "vit classify: out of memory\n");
        goto done;
    }

    const int progress = !quiet && isatty(STDERR_FILENO);
    const int classes = vit_model_output_size(model);
    size_t processed = 0, failed = 0;
    const double start = cli_now_seconds();
    data_batch b;
    cli_catch_stop_signals();
    while (!cli_stop_requested() && data_loader_next(loader, &b) > 0) {
        if (cli_run_batch("classify", ctx, model, (const char *const *)in.paths, &b, outputs) != 0) goto done;
        for (int i = 0; i < b.count; i++) {
            const char *name = in.names[b.first + i];
            if (skip_row && skip_row[b.first + i]) continue;
            processed++;
            if (b.row[i] < 0) {
                failed++;
                fprintf(stderr, "%svit classify: %s\n", progress ? "\r" : "", b.errors[i].message);
                cli_results_add(&results, name, NULL, b.errors[i].message);
            } else {
                cli_results_add(&results, name, outputs + (size_t)b.row[i] * classes, NULL);
            }
        }
        if (cli_results_flush(&results) != 0) goto done;
        if (progress) cli_show_progress(processed, to_write, failed, cli_now_seconds() - start);
    }
    results_open = 0;
    if (cli_results_close(&results) != 0) goto done;
    const double seconds = cli_now_seconds() - start;
    if (progress) fprintf(stderr, "\r%78s\r", "");
    const int signo = cli_stop_requested();
    if (signo) {
        /* Stopped between batches: every row written is whole and a JSON
         * array is closed; the status says the run did not finish. */
        fprintf(stderr, "vit classify: stopped by %s after %zu of %zu files%s\n",
                signo == SIGINT ? "SIGINT" : "SIGTERM", processed, to_write,
                !output ? ""
                : format == CLI_RESULTS_CSV || format == CLI_RESULTS_JSONL ? "; --resume continues"
                : format == CLI_RESULTS_JSON ? "; the JSON array holds their rows (a json file "
                                               "cannot be resumed: use jsonl for that)"
                : "");
        exit_code = 128 + signo;
        goto done;
    }
    if (!quiet)
        fprintf(stderr, "vit classify: %zu files, %zu failed, %.1f s, %.1f images/s\n", processed,
                failed, seconds, seconds > 0 ? processed / seconds : 0.0);
    exit_code = failed || in.problems ? CLI_EXIT_SOME_FAILED : CLI_EXIT_OK;

done:
    if (results_open) cli_results_close(&results);
    cli_unlock_output(&lock);
    cli_protected_free(&protect);
    data_loader_free(loader);
    vit_context_free(ctx);
    free(outputs);
    free(ext_text);
    cli_inputs_free(&in);
    free(skip_row);
    cli_string_set_free(&done);
    vit_model_free(model);
    free(args.positional);
    return exit_code;
}
