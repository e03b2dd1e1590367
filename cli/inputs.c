/* The image files a command works on (inputs.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

int cli_inputs_add(cli_inputs *in, const char *path, const char *name) {
    if (in->count == in->capacity) {
        size_t capacity = in->capacity ? in->capacity * 2 : 1024;
        char **paths = realloc(in->paths, capacity * sizeof *paths);
        if (paths) in->paths = paths;
        char **names = realloc(in->names, capacity * sizeof *names);
        if (names) in->names = names;
        if (!paths || !names) return -1;
        in->capacity = capacity;
    }
    in->paths[in->count] = strdup(path);
    in->names[in->count] = strdup(name);
    if (!in->paths[in->count] || !in->names[in->count]) {
        free(in->paths[in->count]);
        free(in->names[in->count]);
        return -1;
    }
    in->count++;
    return 0;
}

void cli_inputs_free(cli_inputs *in) {
    for (size_t i = 0; i < in->count; i++) {
        free(in->paths[i]);
        free(in->names[i]);
    }
    free(in->paths);
    free(in->names);
    memset(in, 0, sizeof *in);
}

/* "A, B and C" of the directory arguments (for "no images found in ..."). */
static void join_args(const char *const *paths, int num_paths, char *buf, size_t size) {
    size_t n = 0;
    buf[0] = '\0';
    for (int a = 0; a < num_paths && n < size; a++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", a == 0 ? "" : a + 1 < num_paths ? ", " : " and ",
                              paths[a]);
}

/* cli_inputs_collect; list (NULL: none) names the --files-from list that is
 * read after, for the message when nothing at all is found. */
static int collect_paths(const char *command, const char *const *paths, int num_paths,
                         const data_walk_options *walk, cli_naming naming, cli_inputs *in,
                         const char *list) {
    const int relative = naming == CLI_NAMES_OUTPUTS || num_paths == 1;
    for (int a = 0; a < num_paths; a++) {
        const char *arg = paths[a];
        struct stat st;
        if (stat(arg, &st) != 0 || !S_ISDIR(st.st_mode)) {
            const char *slash = strrchr(arg, '/');
            const char *name = naming == CLI_NAMES_OUTPUTS && slash && slash[1] ? slash + 1 : arg;
            if (cli_inputs_add(in, arg, name) != 0) goto nomem;
            continue;
        }
        data_file_list files = {0}, problems = {0};
        base_error err;
        if (data_walk_collect(arg, walk, &files, &problems, &err) != BASE_OK) {
            fprintf(stderr, "vit %s: %s\n", command, err.message);
            data_file_list_free(&files);
            data_file_list_free(&problems);
            return -1;
        }
        /* A directory that cannot be listed is not a file, so it gets no
         * row (rows are what --resume and --shard count by name); its line
         * here and exit status 2 say that part of the tree was left out. */
        for (size_t i = 0; i < problems.count; i++)
            fprintf(stderr, "vit %s: %s\n", command, problems.paths[i]);
        in->problems += problems.count;
        data_file_list_free(&problems);
        size_t prefix = strlen(arg);
        while (prefix > 1 && arg[prefix - 1] == '/') prefix--;
        for (size_t i = 0; i < files.count; i++) {
            const char *name = relative ? files.paths[i] + prefix + 1 : files.paths[i];
            if (cli_inputs_add(in, files.paths[i], name) != 0) {
                data_file_list_free(&files);
                goto nomem;
            }
        }
        data_file_list_free(&files);
    }
    if (in->count == 0 && !list) {
        /* Only directories were given (a file named is always an input) and
         * they hold nothing: a mistyped path or --ext is likelier than an
         * intended empty run, and "0 files" with status 0 hides it. */
        char where[2048], ext[512] = "";
        join_args(paths, num_paths, where, sizeof where);
        if (walk && walk->extensions) {
            size_t n = (size_t)snprintf(ext, sizeof ext, " with extension");
            for (size_t i = 0; i < walk->num_extensions && n < sizeof ext; i++)
                n += (size_t)snprintf(ext + n, sizeof ext - n, "%s%s", i ? ", " : " ",
                                      walk->extensions[i]);
        }
        fprintf(stderr, "vit %s: no images found in %s%s\n", command, where, ext);
        return -1;
    }
    return 0;
nomem:
    fprintf(stderr, "vit %s: out of memory\n", command);
    return -1;
}

