/* test_util.h — helpers for tests that run the built vit program, and for
 * reading fixtures and comparing with them. */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base_io.h"
#include "vit.h"
#include "weights.h"

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

/* Tensor `name` of f as float32 (malloc'd; the test fails if it is absent);
 * with out non-NULL also its description. */
static inline float *tensor_f32(const weights_file *f, const char *name,
                                const weights_tensor **out) {
    const weights_tensor *t = weights_find(f, name);
    cr_assert(t, "%s has no '%s'", weights_path(f), name);
    float *values = malloc(t->numel * sizeof(float));
    base_error err;
    cr_assert(weights_to_f32(f, t, values, &err) == BASE_OK, "%s", err.message);
    if (out) *out = t;
    return values;
}

/* max |a - b| over n values; NaN counts as the worst. */
static inline float max_abs_diff(const float *a, const float *b, size_t n) {
    float worst = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float d = fabsf(a[i] - b[i]);
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

/* A JSON file, parsed (the test fails if it cannot be read or parsed). */
static inline cJSON *read_json(const char *path) {
    char *text = NULL;
    int missing = 0;
    base_error err;
    cr_assert(base_read_text_file(path, 1 << 20, &text, &missing, &err) == BASE_OK && !missing,
              "cannot read %s: %s", path, missing ? "missing" : err.message);
    cJSON *json = cJSON_Parse(text);
    free(text);
    cr_assert(json, "%s: bad JSON", path);
    return json;
}

/* A fixture case directory (tests/gen_parity.py, tests/gen_family.py): the
 * model it holds and its expected.safetensors. */
static inline void open_case(const char *dir, vit_model **model, weights_file **expected) {
    char path[1024 + 32];
    base_error err;
    cr_assert(vit_model_load(dir, NULL, model, &err) == BASE_OK, "%s: %s", dir, err.message);
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    cr_assert(weights_open(path, expected, &err) == BASE_OK, "%s", err.message);
}

static inline int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* A test suite working in a fresh /tmp/vitc-NAME-XXXXXX, removed after each
 * test: defines `dir` and the suite NAME. */
#define TEMP_DIR_SUITE(NAME)                                                 \
    static char dir[64];                                                     \
    static void make_dir(void) {                                             \
        snprintf(dir, sizeof dir, "/tmp/vitc-" #NAME "-XXXXXX");             \
        cr_assert(mkdtemp(dir));                                             \
    }                                                                        \
    static void remove_dir(void) { shell("rm -rf '%s'", dir); }              \
    TestSuite(NAME, .init = make_dir, .fini = remove_dir)

/* dir/in/ with count + 1 photos: img001.png .. (the apple fixture) and
 * img000.png (the polar bears). */
static inline void make_photos(const char *dir, int count) {
    shell("mkdir -p %s/in && for i in $(seq -w 1 %d); do cp %s %s/in/img$i.png; done && cp %s %s/in/img000.png",
          dir, count, VITC_SOURCE_DIR "/tests/fixtures/real/apple.png", dir,
          VITC_SOURCE_DIR "/tests/fixtures/real/polars.png", dir);
}

static inline int count_file_lines(const char *path) {
    static char text[1 << 20];
    slurp(path, text, sizeof text);
    return count_lines(text);
}

/* Starts "vit ARGS..." (argv: NULL-terminated, without the program) with
 * its output discarded; returns the child's pid. */
static inline pid_t spawn_vit(const char *const *args) {
    const char *argv[64] = {VIT};
    int n = 1;
    for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        execv(VIT, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits (up to about 60 s) until process pid catches signo, i.e. has
 * installed its handler (SigCgt in /proc/PID/status); 0 when it did. */
static inline int wait_until_catching(pid_t pid, int signo) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    const struct timespec tick = {0, 1000000};
    for (int waited = 0; waited < 60000; waited++) {
        FILE *fp = fopen(path, "r");
        unsigned long long caught = 0;
        while (fp && fgets(line, sizeof line, fp))
            if (sscanf(line, "SigCgt: %llx", &caught) == 1) break;
        if (fp) fclose(fp);
        if (caught >> (signo - 1) & 1) return 0;
        nanosleep(&tick, NULL);
    }
    return -1;
}

#endif
