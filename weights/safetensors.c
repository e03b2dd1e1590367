/* safetensors.c — validating zero-copy reader and atomic writer.
 *
 * Format: u64 little-endian header length N, N bytes of UTF-8 JSON (possibly
 * padded with spaces), then the data section. The JSON maps tensor names to
 * {"dtype", "shape", "data_offsets": [begin, end]} with offsets relative to
 * the data section, plus an optional "__metadata__" object of strings.
 *
 * Alignment: the format does not require tensors to start at an offset that
 * is a multiple of their element size, and real files (odd-sized F16 tensors
 * followed by F32 ones, unpadded headers) break alignment. Such files are
 * accepted. weights_tensor.data may therefore be misaligned for its dtype:
 * never dereference it as float* / uint16_t*; use weights_to_f32 (which reads
 * through memcpy / unaligned loads) or memcpy.
 */
#include "weights.h"

#include "base_io.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader assumes a little-endian host"
#endif

/* JSON numbers arrive as doubles; integers from 2^53 on may already have
 * been rounded by the parser, so they cannot be trusted. */
#define MAX_EXACT_JSON_INT 9007199254740992.0 /* 2^53 */

#define HEADER_LEN_BYTES 8
#define METADATA_KEY "__metadata__"

struct weights_file {
    char *path;
    const void *map;
    size_t map_size;
    int owns_map; /* mapped by weights_open (unmapped on close), not caller memory */
    weights_tensor *tensors;               /* file-offset order */
    const weights_tensor **tensors_by_name; /* sorted by name, for bsearch */
    size_t n_tensors;
    const char **meta_keys;
    const char **meta_values;
    size_t n_meta;
    char *strings; /* one block holding every tensor name and metadata string */
};

/* ------------------------------------------------------------------ dtypes */

static const struct {
    const char *name;
    size_t size;
} dtype_info[] = {
    [WEIGHTS_F32] = {"F32", 4},  [WEIGHTS_F16] = {"F16", 2}, [WEIGHTS_BF16] = {"BF16", 2},
    [WEIGHTS_F64] = {"F64", 8},  [WEIGHTS_I8] = {"I8", 1},   [WEIGHTS_U8] = {"U8", 1},
    [WEIGHTS_I16] = {"I16", 2},  [WEIGHTS_I32] = {"I32", 4}, [WEIGHTS_I64] = {"I64", 8},
    [WEIGHTS_BOOL] = {"BOOL", 1},
};
#define DTYPE_COUNT (sizeof dtype_info / sizeof dtype_info[0])

static bool dtype_valid(weights_dtype dtype) {
    return (unsigned)dtype < DTYPE_COUNT;
}

size_t weights_dtype_size(weights_dtype dtype) {
    return dtype_valid(dtype) ? dtype_info[dtype].size : 0;
}

const char *weights_dtype_name(weights_dtype dtype) {
    return dtype_valid(dtype) ? dtype_info[dtype].name : "?";
}

static bool dtype_parse(const char *name, weights_dtype *out) {
    for (size_t i = 0; i < DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (weights_dtype)i;
            return true;
        }
    }
    return false;
}

/* Spellings the safetensors spec defines that this reader does not handle,
 * so a file using them is reported as unsupported rather than malformed. */
