/* limits.c — defaults of vit_limits and the JSON pre-check. */
#include "vit_limits.h"

vit_limits vit_limits_resolve(const vit_limits *given) {
    vit_limits l = given ? *given : (vit_limits){0};
    if (l.max_pixels <= 0) l.max_pixels = VIT_DEFAULT_MAX_PIXELS;
    if (l.max_header_bytes == 0) l.max_header_bytes = VIT_DEFAULT_MAX_HEADER_BYTES;
    if (l.max_tensors == 0) l.max_tensors = VIT_DEFAULT_MAX_TENSORS;
    if (l.max_json_bytes == 0) l.max_json_bytes = VIT_DEFAULT_MAX_JSON_BYTES;
    if (l.max_json_depth <= 0) l.max_json_depth = VIT_DEFAULT_MAX_JSON_DEPTH;
    return l;
}

vit_status vit_json_check_limits(const char *text, size_t len, const char *name,
                                 const vit_limits *limits, vit_error *err) {
    const vit_limits l = vit_limits_resolve(limits);
    if (!name) name = "(JSON)";
    if (len > l.max_json_bytes)
        return vit_error_set(err, VIT_E_LIMIT, "%s: JSON of %zu bytes exceeds the limit of %zu bytes",
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
                return vit_error_set(err, VIT_E_LIMIT,
                                     "%s: JSON nested deeper than the limit of %d levels (at byte %zu)",
                                     name, l.max_json_depth, i);
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return VIT_OK;
}
