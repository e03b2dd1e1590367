/* base_io.h — the small file I/O every module shares: reading a whole text
 * file under a size cap, writing a file atomically, and byte-order readers.
 *
 * Reading never blocks on what it is pointed at: files are opened with
 * O_NONBLOCK (a FIFO without a writer would wait forever in open(2)), then
 * read normally, so a pipe with a writer (--labels <(cmd)) still works.
 *
 * Writing is atomic: the bytes go to "<path>.tmp.<pid>.<n>" beside the
 * target (O_EXCL), are synced, and the file is renamed over path, so a
 * reader never sees half a file and a failed or killed run leaves the old
 * one. A target that is a device, FIFO, socket or directory is refused
 * first: the rename would replace it (as root, /dev/null itself).
 *
 *     base_atomic_file *f;
 *     if (base_atomic_open("out.npy", &f, &err) == BASE_OK &&
 *         base_atomic_write(f, bytes, n, &err) == BASE_OK)
 *         status = base_atomic_commit(f, &err);   // renamed into place
 *     else
 *         base_atomic_abort(f);                   // nothing left behind
 */
#ifndef BASE_IO_H
#define BASE_IO_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base_error.h"

/* Reads a whole text file of at most max_bytes into *text (NUL-terminated,
 * caller frees). With missing non-NULL, a file that does not exist sets
 * *missing and returns BASE_OK; otherwise it is BASE_E_IO. Directories and
 * files with NUL bytes are refused. */
base_status base_read_text_file(const char *path, size_t max_bytes, char **text, int *missing,
                               base_error *err);

/* fd, opened with O_NONBLOCK so that open(2) of a FIFO cannot wait for a
 * writer, as a stdio stream whose reads block again (a pipe with a writer
 * still works, and FUSE/NFS never answer EAGAIN); NULL with errno set when
 * it cannot be (fd is then still the caller's to close). */
FILE *base_fdopen_blocking(int fd);

/* What a file that is not a regular one is, for messages: "a FIFO",
 * "a directory", "a character device" ... (mode as stat gives it). */
const char *base_file_kind(unsigned mode);

/* A file being written atomically. */
typedef struct base_atomic_file base_atomic_file;

/* Whether path may be replaced by a finished file renamed over it: it does
 * not exist, or is a regular file or a symbolic link (the link is replaced,
 * its target left alone). A device, FIFO, socket or directory is refused. */
base_status base_output_replaceable(const char *path, base_error *err);

/* Creates the temporary file for path (mode 0666 minus umask), after
 * base_output_replaceable. */
base_status base_atomic_open(const char *path, base_atomic_file **out, base_error *err);

/* Appends size bytes. */
base_status base_atomic_write(base_atomic_file *f, const void *bytes, size_t size, base_error *err);

/* The file as a stdio stream, for writers that format as they go (created
 * on the first call; from then on write through it only). */
FILE *base_atomic_stream(base_atomic_file *f);

/* Flushes, syncs and renames the file into place (and syncs its directory),
 * and frees f, also on failure, when the temporary file is removed. */
base_status base_atomic_commit(base_atomic_file *f, base_error *err);

/* Removes the temporary file and frees f; NULL is allowed. */
void base_atomic_abort(base_atomic_file *f);

/* Writes bytes to path atomically. */
base_status base_write_file_atomic(const char *path, const void *bytes, size_t size,
                                  base_error *err);

/* Unsigned integers stored little- or big-endian at p. */
static inline uint16_t base_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t base_le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint32_t base_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}
static inline uint64_t base_le64(const uint8_t *p) {
    return (uint64_t)base_le32(p) | (uint64_t)base_le32(p + 4) << 32;
}

#endif
