/* vitc's fp32 kernels (issue 27): every instruction-set path this CPU runs
 * gives the bits of the portable C one, on the GEMM's edge shapes with
 * every epilogue and thread split, on the row kernels (LayerNorm, softmax,
 * GELU), on attention, and on whole models (logits, tokens, attention);
 * the portable GEMM is within the rounding bound of a double-precision
 * sum; and the inference forward does not depend on which OpenBLAS kernel
 * the environment picks (OPENBLAS_CORETYPE) or on VITC_ISA. Paths the CPU
 * lacks are skipped with a message. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "kernels_gemm.h"
#include "test_util.h"
#include "vit.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures"
#define SHARED_MODELS VITC_SOURCE_DIR "/../shared/models"

static const kernels_isa PATHS[] = {KERNELS_ISA_GENERIC, KERNELS_ISA_AVX2, KERNELS_ISA_AVX512,
                                    KERNELS_ISA_AVX512_VNNI, KERNELS_ISA_VNNI_REFERENCE,
                                    KERNELS_ISA_AVX_VNNI, KERNELS_ISA_NEON, KERNELS_ISA_AVX512_BF16,
                                    KERNELS_ISA_NEON_DOTPROD, KERNELS_ISA_NEON_I8MM};
#define NUM_PATHS (sizeof PATHS / sizeof PATHS[0])

static int path_runs(kernels_isa isa) {
    if (kernels_isa_supported(isa)) return 1;
    /* A note, not cr_log_warn: Criterion exits 1 after any warning. */
    fprintf(stderr, "test_gemm: path %s: this CPU cannot run it, skipped\n", kernels_isa_name(isa));
    return 0;
}

static uint32_t lcg(uint32_t *state) { return *state = *state * 1664525u + 1013904223u; }
static float uniform(uint32_t *state) { return (float)(lcg(state) >> 8) / 16777216.0f * 2 - 1; }

static float *random_floats(size_t n, float scale, uint32_t *seed) {
    float *x = kernels_alloc_floats(n);
    cr_assert(x);
    for (size_t i = 0; i < n; i++) x[i] = uniform(seed) * scale;
    return x;
}

/* The same bits, a NaN matching any NaN (payloads are not promised). */
static size_t first_difference(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0 && !(isnan(a[i]) && isnan(b[i]))) return i;
    return n;
}

/* One GEMM problem: inp [M, lda] (K used), weight [N, K], bias, gamma [N],
 * residual [M, ldo]. */
typedef struct problem {
    int M, K, N, lda, ldo;
    float *inp, *weight, *bias, *gamma, *residual;
    kernels_fmatrix *w;
} problem;

static problem make_problem(int M, int K, int N, uint32_t *seed) {
    problem p = {.M = M, .K = K, .N = N, .lda = K + (M % 3), .ldo = N + (N % 2)};
    p.inp = random_floats((size_t)M * p.lda, 2.0f, seed);
    p.weight = random_floats((size_t)N * K, 1.0f / sqrtf((float)K), seed);
    p.bias = random_floats((size_t)N, 1.0f, seed);
    p.gamma = random_floats((size_t)N, 1.0f, seed);
    p.residual = random_floats((size_t)M * p.ldo, 3.0f, seed);
    p.w = kernels_fmatrix_create(N, K);
    cr_assert(p.w);
    kernels_fmatrix_set(p.w, 0, N, 0, K, p.weight, 1.0f);
    return p;
}

static void free_problem(problem *p) {
    free(p->inp), free(p->weight), free(p->bias), free(p->gamma), free(p->residual);
    kernels_fmatrix_free(p->w);
}

/* The epilogues the forward pass uses, and a scaled product (attention). */
enum { EP_NONE, EP_BIAS, EP_GELU, EP_QUICK, EP_RESIDUAL, EP_INPLACE, EP_LAYERSCALE, EP_SCALED, EP_COUNT };

/* out [M, ldo] of problem p with epilogue e on path isa, with `threads`
 * threads: 1, 2 in a region of the kernel's own, or -2 as a team of 2. */
