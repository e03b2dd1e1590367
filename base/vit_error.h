/* vit_error.h — the error type shared by every vitc library module.
 *
 * Library functions never print and never exit: they return a vit_status and,
 * when given a non-NULL vit_error, fill it with one line that names the file
 * (and tensor, key or pixel) and the problem, ready for the CLI to print. */
#ifndef VIT_ERROR_H
#define VIT_ERROR_H

typedef enum vit_status {
    VIT_OK = 0,
    VIT_E_IO,          /* cannot open/read/write/map a file */
    VIT_E_FORMAT,      /* malformed file: bad header, JSON, image data */
    VIT_E_SHAPE,       /* tensor shape or size does not fit */
    VIT_E_UNSUPPORTED, /* well-formed but not something we handle */
    VIT_E_NOMEM,       /* allocation failed */
    VIT_E_ARG,         /* invalid argument from the caller */
    VIT_E_LIMIT        /* input exceeds a safety limit */
} vit_status;

typedef struct vit_error {
    vit_status code;
    char message[768];
} vit_error;

/* Records code and a printf-style message in err (if err is non-NULL) and
 * returns code, so callers can write `return vit_error_set(err, ...)`. */
vit_status vit_error_set(vit_error *err, vit_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A short name for a status ("I/O error", "bad format", ...). */
const char *vit_status_name(vit_status code);

#endif
