/* base_limits.h — the safety limits every vitc module applies to files from
 * strangers (checkpoints, JSON configs, label lists, images).
 *
 * A base_limits with a field left at 0 means that field's default, so
 * `base_limits l = {.max_pixels = 400000000};` raises one limit and keeps the
 * others; a NULL `const base_limits *` means all defaults. Every refusal is a
 * BASE_E_LIMIT error whose one-line message names the file and the limit. */
#ifndef BASE_LIMITS_H
#define BASE_LIMITS_H

#include <stddef.h>
#include <stdint.h>

#include "base_error.h"

#define BASE_DEFAULT_MAX_PIXELS ((int64_t)100000000)       /* 100 megapixels */
#define BASE_DEFAULT_MAX_HEADER_BYTES ((size_t)100 << 20)  /* safetensors JSON header */
#define BASE_DEFAULT_MAX_TENSORS ((size_t)100000)          /* tensors in one checkpoint */
#define BASE_DEFAULT_MAX_JSON_BYTES ((size_t)16 << 20)     /* one config JSON file */
#define BASE_DEFAULT_MAX_JSON_DEPTH 64                     /* nesting of [ and { */

typedef struct base_limits {
    int64_t max_pixels;      /* image width x height, checked before any pixel is decoded */
    size_t max_header_bytes; /* safetensors header length */
    size_t max_tensors;      /* tensor entries in a safetensors header */
    size_t max_json_bytes;   /* config.json, preprocessor_config.json, __metadata__ config */
    int max_json_depth;      /* array/object nesting of any JSON read, headers included */
} base_limits;

/* given with every unset (<= 0) field replaced by its default; NULL: all
 * defaults. */
base_limits base_limits_resolve(const base_limits *given);

/* Checks JSON text of len bytes against the size and nesting limits before
 * it is parsed (cJSON recurses once per level). Brackets inside strings do
 * not count. name is used in the message. */
base_status base_json_check_limits(const char *text, size_t len, const char *name,
                                 const base_limits *limits, base_error *err);

#endif
