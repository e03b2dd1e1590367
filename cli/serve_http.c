/* serve_http.c — multipart/form-data and Accept for vit serve (see
 * serve_http.h). */
#include "serve_http.h"

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------ tokens */

static const char *skip_space(const char *p) {
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

/* RFC 9110 tchar: what a token (a parameter name, a bare value) is made of. */
static int is_tchar(unsigned char c) {
    return c > 0x20 && c < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

/* A parameter value at p (a token or a quoted string with backslash
 * escapes) into out (size bytes, truncated to fit); returns the end, or
 * NULL when a quoted string is not closed. */
static const char *param_value(const char *p, const char *end, char *out, size_t size) {
    size_t n = 0;
    if (p < end && *p == '"') {
        for (p++; p < end && *p != '"'; p++) {
            if (*p == '\\' && p + 1 < end) p++;
            if (n + 1 < size) out[n++] = *p;
        }
        if (p >= end) return NULL;
        p++;
    } else {
        for (; p < end && *p != ';' && *p != ',' && *p != ' ' && *p != '\t' && *p != '\r'; p++)
            if (n + 1 < size) out[n++] = *p;
    }
    if (size) out[n] = '\0';
    return p;
}

/* Looks for parameter name (case-insensitive) in the "; name=value" list
 * from p to end; copies its value into out. 1 found, 0 not, -1 malformed. */
static int find_param(const char *p, const char *end, const char *name, char *out, size_t size) {
    const size_t name_len = strlen(name);
    while (p < end) {
        while (p < end && *p != ';') {
            if (*p == '"') { /* a quoted value not ours: skip it whole */
                char skip[2];
                if (!(p = param_value(p, end, skip, sizeof skip))) return -1;
                continue;
            }
            p++;
        }
        if (p >= end) return 0;
        p = skip_space(p + 1);
        const char *key = p;
        while (p < end && is_tchar((unsigned char)*p) && *p != '=') p++;
        const size_t key_len = (size_t)(p - key);
        p = skip_space(p);
        if (p >= end || *p != '=') continue;
        p = skip_space(p + 1);
        char value[512];
        const char *after = param_value(p, end, value, sizeof value);
        if (!after) return -1;
        if (key_len == name_len && strncasecmp(key, name, name_len) == 0) {
            snprintf(out, size, "%s", value);
            return 1;
        }
        p = after;
    }
    return 0;
}

int serve_form_boundary(const char *content_type, char *boundary) {
    static const char TYPE[] = "multipart/form-data";
    if (!content_type) return 0;
    const char *p = skip_space(content_type);
    if (strncasecmp(p, TYPE, sizeof TYPE - 1) != 0) return 0;
    p += sizeof TYPE - 1;
    const char *end = p + strlen(p);
    if (*skip_space(p) != ';' && *skip_space(p) != '\0') return 0; /* multipart/form-dataX */
    char value[SERVE_BOUNDARY_MAX + 2];
    if (find_param(p, end, "boundary", value, sizeof value) != 1) return -1;
    const size_t n = strlen(value);
    if (n == 0 || n > SERVE_BOUNDARY_MAX) return -1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)value[i] < 0x20 || (unsigned char)value[i] >= 0x7f) return -1;
    memcpy(boundary, value, n + 1);
    return 1;
}

/* ------------------------------------------------------------ counting parts */

void serve_form_counter_init(serve_form_counter *c, const char *boundary) {
    memset(c, 0, sizeof *c);
    const size_t n = strlen(boundary);
    memcpy(c->delimiter, "\r\n--", 4);
    memcpy(c->delimiter + 4, boundary, n);
    c->length = 4 + n;
    for (size_t i = 1, k = 0; i < c->length; i++) {
        while (k > 0 && c->delimiter[i] != c->delimiter[k]) k = c->fail[k - 1];
        if (c->delimiter[i] == c->delimiter[k]) k++;
        c->fail[i] = (unsigned char)k;
    }
    /* The body may open with the delimiter minus its line break: match as
     * if one came first. */
    c->matched = 2;
    c->after = -1;
}

