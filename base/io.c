/* io.c — reading capped text files, atomic writes, file kinds (base_io.h). */
#include "base_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *base_file_kind(unsigned mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return S_ISREG(mode) ? "a regular file" : "a special file";
}

/* ------------------------------------------------------------ reading */

FILE *base_fdopen_blocking(int fd) {
    const int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0) return NULL;
    return fdopen(fd, "rb");
}

base_status base_read_text_file(const char *path, size_t max_bytes, char **text, int *missing,
                               base_error *err) {
    *text = NULL;
    if (missing) *missing = 0;
    /* O_NONBLOCK: opening a FIFO with no writer must not hang; reads block
     * again below, so a pipe with a writer (--labels <(...)) still works. */
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        const int e = errno;
        if (e == ENOENT && missing) {
            *missing = 1;
            return BASE_OK;
        }
        return base_error_set(err, BASE_E_IO, "%s: cannot open (%s)", path, strerror(e));
    }
    struct stat sb;
    const int stated = fstat(fd, &sb) == 0;
    if (!stated || S_ISDIR(sb.st_mode)) {
        const int dir = stated;
        close(fd);
        return base_error_set(err, BASE_E_IO, "%s: %s", path, dir ? "a directory, not a file"
                                                                 : "cannot read its status");
    }
    FILE *f = base_fdopen_blocking(fd);
    if (!f) {
        const int e = errno;
        close(fd);
        return base_error_set(err, BASE_E_IO, "%s: cannot open (%s)", path, strerror(e));
    }
    /* Sized by the file, not the cap, and grown while reading (the file may
     * be a pipe or grow), so a generous cap costs nothing. */
    size_t cap = S_ISREG(sb.st_mode) ? (size_t)sb.st_size : 0;
    if (cap > max_bytes) cap = max_bytes;
    cap += 1 + (cap < 4096 ? 4096 : 0); /* + 1: a byte beyond the cap proves it exceeded */
    if (cap > max_bytes + 1) cap = max_bytes + 1;
    char *buf = malloc(cap + 1);
    size_t len = 0;
    int failed = 0;
    while (buf) {
        len += fread(buf + len, 1, cap - len, f);
        if ((failed = ferror(f)) || len < cap || cap == max_bytes + 1) break;
        size_t grown = cap > (max_bytes + 1) / 2 ? max_bytes + 1 : cap * 2;
        char *nb = realloc(buf, grown + 1);
        if (!nb) {
            free(buf);
            buf = NULL;
        } else {
            buf = nb;
            cap = grown;
        }
    }
    fclose(f);
    if (!buf) return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", path);
    if (failed) {
        free(buf);
        return base_error_set(err, BASE_E_IO, "%s: read error", path);
    }
    if (len > max_bytes) {
        free(buf);
        return base_error_set(err, BASE_E_LIMIT, "%s: larger than the limit of %zu bytes", path,
                             max_bytes);
    }
    buf[len] = '\0';
    if (strlen(buf) != len) {
        free(buf);
        return base_error_set(err, BASE_E_FORMAT, "%s: contains NUL bytes, not text", path);
    }
    *text = buf;
    return BASE_OK;
}


/* ------------------------------------------------------- atomic files */

struct base_atomic_file {
    int fd;       /* -1 once stream owns it */
    FILE *stream; /* base_atomic_stream's, or NULL */
    char *path, *tmp;
};

static base_status io_fail(base_error *err, const char *path, const char *what, int e) {
    return base_error_set(err, BASE_E_IO, "%s: %s: %s", path, what, strerror(e));
}

base_status base_output_replaceable(const char *path, base_error *err) {
    struct stat st;
    if (lstat(path, &st) != 0 || S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) return BASE_OK;
    return base_error_set(err, BASE_E_IO, "%s: is %s; outputs are written beside it and renamed "
                         "over it, which would replace it: name a file", path,
                         base_file_kind(st.st_mode));
}

base_status base_atomic_open(const char *path, base_atomic_file **out, base_error *err) {
    *out = NULL;
    base_status replaceable = base_output_replaceable(path, err);
    if (replaceable != BASE_OK) return replaceable;
    base_atomic_file *f = calloc(1, sizeof *f);
    const size_t size = strlen(path) + 48;
    if (!f || !(f->tmp = malloc(size)) || !(f->path = strdup(path))) {
        if (f) free(f->tmp);
        free(f);
        return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", path);
    }
    /* O_EXCL with a pid-based name: a stale file from a crashed process that
     * had our pid just moves us to the next number. */
    f->fd = -1;
    for (int attempt = 0; attempt < 100 && f->fd < 0; attempt++) {
        snprintf(f->tmp, size, "%s.tmp.%ld.%d", path, (long)getpid(), attempt);
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (f->fd < 0 && errno != EEXIST) break;
    }
    if (f->fd < 0) {
        const int e = errno;
        free(f->tmp);
        free(f->path);
        free(f);
        return io_fail(err, path, "cannot create a temporary file beside it", e);
    }
    *out = f;
    return BASE_OK;
}

base_status base_atomic_write(base_atomic_file *f, const void *bytes, size_t size, base_error *err) {
    const char *p = bytes;
    while (size > 0) {
        const ssize_t w = write(f->fd, p, size);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return io_fail(err, f->path, "cannot write", w < 0 ? errno : EIO);
        p += w;
        size -= (size_t)w;
    }
    return BASE_OK;
}

/* Makes the rename itself durable; not every filesystem allows fsync on a
 * directory, and the data is already safe, so failure here is not an error. */
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    const int fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

static void atomic_free(base_atomic_file *f) {
    free(f->tmp);
    free(f->path);
    free(f);
}

FILE *base_atomic_stream(base_atomic_file *f) {
    if (!f->stream && (f->stream = fdopen(f->fd, "w"))) f->fd = -1;
    return f->stream;
}

void base_atomic_abort(base_atomic_file *f) {
    if (!f) return;
    if (f->stream) fclose(f->stream);
    else close(f->fd);
    unlink(f->tmp);
    atomic_free(f);
}

base_status base_atomic_commit(base_atomic_file *f, base_error *err) {
    const char *failed = NULL;
    int e = 0;
    if (f->stream && (fflush(f->stream) != 0 || ferror(f->stream))) {
        failed = "cannot write";
        e = errno ? errno : EIO;
    }
    const int fd = f->stream ? fileno(f->stream) : f->fd;
    if (!failed && fsync(fd) != 0) {
        failed = "cannot sync";
        e = errno;
    }
    if ((f->stream ? fclose(f->stream) : close(fd)) != 0 && !failed) {
        failed = "cannot close";
        e = errno;
    }
    if (!failed && rename(f->tmp, f->path) != 0) {
        failed = "cannot rename the temporary file into place";
        e = errno;
    }
    base_status st = BASE_OK;
    if (failed) {
        unlink(f->tmp);
        st = io_fail(err, f->path, failed, e);
    } else {
        sync_parent_dir(f->path);
    }
    atomic_free(f);
    return st;
}

base_status base_write_file_atomic(const char *path, const void *bytes, size_t size,
                                  base_error *err) {
    base_atomic_file *f;
    base_status st = base_atomic_open(path, &f, err);
    if (st != BASE_OK) return st;
    if ((st = base_atomic_write(f, bytes, size, err)) != BASE_OK) {
        base_atomic_abort(f);
        return st;
    }
    return base_atomic_commit(f, err);
}
