/* vit eval: top-1 / top-5 accuracy on labelled images. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_mpi.h"
#include "plot.h"

enum { OPT_MODEL, OPT_REVISION, OPT_LABELS_CSV, OPT_OUTPUT, OPT_THREADS, OPT_SIZE, OPT_BATCH, OPT_LABELS,
       OPT_POS_RESAMPLE, OPT_QUIET, OPT_CONFUSION, OPT_LIMITS,
       NUM_OPTS = OPT_LIMITS + CLI_NUM_LIMIT_OPTIONS };

static const cli_option OPTIONS[NUM_OPTS] = {
    [OPT_MODEL] = {"model", 'm', 1, "MODEL", CLI_MODEL_HELP},
    [OPT_REVISION] = CLI_REVISION_OPTION,
    [OPT_LABELS_CSV] = {"labels-csv", 0, 1, "FILE", "CSV of file,class_index,... (paths relative to DIR)"},
    [OPT_OUTPUT] = {"output", 'o', 1, "FILE", "per-image CSV; also FILE's stem + .classes.csv (per-class "
                                             "accuracy) and .confusion.csv (true, predicted, count)"},
    [OPT_THREADS] = CLI_THREADS_OPTION,
    [OPT_SIZE] = {"size", 0, 1, "S", "input size (default: native)"},
    [OPT_BATCH] = CLI_BATCH_OPTION("16"),
    [OPT_LABELS] = CLI_LABELS_OPTION,
    [OPT_POS_RESAMPLE] = CLI_POS_RESAMPLE_OPTION,
    [OPT_QUIET] = {"quiet", 'q', 0, "", "no progress or summary on stderr"},
    [OPT_CONFUSION] = {"confusion", 0, 1, "FILE.png", "draw the confusion matrix with the class "
                                                     "names (over 30 classes: the 30 with the most "
                                                     "errors)"},
    [OPT_LIMITS] = CLI_LIMIT_OPTIONS,
};

static const char USAGE[] =
    "usage: vit eval [-m MODEL] DIR [--labels-csv FILE] [-o FILE]\n"
    "\n"
    "Top-1 and top-5 accuracy on labelled images: either DIR/<class>/*\n"
    "(ImageFolder; class folders match the model's labels: the full label, any of\n"
    "its comma-separated names, or the class index; '_' reads as a space), the\n"
    "files a --labels-csv names, or fashion-mnist: the Fashion-MNIST test split\n"
    "(Debian dataset-fashion-mnist; give -m weights/fashion-mnist-vit.safetensors).\n"
    "Images that cannot be read, or whose outputs are not finite (NaN/Inf), are\n"
    "reported and left out of the accuracy.";

/* Lower case, '_' as space, surrounding blanks trimmed. */
static void normalise(const char *in, size_t len, char *out, size_t size) {
    while (len && isspace((unsigned char)*in)) in++, len--;
    while (len && isspace((unsigned char)in[len - 1])) len--;
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < size; i++)
        out[n++] = in[i] == '_' ? ' ' : (char)tolower((unsigned char)in[i]);
    out[n] = '\0';
}

/* The class a folder name stands for, or -1. */
static int class_of_folder(const vit_model *model, const char *folder) {
    char name[512], part[512];
    char *end;
    long index = strtol(folder, &end, 10);
    const int classes = vit_model_config(model)->num_classes;
    if (*folder && !*end) return index >= 0 && index < classes ? (int)index : -1;
    normalise(folder, strlen(folder), name, sizeof name);
    for (int c = 0; c < vit_model_num_labels(model); c++) {
        const char *label = vit_model_label(model, c);
        normalise(label, strlen(label), part, sizeof part);
        if (strcmp(part, name) == 0) return c;
        for (const char *p = label; *p;) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            normalise(p, len, part, sizeof part);
            if (strcmp(part, name) == 0) return c;
            if (!comma) break;
            p = comma + 1;
        }
    }
    return -1;
}

/* The images of each DIR/<class> folder; a folder that cannot be listed is reported
 * on one line and counted in *problems, and the rest goes on. */
