/* vit eval: top-1 / top-5 accuracy on labelled images. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

enum { OPT_MODEL, OPT_LABELS_CSV, OPT_OUTPUT, OPT_THREADS, OPT_SIZE, OPT_BATCH, OPT_LABELS,
       OPT_POS_RESAMPLE, OPT_LIMITS, NUM_OPTS = OPT_LIMITS + CLI_NUM_LIMIT_OPTIONS };

static const cli_option OPTIONS[NUM_OPTS] = {
    [OPT_MODEL] = {"model", 'm', 1, "PATH", "model directory or .safetensors file"},
    [OPT_LABELS_CSV] = {"labels-csv", 0, 1, "FILE", "CSV of file,class_index,... (paths relative to DIR)"},
    [OPT_OUTPUT] = {"output", 'o', 1, "FILE", "per-image CSV; also FILE's stem + .classes.csv (per-class "
                                             "accuracy) and .confusion.csv (true, predicted, count)"},
    [OPT_THREADS] = {"threads", 't', 1, "N", "threads (default: all cores)"},
    [OPT_SIZE] = {"size", 0, 1, "S", "input size (default: native)"},
    [OPT_BATCH] = {"batch", 'b', 1, "N", "images per forward pass (default 16)"},
    [OPT_LABELS] = {"labels", 0, 1, "FILE", "class labels, one per line"},
    [OPT_POS_RESAMPLE] = CLI_POS_RESAMPLE_OPTION,
    [OPT_LIMITS] = CLI_LIMIT_OPTIONS,
};

static const char USAGE[] =
    "usage: vit eval -m MODEL DIR [--labels-csv FILE] [-o FILE]\n"
    "\n"
    "Top-1 and top-5 accuracy on labelled images: either DIR/<class>/* (ImageFolder;\n"
    "class folders match the model's labels: the full label, any of its comma-separated\n"
    "names, or the class index; '_' reads as a space), the files a --labels-csv names,\n"
    "or fashion-mnist: the Fashion-MNIST test split (Debian dataset-fashion-mnist).\n"
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
    vit_error err;
    int rc = -1;
    if (data_list_subdirs(dir, &classes, &err) != VIT_OK) {
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
        if (data_walk_collect(path, NULL, &files, &unreadable, &err) != VIT_OK) {
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
    vit_error err;
    if (base_read_text_file(csv_path, MAX_LABELS_CSV_BYTES, &text, NULL, &err) != VIT_OK ||
        data_labels_csv_parse(text, strlen(text), csv_path, vit_model_config(model)->num_classes,
                              &rows, &err) != VIT_OK) {
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

/* Writes path with its extension replaced by suffix, via a temporary file. */
static FILE *open_beside(const char *path, const char *suffix, char *final_path, size_t size,
                         char *tmp_path, size_t tmp_size) {
    beside_path(path, suffix, final_path, size);
    snprintf(tmp_path, tmp_size, "%s.tmp.%ld", final_path, (long)getpid());
    FILE *fp = fopen(tmp_path, "w");
    if (!fp) fprintf(stderr, "vit eval: %s: cannot write: %s\n", final_path, strerror(errno));
    return fp;
}

static int close_beside(FILE *fp, int field_failed, const char *final_path, const char *tmp_path) {
    int failed = field_failed | ferror(fp) | (fclose(fp) != 0);
    if (failed || rename(tmp_path, final_path) != 0) {
        fprintf(stderr, "vit eval: %s: cannot write: %s\n", final_path, strerror(errno));
        unlink(tmp_path);
        return -1;
    }
    return 0;
}

/* Per-class accuracy (classes with images) and the confusion counts, both
 * beside the per-image CSV. pairs is sorted here. */
static int write_tables(const char *output, const vit_model *model, const size_t *per_class,
                        class_pair *pairs, size_t count) {
    char final_path[4200], tmp_path[4300];
    FILE *fp = open_beside(output, ".classes.csv", final_path, sizeof final_path, tmp_path,
                           sizeof tmp_path);
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
    if (close_beside(fp, field_failed, final_path, tmp_path) != 0) return -1;

    if (count > 1) qsort(pairs, count, sizeof *pairs, compare_pairs);
    if (!(fp = open_beside(output, ".confusion.csv", final_path, sizeof final_path, tmp_path,
                             sizeof tmp_path))) return -1;
    fprintf(fp, "true,predicted,count\n");
    for (size_t i = 0; i < count;) {
        size_t j = i;
        while (j < count && compare_pairs(&pairs[i], &pairs[j]) == 0) j++;
        fprintf(fp, "%d,%d,%zu\n", pairs[i].truth, pairs[i].predicted, j - i);
        i = j;
    }
    return close_beside(fp, 0, final_path, tmp_path);
}

