#include "vit_error.h"

#include <stdarg.h>
#include <stdio.h>

vit_status vit_error_set(vit_error *err, vit_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *vit_status_name(vit_status code) {
    switch (code) {
    case VIT_OK: return "ok";
    case VIT_E_IO: return "I/O error";
    case VIT_E_FORMAT: return "bad format";
    case VIT_E_SHAPE: return "shape mismatch";
    case VIT_E_UNSUPPORTED: return "unsupported";
    case VIT_E_NOMEM: return "out of memory";
    case VIT_E_ARG: return "invalid argument";
    case VIT_E_LIMIT: return "limit exceeded";
    }
    return "unknown error";
}