static int collect_image_folder(const vit_model *model, const char *dir, data_labelled_files *set,
                                size_t *problems) {
    data_file_list classes = {0};
    base_error err;
    int rc = -1;
    if (data_list_subdirs(dir, &classes, &err) != BASE_OK) {
        fprintf(stderr, "vit eval: %s\n", err.message);
        return -1;
    }
    if (classes.count == 0) {
        fprintf(stderr, "vit eval: no images found in %s (no class folders: expected DIR/<class>/*, or give --labels-csv)\n", dir);
        goto done;
    }
    for (size_t i = 0; i < classes.count; i++) {
        const int truth = class_of_folder(model, classes.paths[i]);
        if (truth < 0) {
            fprintf(stderr, "vit eval: %s/%s: folder name matches none of the model's %d labels\n",
                    dir, classes.paths[i], vit_model_num_labels(model));
            goto done;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, classes.paths[i]);
        data_file_list files = {0}, unreadable = {0};
        if (data_walk_collect(path, NULL, &files, &unreadable, &err) != BASE_OK) {
            fprintf(stderr, "vit eval: %s\n", err.message);
            data_file_list_free(&files);
            goto done;
        }
        for (size_t u = 0; u < unreadable.count; u++)
            fprintf(stderr, "vit eval: %s\n", unreadable.paths[u]);
        *problems += unreadable.count;
        data_file_list_free(&unreadable);
        for (size_t f = 0; f < files.count; f++)
            if (data_labelled_files_add(set, files.paths[f], truth) != 0) {
                fprintf(stderr, "vit eval: out of memory\n");
                data_file_list_free(&files);
                goto done;
            }
        data_file_list_free(&files);
    }
    if (set->count == 0) {
        fprintf(stderr, "vit eval: no images found in %s\n", dir);
        goto done;
    }
    rc = 0;
done:
    data_file_list_free(&classes);
    return rc;
}

/* A labels CSV of 50,000 validation rows is about 2 MB; a million-row
 * training list about 60 MB. */
#define MAX_LABELS_CSV_BYTES ((size_t)1 << 30)

static int collect_csv(const vit_model *model, const char *dir, const char *csv_path, data_labelled_files *set) {
    char *text = NULL;
    data_labelled_files rows = {0};
    base_error err;
    if (base_read_text_file(csv_path, MAX_LABELS_CSV_BYTES, &text, NULL, &err) != BASE_OK ||
        data_labels_csv_parse(text, strlen(text), csv_path, vit_model_config(model)->num_classes,
                              &rows, &err) != BASE_OK) {
        fprintf(stderr, "vit eval: %s\n", err.message);
        free(text);
        data_labelled_files_free(&rows);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < rows.count; i++) {
        char *path = malloc(strlen(dir) + strlen(rows.files[i]) + 2);
        if (path) sprintf(path, "%s/%s", dir, rows.files[i]);
        if (!path || data_labelled_files_add(set, path, rows.classes[i]) != 0) {
            fprintf(stderr, "vit eval: out of memory\n");
            rc = -1;
        }
        free(path);
    }
    free(text);
    data_labelled_files_free(&rows);
    return rc;
}



typedef struct class_pair {
    int truth, predicted;
} class_pair;

static int compare_pairs(const void *a, const void *b) {
    const class_pair *x = a, *y = b;
    if (x->truth != y->truth) return x->truth < y->truth ? -1 : 1;
    return x->predicted < y->predicted ? -1 : x->predicted > y->predicted;
}

/* path with its extension replaced by suffix. */
static void beside_path(const char *path, const char *suffix, char *out, size_t size) {
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    const int stem = dot && (!slash || dot > slash) ? (int)(dot - path) : (int)strlen(path);
    snprintf(out, size, "%.*s%s", stem, path, suffix);
}

/* Opens path atomically (base_io.h) as a stream; NULL (message printed)
 * when it cannot be. */
static FILE *open_atomic(const char *path, base_atomic_file **file) {
    base_error err;
    FILE *fp = NULL;
    if (base_atomic_open(path, file, &err) != BASE_OK) {
        fprintf(stderr, "vit eval: %s\n", err.message);
    } else if (!(fp = base_atomic_stream(*file))) {
        fprintf(stderr, "vit eval: %s: cannot write: %s\n", path, strerror(errno));
        base_atomic_abort(*file);
        *file = NULL;
    }
    return fp;
}

/* Renames a file opened by open_atomic into place, or (field_failed: a
 * field could not be formatted) drops it; -1 (message printed) on failure. */
