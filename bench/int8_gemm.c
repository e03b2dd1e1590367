/* int8_gemm: one quantised linear layer (quantise the inputs + int8 GEMM,
 * vit/kernels.h) against OpenBLAS's sgemm of the same shape, on one
 * thread, interleaved (sgemm, int8, sgemm, int8, ...) so a shared machine's
 * load falls on both. Shapes: a ViT's four linear layers at 197 tokens.
 *
 * usage: vit_int8_gemm [--dim D] [--rounds N] [--isa NAME]
 * prints one line per layer: GMAC/s of each and int8/sgemm as median
 * [min-max] of the per-round ratios. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One layer's operands; run_sgemm / run_int8 run it once. */
typedef struct layer_run {
    int rows, K, N;
    const float *x, *w;
    float *y, *inp_scale;
    void *qinp;
    const kernels_qmatrix *qm;
} layer_run;

static void run_sgemm(const layer_run *l) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, l->rows, l->N, l->K, 1.0f, l->x, l->K,
                l->w, l->K, 0.0f, l->y, l->N);
}

static void run_int8(const layer_run *l) {
    const kernels_threads th = {.count = 1, .gemm = KERNELS_GEMM_VITC};
    quantize_forward(l->qinp, l->inp_scale, l->x, l->rows, l->K, l->qm, th);
    qmatmul_forward(l->y, NULL, l->qinp, l->inp_scale, l->qm, NULL, KERNELS_ACT_NONE, l->rows, th);
}

/* Seconds per call, the fastest of 20. */
static double best_of_20(void (*run)(const layer_run *), const layer_run *l) {
    double best = 1e30;
    for (int r = 0; r < 20; r++) {
        const double t = omp_get_wtime();
        run(l);
        const double d = omp_get_wtime() - t;
        best = d < best ? d : best;
    }
    return best;
}

int main(int argc, char **argv) {
    int dim = 192, rounds = 7;
    const char *isa_name = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--dim") == 0) dim = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--rounds") == 0) rounds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--isa") == 0) isa_name = argv[i + 1];
        else {
            fprintf(stderr, "usage: vit_int8_gemm [--dim D] [--rounds N] [--isa NAME]\n");
            return 1;
        }
    }
    if (dim < 32 || dim % 32 || rounds < 1 || rounds > 99) {
        fprintf(stderr, "vit_int8_gemm: --dim a multiple of 32, --rounds 1..99\n");
        return 1;
    }
    kernels_isa isa;
    base_error err;
    if (kernels_isa_choose(isa_name, &isa, &err) != BASE_OK) {
        fprintf(stderr, "vit_int8_gemm: %s\n", err.message);
        return 1;
    }
    openblas_set_num_threads(1);
    const int rows = 197;
    const struct { const char *name; int in, out; } layers[] = {
        {"qkv", dim, 3 * dim}, {"proj", dim, dim}, {"fc1", dim, 4 * dim}, {"fc2", 4 * dim, dim}};
    printf("int8 path %s, 1 thread, %d rows, %d interleaved rounds\n", kernels_isa_name(isa), rows,
           rounds);
    printf("%-6s %6s %6s %12s %12s   %s\n", "layer", "in", "out", "sgemm GMAC/s", "int8 GMAC/s",
           "int8/sgemm median [min-max]");
    for (size_t l = 0; l < sizeof layers / sizeof layers[0]; l++) {
        const int K = layers[l].in, N = layers[l].out;
        float *x = kernels_alloc_floats((size_t)rows * K), *w = kernels_alloc_floats((size_t)N * K);
        float *y = kernels_alloc_floats((size_t)rows * N), *scales = kernels_alloc_floats((size_t)N * K / 32);
        float *inp_scale = kernels_alloc_floats((size_t)rows * K / 32);
        signed char *q = malloc((size_t)N * K);
        unsigned seed = 1;
        for (int i = 0; i < rows * K; i++) x[i] = (float)((seed = seed * 1103515245u + 12345u) >> 16) / 32768.0f - 1.0f;
        for (int i = 0; i < N * K; i++) {
            q[i] = (signed char)((seed = seed * 1103515245u + 12345u) >> 16) % 127;
            w[i] = q[i] * 0.01f;
        }
        for (int i = 0; i < N * K / 32; i++) scales[i] = 0.01f;
        kernels_qmatrix *qm = kernels_qmatrix_create(N, K, 32, isa);
        void *qinp = malloc(kernels_qinp_bytes(rows, K));
        if (!x || !w || !y || !scales || !inp_scale || !q || !qm || !qinp) {
            fprintf(stderr, "vit_int8_gemm: out of memory\n");
            return 1;
        }
        kernels_qmatrix_set_rows(qm, 0, N, q, scales);
        const layer_run run = {rows, K, N, x, w, y, inp_scale, qinp, qm};
        double ratio[99], sgemm_rate[99], int8_rate[99];
        const double macs = (double)rows * K * N;
        for (int r = 0; r < rounds; r++) {
            const double ts = best_of_20(run_sgemm, &run);
            const double tq = best_of_20(run_int8, &run);
            sgemm_rate[r] = macs / ts / 1e9;
            int8_rate[r] = macs / tq / 1e9;
            ratio[r] = ts / tq;
        }
        qsort(ratio, (size_t)rounds, sizeof *ratio, compare_doubles);
        qsort(sgemm_rate, (size_t)rounds, sizeof *sgemm_rate, compare_doubles);
        qsort(int8_rate, (size_t)rounds, sizeof *int8_rate, compare_doubles);
        printf("%-6s %6d %6d %12.1f %12.1f   %.2f [%.2f-%.2f]\n", layers[l].name, K, N,
               sgemm_rate[rounds / 2], int8_rate[rounds / 2], ratio[rounds / 2], ratio[0],
               ratio[rounds - 1]);
        free(x); free(w); free(y); free(scales); free(inp_scale); free(q); free(qinp);
        kernels_qmatrix_free(qm);
    }
    return 0;
}