static bool dtype_in_spec(const char *name) {
    static const char *const others[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2",
                                         "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        if (strcmp(name, others[i]) == 0) return true;
    return false;
}

/* ---------------------------------------------------------------- messages */

/* Names come from untrusted files: keep messages on one line and short. */
static const char *printable_name(const char *s, char *buf, size_t size) {
    const size_t keep = size - 4; /* room for "..." and NUL */
    size_t n = 0;
    for (; s[n] && n < keep; n++) {
        unsigned char c = (unsigned char)s[n];
        buf[n] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (s[n]) {
        while (n > 0 && ((unsigned char)buf[n] & 0xC0) == 0x80) n--; /* whole UTF-8 chars */
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

__attribute__((format(printf, 5, 6))) static base_status
tensor_error(base_error *err, base_status code, const char *path, const char *tensor,
             const char *fmt, ...) {
    char problem[512], shown[100];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(problem, sizeof problem, fmt, ap);
    va_end(ap);
    return base_error_set(err, code, "%s: tensor '%s': %s", path,
                         printable_name(tensor, shown, sizeof shown), problem);
}

static const char *errno_text(int errnum, char *buf, size_t size) {
    if (strerror_r(errnum, buf, size) != 0) snprintf(buf, size, "error %d", errnum);
    return buf;
}

static base_status io_error(base_error *err, const char *path, const char *what, int errnum) {
    char text[128];
    return base_error_set(err, BASE_E_IO, "%s: %s: %s", path, what,
                         errno_text(errnum, text, sizeof text));
}

/* ------------------------------------------------------------ file mapping */

static base_status map_file(const char *path, void **map, size_t *size, base_error *err) {
    /* O_NONBLOCK: open(2) of a FIFO would otherwise wait for a writer
     * before the regular-file check below could refuse it. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return io_error(err, path, "cannot open", errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return io_error(err, path, "cannot stat", e);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return base_error_set(err, BASE_E_IO, "%s: not a regular file", path);
    }
    if (st.st_size < HEADER_LEN_BYTES) {
        close(fd);
        return base_error_set(err, BASE_E_FORMAT,
                             "%s: file is %lld bytes, too short for the 8-byte header length",
                             path, (long long)st.st_size);
    }
    *size = (size_t)st.st_size;
    *map = mmap(NULL, *size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file contents reachable */
    if (*map == MAP_FAILED) {
        *map = NULL;
        return io_error(err, path, "cannot map", e);
    }
    return BASE_OK;
}

static uint64_t read_u64_le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ---------------------------------------------------------- header parsing */

/* What every check of the header needs: where the data section is and
 * where to report. */
typedef struct parse_ctx {
    const char *path;
    size_t data_size;
    const unsigned char *data;
    size_t max_tensors;
    base_error *err;
} parse_ctx;

typedef enum { INT_OK, INT_NOT_NUMBER, INT_NOT_INTEGER, INT_NEGATIVE, INT_TOO_LARGE } int_check;

static int_check json_exact_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return INT_NOT_NUMBER;
    double d = item->valuedouble;
    if (d != d) return INT_NOT_INTEGER; /* NaN */
    if (d < 0) return INT_NEGATIVE;
    if (d >= MAX_EXACT_JSON_INT) return INT_TOO_LARGE;
    uint64_t v = (uint64_t)d;
    if ((double)v != d) return INT_NOT_INTEGER;
    *out = v;
    return INT_OK;
}

/* "-3, which is negative", for messages. */
static const char *describe_int_problem(const cJSON *item, int_check c, char *buf, size_t size) {
    if (c == INT_NOT_NUMBER) {
        snprintf(buf, size, "not a number");
        return buf;
    }
    const char *why = c == INT_NEGATIVE    ? "negative"
                      : c == INT_TOO_LARGE ? "too large (2^53 or more)"
                                           : "not an integer";
    snprintf(buf, size, "%.17g, which is %s", item->valuedouble, why);
    return buf;
}

/* The value of key in entry, required to exist exactly once. */
static const cJSON *entry_field(const parse_ctx *ctx, const cJSON *entry, const char *key) {
    const cJSON *found = NULL;
    for (const cJSON *c = entry->child; c; c = c->next) {
        if (c->string && strcmp(c->string, key) == 0) {
            if (found) {
                tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, entry->string,
                             "\"%s\" appears twice", key);
                return NULL;
            }
            found = c;
        }
    }
    if (!found)
        tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, entry->string, "missing \"%s\"", key);
    return found;
}

static base_status parse_dtype(const parse_ctx *ctx, const cJSON *entry, weights_dtype *dtype) {
    const cJSON *item = entry_field(ctx, entry, "dtype");
    if (!item) return BASE_E_FORMAT;
    const char *name = entry->string;
    if (!cJSON_IsString(item))
        return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, name, "\"dtype\" is not a string");
    if (dtype_parse(item->valuestring, dtype)) return BASE_OK;
    char shown[40];
    printable_name(item->valuestring, shown, sizeof shown);
    if (dtype_in_spec(item->valuestring))
        return tensor_error(ctx->err, BASE_E_UNSUPPORTED, ctx->path, name,
                            "dtype \"%s\" is not supported", shown);
    return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, name, "unknown dtype \"%s\"", shown);
}

static base_status parse_shape(const parse_ctx *ctx, const cJSON *entry, weights_tensor *t) {
    const cJSON *item = entry_field(ctx, entry, "shape");
    if (!item) return BASE_E_FORMAT;
    const char *name = entry->string;
    if (!cJSON_IsArray(item))
        return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, name, "\"shape\" is not an array");
    int ndim = cJSON_GetArraySize(item);
    if (ndim > WEIGHTS_MAX_DIMS)
        return tensor_error(ctx->err, BASE_E_LIMIT, ctx->path, name,
                            "shape has %d dimensions, more than the %d supported", ndim,
                            WEIGHTS_MAX_DIMS);
    int i = 0;
    for (const cJSON *dim = item->child; dim; dim = dim->next, i++) {
        uint64_t v;
        int_check c = json_exact_uint(dim, &v);
        char why[96];
        if (c != INT_OK)
            return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, name,
                                "shape[%d] is %s; dimensions must be non-negative integers", i,
                                describe_int_problem(dim, c, why, sizeof why));
        t->shape[i] = (int64_t)v;
    }
    t->ndim = ndim;
    return BASE_OK;
}

/* numel and nbytes, refusing any product that does not fit in size_t. */
static base_status compute_sizes(const parse_ctx *ctx, const char *name, weights_tensor *t) {
    size_t numel = 1;
    bool has_zero = false;
    for (int i = 0; i < t->ndim; i++) has_zero |= t->shape[i] == 0;
    if (has_zero) {
        numel = 0;
    } else {
        for (int i = 0; i < t->ndim; i++) {
            size_t d = (size_t)t->shape[i];
            if (numel > SIZE_MAX / d)
                return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, name,
                                    "element count of the shape overflows");
            numel *= d;
        }
    }
    size_t elem = weights_dtype_size(t->dtype);
    if (numel > SIZE_MAX / elem)
        return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, name,
                            "byte size of the shape overflows");
    t->numel = numel;
    t->nbytes = numel * elem;
    return BASE_OK;
}

