/* inputs.h — the image files a command works on: PATH arguments walked,
 * --files-from lists, and the reader classify --stream takes paths from
 * (private to cli/; cli/inputs.c) */
#ifndef CLI_INPUTS_H
#define CLI_INPUTS_H

#include <stddef.h>
#include "vit.h"

/* The image files a command works on: where to read each, and the name it
 * goes by in rows and output file names. */
typedef struct cli_inputs {
    char **paths, **names;
    size_t count, capacity;
    size_t problems; /* directories that could not be listed (each reported): exit 2 */
} cli_inputs;

/* How cli_inputs_collect names files. */
typedef enum cli_naming {
    CLI_NAMES_ROWS,   /* relative to the directory when one PATH is given, else the path */
    CLI_NAMES_OUTPUTS /* relative to its directory argument; a file given itself: its base name */
} cli_naming;

/* Appends copies of path and name; -1 when out of memory. */
int cli_inputs_add(cli_inputs *in, const char *path, const char *name);
void cli_inputs_free(cli_inputs *in);

/* Adds the files the command-line PATHs name: a file is taken whatever its
 * extension (a missing one, or a FIFO, fails later, as a bad file), a
 * directory is walked for regular files. A directory in the tree that
 * cannot be listed is printed on one line, counted in in->problems and left
 * out; the rest goes on. Prints one line and returns -1 on failure, and
 * when nothing at all was found ("no images found in DIR"). */
int cli_inputs_collect(const char *command, const char *const *paths, int num_paths,
                       const data_walk_options *walk, cli_naming naming, cli_inputs *in);

/* --files-from FILE and -0: a list of image paths instead of, or after,
 * the PATH arguments (every command that takes PATHs). */
#define CLI_FILES_FROM_OPTION \
    {"files-from", 0, 1, "FILE", "image paths from FILE, one a line ('-': stdin)"}
#define CLI_NULL_OPTION {"null", '0', 0, "", "--files-from entries end in NUL (find -print0)"}

/* Reads a list of paths, one entry at a time, from a file, a FIFO or
 * standard input: for --files-from (to its end) and classify --stream (as
 * the entries arrive; poll fd, then cli_path_reader_fill). */
typedef struct cli_path_reader {
    int fd, owns_fd;
    int nul;           /* entries end in '\0', else in '\n' */
    int eof, skipping; /* skipping: inside an overlong entry */
    const char *name;  /* the list as messages name it ("standard input" for -) */
    char *buf;
    size_t start, length, capacity;
    unsigned long line; /* entries seen so far (line number of the last one) */
    char message[4608], display[80];
} cli_path_reader;

/* Opens list ("-": standard input). Prints one line naming it and returns
 * -1 when it cannot be read. */
int cli_path_reader_open(const char *command, const char *list, int nul, cli_path_reader *r);

/* One read(2) of what is there (blocks if nothing is: poll first to wait
 * with a timeout); sets r->eof at the end. -1 on a read error (errno). */
int cli_path_reader_fill(cli_path_reader *r);

/* The next whole entry already read: returns 1 with *path (valid until the
 * next call), 0 when more input is needed (or, with r->eof, the list is
 * done). Empty entries are skipped. An entry that cannot be a path gets
 * *problem, one line naming the list and line: longer than PATH_MAX (*path
 * then shows its start; the rest is skipped), or in line mode holding a NUL
 * byte or ending in "\r" (not stripped: a CRLF list is refused rather than
 * silently read as other names). The last entry needs no separator. */
int cli_path_reader_next(cli_path_reader *r, const char **path, const char **problem);
void cli_path_reader_close(cli_path_reader *r);

/* Appends the paths listed in list (--files-from; nul: -0) to in as files,
 * never walked, named as listed (CLI_NAMES_OUTPUTS: by base name, as a file
 * argument); *added counts them. A list that cannot be read or holds an
 * entry with a problem is one line and -1. */
int cli_inputs_read_list(const char *command, const char *list, int nul, cli_naming naming,
                         cli_inputs *in, size_t *added);

/* cli_inputs_collect of the PATHs, then the list (NULL: none): the usual
 * errors, and when both together give no image at all one line saying so. */
int cli_inputs_gather(const char *command, const char *const *paths, int num_paths,
                      const data_walk_options *walk, cli_naming naming, const char *list, int nul,
                      cli_inputs *in);

#endif
