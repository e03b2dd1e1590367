/* base_error.h — the error type shared by every vitc library module.
 *
 * Library functions never print and never exit: they return a base_status and,
 * when given a non-NULL base_error, fill it with one line that names the file
 * (and tensor, key or pixel) and the problem, ready for the CLI to print. */
#ifndef BASE_ERROR_H
#define BASE_ERROR_H

typedef enum base_status {
    BASE_OK = 0,
    BASE_E_IO,          /* cannot open/read/write/map a file */
    BASE_E_FORMAT,      /* malformed file: bad header, JSON, image data */
    BASE_E_SHAPE,       /* tensor shape or size does not fit */
    BASE_E_UNSUPPORTED, /* well-formed but not something we handle */
    BASE_E_NOMEM,       /* allocation failed */
    BASE_E_ARG,         /* invalid argument from the caller */
    BASE_E_LIMIT        /* input exceeds a safety limit */
} base_status;

typedef struct base_error {
    base_status code;
    char message[768];
} base_error;

/* Records code and a printf-style message in err (if err is non-NULL) and
 * returns code, so callers can write `return base_error_set(err, ...)`. */
base_status base_error_set(base_error *err, base_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A short name for a status ("I/O error", "bad format", ...). */
const char *base_status_name(base_status code);

#endif
