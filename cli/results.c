/* Result rows for classify: text, CSV, JSON Lines or a JSON array, written
 * a batch at a time with one write(2) each, so a killed run leaves whole
 * rows behind (--resume drops a last row a kill may have cut). */
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "weights.h"

static const char *const FORMAT_NAMES[] = {"text", "csv", "jsonl", "json", "hf", "hf-jsonl", "npy"};

int cli_results_format_parse(const char *text, cli_results_format *format) {
    for (int i = 0; i < (int)(sizeof FORMAT_NAMES / sizeof *FORMAT_NAMES); i++)
        if (strcmp(text, FORMAT_NAMES[i]) == 0) {
            *format = (cli_results_format)i;
            return 0;
        }
    return -1;
}

/* Extensions in any case, as the directory walk matches them: out.CSV is
 * a CSV file. */
cli_results_format cli_results_format_for_path(const char *path) {
    const char *dot = path ? strrchr(path, '.') : NULL;
    if (dot && strcasecmp(dot, ".csv") == 0) return CLI_RESULTS_CSV;
    if (dot && strcasecmp(dot, ".jsonl") == 0) return CLI_RESULTS_JSONL;
    if (dot && strcasecmp(dot, ".json") == 0) return CLI_RESULTS_JSON;
    if (dot && strcasecmp(dot, ".npy") == 0) return CLI_RESULTS_NPY;
    return CLI_RESULTS_TEXT;
}

char *cli_files_list_path(const char *path) {
    size_t n = strlen(path);
    if (n >= 4 && strcasecmp(path + n - 4, ".npy") == 0) n -= 4;
    else if (n >= 5 && strcasecmp(path + n - 5, ".json") == 0) n -= 5;
    char *list = malloc(n + sizeof ".files.jsonl");
    if (list) snprintf(list, n + sizeof ".files.jsonl", "%.*s.files.jsonl", (int)n, path);
    return list;
}

static void append(cli_results *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void append(cli_results *r, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const size_t room = r->capacity - r->length;
        const int n = vsnprintf(r->buffer ? r->buffer + r->length : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) return;
        if ((size_t)n < room) {
            r->length += (size_t)n;
            return;
        }
        size_t capacity = r->capacity ? r->capacity * 2 : 16384;
        while (capacity - r->length <= (size_t)n) capacity *= 2;
        char *grown = realloc(r->buffer, capacity);
        if (!grown) {
            r->failed = 1;
            return;
        }
        r->buffer = grown;
        r->capacity = capacity;
    }
}

static void append_csv_field(cli_results *r, const char *s) {
    char *quoted = cli_csv_quote(s);
    if (!quoted) {
        r->failed = 1;
        return;
    }
    append(r, "%s", quoted);
    free(quoted);
}

static void csv_header(cli_results *r) {
    append(r, "path");
    if (r->all_classes) {
        /* One column per class, named by its label (pandas: df["tabby, tabby
         * cat"]), or by its index when the model has no labels. */
        for (int c = 0; c < vit_model_output_size(r->model); c++) {
            const char *label = vit_model_label(r->model, c);
            append(r, ",");
            if (label) append_csv_field(r, label);
            else append(r, "%d", c);
        }
    } else {
        for (int k = 1; k <= r->top_k; k++) append(r, ",index_%d,label_%d,probability_%d", k, k, k);
    }
    append(r, ",error\n");
}

/* The number of CSV fields of a row. */
static size_t csv_columns(const cli_results *r) {
    return 2 + (r->all_classes ? (size_t)vit_model_output_size(r->model) : 3 * (size_t)r->top_k);
}

/* Every string goes into JSON through cli_json_text: names and labels are
 * bytes, and JSON must be valid UTF-8. */
static void add_json_text(cli_results *r, cJSON *obj, const char *key, const char *s) {
    char *text = cli_json_text(s);
    if (!text || !cJSON_AddStringToObject(obj, key, text)) r->failed = 1;
    free(text);
}