/* "[2, 3]" */
static const char *format_shape(const weights_tensor *t, char *buf, size_t size) {
    size_t n = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < t->ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    if (n < size) snprintf(buf + n, size - n, "]");
    return buf;
}

static base_status parse_offsets(const parse_ctx *ctx, const cJSON *entry, weights_tensor *t) {
    const cJSON *item = entry_field(ctx, entry, "data_offsets");
    if (!item) return BASE_E_FORMAT;
    const char *name = entry->string;
    if (!cJSON_IsArray(item) || cJSON_GetArraySize(item) != 2)
        return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, name,
                            "\"data_offsets\" is not an array [begin, end]");
    uint64_t range[2];
    int i = 0;
    for (const cJSON *c = item->child; c; c = c->next, i++) {
        int_check check = json_exact_uint(c, &range[i]);
        char why[96];
        if (check != INT_OK)
            return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, name,
                                "data_offsets[%d] is %s", i,
                                describe_int_problem(c, check, why, sizeof why));
    }
    uint64_t begin = range[0], end = range[1];
    if (begin > end)
        return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, name,
                            "byte range [%llu, %llu) ends before it begins",
                            (unsigned long long)begin, (unsigned long long)end);
    if (end > ctx->data_size)
        return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, name,
                            "byte range [%llu, %llu) lies outside the data section (%zu bytes)",
                            (unsigned long long)begin, (unsigned long long)end, ctx->data_size);
    if (end - begin != t->nbytes) {
        char shape[WEIGHTS_MAX_DIMS * 18 + 3];
        return tensor_error(ctx->err, BASE_E_SHAPE, ctx->path, name,
                            "%s %s needs %zu bytes but byte range [%llu, %llu) holds %llu",
                            weights_dtype_name(t->dtype), format_shape(t, shape, sizeof shape),
                            t->nbytes, (unsigned long long)begin, (unsigned long long)end,
                            (unsigned long long)(end - begin));
    }
    t->data = ctx->data + begin;
    return BASE_OK;
}

static base_status parse_tensor(const parse_ctx *ctx, const cJSON *entry, const char *name,
                               weights_tensor *t) {
    if (!cJSON_IsObject(entry))
        return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, entry->string,
                            "entry is not a JSON object");
    base_status s;
    memset(t, 0, sizeof *t);
    t->name = name;
    if ((s = parse_dtype(ctx, entry, &t->dtype)) != BASE_OK) return s;
    if ((s = parse_shape(ctx, entry, t)) != BASE_OK) return s;
    if ((s = compute_sizes(ctx, entry->string, t)) != BASE_OK) return s;
    return parse_offsets(ctx, entry, t);
}

static size_t offset_of(const parse_ctx *ctx, const weights_tensor *t) {
    return (size_t)((const unsigned char *)t->data - ctx->data);
}

/* ------------------------------------------------------ building the file */

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A string that occurs twice in names (after sorting a copy), or NULL. Sets
 * *nomem when the copy cannot be made. */
static const char *find_duplicate(const char **names, size_t n, bool *nomem) {
    *nomem = false;
    if (n < 2) return NULL;
    const char **sorted = malloc(n * sizeof *sorted);
    if (!sorted) {
        *nomem = true;
        return NULL;
    }
    memcpy(sorted, names, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, compare_strings);
    const char *dup = NULL;
    for (size_t i = 1; i < n && !dup; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) dup = sorted[i];
    free(sorted);
    return dup;
}

static char *copy_string(char **cursor, const char *s) {
    size_t n = strlen(s) + 1;
    char *dst = memcpy(*cursor, s, n);
    *cursor += n;
    return dst;
}

static base_status parse_metadata(const parse_ctx *ctx, const cJSON *meta, weights_file *f,
                                 char **cursor) {
    if (cJSON_IsNull(meta)) return BASE_OK;
    if (!cJSON_IsObject(meta))
        return base_error_set(ctx->err, BASE_E_FORMAT, "%s: \"%s\" is not a JSON object",
                             ctx->path, METADATA_KEY);
    size_t n = (size_t)cJSON_GetArraySize(meta);
    f->meta_keys = calloc(n ? n : 1, sizeof *f->meta_keys);
    f->meta_values = calloc(n ? n : 1, sizeof *f->meta_values);
    if (!f->meta_keys || !f->meta_values)
        return base_error_set(ctx->err, BASE_E_NOMEM, "%s: out of memory for metadata", ctx->path);
    for (const cJSON *c = meta->child; c; c = c->next) {
        char shown[100];
        printable_name(c->string, shown, sizeof shown);
        if (!cJSON_IsString(c))
            return base_error_set(ctx->err, BASE_E_FORMAT,
                                 "%s: metadata value of '%s' is not a string", ctx->path, shown);
        f->meta_keys[f->n_meta] = copy_string(cursor, c->string);
        f->meta_values[f->n_meta] = copy_string(cursor, c->valuestring);
        f->n_meta++;
    }
    bool nomem;
    const char *dup = find_duplicate(f->meta_keys, f->n_meta, &nomem);
    char shown[100];
    if (nomem)
        return base_error_set(ctx->err, BASE_E_NOMEM, "%s: out of memory for metadata", ctx->path);
    if (dup)
        return base_error_set(ctx->err, BASE_E_FORMAT, "%s: metadata key '%s' appears twice",
                             ctx->path, printable_name(dup, shown, sizeof shown));
    return BASE_OK;
}

