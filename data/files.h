/* files.h — which files a run reads, in what order, and in batches.
 *
 * Directory walks are sorted byte-wise and keep regular image files only
 * (FIFOs, sockets and devices are left out; symlink loops are not
 * followed); an unreadable subdirectory is reported and the walk goes on
 * (data_walk_collect). The loader decodes and preprocesses a batch of
 * files at a time on a background thread while the model runs the last
 * one; a file that fails gets its error, the rest of the batch goes on.
 * Labels come one per line, or as a CSV read by the program's one RFC 4180
 * reader (data_csv).
 *
 *     data_file_list files = {0};
 *     data_walk("photos/", NULL, &files, &err);
 *     data_loader_create(&pre, (const char *const *)files.paths, files.count, 16, 1, 1,
 *                        &loader, &err);
 *     while (data_loader_next(loader, &batch) > 0) { ... batch.images ... }
 */
#ifndef DATA_FILES_H
#define DATA_FILES_H

#include <stddef.h>
#include <stdint.h>

#include "preprocess.h"
#include "base_error.h"

/* The one CSV reader of the program (RFC 4180): fields separated by commas,
 * records ended by "\n" or "\r\n", a field in double quotes may hold commas,
 * quotes (doubled) and line breaks. Reads from memory (text, len: no NUL
 * needed), one record at a time. */
typedef struct data_csv {
    const char *text, *p, *end;
    int line;            /* the line the next record starts on, 1-based */
    int record_line;     /* the line the last record (or damage) started on */
    size_t record_start; /* its byte offset in text */
    int terminated;      /* the last record ended with a line break (0: at the end of text) */
    int unterminated;    /* the text ended inside a quoted field (with BASE_E_FORMAT) */
    char **fields;       /* the last record's fields, NUL-terminated, quotes undone */
    size_t *lengths;     /* their lengths (a field may hold a NUL byte) */
    size_t num_fields, capacity;
} data_csv;

void data_csv_init(data_csv *csv, const char *text, size_t len);

/* Reads the next record into csv->fields. *got is 1 for a record, 0 at the
 * end of the text. A damaged record (a quote inside an unquoted field, text
 * after a closing quote, a lone carriage return, a quoted field the text
 * ends inside) is BASE_E_FORMAT naming name and its line; callers decide
 * whether a damaged or unterminated last record is a cut they can drop. */
base_status data_csv_next(data_csv *csv, const char *name, int *got, base_error *err);
void data_csv_free(data_csv *csv);

/* Splits text into one label per line ('\n' or "\r\n"; a final newline does
 * not start another label; a leading UTF-8 byte-order mark is dropped). *labels (count + 1 entries, NULL-terminated)
 * and each label are malloc'd: free with data_labels_free. More than
 * max_labels lines is BASE_E_LIMIT. name is used in messages. */
base_status data_labels_parse(const char *text, const char *name, int max_labels, char ***labels,
                             int *count, base_error *err);
void data_labels_free(char **labels, int count);

/* Rows of a labels CSV (`file,class_index[,...]`, RFC 4180 quoting; an
 * optional header row whose second field is not a number; blank lines
 * skipped). files[i] is as written in the CSV (relative to the image
 * directory), classes[i] in 0..num_classes-1. */
typedef struct data_labelled_files {
    char **files;
    int *classes;
    size_t count, capacity;
} data_labelled_files;

/* Parses a labels CSV held in text (len bytes, no NUL needed) into out
 * (appended). A row without a class index, or with one outside
 * 0..num_classes-1, is BASE_E_FORMAT naming name and the line; no rows at all
 * is BASE_E_FORMAT too. */
base_status data_labels_csv_parse(const char *text, size_t len, const char *name, int num_classes,
                                 data_labelled_files *out, base_error *err);
void data_labelled_files_free(data_labelled_files *list);

/* Appends one (file, class) pair (file copied); -1 when out of memory. */
int data_labelled_files_add(data_labelled_files *list, const char *file, int class_index);

/* A growable list of paths (each owned). */
typedef struct data_file_list {
    char **paths;
    size_t count, capacity;
} data_file_list;

typedef struct data_walk_options {
    int recursive;                    /* descend into subdirectories */
    const char *const *extensions;    /* NULL: the image formats we decode */
    size_t num_extensions;
} data_walk_options;

