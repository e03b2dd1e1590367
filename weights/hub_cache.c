#include "hub_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base_io.h"

int hub_cache_is_name(const char *text) {
    if (!text || !text[0] || text[0] == '.' || text[0] == '/') return 0;
    const char *slash = strchr(text, '/');
    return slash && slash > text && slash[1] && !strchr(slash + 1, '/');
}

static const char *env(const char *name) {
    const char *value = getenv(name);
    return value && value[0] ? value : NULL;
}

static base_status fit(int written, size_t size, const char *what, base_error *err) {
    if (written < 0 || (size_t)written >= size)
        return base_error_set(err, BASE_E_ARG, "%s: path too long", what);
    return BASE_OK;
}

base_status hub_cache_dir(char *out, size_t size, base_error *err) {
    const char *value;
    if ((value = env("HF_HUB_CACHE"))) return fit(snprintf(out, size, "%s", value), size, value, err);
    if ((value = env("HF_HOME"))) return fit(snprintf(out, size, "%s/hub", value), size, value, err);
    if ((value = env("HOME")))
        return fit(snprintf(out, size, "%s/.cache/huggingface/hub", value), size, value, err);
    return base_error_set(err, BASE_E_ARG, "cannot find the Hugging Face cache: none of HF_HUB_CACHE, "
                                         "HF_HOME and HOME is set");
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A revision or commit used as a path component: no "..", no leading '/',
 * no empty component. Branch names may hold '/' (refs/pr/1). */
static int safe_revision(const char *rev) {
    if (!rev[0] || rev[0] == '/' || rev[strlen(rev) - 1] == '/' || strstr(rev, "//")) return 0;
    for (const char *p = rev; p; p = strchr(p, '/')) {
        if (*p == '/') p++;
        if (p[0] == '.' && (p[1] == '/' || p[1] == '\0' || (p[1] == '.' && (p[2] == '/' || !p[2]))))
            return 0;
    }
    return 1;
}

/* A refs file holds one commit hash and a newline: anything much larger
 * is not one. */
#define HUB_REF_MAX_BYTES 1024

/* Checks the refs file fd opened: a directory is no ref (refs/pr/ when
 * asked for "pr"; *none set), anything but a small regular file an error. */
static base_status check_ref_file(int fd, const char *path, int *none, base_error *err) {
    struct stat sb;
    *none = 0;
    if (fstat(fd, &sb) != 0)
        return base_error_set(err, BASE_E_IO, "%s: cannot stat (%s)", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) {
        *none = 1;
        return BASE_OK;
    }
    if (!S_ISREG(sb.st_mode))
        return base_error_set(err, BASE_E_IO, "%s: not a regular file (%s)", path,
                             base_file_kind(sb.st_mode));
    if (sb.st_size > HUB_REF_MAX_BYTES)
        return base_error_set(err, BASE_E_FORMAT, "%s: %lld bytes; a ref holds one commit hash",
                             path, (long long)sb.st_size);
    return BASE_OK;
}

/* The commit in a refs file: its first line, trimmed (empty: no such ref).
 * Opened as images are: without blocking (open(2) of a FIFO with no
 * writer waits forever), regular files only, small. */
static base_status read_ref(const char *path, char *commit, size_t size, base_error *err) {
    commit[0] = '\0';
    const int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        const int e = errno;
        struct stat sb;
        if (e == ENOENT || e == ENOTDIR) return BASE_OK;
        if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode)) /* a socket: ENXIO */
            return base_error_set(err, BASE_E_IO, "%s: not a regular file (%s)", path,
                                 base_file_kind(sb.st_mode));
        return base_error_set(err, BASE_E_IO, "%s: cannot open (%s)", path, strerror(e));
    }
    int none;
    base_status status = check_ref_file(fd, path, &none, err);
    char text[HUB_REF_MAX_BYTES + 1];
    ssize_t got = 0;
    if (status == BASE_OK && !none) {
        do got = read(fd, text, sizeof text - 1);
        while (got < 0 && errno == EINTR);
        if (got < 0) status = base_error_set(err, BASE_E_IO, "%s: read error (%s)", path, strerror(errno));
    }
    close(fd);
    if (status != BASE_OK || none) return status;
    text[got] = '\0';
    text[strcspn(text, " \t\r\n")] = '\0';
    if (strlen(text) >= size)
        return base_error_set(err, BASE_E_FORMAT, "%s: '%.60s...' is not a commit hash", path, text);
    memcpy(commit, text, strlen(text) + 1);
    return BASE_OK;
}

base_status hub_cache_resolve(const char *name, const char *revision, char *out, size_t size,
                             base_error *err) {
    if (!hub_cache_is_name(name))
        return base_error_set(err, BASE_E_ARG, "'%s' is not a hub name (org/name)", name);
    const char *rev = revision ? revision : "main";
    if (!safe_revision(rev))
        return base_error_set(err, BASE_E_ARG, "'%s' is not a revision name or commit hash", rev);
    char cache[4096], repo[4096 + 512], path[sizeof repo + 1024];
    base_status status = hub_cache_dir(cache, sizeof cache, err);
    if (status != BASE_OK) return status;
    const char *slash = strchr(name, '/');
    status = fit(snprintf(repo, sizeof repo, "%s/models--%.*s--%s", cache, (int)(slash - name), name,
                          slash + 1),
                 sizeof repo, name, err);
    if (status != BASE_OK) return status;
    const char *base = strrchr(repo, '/') + 1;
    if (!is_dir(repo))
        return base_error_set(err, BASE_E_IO, "%s is not in the Hugging Face cache (no %s in %s)", name,
                             base, cache);
    char commit[256];
    snprintf(path, sizeof path, "%s/refs/%s", repo, rev);
    status = read_ref(path, commit, sizeof commit, err);
    if (status != BASE_OK) return status;
    if (commit[0] && !safe_revision(commit))
        return base_error_set(err, BASE_E_FORMAT, "%s: '%s' is not a commit hash", path, commit);
    const char *snapshot = commit[0] ? commit : rev;
    status = fit(snprintf(out, size, "%s/snapshots/%s", repo, snapshot), size, name, err);
    if (status != BASE_OK) return status;
    if (!is_dir(out)) {
        if (commit[0])
            return base_error_set(err, BASE_E_IO, "%s: refs/%s names commit %s, but %s/%s/snapshots "
                                 "has no such snapshot", name, rev, commit, cache, base);
        return base_error_set(err, BASE_E_IO, "%s at revision %s is not in the Hugging Face cache "
                             "(no refs/%s or snapshots/%s in %s/%s)", name, rev, rev, rev, cache, base);
    }
    return BASE_OK;
}