/* The line naming this row in OUT.files.jsonl: its path as a JSON string. */
static void add_name(cli_results *r, const char *path) {
    char *escaped = cli_json_text(path);
    cJSON *name = escaped ? cJSON_CreateString(escaped) : NULL;
    char *line = name ? cJSON_PrintUnformatted(name) : NULL;
    const size_t n = line ? strlen(line) : 0;
    if (line && r->names_length + n + 1 > r->names_capacity) {
        const size_t capacity = 2 * (r->names_length + n + 1);
        char *grown = realloc(r->names, capacity);
        if (grown) {
            r->names = grown;
            r->names_capacity = capacity;
        }
    }
    if (!line || r->names_length + n + 1 > r->names_capacity) {
        r->failed = 1;
    } else {
        memcpy(r->names + r->names_length, line, n);
        r->names[r->names_length + n] = '\n';
        r->names_length += n + 1;
    }
    free(line);
    cJSON_Delete(name);
    free(escaped);
}

/* Every class's value, shortest form that reads back as the same float32
 * (%.9g), so logits and probabilities lose nothing. */
static void add_all_classes(cli_results *r, const char *path, const float *values,
                            const char *error) {
    const int classes = vit_model_output_size(r->model);
    if (r->format == CLI_RESULTS_NPY) {
        base_error err;
        if (!r->reported &&
            base_atomic_write(r->npy, values ? values : r->nan_row, sizeof(float) * (size_t)classes,
                              &err) != BASE_OK) {
            fprintf(stderr, "vit classify: %s\n", err.message);
            r->reported = 1;
        }
    } else if (r->format == CLI_RESULTS_CSV) {
        append_csv_field(r, path);
        for (int c = 0; c < classes; c++) {
            if (values) append(r, ",%.9g", values[c]);
            else append(r, ",");
        }
        append(r, ",");
        append_csv_field(r, error ? error : "");
        append(r, "\n");
    } else { /* jsonl, json */
        append(r, "{\"path\":");
        char *text = cli_json_text(path);
        cJSON *name = text ? cJSON_CreateString(text) : NULL;
        char *quoted = name ? cJSON_PrintUnformatted(name) : NULL;
        if (!quoted) r->failed = 1;
        else append(r, "%s", quoted);
        free(quoted);
        cJSON_Delete(name);
        free(text);
        append(r, ",\"%s\":", r->all_classes == CLI_ALL_LOGITS ? "logits" : "probs");
        if (values) {
            for (int c = 0; c < classes; c++) append(r, "%s%.9g", c ? "," : "[", values[c]);
            append(r, "]");
        } else {
            append(r, "null");
        }
        if (error) {
            text = cli_json_text(error);
            name = text ? cJSON_CreateString(text) : NULL;
            quoted = name ? cJSON_PrintUnformatted(name) : NULL;
            if (!quoted) r->failed = 1;
            else append(r, ",\"error\":%s}", quoted);
            free(quoted);
            cJSON_Delete(name);
            free(text);
        } else {
            append(r, ",\"error\":null}");
        }
        append(r, "\n");
    }
}

/* transformers' pipeline("image-classification") output for one image:
 * [{"label": ..., "score": ...}, ...], best first (a failed image: []). */
static cJSON *hf_list(cli_results *r, const float *probs, const int *top, int n) {
    cJSON *list = cJSON_CreateArray();
    for (int i = 0; list && i < n; i++) {
        cJSON *item = cJSON_CreateObject();
        const char *label = vit_model_label(r->model, top[i]);
        char index_label[32];
        snprintf(index_label, sizeof index_label, "LABEL_%d", top[i]); /* as transformers names them */
        add_json_text(r, item, "label", label ? label : index_label);
        char score[32];
        snprintf(score, sizeof score, "%.6f", probs[top[i]]);
        cJSON_AddRawToObject(item, "score", score);
        cJSON_AddItemToArray(list, item);
    }
    if (!list) r->failed = 1;
    return list;
}