static void run_gemm(const problem *p, int e, kernels_isa isa, int threads, float *out) {
    kernels_epilogue ep = {0};
    memcpy(out, p->residual, sizeof(float) * p->M * p->ldo); /* unwritten columns too */
    if (e != EP_NONE && e != EP_SCALED) ep.bias = p->bias;
    if (e == EP_GELU) ep.act = KERNELS_ACT_GELU;
    if (e == EP_QUICK) ep.act = KERNELS_ACT_QUICK_GELU;
    if (e == EP_RESIDUAL) ep.residual = p->residual;
    if (e == EP_INPLACE || e == EP_LAYERSCALE) ep.residual = out;
    if (e == EP_LAYERSCALE) ep.gamma = p->gamma;
    if (e == EP_SCALED) ep.scaled = 1, ep.scale = 0.125f * 1.1f;
    kernels_threads th = kernels_threading(KERNELS_INFERENCE, threads < 0 ? -threads : threads, isa);
    if (threads >= 0) {
        kernels_linear(out, p->ldo, p->inp, p->lda, p->M, p->w, &ep, th);
        return;
    }
#pragma omp parallel num_threads(th.count)
    {
        kernels_threads team = th;
        team.in_team = 1;
        kernels_linear(out, p->ldo, p->inp, p->lda, p->M, p->w, &ep, team);
    }
}

/* M, K, N around every edge: 1, odd, not multiples of the tiles (6 and 12
 * rows, 16 and 32 columns), partial panels, K long, and the ViT shapes. */
static const int SHAPES[][3] = {{1, 1, 1},    {1, 7, 5},      {3, 16, 16},   {13, 33, 47},
                                {12, 64, 32}, {25, 100, 33},  {6, 5, 48},    {40, 1, 70},
                                {7, 513, 129}, {5, 3072, 17}, {197, 192, 576}, {50, 1536, 40}};
#define NUM_SHAPES (sizeof SHAPES / sizeof SHAPES[0])

Test(gemm, every_path_gives_the_generic_bits_on_edge_shapes, .timeout = 600) {
    uint32_t seed = 2027;
    for (size_t s = 0; s < NUM_SHAPES; s++) {
        problem p = make_problem(SHAPES[s][0], SHAPES[s][1], SHAPES[s][2], &seed);
        const size_t n = (size_t)p.M * p.ldo;
        float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
        for (int e = 0; e < EP_COUNT; e++) {
            run_gemm(&p, e, KERNELS_ISA_GENERIC, 1, want);
            for (size_t i = 0; i < NUM_PATHS; i++) {
                if (!kernels_isa_supported(PATHS[i])) continue;
                const int threads[] = {1, 2, -2};
                for (int t = 0; t < 3; t++) {
                    run_gemm(&p, e, PATHS[i], threads[t], got);
                    const size_t at = first_difference(want, got, n);
                    cr_assert(at == n,
                              "%s, %d threads, %dx%d -> %d, epilogue %d: element %zu is %.9g, "
                              "generic %.9g", kernels_isa_name(PATHS[i]), threads[t], p.M, p.K,
                              p.N, e, at, got[at < n ? at : 0], want[at < n ? at : 0]);
                }
            }
        }
        free(want), free(got);
        free_problem(&p);
    }
    for (size_t i = 1; i < NUM_PATHS; i++) path_runs(PATHS[i]);
}

/* kernels_matmul (b row-major, packed on the fly) gives kernels_linear's
 * bits with bᵀ as the weights, on every path, also in place on b. */
