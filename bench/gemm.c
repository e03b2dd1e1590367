/* vit_gemm — each linear layer of the ViT shapes on vitc's fp32 GEMM
 * (vit/kernels.h kernels_linear, the kernel layer's internal header),
 * against this machine's FMA peak for the path (peak.h), interleaved
 * (every path and the peak in each round) so a shared machine's load falls
 * on all alike.
 *
 * Modes, as the forward pass runs an image:
 *   solo   each of -t threads runs its own image's GEMM (batch >= threads:
 *          whole images per thread), against the peak of -t threads
 *   split  one image's GEMM shared by -t threads (batch 1), same peak
 * --cold: the weights come from memory, as in a forward pass (each call
 * takes the next of enough copies of them to overflow the caches).
 * Layers at --rows tokens (197: a 224 image in 16-pixel patches plus the
 * class token), with the forward pass's epilogues: qkv (bias), proj (bias +
 * residual), fc1 (bias + GELU), fc2 (bias + residual); and attention's two
 * products for one head of 64 channels (q·kᵀ scaled, p·v), whose weights
 * (K, V) the forward pass packs per head: their rate is per head.
 *
 * usage: vit_gemm [--isa avx512,avx2,generic] [-t N] [--rows R] [--rounds N]
 *                 [--dims 192,384,768] [--mode solo|split] [--cold]
 * prints per layer: GFLOP/s and % of peak, median [min-max] over rounds. */
#include <omp.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "peak.h"

#define MAX_ROUNDS 31

static int compare_doubles(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct layer {
    const char *name;
    int K, N;
    kernels_epilogue ep;
} layer;

#define MAX_COPIES 64

/* One layer's operands: per thread its own input and output; copies of the
 * weights, used in turn. */
typedef struct operands {
    float *x[64], *y[64];
    kernels_fmatrix *w[MAX_COPIES];
    int copies, next;
} operands;

static float uniform(unsigned *seed) {
    *seed = *seed * 1103515245u + 12345u;
    return (float)(*seed >> 16) / 32768.0f - 1.0f;
}

/* The calling thread's CPU seconds: on one thread, what a run costs even
 * when other processes take turns on its core (wall time would count
 * their turns too). */
static double thread_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Seconds of the fastest of `calls` runs of the layer on `threads`: CPU
 * time on one thread, wall time on more. */
static double best_time(const layer *l, operands *o, int rows, int threads, int split,
                        kernels_isa isa, int calls) {
    double best = 1e30;
    for (int c = 0; c < calls; c++) {
        const kernels_fmatrix *w = o->w[o->next];
        o->next = (o->next + 1) % o->copies;
        const double t0 = threads == 1 ? thread_seconds() : omp_get_wtime();
        if (split) {
            kernels_threads th = kernels_threading(KERNELS_INFERENCE, threads, isa);
            kernels_epilogue ep = l->ep;
            if (ep.residual) ep.residual = o->y[0];
            kernels_linear(o->y[0], l->N, o->x[0], l->K, rows, w, &ep, th);
        } else {
#pragma omp parallel num_threads(threads)
            {
                /* Each thread its own copy of the weights, as threads
                 * running different images at different layers read
                 * different weights (with one copy the second thread would
                 * find the first's in L3). */
                const int id = omp_get_thread_num();
                kernels_threads th = kernels_threading(KERNELS_INFERENCE, 1, isa);
                kernels_epilogue ep = l->ep;
                if (ep.residual) ep.residual = o->y[id];
                kernels_linear(o->y[id], l->N, o->x[id], l->K, rows, o->w[(o->next + id) % o->copies],
                               &ep, th);
            }
        }
        const double t = (threads == 1 ? thread_seconds() : omp_get_wtime()) - t0;
        best = t < best ? t : best;
    }
    return best;
}

/* With cold, enough copies of the weights for 256 MiB (at most 64). */
static operands make_operands(const layer *l, int rows, int threads, int cold) {
    operands o = {0};
    unsigned seed = 7;
    float *w = malloc(sizeof(float) * l->N * l->K);
    for (int i = 0; i < l->N * l->K; i++) w[i] = uniform(&seed) * 0.05f;
    const double bytes = 4.0 * l->N * l->K;
    o.copies = cold ? (int)(256.0 * (1 << 20) / bytes) + 1 : 1;
    if (o.copies > MAX_COPIES) o.copies = MAX_COPIES;
    for (int c = 0; c < o.copies; c++) {
        o.w[c] = kernels_fmatrix_create(l->N, l->K);
        kernels_fmatrix_set(o.w[c], 0, l->N, 0, l->K, w, 1.0f);
    }
    free(w);
    for (int t = 0; t < threads; t++) {
        o.x[t] = kernels_alloc_floats((size_t)rows * l->K);
        o.y[t] = kernels_alloc_floats((size_t)rows * l->N);
        for (size_t i = 0; i < (size_t)rows * l->K; i++) o.x[t][i] = uniform(&seed);
    }
    return o;
}

static void free_operands(operands *o, int threads) {
    for (int t = 0; t < threads; t++) free(o->x[t]), free(o->y[t]);
    for (int c = 0; c < o->copies; c++) kernels_fmatrix_free(o->w[c]);
}

/* The FMA peak a path is held to: its widest FMA. */
static const peak_path *peak_of(kernels_isa isa) {
#if defined(__aarch64__)
    (void)isa;
    return peak_find("fp32_neon");
#else
    return peak_find(isa == KERNELS_ISA_AVX2 ? "fp32_avx2"
                     : isa == KERNELS_ISA_GENERIC ? "fp32_avx2" /* what fmaf compiles to at best */
                                                  : "fp32_avx512");
#endif
}

typedef struct options {
    kernels_isa isas[8];
    int num_isas, threads, rows, rounds, split, cold, dims[8], num_dims;
} options;

static void run_layer(const options *opt, const layer *l) {
    operands o = make_operands(l, opt->rows, opt->split ? 1 : opt->threads, opt->cold);
    const double flops = 2.0 * opt->rows * l->K * l->N * (opt->split ? 1 : opt->threads);
    double rate[8][MAX_ROUNDS], pct[8][MAX_ROUNDS];
    for (int r = 0; r < opt->rounds; r++)
        for (int i = 0; i < opt->num_isas; i++) {
            const peak_path *pk = peak_of(opt->isas[i]);
            const double peak = pk && pk->supported() ? peak_measure(pk, opt->threads, 1) : 0;
            const double t = best_time(l, &o, opt->rows, opt->threads, opt->split, opt->isas[i],
                                       opt->isas[i] == KERNELS_ISA_GENERIC ? 2 : 10);
            rate[i][r] = flops / t / 1e9;
            pct[i][r] = peak > 0 ? 100 * rate[i][r] / peak : 0;
        }
    printf("%-5s %5d %5d", l->name, l->K, l->N);
    for (int i = 0; i < opt->num_isas; i++) {
        qsort(rate[i], (size_t)opt->rounds, sizeof(double), compare_doubles);
        qsort(pct[i], (size_t)opt->rounds, sizeof(double), compare_doubles);
        printf("   %7.1f %4.0f%% [%3.0f-%3.0f]", rate[i][opt->rounds / 2], pct[i][opt->rounds / 2],
               pct[i][0], pct[i][opt->rounds - 1]);
    }
    printf("\n");
    fflush(stdout);
    free_operands(&o, opt->split ? 1 : opt->threads);
}

static int parse(int argc, char **argv, options *opt) {
    const char *isas = "avx512,avx2", *dims = "192,384,768";
    *opt = (options){.threads = 1, .rows = 197, .rounds = 5};
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--cold")) {
            opt->cold = 1;
            i--;
            continue;
        }
        if (i + 1 >= argc) return 0;
        if (!strcmp(argv[i], "--isa")) isas = argv[i + 1];
        else if (!strcmp(argv[i], "-t")) opt->threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rows")) opt->rows = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--rounds")) opt->rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dims")) dims = argv[i + 1];
        else if (!strcmp(argv[i], "--mode")) opt->split = !strcmp(argv[i + 1], "split");
        else return 0;
    }
    char buf[256];
    snprintf(buf, sizeof buf, "%s", isas);
    for (char *s = NULL, *tok = strtok_r(buf, ",", &s); tok && opt->num_isas < 8; tok = strtok_r(NULL, ",", &s)) {
        base_error err;
        if (kernels_isa_choose(tok, &opt->isas[opt->num_isas], &err) != BASE_OK) {
            fprintf(stderr, "vit_gemm: %s (skipped)\n", err.message);
            continue;
        }
        opt->num_isas++;
    }
    snprintf(buf, sizeof buf, "%s", dims);
    for (char *s = NULL, *tok = strtok_r(buf, ",", &s); tok && opt->num_dims < 8; tok = strtok_r(NULL, ",", &s))
        opt->dims[opt->num_dims++] = atoi(tok);
    return opt->threads >= 1 && opt->threads <= 64 && opt->rows >= 1 && opt->rounds >= 1 &&
           opt->rounds <= MAX_ROUNDS && opt->num_isas > 0;
}

