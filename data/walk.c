/* Directory walking: the same files in the same order on every run, however
 * the filesystem lists them, no endless descent through symlink loops, and
 * nothing that could block (FIFOs, sockets, devices are left out). */
#include "data.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char *const DEFAULT_EXTENSIONS[] = {"jpg", "jpeg", "png", "bmp", "gif", "tga",
                                                 "pnm", "ppm", "pgm", "psd", "webp"};

int data_has_image_extension(const char *path, const data_walk_options *options) {
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash + 1 : path, '.');
    if (!dot || !dot[1]) return 0;
    const char *const *list = DEFAULT_EXTENSIONS;
    size_t count = sizeof DEFAULT_EXTENSIONS / sizeof *DEFAULT_EXTENSIONS;
    if (options && options->extensions) {
        list = options->extensions;
        count = options->num_extensions;
    }
    for (size_t i = 0; i < count; i++) {
        const char *ext = list[i][0] == '.' ? list[i] + 1 : list[i];
        if (strcasecmp(dot + 1, ext) == 0) return 1;
    }
    return 0;
}

static base_status push(data_file_list *list, const char *path, base_error *err) {
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? list->capacity * 2 : 256;
        char **grown = realloc(list->paths, capacity * sizeof *grown);
        if (!grown) return base_error_set(err, BASE_E_NOMEM, "out of memory listing files");
        list->paths = grown;
        list->capacity = capacity;
    }
    if (!(list->paths[list->count] = strdup(path)))
        return base_error_set(err, BASE_E_NOMEM, "out of memory listing files");
    list->count++;
    return BASE_OK;
}

/* The directories being walked, outermost first, to recognise a loop. */
typedef struct dir_stack {
    dev_t dev[64];
    ino_t ino[64];
    int depth;
} dir_stack;

static int on_stack(const dir_stack *stack, const struct stat *st) {
    for (int i = 0; i < stack->depth; i++)
        if (stack->dev[i] == st->st_dev && stack->ino[i] == st->st_ino) return 1;
    return 0;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds "PATH: cannot open directory: REASON" to problems, or, with no
 * list to collect them in, fails the walk with it. */
static base_status dir_problem(const char *dir, int error, data_file_list *problems,
                              base_error *err) {
    if (!problems)
        return base_error_set(err, BASE_E_IO, "%s: cannot open directory: %s", dir, strerror(error));
    char message[4200];
    snprintf(message, sizeof message, "%s: cannot open directory: %s", dir, strerror(error));
    return push(problems, message, err);
}

static base_status walk_dir(const char *dir, const struct stat *dir_st, const data_walk_options *options,
                           dir_stack *stack, data_file_list *out, data_file_list *problems,
                           base_error *err) {
    if (on_stack(stack, dir_st) || stack->depth == 64) return BASE_OK; /* loop or absurd depth */
    DIR *d = opendir(dir);
    if (!d) return dir_problem(dir, errno, problems, err);
    stack->dev[stack->depth] = dir_st->st_dev;
    stack->ino[stack->depth] = dir_st->st_ino;
    stack->depth++;

    /* Read all names first, then visit them sorted, so the order does not
     * depend on the filesystem. */
    data_file_list names = {0};
    base_status status = BASE_OK;
    struct dirent *entry;
    while (status == BASE_OK && (entry = readdir(d)))
        if (entry->d_name[0] != '.') status = push(&names, entry->d_name, err);
    closedir(d);
    /* An empty directory has no array at all: qsort must not see NULL. */
    if (status == BASE_OK && names.count > 1)
        qsort(names.paths, names.count, sizeof *names.paths, compare_names);

    const int recursive = !options || options->recursive;
    for (size_t i = 0; status == BASE_OK && i < names.count; i++) {
        size_t len = strlen(dir) + strlen(names.paths[i]) + 2;
        char *path = malloc(len);
        if (!path) { status = base_error_set(err, BASE_E_NOMEM, "out of memory listing files"); break; }
        snprintf(path, len, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", names.paths[i]);
        struct stat st;
        if (stat(path, &st) != 0) {
            /* A dangling link or a file removed meanwhile: keep it if it looks
             * like an image, so the run reports it instead of hiding it. */
            if (data_has_image_extension(path, options)) status = push(out, path, err);
        } else if (S_ISDIR(st.st_mode)) {
            if (recursive) status = walk_dir(path, &st, options, stack, out, problems, err);
        } else if (S_ISREG(st.st_mode) && data_has_image_extension(path, options)) {
            /* Regular files only: opening a FIFO waits for a writer forever,
             * and sockets and devices are not images whatever their name. */
            status = push(out, path, err);
        }
        free(path);
    }
    data_file_list_free(&names);
    stack->depth--;
    return status;
}

base_status data_walk_collect(const char *path, const data_walk_options *options,
                             data_file_list *out, data_file_list *problems, base_error *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return base_error_set(err, BASE_E_IO, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return push(out, path, err);
    dir_stack stack = {.depth = 0};
    const size_t first = out->count;
    base_status status = walk_dir(path, &st, options, &stack, out, problems, err);
    /* Sorting the full paths keeps files and subdirectories interleaved the
     * way a sorted listing of relative paths shows them. */
    if (status == BASE_OK && out->count - first > 1)
        qsort(out->paths + first, out->count - first, sizeof *out->paths, compare_names);
    return status;
}

base_status data_walk(const char *path, const data_walk_options *options, data_file_list *out,
                     base_error *err) {
    return data_walk_collect(path, options, out, NULL, err);
}

base_status data_list_subdirs(const char *path, data_file_list *out, base_error *err) {
    DIR *d = opendir(path);
    if (!d) return base_error_set(err, BASE_E_IO, "%s: cannot open directory: %s", path, strerror(errno));
    base_status status = BASE_OK;
    const size_t first = out->count;
    struct dirent *entry;
    while (status == BASE_OK && (entry = readdir(d))) {
        if (entry->d_name[0] == '.') continue;
        size_t len = strlen(path) + strlen(entry->d_name) + 2;
        char *full = malloc(len);
        if (!full) { status = base_error_set(err, BASE_E_NOMEM, "out of memory"); break; }
        snprintf(full, len, "%s/%s", path, entry->d_name);
        struct stat st;
        if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) status = push(out, entry->d_name, err);
        free(full);
    }
    closedir(d);
    if (status == BASE_OK && out->count - first > 1)
        qsort(out->paths + first, out->count - first, sizeof *out->paths, compare_names);
    return status;
}

void data_file_list_free(data_file_list *list) {
    for (size_t i = 0; i < list->count; i++) free(list->paths[i]);
    free(list->paths);
    memset(list, 0, sizeof *list);
}
