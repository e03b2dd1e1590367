/* test_util.h — helpers for tests that run the built vit program. */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VIT VITC_BINARY_DIR "/vit"

typedef struct run_result {
    int status;
    char out[1 << 20], err[65536];
} run_result;

/* Reads a whole file into buf (empty if it cannot be read). */
static inline void slurp(const char *path, char *buf, size_t size) {
    FILE *fp = fopen(path, "r");
    size_t n = fp ? fread(buf, 1, size - 1, fp) : 0;
    buf[n] = '\0';
    if (fp) fclose(fp);
}

/* Runs "vit ARGS" with no standard input; returns its exit status and
 * output (a static buffer, overwritten by the next call). */
static inline run_result *run(const char *args) {
    static run_result r;
    char cmd[8192], out_path[64], err_path[64];
    snprintf(out_path, sizeof out_path, "/tmp/vitc-test-out.%d", (int)getpid());
    snprintf(err_path, sizeof err_path, "/tmp/vitc-test-err.%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s </dev/null", VIT, args, out_path, err_path);
    int raw = system(cmd);
    cr_assert(WIFEXITED(raw), "'%s' did not exit normally", cmd);
    r.status = WEXITSTATUS(raw);
    slurp(out_path, r.out, sizeof r.out);
    slurp(err_path, r.err, sizeof r.err);
    remove(out_path);
    remove(err_path);
    return &r;
}

/* Runs a shell command, asserting it succeeds. */
static inline void shell(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void shell(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    cr_assert(system(cmd) == 0, "command failed: %s", cmd);
}

static inline int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

#endif