/* Bytes needed to copy every name and metadata string out of the JSON tree,
 * and the number of tensor entries. */
static base_status measure_header(const parse_ctx *ctx, const cJSON *root, size_t *n_tensors,
                                 size_t *string_bytes) {
    size_t count = 0, bytes = 0, n_meta_objects = 0;
    for (const cJSON *c = root->child; c; c = c->next) {
        bytes += strlen(c->string) + 1;
        if (strcmp(c->string, METADATA_KEY) != 0) {
            count++;
            continue;
        }
        if (++n_meta_objects > 1)
            return base_error_set(ctx->err, BASE_E_FORMAT, "%s: \"%s\" appears twice", ctx->path,
                                 METADATA_KEY);
        for (const cJSON *m = c->child; m; m = m->next) {
            bytes += strlen(m->string ? m->string : "") + 1;
            bytes += (cJSON_IsString(m) ? strlen(m->valuestring) : 0) + 1;
        }
    }
    if (count > ctx->max_tensors)
        return base_error_set(ctx->err, BASE_E_LIMIT,
                             "%s: %zu tensors exceed the limit of %zu tensors per checkpoint",
                             ctx->path, count, ctx->max_tensors);
    *n_tensors = count;
    *string_bytes = bytes;
    return BASE_OK;
}

static int compare_by_offset(const void *a, const void *b) {
    const weights_tensor *x = a, *y = b;
    const unsigned char *px = x->data, *py = y->data;
    if (px != py) return px < py ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int compare_by_name(const void *a, const void *b) {
    const weights_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* With tensors in offset order, any overlap shows up between a tensor and
 * the last non-empty one before it. Empty tensors share no bytes. */
static base_status check_overlaps(const parse_ctx *ctx, const weights_file *f) {
    const weights_tensor *prev = NULL;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const weights_tensor *t = &f->tensors[i];
        if (t->nbytes == 0) continue;
        if (prev && offset_of(ctx, t) < offset_of(ctx, prev) + prev->nbytes) {
            char shown[100];
            return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, t->name,
                                "byte range [%zu, %zu) overlaps tensor '%s' [%zu, %zu)",
                                offset_of(ctx, t), offset_of(ctx, t) + t->nbytes,
                                printable_name(prev->name, shown, sizeof shown),
                                offset_of(ctx, prev), offset_of(ctx, prev) + prev->nbytes);
        }
        prev = t;
    }
    return BASE_OK;
}

static base_status index_names(const parse_ctx *ctx, weights_file *f) {
    f->tensors_by_name = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *f->tensors_by_name);
    if (!f->tensors_by_name)
        return base_error_set(ctx->err, BASE_E_NOMEM, "%s: out of memory for the name index",
                             ctx->path);
    for (size_t i = 0; i < f->n_tensors; i++) f->tensors_by_name[i] = &f->tensors[i];
    qsort(f->tensors_by_name, f->n_tensors, sizeof *f->tensors_by_name, compare_by_name);
    /* cJSON keeps duplicate object keys, so a repeated name surfaces here. */
    for (size_t i = 1; i < f->n_tensors; i++)
        if (strcmp(f->tensors_by_name[i - 1]->name, f->tensors_by_name[i]->name) == 0)
            return tensor_error(ctx->err, BASE_E_FORMAT, ctx->path, f->tensors_by_name[i]->name,
                                "name appears twice in the header");
    return BASE_OK;
}

static base_status build_from_json(const parse_ctx *ctx, const cJSON *root, weights_file *f) {
    size_t n_tensors = 0, string_bytes = 0;
    base_status s = measure_header(ctx, root, &n_tensors, &string_bytes);
    if (s != BASE_OK) return s;
    f->strings = malloc(string_bytes ? string_bytes : 1);
    f->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *f->tensors);
    if (!f->strings || !f->tensors)
        return base_error_set(ctx->err, BASE_E_NOMEM, "%s: out of memory for %zu tensors",
                             ctx->path, n_tensors);
    char *cursor = f->strings;
    for (const cJSON *c = root->child; c; c = c->next) {
        if (strcmp(c->string, METADATA_KEY) == 0) {
            s = parse_metadata(ctx, c, f, &cursor);
        } else {
            s = parse_tensor(ctx, c, copy_string(&cursor, c->string), &f->tensors[f->n_tensors]);
            f->n_tensors++;
        }
        if (s != BASE_OK) return s;
    }
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, compare_by_offset);
    if ((s = check_overlaps(ctx, f)) != BASE_OK) return s;
    return index_names(ctx, f);
}