Test(gemm, matmul_gives_the_bits_of_linear_on_the_transpose) {
    uint32_t seed = 44;
    for (size_t s = 0; s < NUM_SHAPES; s++) {
        const int M = SHAPES[s][0], K = SHAPES[s][1], N = SHAPES[s][2];
        problem p = make_problem(M, K, N, &seed);
        float *b = malloc(sizeof(float) * K * N), *scratch = malloc(sizeof(float) * kernels_matmul_scratch_floats(K, N));
        for (int k = 0; k < K; k++)
            for (int j = 0; j < N; j++) b[(size_t)k * N + j] = p.weight[(size_t)j * K + k];
        float *want = malloc(sizeof(float) * M * p.ldo), *got = malloc(sizeof(float) * M * p.ldo);
        run_gemm(&p, EP_NONE, KERNELS_ISA_GENERIC, 1, want);
        for (size_t i = 0; i < NUM_PATHS; i++) {
            if (!kernels_isa_supported(PATHS[i])) continue;
            memcpy(got, want, sizeof(float) * M * p.ldo);
            kernels_matmul(got, p.ldo, p.inp, p.lda, M, b, N, K, N, scratch,
                           kernels_threading(KERNELS_INFERENCE, 2, PATHS[i]));
            cr_assert(first_difference(want, got, (size_t)M * p.ldo) == (size_t)M * p.ldo,
                      "%s: %dx%d -> %d", kernels_isa_name(PATHS[i]), M, K, N);
        }
        free(b), free(scratch), free(want), free(got);
        free_problem(&p);
    }
}

/* Non-finite inputs stay in their own row on every path, with the same
 * (NaN or infinite) results. */
Test(gemm, non_finite_inputs_give_the_same_results_on_every_path) {
    uint32_t seed = 9;
    problem p = make_problem(13, 40, 35, &seed);
    p.inp[2 * p.lda + 3] = NAN;
    p.inp[5 * p.lda + 0] = INFINITY;
    p.inp[7 * p.lda + 39] = -INFINITY;
    const size_t n = (size_t)p.M * p.ldo;
    float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
    run_gemm(&p, EP_GELU, KERNELS_ISA_GENERIC, 1, want);
    for (int j = 0; j < p.N; j++) {
        cr_assert(isnan(want[2 * p.ldo + j]), "column %d of the NaN row: %g", j, want[2 * p.ldo + j]);
        cr_assert(isfinite(want[3 * p.ldo + j]), "a finite row became %g", want[3 * p.ldo + j]);
    }
    for (size_t i = 1; i < NUM_PATHS; i++) {
        if (!kernels_isa_supported(PATHS[i])) continue;
        run_gemm(&p, EP_GELU, PATHS[i], 2, got);
        cr_assert(first_difference(want, got, n) == n, "%s", kernels_isa_name(PATHS[i]));
    }
    free(want), free(got);
    free_problem(&p);
}

/* The C path against a double-precision sum: within the bound of K + 2
 * roundings of the sum of |products| (a chain of K fused multiply-adds,
 * the bias add and the residual add). */
Test(gemm, generic_is_within_the_rounding_bound_of_a_double_sum) {
    uint32_t seed = 77;
    for (size_t s = 0; s < NUM_SHAPES; s++) {
        problem p = make_problem(SHAPES[s][0], SHAPES[s][1], SHAPES[s][2], &seed);
        float *got = malloc(sizeof(float) * p.M * p.ldo);
        run_gemm(&p, EP_RESIDUAL, KERNELS_ISA_GENERIC, 1, got);
        for (int r = 0; r < p.M; r++)
            for (int j = 0; j < p.N; j++) {
                double sum = 0, mag = 0;
                for (int k = 0; k < p.K; k++) {
                    const double prod = (double)p.inp[(size_t)r * p.lda + k] * p.weight[(size_t)j * p.K + k];
                    sum += prod, mag += fabs(prod);
                }
                const double res = p.residual[(size_t)r * p.ldo + j];
                const double ref = res + (sum + p.bias[j]);
                const double bound = (p.K + 2) * 0x1p-24 * (mag + fabs(p.bias[j]) + fabs(res)) * 1.01;
                cr_assert(fabs(got[(size_t)r * p.ldo + j] - ref) <= bound,
                          "%dx%d -> %d [%d,%d]: %.9g, double %.12g (bound %.3g)", p.M, p.K, p.N, r,
                          j, got[(size_t)r * p.ldo + j], ref, bound);
            }
        free(got);
        free_problem(&p);
    }
}

/* One row of n: LayerNorm, softmax, both activations and GELU's gradient
 * on path `path` give the generic bits. */
