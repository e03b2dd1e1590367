/* json.c — config JSON parsing and strict key readers (base_json.h). */
#include "base_json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

base_status base_json_parse_object(const char *text, const char *name, const base_limits *limits,
                                 cJSON **root, base_error *err) {
    *root = NULL;
    if (!name) name = "(JSON)";
    if (!text) return base_error_set(err, BASE_E_ARG, "%s: no JSON text", name);
    const size_t max_bytes = base_limits_resolve(limits).max_json_bytes;
    const size_t len = strnlen(text, max_bytes + 1);
    base_status st = base_json_check_limits(text, len, name, limits, err);
    if (st != BASE_OK) return st;
    const char *end = NULL;
    /* len + 1 includes the terminator, which makes cJSON reject trailing text. */
    cJSON *r = cJSON_ParseWithLengthOpts(text, len + 1, &end, 1);
    if (!r) {
        const size_t at = end && end >= text ? (size_t)(end - text) : 0;
        return base_error_set(err, BASE_E_FORMAT, "%s: malformed JSON near byte %zu", name, at);
    }
    if (!cJSON_IsObject(r)) {
        const char *what = cJSON_IsArray(r)    ? "an array"
                           : cJSON_IsString(r) ? "a string"
                           : cJSON_IsNumber(r) ? "a number"
                           : cJSON_IsBool(r)   ? "a boolean"
                                               : "null";
        cJSON_Delete(r);
        return base_error_set(err, BASE_E_FORMAT, "%s: not a JSON object (%s)", name, what);
    }
    *root = r;
    return BASE_OK;
}

const cJSON *base_json_get(const cJSON *obj, const char *key) {
    if (!cJSON_IsObject(obj)) return NULL;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return item && !cJSON_IsNull(item) ? item : NULL;
}

const char *base_json_show(const cJSON *item, char *buf, size_t size) {
    if (!buf || size == 0) return "";
    /* cJSON escapes line breaks inside strings, so the text is one line. */
    char *text = item ? cJSON_PrintUnformatted(item) : NULL;
    if (!text) {
        snprintf(buf, size, "(value)");
        return buf;
    }
    const size_t limit = size - 1 < 40 ? size - 1 : 40;
    if (strlen(text) > limit && limit > 3)
        snprintf(buf, size, "%.*s...", (int)(limit - 3), text);
    else
        snprintf(buf, size, "%s", text);
    cJSON_free(text);
    return buf;
}

base_status base_json_int(const cJSON *obj, const char *key, const char *where, int min, int max,
                        const char *name, int *out, base_error *err) {
    const cJSON *item = base_json_get(obj, key);
    if (!item) return BASE_OK;
    /* Only numbers that are whole and in range: "3", 3.5 and 1e300 are
     * refused, not rounded or replaced by a default. */
    const double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    if (!(v >= min && v <= max) || v != floor(v)) {
        char shown[48];
        return base_error_set(err, BASE_E_FORMAT, "%s: \"%s%s\" is %s; expected a whole number from %d to %d",
                             name, where ? where : "", key, base_json_show(item, shown, sizeof shown), min, max);
    }
    *out = (int)v;
    return BASE_OK;
}

base_status base_json_number(const cJSON *obj, const char *key, const char *where, double low,
                           double high, const char *name, double *out, base_error *err) {
    const cJSON *item = base_json_get(obj, key);
    if (!item) return BASE_OK;
    const double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    if (!(v > low && v < high)) {
        char shown[48];
        return base_error_set(err, BASE_E_FORMAT, "%s: \"%s%s\" is %s; expected a number above %g and below %g",
                             name, where ? where : "", key, base_json_show(item, shown, sizeof shown), low, high);
    }
    *out = v;
    return BASE_OK;
}
