/* Writing outputs safely, and text as CSV and JSON (outputs.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

char *cli_csv_quote(const char *s) {
    if (!strpbrk(s, ",\"\n\r")) return strdup(s);
    char *quoted = malloc(2 * strlen(s) + 3), *q = quoted;
    if (!quoted) return NULL;
    *q++ = '"';
    for (; *s; s++) {
        if (*s == '"') *q++ = '"';
        *q++ = *s;
    }
    *q++ = '"';
    *q = '\0';
    return quoted;
}

int cli_csv_write_field(FILE *out, const char *s) {
    char *quoted = cli_csv_quote(s);
    if (!quoted) return -1;
    fputs(quoted, out);
    free(quoted);
    return 0;
}

/* ---------------------------------------------------------- JSON text */

/* The length of the valid UTF-8 sequence at s (1..4), or 0 when the byte
 * there does not start one (overlong forms and surrogates are invalid). */
static int utf8_length(const unsigned char *s) {
    const unsigned char c = s[0];
    if (c < 0x80) return 1;
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) n = 2;
    else if (c == 0xE0) n = 3, lo = 0xA0;
    else if (c == 0xED) n = 3, hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) n = 3;
    else if (c == 0xF0) n = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) n = 4;
    else if (c == 0xF4) n = 4, hi = 0x8F;
    else return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return n;
}