static void expect_row_bits(const kernels_path *path, const char *name, const float *x,
                            const float *w, const float *b, int n) {
    const kernels_path *generic = kernels_path_of(KERNELS_ISA_GENERIC);
    float want[70], got[70], wm, wr, gm, gr;
    generic->layernorm(want, &wm, &wr, x, w, b, n, 1e-6f);
    path->layernorm(got, &gm, &gr, x, w, b, n, 1e-6f);
    cr_assert(first_difference(want, got, (size_t)n) == (size_t)n &&
                  first_difference(&wm, &gm, 1) == 1 && first_difference(&wr, &gr, 1) == 1,
              "%s: layernorm of %d", name, n);
    memcpy(want, x, sizeof(float) * n), memcpy(got, x, sizeof(float) * n);
    generic->softmax(want, n), path->softmax(got, n);
    cr_assert(first_difference(want, got, (size_t)n) == (size_t)n, "%s: softmax of %d", name, n);
    for (int a = KERNELS_ACT_GELU; a <= KERNELS_ACT_QUICK_GELU; a++) {
        generic->act(want, x, (size_t)n, (kernels_act)a), path->act(got, x, (size_t)n, (kernels_act)a);
        cr_assert(first_difference(want, got, (size_t)n) == (size_t)n, "%s: act %d of %d", name, a, n);
    }
    generic->gelu_backward(want, x, w, (size_t)n), path->gelu_backward(got, x, w, (size_t)n);
    cr_assert(first_difference(want, got, (size_t)n) == (size_t)n, "%s: GELU gradient of %d", name, n);
}

/* Rows of every length up to 70 (every tail of the 16 lanes), of random
 * values, with exp's edges (-100: under, 90: a dominant score, -0) and
 * with NaN and infinities, on every path. */
Test(gemm, row_kernels_give_the_generic_bits) {
    uint32_t seed = 5;
    for (int n = 1; n <= 70; n++) {
        float *x = random_floats((size_t)n, 8.0f, &seed), *w = random_floats((size_t)n, 1.0f, &seed);
        float *b = random_floats((size_t)n, 1.0f, &seed);
        for (int special = 0; special < 3; special++) {
            if (special == 1 && n > 3) x[n / 2] = -100.0f, x[1] = 90.0f, x[n - 1] = -0.0f;
            if (special == 2) x[n - 1] = -INFINITY, x[n / 2] = INFINITY, x[n / 3] = NAN;
            for (size_t i = 1; i < NUM_PATHS; i++)
                if (kernels_isa_supported(PATHS[i]))
                    expect_row_bits(kernels_path_of(PATHS[i]), kernels_isa_name(PATHS[i]), x, w, b, n);
        }
        free(x), free(w), free(b);
    }
}

/* exp and erf on every path, densely: 2^20 GELU and QuickGELU inputs over
 * [-12, 12) and [-60, 60), and softmax rows of 2048 scores spread over the
 * whole range of exp's argument (a mutation that rounds one polynomial
 * step differently moves few results: a thousand values may all agree). */
Test(gemm, exp_and_erf_give_the_generic_bits_densely) {
    enum { N = 1 << 20, ROW = 2048 };
    float *x = malloc(sizeof(float) * N), *want = malloc(sizeof(float) * N), *got = malloc(sizeof(float) * N);
    const kernels_path *generic = kernels_path_of(KERNELS_ISA_GENERIC);
    for (int a = KERNELS_ACT_GELU; a <= KERNELS_ACT_QUICK_GELU; a++) {
        const float span = a == KERNELS_ACT_GELU ? 12.0f : 60.0f;
        for (int i = 0; i < N; i++) x[i] = -span + 2 * span * (float)i / N;
        generic->act(want, x, N, (kernels_act)a);
        for (size_t p = 1; p < NUM_PATHS; p++) {
            if (!kernels_isa_supported(PATHS[p])) continue;
            kernels_path_of(PATHS[p])->act(got, x, N, (kernels_act)a);
            const size_t at = first_difference(want, got, N);
            cr_assert(at == N, "%s: act %d of %.9g: %.9g, generic %.9g", kernels_isa_name(PATHS[p]), a,
                      x[at < N ? at : 0], got[at < N ? at : 0], want[at < N ? at : 0]);
        }
    }
    uint32_t seed = 8;
    for (int i = 0; i < N; i++) x[i] = (uniform(&seed) - 1.0f) * 45.0f; /* (-90, 0] */
    memcpy(want, x, sizeof(float) * N);
    for (int r = 0; r < N / ROW; r++) generic->softmax(want + (size_t)r * ROW, ROW);
    for (size_t p = 1; p < NUM_PATHS; p++) {
        if (!kernels_isa_supported(PATHS[p])) continue;
        memcpy(got, x, sizeof(float) * N);
        for (int r = 0; r < N / ROW; r++) kernels_path_of(PATHS[p])->softmax(got + (size_t)r * ROW, ROW);
        cr_assert(first_difference(want, got, N) == N, "%s: softmax", kernels_isa_name(PATHS[p]));
    }
    free(x), free(want), free(got);
}

