/* labels.c — the two label-list formats users hand in: one class name per
 * line (--labels) and labelled-file CSVs (eval --labels-csv). Both are
 * parsed from memory so they can be tested and fuzzed without files. */
#include "data.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void data_labels_free(char **labels, int count) {
    if (!labels) return;
    for (int i = 0; i < count; i++) free(labels[i]);
    free(labels);
}

base_status data_labels_parse(const char *text, const char *name, int max_labels, char ***labels,
                             int *count, base_error *err) {
    if (!name) name = "labels";
    if (!labels || !count || !text) return base_error_set(err, BASE_E_ARG, "%s: missing argument", name);
    *labels = NULL;
    *count = 0;
    /* A UTF-8 byte-order mark (Windows editors write one) is not part of
     * the first label. */
    if (strncmp(text, "\xEF\xBB\xBF", 3) == 0) text += 3;
    int n = 0;
    for (const char *p = text; *p;) {
        if (n >= max_labels)
            return base_error_set(err, BASE_E_LIMIT, "%s: more than the limit of %d labels", name,
                                 max_labels);
        n++;
        const char *end = strchr(p, '\n');
        if (!end) break;
        p = end + 1;
    }
    char **list = calloc((size_t)n + 1, sizeof *list);
    if (!list) return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", name);
    const char *p = text;
    for (int i = 0; i < n; i++) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const size_t advance = end ? len + 1 : len;
        if (len && p[len - 1] == '\r') len--;
        if (!(list[i] = strndup(p, len))) {
            data_labels_free(list, i);
            return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", name);
        }
        p += advance;
    }
    *labels = list;
    *count = n;
    return BASE_OK;
}

void data_labelled_files_free(data_labelled_files *list) {
    if (!list) return;
    for (size_t i = 0; i < list->count; i++) free(list->files[i]);
    free(list->files);
    free(list->classes);
    memset(list, 0, sizeof *list);
}

int data_labelled_files_add(data_labelled_files *list, const char *file, int class_index) {
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? list->capacity * 2 : 1024;
        char **files = realloc(list->files, capacity * sizeof *files);
        if (files) list->files = files;
        int *classes = realloc(list->classes, capacity * sizeof *classes);
        if (classes) list->classes = classes;
        if (!files || !classes) return -1;
        list->capacity = capacity;
    }
    if (!(list->files[list->count] = strdup(file))) return -1;
    list->classes[list->count++] = class_index;
    return 0;
}

base_status data_labels_csv_parse(const char *text, size_t len, const char *name, int num_classes,
                                 data_labelled_files *out, base_error *err) {
    if (!name) name = "labels CSV";
    if (!out || (!text && len)) return base_error_set(err, BASE_E_ARG, "%s: missing argument", name);
    const size_t before = out->count;
    data_csv csv;
    data_csv_init(&csv, text, len);
    base_status st = BASE_OK;
    int got;
    while (st == BASE_OK && (st = data_csv_next(&csv, name, &got, err)) == BASE_OK && got) {
        const int line = csv.record_line;
        if (csv.num_fields == 1 && csv.lengths[0] == 0) continue; /* blank line */
        /* Fields after the second are ignored. */
        char *file = csv.fields[0], *index_text = csv.num_fields > 1 ? csv.fields[1] : NULL;
        char *stop;
        errno = 0;
        long index = index_text ? strtol(index_text, &stop, 10) : 0;
        if (!index_text || !*index_text || stop == index_text || *stop || errno) {
            for (char *c = index_text; c && *c; c++) /* one line in the message */
                if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
            if (line != 1) /* else a header row */
                st = base_error_set(err, BASE_E_FORMAT, "%s:%d: second column '%.60s' is not a class index",
                                   name, line, index_text ? index_text : "");
        } else if (index < 0 || index >= num_classes) {
            st = base_error_set(err, BASE_E_FORMAT, "%s:%d: class index %ld is outside 0..%d of the model",
                               name, line, index, num_classes - 1);
        } else if (csv.lengths[0] != strlen(file)) {
            st = base_error_set(err, BASE_E_FORMAT, "%s:%d: file name contains a NUL byte", name, line);
        } else if (data_labelled_files_add(out, file, (int)index) != 0) {
            st = base_error_set(err, BASE_E_NOMEM, "%s: out of memory", name);
        }
    }
    data_csv_free(&csv);
    if (st != BASE_OK) return st;
    if (out->count == before) return base_error_set(err, BASE_E_FORMAT, "%s: no rows", name);
    return BASE_OK;
}