int main(int argc, char **argv) {
    options opt;
    if (!parse(argc, argv, &opt)) {
        fprintf(stderr, "usage: vit_gemm [--isa avx512,avx2,generic] [-t N] [--rows R] [--rounds N] "
                        "[--dims 192,384,768] [--mode solo|split] [--cold]\n");
        return 1;
    }
    printf("vitc fp32 GEMM, %s mode, %s weights, %d thread(s), %d rows, %d interleaved rounds; "
           "GFLOP/s and %% of the path's FMA peak at %d thread(s), median [min-max]\n",
           opt.split ? "split" : "solo", opt.cold ? "cold" : "cached", opt.threads, opt.rows, opt.rounds, opt.threads);
    printf("%-5s %5s %5s", "layer", "K", "N");
    for (int i = 0; i < opt.num_isas; i++) printf("   %-26s", kernels_isa_name(opt.isas[i]));
    printf("\n");
    for (int d = 0; d < opt.num_dims; d++) {
        const int D = opt.dims[d];
        float *bias = kernels_alloc_floats((size_t)4 * D);
        const float dummy = 0; /* a non-NULL residual: run_layer points it at the output */
        const layer layers[] = {
            {"qkv", D, 3 * D, {.bias = bias}},
            {"proj", D, D, {.bias = bias, .residual = &dummy}},
            {"fc1", D, 4 * D, {.bias = bias, .act = KERNELS_ACT_GELU}},
            {"fc2", 4 * D, D, {.bias = bias, .residual = &dummy}},
            {"q·kᵀ", 64, opt.rows, {.scaled = 1, .scale = 0.125f}},
            {"p·v", opt.rows, 64, {0}},
        };
        printf("D = %d\n", D);
        for (size_t l = 0; l < sizeof layers / sizeof *layers; l++) run_layer(&opt, &layers[l]);
        free(bias);
    }
    return 0;
}