/* Attention of two images, every path, 1 and 2 threads, query blocks of
 * every size: the generic whole-head bits; and near a double reference. */
Test(gemm, attention_gives_the_generic_bits) {
    const int B = 2, T = 29, D = 48, H = 3, dh = D / H;
    uint32_t seed = 31;
    float *qkv = random_floats((size_t)B * T * 3 * D, 2.0f, &seed);
    float *want = kernels_alloc_floats((size_t)B * T * D), *got = kernels_alloc_floats((size_t)B * T * D);
    float *att = kernels_alloc_floats((size_t)B * H * T * T);
    float *scratch = kernels_alloc_floats(2 * attention_scratch_floats(T, D, H, T));
    const kernels_threads one = kernels_threading(KERNELS_INFERENCE, 1, KERNELS_ISA_GENERIC);
    attention_forward(want, att, qkv, B, T, D, H, T, scratch, one);
    for (int b = 0; b < B; b++) /* head 1, query 3, channel 5 of image b */
        for (int q = 0; q < T; q += 7) {
            const float *qr = qkv + ((size_t)b * T + q) * 3 * D + dh;
            double s[64], total = 0, o = 0, max = -1e30;
            for (int t = 0; t < T; t++) {
                const float *kr = qkv + ((size_t)b * T + t) * 3 * D + D + dh;
                s[t] = 0;
                for (int d = 0; d < dh; d++) s[t] += (double)qr[d] * kr[d];
                s[t] /= sqrt((double)dh);
                max = s[t] > max ? s[t] : max;
            }
            for (int t = 0; t < T; t++) total += exp(s[t] - max);
            for (int t = 0; t < T; t++)
                o += exp(s[t] - max) / total * qkv[((size_t)b * T + t) * 3 * D + 2 * D + dh + 5];
            cr_assert(fabs(want[((size_t)b * T + q) * D + dh + 5] - o) < 1e-5, "%g vs %g",
                      want[((size_t)b * T + q) * D + dh + 5], o);
        }
    for (size_t i = 0; i < NUM_PATHS; i++) {
        if (!kernels_isa_supported(PATHS[i])) continue;
        for (int threads = 1; threads <= 2; threads++)
            for (int block = 1; block <= T; block += 7) {
                attention_forward(got, NULL, qkv, B, T, D, H, block,
                                  scratch, kernels_threading(KERNELS_INFERENCE, threads, PATHS[i]));
                cr_assert(first_difference(want, got, (size_t)B * T * D) == (size_t)B * T * D,
                          "%s, %d threads, blocks of %d", kernels_isa_name(PATHS[i]), threads, block);
            }
    }
    free(qkv), free(want), free(got), free(att), free(scratch);
}

/* ------------------------------------------------------------ whole models */

/* What a forward pass of batch random images gives on path isa: logits,
 * the last block's tokens and block 0's attention, one buffer. */
