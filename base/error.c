#include "base_error.h"

#include <stdarg.h>
#include <stdio.h>

base_status base_error_set(base_error *err, base_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *base_status_name(base_status code) {
    switch (code) {
    case BASE_OK: return "ok";
    case BASE_E_IO: return "I/O error";
    case BASE_E_FORMAT: return "bad format";
    case BASE_E_SHAPE: return "shape mismatch";
    case BASE_E_UNSUPPORTED: return "unsupported";
    case BASE_E_NOMEM: return "out of memory";
    case BASE_E_ARG: return "invalid argument";
    case BASE_E_LIMIT: return "limit exceeded";
    }
    return "unknown error";
}
