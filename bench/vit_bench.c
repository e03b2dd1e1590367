/* vit_bench — vitc's side of the benchmark table: load time, median
 * latency per batch, images/s, GFLOP/s, peak RSS, the per-stage profile,
 * and this machine's single-precision GEMM peak. One JSON object per line,
 * the format the peer scripts print too (bench/run assembles the table).
 *
 * usage: vit_bench -m MODEL [-t N] [--batches 1,8,32] [--runs 20] [--warmup 5]
 *        vit_bench --sgemm-peak [-t N] */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "vit.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (every thread): on one thread, a run's
 * cost even while other processes take turns on the core. */
static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_rss_mib(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss / 1024.0; /* kilobytes on Linux */
}

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* FLOPs of one image (a multiply-add counts two), as the GEMMs do them. */
static double flops_per_image(const vit_config *c, int tokens) {
    const double T = tokens, D = c->hidden_size, M = c->mlp_size, P = c->patch_size;
    const double patches = tokens - c->num_prefix_tokens;
    double per_layer = 2 * T * D * 3 * D   /* qkv */
                       + 2 * 2 * T * T * D /* QK^T and PV over all heads */
                       + 2 * T * D * D     /* projection */
                       + 2 * 2 * T * D * M; /* fc1, fc2 */
    double heads = c->num_classes > 0
                       ? 2.0 * vit_config_pooled_size(c) * c->num_classes * (c->distilled ? 2 : 1)
                       : 0;
    return 2 * patches * c->num_channels * P * P * D + c->num_layers * per_layer + heads;
}

/* FLOPs of one image in each profiled stage (the GEMMs' multiply-adds). */
static void stage_flops(const vit_config *c, int tokens, double flops[VIT_STAGE_COUNT]) {
    const double T = tokens, D = c->hidden_size, M = c->mlp_size, P = c->patch_size, L = c->num_layers;
    for (int s = 0; s < VIT_STAGE_COUNT; s++) flops[s] = 0;
    flops[VIT_STAGE_PATCH_EMBED] = 2 * (T - c->num_prefix_tokens) * c->num_channels * P * P * D;
    flops[VIT_STAGE_QKV] = L * 2 * T * D * 3 * D;
    flops[VIT_STAGE_ATTENTION] = L * 2 * 2 * T * T * D;
    flops[VIT_STAGE_PROJECTION] = L * 2 * T * D * D;
    flops[VIT_STAGE_MLP_FC1] = L * 2 * T * D * M;
    flops[VIT_STAGE_MLP_FC2] = L * 2 * T * D * M;
}

/* Median GFLOP/s of a large square sgemm: the machine's practical peak, with
 * the kernel OpenBLAS picked for this CPU (openblas_get_corename). */
static void sgemm_peak(int threads) {
    const int n = 4096;
    float *a = calloc((size_t)n * n, sizeof(float)), *b = calloc((size_t)n * n, sizeof(float));
    float *c = calloc((size_t)n * n, sizeof(float));
    double times[5];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    for (int r = 0; r < 5; r++) {
        const double t = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        times[r] = now() - t;
    }
    qsort(times, 5, sizeof *times, compare_doubles);
    printf("{\"engine\":\"sgemm\",\"n\":%d,\"threads\":%d,\"gflop_s\":%.1f,\"openblas_core\":\"%s\"}\n", n,
           threads, 2.0 * n * n * n / times[2] / 1e9, openblas_get_corename());
    free(a), free(b), free(c);
}

/* The median of n sorted values. */
static double median_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Where the time goes, from a few more profiled runs: one JSON line, with
 * each stage's GFLOP per image ("gflop": bench/run turns them into rates). */
static void print_profile(const vit_model *model, vit_context *ctx, const char *name,
                          const float *images, int batch, float *out, int runs) {
    double seconds[VIT_STAGE_COUNT] = {0}, total = 0, flops[VIT_STAGE_COUNT];
    stage_flops(vit_model_config(model), vit_context_num_tokens(ctx), flops);
    base_error err;
    vit_context_profile(ctx, seconds);
    for (int r = 0; r < (runs < 10 ? runs : 10); r++) vit_forward(ctx, images, batch, out, &err);
    vit_context_profile(ctx, NULL);
    for (int s = 0; s < VIT_STAGE_COUNT; s++) total += seconds[s];
    printf("{\"engine\":\"vitc\",\"model\":\"%s\",\"batch\":%d,\"profile\":{", name, batch);
    for (int s = 0; s < VIT_STAGE_COUNT; s++)
        printf("%s\"%s\":%.1f", s ? "," : "", vit_stage_name((vit_stage)s),
               total > 0 ? 100.0 * seconds[s] / total : 0.0);
    printf("},\"gflop\":{");
    for (int s = 0; s < VIT_STAGE_COUNT; s++)
        printf("%s\"%s\":%.4f", s ? "," : "", vit_stage_name((vit_stage)s), flops[s] / 1e9);
    printf("}}\n");
}