size_t serve_form_counter_feed(serve_form_counter *c, const unsigned char *data, size_t n) {
    for (size_t i = 0; i < n && !c->closed; i++) {
        const unsigned char b = data[i];
        if (c->after >= 0 && c->after < 2) { /* the two bytes after a delimiter */
            c->dashes += b == '-';
            if (++c->after == 2) {
                if (c->dashes == 2) c->closed = 1;
                else c->parts++;
            }
        }
        while (c->matched > 0 && b != c->delimiter[c->matched]) c->matched = c->fail[c->matched - 1];
        if (b == c->delimiter[c->matched]) c->matched++;
        if (c->matched == c->length) {
            c->matched = c->fail[c->length - 1];
            c->after = 0;
            c->dashes = 0;
        }
    }
    return c->parts;
}

/* ------------------------------------------------------------ splitting */

/* The first needle (which starts with '\r') in [from, end). Candidates are
 * found with memchr: needles here begin "\r\n", so overlapping partial
 * matches cannot make the search quadratic. */
static const unsigned char *find(const unsigned char *from, const unsigned char *end,
                                 const void *needle, size_t n) {
    while (end - from >= (ptrdiff_t)n) {
        const unsigned char *r = memchr(from, '\r', (size_t)(end - from) - n + 1);
        if (!r) return NULL;
        if (memcmp(r, needle, n) == 0) return r;
        from = r + 1;
    }
    return NULL;
}

/* Reads one part's header block [p, end): its Content-Disposition's name
 * and filename (filename* as given, when there is no filename). */
static int part_headers(const char *p, const char *end, serve_form_part *part) {
    char field[512] = "", filename[512];
    int has_file = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = eol ? eol : end;
        static const char CD[] = "content-disposition:";
        if ((size_t)(line_end - p) > sizeof CD - 1 && strncasecmp(p, CD, sizeof CD - 1) == 0) {
            const char *v = p + sizeof CD - 1;
            if (find_param(v, line_end, "name", field, sizeof field) < 0) return -1;
            const int f = find_param(v, line_end, "filename", filename, sizeof filename);
            if (f < 0) return -1;
            has_file = f == 1;
            if (!has_file && find_param(v, line_end, "filename*", filename, sizeof filename) == 1) {
                char *quote = strstr(filename, "''"); /* charset''value */
                if (quote) memmove(filename, quote + 2, strlen(quote + 2) + 1);
                has_file = 1;
            }
        }
        p = line_end + 1;
    }
    part->field = strdup(field);
    part->filename = has_file ? strdup(filename) : NULL;
    return part->field && (!has_file || part->filename) ? 0 : -2;
}

/* The part after a delimiter at p: its headers and content, up to the next
 * delimiter (whose start is returned in *next). */
static int split_one(const unsigned char *p, const unsigned char *end, const unsigned char *delim,
                     size_t delim_len, serve_form_part *part, const unsigned char **next,
                     const unsigned char *body) {
    while (p < end && (*p == ' ' || *p == '\t')) p++; /* transport padding */
    if (p < end && *p == '\r') p++;
    if (p >= end || *p != '\n') return -1;
    p++;
    const unsigned char *headers_end, *content;
    if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
        headers_end = p;
        content = p + 2;
    } else {
        headers_end = find(p, end, "\r\n\r\n", 4);
        if (!headers_end) return -1;
        content = headers_end + 4;
    }
    *next = find(content, end, delim, delim_len);
    if (!*next) return -1;
    part->offset = (size_t)(content - body);
    part->length = (size_t)(*next - content);
    return part_headers((const char *)p, (const char *)headers_end, part);
}

