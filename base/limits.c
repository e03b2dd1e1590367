/* limits.c — defaults of base_limits and the JSON pre-check. */
#include "base_limits.h"

base_limits base_limits_resolve(const base_limits *given) {
    base_limits l = given ? *given : (base_limits){0};
    if (l.max_pixels <= 0) l.max_pixels = BASE_DEFAULT_MAX_PIXELS;
    if (l.max_header_bytes == 0) l.max_header_bytes = BASE_DEFAULT_MAX_HEADER_BYTES;
    if (l.max_tensors == 0) l.max_tensors = BASE_DEFAULT_MAX_TENSORS;
    if (l.max_json_bytes == 0) l.max_json_bytes = BASE_DEFAULT_MAX_JSON_BYTES;
    if (l.max_json_depth <= 0) l.max_json_depth = BASE_DEFAULT_MAX_JSON_DEPTH;
    return l;
}

base_status base_json_check_limits(const char *text, size_t len, const char *name,
                                 const base_limits *limits, base_error *err) {
    const base_limits l = base_limits_resolve(limits);
    if (!name) name = "(JSON)";
    if (len > l.max_json_bytes)
        return base_error_set(err, BASE_E_LIMIT, "%s: JSON of %zu bytes exceeds the limit of %zu bytes",
                             name, len, l.max_json_bytes);
    int depth = 0, in_string = 0;
    for (size_t i = 0; i < len && text[i]; i++) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\') i++; /* the escaped character cannot end the string */
            else if (c == '"') in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > l.max_json_depth)
                return base_error_set(err, BASE_E_LIMIT,
                                     "%s: JSON nested deeper than the limit of %d levels (at byte %zu)",
                                     name, l.max_json_depth, i);
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return BASE_OK;
}