/* One batch size: `warmup` untimed runs, then `runs` timed ones; one JSON
 * line (and the profile at batch 1 and 32). 0, or 1 when the context
 * cannot be made. */
static int bench_batch(const vit_model *model, const char *name, int batch, int runs, int warmup,
                       int threads, double load_s) {
    const vit_config *c = vit_model_config(model);
    const int S = c->image_size, per_image = 3 * S * S, outputs = vit_model_output_size(model);
    base_error err;
    vit_context *ctx;
    if (vit_context_create(model, batch, 0, threads, &ctx, &err) != BASE_OK) {
        fprintf(stderr, "vit_bench: %s\n", err.message);
        return 1;
    }
    float *images = malloc(sizeof(float) * per_image * (size_t)batch);
    float *out = malloc(sizeof(float) * outputs * (size_t)batch);
    srand(1);
    for (size_t i = 0; i < (size_t)per_image * batch; i++) images[i] = (float)((double)rand() / RAND_MAX) - 0.5f;
    for (int r = 0; r < warmup; r++) vit_forward(ctx, images, batch, out, &err);
    double *times = malloc(sizeof(double) * runs), *cpu = malloc(sizeof(double) * runs);
    for (int r = 0; r < runs; r++) {
        const double t = now(), c0 = cpu_seconds();
        vit_forward(ctx, images, batch, out, &err);
        times[r] = now() - t;
        cpu[r] = cpu_seconds() - c0;
    }
    const double median = median_of(times, runs), cpu_median = median_of(cpu, runs);
    const double gflop = flops_per_image(c, vit_context_num_tokens(ctx)) * batch / 1e9;
    printf("{\"engine\":\"vitc\",\"model\":\"%s\",\"batch\":%d,\"threads\":%d,\"median_ms\":%.3f,"
           "\"cpu_ms\":%.3f,\"images_per_s\":%.2f,\"gflop_s\":%.1f,\"gflop_per_image\":%.3f,\"load_s\":%.4f,"
           "\"peak_rss_mib\":%.1f,\"kernels\":\"%s\",\"int8_kernels\":\"%s\"}\n",
           name, batch, threads, median * 1e3, cpu_median * 1e3, batch / median, gflop / median,
           gflop / batch, load_s, peak_rss_mib(), vit_model_kernels(model),
           vit_model_int8_kernels(model) ? vit_model_int8_kernels(model) : "none");
    if (batch == 1 || batch == 32) print_profile(model, ctx, name, images, batch, out, runs);
    fflush(stdout);
    free(times), free(cpu), free(images), free(out);
    vit_context_free(ctx);
    return 0;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *batches = "1,8,32", *name = NULL, *runs_list = "20";
    int threads = 0, warmup = 5, peak = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v) model_path = argv[++i];
        else if (!strcmp(a, "-t") && v) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--batches") && v) batches = argv[++i];
        else if (!strcmp(a, "--runs") && v) runs_list = argv[++i];
        else if (!strcmp(a, "--warmup") && v) warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--name") && v) name = argv[++i];
        else if (!strcmp(a, "--sgemm-peak")) peak = 1;
        else {
            fprintf(stderr, "vit_bench: unknown argument '%s'\n", a);
            return 1;
        }
    }
    if (threads <= 0) threads = omp_get_num_procs();
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    if (peak) {
        sgemm_peak(threads);
        return 0;
    }
    if (!model_path) {
        fprintf(stderr, "usage: vit_bench -m MODEL [-t N] [--batches 1,8,32] [--runs 20] [--warmup 5]\n");
        return 1;
    }
    if (!name) {
        const char *slash = strrchr(model_path, '/');
        name = slash && slash[1] ? slash + 1 : model_path;
    }
    base_error err;
    vit_model *model;
    const double t0 = now();
    const vit_load_options options = {.threads = threads};
    if (vit_model_load(model_path, &options, &model, &err) != BASE_OK) {
        fprintf(stderr, "vit_bench: %s\n", err.message);
        return 1;
    }
    const double load_s = now() - t0;
    /* --runs: one count, or one per batch size. */
    int run_counts[32], num_counts = 0, batch_index = 0, status = 0;
    char list[256];
    snprintf(list, sizeof list, "%s", runs_list);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && num_counts < 32; tok = strtok_r(NULL, ",", &save))
        run_counts[num_counts++] = atoi(tok) > 0 ? atoi(tok) : 1;
    snprintf(list, sizeof list, "%s", batches);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok && !status; tok = strtok_r(NULL, ",", &save)) {
        const int batch = atoi(tok), runs = run_counts[batch_index < num_counts ? batch_index : num_counts - 1];
        batch_index++;
        if (batch > 0) status = bench_batch(model, name, batch, runs, warmup, threads, load_s);
    }
    vit_model_free(model);
    return status;
}