int serve_form_split(const unsigned char *body, size_t n, const char *boundary, size_t max_parts,
                     serve_form_part **parts, size_t *count, char *message, size_t message_size) {
    unsigned char delim[SERVE_BOUNDARY_MAX + 4] = "\r\n--";
    const size_t blen = strlen(boundary), dlen = 4 + blen;
    memcpy(delim + 4, boundary, blen);
    const unsigned char *end = body + n, *p;
    *parts = NULL;
    *count = 0;
    if (n >= dlen - 2 && memcmp(body, delim + 2, dlen - 2) == 0) p = body + dlen - 2;
    else if ((p = find(body, end, delim, dlen))) p += dlen;
    else {
        snprintf(message, message_size, "malformed multipart/form-data body (its boundary never occurs)");
        return -1;
    }
    *parts = calloc(max_parts ? max_parts : 1, sizeof **parts);
    if (!*parts) {
        snprintf(message, message_size, "out of memory for the multipart/form-data parts");
        return -1;
    }
    while (!(end - p >= 2 && p[0] == '-' && p[1] == '-')) { /* until the closing delimiter */
        if (*count == max_parts) {
            snprintf(message, message_size, "more than %zu files in one request", max_parts);
            return -1;
        }
        const unsigned char *next;
        const int st = split_one(p, end, delim, dlen, &(*parts)[*count], &next, body);
        if (st != -1) (*count)++; /* what part_headers allocated is freed with the rest */
        if (st != 0) {
            snprintf(message, message_size, st == -2 ? "out of memory for the multipart/form-data parts"
                                                     : "malformed or truncated multipart/form-data body");
            return -1;
        }
        p = next + dlen;
    }
    return 0;
}

void serve_form_parts_free(serve_form_part *parts, size_t count) {
    for (size_t i = 0; parts && i < count; i++) {
        free(parts[i].field);
        free(parts[i].filename);
    }
    free(parts);
}

/* ------------------------------------------------------------ Accept */

/* A q-value ("0", "0.5", "1.000") in thousandths; -1 when malformed. */
static int parse_q(const char *v) {
    if (v[0] != '0' && v[0] != '1') return -1;
    int q = (v[0] - '0') * 1000, scale = 100;
    if (v[1] == '\0') return q;
    if (v[1] != '.') return -1;
    for (const char *d = v + 2; *d; d++, scale /= 10) {
        if (!isdigit((unsigned char)*d) || scale == 0) return -1;
        q += (*d - '0') * scale;
    }
    return q <= 1000 ? q : -1;
}

/* How specifically the range type/subtype matches want ("application/x"):
 * 3 exactly, 2 by type/star, 1 by star/star, 0 not at all. */
static int specificity(const char *range, size_t n, const char *want) {
    const char *slash = memchr(range, '/', n);
    if (!slash) return 0;
    const size_t tlen = (size_t)(slash - range), slen = n - tlen - 1;
    const char *wslash = strchr(want, '/');
    const size_t wtlen = (size_t)(wslash - want);
    if (tlen == 1 && range[0] == '*') return slen == 1 && slash[1] == '*' ? 1 : 0;
    if (tlen != wtlen || strncasecmp(range, want, tlen) != 0) return 0;
    if (slen == 1 && slash[1] == '*') return 2;
    return slen == strlen(wslash + 1) && strncasecmp(slash + 1, wslash + 1, slen) == 0 ? 3 : 0;
}

/* The q-value (thousandths) Accept gives want: from its most specific
 * matching range, 0 when none matches. */
static int accept_q(const char *accept, const char *want) {
    int best_spec = 0, best_q = 0;
    for (const char *p = accept; *p;) {
        p = skip_space(p);
        const char *item_end = p + strcspn(p, ",");
        const char *range_end = p;
        while (range_end < item_end && *range_end != ';' && *range_end != ' ' && *range_end != '\t')
            range_end++;
        int q = 1000;
        char value[16];
        const int has_q = find_param(range_end, item_end, "q", value, sizeof value);
        if (has_q == 1) q = parse_q(value);
        const int spec = specificity(p, (size_t)(range_end - p), want);
        if (q >= 0 && spec > 0 && (spec > best_spec || (spec == best_spec && q > best_q))) {
            best_spec = spec;
            best_q = q;
        }
        p = *item_end ? item_end + 1 : item_end;
    }
    return best_q;
}

serve_answer_type serve_accept(const char *accept) {
    if (!accept || !*skip_space(accept)) return SERVE_ANSWER_JSON;
    const int json = accept_q(accept, "application/json");
    const int npy = accept_q(accept, "application/octet-stream");
    if (json == 0 && npy == 0) return SERVE_ANSWER_NONE;
    return npy > json ? SERVE_ANSWER_NPY : SERVE_ANSWER_JSON;
}
