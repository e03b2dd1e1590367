#include "hub_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int hub_cache_is_name(const char *text) {
    if (!text || !text[0] || text[0] == '.' || text[0] == '/') return 0;
    const char *slash = strchr(text, '/');
    return slash && slash > text && slash[1] && !strchr(slash + 1, '/');
}

static const char *env(const char *name) {
    const char *value = getenv(name);
    return value && value[0] ? value : NULL;
}

static vit_status fit(int written, size_t size, const char *what, vit_error *err) {
    if (written < 0 || (size_t)written >= size)
        return vit_error_set(err, VIT_E_ARG, "%s: path too long", what);
    return VIT_OK;
}

vit_status hub_cache_dir(char *out, size_t size, vit_error *err) {
    const char *value;
    if ((value = env("HF_HUB_CACHE"))) return fit(snprintf(out, size, "%s", value), size, value, err);
    if ((value = env("HF_HOME"))) return fit(snprintf(out, size, "%s/hub", value), size, value, err);
    if ((value = env("HOME")))
        return fit(snprintf(out, size, "%s/.cache/huggingface/hub", value), size, value, err);
    return vit_error_set(err, VIT_E_ARG, "cannot find the Hugging Face cache: none of HF_HUB_CACHE, "
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

/* The commit in a refs file: its first line, trimmed (empty: none). */
static void read_ref(const char *path, char *commit, size_t size) {
    commit[0] = '\0';
    FILE *fp = fopen(path, "r");
    if (!fp) return;
    if (fgets(commit, (int)size, fp)) commit[strcspn(commit, " \t\r\n")] = '\0';
    fclose(fp);
}

vit_status hub_cache_resolve(const char *name, const char *revision, char *out, size_t size,
                             vit_error *err) {
    if (!hub_cache_is_name(name))
        return vit_error_set(err, VIT_E_ARG, "'%s' is not a hub name (org/name)", name);
    const char *rev = revision ? revision : "main";
    if (!safe_revision(rev))
        return vit_error_set(err, VIT_E_ARG, "'%s' is not a revision name or commit hash", rev);
    char cache[4096], repo[4096 + 512], path[sizeof repo + 1024];
    vit_status status = hub_cache_dir(cache, sizeof cache, err);
    if (status != VIT_OK) return status;
    const char *slash = strchr(name, '/');
    status = fit(snprintf(repo, sizeof repo, "%s/models--%.*s--%s", cache, (int)(slash - name), name,
                          slash + 1),
                 sizeof repo, name, err);
    if (status != VIT_OK) return status;
    const char *base = strrchr(repo, '/') + 1;
    if (!is_dir(repo))
        return vit_error_set(err, VIT_E_IO, "%s is not in the Hugging Face cache (no %s in %s)", name,
                             base, cache);
    char commit[256];
    snprintf(path, sizeof path, "%s/refs/%s", repo, rev);
    read_ref(path, commit, sizeof commit);
    if (commit[0] && !safe_revision(commit))
        return vit_error_set(err, VIT_E_FORMAT, "%s: '%s' is not a commit hash", path, commit);
    const char *snapshot = commit[0] ? commit : rev;
    status = fit(snprintf(out, size, "%s/snapshots/%s", repo, snapshot), size, name, err);
    if (status != VIT_OK) return status;
    if (!is_dir(out)) {
        if (commit[0])
            return vit_error_set(err, VIT_E_IO, "%s: refs/%s names commit %s, but %s/%s/snapshots "
                                 "has no such snapshot", name, rev, commit, cache, base);
        return vit_error_set(err, VIT_E_IO, "%s at revision %s is not in the Hugging Face cache "
                             "(no refs/%s or snapshots/%s in %s/%s)", name, rev, rev, rev, cache, base);
    }
    return VIT_OK;
}