void cli_results_add(cli_results *r, const char *path, const float *probs, const char *error) {
    if (r->names) add_name(r, path);
    if (r->all_classes) {
        if (r->format == CLI_RESULTS_JSON) append(r, "%s", r->rows ? ",\n" : "[\n");
        add_all_classes(r, path, probs, error);
        if (r->format == CLI_RESULTS_JSON && r->length && r->buffer[r->length - 1] == '\n')
            r->length--; /* the array's separators go between rows */
        r->rows++;
        return;
    }
    int top[1000];
    const int n = probs ? vit_top_k(probs, vit_model_output_size(r->model), r->top_k, top) : 0;
    if (r->format == CLI_RESULTS_HF || r->format == CLI_RESULTS_HF_JSONL) {
        cJSON *list = hf_list(r, probs, top, n), *obj = list;
        if (r->format == CLI_RESULTS_HF_JSONL) {
            obj = cJSON_CreateObject();
            add_json_text(r, obj, "path", path);
            cJSON_AddItemToObject(obj, "predictions", list);
            if (error) add_json_text(r, obj, "error", error);
            else cJSON_AddNullToObject(obj, "error");
        }
        char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
        if (!text) r->failed = 1;
        else if (r->format == CLI_RESULTS_HF) append(r, "%s%s", r->rows ? ",\n" : "[\n", text);
        else append(r, "%s\n", text);
        free(text);
        cJSON_Delete(obj);
    } else if (r->format == CLI_RESULTS_TEXT) {
        append(r, "%s\n", path);
        if (error) append(r, "  error: %s\n", error);
        for (int i = 0; i < n; i++) {
            const char *label = vit_model_label(r->model, top[i]);
            append(r, "  %6.2f%%  %s (%d)\n", 100.0 * probs[top[i]], label ? label : "class", top[i]);
        }
    } else if (r->format == CLI_RESULTS_CSV) {
        append_csv_field(r, path);
        for (int i = 0; i < r->top_k; i++) {
            if (i < n) {
                const char *label = vit_model_label(r->model, top[i]);
                append(r, ",%d,", top[i]);
                append_csv_field(r, label ? label : "");
                append(r, ",%.6f", probs[top[i]]);
            } else {
                append(r, ",,,");
            }
        }
        append(r, ",");
        append_csv_field(r, error ? error : "");
        append(r, "\n");
    } else {
        cJSON *obj = cJSON_CreateObject();
        add_json_text(r, obj, "path", path);
        cJSON *list = cJSON_AddArrayToObject(obj, "top");
        for (int i = 0; i < n; i++) {
            cJSON *item = cJSON_CreateObject();
            const char *label = vit_model_label(r->model, top[i]);
            cJSON_AddNumberToObject(item, "index", top[i]);
            add_json_text(r, item, "label", label ? label : "");
            /* Rounded as in CSV so both formats carry the same numbers. */
            char prob[32];
            snprintf(prob, sizeof prob, "%.6f", probs[top[i]]);
            cJSON_AddRawToObject(item, "probability", prob);
            cJSON_AddItemToArray(list, item);
        }
        if (error) add_json_text(r, obj, "error", error);
        else cJSON_AddNullToObject(obj, "error");
        char *text = cJSON_PrintUnformatted(obj);
        if (!text) r->failed = 1;
        else if (r->format == CLI_RESULTS_JSON) append(r, "%s%s", r->rows ? ",\n" : "[\n", text);
        else append(r, "%s\n", text);
        free(text);
        cJSON_Delete(obj);
    }
    r->rows++;
}

static int write_all(int fd, const char *data, size_t length) {
    while (length > 0) {
        ssize_t n = write(fd, data, length);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        data += n;
        length -= (size_t)n;
    }
    return 0;
}

int cli_results_flush(cli_results *r) {
    if (r->reported) return -1; /* said once, when it happened */
    if (r->failed) {
        fprintf(stderr, "vit classify: %s: out of memory formatting results\n", r->display_name);
        r->reported = 1;
        return -1;
    }
    if (r->length && r->fd >= 0 && write_all(r->fd, r->buffer, r->length) != 0) {
        fprintf(stderr, "vit classify: %s: cannot write: %s\n", r->display_name, strerror(errno));
        r->reported = 1;
        return -1;
    }
    r->length = 0;
    return 0;
}