static bool only_json_whitespace(const char *p, const char *end) {
    for (; p < end; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') return false;
    return true;
}

static base_status parse_header(weights_file *f, const base_limits *limits, base_error *err) {
    const base_limits lim = base_limits_resolve(limits);
    const unsigned char *bytes = f->map;
    if (f->map_size < HEADER_LEN_BYTES)
        return base_error_set(err, BASE_E_FORMAT,
                             "%s: file is %zu bytes, too short for the 8-byte header length",
                             f->path, f->map_size);
    uint64_t header_len = read_u64_le(bytes);
    size_t available = f->map_size - HEADER_LEN_BYTES;
    if (header_len > lim.max_header_bytes)
        return base_error_set(err, BASE_E_LIMIT,
                             "%s: header length %llu exceeds the limit of %zu bytes", f->path,
                             (unsigned long long)header_len, lim.max_header_bytes);
    if (header_len > available)
        return base_error_set(err, BASE_E_FORMAT,
                             "%s: header length %llu exceeds the %zu bytes after it", f->path,
                             (unsigned long long)header_len, available);
    const char *json = (const char *)bytes + HEADER_LEN_BYTES;
    const char *json_end = json + header_len;
    /* The header is JSON like any other: same nesting cap (its size has its
     * own limit above). */
    base_limits depth_only = lim;
    depth_only.max_json_bytes = (size_t)header_len;
    base_status depth = base_json_check_limits(json, (size_t)header_len, f->path, &depth_only, err);
    if (depth != BASE_OK) return depth;
    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, (size_t)header_len, &parse_end, false);
    if (!root) {
        size_t at = parse_end ? (size_t)(parse_end - json) : 0;
        return base_error_set(err, BASE_E_FORMAT, "%s: header is not valid JSON (near byte %zu of %llu)",
                             f->path, at, (unsigned long long)header_len);
    }
    parse_ctx ctx = {
        .path = f->path,
        .data_size = available - (size_t)header_len,
        .data = bytes + HEADER_LEN_BYTES + header_len,
        .max_tensors = lim.max_tensors,
        .err = err,
    };
    base_status s;
    if (!only_json_whitespace(parse_end, json_end))
        s = base_error_set(err, BASE_E_FORMAT, "%s: header has bytes after the JSON value (at byte %zu)",
                          f->path, (size_t)(parse_end - json));
    else if (!cJSON_IsObject(root))
        s = base_error_set(err, BASE_E_FORMAT, "%s: header JSON is not an object", f->path);
    else
        s = build_from_json(&ctx, root, f);
    cJSON_Delete(root);
    return s;
}

/* Opens from a file (bytes NULL: map path) or from caller memory. */
static base_status open_common(const char *path, const void *bytes, size_t size,
                              const base_limits *limits, weights_file **out, base_error *err) {
    if (!out) return base_error_set(err, BASE_E_ARG, "%s: weights_open needs an output pointer",
                                   path ? path : "(null)");
    *out = NULL;
    if (!path) return base_error_set(err, BASE_E_ARG, "weights_open: path is NULL");
    weights_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", path);
    }
    base_status s = BASE_OK;
    if (bytes) {
        f->map = bytes;
        f->map_size = size;
    } else {
        void *map = NULL;
        s = map_file(path, &map, &f->map_size, err);
        f->map = map;
        f->owns_map = map != NULL;
    }
    if (s == BASE_OK) s = parse_header(f, limits, err);
    if (s != BASE_OK) {
        weights_close(f);
        return s;
    }
    *out = f;
    return BASE_OK;
}

base_status weights_open(const char *path, weights_file **out, base_error *err) {
    return open_common(path, NULL, 0, NULL, out, err);
}

base_status weights_open_limited(const char *path, const base_limits *limits, weights_file **out,
                                base_error *err) {
    return open_common(path, NULL, 0, limits, out, err);
}

base_status weights_open_memory(const void *bytes, size_t size, const char *name,
                               const base_limits *limits, weights_file **out, base_error *err) {
    if (!name) name = "(memory)";
    if (!bytes) {
        if (out) *out = NULL;
        return base_error_set(err, BASE_E_ARG, "%s: weights_open_memory given no bytes", name);
    }
    return open_common(name, bytes, size, limits, out, err);
}

void weights_close(weights_file *f) {
    if (!f) return;
    if (f->owns_map) munmap((void *)f->map, f->map_size);
    free(f->tensors);
    free(f->tensors_by_name);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->strings);
    free(f->path);
    free(f);
}

/* ---------------------------------------------------------------- queries */

const char *weights_path(const weights_file *f) {
    return f ? f->path : NULL;
}

size_t weights_count(const weights_file *f) {
    return f ? f->n_tensors : 0;
}

const weights_tensor *weights_at(const weights_file *f, size_t i) {
    return f && i < f->n_tensors ? &f->tensors[i] : NULL;
}

static int compare_name_key(const void *key, const void *elem) {
    const weights_tensor *const *t = elem;
    return strcmp(key, (*t)->name);
}

