/* outputs.h — writing outputs safely: the user's files no output may
 * overwrite, the lock on an output being written, parent directories, and
 * text as CSV fields and JSON strings (private to cli/; cli/outputs.c) */
#ifndef CLI_OUTPUTS_H
#define CLI_OUTPUTS_H

#include <stdio.h>
#include <sys/types.h>
#include "vit.h"

/* ------------------------------------------------------ the user's files
 * Files a run reads and must never write: the model's files and the inputs.
 * They are compared with outputs by device and inode, so another spelling
 * of a path, a symlink or a hard link is caught too. Every command checks
 * every output it plans against them before it writes anything. */
typedef struct cli_protected_file {
    dev_t dev;
    ino_t ino;
    char *path;
    int is_input; /* 0: a model file, 1: an input, 2: the --files-from list */
} cli_protected_file;

typedef struct cli_protected {
    cli_protected_file *files;
    size_t count, capacity;
    int sorted;
    /* Inputs are only stat'ed when some planned output already exists (a
     * new output cannot be an input): a big directory costs nothing extra. */
    const char *const *inputs;
    size_t num_inputs;
    int inputs_added;
} cli_protected;

/* The weights file of model, config.json and preprocessor_config.json beside
 * it, and labels_path (NULL: none). -1 when out of memory. */
int cli_protect_model(cli_protected *p, const vit_model *model, const char *labels_path);

/* One file (missing: ignored), named in messages as a model file or an input. */
int cli_protect_file(cli_protected *p, const char *path, int is_input);

/* The --files-from list (NULL: none; "-": standard input, protected when
 * it is a regular file), so that -o cannot cut the list the user wrote.
 * -1 (printed) when out of memory. */
int cli_protect_list(const char *command, cli_protected *p, const char *list);

/* Input files (paths borrowed: they must outlive p). */
void cli_protect_inputs(cli_protected *p, const char *const *paths, size_t count);

/* Both of the above (model NULL: no model), printing "out of memory" on failure. */
int cli_protect_run(const char *command, cli_protected *p, const vit_model *model,
                    const char *labels_path, const char *const *inputs, size_t num_inputs);

/* 0 when writing path (existing or not) harms none of p's files; otherwise
 * prints "vit CMD: PATH: would overwrite ..." and returns -1. */
int cli_check_output(const char *command, cli_protected *p, const char *path);

void cli_protected_free(cli_protected *p);

/* An exclusive lock (flock) held while a run writes an output, so a second
 * vit process writing the same output stops at once instead of mixing its
 * rows or files with ours. The kernel drops it when the process ends, even
 * by kill -9. Where it lives depends on how the output is written:
 *  - a directory (per-input outputs): the directory itself;
 *  - a file written in place (classify -o, appended batch by batch): the
 *    file itself (opened without truncating: truncation comes after);
 *  - a file replaced by rename (atomic writers): "PATH.lock" beside it, as
 *    the rename replaces PATH's inode and a lock on it would not hold. The
 *    lock file is removed at the end (when empty, as vit leaves it); one
 *    left by a killed run blocks nothing and the next run removes it.
 * Only regular files and directories are locked (-o /dev/null is not). */
typedef struct cli_lock {
    int held, fd;
    char *remove_path; /* the PATH.lock file to remove on release */
} cli_lock;

/* Takes the lock for path (in_place: the file is written in place).
 * Prints one line ("... is being written by another vit process", or why
 * the output cannot be written) and returns -1 on failure. */
int cli_lock_output(const char *command, const char *path, int in_place, cli_lock *lock);

/* Releases the lock (removing a PATH.lock file); a zeroed lock is allowed. */
void cli_unlock_output(cli_lock *lock);

/* Creates the directories leading to path (mkdir -p of its dirname). */
int cli_make_parents(const char *path);

/* s as one CSV field, quoted when it holds a comma, quote or line break
 * (malloc'd; NULL when out of memory). */
char *cli_csv_quote(const char *s);

/* Writes s to out as one CSV field; -1 when out of memory (nothing written). */
int cli_csv_write_field(FILE *out, const char *s);

/* s as vitc writes every string into JSON: valid UTF-8 whatever the bytes,
 * and reversible. Each byte that is not part of a valid UTF-8 sequence
 * becomes the four characters \xNN (lower-case hex) and each backslash two
 * backslashes; everything else is kept. (malloc'd; NULL when out of memory.) */
char *cli_json_text(const char *s);

/* The bytes cli_json_text(s) was made from (malloc'd; NULL when out of
 * memory); a backslash not starting \\ or \xNN is kept as it is. */
char *cli_json_text_decode(const char *s);

#endif