char *cli_json_text(const char *s) {
    char *out = malloc(4 * strlen(s) + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        const int n = utf8_length(p);
        if (*p == '\\') {
            *o++ = '\\';
            *o++ = '\\';
            p++;
        } else if (n == 0) {
            o += sprintf(o, "\\x%02x", *p++);
        } else {
            memcpy(o, p, (size_t)n);
            o += n;
            p += n;
        }
    }
    *o = '\0';
    return out;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *cli_json_text_decode(const char *s) {
    char *out = malloc(strlen(s) + 1), *o = out;
    if (!out) return NULL;
    while (*s) {
        int hi, lo;
        if (s[0] == '\\' && s[1] == '\\') {
            *o++ = '\\';
            s += 2;
        } else if (s[0] == '\\' && s[1] == 'x' && (hi = hex_value(s[2])) >= 0 &&
                   (lo = hex_value(s[3])) >= 0) {
            *o++ = (char)(hi << 4 | lo);
            s += 4;
        } else {
            *o++ = *s++; /* not an escape of ours: kept as it is */
        }
    }
    *o = '\0';
    return out;
}

/* ------------------------------------------------------ the user's files */

static int compare_file_ids(const void *a, const void *b) {
    const cli_protected_file *x = a, *y = b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* Adds the file st describes, named path in messages. */
static int protect_stat(cli_protected *p, const char *path, const struct stat *st, int is_input) {
    if (p->count == p->capacity) {
        const size_t capacity = p->capacity ? p->capacity * 2 : 16;
        cli_protected_file *grown = realloc(p->files, capacity * sizeof *grown);
        if (!grown) return -1;
        p->files = grown;
        p->capacity = capacity;
    }
    cli_protected_file *f = &p->files[p->count];
    if (!(f->path = strdup(path))) return -1;
    f->dev = st->st_dev;
    f->ino = st->st_ino;
    f->is_input = is_input;
    p->count++;
    p->sorted = 0;
    return 0;
}

int cli_protect_file(cli_protected *p, const char *path, int is_input) {
    struct stat st;
    if (!path || stat(path, &st) != 0) return 0; /* nothing there to overwrite */
    return protect_stat(p, path, &st, is_input);
}

int cli_protect_list(const char *command, cli_protected *p, const char *list) {
    if (!list) return 0;
    struct stat st;
    int status = 0;
    if (strcmp(list, "-") != 0) {
        status = cli_protect_file(p, list, 2);
    } else if (fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode)) {
        /* `--files-from - < list.txt -o list.txt`: the shell opened the
         * list, and -o would cut it. */
        status = protect_stat(p, "standard input", &st, 2);
    }
    if (status != 0) fprintf(stderr, "vit %s: out of memory\n", command);
    return status;
}

int cli_protect_model(cli_protected *p, const vit_model *model, const char *labels_path) {
    /* The loader reads the configs from the weights file's directory. */
    const char *weights = vit_model_weights_path(model);
    const char *slash = strrchr(weights, '/');
    const int dir_len = slash ? (int)(slash - weights) : 1;
    const char *dir = slash ? weights : ".";
    char path[4200];
    if (cli_protect_file(p, weights, 0) != 0) return -1;
    snprintf(path, sizeof path, "%.*s/config.json", dir_len, dir);
    if (cli_protect_file(p, path, 0) != 0) return -1;
    snprintf(path, sizeof path, "%.*s/preprocessor_config.json", dir_len, dir);
    if (cli_protect_file(p, path, 0) != 0) return -1;
    return cli_protect_file(p, labels_path, 0);
}

void cli_protect_inputs(cli_protected *p, const char *const *paths, size_t count) {
    p->inputs = paths;
    p->num_inputs = count;
    p->inputs_added = 0;
}

int cli_protect_run(const char *command, cli_protected *p, const vit_model *model,
                    const char *labels_path, const char *const *inputs, size_t num_inputs) {
    cli_protect_inputs(p, inputs, num_inputs);
    if (model && cli_protect_model(p, model, labels_path) != 0) {
        fprintf(stderr, "vit %s: out of memory\n", command);
        return -1;
    }
    return 0;
}

int cli_check_output(const char *command, cli_protected *p, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0; /* a new file: it cannot be one we read */
    if (!p->inputs_added) {
        for (size_t i = 0; i < p->num_inputs; i++)
            if (cli_protect_file(p, p->inputs[i], 1) != 0) {
                fprintf(stderr, "vit %s: out of memory\n", command);
                return -1;
            }
        p->inputs_added = 1;
        p->sorted = 0;
    }
    if (!p->sorted) {
        if (p->count) qsort(p->files, p->count, sizeof *p->files, compare_file_ids);
        p->sorted = 1;
    }
    const cli_protected_file key = {.dev = st.st_dev, .ino = st.st_ino};
    const cli_protected_file *hit =
        p->count ? bsearch(&key, p->files, p->count, sizeof *p->files, compare_file_ids) : NULL;
    if (!hit) return 0;
    /* Name the protected file as the user gave it: a link or another
     * spelling of it may be what -o says. */
    if (hit->is_input == 2)
        fprintf(stderr, "vit %s: %s: would overwrite the --files-from list %s; choose another "
                        "output\n", command, path, hit->path);
    else if (hit->is_input)
        fprintf(stderr, "vit %s: %s: would overwrite the input %s; choose another output\n",
                command, path, hit->path);
    else
        fprintf(stderr, "vit %s: %s: would overwrite the model it reads (%s); choose another "
                        "output\n", command, path, hit->path);
    return -1;
}

void cli_protected_free(cli_protected *p) {
    for (size_t i = 0; i < p->count; i++) free(p->files[i].path);
    free(p->files);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------ output locks */

static int lock_refused(const char *command, const char *path, int fd) {
    fprintf(stderr, "vit %s: %s: is being written by another vit process\n", command, path);
    close(fd);
    return -1;
}

static int lock_failed(const char *command, const char *path, int e) {
    fprintf(stderr, "vit %s: %s: cannot write: %s\n", command, path, strerror(e));
    return -1;
}

/* flock errors other than "held by someone else" (a file system without
 * flock, such as some NFS setups): carry on unlocked rather than refuse to
 * work at all. */
static int lock_unsupported(int e) { return e == ENOLCK || e == EINVAL || e == EBADF || e == EOPNOTSUPP; }

/* Takes the lock on fd (just opened on path; -1: the open failed): lock
 * holds it, or the run is refused (another holder) or fails. */
static int lock_opened(const char *command, const char *path, int fd, cli_lock *lock) {
    if (fd < 0) return lock_failed(command, path, errno);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        const int e = errno;
        if (e == EWOULDBLOCK) return lock_refused(command, path, fd);
        close(fd);
        return lock_unsupported(e) ? 0 : lock_failed(command, path, e);
    }
    lock->held = 1;
    lock->fd = fd;
    return 0;
}

int cli_lock_output(const char *command, const char *path, int in_place, cli_lock *lock) {
    memset(lock, 0, sizeof *lock);
    struct stat st;
    const int exists = stat(path, &st) == 0;
    if (exists && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) return 0; /* /dev/null, a FIFO */
    if (exists && S_ISDIR(st.st_mode))
        return lock_opened(command, path, open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC), lock);
    /* No O_TRUNC: the file is cut only once the lock is ours. */
    if (in_place)
        return lock_opened(command, path, open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666), lock);
    const size_t size = strlen(path) + 6;
    char *lock_path = malloc(size);
    if (!lock_path) {
        fprintf(stderr, "vit %s: out of memory\n", command);
        return -1;
    }
    snprintf(lock_path, size, "%s.lock", path);
    /* The holder removes PATH.lock before letting go, so a lock won on a
     * file that has meanwhile been removed (or replaced) is worth nothing:
     * try again on the file now there. */
    for (int attempt = 0; attempt < 100; attempt++) {
        const int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0) {
            lock_failed(command, path, errno);
            free(lock_path);
            return -1;
        }
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            const int e = errno;
            if (e == EWOULDBLOCK) {
                free(lock_path);
                return lock_refused(command, path, fd);
            }
            close(fd);
            free(lock_path);
            return lock_unsupported(e) ? 0 : lock_failed(command, path, e);
        }
        struct stat held, now;
        if (fstat(fd, &held) == 0 && stat(lock_path, &now) == 0 && held.st_dev == now.st_dev &&
            held.st_ino == now.st_ino) {
            lock->held = 1;
            lock->fd = fd;
            lock->remove_path = lock_path;
            return 0;
        }
        close(fd);
    }
    free(lock_path);
    fprintf(stderr, "vit %s: %s: is being written by another vit process\n", command, path);
    return -1;
}

void cli_unlock_output(cli_lock *lock) {
    if (!lock->held) return;
    /* Removed while still held (see cli_lock_output), and only when empty:
     * vit never writes into it, so a file with content is someone else's. */
    struct stat st;
    if (lock->remove_path && fstat(lock->fd, &st) == 0 && st.st_size == 0) unlink(lock->remove_path);
    close(lock->fd);
    free(lock->remove_path);
    memset(lock, 0, sizeof *lock);
}

int cli_make_parents(const char *path) {
    char *copy = strdup(path);
    if (!copy) return -1;
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(copy, 0777) != 0 && errno != EEXIST) {
            free(copy);
            return -1;
        }
        *p = '/';
    }
    free(copy);
    return 0;
}
