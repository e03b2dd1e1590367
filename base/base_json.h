/* base_json.h — reading config JSON the same way everywhere (model.c reads
 * config.json, data/preprocess.c preprocessor_config.json): one parse with
 * one style of error, and strict readers for single keys. Internal, not part
 * of the public API.
 *
 * The rule for keys: an absent key, or one whose value is JSON null (which
 * is what Python writes for None), takes its default; a key that is present
 * with a value of the wrong type or out of range is an error naming the
 * file, the key and the value. Nothing is guessed from a bad value. */
#ifndef BASE_JSON_H
#define BASE_JSON_H

#include <cJSON.h>
#include <stddef.h>

#include "base_limits.h"

/* Parses text (checked against limits first; NULL: defaults) into *root,
 * which must be a JSON object. Errors: "NAME: malformed JSON near byte N"
 * when it does not parse, "NAME: not a JSON object (an array)" when it
 * parses to something else. */
base_status base_json_parse_object(const char *text, const char *name, const base_limits *limits,
                                 cJSON **root, base_error *err);

/* The item for key, or NULL when it is absent or null. obj may be NULL. */
const cJSON *base_json_get(const cJSON *obj, const char *key);

/* The value as compact JSON for a message (at most 40 characters, "..."
 * when cut; strings keep their quotes, so "3" shows it is not 3). */
const char *base_json_show(const cJSON *item, char *buf, size_t size);

/* An integer key in min..max: *out is set when the key is present (and
 * left alone when absent). where prefixes the key in messages (e.g.
 * "model_args."), name is the file. */
base_status base_json_int(const cJSON *obj, const char *key, const char *where, int min, int max,
                        const char *name, int *out, base_error *err);

/* A number key in the open interval (low, high): *out is set when present. */
base_status base_json_number(const cJSON *obj, const char *key, const char *where, double low,
                           double high, const char *name, double *out, base_error *err);

#endif