/* ---------------------------------------------------------------- resume */

/* Counts the line feeds in text[0, n). */
static size_t line_feeds(const char *text, size_t n) {
    size_t count = 0;
    for (const char *p = text; (p = memchr(p, '\n', n - (size_t)(p - text))); p++) count++;
    return count;
}

/* Counts one row already in the file and remembers its path (owned, NULL
 * when out of memory); -1 (message printed) when out of memory. */
static int add_done_row(cli_results *r, cli_string_set *done, char *row_path, const char *path) {
    if (!row_path || cli_string_set_add(done, row_path) != 0) {
        free(row_path);
        fprintf(stderr, "vit classify: out of memory reading %s\n", path);
        return -1;
    }
    r->rows++;
    return 0;
}

/* The CSV rows of text (size bytes): their paths into done; *complete is
 * the length of the whole rows (header included). The last row may be cut
 * (ended without its line break, or inside a quoted field that holds at
 * most one line break, as a path may): it is left out. Anything else
 * damaged refuses the file. */
static int read_csv_rows(cli_results *r, const char *path, const char *text, size_t size,
                         cli_string_set *done, size_t *complete) {
    csv_header(r);
    const size_t header_length = r->length;
    const size_t columns = csv_columns(r);
    data_csv csv;
    data_csv_init(&csv, text, size);
    base_error err;
    int got, rc = 0;
    for (;;) {
        if (data_csv_next(&csv, path, &got, &err) != BASE_OK) {
            const size_t tail = size - csv.record_start;
            if (csv.unterminated && line_feeds(text + csv.record_start, tail) <= 1) break; /* cut */
            fprintf(stderr, "vit classify: %s; cannot resume into it\n", err.message);
            rc = -1;
            break;
        }
        if (!got || !csv.terminated) break; /* the end, or a cut last row */
        const size_t record_end = (size_t)(csv.p - text);
        if (csv.record_start == 0) {
            if (record_end - csv.record_start != header_length ||
                memcmp(text, r->buffer, header_length) != 0) {
                fprintf(stderr, "vit classify: %s: its CSV columns differ from this run's (different "
                                "-k, --all-classes or labels?); cannot resume into it\n", path);
                rc = -1;
                break;
            }
        } else if (csv.num_fields != columns) {
            fprintf(stderr, "vit classify: %s:%d: a row of %zu fields, not %zu (damaged?); cannot "
                            "resume into it\n", path, csv.record_line, csv.num_fields, columns);
            rc = -1;
            break;
        } else {
            if (add_done_row(r, done, strndup(csv.fields[0], csv.lengths[0]), path) != 0) {
                rc = -1;
                break;
            }
        }
        *complete = record_end;
    }
    r->length = 0;
    data_csv_free(&csv);
    return rc;
}

/* The JSON lines of text: as read_csv_rows. A last line without its line
 * break is cut; a line that is not a row of ours refuses the file. */
static int read_jsonl_rows(cli_results *r, const char *path, const char *text, size_t size,
                           cli_string_set *done, size_t *complete) {
    char *line = NULL;
    int rc = 0, line_number = 0;
    for (const char *p = text, *end = text + size, *nl; p < end; p = nl + 1) {
        if (!(nl = memchr(p, '\n', (size_t)(end - p)))) break; /* cut last line */
        line_number++;
        char *grown = realloc(line, (size_t)(nl - p) + 1);
        if (!grown) {
            fprintf(stderr, "vit classify: out of memory reading %s\n", path);
            rc = -1;
            break;
        }
        line = grown;
        memcpy(line, p, (size_t)(nl - p));
        line[nl - p] = '\0';
        cJSON *obj = cJSON_ParseWithOpts(line, NULL, 1);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(obj, "path");
        const int is_row = cJSON_IsObject(obj) && cJSON_IsString(name);
        char *row_path = is_row ? cli_json_text_decode(name->valuestring) : NULL;
        cJSON_Delete(obj);
        if (!is_row) {
            fprintf(stderr, "vit classify: %s:%d: not a JSON row with a \"path\" (damaged?); cannot "
                            "resume into it\n", path, line_number);
            rc = -1;
            break;
        }
        if (add_done_row(r, done, row_path, path) != 0) {
            rc = -1;
            break;
        }
        *complete = (size_t)(nl + 1 - text);
    }
    free(line);
    return rc;
}