static float *model_outputs(const char *dir, kernels_isa isa, int batch, int threads,
                            size_t *floats) {
    const vit_load_options options = {.isa = kernels_isa_name(isa)};
    vit_model *model;
    base_error err;
    cr_assert(vit_model_load(dir, &options, &model, &err) == BASE_OK, "%s: %s", dir, err.message);
    const vit_config *c = vit_model_config(model);
    const int S = c->image_size, C = vit_model_output_size(model), D = c->hidden_size;
    vit_context *ctx;
    cr_assert(vit_context_create(model, batch, S, threads, &ctx, &err) == BASE_OK, "%s", err.message);
    const size_t T = (size_t)vit_context_num_tokens(ctx);
    const size_t n_logits = (size_t)batch * C, n_tokens = (size_t)batch * T * D;
    *floats = n_logits + n_tokens + (size_t)batch * c->num_heads * T * T;
    float *out = malloc(sizeof(float) * *floats), *images = malloc(sizeof(float) * batch * 3 * S * S);
    uint32_t seed = 4;
    for (int i = 0; i < batch * 3 * S * S; i++) images[i] = uniform(&seed) * 2.0f;
    cr_assert(vit_context_capture(ctx, VIT_CAPTURE_TOKENS, c->num_layers - 1, out + n_logits, &err) == BASE_OK);
    cr_assert(vit_context_capture(ctx, VIT_CAPTURE_ATTENTION, 0, out + n_logits + n_tokens, &err) == BASE_OK);
    cr_assert(vit_forward(ctx, images, batch, out, &err) == BASE_OK, "%s", err.message);
    free(images);
    vit_context_free(ctx);
    vit_model_free(model);
    return out;
}

static void expect_every_path_same(const char *dir, int batch) {
    size_t n, m;
    float *want = model_outputs(dir, KERNELS_ISA_GENERIC, batch, 1, &n);
    for (size_t i = 1; i < NUM_PATHS; i++) {
        if (!kernels_isa_supported(PATHS[i])) continue;
        for (int threads = 1; threads <= 2; threads++) {
            float *got = model_outputs(dir, PATHS[i], batch, threads, &m);
            const size_t at = first_difference(want, got, n);
            cr_expect(at == n, "%s on %s, %d threads: output %zu of %zu is %.9g, generic %.9g", dir,
                      kernels_isa_name(PATHS[i]), threads, at, n, got[at < n ? at : 0],
                      want[at < n ? at : 0]);
            free(got);
        }
    }
    free(want);
}

Test(gemm, fixture_models_give_the_generic_bits_on_every_path, .timeout = 600) {
    static const char *const DIRS[] = {
        "parity/timm_d128_h2", "parity/hf_vit_d48_h3", "parity/timm_dist_d96_h4",
        "parity/hf_deit_teacher_d64_h2", "parity/timm_nohead_d64_h1", "family/clip_ft",
        "family/deit3", "family/reg4_gap", "family/qknorm_nobias", "family/dinov2_reg_hf",
        "int8/timm_d64_h4", "int8/hf_vit_d48_h3"};
    for (size_t d = 0; d < sizeof DIRS / sizeof *DIRS; d++) {
        char dir[512];
        snprintf(dir, sizeof dir, FIXTURES "/%s", DIRS[d]);
        expect_every_path_same(dir, 3);
    }
    for (size_t i = 1; i < NUM_PATHS; i++) path_runs(PATHS[i]);
}

Test(gemm, real_checkpoints_give_the_generic_bits_on_every_path, .timeout = 900) {
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("sanitizer build: memory, not bits (the fixtures run above)");
#endif
#ifdef VITC_TEST_EMULATED
    cr_skip_test("under an emulator: tests/arch_identity.sh runs the real checkpoints");
#endif
    static const char *const MODELS[] = {"deit-tiny-patch16-224",
                                         "vit_tiny_patch16_224.augreg_in21k_ft_in1k"};
    for (size_t i = 0; i < sizeof MODELS / sizeof *MODELS; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, SHARED_MODELS "/%s", MODELS[i]);
        if (access(dir, R_OK) != 0) {
            fprintf(stderr, "test_gemm: %s is absent (../shared): skipped\n", dir);
            continue;
        }
        expect_every_path_same(dir, 2);
    }
}

/* ------------------------------------------------------------ environment */

TEMP_DIR_SUITE(gemm_env);

/* The OpenBLAS kernels this CPU can run that give sgemm other bits. */
static int coretypes(const char **names) {
    int n = 0;
#if defined(__x86_64__) || defined(__i386__)
    names[n++] = "Nehalem"; /* SSE only */
    names[n++] = "Haswell"; /* AVX2 + FMA */
    if (__builtin_cpu_supports("avx512f")) names[n++] = "SkylakeX";
#else
    /* Another architecture's OpenBLAS names other kernels: its default
     * one (NULL: the variable left as it is) stands for them. */
    names[n++] = NULL;
#endif
    return n;
}

