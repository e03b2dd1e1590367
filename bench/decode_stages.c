/* decode_stages.c — one photo's decode and preprocessing, stage by stage
 * (bench/oneshot.sh builds it against this tree's library and against the
 * baseline's, so only the library's public API is used).
 *
 * usage: decode_stages IMAGE [RUNS]     (default 20)
 *
 * Prints, in milliseconds, the first run (cold: fresh pages, as in a
 * one-shot `vit classify`) and the median [min-max] of the next RUNS (warm)
 * of: reading the file, decoding it to RGB (data_image_load_memory),
 * resizing, cropping and normalising to the default model's planar tensor
 * (data_preprocess_apply: shorter side 248 bicubic, centre crop 224), and
 * the two together from the file (data_preprocess_file). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int by_value(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = n > 0 ? malloc((size_t)n) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return b;
}

enum { READ, DECODE, PREPROCESS, FILE_TOTAL, STAGES };
static const char *const NAMES[STAGES] = {"read", "decode", "resize+crop+normalise", "file to tensor"};

/* One run of every stage; times[stage] in ms. -1 when a stage fails. */
static int run_once(const char *path, const data_preprocess *pre, float *out, double *times) {
    base_error err;
    size_t size;
    double t = now_ms();
    unsigned char *bytes = read_file(path, &size);
    times[READ] = now_ms() - t;
    if (!bytes) return -1;
    data_image img;
    t = now_ms();
    base_status st = data_image_load_memory(bytes, size, path, &img, &err);
    times[DECODE] = now_ms() - t;
    free(bytes);
    if (st != BASE_OK) {
        fprintf(stderr, "decode_stages: %s\n", err.message);
        return -1;
    }
    t = now_ms();
    st = data_preprocess_apply(pre, &img, out, &err);
    times[PREPROCESS] = now_ms() - t;
    data_image_free(&img);
    t = now_ms();
    if (st == BASE_OK) st = data_preprocess_file(pre, path, out, &err);
    times[FILE_TOTAL] = now_ms() - t;
    return st == BASE_OK ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: decode_stages IMAGE [RUNS]\n");
        return 2;
    }
    const int runs = argc > 2 ? atoi(argv[2]) : 20;
    data_preprocess pre;
    data_preprocess_default(&pre, 224); /* the default model's: 248 bicubic, crop 224 */
    float *out = malloc(sizeof(float) * 3 * 224 * 224);
    double cold[STAGES], *warm = malloc(sizeof(double) * STAGES * (size_t)(runs > 0 ? runs : 1));
    if (!out || !warm || run_once(argv[1], &pre, out, cold) != 0) return 1;
    for (int r = 0; r < runs; r++)
        if (run_once(argv[1], &pre, out, warm + (size_t)r * STAGES) != 0) return 1;
    printf("%-24s %9s %9s %19s\n", "stage (ms)", "cold", "warm", "warm [min-max]");
    for (int s = 0; s < STAGES; s++) {
        double v[1024];
        const int n = runs < 1024 ? runs : 1024;
        for (int r = 0; r < n; r++) v[r] = warm[(size_t)r * STAGES + s];
        qsort(v, (size_t)n, sizeof *v, by_value);
        if (n > 0)
            printf("%-24s %9.3f %9.3f   [%.3f-%.3f]\n", NAMES[s], cold[s], v[n / 2], v[0], v[n - 1]);
    }
    free(out);
    free(warm);
    return 0;
}