/* Reads the rows already in path (resume): their paths into done, sorted.
 * Cuts an incomplete last row. Returns -1 (message printed) when the file
 * cannot be used. */
static int read_done(cli_results *r, const char *path, cli_string_set *done) {
    const int fd = open(path, O_RDWR);
    if (fd < 0) {
        if (errno == ENOENT) return 0; /* nothing done yet */
        fprintf(stderr, "vit classify: %s: cannot open for --resume: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "vit classify: %s: not a regular file; cannot resume into it\n", path);
        close(fd);
        return -1;
    }
    const size_t size = (size_t)st.st_size;
    const char *text = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : "";
    if (text == MAP_FAILED) {
        fprintf(stderr, "vit classify: %s: cannot read for --resume: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    size_t complete = 0;
    int rc = r->format == CLI_RESULTS_CSV ? read_csv_rows(r, path, text, size, done, &complete)
                                          : read_jsonl_rows(r, path, text, size, done, &complete);
    if (size) munmap((void *)text, size);
    if (rc == 0 && size > complete) {
        if (ftruncate(fd, (off_t)complete) != 0) {
            fprintf(stderr, "vit classify: %s: cannot drop its incomplete last row: %s\n", path,
                    strerror(errno));
            rc = -1;
        } else {
            fprintf(stderr, "vit classify: %s: dropped an incomplete last row\n", path);
        }
    }
    r->header_written = complete > 0;
    close(fd);
    cli_string_set_sort(done);
    return rc;
}

/* ------------------------------------------------------------ run record */

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

#define FNV_START 0xcbf29ce484222325ULL
#define FINGERPRINT_SAMPLE 256 /* bytes hashed at each end of every tensor */

/* A cheap identity of the model's weights: every tensor's name, dtype and
 * shape, and its first and last bytes (a fine-tuned copy changes them in
 * every tensor it trains, a new head in the head), not the whole file. */
static int model_fingerprint(const char *path, uint64_t *hash, base_error *err) {
    weights_file *f;
    if (weights_open(path, &f, err) != BASE_OK) return -1;
    uint64_t h = FNV_START;
    for (size_t i = 0; i < weights_count(f); i++) {
        const weights_tensor *t = weights_at(f, i);
        h = fnv1a(h, t->name, strlen(t->name) + 1);
        h = fnv1a(h, &t->dtype, sizeof t->dtype);
        h = fnv1a(h, t->shape, sizeof t->shape[0] * (size_t)t->ndim);
        const size_t n = t->nbytes < FINGERPRINT_SAMPLE ? t->nbytes : FINGERPRINT_SAMPLE;
        h = fnv1a(h, t->data, n);
        h = fnv1a(h, (const char *)t->data + t->nbytes - n, n);
    }
    weights_close(f);
    *hash = h;
    return 0;
}

/* This run's record (NULL with a message printed on failure). */
static cJSON *make_record(const vit_model *model, int top_k, cli_results_format format,
                          const cli_run_settings *settings) {
    static const char *const ALL_CLASSES[] = {"no", "probs", "logits"};
    const char *weights = vit_model_weights_path(model);
    struct stat st;
    uint64_t fingerprint;
    base_error err;
    if (stat(weights, &st) != 0) {
        fprintf(stderr, "vit classify: %s: %s\n", weights, strerror(errno));
        return NULL;
    }
    if (model_fingerprint(weights, &fingerprint, &err) != 0) {
        fprintf(stderr, "vit classify: %s\n", err.message);
        return NULL;
    }
    uint64_t labels = FNV_START;
    const int num_labels = vit_model_num_labels(model);
    for (int c = 0; c < num_labels; c++) {
        const char *label = vit_model_label(model, c);
        labels = fnv1a(labels, label ? label : "", strlen(label ? label : "") + 1);
    }
    char fingerprint_hex[17], labels_hex[17], size_text[16];
    snprintf(fingerprint_hex, sizeof fingerprint_hex, "%016llx", (unsigned long long)fingerprint);
    snprintf(labels_hex, sizeof labels_hex, "%016llx", (unsigned long long)labels);
    snprintf(size_text, sizeof size_text, "%d", settings ? settings->size : 0);
    char *weights_text = cli_json_text(weights);
    cJSON *rec = cJSON_CreateObject();
    int ok = rec && weights_text && cJSON_AddStringToObject(rec, "written_by", "vit classify") &&
             cJSON_AddStringToObject(rec, "model", weights_text) &&
             cJSON_AddNumberToObject(rec, "model_bytes", (double)st.st_size) &&
             cJSON_AddStringToObject(rec, "model_fingerprint", fingerprint_hex) &&
             cJSON_AddNumberToObject(rec, "labels", num_labels) &&
             cJSON_AddStringToObject(rec, "labels_hash", labels_hex) &&
             cJSON_AddNumberToObject(rec, "top_k", top_k) &&
             cJSON_AddStringToObject(rec, "format", FORMAT_NAMES[format]) &&
             cJSON_AddStringToObject(rec, "size", settings && settings->size ? size_text : "native") &&
             cJSON_AddStringToObject(rec, "pos_resample", settings && settings->pos_resample
                                                              ? settings->pos_resample : "auto") &&
             cJSON_AddStringToObject(rec, "shard", settings && settings->shard ? settings->shard : "all") &&
             /* Only when given, so records of top-k runs stay as older vitc wrote them. */
             (!settings || !settings->all_classes ||
              cJSON_AddStringToObject(rec, "all_classes", ALL_CLASSES[settings->all_classes]));
    free(weights_text);
    if (!ok) {
        cJSON_Delete(rec);
        fprintf(stderr, "vit classify: out of memory\n");
        return NULL;
    }
    return rec;
}

/* The first setting in which the record `was` differs from `now`, as one
 * phrase for the message; NULL when they agree. */
static const char *record_difference(const cJSON *was, const cJSON *now, char *buf, size_t size) {
    static const struct {
        const char *key, *what;
    } FIELDS[] = {{"model_fingerprint", "model"}, {"model_bytes", "model"}, {"labels", "labels"},
                  {"labels_hash", "labels"},       {"top_k", "-k"},         {"format", "--format"},
                  {"size", "--size"},              {"pos_resample", "--pos-resample"},
                  {"shard", "--shard"},           {"all_classes", "--all-classes"}};
    for (size_t i = 0; i < sizeof FIELDS / sizeof *FIELDS; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(was, FIELDS[i].key);
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(now, FIELDS[i].key);
        if (a && cJSON_Compare(a, b, 1)) continue;
        if (!a && !b) continue; /* all_classes: neither run gave it */
        if (strcmp(FIELDS[i].what, "model") == 0) {
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(was, "model");
            snprintf(buf, size, "another model (%.300s; this run: %.300s)",
                     cJSON_IsString(m) ? m->valuestring : "?",
                     cJSON_GetObjectItemCaseSensitive(now, "model")->valuestring);
        } else if (strcmp(FIELDS[i].what, "labels") == 0) {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(was, "labels");
            const int had = cJSON_IsNumber(n) ? n->valueint : -1;
            const int has = cJSON_GetObjectItemCaseSensitive(now, "labels")->valueint;
            if (had != has) snprintf(buf, size, "other labels (%d of them; this run has %d)", had, has);
            else snprintf(buf, size, "other labels (as many, %d, named differently)", has);
        } else {
            char *x = a ? cJSON_PrintUnformatted(a) : NULL, *y = cJSON_PrintUnformatted(b);
            snprintf(buf, size, "%s %.100s (this run: %.100s)", FIELDS[i].what, x ? x : "(none)",
                     y ? y : "?");
            free(x);
            free(y);
        }
        return buf;
    }
    return NULL;
}

/* Whether path is where a run record belongs: a regular file or nothing
 * yet (not a device or pipe such as /dev/stdout). */
static int wants_record(const char *path, cli_results_format format) {
    struct stat st;
    if (format != CLI_RESULTS_CSV && format != CLI_RESULTS_JSONL && format != CLI_RESULTS_HF_JSONL)
        return 0;
    return stat(path, &st) != 0 ? errno == ENOENT : S_ISREG(st.st_mode);
}

/* With resume and rows in path, checks its record against rec. Returns -1
 * (message printed) when the file was written by another kind of run. */
static int check_record(const char *path, const char *record_path, const cJSON *rec) {
    struct stat st;
    if (stat(path, &st) != 0 || st.st_size == 0) return 0; /* nothing to resume */
    char *text = NULL;
    int missing = 0;
    base_error err;
    if (base_read_text_file(record_path, 1 << 20, &text, &missing, &err) != BASE_OK) {
        fprintf(stderr, "vit classify: %s\n", err.message);
        return -1;
    }
    if (missing) {
        fprintf(stderr, "vit classify: %s: warning: no run record %s beside it (written by an "
                        "older vitc?): resuming without checking it was made with this model, "
                        "labels, -k and format\n", path, record_path);
        return 0;
    }
    cJSON *was = cJSON_Parse(text);
    free(text);
    char why[1024];
    const char *difference = cJSON_IsObject(was) ? record_difference(was, rec, why, sizeof why)
                                                 : "a run record that cannot be read";
    cJSON_Delete(was);
    if (difference) {
        fprintf(stderr, "vit classify: %s: written with %s; cannot resume into it (remove it, or "
                        "-o another file)\n", path, difference);
        return -1;
    }
    return 0;
}

static int write_record(const char *record_path, const cJSON *rec) {
    char *text = cJSON_Print(rec);
    base_error err;
    int rc = 0;
    if (!text) {
        fprintf(stderr, "vit classify: out of memory\n");
        return -1;
    }
    const size_t n = strlen(text);
    text[n] = '\n'; /* replaces the NUL: the file ends with a line break */
    if (base_write_file_atomic(record_path, text, n + 1, &err) != BASE_OK) {
        fprintf(stderr, "vit classify: %s\n", err.message);
        rc = -1;
    }
    free(text);
    return rc;
}

int cli_results_open(cli_results *r, const char *path, cli_results_format format, int top_k,
                     const vit_model *model, const cli_run_settings *settings, int resume,
                     cli_string_set *done) {
    memset(r, 0, sizeof *r);
    r->format = format;
    r->top_k = top_k;
    r->model = model;
    r->display_name = path ? path : "standard output";
    r->all_classes = settings ? settings->all_classes : CLI_TOP_K;
    if (path && settings && settings->names_file) {
        if (!(r->names_path = cli_files_list_path(path)) || !(r->names = malloc(1))) {
            free(r->names_path);
            r->names_path = NULL;
            fprintf(stderr, "vit classify: out of memory\n");
            return -1;
        }
        r->names_capacity = 1;
    }
    if (path && format == CLI_RESULTS_NPY) {
        /* Written whole or not at all (renamed into place at close), as
         * features' arrays: rows in input order, NaN for a failed image. */
        const int classes = vit_model_output_size(model);
        const int64_t shape[2] = {(int64_t)settings->images, classes};
        base_error err;
        r->fd = -1;
        if (!(r->nan_row = malloc(sizeof(float) * (size_t)classes))) {
            fprintf(stderr, "vit classify: out of memory\n");
            return -1;
        }
        for (int c = 0; c < classes; c++) r->nan_row[c] = NAN;
        if (data_npy_open(path, DATA_NPY_F32, shape, 2, &r->npy, &err) != BASE_OK) {
            fprintf(stderr, "vit classify: %s\n", err.message);
            free(r->nan_row);
            free(r->names);
            free(r->names_path);
            r->nan_row = NULL;
            r->names = r->names_path = NULL;
            return -1;
        }
        return 0;
    }
    if (!path) {
        r->fd = STDOUT_FILENO;
    } else {
        cJSON *rec = NULL;
        char *record_path = NULL;
        if (wants_record(path, format)) {
            if (!(record_path = malloc(strlen(path) + sizeof ".run.json"))) {
                fprintf(stderr, "vit classify: out of memory\n");
                return -1;
            }
            sprintf(record_path, "%s.run.json", path);
            if (!(rec = make_record(model, top_k, format, settings))) {
                free(record_path);
                return -1;
            }
        }
        /* Checked before anything in the file is touched; written before
         * the first row, so every file with rows has the record of the run
         * that wrote them. */
        int rc = (resume && rec && check_record(path, record_path, rec) != 0) ||
                 (resume && read_done(r, path, done) != 0) || (rec && write_record(record_path, rec) != 0);
        cJSON_Delete(rec);
        free(record_path);
        if (!rc && (r->fd = open(path, O_WRONLY | O_CREAT | (resume ? O_APPEND : O_TRUNC), 0666)) < 0) {
            fprintf(stderr, "vit classify: %s: cannot write: %s\n", path, strerror(errno));
            rc = 1;
        }
        if (rc) { /* reading the rows may have used the row buffer */
            free(r->buffer);
            r->buffer = NULL;
            return -1;
        }
        r->owns_fd = 1;
    }
    if (format == CLI_RESULTS_CSV && !r->header_written) csv_header(r);
    return cli_results_flush(r);
}

/* The .npy into place (or dropped, when the run did not finish) and
 * OUT.files.jsonl beside it. */
static int close_npy(cli_results *r, int rc) {
    base_error err;
    if (rc != 0 || r->abandon || cli_stop_requested()) {
        base_atomic_abort(r->npy); /* nothing half-written is left */
    } else if (base_atomic_commit(r->npy, &err) != BASE_OK) {
        fprintf(stderr, "vit classify: %s\n", err.message);
        rc = -1;
    }
    r->npy = NULL;
    return rc;
}

int cli_results_close(cli_results *r) {
    if (r->format == CLI_RESULTS_JSON || r->format == CLI_RESULTS_HF)
        append(r, "%s]\n", r->rows ? "\n" : "[\n");
    int rc = cli_results_flush(r);
    if (r->npy) rc = close_npy(r, rc);
    /* The names of the rows, once the rows are there (not after a stop:
     * the .npy was dropped; an hf array closed early names its rows). */
    if (r->names_path && rc == 0 && !r->abandon && !(r->format == CLI_RESULTS_NPY && cli_stop_requested())) {
        base_error err;
        if (base_write_file_atomic(r->names_path, r->names, r->names_length, &err) != BASE_OK) {
            fprintf(stderr, "vit classify: %s\n", err.message);
            rc = -1;
        }
    }
    free(r->names);
    free(r->names_path);
    free(r->nan_row);
    r->names = r->names_path = NULL;
    r->nan_row = NULL;
    if (r->owns_fd && close(r->fd) != 0 && rc == 0) {
        fprintf(stderr, "vit classify: %s: cannot write: %s\n", r->display_name, strerror(errno));
        rc = -1;
    }
    free(r->buffer);
    r->buffer = NULL;
    return rc;
}

/* ------------------------------------------------------------ string set */

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cli_string_set_add(cli_string_set *set, char *owned) {
    if (set->count == set->capacity) {
        size_t capacity = set->capacity ? set->capacity * 2 : 1024;
        char **grown = realloc(set->items, capacity * sizeof *grown);
        if (!grown) return -1;
        set->items = grown;
        set->capacity = capacity;
    }
    set->items[set->count++] = owned;
    return 0;
}

void cli_string_set_sort(cli_string_set *set) {
    if (set->count) qsort(set->items, set->count, sizeof *set->items, compare_strings);
}

int cli_string_set_has(const cli_string_set *set, const char *text) {
    return set->count && bsearch(&text, set->items, set->count, sizeof *set->items, compare_strings) != NULL;
}

void cli_string_set_free(cli_string_set *set) {
    for (size_t i = 0; i < set->count; i++) free(set->items[i]);
    free(set->items);
    memset(set, 0, sizeof *set);
}