/* One `vit features` (all tokens) and `vit attention` (layer 0 as .npy)
 * run of the two real photos into dir/<tag>/ with OPENBLAS_CORETYPE=core
 * and VITC_ISA=isa (NULL: not set). */
static void run_env(const char *model, const char *core, const char *isa, char *out, size_t size) {
    char args[2048];
    snprintf(out, size, "%s/%s-%s", dir, core ? core : "default", isa ? isa : "auto");
    shell("mkdir -p %s", out);
    if (core) setenv("OPENBLAS_CORETYPE", core, 1);
    if (isa) setenv("VITC_ISA", isa, 1);
    snprintf(args, sizeof args, "features -q -m %s --tokens all -o %s/f.npy %s/real/apple.png %s/real/polars.png",
             model, out, FIXTURES, FIXTURES);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s: %s", args, r->err);
    snprintf(args, sizeof args, "attention -q -m %s --layer 0 -o %s/ --npy %s/ %s/real/apple.png",
             model, out, out, FIXTURES);
    r = run(args);
    unsetenv("VITC_ISA"); /* the caller restores OPENBLAS_CORETYPE */
    cr_assert_eq(r->status, 0, "%s: %s", args, r->err);
}

/* The same files under each OPENBLAS_CORETYPE this CPU runs (the default
 * path) and each VITC_ISA path it runs (the default core): byte-identical.
 * (The two are independent: the forward pass does not call OpenBLAS, and
 * the paths are checked against each other bit for bit above.) */
static void expect_env_invariant(const char *model) {
    const char *cores[3], *saved = getenv("OPENBLAS_CORETYPE");
    char keep[64] = "";
    if (saved) snprintf(keep, sizeof keep, "%s", saved);
    const int num_cores = coretypes(cores);
    char first[512] = "", out[512];
    for (int c = 0; c < num_cores + (int)NUM_PATHS; c++) {
        const int is_core = c < num_cores;
        const kernels_isa isa = is_core ? KERNELS_ISA_GENERIC : PATHS[c - num_cores];
        if (!is_core && !kernels_isa_supported(isa)) continue;
        run_env(model, is_core ? cores[c] : NULL, is_core ? NULL : kernels_isa_name(isa), out, sizeof out);
        if (keep[0]) setenv("OPENBLAS_CORETYPE", keep, 1);
        else unsetenv("OPENBLAS_CORETYPE");
        if (!first[0]) {
            snprintf(first, sizeof first, "%s", out);
            continue;
        }
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "diff -r -q '%s' '%s' >/dev/null", first, out);
        cr_expect(system(cmd) == 0, "%s: %s differs from %s", model, out, first);
    }
}

Test(gemm_env, outputs_do_not_depend_on_openblas_coretype_or_vitc_isa, .timeout = 900) {
    expect_env_invariant(FIXTURES "/parity/timm_d128_h2");
    char int8[300], args[700];
    snprintf(int8, sizeof int8, "%s/int8.safetensors", dir);
    snprintf(args, sizeof args, "quantize -m %s --dtype int8 -o %s", FIXTURES "/parity/timm_d128_h2", int8);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    expect_env_invariant(int8);
#if defined(__SANITIZE_ADDRESS__) || defined(VITC_TEST_EMULATED)
    /* The sanitizer build checks memory, not bits; under an emulator the
     * real checkpoint takes minutes a path, and tests/arch_identity.sh
     * compares it across architectures: the fixtures only. */
    fprintf(stderr, "test_gemm: sanitizer or emulated build: the real DeiT-tiny's environment check skipped\n");
#else
    if (access(SHARED_MODELS "/deit-tiny-patch16-224/model.safetensors", R_OK) == 0)
        expect_env_invariant(SHARED_MODELS "/deit-tiny-patch16-224");
    else
        fprintf(stderr, "test_gemm: the real DeiT-tiny is absent (../shared): skipped\n");
#endif
}