/* Appends to out the image files under path (or path itself when it is not
 * a directory), in byte-wise sorted order: regular files (or symlinks to
 * them) whose extension matches case-insensitively; FIFOs, sockets and
 * devices are left out whatever their name (opening a FIFO blocks until a
 * writer comes); a dangling symlink with an image extension is kept so that
 * reading it reports it. Hidden entries (".name") are skipped, symlinks
 * followed but never around a loop. options NULL: recursive, default
 * extensions. A directory under path that cannot be listed fails the walk;
 * data_walk_collect goes on instead. */
base_status data_walk(const char *path, const data_walk_options *options, data_file_list *out,
                     base_error *err);

/* The same, but a directory that cannot be opened (path itself, or one
 * under it) adds one message to problems ("DIR: cannot open directory:
 * REASON") and the walk goes on with the rest; out then holds every file
 * that could be listed. Errors are only a path that does not exist and
 * running out of memory. */
base_status data_walk_collect(const char *path, const data_walk_options *options,
                             data_file_list *out, data_file_list *problems, base_error *err);

/* Appends the names (not paths) of path's non-hidden subdirectories, sorted. */
base_status data_list_subdirs(const char *path, data_file_list *out, base_error *err);

/* Whether path ends in one of the extensions (options NULL: the defaults). */
int data_has_image_extension(const char *path, const data_walk_options *options);

/* Frees every path and the list itself, leaving it empty. */
void data_file_list_free(data_file_list *list);

/* One batch handed out by a data_loader. Files that could not be read are
 * left out of images; row says where each file's image went. */
typedef struct data_batch {
    size_t first;            /* index (in the loader's paths) of the batch's first file */
    int count;               /* files in the batch */
    int num_good;            /* images decoded, packed at the front of images */
    const float *images;     /* num_good x 3 x height x width, preprocessed */
    int height, width;       /* of every image: the recipe's output size */
    /* Writable so the caller can still fail a file after the forward pass
     * (the CLI does when its outputs are not finite); the loader refills
     * both at the next data_loader_next. */
    int *row;          /* per file: its image's index in images, or -1 */
    base_error *errors; /* per file: why it failed, where row is -1 */
} data_batch;

typedef struct data_loader data_loader;

/* Prepares to load paths (which must outlive the loader) in batches of
 * batch_size. With prefetch, one background thread prepares the next batch
 * while the caller works on the current one; without, each batch is decoded
 * when asked for, with `threads` threads. */
base_status data_loader_create(const data_preprocess *pre, const char *const *paths, size_t count,
                              int batch_size, int threads, int prefetch, data_loader **out,
                              base_error *err);

/* For work shared between processes: a loader whose batches start where
 * schedule says (called once per batch, on the loader's thread with
 * prefetch, without any lock held: it may wait). It returns the index of
 * the batch's first file (batches are batch_size files from there, fewer
 * at the end of paths), or DATA_LOADER_END when there is no more. Batches
 * are handed out in the order schedule gave them. */
#define DATA_LOADER_END ((size_t)-1)
typedef size_t (*data_loader_schedule)(void *context);
base_status data_loader_create_scheduled(const data_preprocess *pre, const char *const *paths,
                                        size_t count, int batch_size, int threads, int prefetch,
                                        data_loader_schedule schedule, void *context,
                                        data_loader **out, base_error *err);

/* Hands out the next batch (valid until the next call) and returns its file
 * count; 0 when every file has been handed out. */
int data_loader_next(data_loader *loader, data_batch *batch);

/* Points a loader made without prefetch or schedule at new paths, decoded
 * with `threads` threads, keeping its buffers (a stream of paths arriving
 * in batches allocates them once): the next batch starts at paths[0].
 * Returns 0, or -1 (nothing changed) for a loader with a thread or a
 * schedule, which must be made again. */
int data_loader_restart(data_loader *loader, const char *const *paths, size_t count, int threads);

/* Stops the background thread and frees; NULL is allowed. */
void data_loader_free(data_loader *loader);

/* A stable 64-bit hash (FNV-1a) of a string: the same on every machine and
 * run, for splitting work into shards. */
uint64_t data_hash(const char *text);

#endif
