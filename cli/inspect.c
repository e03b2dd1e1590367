/* vit attention | features | segment | patches: pictures and arrays of what
 * happens inside the model, for single images or whole directories.
 *
 * The four share one driver (inspect_setup / inspect_run): inputs collected
 * and walked as by classify, batches loaded by data_loader, the forward pass
 * asked to capture what the command needs, then one handler call per file.
 * Pictures cover the input image at its own size; the part of it the model
 * did not see (outside the resize + centre crop) is dimmed. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cli_mpi.h"
#include "vit_inspect.h"

#define DEFAULT_BATCH 8
#define OVERLAY_ALPHA 0.55f
#define KMEANS_MAX_ITER 300
#define MASK_OUTSIDE 255 /* label-mask value where the model saw nothing */

/* Options every inspection command takes, first in each command's table. */
enum { OPT_MODEL, OPT_REVISION, OPT_OUTPUT, OPT_LAYER, OPT_THREADS, OPT_BATCH, OPT_SIZE, OPT_POS_RESAMPLE,
       OPT_QUIET, OPT_NO_RECURSIVE, OPT_EXT, OPT_FILES_FROM, OPT_NULL, OPT_ALLOW_UNUSED, NUM_COMMON };

#define COMMON_OPTIONS(output_help, layer_help)                                                  \
    [OPT_MODEL] = {"model", 'm', 1, "MODEL", CLI_MODEL_HELP},                                  \
    [OPT_REVISION] = CLI_REVISION_OPTION,                                                        \
    [OPT_OUTPUT] = {"output", 'o', 1, "PATH", output_help},                                      \
    [OPT_LAYER] = {"layer", 0, 1, "L", layer_help},                                              \
    [OPT_THREADS] = {"threads", 't', 1, "N", "threads (default: all cores)"},                    \
    [OPT_BATCH] = {"batch", 'b', 1, "N", "images per forward pass (default 8)"},                 \
    [OPT_SIZE] = {"size", 0, 1, "S", "input size, position embeddings resampled (default: native)"}, \
    [OPT_POS_RESAMPLE] = CLI_POS_RESAMPLE_OPTION,                                                \
    [OPT_QUIET] = {"quiet", 'q', 0, "", "no progress or summary on stderr"},                     \
    [OPT_NO_RECURSIVE] = {"no-recursive", 0, 0, "", "do not descend into subdirectories"},       \
    [OPT_EXT] = {"ext", 0, 1, "LIST", "image extensions in directories, comma-separated"},   \
    [OPT_FILES_FROM] = CLI_FILES_FROM_OPTION,                                                    \
    [OPT_NULL] = CLI_NULL_OPTION,                                                                \
    [OPT_ALLOW_UNUSED] = CLI_ALLOW_UNUSED_OPTION

#define OUTPUT_HELP_PICTURE "output PNG, or a directory (ending in /) for one per input"

/* Pictures are drawn over the input scaled down to this longest side: a
 * 4000-pixel photo's heatmap is a 4 MB PNG that shows nothing more. */
#define DEFAULT_MAX_SIDE 1024
#define MAX_SIDE_OPTION                                                                         \
    {"max-side", 0, 1, "N", "draw pictures at most N pixels on their longer side (default 1024; " \
                            "0: the input's size)"}
#define LAYER_HELP_BLOCK "encoder block, 0-based; negative counts from the end (default -1, the last)"

#define COMMON_USAGE \
    "PATHs are images or directories (walked recursively, sorted); --files-from\n" \
    "FILE adds the files it lists, not walked (find DIR -print0 | vit CMD ...\n" \
    "--files-from - -0). No output may be the model's files or an input. Exit\n" \
    "status: 0 all went well, 2 some images could not be read (each named on\n" \
    "stderr), 1 fatal error (also an output that cannot be written)."

/* What the commands that draw pictures add (features writes one array). */
#define PICTURE_USAGE(size_note) \
    "With one image, -o names the output picture; with several, or with -o DIR/,\n" \
    "outputs go into DIR named after the inputs (a/b.jpg -> DIR/a/b.png; a listed\n" \
    "file by its base name). " size_note "\n\n"

/* The state one inspection run shares between driver and command. */
typedef struct inspect {
    const char *command;
    cli_args args;
    cli_inputs in;
    unsigned char *collides; /* per input: its output name is taken by an earlier input */
    vit_model *model;
    vit_pipeline *pipeline; /* loader, context and rows (vit_pipeline.h) */
    vit_context *ctx;       /* the pipeline's, for the captures */
    data_preprocess pre;    /* the pipeline's recipe, for the source boxes */
    int batch, layers, heads, dim, tokens, prefix, grid_h, grid_w, patches;
    int threads; /* -t, resolved (cli_thread_count) */
    int layer; /* resolved --layer: -1 (embedding) .. layers - 1 */
    const char *npy;      /* --npy, or NULL */
    int out_dir, npy_dir; /* -o / --npy name directories: one file per input */
    int overlay;          /* segment: MASK.overlay.png beside each -o output */
    cli_protected protect; /* the model's files and the inputs: never written */
    cli_lock locks[2];    /* -o's and --npy's */
    int quiet;
    int max_side; /* pictures: longest side in pixels at most (0: the input's size) */
    char *ext_text;
    size_t failed;
    int inputs_given; /* in was filled by rank 0 of an MPI job: no walk */
    cli_timings timings; /* for the summary line */
} inspect;

/* A per-file handler: row is the image's index in the batch (its captures),
 * or -1 when the file could not be read (error printed already). Returns 0,
 * 1 when this file failed (message printed), -1 on a fatal error. */
typedef int (*inspect_handler)(inspect *s, void *state, size_t index, int row);

static void inspect_free(inspect *s) {
    for (int i = 0; i < 2; i++) cli_unlock_output(&s->locks[i]);
    cli_protected_free(&s->protect);
    vit_pipeline_free(s->pipeline);
    vit_model_free(s->model);
    cli_inputs_free(&s->in);
    free(s->collides);
    free(s->ext_text);
    free(s->args.positional);
}

/* Prints "vit CMD: message" for one file, keeping the progress line tidy. */
static int file_failed(inspect *s, const char *message) {
    if (!s->quiet && isatty(STDERR_FILENO)) cli_progress_clear();
    fprintf(stderr, "vit %s: %s\n", s->command, message);
    return 1;
}

static int out_of_memory(const inspect *s) {
    fprintf(stderr, "vit %s: out of memory\n", s->command);
    return -1;
}

/* --layer: a block index (negative from the end) or, with allow_embed,
 * "embed" for the encoder input. */
static int parse_layer(const inspect *s, int allow_embed) {
    const char *text = s->args.values[OPT_LAYER];
    if (!text) return s->layers - 1;
    if (allow_embed && strcmp(text, "embed") == 0) return -1;
    long v;
    if (cli_int(s->command, "--layer", text, -s->layers, s->layers - 1, &v) != 0) return -2;
    return v < 0 ? (int)(v + s->layers) : (int)v;
}

/* Whether an output argument names a directory: it ends in '/' or is one. */
static int is_dir_target(const char *path) {
    struct stat st;
    const size_t n = strlen(path);
    return (n > 0 && path[n - 1] == '/') || (stat(path, &st) == 0 && S_ISDIR(st.st_mode));
}

/* The input's name without its extension (malloc'd). */
static char *stem_of(const char *name) {
    const char *slash = strrchr(name, '/'), *dot = strrchr(name, '.');
    const size_t n = dot && dot > (slash ? slash + 1 : name) ? (size_t)(dot - name) : strlen(name);
    return strndup(name, n);
}

/* Where an output of input `index` goes: with dir_mode DIR/<stem><suffix>,
 * otherwise `given` itself. malloc'd; NULL with a message printed on
 * failure. */
static char *planned_path(inspect *s, const char *given, int dir_mode, size_t index,
                          const char *suffix) {
    if (!dir_mode) {
        char *p = strdup(given);
        if (!p) out_of_memory(s);
        return p;
    }
    char *stem = stem_of(s->in.names[index]);
    size_t n = strlen(given);
    while (n > 1 && given[n - 1] == '/') n--;
    const size_t size = n + (stem ? strlen(stem) : 0) + strlen(suffix) + 2;
    char *p = stem ? malloc(size) : NULL;
    if (!p) {
        free(stem);
        out_of_memory(s);
        return NULL;
    }
    snprintf(p, size, "%.*s/%s%s", (int)n, given, stem, suffix);
    free(stem);
    return p;
}

/* planned_path, with its directories created. An output that cannot be
 * written is fatal, as for every command: NULL, message printed. */
