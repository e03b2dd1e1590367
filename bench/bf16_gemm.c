/* bf16_gemm: one bf16 linear layer (round the inputs to bf16 + the bf16
 * GEMM, vit/kernels.h kernels_linear_bf16) against vitc's fp32 GEMM of the
 * same shape (kernels_linear), on one thread, interleaved (fp32, bf16,
 * fp32, ...) and timed by the thread's CPU clock, so a shared machine's
 * load falls on neither. Shapes: a ViT's four linear layers at --rows
 * tokens (197: one image; 8 x 197: a batch of 8). % of peak: against this
 * core's vdpbf16ps peak (bench/peak.h, 4 flops per lane), or the fp32 FMA
 * peak of the path for the paths without it.
 *
 * usage: vit_bf16_gemm [--dim D] [--rows R] [--rounds N] [--isa NAME]
 * prints one line per layer: GMAC/s of each, bf16 % of peak, bf16/fp32 as
 * median [min-max] of the per-round ratios. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "peak.h"

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct layer_run {
    int rows, K, N;
    const float *x;
    float *y;
    uint16_t *binp;
    const kernels_fmatrix *fm;
    const kernels_bmatrix *bm;
    kernels_threads th;
} layer_run;

static void run_fp32(const layer_run *l) { kernels_linear(l->y, l->N, l->x, l->K, l->rows, l->fm, NULL, l->th); }

static void run_bf16(const layer_run *l) {
    bf16_round_forward(l->binp, l->x, l->rows, l->K, l->bm, l->th);
    kernels_linear_bf16(l->y, l->N, l->binp, l->rows, l->bm, NULL, l->th);
}

/* CPU seconds per call, the fastest of 10. */
static double best_of_10(void (*run)(const layer_run *), const layer_run *l) {
    double best = 1e30;
    for (int r = 0; r < 10; r++) {
        const double t = peak_clock(1);
        run(l);
        const double d = peak_clock(1) - t;
        best = d < best ? d : best;
    }
    return best;
}

/* This core's peak for path isa's bf16 kernel, GFLOP/s (one thread). */
static double bf16_peak(kernels_isa isa, const char **which) {
    const char *name = isa == KERNELS_ISA_AVX512_BF16 ? "bf16_avx512"
                       : isa == KERNELS_ISA_GENERIC   ? NULL
                                                      : "fp32_avx2";
    *which = name ? name : "none";
    for (size_t i = 0; name && i < NUM_PEAK_PATHS; i++)
        if (strcmp(PEAK_PATHS[i].name, name) == 0 && PEAK_PATHS[i].supported())
            return peak_measure(&PEAK_PATHS[i], 1, 3);
    return 0.0;
}

int main(int argc, char **argv) {
    int dim = 384, rows = 197, rounds = 5;
    const char *isa_name = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dim") == 0) dim = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--rows") == 0) rows = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--rounds") == 0) rounds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--isa") == 0) isa_name = argv[i + 1];
        else {
            fprintf(stderr, "usage: vit_bf16_gemm [--dim D] [--rows R] [--rounds N] [--isa NAME]\n");
            return 1;
        }
    }
    if (dim < 16 || rows < 1 || rounds < 1 || rounds > 99) {
        fprintf(stderr, "vit_bf16_gemm: --dim >= 16, --rows >= 1, --rounds 1..99\n");
        return 1;
    }
    kernels_isa isa;
    base_error err;
    if (kernels_isa_choose(isa_name, &isa, &err) != BASE_OK) {
        fprintf(stderr, "vit_bf16_gemm: %s\n", err.message);
        return 1;
    }
    const char *peak_name;
    const double peak = bf16_peak(isa, &peak_name);
    const struct { const char *name; int in, out; } layers[] = {
        {"qkv", dim, 3 * dim}, {"proj", dim, dim}, {"fc1", dim, 4 * dim}, {"fc2", 4 * dim, dim}};
    printf("bf16 path %s, 1 thread (CPU time), %d rows, %d interleaved rounds; peak %s %.1f GFLOP/s\n",
           kernels_bf16_path(isa), rows, rounds, peak_name, peak);
    printf("%-6s %6s %6s %12s %12s %7s   %s\n", "layer", "in", "out", "fp32 GMAC/s", "bf16 GMAC/s",
           "%peak", "bf16/fp32 median [min-max]");
    for (size_t l = 0; l < sizeof layers / sizeof layers[0]; l++) {
        const int K = layers[l].in, N = layers[l].out;
        float *x = kernels_alloc_floats((size_t)rows * K), *w = kernels_alloc_floats((size_t)N * K);
        float *y = kernels_alloc_floats((size_t)rows * N);
        uint16_t *wb = malloc(sizeof(uint16_t) * (size_t)N * K), *binp = malloc(kernels_binp_bytes(rows, K));
        kernels_fmatrix *fm = kernels_fmatrix_create(N, K);
        kernels_bmatrix *bm = kernels_bmatrix_create(N, K);
        if (!x || !w || !y || !wb || !binp || !fm || !bm) {
            fprintf(stderr, "vit_bf16_gemm: out of memory\n");
            return 1;
        }
        unsigned seed = 1;
        for (int i = 0; i < rows * K; i++) x[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f;
        for (int i = 0; i < N * K; i++) {
            w[i] = ((float)((seed = seed * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f) * 0.05f;
            uint32_t u;
            memcpy(&u, &w[i], sizeof u);
            wb[i] = (uint16_t)(u >> 16);
        }
        kernels_fmatrix_set(fm, 0, N, 0, K, w, 1.0f);
        kernels_bmatrix_set_rows(bm, 0, N, wb);
        const layer_run run = {rows, K, N, x, y, binp, fm, bm,
                               kernels_threading(KERNELS_INFERENCE, 1, isa)};
        double ratio[99], f_rate[99], b_rate[99];
        const double macs = (double)rows * K * N;
        for (int r = 0; r < rounds; r++) {
            const double tf = best_of_10(run_fp32, &run), tb = best_of_10(run_bf16, &run);
            f_rate[r] = macs / tf / 1e9, b_rate[r] = macs / tb / 1e9, ratio[r] = tf / tb;
        }
        qsort(ratio, (size_t)rounds, sizeof *ratio, compare_doubles);
        qsort(f_rate, (size_t)rounds, sizeof *f_rate, compare_doubles);
        qsort(b_rate, (size_t)rounds, sizeof *b_rate, compare_doubles);
        const double pct = peak > 0 ? 100 * 2 * b_rate[rounds / 2] / peak : 0;
        printf("%-6s %6d %6d %12.1f %12.1f %6.0f%%   %.2f [%.2f-%.2f]\n", layers[l].name, K, N,
               f_rate[rounds / 2], b_rate[rounds / 2], pct, ratio[rounds / 2], ratio[0],
               ratio[rounds - 1]);
        free(x), free(w), free(y), free(wb), free(binp);
        kernels_fmatrix_free(fm);
        kernels_bmatrix_free(bm);
    }
    return 0;
}