const weights_tensor *weights_find(const weights_file *f, const char *name) {
    if (!f || !name || f->n_tensors == 0) return NULL;
    const weights_tensor *const *hit = bsearch(name, f->tensors_by_name, f->n_tensors,
                                               sizeof *f->tensors_by_name, compare_name_key);
    return hit ? *hit : NULL;
}

const char *weights_metadata(const weights_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}

size_t weights_metadata_count(const weights_file *f) { return f ? f->n_meta : 0; }

const char *weights_metadata_key(const weights_file *f, size_t i) {
    return f && i < f->n_meta ? f->meta_keys[i] : NULL;
}

const char *weights_metadata_value(const weights_file *f, size_t i) {
    return f && i < f->n_meta ? f->meta_values[i] : NULL;
}

/* ------------------------------------------------------------- conversion */

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float f32_from_bits(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Exact IEEE half -> single, written without branches so the loop below
 * vectorises. Exponent and mantissa move into place with a rebias; the two
 * exponent extremes need fixing up: all-ones (inf/NaN) gets the extra bias
 * to reach 255, and zero (zero/subnormal) is renormalised by letting the FPU
 * subtract the implicit leading one: (1 + m/1024) * 2^-14 - 2^-14 = m * 2^-24,
 * which is exact. */
static float f16_to_f32(uint16_t h) {
    const uint32_t exp_mask = 0x7c00u << 13;
    uint32_t magnitude = (uint32_t)(h & 0x7fffu) << 13;
    uint32_t exp = magnitude & exp_mask;
    uint32_t normal = magnitude + ((127u - 15u) << 23);
    uint32_t inf_nan = normal + ((128u - 16u) << 23);
    uint32_t subnormal = f32_bits(f32_from_bits(normal + (1u << 23)) - 0x1p-14f);
    /* Masks rather than ?: so gcc if-converts and vectorises the loop. */
    uint32_t is_inf_nan = 0u - (uint32_t)(exp == exp_mask);
    uint32_t is_subnormal = 0u - (uint32_t)(exp == 0);
    uint32_t bits = (inf_nan & is_inf_nan) | (subnormal & is_subnormal) |
                    (normal & ~(is_inf_nan | is_subnormal));
    return f32_from_bits(bits | (uint32_t)(h & 0x8000u) << 16);
}

static uint16_t load_u16(const unsigned char *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v); /* p may be misaligned */
    return v;
}