int cli_eval(int argc, char **argv) {
    cli_args args;
    int parsed = cli_parse("eval", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0) {
        free(args.positional);
        return parsed > 0 ? CLI_EXIT_OK : CLI_EXIT_FATAL;
    }
    int exit_code = CLI_EXIT_FATAL;
    vit_model *model = NULL;
    vit_context *ctx = NULL;
    data_loader *loader = NULL;
    float *outputs = NULL;
    size_t *per_class = NULL;
    class_pair *pairs = NULL;
    data_labelled_files set = {0};
    FILE *out = NULL;
    char out_tmp[4200] = "";
    cli_protected protect = {0};
    cli_lock lock = {0};
    long threads = 0, size = 0, batch = 16;
    vit_limits limits;
    if (cli_limits("eval", &args.values[OPT_LIMITS], &limits) != 0 ||
        (args.values[OPT_THREADS] && cli_int("eval", "-t", args.values[OPT_THREADS], 1, 1024, &threads)) ||
        (args.values[OPT_SIZE] && cli_int("eval", "--size", args.values[OPT_SIZE], 1, 8192, &size)) ||
        (args.values[OPT_BATCH] && cli_int("eval", "-b", args.values[OPT_BATCH], 1, 1024, &batch)))
        goto done;
    if (args.num_positional != 1) {
        fprintf(stderr, "vit eval: expected one image directory, got %d (see 'vit eval -h')\n",
                args.num_positional);
        goto done;
    }
    const char *dir = args.positional[0];
    cli_set_threads((int)threads);
    model = cli_load_model_limited("eval", args.values[OPT_MODEL], args.values[OPT_LABELS],
                                   args.values[OPT_POS_RESAMPLE], &limits, (int)size);
    if (!model) goto done;
    if (vit_model_config(model)->num_classes == 0) {
        fprintf(stderr, "vit eval: %s has no classification head\n", vit_model_weights_path(model));
        goto done;
    }
    if (strcmp(dir, "fashion-mnist") == 0 && access(dir, F_OK) != 0 && !args.values[OPT_LABELS_CSV]) {
        exit_code = cli_eval_fashion_mnist(model, (int)batch, (int)size);
        goto done;
    }
    size_t problems = 0; /* folders that could not be listed */
    if ((args.values[OPT_LABELS_CSV] ? collect_csv(model, dir, args.values[OPT_LABELS_CSV], &set)
                                     : collect_image_folder(model, dir, &set, &problems)) != 0)
        goto done;
    if (args.values[OPT_OUTPUT]) {
        /* Before anything is written: none of the three outputs may be a
         * file this run reads, and no other vit process may write them. */
        const char *output = args.values[OPT_OUTPUT];
        char classes_path[4200], confusion_path[4200];
        beside_path(output, ".classes.csv", classes_path, sizeof classes_path);
        beside_path(output, ".confusion.csv", confusion_path, sizeof confusion_path);
        if (cli_protect_run("eval", &protect, model, args.values[OPT_LABELS],
                            (const char *const *)set.files, set.count) != 0 ||
            cli_protect_file(&protect, args.values[OPT_LABELS_CSV], 1) != 0) {
            fprintf(stderr, "vit eval: out of memory\n");
            goto done;
        }
        const char *const outputs_written[3] = {output, classes_path, confusion_path};
        for (int i = 0; i < 3; i++) {
            vit_error replace_err;
            if (cli_check_output("eval", &protect, outputs_written[i]) != 0) goto done;
            if (base_output_replaceable(outputs_written[i], &replace_err) != VIT_OK) {
                fprintf(stderr, "vit eval: %s\n", replace_err.message);
                goto done;
            }
        }
        if (cli_lock_output("eval", output, 0, &lock) != 0) goto done;
        /* Written beside the target and renamed at the end: never half a file. */
        snprintf(out_tmp, sizeof out_tmp, "%s.tmp.%ld", args.values[OPT_OUTPUT], (long)getpid());
        if (!(out = fopen(out_tmp, "w"))) {
            fprintf(stderr, "vit eval: %s: cannot write: %s\n", args.values[OPT_OUTPUT], strerror(errno));
            out_tmp[0] = '\0';
            goto done;
        }
        fprintf(out, "file,true,predicted,correct,true_label,predicted_label\n");
    }
    if ((size_t)batch > set.count) batch = (long)set.count;
    const int classes = vit_model_config(model)->num_classes;
    data_preprocess pre = *vit_model_preprocess(model);
    if (size) data_preprocess_set_size(&pre, (int)size);
    vit_error err;
    if (vit_context_create(model, (int)batch, (int)size, &ctx, &err) != VIT_OK ||
        data_loader_create(&pre, (const char *const *)set.files, set.count, (int)batch,
                           cli_thread_count((int)threads), 1, &loader, &err) != VIT_OK) {
        fprintf(stderr, "vit eval: %s\n", err.message);
        goto done;
    }
    outputs = malloc(sizeof(float) * classes * (size_t)batch);
    per_class = calloc((size_t)classes * 3, sizeof *per_class); /* images, top-1, top-5 */
    pairs = malloc(sizeof *pairs * set.count);
    if (!outputs || !per_class || !pairs) {
        fprintf(stderr, "vit eval: out of memory\n");
        goto done;
    }

    const int show_progress = isatty(STDERR_FILENO);
    size_t top1 = 0, top5 = 0, scored = 0, failed = 0;
    int out_failed = 0; /* a field could not be formatted */
    const double start = cli_now_seconds();
    data_batch b;
    cli_catch_stop_signals();
    while (!cli_stop_requested() && data_loader_next(loader, &b) > 0) {
        if (cli_run_batch("eval", ctx, model, (const char *const *)set.files, &b, outputs) != 0) goto done;
        for (int i = 0; i < b.count; i++) {
            const size_t item = b.first + i;
            if (b.row[i] < 0) {
                failed++;
                fprintf(stderr, "%svit eval: %s\n", show_progress ? "\r" : "", b.errors[i].message);
                continue;
            }
            const float *probs = outputs + (size_t)b.row[i] * classes;
            int top[5];
            const int n = vit_top_k(probs, classes, 5, top);
            const int truth = set.classes[item];
            int in_top5 = 0;
            for (int k = 0; k < n; k++) in_top5 |= top[k] == truth;
            pairs[scored].truth = truth;
            pairs[scored].predicted = top[0];
            scored++;
            top1 += top[0] == truth;
            top5 += in_top5;
            per_class[3 * truth] += 1;
            per_class[3 * truth + 1] += top[0] == truth;
            per_class[3 * truth + 2] += in_top5;
            if (out) {
                /* Paths relative to DIR, as the user named them. */
                out_failed |= cli_csv_write_field(out, set.files[item] + strlen(dir) + 1);
                fprintf(out, ",%d,%d,%d,", truth, top[0], top[0] == truth);
                out_failed |= cli_csv_write_field(out, vit_model_label(model, truth) ? vit_model_label(model, truth) : "");
                fputc(',', out);
                out_failed |= cli_csv_write_field(out, vit_model_label(model, top[0]) ? vit_model_label(model, top[0]) : "");
                fputc('\n', out);
            }
        }
        if (show_progress)
            fprintf(stderr, "\r  %zu/%zu images, top-1 %.1f%%", b.first + b.count, set.count,
                    scored ? 100.0 * top1 / scored : 0.0);
    }
    const double seconds = cli_now_seconds() - start;
    if (show_progress) fprintf(stderr, "\r%60s\r", "");
    const int signo = cli_stop_requested();
    if (signo) {
        /* No accuracy of part of the images: the outputs are dropped (done:
         * removes the temporary file), nothing half-written is left. */
        fprintf(stderr, "vit eval: stopped by %s after %zu of %zu images; nothing written\n",
                signo == SIGINT ? "SIGINT" : "SIGTERM", scored + failed, set.count);
        exit_code = 128 + signo;
        goto done;
    }
    printf("top-1 %.2f%% (%zu/%zu)  top-5 %.2f%% (%zu/%zu)\n", scored ? 100.0 * top1 / scored : 0.0,
           top1, scored, scored ? 100.0 * top5 / scored : 0.0, top5, scored);
    printf("%zu images in %.1f s (%.1f images/s)%s", scored + failed, seconds,
           seconds > 0 ? (scored + failed) / seconds : 0.0, failed ? "" : "\n");
    if (failed) printf(", %zu failed (named on stderr) and are left out\n", failed);
    if (out) {
        int write_failed = out_failed | ferror(out) | (fclose(out) != 0);
        out = NULL;
        if (write_failed || rename(out_tmp, args.values[OPT_OUTPUT]) != 0) {
            fprintf(stderr, "vit eval: %s: cannot write: %s\n", args.values[OPT_OUTPUT], strerror(errno));
            goto done;
        }
        out_tmp[0] = '\0';
        if (write_tables(args.values[OPT_OUTPUT], model, per_class, pairs, scored) != 0) goto done;
    }
    exit_code = failed || problems ? CLI_EXIT_SOME_FAILED : CLI_EXIT_OK;

done:
    if (out) fclose(out);
    if (out_tmp[0]) unlink(out_tmp);
    data_loader_free(loader);
    vit_context_free(ctx);
    free(outputs);
    free(per_class);
    free(pairs);
    data_labelled_files_free(&set);
    cli_unlock_output(&lock);
    cli_protected_free(&protect);
    vit_model_free(model);
    free(args.positional);
    return exit_code;
}