static int close_atomic(base_atomic_file *file, int field_failed, const char *path) {
    base_error err;
    if (field_failed) {
        base_atomic_abort(file);
        fprintf(stderr, "vit eval: %s: out of memory formatting a row\n", path);
        return -1;
    }
    if (base_atomic_commit(file, &err) != BASE_OK) {
        fprintf(stderr, "vit eval: %s\n", err.message);
        return -1;
    }
    return 0;
}

/* Per-class accuracy (classes with images) and the confusion counts, both
 * beside the per-image CSV. pairs is sorted here. */
static int write_tables(const char *output, const vit_model *model, const size_t *per_class,
                        class_pair *pairs, size_t count) {
    char path[4200];
    base_atomic_file *file;
    beside_path(output, ".classes.csv", path, sizeof path);
    FILE *fp = open_atomic(path, &file);
    if (!fp) return -1;
    int field_failed = 0;
    fprintf(fp, "class,label,images,top1,top5\n");
    for (int c = 0; c < vit_model_config(model)->num_classes; c++) {
        const size_t n = per_class[3 * c];
        if (!n) continue;
        fprintf(fp, "%d,", c);
        field_failed |= cli_csv_write_field(fp, vit_model_label(model, c) ? vit_model_label(model, c) : "");
        fprintf(fp, ",%zu,%.4f,%.4f\n", n, (double)per_class[3 * c + 1] / n, (double)per_class[3 * c + 2] / n);
    }
    if (close_atomic(file, field_failed, path) != 0) return -1;

    if (count > 1) qsort(pairs, count, sizeof *pairs, compare_pairs);
    beside_path(output, ".confusion.csv", path, sizeof path);
    if (!(fp = open_atomic(path, &file))) return -1;
    fprintf(fp, "true,predicted,count\n");
    for (size_t i = 0; i < count;) {
        size_t j = i;
        while (j < count && compare_pairs(&pairs[i], &pairs[j]) == 0) j++;
        fprintf(fp, "%d,%d,%zu\n", pairs[i].truth, pairs[i].predicted, j - i);
        i = j;
    }
    return close_atomic(file, 0, path);
}

/* Most classes a confusion picture draws: beyond, the cells are too small
 * to read; the classes with the most errors are the ones worth a look. */
#define CONFUSION_MAX_CLASSES 30

int cli_eval_confusion_png(const char *path, const vit_model *model, const size_t *counts,
                           const char *source, size_t top1, size_t scored) {
    const int classes = vit_model_config(model)->num_classes;
    const char **names = calloc((size_t)classes, sizeof *names);
    char title[512], fallback[32];
    snprintf(fallback, sizeof fallback, "class");
    if (!names) {
        fprintf(stderr, "vit eval: out of memory\n");
        return -1;
    }
    for (int c = 0; c < classes; c++) names[c] = vit_model_label(model, c) ? vit_model_label(model, c) : fallback;
    int with_images = 0;
    for (int t = 0; t < classes; t++)
        for (int p = 0; p < classes; p++)
            if (counts[(size_t)t * classes + p]) {
                with_images++;
                break;
            }
    const int n = snprintf(title, sizeof title, "%.200s: top-1 %.2f%% of %zu images", source,
                           scored ? 100.0 * top1 / scored : 0.0, scored);
    if (with_images > CONFUSION_MAX_CLASSES)
        snprintf(title + n, sizeof title - (size_t)n, "; rows: the %d of %d classes with the most "
                 "errors", CONFUSION_MAX_CLASSES, with_images);
    data_image pic = {0};
    base_error err;
    base_status st = data_plot_confusion(&pic, title, names, counts, classes, CONFUSION_MAX_CLASSES, &err);
    if (st == BASE_OK) st = data_write_png(path, pic.width, pic.height, 3, pic.pixels, &err);
    if (st != BASE_OK) fprintf(stderr, "vit eval: --confusion %s: %s\n", path, err.message);
    data_image_free(&pic);
    free(names);
    return st == BASE_OK ? 0 : -1;
}