static char *output_path(inspect *s, const char *given, int dir_mode, size_t index,
                         const char *suffix) {
    char *p = planned_path(s, given, dir_mode, index, suffix);
    if (p && dir_mode && cli_make_parents(p) != 0) {
        fprintf(stderr, "vit %s: %s: cannot create its directory: %s\n", s->command, p,
                strerror(errno));
        free(p);
        return NULL;
    }
    return p;
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Marks inputs whose output stem an earlier input already has (a.jpg and
 * a.png would both write DIR/a.png): those fail instead of overwriting. */
static int mark_collisions(inspect *s) {
    const size_t n = s->in.count;
    char **keys = calloc(n ? n : 1, sizeof *keys);
    if (!keys) return out_of_memory(s);
    int status = 0;
    for (size_t i = 0; i < n && status == 0; i++) {
        /* stem, NUL, then the index as 16 hex digits so equal stems sort
         * in input order and the first one keeps its name. */
        char *stem = stem_of(s->in.names[i]);
        const size_t len = stem ? strlen(stem) : 0;
        if (!stem || !(keys[i] = malloc(len + 18))) {
            free(stem);
            status = out_of_memory(s);
            break;
        }
        memcpy(keys[i], stem, len + 1);
        snprintf(keys[i] + len + 1, 17, "%016zx", i);
        free(stem);
    }
    if (status == 0) {
        if (n > 1) qsort(keys, n, sizeof *keys, compare_strings);
        for (size_t i = 1; i < n; i++)
            if (strcmp(keys[i], keys[i - 1]) == 0)
                s->collides[strtoull(keys[i] + strlen(keys[i]) + 1, NULL, 16)] = 1;
    }
    for (size_t i = 0; i < n; i++) free(keys[i]);
    free(keys);
    return status;
}

/* MASK.png -> MASK.overlay.png (a name without .png gets the suffix added). */
static char *overlay_path(const char *mask) {
    size_t n = strlen(mask);
    if (n >= 4 && strcasecmp(mask + n - 4, ".png") == 0) n -= 4;
    char *p = malloc(n + 13);
    if (p) snprintf(p, n + 13, "%.*s.overlay.png", (int)n, mask);
    return p;
}

static int output_mode(const inspect *s, const char *option, const char *given);
static int guard_outputs(inspect *s, const char *labels_path);

/* Parses the common options, collects the inputs (naming them for rows or
 * for one output file each: then -o and --npy, the value npy, are checked),
 * loads the model (with labels_path, if any), creates the context and
 * resolves --layer ("embed" allowed with allow_embed). Returns 0, or -1
 * (message printed). */
static int inspect_setup(inspect *s, cli_naming naming, const char *labels_path, int allow_embed,
                         const char *npy) {
    const cli_args *a = &s->args;
    long threads = 0, size = 0, batch = DEFAULT_BATCH;
    if ((a->values[OPT_THREADS] && cli_int(s->command, "-t", a->values[OPT_THREADS], 1, 1024, &threads)) ||
        (a->values[OPT_SIZE] && cli_int(s->command, "--size", a->values[OPT_SIZE], 1, 8192, &size)) ||
        (a->values[OPT_BATCH] && cli_int(s->command, "-b", a->values[OPT_BATCH], 1, 1024, &batch)))
        return -1;
    if (!a->values[OPT_OUTPUT]) {
        fprintf(stderr, "vit %s: no output given (-o, see 'vit %s -h')\n", s->command, s->command);
        return -1;
    }
    if (a->num_positional == 0 && !a->values[OPT_FILES_FROM]) {
        fprintf(stderr, "vit %s: no images given (see 'vit %s -h')\n", s->command, s->command);
        return -1;
    }
    s->quiet = a->values[OPT_QUIET] != NULL;
    const char *extensions[64];
    data_walk_options walk = {.recursive = !a->values[OPT_NO_RECURSIVE]};
    if (a->values[OPT_EXT]) {
        if (!(s->ext_text = strdup(a->values[OPT_EXT]))) return out_of_memory(s);
        walk.extensions = extensions;
        walk.num_extensions = cli_split_list(s->ext_text, extensions, 64);
    }
    if (!s->inputs_given &&
        cli_inputs_gather(s->command, a->positional, a->num_positional, &walk, naming,
                          a->values[OPT_FILES_FROM], a->values[OPT_NULL] != NULL, &s->in) != 0)
        return -1;
    if (!(s->collides = calloc(s->in.count ? s->in.count : 1, 1))) return out_of_memory(s);
    if (naming == CLI_NAMES_OUTPUTS && mark_collisions(s) != 0) return -1;

    cli_set_threads((int)threads);
    s->threads = cli_thread_count((int)threads);
    const double load_start = cli_now_seconds();
    s->model = cli_load_model_limited(s->command, a->values[OPT_MODEL], labels_path,
                                      a->values[OPT_POS_RESAMPLE], NULL, (int)size,
                                      a->values[OPT_ALLOW_UNUSED] != NULL);
    s->timings.load = cli_now_seconds() - load_start;
    if (!s->model) return -1;
    const vit_config *c = vit_model_config(s->model);
    s->layers = c->num_layers;
    s->heads = c->num_heads;
    s->dim = c->hidden_size;
    s->prefix = c->num_prefix_tokens;
    if ((size_t)batch > s->in.count && s->in.count > 0) batch = (long)s->in.count;
    s->batch = (int)batch;
    /* The pipeline without its source yet: the captures are set on its
     * context first (inspect_run opens the inputs). */
    const vit_pipeline_options options = {
        .batch = s->batch, .size = (int)size, .threads = s->threads, .softmax = 1};
    base_error err;
    if (vit_pipeline_create(s->model, &options, NULL, &s->pipeline, &err) != BASE_OK) {
        fprintf(stderr, "vit %s: %s\n", s->command, err.message);
        return -1;
    }
    s->ctx = vit_pipeline_context(s->pipeline);
    s->pre = *vit_pipeline_preprocess(s->pipeline);
    s->tokens = vit_context_num_tokens(s->ctx);
    s->grid_h = s->grid_w = vit_context_image_size(s->ctx) / c->patch_size;
    s->patches = s->tokens - s->prefix;
    if ((s->layer = parse_layer(s, allow_embed)) < -1) return -1;
    if (naming == CLI_NAMES_OUTPUTS) {
        s->npy = npy;
        if ((s->out_dir = output_mode(s, "-o", a->values[OPT_OUTPUT])) < 0) return -1;
        if (npy && (s->npy_dir = output_mode(s, "--npy", npy)) < 0) return -1;
        if (guard_outputs(s, labels_path) != 0) return -1;
    }
    return 0;
}

/* Whether two output arguments are the same file or directory. */
static int same_target(const char *a, const char *b) {
    struct stat sa, sb;
    if (stat(a, &sa) == 0 && stat(b, &sb) == 0) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    return strcmp(a, b) == 0;
}

/* Locks an output (a directory, created first, or a file) for this run. */
static int lock_target(inspect *s, const char *given, int dir_mode, cli_lock *lock) {
    if (dir_mode && (cli_make_parents(given) != 0 || (mkdir(given, 0777) != 0 && errno != EEXIST))) {
        fprintf(stderr, "vit %s: %s: cannot create the directory: %s\n", s->command, given,
                strerror(errno));
        return -1;
    }
    return cli_lock_output(s->command, given, 0, lock);
}

/* Before anything is written: no planned output (per input in directory
 * mode) may be the model's files or an input, and no other vit process may
 * be writing -o or --npy. */
static int guard_outputs(inspect *s, const char *labels_path) {
    const char *out = s->args.values[OPT_OUTPUT];
    if (!s->out_dir && s->npy && !s->npy_dir && same_target(out, s->npy)) {
        fprintf(stderr, "vit %s: -o and --npy name the same file %s\n", s->command, out);
        return -1;
    }
    if (cli_protect_run(s->command, &s->protect, s->model, labels_path,
                        (const char *const *)s->in.paths, s->in.count) != 0 ||
        cli_protect_list(s->command, &s->protect, s->args.values[OPT_FILES_FROM]) != 0)
        return -1;
    for (size_t i = 0; i < s->in.count; i++) {
        if (s->collides[i]) continue; /* never written */
        char *paths[3] = {planned_path(s, out, s->out_dir, i, ".png"), NULL, NULL};
        if (paths[0] && s->overlay) paths[1] = overlay_path(paths[0]);
        if (s->npy) paths[2] = planned_path(s, s->npy, s->npy_dir, i, ".npy");
        int status = !paths[0] || (s->npy && !paths[2]) ? -1 : 0; /* message printed */
        if (!status && s->overlay && !paths[1]) status = out_of_memory(s);
        for (int k = 0; k < 3 && status == 0; k++)
            if (paths[k]) status = cli_check_output(s->command, &s->protect, paths[k]);
        for (int k = 0; k < 3; k++) free(paths[k]);
        if (status) return -1;
    }
    if (lock_target(s, out, s->out_dir, &s->locks[0]) != 0) return -1;
    if (s->npy && !(s->npy_dir && s->out_dir && same_target(out, s->npy)) &&
        lock_target(s, s->npy, s->npy_dir, &s->locks[1]) != 0)
        return -1;
    return 0;
}

/* Captures `kind` of layer `layer` for whole batches into a new buffer of
 * batch x floats_per_image floats (*dst; freed by the caller). */
static int capture(inspect *s, vit_capture_kind kind, int layer, size_t floats_per_image,
                   float **dst) {
    if (!(*dst = malloc((size_t)s->batch * floats_per_image * sizeof **dst))) return out_of_memory(s);
    base_error err;
    if (vit_context_capture(s->ctx, kind, layer, *dst, &err) != BASE_OK) {
        fprintf(stderr, "vit %s: %s\n", s->command, err.message);
        return -1;
    }
    return 0;
}

static int inspect_finish(inspect *s, size_t processed, double seconds);

/* Runs every input through the model, calling handler once per file in
 * input order. Returns the exit status. */
static int inspect_run(inspect *s, inspect_handler handler, void *state) {
    const vit_pipeline_source source = {(const char *const *)s->in.paths, s->in.count, NULL, NULL};
    base_error err;
    if (vit_pipeline_open(s->pipeline, &source, 1, 1, &err) != BASE_OK) {
        fprintf(stderr, "vit %s: %s\n", s->command, err.message);
        return CLI_EXIT_FATAL;
    }
    const int progress = !s->quiet && isatty(STDERR_FILENO);
    const double start = cli_now_seconds();
    size_t processed = 0;
    int status = CLI_EXIT_OK;
    data_batch b;
    cli_catch_stop_signals();
    s->timings.split = 1;
    while (status == CLI_EXIT_OK && !cli_stop_requested()) {
        const int rc = cli_run_next_batch(s->command, s->pipeline, &b, &s->timings);
        if (rc == 0) break;
        if (rc < 0) {
            status = CLI_EXIT_FATAL;
            break;
        }
        for (int i = 0; i < b.count; i++) {
            const size_t index = b.first + (size_t)i;
            int row = b.row[i];
            if (row < 0) {
                file_failed(s, b.errors[i].message);
            } else if (s->collides[index]) {
                char message[1024];
                snprintf(message, sizeof message,
                         "%s: skipped, its output name is taken by another input with the same "
                         "name before the extension",
                         s->in.paths[index]);
                file_failed(s, message);
                row = -1;
            }
            const int r = handler(s, state, index, row);
            if (r < 0) {
                status = CLI_EXIT_FATAL;
                break;
            }
            s->failed += row < 0 || r > 0;
            processed++;
        }
        if (progress) cli_show_progress(processed, s->in.count, s->failed, cli_now_seconds() - start);
    }
    if (progress) cli_progress_clear();
    if (status != CLI_EXIT_OK) return status;
    return inspect_finish(s, processed, cli_now_seconds() - start);
}

/* After the last batch: the stop by a signal, or the summary; the exit status. */
static int inspect_finish(inspect *s, size_t processed, double seconds) {
    const int signo = cli_stop_requested();
    if (signo) {
        /* Between batches: every output written is whole, and the caller
         * drops what it was still gathering (features' array). */
        fprintf(stderr, "vit %s: stopped by %s after %zu of %zu files\n", s->command,
                signo == SIGINT ? "SIGINT" : "SIGTERM", processed, s->in.count);
        return 128 + signo;
    }
    s->timings.total = seconds;
    if (!s->quiet) cli_print_summary(s->command, "computed", processed, s->failed, NULL, &s->timings);
    return s->failed || s->in.problems ? CLI_EXIT_SOME_FAILED : CLI_EXIT_OK;
}

/* Parses argv for a command; 1: done (help shown or bad option, *exit_code set). */
static int inspect_parse(inspect *s, const char *command, const char *usage,
                         const cli_option *options, int num_options, int argc, char **argv,
                         int *exit_code) {
    memset(s, 0, sizeof *s);
    s->command = command;
    const int parsed = cli_parse(command, usage, options, num_options, argc, argv, &s->args);
    if (parsed == 0) return 0;
    *exit_code = cli_parse_exit(parsed);
    return 1;
}

/* Whether -o / --npy must be directories, and are: several inputs (or a
 * directory argument) need one. Returns 1 for directory mode, 0 for a file,
 * -1 (message printed) when a file was given for several inputs. */
static int output_mode(const inspect *s, const char *option, const char *given) {
    int several = s->in.count > 1;
    for (int a = 0; a < s->args.num_positional; a++) {
        struct stat st;
        if (stat(s->args.positional[a], &st) == 0 && S_ISDIR(st.st_mode)) several = 1;
    }
    if (is_dir_target(given)) return 1;
    if (several) {
        fprintf(stderr, "vit %s: with several images %s must be a directory (end it with /)\n",
                s->command, option);
        return -1;
    }
    return 0;
}

/* Writes a picture; 0, or -1 (fatal, message printed): an output that
 * cannot be written stops the run in every mode, as a full disk or a
 * read-only directory would fail every file after it too. Exit status 2
 * is for inputs that cannot be read. */
static int write_picture(inspect *s, const char *path, const data_image *img) {
    base_error err;
    if (data_write_png(path, img->width, img->height, 3, img->pixels, &err) != BASE_OK) {
        file_failed(s, err.message);
        return -1;
    }
    return 0;
}

/* Writes the picture of input `index` to its -o output. */
static int write_output_picture(inspect *s, size_t index, const data_image *pic) {
    char *path = output_path(s, s->args.values[OPT_OUTPUT], s->out_dir, index, ".png");
    const int r = path ? write_picture(s, path, pic) : -1;
    free(path);
    return r;
}

/* Writes an array to the --npy output of input `index` (if any); 0 or -1. */
static int write_array(inspect *s, size_t index, data_npy_dtype dtype, const int64_t *shape,
                       int ndim, const void *data) {
    if (!s->npy) return 0;
    char *path = output_path(s, s->npy, s->npy_dir, index, ".npy");
    if (!path) return -1;
    base_error err;
    int r = 0;
    if (data_write_npy(path, dtype, shape, ndim, data, &err) != BASE_OK) {
        file_failed(s, err.message);
        r = -1;
    }
    free(path);
    return r;
}

/* Loads the input's own pixels (the loader only keeps the model input). */
static int load_original(inspect *s, size_t index, data_image *img) {
    base_error err;
    if (data_image_load(s->in.paths[index], img, &err) != BASE_OK) return file_failed(s, err.message);
    return 0;
}

/* Scales img down (bicubic with antialiasing, as PIL's thumbnail) so its
 * longer side is at most --max-side; 0, or 1 when this file failed. */
static int fit_picture(inspect *s, data_image *img) {
    const int longer = img->width > img->height ? img->width : img->height;
    if (s->max_side <= 0 || longer <= s->max_side) return 0;
    const double scale = (double)s->max_side / longer;
    const int w = (int)fmax(1, lround(img->width * scale)), h = (int)fmax(1, lround(img->height * scale));
    data_image small = {0};
    base_error err;
    if (data_resize(img, w, h, DATA_RESAMPLE_BICUBIC, &small, &err) != BASE_OK)
        return file_failed(s, err.message);
    data_image_free(img);
    *img = small;
    return 0;
}

/* The input scaled to be drawn on: load_original, then fit_picture. */
static int load_picture(inspect *s, size_t index, data_image *img) {
    if (load_original(s, index, img)) return 1;
    if (fit_picture(s, img) == 0) return 0;
    data_image_free(img);
    return 1;
}

/* --max-side N (0..65535) into s->max_side; 0, or -1 (message printed). */
static int parse_max_side(inspect *s, const char *text) {
    long side = DEFAULT_MAX_SIDE;
    if (text && cli_int(s->command, "--max-side", text, 0, 65535, &side) != 0) return -1;
    s->max_side = (int)side;
    return 0;
}

static void min_max(const float *v, size_t n, float *lo, float *hi) {
    *lo = *hi = v[0];
    for (size_t i = 1; i < n; i++) {
        if (v[i] < *lo) *lo = v[i];
        if (v[i] > *hi) *hi = v[i];
    }
}

/* ------------------------------------------------------------ attention */

enum { OPT_HEAD = NUM_COMMON, OPT_ROLLOUT, OPT_DISCARD, OPT_GRID, OPT_NPY, OPT_ATTENTION_MAX_SIDE,
       NUM_ATTENTION_OPTS };

static const cli_option ATTENTION_OPTIONS[NUM_ATTENTION_OPTS] = {
    COMMON_OPTIONS(OUTPUT_HELP_PICTURE, LAYER_HELP_BLOCK " (rollout: the last layer included)"),
    [OPT_HEAD] = {"head", 0, 1, "H", "one head (0-based) or mean (default mean)"},
    [OPT_ROLLOUT] = {"rollout", 0, 0, "", "attention rollout through layers 0..L instead"},
    [OPT_DISCARD] = {"discard", 0, 1, "R", "rollout: drop the lowest fraction R of each layer's attention (default 0)"},
    [OPT_GRID] = {"grid", 0, 0, "", "draw every head of the layer (and their mean) as tiles"},
    [OPT_NPY] = {"npy", 0, 1, "PATH", "also write the grid_h x grid_w float32 map as .npy (--grid: heads + 1 maps, the mean last)"},
    [OPT_ATTENTION_MAX_SIDE] = MAX_SIDE_OPTION,
};

static const char ATTENTION_USAGE[] =
    "usage: vit attention [-m MODEL] -o OUT.png [options] PATH...\n"
    "\n"
    "Draws the class token's attention over the patches, from one layer (one head or\n"
    "the mean of the heads) or as attention rollout (Abnar & Zuidema 2020), upsampled\n"
    "bilinearly and blended over the image as a heatmap (turbo colormap, min..max of\n"
    "the map). --npy writes the raw map. Only patch columns are drawn: the class,\n"
    "distillation and register tokens' are left out (not renormalised). A model\n"
    "without a class token draws the mean over the patch tokens of their rows (of\n"
    "the layer's attention, or of the rollout matrix).\n\n"
    PICTURE_USAGE("Pictures\nhave the input image's size up to --max-side; --grid tiles one picture per head\n"
                  "and their mean, each the image scaled to at most 256 pixels a side.") COMMON_USAGE;

typedef struct attention_state {
    int head; /* -1: mean */
    int rollout, grid;
    int patch_mean; /* no class token: the mean of the patch rows, not row 0 */
    float discard;
    float **layers;           /* captured attention per layer (rollout: 0..L; else [L] only) */
    const float **per_image;  /* rollout: this image's layer pointers */
    float *result, *scratch;  /* rollout: T x T, and its scratch */
    float *maps;              /* (heads + 1) x grid cells */
} attention_state;

/* A tiled figure: one tile per head and the mean, each the image (scaled to
 * at most 256 pixels a side) under that head's map, with its name. */
static int attention_figure(inspect *s, attention_state *st, const data_image *img,
                            data_image *fig, base_error *err) {
    const int cells = s->patches, tiles = s->heads + 1;
    const double scale = fmin(1.0, 256.0 / (img->width > img->height ? img->width : img->height));
    const int tw = (int)fmax(1, lround(img->width * scale)), th = (int)fmax(1, lround(img->height * scale));
    const int cols = (int)ceil(sqrt((double)tiles)), rows = (tiles + cols - 1) / cols, gap = 4;
    data_image small = {0}, tile = {0};
    if (data_resize(img, tw, th, DATA_RESAMPLE_BILINEAR, &small, err) != BASE_OK) return -1;
    double box[4];
    data_preprocess_source_box(&s->pre, tw, th, box);
    fig->width = cols * tw + (cols + 1) * gap;
    fig->height = rows * th + (rows + 1) * gap;
    if (!(fig->pixels = malloc((size_t)fig->width * fig->height * 3))) {
        data_image_free(&small);
        base_error_set(err, BASE_E_NOMEM, "out of memory");
        return -1;
    }
    memset(fig->pixels, 255, (size_t)fig->width * fig->height * 3);
    const uint8_t white[3] = {255, 255, 255}, black[3] = {0, 0, 0};
    for (int t = 0; t < tiles; t++) {
        const float *map = st->maps + (size_t)t * cells;
        float lo, hi;
        min_max(map, (size_t)cells, &lo, &hi);
        if (data_overlay_heatmap(&small, box, map, s->grid_h, s->grid_w, lo, hi, OVERLAY_ALPHA,
                                 &tile, err) != BASE_OK) {
            data_image_free(&small);
            return -1;
        }
        const int x0 = gap + t % cols * (tw + gap), y0 = gap + t / cols * (th + gap);
        for (int y = 0; y < th; y++)
            memcpy(fig->pixels + ((size_t)(y0 + y) * fig->width + x0) * 3,
                   tile.pixels + (size_t)y * tw * 3, (size_t)tw * 3);
        char name[32];
        if (t < s->heads) snprintf(name, sizeof name, "head %d", t);
        else snprintf(name, sizeof name, "mean");
        const int tscale = tw >= 160 ? 2 : 1;
        data_fill_rect(fig, x0, y0, data_text_width(name, tscale) + 4 * tscale,
                       data_text_height(tscale), black, 0.6f);
        data_draw_text(fig, x0 + 2 * tscale, y0 + tscale, tscale, name, white);
        data_image_free(&tile);
    }
    data_image_free(&small);
    return 0;
}

static int attention_image(inspect *s, void *state, size_t index, int row) {
    attention_state *st = state;
    if (row < 0) return 0;
    const int T = s->tokens, H = s->heads, cells = s->patches;
    const size_t per_image = (size_t)H * T * T;
    base_error err;
    float *map = st->maps; /* the map drawn and saved (grid: all tiles) */
    if (st->rollout) {
        for (int l = 0; l <= s->layer; l++) st->per_image[l] = st->layers[l] + (size_t)row * per_image;
        if (vit_attention_rollout(st->per_image, s->layer + 1, H, T, st->discard, st->result,
                                  st->scratch, &err) != BASE_OK)
            return file_failed(s, err.message);
        if (st->patch_mean)
            vit_attention_mean_row(st->result, 1, T, s->prefix, 0, s->prefix, map);
        else
            memcpy(map, st->result + s->prefix, (size_t)cells * sizeof *map);
    } else {
        const float *attn = st->layers[s->layer] + (size_t)row * per_image;
        const int first = st->grid ? 0 : st->head, last = st->grid ? H - 1 : st->head;
        /* --grid: every head, then the mean in the last tile. */
        for (int h = first; h <= last + st->grid; h++) {
            const int head = h < H ? h : -1;
            float *out = map + (size_t)(st->grid ? h : 0) * cells;
            if (st->patch_mean)
                vit_attention_mean_row(attn, H, T, s->prefix, head, s->prefix, out);
            else
                vit_attention_row(attn, H, T, 0, head, s->prefix, out);
        }
    }

    data_image img = {0}, pic = {0};
    if (load_picture(s, index, &img)) return 1;
    int r = 0;
    if (st->grid) {
        if (attention_figure(s, st, &img, &pic, &err) != 0) r = file_failed(s, err.message);
    } else {
        double box[4];
        float lo, hi;
        data_preprocess_source_box(&s->pre, img.width, img.height, box);
        min_max(map, (size_t)cells, &lo, &hi);
        if (data_overlay_heatmap(&img, box, map, s->grid_h, s->grid_w, lo, hi, OVERLAY_ALPHA, &pic,
                                 &err) != BASE_OK)
            r = file_failed(s, err.message);
    }
    data_image_free(&img);
    if (r == 0) {
        r = write_output_picture(s, index, &pic);
    }
    data_image_free(&pic);
    if (r == 0) {
        /* --grid: the maps drawn, every head then their mean. */
        const int64_t shape[3] = {H + 1, s->grid_h, s->grid_w};
        r = st->grid ? write_array(s, index, DATA_NPY_F32, shape, 3, map)
                     : write_array(s, index, DATA_NPY_F32, shape + 1, 2, map);
    }
    return r;
}

int cli_attention(int argc, char **argv) {
    inspect s;
    int exit_code = CLI_EXIT_FATAL;
    if (inspect_parse(&s, "attention", ATTENTION_USAGE, ATTENTION_OPTIONS, NUM_ATTENTION_OPTS, argc,
                      argv, &exit_code))
        goto done;
    attention_state st = {.head = -1};
    const char **v = s.args.values;
    st.rollout = v[OPT_ROLLOUT] != NULL;
    st.grid = v[OPT_GRID] != NULL;
    if (v[OPT_DISCARD]) {
        char *end;
        st.discard = strtof(v[OPT_DISCARD], &end);
        if (end == v[OPT_DISCARD] || *end || !(st.discard >= 0.0f && st.discard < 1.0f)) {
            fprintf(stderr, "vit attention: --discard expects a fraction in [0, 1), got '%s'\n", v[OPT_DISCARD]);
            goto done;
        }
    }
    /* Each conflict named by the options actually given. */
    const char *conflict = NULL;
    if (st.rollout && v[OPT_HEAD])
        conflict = "--rollout averages the heads: it does not go with --head";
    else if (st.rollout && st.grid)
        conflict = "--rollout draws one map: it does not go with --grid";
    else if (st.grid && v[OPT_HEAD])
        conflict = "--grid draws every head: it does not go with --head";
    else if (v[OPT_DISCARD] && !st.rollout)
        conflict = "--discard applies to --rollout only";
    if (conflict) {
        fprintf(stderr, "vit attention: %s\n", conflict);
        goto done;
    }
    if (parse_max_side(&s, v[OPT_ATTENTION_MAX_SIDE]) != 0 ||
        inspect_setup(&s, CLI_NAMES_OUTPUTS, NULL, 0, v[OPT_NPY]) != 0)
        goto done;
    /* The maps are the class token's attention (row 0); without a class
     * token row 0 is a register or a patch, so the patch queries' mean row
     * stands in: the attention of the average patch, which is what the
     * model's average pool reads. */
    st.patch_mean = vit_model_config(s.model)->no_class_token;
    if (v[OPT_HEAD] && strcmp(v[OPT_HEAD], "mean") != 0) {
        long h;
        if (cli_int("attention", "--head", v[OPT_HEAD], 0, s.heads - 1, &h) != 0) goto done;
        st.head = (int)h;
    }

    const size_t per_image = (size_t)s.heads * s.tokens * s.tokens;
    const size_t plane = (size_t)s.tokens * s.tokens;
    st.layers = calloc((size_t)s.layers, sizeof *st.layers);
    st.per_image = calloc((size_t)s.layers, sizeof *st.per_image);
    st.maps = malloc((size_t)(s.heads + 1) * s.patches * sizeof *st.maps);
    if (st.rollout) {
        st.result = malloc(plane * sizeof *st.result);
        st.scratch = malloc(vit_rollout_scratch_size(s.tokens) * sizeof *st.scratch);
    }
    if (!st.layers || !st.per_image || !st.maps || (st.rollout && (!st.result || !st.scratch))) {
        out_of_memory(&s);
        goto free_state;
    }
    for (int l = st.rollout ? 0 : s.layer; l <= s.layer; l++)
        if (capture(&s, VIT_CAPTURE_ATTENTION, l, per_image, &st.layers[l]) != 0) goto free_state;
    exit_code = inspect_run(&s, attention_image, &st);
free_state:
    for (int l = 0; st.layers && l < s.layers; l++) free(st.layers[l]);
    free(st.layers);
    free(st.per_image);
    free(st.maps);
    free(st.result);
    free(st.scratch);
done:
    inspect_free(&s);
    return exit_code;
}

/* ------------------------------------------------------------- features */

enum { OPT_TOKENS = NUM_COMMON, OPT_POOL, OPT_L2, NUM_FEATURES_OPTS };

static const cli_option FEATURES_OPTIONS[NUM_FEATURES_OPTS] = {
    COMMON_OPTIONS("the .npy file to write (images x tokens x hidden, float32)",
                   LAYER_HELP_BLOCK ", or embed for the encoder input"),
    [OPT_TOKENS] = {"tokens", 0, 1, "WHICH", "cls (the class token), reg (the registers), patch (the patches) or all (default)"},
    [OPT_POOL] = {"pool", 0, 1, "HOW", "cls, mean, model or none: final-normed tokens pooled"},
    [OPT_L2] = {"l2", 0, 0, "", "divide each output vector by its L2 norm"},
};

static const char FEATURES_USAGE[] =
    "usage: vit features [-m MODEL] -o OUT.npy [options] PATH...\n"
    "\n"
    "Writes the token embeddings of images, in input order, as one float32 .npy array\n"
    "(images x tokens x hidden): the residual stream after block L (before the final\n"
    "LayerNorm). Tokens are in the model's order: class, distillation, registers,\n"
    "then the patches row by row; --tokens patch keeps the patches only, reg the\n"
    "register tokens, cls the class token (refused without one). A file that fails\n"
    "gets a row of NaN. With several images, OUT.files.jsonl beside it names the\n"
    "image of each row: one JSON string a line (bytes of a name that are not UTF-8\n"
    "as \\xNN, a backslash as \\\\).\n"
    "\n"
    "--pool takes the tokens after the last block through the final LayerNorm, as\n"
    "timm's forward_features, and pools them as its forward_head(pre_logits=True):\n"
    "cls the class token (global_pool='token'), mean the mean of the patch tokens\n"
    "(global_pool='avg'; registers left out, fc_norm after it where the model has\n"
    "one): images x hidden; model what the model's head reads (its own pool: cls,\n"
    "mean, DINOv2's [class, mean] of 2 x hidden; distilled DeiT the class token);\n"
    "none every token (HF ViTModel's last_hidden_state, not its pooler): images x\n"
    "tokens x hidden. A model without a class token refuses cls. --l2\n"
    "divides each vector by max(L2 norm, 1e-12), as torch.nn.functional.normalize.\n\n" COMMON_USAGE;

typedef struct features_state {
    base_atomic_file *file;
    float *captured, *nan_rows;
    int first, count; /* the tokens written: first .. first + count - 1 */
    int pool;         /* --pool (vit_pool), or -1: the residual stream as it is */
    int l2;
    size_t row_floats; /* floats an image gets in the array */
    float *row, *scratch; /* one image's output; vit_pool_tokens' scratch */
} features_state;

/* The output of the image in batch row `row` into dst (st->row_floats). */
static int features_rows(const inspect *s, const features_state *st, int row, float *dst) {
    const float *tokens = st->captured + (size_t)row * s->tokens * s->dim;
    if (st->pool < 0) {
        memcpy(dst, tokens + (size_t)st->first * s->dim, st->row_floats * sizeof *dst);
        if (st->l2) vit_l2_normalize_rows(dst, st->count, s->dim);
        return 0;
    }
    base_error err;
    if (vit_pool_tokens(s->model, tokens, s->tokens, (vit_pool)st->pool, st->l2, dst, st->scratch,
                        &err) != BASE_OK) {
        fprintf(stderr, "vit features: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int features_image(inspect *s, void *state, size_t index, int row) {
    (void)index;
    features_state *st = state;
    const size_t floats = st->row_floats;
    if (row >= 0 && features_rows(s, st, row, st->row) != 0) return -1;
    const float *rows = row < 0 ? st->nan_rows : st->row;
    base_error err;
    if (base_atomic_write(st->file, rows, floats * sizeof *rows, &err) != BASE_OK) {
        fprintf(stderr, "vit features: %s\n", err.message);
        return -1;
    }
    return 0;
}

/* OUT.npy -> OUT.files.jsonl (malloc'd), as classify names its rows. */
static char *file_list_path(const char *npy_path) { return cli_files_list_path(npy_path); }

/* Beside OUT.npy, OUT.files.jsonl: the input of each row, one JSON string
 * a line, escaped as every JSON vitc writes (cli_json_text), so names with
 * line breaks or bytes that are not UTF-8 still give one line per row. */
static int write_file_list(inspect *s, const char *npy_path) {
    char *path = file_list_path(npy_path);
    cJSON *name = NULL;
    char *text = NULL;
    size_t length = 0, capacity = 0;
    int r = -1;
    if (!path) goto nomem;
    for (size_t i = 0; i < s->in.count; i++) {
        char *escaped = cli_json_text(s->in.names[i]);
        name = escaped ? cJSON_CreateString(escaped) : NULL;
        free(escaped);
        char *line = name ? cJSON_PrintUnformatted(name) : NULL;
        cJSON_Delete(name);
        if (!line) goto nomem;
        const size_t len = strlen(line);
        if (length + len + 1 > capacity) {
            capacity = 2 * (length + len + 1);
            char *grown = realloc(text, capacity);
            if (!grown) {
                free(line);
                goto nomem;
            }
            text = grown;
        }
        memcpy(text + length, line, len);
        text[length + len] = '\n';
        length += len + 1;
        free(line);
    }
    base_error err;
    if (base_write_file_atomic(path, text ? text : "", length, &err) != BASE_OK)
        fprintf(stderr, "vit features: %s\n", err.message);
    else
        r = 0;
    free(path);
    free(text);
    return r;
nomem:
    free(path);
    free(text);
    return out_of_memory(s);
}

/* features over the ranks of an MPI job (cli_mpi.h): every rank captures
 * and sends the rows, rank 0 writes them in input order. */
typedef struct features_job {
    inspect *s;
    features_state *st;
    size_t processed;
    int fatal;
    int progress;
    float *rows; /* batch x row_floats: the features of the batch in hand */
} features_job;

/* The features of a batch the pipeline ran, into the job's rows. */
static int features_compute(void *self, data_batch *b, float **results) {
    features_job *j = self;
    *results = j->rows;
    for (int i = 0; i < b->count; i++)
        if (b->row[i] >= 0 &&
            features_rows(j->s, j->st, b->row[i], j->rows + (size_t)b->row[i] * j->st->row_floats) != 0)
            return -1;
    return 0;
}

static void features_item(void *self, size_t index, const float *rows, const char *error) {
    features_job *j = self;
    if (j->fatal) return;
    if (error) file_failed(j->s, error);
    base_error err;
    if (base_atomic_write(j->st->file, rows ? rows : j->st->nan_rows,
                          j->st->row_floats * sizeof *rows, &err) != BASE_OK) {
        fprintf(stderr, "vit features: %s\n", err.message);
        j->fatal = 1;
        return;
    }
    (void)index;
    j->s->failed += error != NULL;
    j->processed++;
}

static int features_batch_done(void *self, const data_batch *b, double elapsed) {
    features_job *j = self;
    (void)b;
    if (j->progress) cli_show_progress(j->processed, j->s->in.count, j->s->failed, elapsed);
    return j->fatal ? -1 : 0;
}

static int features_ranks(inspect *s, features_state *st) {
    features_job j = {s, st, 0, 0, cli_mpi_rank() == 0 && !s->quiet && isatty(STDERR_FILENO),
                      malloc(sizeof(float) * st->row_floats * (size_t)s->batch)};
    if (!j.rows) {
        out_of_memory(s);
        return CLI_EXIT_FATAL;
    }
    const cli_mpi_job job = {.command = s->command,
                             .pipeline = s->pipeline,
                             .paths = (const char *const *)s->in.paths,
                             .count = s->in.count,
                             .batch = s->batch,
                             .floats = st->row_floats,
                             .rows = features_compute,
                             .handlers = {features_item, features_batch_done, &j},
                             .self = &j};
    double seconds;
    const int rc = cli_mpi_run(&job, &seconds);
    free(j.rows);
    if (rc != 0) return CLI_EXIT_FATAL;
    if (cli_mpi_rank() != 0) return CLI_EXIT_OK; /* rank 0 reports for the job */
    if (j.progress) cli_progress_clear();
    return inspect_finish(s, j.processed, seconds);
}

/* The checks, the inputs, the model and the locked output (rank 0's part
 * in an MPI job); 0, or -1 after one line. */
static int features_setup(inspect *s, const char *which, int *several) {
    if (strcmp(which, "cls") && strcmp(which, "reg") && strcmp(which, "patch") && strcmp(which, "all")) {
        fprintf(stderr, "vit features: --tokens expects cls, reg, patch or all, got '%s'\n", which);
        return -1;
    }
    const char *pool = s->args.values[OPT_POOL];
    if (pool && strcmp(pool, "cls") && strcmp(pool, "mean") && strcmp(pool, "model") &&
        strcmp(pool, "none")) {
        fprintf(stderr, "vit features: --pool expects cls, mean, model or none, got '%s'\n", pool);
        return -1;
    }
    /* --pool is the model's own output end (the final LayerNorm after the
     * last block); --layer and --tokens pick raw residual-stream rows. */
    if (pool && (s->args.values[OPT_LAYER] || s->args.values[OPT_TOKENS])) {
        fprintf(stderr, "vit features: --pool works on the last block's tokens; it cannot be "
                        "combined with %s\n", s->args.values[OPT_LAYER] ? "--layer" : "--tokens");
        return -1;
    }
    const char *out = s->args.values[OPT_OUTPUT];
    if (out && is_dir_target(out)) {
        fprintf(stderr, "vit features: -o names one .npy file for all images, not a directory\n");
        return -1;
    }
    if (inspect_setup(s, CLI_NAMES_ROWS, NULL, 1, NULL) != 0) return -1;
    *several = s->in.count > 1;
    for (int a = 0; a < s->args.num_positional; a++) {
        struct stat sb;
        *several |= stat(s->args.positional[a], &sb) == 0 && S_ISDIR(sb.st_mode);
    }
    /* Before anything is written: neither OUT nor OUT.files.jsonl may be the
     * model's files or an input, and no other vit process may write OUT. */
    char *list_path = *several ? file_list_path(out) : NULL;
    const int refused =
        (*several && !list_path && out_of_memory(s)) ||
        cli_protect_run("features", &s->protect, s->model, NULL, (const char *const *)s->in.paths,
                        s->in.count) != 0 ||
        cli_protect_list("features", &s->protect, s->args.values[OPT_FILES_FROM]) != 0 ||
        cli_check_output("features", &s->protect, out) != 0 ||
        (list_path && cli_check_output("features", &s->protect, list_path) != 0) ||
        cli_lock_output("features", out, 0, &s->locks[0]) != 0;
    free(list_path);
    return refused ? -1 : 0;
}

/* Which tokens and pooling --tokens/--pool ask for, into st (first,
 * count, pool) and the width of one vector; 1 after saying why the model
 * cannot give them. */
static int features_choose(const inspect *s, const char *which, features_state *st, int *width) {
    const vit_config *config = vit_model_config(s->model);
    /* Token order (vit_config): class, distillation, registers, patches. */
    const int registers = config->num_reg_tokens, first_reg = s->prefix - registers;
    st->first = strcmp(which, "patch") == 0 ? s->prefix : strcmp(which, "reg") == 0 ? first_reg : 0;
    st->count = strcmp(which, "cls") == 0 ? 1 : strcmp(which, "reg") == 0 ? registers : s->tokens - st->first;
    const char *pool = s->args.values[OPT_POOL];
    st->pool = !pool ? -1
               : strcmp(pool, "cls") == 0 ? VIT_POOL_CLS
               : strcmp(pool, "mean") == 0 ? VIT_POOL_MEAN
               : strcmp(pool, "model") == 0 ? VIT_POOL_MODEL : VIT_POOL_NONE;
    if ((st->pool == VIT_POOL_CLS || strcmp(which, "cls") == 0) && config->no_class_token) {
        fprintf(stderr, "vit features: %s has no class token (use --pool mean, or the patch "
                "tokens)\n", vit_model_weights_path(s->model));
        return 1;
    }
    if (strcmp(which, "reg") == 0 && registers == 0) {
        fprintf(stderr, "vit features: %s has no register tokens (--tokens reg)\n",
                vit_model_weights_path(s->model));
        return 1;
    }
    /* One vector per image; the model's own pool may be wider (DINOv2: 2D). */
    *width = st->pool == VIT_POOL_MODEL ? vit_config_pooled_size(config) : s->dim;
    if (st->pool == VIT_POOL_CLS || st->pool == VIT_POOL_MEAN || st->pool == VIT_POOL_MODEL) st->count = 1;
    return 0;
}

int cli_features(int argc, char **argv) {
    inspect s;
    int exit_code = CLI_EXIT_FATAL;
    if (inspect_parse(&s, "features", FEATURES_USAGE, FEATURES_OPTIONS, NUM_FEATURES_OPTS, argc,
                      argv, &exit_code))
        goto done;
    const char *which = s.args.values[OPT_TOKENS] ? s.args.values[OPT_TOKENS] : "all";
    const char *out = s.args.values[OPT_OUTPUT];
    const int ranks = cli_mpi_active(), root = cli_mpi_rank() == 0;
    int several = 0;
    if (!ranks) {
        if (features_setup(&s, which, &several) != 0) goto done;
    } else {
        /* Rank 0 checks, walks, loads and locks first (one message, not one
         * per rank) and sends the files; then the others load the model. */
        if (!cli_mpi_go(root && features_setup(&s, which, &several) == 0)) goto done;
        long batch = s.batch;
        if (cli_mpi_share_inputs("features", &s.in, &batch) != 0) goto done;
        s.inputs_given = 1;
        if (!cli_mpi_agree("features", root || inspect_setup(&s, CLI_NAMES_ROWS, NULL, 1, NULL) == 0))
            goto done;
    }
    features_state st = {0};
    int width;
    if (features_choose(&s, which, &st, &width) != 0) goto done;
    st.l2 = s.args.values[OPT_L2] != NULL;
    const size_t row_floats = st.row_floats = (size_t)st.count * width;
    base_error err;
    /* Pooled vectors: images x hidden; tokens: images x tokens x hidden. */
    const int64_t shape[3] = {(int64_t)s.in.count, st.count, s.dim};
    const int64_t pooled_shape[2] = {(int64_t)s.in.count, width};
    const int pooled = st.count == 1 && st.pool >= 0 && st.pool != VIT_POOL_NONE;
    if (!(st.nan_rows = malloc(row_floats * sizeof *st.nan_rows)) ||
        !(st.row = malloc(row_floats * sizeof *st.row)) ||
        !(st.scratch = malloc((size_t)s.dim * sizeof *st.scratch))) {
        out_of_memory(&s);
    } else {
        for (size_t i = 0; i < row_floats; i++) st.nan_rows[i] = NAN;
        if (capture(&s, VIT_CAPTURE_TOKENS, s.layer, (size_t)s.tokens * s.dim, &st.captured) == 0) {
            if (!root || data_npy_open(out, DATA_NPY_F32, pooled ? pooled_shape : shape, pooled ? 2 : 3,
                                       &st.file, &err) == BASE_OK)
                exit_code = CLI_EXIT_OK;
            else
                fprintf(stderr, "vit features: %s\n", err.message);
        }
    }
    if (ranks && !cli_mpi_agree("features", exit_code == CLI_EXIT_OK)) exit_code = CLI_EXIT_FATAL;
    if (exit_code != CLI_EXIT_OK) goto free_state;
    exit_code = ranks ? features_ranks(&s, &st) : inspect_run(&s, features_image, &st);
    if (root && (exit_code == CLI_EXIT_OK || exit_code == CLI_EXIT_SOME_FAILED)) {
        const base_status committed = base_atomic_commit(st.file, &err);
        st.file = NULL;
        if (committed != BASE_OK) {
            fprintf(stderr, "vit features: %s\n", err.message);
            exit_code = CLI_EXIT_FATAL;
        } else if (several && write_file_list(&s, out) != 0) {
            exit_code = CLI_EXIT_FATAL;
        }
    }
free_state:
    base_atomic_abort(st.file); /* a run that failed or stopped: nothing written */
    free(st.captured);
    free(st.nan_rows);
    free(st.row);
    free(st.scratch);
done:
    inspect_free(&s);
    return exit_code;
}

/* -------------------------------------------------------------- segment */

enum { OPT_K = NUM_COMMON, OPT_SEED, OPT_FEATURE, OPT_SEGMENT_NPY, OPT_SEGMENT_MAX_SIDE,
       NUM_SEGMENT_OPTS };

static const cli_option SEGMENT_OPTIONS[NUM_SEGMENT_OPTS] = {
    COMMON_OPTIONS("the label mask PNG (beside it NAME.overlay.png), or a directory (ending in /)",
                   LAYER_HELP_BLOCK),
    /* No -k: that is classify's top-k, and one letter must not mean two things. */
    [OPT_K] = {"clusters", 0, 1, "K", "number of clusters (default 4)"},
    [OPT_SEED] = {"seed", 0, 1, "S", "k-means++ seed (default 0)"},
    [OPT_FEATURE] = {"feature", 0, 1, "WHAT", "token (residual stream after block L, default) or key (block L's attention keys)"},
    [OPT_SEGMENT_NPY] = {"npy", 0, 1, "PATH", "also write the grid_h x grid_w int32 label grid as .npy"},
    [OPT_SEGMENT_MAX_SIDE] = MAX_SIDE_OPTION,
};

static const char SEGMENT_USAGE[] =
    "usage: vit segment [-m MODEL] -o MASK.png [options] PATH...\n"
    "\n"
    "Unsupervised part segmentation: the patch tokens of block L (or its keys) are\n"
    "L2-normalised and clustered with k-means (k-means++ seeding, fixed seed,\n"
    "deterministic). MASK.png is an indexed (palette) PNG of the image's size: each\n"
    "pixel is its cluster id (0..K-1; 255 where the model saw nothing, outside its\n"
    "crop), shown in the overlay's colours; numpy.array(PIL.Image.open(MASK)) gives\n"
    "the ids. MASK.overlay.png shows the clusters over the image (up to --max-side).\n\n"
    PICTURE_USAGE("") COMMON_USAGE;

typedef struct segment_state {
    int k, keys;
    uint64_t seed;
    float *captured, *points;
    int *labels;
    double *scratch;
    uint8_t *colors;
} segment_state;

/* The mask at the input's size, as an indexed PNG in the overlay's colours
 * (ids past the clusters unused, MASK_OUTSIDE dark grey); 0, or -1 (fatal:
 * it cannot be written). */
static int write_mask(inspect *s, const segment_state *st, const char *path, const data_image *img,
                      const double box[4]) {
    uint8_t *mask = malloc((size_t)img->width * img->height), palette[256 * 3] = {0};
    if (!mask) return file_failed(s, "out of memory");
    memcpy(palette, st->colors, (size_t)st->k * 3);
    memset(palette + 3 * MASK_OUTSIDE, 64, 3);
    data_label_mask(box, st->labels, s->grid_h, s->grid_w, img->width, img->height, MASK_OUTSIDE,
                    mask);
    base_error err;
    const base_status written =
        data_write_png_indexed(path, img->width, img->height, mask, palette, 256, &err);
    free(mask);
    if (written == BASE_OK) return 0;
    file_failed(s, err.message);
    return -1; /* an output that cannot be written is fatal (write_picture) */
}

/* The overlay, drawn on the input scaled to --max-side. */
static int write_segment_overlay(inspect *s, const segment_state *st, const char *path,
                                 data_image *img) {
    if (fit_picture(s, img)) return 1;
    double box[4];
    data_preprocess_source_box(&s->pre, img->width, img->height, box);
    data_image pic = {0};
    base_error err;
    if (data_overlay_labels(img, box, st->labels, s->grid_h, s->grid_w, st->colors, OVERLAY_ALPHA,
                            &pic, &err) != BASE_OK)
        return file_failed(s, err.message);
    const int r = write_picture(s, path, &pic);
    data_image_free(&pic);
    return r;
}

static int segment_image(inspect *s, void *state, size_t index, int row) {
    segment_state *st = state;
    if (row < 0) return 0;
    const int n = s->patches, D = s->dim;
    memcpy(st->points, st->captured + ((size_t)row * s->tokens + s->prefix) * D,
           (size_t)n * D * sizeof *st->points);
    vit_l2_normalize_rows(st->points, n, D);
    base_error err;
    if (vit_kmeans(st->points, n, D, st->k, st->seed, KMEANS_MAX_ITER, st->labels, NULL,
                   st->scratch, NULL, &err) != BASE_OK)
        return file_failed(s, err.message);

    data_image img = {0};
    if (load_original(s, index, &img)) return 1;
    double box[4];
    data_preprocess_source_box(&s->pre, img.width, img.height, box);
    char *mask_path = output_path(s, s->args.values[OPT_OUTPUT], s->out_dir, index, ".png");
    char *over_path = mask_path ? overlay_path(mask_path) : NULL;
    int r;
    if (!mask_path) r = -1; /* cannot be written: said already */
    else if (!over_path) r = file_failed(s, "out of memory");
    else if ((r = write_mask(s, st, mask_path, &img, box)) == 0)
        r = write_segment_overlay(s, st, over_path, &img);
    free(mask_path);
    free(over_path);
    data_image_free(&img);
    if (r == 0) {
        const int64_t shape[2] = {s->grid_h, s->grid_w};
        r = write_array(s, index, DATA_NPY_I32, shape, 2, st->labels);
    }
    return r;
}

int cli_segment(int argc, char **argv) {
    inspect s;
    int exit_code = CLI_EXIT_FATAL;
    if (inspect_parse(&s, "segment", SEGMENT_USAGE, SEGMENT_OPTIONS, NUM_SEGMENT_OPTS, argc, argv,
                      &exit_code))
        goto done;
    const char **v = s.args.values;
    segment_state st = {.k = 4};
    long k = 4, seed = 0;
    if ((v[OPT_K] && cli_int("segment", "--clusters", v[OPT_K], 1, 254, &k)) ||
        (v[OPT_SEED] && cli_int("segment", "--seed", v[OPT_SEED], 0, 0x7fffffffL, &seed)))
        goto done;
    st.k = (int)k;
    st.seed = (uint64_t)seed;
    if (v[OPT_FEATURE] && strcmp(v[OPT_FEATURE], "token") && strcmp(v[OPT_FEATURE], "key")) {
        fprintf(stderr, "vit segment: --feature expects token or key, got '%s'\n", v[OPT_FEATURE]);
        goto done;
    }
    st.keys = v[OPT_FEATURE] && strcmp(v[OPT_FEATURE], "key") == 0;
    s.overlay = 1;
    if (parse_max_side(&s, v[OPT_SEGMENT_MAX_SIDE]) != 0 ||
        inspect_setup(&s, CLI_NAMES_OUTPUTS, NULL, 0, v[OPT_SEGMENT_NPY]) != 0)
        goto done;
    if (st.k > s.patches) {
        fprintf(stderr, "vit segment: --clusters %d is more clusters than the %d patches\n", st.k, s.patches);
        goto done;
    }
    st.points = malloc((size_t)s.patches * s.dim * sizeof *st.points);
    st.labels = malloc((size_t)s.patches * sizeof *st.labels);
    st.scratch = malloc(vit_kmeans_scratch_size(s.patches, s.dim, st.k) * sizeof *st.scratch);
    st.colors = malloc((size_t)st.k * 3);
    if (!st.points || !st.labels || !st.scratch || !st.colors) {
        out_of_memory(&s);
        goto free_state;
    }
    for (int c = 0; c < st.k; c++) data_palette_color(c, st.colors + 3 * c);
    if (capture(&s, st.keys ? VIT_CAPTURE_KEYS : VIT_CAPTURE_TOKENS, s.layer,
                (size_t)s.tokens * s.dim, &st.captured) != 0)
        goto free_state;
    exit_code = inspect_run(&s, segment_image, &st);
free_state:
    free(st.captured);
    free(st.points);
    free(st.labels);
    free(st.scratch);
    free(st.colors);
done:
    inspect_free(&s);
    return exit_code;
}

/* -------------------------------------------------------------- patches */

enum { OPT_LABELS = NUM_COMMON, OPT_LEGEND, OPT_PATCHES_NPY, OPT_PATCHES_MAX_SIDE, NUM_PATCHES_OPTS };

static const cli_option PATCHES_OPTIONS[NUM_PATCHES_OPTS] = {
    COMMON_OPTIONS(OUTPUT_HELP_PICTURE, LAYER_HELP_BLOCK),
    [OPT_LABELS] = {"labels", 0, 1, "FILE", "class labels, one per line"},
    [OPT_LEGEND] = {"legend", 0, 1, "N", "classes in the legend, most frequent first; the rest grey (default 5)"},
    [OPT_PATCHES_NPY] = {"npy", 0, 1, "PATH", "also write the grid_h x grid_w x classes float32 logits as .npy"},
    [OPT_PATCHES_MAX_SIDE] = MAX_SIDE_OPTION,
};

static const char PATCHES_USAGE[] =
    "usage: vit patches [-m MODEL] -o OUT.png [options] PATH...\n"
    "\n"
    "Applies the final LayerNorm and the classifier head to every patch token after\n"
    "block L (the last by default) and draws each patch's top-1 class over the image,\n"
    "with a legend of the most frequent classes. --npy writes the per-patch logits.\n"
    "Registers and the class token get no cell. Each patch stands in for the pooled\n"
    "features: a model with fc_norm (no final norm) gets fc_norm then the head per\n"
    "patch; DINOv2's head on [class, mean] reads [class, patch].\n\n"
    PICTURE_USAGE("The\npicture has the input image's size up to --max-side, the legend below it.")
    COMMON_USAGE;

typedef struct patches_state {
    int legend, classes;
    float *captured, *logits;
    int *top, *count, *rank, *order;
    uint8_t *colors;
} patches_state;

/* A label's first comma-separated name ("cheetah, chetah, ..." -> "cheetah"). */
static void short_label(const vit_model *model, int cls, char *out, size_t size) {
    const char *label = vit_model_label(model, cls);
    if (!label) {
        snprintf(out, size, "class %d", cls);
        return;
    }
    const size_t n = strcspn(label, ",");
    snprintf(out, size, "%.*s", (int)(n < 40 ? n : 40), label);
}

/* The widest legend line ("swatch name 100%") at text scale `scale`. */
static int legend_width(const inspect *s, const patches_state *st, int shown, int scale) {
    char text[64];
    int width = 0;
    for (int r = 0; r < shown; r++) {
        short_label(s->model, st->order[r], text, sizeof text);
        const int w = data_text_width(text, scale) + data_text_width(" 100%", scale);
        if (w > width) width = w;
    }
    return width;
}

/* The picture with the legend in a white strip below it, never over it:
 * swatch, name and share of patches per listed class, the text scaled with
 * the picture's width (a line per 25th or so of a 1024-pixel picture). The
 * canvas widens when the legend is wider than a small picture. */
static int add_legend(const inspect *s, const patches_state *st, int shown, data_image *pic) {
    const int scale = pic->width >= 900 ? 3 : pic->width >= 480 ? 2 : 1;
    const int line = data_text_height(scale) + 2 * scale, pad = 3 * scale;
    const int strip = shown ? shown * line + 2 * pad : 0;
    const int legend = shown ? legend_width(s, st, shown, scale) + line + 2 * pad : 0;
    data_image framed = {.width = pic->width > legend ? pic->width : legend,
                         .height = pic->height + strip};
    if (!(framed.pixels = malloc((size_t)framed.width * framed.height * 3))) return -1;
    memset(framed.pixels, 255, (size_t)framed.width * framed.height * 3);
    for (int y = 0; y < pic->height; y++)
        memcpy(framed.pixels + (size_t)y * framed.width * 3, pic->pixels + (size_t)y * pic->width * 3,
               (size_t)pic->width * 3);
    const uint8_t black[3] = {0, 0, 0};
    char text[64];
    for (int r = 0; r < shown; r++) {
        const int y = pic->height + pad + r * line;
        data_fill_rect(&framed, pad, y, line - 2 * scale, line - 2 * scale, st->colors + 3 * r, 1.0f);
        short_label(s->model, st->order[r], text, sizeof text);
        const int x = pad + line + data_draw_text(&framed, pad + line, y + scale, scale, text, black);
        snprintf(text, sizeof text, " %d%%",
                 (int)lround(100.0 * st->count[st->order[r]] / s->patches));
        data_draw_text(&framed, x, y + scale, scale, text, black);
    }
    data_image_free(pic);
    *pic = framed;
    return 0;
}

static int patches_image(inspect *s, void *state, size_t index, int row) {
    patches_state *st = state;
    if (row < 0) return 0;
    const int n = s->patches, C = st->classes;
    base_error err;
    if (vit_patch_logits(s->model, st->captured + (size_t)row * s->tokens * s->dim, s->tokens,
                         s->threads, st->logits, &err) != BASE_OK)
        return file_failed(s, err.message);
    memset(st->count, 0, (size_t)C * sizeof *st->count);
    for (int p = 0; p < n; p++) {
        vit_top_k(st->logits + (size_t)p * C, C, 1, &st->top[p]);
        st->count[st->top[p]]++;
    }
    /* Classes by patch count, most first (ties: lower index): the legend. */
    int shown = 0;
    for (int r = 0; r < st->legend; r++) {
        int best = -1;
        for (int c = 0; c < C; c++)
            if (st->count[c] > 0 && st->rank[c] < 0 && (best < 0 || st->count[c] > st->count[best])) best = c;
        if (best < 0) break;
        st->rank[best] = r;
        st->order[shown++] = best;
    }
    /* Colour index per patch: its class's rank, or `shown` (grey) if unlisted. */
    for (int p = 0; p < n; p++) st->top[p] = st->rank[st->top[p]] >= 0 ? st->rank[st->top[p]] : shown;
    for (int r = 0; r < shown; r++) st->rank[st->order[r]] = -1; /* reset for the next image */
    const uint8_t grey[3] = {128, 128, 128};
    memcpy(st->colors + 3 * shown, grey, 3);

    data_image img = {0}, pic = {0};
    if (load_picture(s, index, &img)) return 1;
    double box[4];
    data_preprocess_source_box(&s->pre, img.width, img.height, box);
    int r = 0;
    if (data_overlay_labels(&img, box, st->top, s->grid_h, s->grid_w, st->colors, OVERLAY_ALPHA,
                            &pic, &err) != BASE_OK)
        r = file_failed(s, err.message);
    else if (add_legend(s, st, shown, &pic) != 0)
        r = file_failed(s, "out of memory");
    else
        r = write_output_picture(s, index, &pic);
    for (int c = 0; c < st->legend; c++) data_palette_color(c, st->colors + 3 * c);
    data_image_free(&img);
    data_image_free(&pic);
    if (r == 0) {
        const int64_t shape[3] = {s->grid_h, s->grid_w, C};
        r = write_array(s, index, DATA_NPY_F32, shape, 3, st->logits);
    }
    return r;
}

int cli_patches(int argc, char **argv) {
    inspect s;
    int exit_code = CLI_EXIT_FATAL;
    if (inspect_parse(&s, "patches", PATCHES_USAGE, PATCHES_OPTIONS, NUM_PATCHES_OPTS, argc, argv,
                      &exit_code))
        goto done;
    const char **v = s.args.values;
    patches_state st = {0};
    long legend = 5;
    if (v[OPT_LEGEND] && cli_int("patches", "--legend", v[OPT_LEGEND], 0, 20, &legend)) goto done;
    st.legend = (int)legend;
    if (parse_max_side(&s, v[OPT_PATCHES_MAX_SIDE]) != 0 ||
        inspect_setup(&s, CLI_NAMES_OUTPUTS, v[OPT_LABELS], 0, v[OPT_PATCHES_NPY]) != 0)
        goto done;
    st.classes = vit_model_config(s.model)->num_classes;
    if (st.classes == 0) {
        fprintf(stderr, "vit patches: %s has no classification head (it outputs features)\n",
                vit_model_weights_path(s.model));
        goto done;
    }
    st.logits = malloc((size_t)s.patches * st.classes * sizeof *st.logits);
    st.top = malloc((size_t)s.patches * sizeof *st.top);
    st.count = malloc((size_t)st.classes * sizeof *st.count);
    st.rank = malloc((size_t)st.classes * sizeof *st.rank);
    st.order = malloc((size_t)(st.legend + 1) * sizeof *st.order);
    st.colors = malloc((size_t)(st.legend + 1) * 3);
    if (!st.logits || !st.top || !st.count || !st.rank || !st.order || !st.colors) {
        out_of_memory(&s);
        goto free_state;
    }
    for (int c = 0; c < st.classes; c++) st.rank[c] = -1;
    for (int c = 0; c < st.legend; c++) data_palette_color(c, st.colors + 3 * c);
    if (capture(&s, VIT_CAPTURE_TOKENS, s.layer, (size_t)s.tokens * s.dim, &st.captured) != 0)
        goto free_state;
    exit_code = inspect_run(&s, patches_image, &st);
free_state:
    free(st.captured);
    free(st.logits);
    free(st.top);
    free(st.count);
    free(st.rank);
    free(st.order);
    free(st.colors);
done:
    inspect_free(&s);
    return exit_code;
}