int cli_inputs_collect(const char *command, const char *const *paths, int num_paths,
                       const data_walk_options *walk, cli_naming naming, cli_inputs *in) {
    return collect_paths(command, paths, num_paths, walk, naming, in, NULL);
}

int cli_inputs_gather(const char *command, const char *const *paths, int num_paths,
                      const data_walk_options *walk, cli_naming naming, const char *list, int nul,
                      cli_inputs *in) {
    if (!list && nul) {
        fprintf(stderr, "vit %s: -0 (--null) goes with --files-from\n", command);
        return -1;
    }
    if (!list) return collect_paths(command, paths, num_paths, walk, naming, in, NULL);
    size_t added;
    if (collect_paths(command, paths, num_paths, walk, naming, in, list) != 0 ||
        cli_inputs_read_list(command, list, nul, naming, in, &added) != 0)
        return -1;
    if (in->count == 0) {
        /* As "no images found": an empty list is likelier a find that
         * matched nothing than a run meant to do nothing. */
        const char *name = strcmp(list, "-") == 0 ? "standard input" : list;
        if (num_paths == 0)
            fprintf(stderr, "vit %s: no paths in --files-from %s\n", command, name);
        else
            fprintf(stderr, "vit %s: no images found in the PATHs given nor in --files-from %s\n",
                    command, name);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------- lists of paths (--files-from) */

/* An entry is kept to PATH_MAX bytes: longer is no path open(2) takes, and
 * a list that never ends a line must not grow memory without end. */
#define PATH_READER_MAX PATH_MAX

int cli_path_reader_open(const char *command, const char *list, int nul, cli_path_reader *r) {
    memset(r, 0, sizeof *r);
    r->nul = nul;
    r->fd = -1;
    if (strcmp(list, "-") == 0) {
        r->fd = STDIN_FILENO;
        r->name = "standard input";
    } else {
        /* Blocking open: a FIFO waits here for its writer, as `cat` would. */
        r->fd = open(list, O_RDONLY | O_CLOEXEC);
        r->name = list;
        r->owns_fd = 1;
        struct stat st;
        if (r->fd >= 0 && fstat(r->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
            close(r->fd);
            r->fd = -1;
            errno = EISDIR;
        }
        if (r->fd < 0) {
            fprintf(stderr, "vit %s: --files-from %s: cannot read: %s\n", command, list, strerror(errno));
            return -1;
        }
    }
    r->capacity = PATH_READER_MAX + 1;
    if (!(r->buf = malloc(r->capacity + 1))) {
        cli_path_reader_close(r);
        fprintf(stderr, "vit %s: out of memory\n", command);
        return -1;
    }
    return 0;
}

int cli_path_reader_fill(cli_path_reader *r) {
    if (r->eof) return 0;
    if (r->start > 0) { /* entries handed out: move the rest to the front */
        memmove(r->buf, r->buf + r->start, r->length - r->start);
        r->length -= r->start;
        r->start = 0;
    }
    if (r->length == r->capacity) return 0; /* a full entry waits for cli_path_reader_next */
    ssize_t got;
    do got = read(r->fd, r->buf + r->length, r->capacity - r->length);
    while (got < 0 && errno == EINTR && !cli_stop_requested());
    if (got < 0) return errno == EINTR ? 0 : -1;
    if (got == 0) r->eof = 1;
    r->length += (size_t)got;
    return 0;
}

/* Where the entry starting at r->start ends, and whether it was ended by
 * its separator (0: the buffer holds no separator yet). */
static size_t entry_end(const cli_path_reader *r, int *found) {
    const char *p = r->buf + r->start;
    const char *sep = memchr(p, r->nul ? '\0' : '\n', r->length - r->start);
    *found = sep != NULL;
    return sep ? (size_t)(sep - r->buf) : r->length;
}

int cli_path_reader_next(cli_path_reader *r, const char **path, const char **problem) {
    *problem = NULL;
    for (;;) {
        if (r->start >= r->length) return 0;
        int found;
        size_t end = entry_end(r, &found);
        if (r->skipping) { /* the rest of an overlong entry: dropped */
            r->start = found ? end + 1 : r->length;
            if (found) r->skipping = 0;
            if (!found && !r->eof) return 0;
            continue;
        }
        const size_t len = end - r->start;
        if (!found && len <= PATH_READER_MAX && !r->eof) return 0; /* more may come */
        char *entry = r->buf + r->start;
        if (len > PATH_READER_MAX) {
            /* Named by its start in messages and rows; the rest is skipped. */
            r->line++;
            r->skipping = 1;
            r->start = r->start + PATH_READER_MAX;
            entry[60] = '\0';
            snprintf(r->message, sizeof r->message,
                     "%s: %s %lu is longer than PATH_MAX (%d bytes)", r->name,
                     r->nul ? "entry" : "line", r->line, PATH_READER_MAX);
            snprintf(r->display, sizeof r->display, "%s...", entry);
            *path = r->display;
            *problem = r->message;
            return 1;
        }
        r->start = found ? end + 1 : end;
        r->line++;
        entry[len] = '\0'; /* the separator, or the byte after the data at the end */
        if (len == 0) { /* blank lines are skipped (so is an empty NUL entry) */
            continue;
        }
        *path = entry;
        if (!r->nul && strlen(entry) < len) {
            snprintf(r->message, sizeof r->message,
                     "%s: line %lu holds a NUL byte (a NUL-separated list needs -0)", r->name, r->line);
            *problem = r->message;
        } else if (!r->nul && entry[len - 1] == '\r') {
            /* Not stripped: a name may end in "\r", and a CRLF list would
             * otherwise open "a.jpg\r" and fail with a puzzling message. */
            snprintf(r->message, sizeof r->message,
                     "%s: line %lu ends in a carriage return (a CRLF list? strip it with "
                     "tr -d '\\r', or pass such names with -0)", r->name, r->line);
            *problem = r->message;
        }
        return 1;
    }
}

void cli_path_reader_close(cli_path_reader *r) {
    if (r->owns_fd && r->fd >= 0) close(r->fd);
    free(r->buf);
    memset(r, 0, sizeof *r);
    r->fd = -1;
}

int cli_inputs_read_list(const char *command, const char *list, int nul, cli_naming naming,
                         cli_inputs *in, size_t *added) {
    cli_path_reader r;
    *added = 0;
    if (cli_path_reader_open(command, list, nul, &r) != 0) return -1;
    int status = 0;
    for (;;) {
        const char *path, *problem;
        const int got = cli_path_reader_next(&r, &path, &problem);
        if (got == 0) {
            if (r.eof) break;
            if (cli_path_reader_fill(&r) != 0) {
                fprintf(stderr, "vit %s: --files-from %s: cannot read: %s\n", command, r.name,
                        strerror(errno));
                status = -1;
                break;
            }
            continue;
        }
        /* Before anything ran, a malformed list is a mistake to fix, not
         * an image that failed (--stream, which has begun, makes it a row). */
        if (problem) {
            fprintf(stderr, "vit %s: --files-from %s\n", command, problem);
            status = -1;
            break;
        }
        const char *slash = strrchr(path, '/');
        const char *name = naming == CLI_NAMES_OUTPUTS && slash && slash[1] ? slash + 1 : path;
        if (cli_inputs_add(in, path, name) != 0) {
            fprintf(stderr, "vit %s: out of memory\n", command);
            status = -1;
            break;
        }
        (*added)++;
    }
    cli_path_reader_close(&r);
    return status;
}
