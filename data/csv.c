/* csv.c — the program's one CSV reader (RFC 4180), used for labels CSVs
 * (eval --labels-csv) and for the rows --resume finds in a results file.
 * Strict on purpose: a results file with a damaged row in the middle must
 * be refused, not half-read, so every deviation is an error with its line. */
#include "data.h"

#include <stdlib.h>
#include <string.h>

void data_csv_init(data_csv *csv, const char *text, size_t len) {
    memset(csv, 0, sizeof *csv);
    csv->text = csv->p = text;
    csv->end = text + len;
    csv->line = 1;
}

void data_csv_free(data_csv *csv) {
    for (size_t i = 0; i < csv->capacity; i++) free(csv->fields[i]);
    free(csv->fields);
    free(csv->lengths);
    csv->fields = NULL;
    csv->lengths = NULL;
    csv->num_fields = csv->capacity = 0;
}

/* Appends a field of len bytes (from start, quotes still doubled when
 * quoted) to the record; -1 when out of memory. */
static int add_field(data_csv *csv, const char *start, size_t len, int quoted) {
    if (csv->num_fields == csv->capacity) {
        const size_t capacity = csv->capacity ? csv->capacity * 2 : 16;
        char **fields = realloc(csv->fields, capacity * sizeof *fields);
        if (fields) csv->fields = fields;
        size_t *lengths = realloc(csv->lengths, capacity * sizeof *lengths);
        if (lengths) csv->lengths = lengths;
        if (!fields || !lengths) return -1;
        for (size_t i = csv->capacity; i < capacity; i++) csv->fields[i] = NULL;
        csv->capacity = capacity;
    }
    char *out = realloc(csv->fields[csv->num_fields], len + 1);
    if (!out) return -1;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        out[n++] = start[i];
        if (quoted && start[i] == '"') i++; /* a doubled quote is one quote */
    }
    out[n] = '\0';
    csv->fields[csv->num_fields] = out;
    csv->lengths[csv->num_fields++] = n;
    return 0;
}

base_status data_csv_next(data_csv *csv, const char *name, int *got, base_error *err) {
    if (!name) name = "CSV";
    *got = 0;
    csv->num_fields = 0;
    csv->terminated = csv->unterminated = 0;
    const char *s = csv->p, *end = csv->end;
    if (s >= end) return BASE_OK;
    csv->record_line = csv->line;
    csv->record_start = (size_t)(s - csv->text);
    for (;;) { /* one field per pass */
        const char *start = s;
        size_t len;
        int quoted = 0;
        if (s < end && *s == '"') {
            quoted = 1;
            start = ++s;
            for (;; s++) {
                if (s >= end) {
                    csv->unterminated = 1;
                    csv->p = end;
                    return base_error_set(err, BASE_E_FORMAT,
                                         "%s:%d: a quoted field is never closed (the file ends inside it)",
                                         name, csv->record_line);
                }
                if (*s == '\n') csv->line++;
                if (*s != '"') continue;
                if (s + 1 < end && s[1] == '"') {
                    s++;
                    continue;
                }
                break;
            }
            len = (size_t)(s - start);
            s++; /* the closing quote */
            if (s < end && *s != ',' && *s != '\n' && *s != '\r')
                return base_error_set(err, BASE_E_FORMAT, "%s:%d: text after a closing quote", name,
                                     csv->line);
        } else {
            while (s < end && *s != ',' && *s != '\n' && *s != '\r') {
                if (*s == '"')
                    return base_error_set(err, BASE_E_FORMAT,
                                         "%s:%d: a quote inside a field that does not start with one",
                                         name, csv->line);
                s++;
            }
            len = (size_t)(s - start);
        }
        if (add_field(csv, start, len, quoted) != 0)
            return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", name);
        if (s < end && *s == ',') {
            s++;
            continue;
        }
        if (s < end && *s == '\r') {
            if (s + 1 < end && s[1] != '\n')
                return base_error_set(err, BASE_E_FORMAT, "%s:%d: a carriage return not followed by a "
                                     "line feed outside quotes", name, csv->line);
            s++;
        }
        if (s < end) { /* '\n' */
            s++;
            csv->line++;
            csv->terminated = 1;
        }
        csv->p = s;
        *got = 1;
        return BASE_OK;
    }
}