static void convert_f16(const unsigned char *src, float *dst, size_t n) {
    size_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
    for (; i + 8 <= n; i += 8) {
        __m128i halves = _mm_loadu_si128((const __m128i_u *)(src + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(halves));
    }
#endif
    for (; i < n; i++) dst[i] = f16_to_f32(load_u16(src + 2 * i));
}

/* bfloat16 is the top half of a float32. */
static void convert_bf16(const unsigned char *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = f32_from_bits((uint32_t)load_u16(src + 2 * i) << 16);
}

base_status weights_i8_scales(const weights_file *f, const weights_tensor *t,
                             const weights_tensor **scale, size_t *groups, base_error *err) {
    const char *path = f ? f->path : "(no file)";
    char scale_name[512];
    if (t->ndim != 2 || snprintf(scale_name, sizeof scale_name, "%s%s", t->name,
                                 WEIGHTS_SCALE_SUFFIX) >= (int)sizeof scale_name)
        return tensor_error(err, BASE_E_UNSUPPORTED, path, t->name,
                            "I8 tensors are read only as matrices with scales");
    const weights_tensor *s = weights_find(f, scale_name);
    const size_t rows = (size_t)t->shape[0], cols = (size_t)t->shape[1];
    const size_t n = s && rows ? s->numel / rows : 0;
    if (!s || s->dtype == WEIGHTS_I8 || n == 0 || s->numel != rows * n || cols % n != 0)
        return tensor_error(err, BASE_E_FORMAT, path, t->name,
                            "I8 matrix without a '%s' of %zu x (a divisor of %zu) floats",
                            scale_name, rows, cols);
    *scale = s;
    *groups = n;
    return BASE_OK;
}

/* An I8 matrix times its group scales (see weights_quantize). */
static base_status dequantize_i8(const weights_file *f, const weights_tensor *t, float *dst,
                                base_error *err) {
    const weights_tensor *scale;
    size_t groups;
    base_status status = weights_i8_scales(f, t, &scale, &groups, err);
    if (status != BASE_OK) return status;
    float *scales = malloc(sizeof(float) * scale->numel);
    if (!scales) return tensor_error(err, BASE_E_NOMEM, f ? f->path : "(no file)", t->name, "out of memory");
    status = weights_to_f32(f, scale, scales, err);
    if (status == BASE_OK) {
        const signed char *q = t->data;
        const size_t group = (size_t)t->shape[1] / groups;
        for (size_t i = 0; i < t->numel; i++) dst[i] = (float)q[i] * scales[i / group];
    }
    free(scales);
    return status;
}

base_status weights_to_f32(const weights_file *f, const weights_tensor *t, float *dst,
                          base_error *err) {
    const char *path = f ? f->path : "(no file)";
    if (!t) return base_error_set(err, BASE_E_ARG, "%s: weights_to_f32 given no tensor", path);
    const char *name = t->name ? t->name : "(unnamed)";
    if (!dtype_valid(t->dtype) || t->nbytes != t->numel * weights_dtype_size(t->dtype))
        return tensor_error(err, BASE_E_ARG, path, name, "inconsistent tensor description");
    if (t->numel == 0) return BASE_OK;
    if (!dst || !t->data)
        return tensor_error(err, BASE_E_ARG, path, name, "weights_to_f32 given a NULL buffer");
    switch (t->dtype) {
    case WEIGHTS_F32: memcpy(dst, t->data, t->nbytes); return BASE_OK;
    case WEIGHTS_F16: convert_f16(t->data, dst, t->numel); return BASE_OK;
    case WEIGHTS_BF16: convert_bf16(t->data, dst, t->numel); return BASE_OK;
    case WEIGHTS_I8: return dequantize_i8(f, t, dst, err);
    default:
        return tensor_error(err, BASE_E_UNSUPPORTED, path, name,
                            "dtype %s cannot be converted to F32 (only F32, F16, BF16)",
                            weights_dtype_name(t->dtype));
    }
}

/* ----------------------------------------------------------------- writer */

typedef struct text_buffer {
    char *data;
    size_t len, cap;
    bool failed; /* allocation failed; further appends are ignored */
} text_buffer;

static void text_append(text_buffer *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void text_puts(text_buffer *b, const char *s) {
    text_append(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void text_printf(text_buffer *b, const char *fmt,
                                                               ...) {
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) b->failed = true; /* only used for numbers */
    else text_append(b, tmp, (size_t)n);
}

/* JSON string literal; bytes >= 0x80 pass through as the UTF-8 they are. */
static void text_json_string(text_buffer *b, const char *s) {
    text_append(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            text_append(b, esc, 2);
        } else if (c < 0x20) {
            text_printf(b, "\\u%04x", c);
        } else {
            text_append(b, (const char *)&c, 1);
        }
    }
    text_append(b, "\"", 1);
}

static void text_tensor_entry(text_buffer *b, const weights_tensor *t, size_t begin) {
    text_json_string(b, t->name);
    text_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", weights_dtype_name(t->dtype));
    for (int d = 0; d < t->ndim; d++) text_printf(b, d ? ",%lld" : "%lld", (long long)t->shape[d]);
    text_printf(b, "],\"data_offsets\":[%zu,%zu]}", begin, begin + t->nbytes);
}

/* The JSON header, padded with spaces so the data section starts 8-aligned. */
static base_status build_header(const char *path, const weights_tensor *tensors, size_t n_tensors,
                               const char *const *meta_keys, const char *const *meta_values,
                               size_t n_meta, text_buffer *b, base_error *err) {
    text_puts(b, "{");
    if (n_meta > 0) {
        text_puts(b, "\"" METADATA_KEY "\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) text_puts(b, ",");
            text_json_string(b, meta_keys[i]);
            text_puts(b, ":");
            text_json_string(b, meta_values[i]);
        }
        text_puts(b, n_tensors ? "}," : "}");
    }
    size_t offset = 0;
    for (size_t i = 0; i < n_tensors; i++) {
        if (i) text_puts(b, ",");
        text_tensor_entry(b, &tensors[i], offset);
        offset += tensors[i].nbytes;
    }
    text_puts(b, "}");
    /* Padded so the data starts at a multiple of 64 bytes: tensors whose sizes
     * are multiples of 64 at the front then stay 64-byte aligned when the
     * file is mapped (vit/packed.c's packed parts). */
    while ((b->len + HEADER_LEN_BYTES) % 64 != 0) text_puts(b, " ");
    if (b->failed) return base_error_set(err, BASE_E_NOMEM, "%s: out of memory for the header", path);
    if (b->len > WEIGHTS_MAX_HEADER_BYTES)
        return base_error_set(err, BASE_E_LIMIT, "%s: header would be %zu bytes, over the %zu limit",
                             path, b->len, WEIGHTS_MAX_HEADER_BYTES);
    return BASE_OK;
}

/* Refuses anything the reader would reject, so every file written reopens. */
static base_status check_write_tensor(const char *path, const weights_tensor *t, size_t index,
                                     size_t *total, base_error *err) {
    if (!t->name)
        return base_error_set(err, BASE_E_ARG, "%s: tensor #%zu has no name", path, index);
    const char *name = t->name;
    if (strcmp(name, METADATA_KEY) == 0)
        return tensor_error(err, BASE_E_ARG, path, name, "name is reserved for metadata");
    if (!dtype_valid(t->dtype))
        return tensor_error(err, BASE_E_ARG, path, name, "invalid dtype %d", (int)t->dtype);
    if (t->ndim < 0 || t->ndim > WEIGHTS_MAX_DIMS)
        return tensor_error(err, BASE_E_ARG, path, name, "ndim %d outside [0, %d]", t->ndim,
                            WEIGHTS_MAX_DIMS);
    size_t numel = 1;
    bool overflow = false, has_zero = false;
    for (int d = 0; d < t->ndim; d++) {
        int64_t dim = t->shape[d];
        if (dim < 0 || (double)dim >= MAX_EXACT_JSON_INT)
            return tensor_error(err, BASE_E_ARG, path, name, "shape[%d] = %lld is out of range", d,
                                (long long)dim);
        if (dim != 0 && numel > SIZE_MAX / (size_t)dim) overflow = true;
        has_zero |= dim == 0;
        numel *= (size_t)dim;
    }
    if (has_zero) numel = 0; /* as the reader counts it, however large the other dims */
    else if (overflow)
        return tensor_error(err, BASE_E_ARG, path, name, "element count overflows");
    if (numel != t->numel || t->nbytes / weights_dtype_size(t->dtype) != numel ||
        t->nbytes % weights_dtype_size(t->dtype) != 0)
        return tensor_error(err, BASE_E_ARG, path, name,
                            "numel %zu / nbytes %zu do not match the %s shape (%zu elements)",
                            t->numel, t->nbytes, weights_dtype_name(t->dtype), numel);
    if (t->nbytes > 0 && !t->data)
        return tensor_error(err, BASE_E_ARG, path, name, "data is NULL");
    if (t->nbytes > SIZE_MAX - *total || *total + t->nbytes >= (size_t)MAX_EXACT_JSON_INT)
        return tensor_error(err, BASE_E_ARG, path, name, "data section would be too large");
    *total += t->nbytes;
    return BASE_OK;
}

static base_status check_unique(const char *path, const char **names, size_t n, const char *what,
                               base_error *err) {
    bool nomem;
    const char *dup = find_duplicate(names, n, &nomem);
    if (nomem) return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", path);
    if (!dup) return BASE_OK;
    char shown[100];
    return base_error_set(err, BASE_E_ARG, "%s: %s '%s' given twice", path, what,
                         printable_name(dup, shown, sizeof shown));
}

static base_status check_write_args(const char *path, const weights_tensor *tensors,
                                   size_t n_tensors, const char *const *meta_keys,
                                   const char *const *meta_values, size_t n_meta, base_error *err) {
    if (n_tensors > 0 && !tensors)
        return base_error_set(err, BASE_E_ARG, "%s: tensors is NULL", path);
    if (n_tensors > WEIGHTS_MAX_TENSORS)
        return base_error_set(err, BASE_E_LIMIT, "%s: %zu tensors, more than the %zu allowed", path,
                             n_tensors, WEIGHTS_MAX_TENSORS);
    if (n_meta > 0 && (!meta_keys || !meta_values))
        return base_error_set(err, BASE_E_ARG, "%s: metadata keys or values are NULL", path);
    for (size_t i = 0; i < n_meta; i++)
        if (!meta_keys[i] || !meta_values[i])
            return base_error_set(err, BASE_E_ARG, "%s: metadata entry #%zu is NULL", path, i);
    size_t total = 0;
    for (size_t i = 0; i < n_tensors; i++) {
        base_status s = check_write_tensor(path, &tensors[i], i, &total, err);
        if (s != BASE_OK) return s;
    }
    const char **names = malloc((n_tensors ? n_tensors : 1) * sizeof *names);
    if (!names) return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n_tensors; i++) names[i] = tensors[i].name;
    base_status s = check_unique(path, names, n_tensors, "tensor name", err);
    free(names);
    if (s != BASE_OK) return s;
    return check_unique(path, (const char **)meta_keys, n_meta, "metadata key", err);
}

/* Header length, header, then every tensor's bytes, into a file that
 * replaces path only when whole (base_io.h). */
static base_status write_file_atomically(const char *path, const text_buffer *header,
                                        const weights_tensor *tensors, size_t n_tensors,
                                        base_error *err) {
    base_atomic_file *f;
    base_status st = base_atomic_open(path, &f, err);
    if (st != BASE_OK) return st;
    unsigned char len_bytes[HEADER_LEN_BYTES];
    uint64_t len = header->len;
    for (int i = 0; i < HEADER_LEN_BYTES; i++) len_bytes[i] = (unsigned char)(len >> (8 * i));
    st = base_atomic_write(f, len_bytes, sizeof len_bytes, err);
    if (st == BASE_OK) st = base_atomic_write(f, header->data, header->len, err);
    for (size_t i = 0; st == BASE_OK && i < n_tensors; i++)
        st = base_atomic_write(f, tensors[i].data, tensors[i].nbytes, err);
    if (st != BASE_OK) {
        base_atomic_abort(f);
        return st;
    }
    return base_atomic_commit(f, err);
}

base_status weights_write(const char *path, const weights_tensor *tensors, size_t n_tensors,
                         const char *const *meta_keys, const char *const *meta_values,
                         size_t n_meta, base_error *err) {
    if (!path) return base_error_set(err, BASE_E_ARG, "weights_write: path is NULL");
    base_status s =
        check_write_args(path, tensors, n_tensors, meta_keys, meta_values, n_meta, err);
    if (s != BASE_OK) return s;
    text_buffer header = {0};
    s = build_header(path, tensors, n_tensors, meta_keys, meta_values, n_meta, &header, err);
    if (s == BASE_OK) s = write_file_atomically(path, &header, tensors, n_tensors, err);
    free(header.data);
    return s;
}