/* --confusion from the (truth, top-1) pairs of the scored images. */
static int confusion_from_pairs(const char *path, const vit_model *model, const class_pair *pairs,
                                size_t count, const char *source, size_t top1) {
    const size_t classes = (size_t)vit_model_config(model)->num_classes;
    size_t *counts = calloc(classes * classes, sizeof *counts);
    if (!counts) {
        fprintf(stderr, "vit eval: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < count; i++) counts[(size_t)pairs[i].truth * classes + pairs[i].predicted]++;
    const int r = cli_eval_confusion_png(path, model, counts, source, top1, count);
    free(counts);
    return r;
}

/* One eval run: the shared batch run plus the scores and the outputs. */
typedef struct eval_run {
    cli_batch_run run;
    const char *const *values; /* the parsed options, by OPT_ */
    const char *dir;
    data_labelled_files set;
    size_t problems;           /* folders that could not be listed */
    FILE *out;                 /* -o's per-image CSV, a stream of out_file */
    base_atomic_file *out_file;
    size_t *per_class;         /* per class: images, top-1, top-5 */
    class_pair *pairs;         /* (truth, top-1) of every scored image */
    size_t top1, top5, scored, failed;
    int out_failed;            /* a field could not be formatted */
    int progress;
} eval_run;

/* Before anything is written: none of the three outputs may be a file this
 * run reads, and no other vit process may write them. Then the per-image
 * CSV is opened beside its target, renamed at the end: never half a file. */
static int open_outputs(eval_run *e) {
    const char *output = e->values[OPT_OUTPUT];
    char classes_path[4200], confusion_path[4200];
    beside_path(output, ".classes.csv", classes_path, sizeof classes_path);
    beside_path(output, ".confusion.csv", confusion_path, sizeof confusion_path);
    if (cli_protect_run("eval", &e->run.protect, e->run.model, e->values[OPT_LABELS],
                        (const char *const *)e->set.files, e->set.count) != 0 ||
        cli_protect_file(&e->run.protect, e->values[OPT_LABELS_CSV], 1) != 0) {
        fprintf(stderr, "vit eval: out of memory\n");
        return -1;
    }
    const char *const outputs_written[3] = {output, classes_path, confusion_path};
    for (int i = 0; i < 3; i++) {
        base_error replace_err;
        if (cli_check_output("eval", &e->run.protect, outputs_written[i]) != 0) return -1;
        if (base_output_replaceable(outputs_written[i], &replace_err) != BASE_OK) {
            fprintf(stderr, "vit eval: %s\n", replace_err.message);
            return -1;
        }
    }
    if (cli_lock_output("eval", output, 0, &e->run.lock) != 0) return -1;
    if (!(e->out = open_atomic(output, &e->out_file))) return -1;
    fprintf(e->out, "path,true,predicted,correct,true_label,predicted_label\n");
    return 0;
}

/* --confusion: a file of its own, none of the run's inputs. */
static int check_confusion(eval_run *e) {
    const char *path = e->values[OPT_CONFUSION];
    if (!path) return 0;
    if ((!e->values[OPT_OUTPUT] &&
         cli_protect_run("eval", &e->run.protect, e->run.model, e->values[OPT_LABELS],
                         (const char *const *)e->set.files, e->set.count) != 0) ||
        cli_protect_file(&e->run.protect, e->values[OPT_LABELS_CSV], 1) != 0)
        return -1;
    return cli_check_output("eval", &e->run.protect, path);
}

static void write_image_row(eval_run *e, size_t item, int truth, int predicted) {
    const vit_model *model = e->run.model;
    /* Paths relative to DIR, as the user named them. */
    e->out_failed |= cli_csv_write_field(e->out, e->set.files[item] + strlen(e->dir) + 1);
    fprintf(e->out, ",%d,%d,%d,", truth, predicted, predicted == truth);
    e->out_failed |= cli_csv_write_field(e->out, vit_model_label(model, truth) ? vit_model_label(model, truth) : "");
    fputc(',', e->out);
    e->out_failed |= cli_csv_write_field(e->out, vit_model_label(model, predicted) ? vit_model_label(model, predicted) : "");
    fputc('\n', e->out);
}

static void score(void *self, size_t item, const float *probs, const char *error) {
    eval_run *e = self;
    if (error) {
        e->failed++;
        cli_batch_report_failure(&e->run, e->progress, error);
        return;
    }
    int top[5];
    const int n = vit_top_k(probs, e->run.classes, 5, top);
    const int truth = e->set.classes[item];
    int in_top5 = 0;
    for (int k = 0; k < n; k++) in_top5 |= top[k] == truth;
    e->pairs[e->scored].truth = truth;
    e->pairs[e->scored].predicted = top[0];
    e->scored++;
    e->top1 += top[0] == truth;
    e->top5 += in_top5;
    e->per_class[3 * truth] += 1;
    e->per_class[3 * truth + 1] += top[0] == truth;
    e->per_class[3 * truth + 2] += in_top5;
    if (e->out) write_image_row(e, item, truth, top[0]);
}

static int show_accuracy(void *self, const data_batch *b, double elapsed) {
    eval_run *e = self;
    (void)elapsed;
    if (e->progress)
        cli_progress_line("  %zu/%zu images, top-1 %.1f%%", b->first + b->count, e->set.count,
                          e->scored ? 100.0 * e->top1 / e->scored : 0.0);
    return 0;
}

/* The accuracy on standard output, then -o's files. */
static int report(eval_run *e) {
    const size_t scored = e->scored, failed = e->failed;
    printf("top-1 %.2f%% (%zu/%zu)  top-5 %.2f%% (%zu/%zu)\n", scored ? 100.0 * e->top1 / scored : 0.0,
           e->top1, scored, scored ? 100.0 * e->top5 / scored : 0.0, e->top5, scored);
    /* Only the accuracy is the result: the timings go with the progress,
     * in the summary line every batch command prints. */
    if (!e->values[OPT_QUIET]) cli_print_summary("eval", "scored", scored + failed, failed, NULL, &e->run.timings);
    if (e->values[OPT_CONFUSION] &&
        confusion_from_pairs(e->values[OPT_CONFUSION], e->run.model, e->pairs, scored, e->dir,
                             e->top1) != 0)
        return -1;
    if (!e->out) return 0;
    const char *output = e->values[OPT_OUTPUT];
    const int closed = close_atomic(e->out_file, e->out_failed, output);
    e->out = NULL;
    e->out_file = NULL;
    if (closed != 0) return -1;
    return write_tables(output, e->run.model, e->per_class, e->pairs, scored);
}

/* Scores every image (paths: e->set's files, or on the other ranks of an
 * MPI job the list rank 0 sent); the exit status. */
static int score_all(eval_run *e, const char *const *paths, size_t count) {
    const int ranks = cli_mpi_active(), root = cli_mpi_rank() == 0;
    if (cli_batch_start(&e->run, ranks ? NULL : paths, count, cli_thread_count((int)e->run.threads),
                        1) != 0) {
        cli_mpi_abort(CLI_EXIT_FATAL); /* the other ranks are already running */
        return CLI_EXIT_FATAL;
    }
    e->per_class = calloc((size_t)e->run.classes * 3, sizeof *e->per_class);
    e->pairs = malloc(sizeof *e->pairs * (count ? count : 1));
    if (!e->per_class || !e->pairs) {
        fprintf(stderr, "vit eval: out of memory\n");
        cli_mpi_abort(CLI_EXIT_FATAL);
        return CLI_EXIT_FATAL;
    }
    e->progress = root && !e->values[OPT_QUIET] && isatty(STDERR_FILENO);
    const cli_batch_handlers scoring = {score, show_accuracy, e};
    double seconds;
    if ((ranks ? cli_batch_each_mpi(&e->run, paths, count, &scoring, &seconds)
               : cli_batch_each(&e->run, paths, &scoring, &seconds)) != 0)
        return CLI_EXIT_FATAL;
    if (!root) return CLI_EXIT_OK; /* rank 0 reports for the job */
    if (e->progress) cli_progress_clear();
    const int signo = cli_stop_requested();
    if (signo) {
        /* No accuracy of part of the images: the outputs are dropped (the
         * temporary file is removed), nothing half-written is left. */
        fprintf(stderr, "vit eval: stopped by %s after %zu of %zu images; nothing written\n",
                signo == SIGINT ? "SIGINT" : "SIGTERM", e->scored + e->failed, e->set.count);
        return 128 + signo;
    }
    if (report(e) != 0) return CLI_EXIT_FATAL;
    return e->failed || e->problems ? CLI_EXIT_SOME_FAILED : CLI_EXIT_OK;
}

/* Rank 0's part of the setup, or all of it in one process: -1 failed
 * (printed), 1 for fashion-mnist (one process only). */
static int set_up(eval_run *e, const cli_args *args) {
    const char *const *v = e->values;
    if (cli_batch_numbers(&e->run, &v[OPT_LIMITS], NULL, NULL, v[OPT_THREADS], v[OPT_SIZE],
                          v[OPT_BATCH]) != 0)
        return -1;
    if (args->num_positional != 1) {
        fprintf(stderr, "vit eval: expected one image directory, got %d (see 'vit eval -h')\n",
                args->num_positional);
        return -1;
    }
    e->dir = args->positional[0];
    if (cli_batch_load_model(&e->run, v[OPT_MODEL], v[OPT_LABELS], v[OPT_POS_RESAMPLE], "") != 0)
        return -1;
    if (strcmp(e->dir, "fashion-mnist") == 0 && access(e->dir, F_OK) != 0 && !v[OPT_LABELS_CSV]) {
        if (!cli_mpi_active()) return 1;
        fprintf(stderr, "vit eval: fashion-mnist runs in one process (start it without mpirun)\n");
        return -1;
    }
    return v[OPT_LABELS_CSV] ? collect_csv(e->run.model, e->dir, v[OPT_LABELS_CSV], &e->set)
                             : collect_image_folder(e->run.model, e->dir, &e->set, &e->problems);
}

static int run_eval(eval_run *e, const cli_args *args) {
    const char *const *v = e->values;
    if (!cli_mpi_active()) {
        const int r = set_up(e, args);
        if (r > 0 && check_confusion(e) != 0) return CLI_EXIT_FATAL;
        if (r > 0)
            return cli_eval_fashion_mnist(e->run.model, v[OPT_MODEL] == NULL, (int)e->run.batch,
                                          (int)e->run.size, cli_thread_count((int)e->run.threads),
                                          v[OPT_QUIET] != NULL,
                                          v[OPT_CONFUSION]);
        if (r < 0 || (v[OPT_OUTPUT] && open_outputs(e) != 0) || check_confusion(e) != 0)
            return CLI_EXIT_FATAL;
        cli_batch_fit(&e->run, e->set.count);
        return score_all(e, (const char *const *)e->set.files, e->set.count);
    }
    /* Several processes (cli_mpi.h): rank 0 checks, loads and collects
     * first (one message, not one per rank), the others load the model,
     * rank 0 opens the outputs and sends them the files. */
    const int root = cli_mpi_rank() == 0;
    if (!cli_mpi_go(root && set_up(e, args) == 0)) return CLI_EXIT_FATAL;
    const int loaded = root || (cli_batch_numbers(&e->run, &v[OPT_LIMITS], NULL, NULL, v[OPT_THREADS],
                                                  v[OPT_SIZE], v[OPT_BATCH]) == 0 &&
                                cli_batch_load_model(&e->run, v[OPT_MODEL], v[OPT_LABELS],
                                                     v[OPT_POS_RESAMPLE], "") == 0);
    if (!cli_mpi_agree("eval", loaded) ||
        !cli_mpi_go(!root || ((!v[OPT_OUTPUT] || open_outputs(e) == 0) && check_confusion(e) == 0)))
        return CLI_EXIT_FATAL;
    if (root) cli_batch_fit(&e->run, e->set.count);
    /* Rank 0 lends its labelled files (as path and name alike) for sending. */
    cli_inputs in = {0};
    if (root) in = (cli_inputs){.paths = e->set.files, .names = e->set.files, .count = e->set.count};
    if (cli_mpi_share_inputs("eval", &in, &e->run.batch) != 0) return CLI_EXIT_FATAL;
    const int status = score_all(e, (const char *const *)in.paths, in.count);
    if (!root) cli_inputs_free(&in);
    return status;
}

int cli_eval(int argc, char **argv) {
    cli_args args;
    int parsed = cli_parse("eval", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0) return cli_parse_exit(parsed);
    eval_run e = {.run = {.command = "eval", .batch = 16}, .values = args.values};
    const int exit_code = run_eval(&e, &args);
    base_atomic_abort(e.out_file); /* a run that stopped early: nothing written */
    free(e.per_class);
    free(e.pairs);
    data_labelled_files_free(&e.set);
    cli_batch_free(&e.run);
    free(args.positional);
    return exit_code;
}
