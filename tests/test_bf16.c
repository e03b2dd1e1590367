/* The bf16 GEMM (issue 27 item 4, kernels_bf16.h): the C definition is
 * what vdpbf16ps computes, bit for bit, on random and edge data
 * (subnormals, infinities, NaN, sums near FLT_MIN) where this CPU has
 * AVX512_BF16; every path this CPU runs gives the C path's bits on edge
 * shapes, epilogues, thread splits and edge values, and on whole bf16
 * models (vit quantize --dtype bf16 copies of the fixtures and of the real
 * checkpoints); the C path is within the rounding bound of a double sum of
 * the same bf16 products. Paths the CPU lacks are skipped with a note. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kernels.h"
#include "kernels_bf16.h"
#include "test_util.h"
#include "vit.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures"
#define SHARED_MODELS VITC_SOURCE_DIR "/../shared/models"

static const kernels_isa PATHS[] = {KERNELS_ISA_GENERIC,     KERNELS_ISA_AVX2,
                                    KERNELS_ISA_AVX512,      KERNELS_ISA_AVX512_VNNI,
                                    KERNELS_ISA_AVX_VNNI,    KERNELS_ISA_NEON,
                                    KERNELS_ISA_AVX512_BF16, KERNELS_ISA_NEON_DOTPROD,
                                    KERNELS_ISA_NEON_I8MM};
#define NUM_PATHS (sizeof PATHS / sizeof PATHS[0])

static void note_skipped(void) {
    for (size_t i = 1; i < NUM_PATHS; i++)
        if (!kernels_isa_supported(PATHS[i]))
            fprintf(stderr, "test_bf16: path %s: this CPU cannot run it, skipped\n",
                    kernels_isa_name(PATHS[i]));
}

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static float f32_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* A bf16 value: a quarter edge patterns (zeros, subnormals, FLT_MIN, the
 * largest finite, infinities, NaNs), a quarter any pattern, the rest
 * ordinary values over a wide range of exponents. */
static uint16_t edge_bf16(uint64_t *s) {
    static const uint16_t EDGE[] = {0x0000, 0x8000, 0x0001, 0x8001, 0x007f, 0x0080, 0x8080,
                                    0x0081, 0x8081, 0x7f80, 0xff80, 0x7fc0, 0x7f81, 0xffc1,
                                    0x7f7f, 0xff7f, 0x3f80, 0xbf80, 0x0100, 0x1f80, 0x2000,
                                    0x5f80, 0x6000, 0x3f81, 0x1fff, 0x9fff};
    switch (xorshift(s) % 4) {
    case 0: return EDGE[xorshift(s) % (sizeof EDGE / sizeof *EDGE)];
    case 1: return (uint16_t)xorshift(s);
    default: {
        float f = (float)((int)(xorshift(s) % 2001) - 1000) / 100.0f;
        if (xorshift(s) % 3 == 0) f = ldexpf(f, (int)(xorshift(s) % 260) - 130);
        return (uint16_t)(bits_of(f) >> 16);
    }
    }
}

/* The same bits, a NaN matching any NaN (payloads are not promised). */
static int same(float a, float b) { return bits_of(a) == bits_of(b) || (isnan(a) && isnan(b)); }

/* ------------------------------------------------- the instruction itself */

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f,avx512bf16"))) static void dpbf16(float *acc, const uint16_t *a,
                                                                  const uint16_t *b) {
    const __m512 s = _mm512_dpbf16_ps(_mm512_loadu_ps(acc), (__m512bh)_mm512_loadu_si512(a),
                                      (__m512bh)_mm512_loadu_si512(b));
    _mm512_storeu_ps(acc, s);
}
#endif

/* Subnormal bf16 as a zero of its sign (the DAZ the packing applies). */
static float daz(uint16_t h) { return bf16_f32((h & 0x7f80u) ? h : (uint16_t)(h & 0x8000u)); }

Test(bf16, the_definition_is_what_vdpbf16ps_computes, .timeout = 300) {
#if defined(__x86_64__) || defined(__i386__)
    if (!kernels_isa_supported(KERNELS_ISA_AVX512_BF16)) {
        fprintf(stderr, "test_bf16: no AVX512_BF16 here: the instruction is not checked\n");
        return;
    }
    uint64_t seed = 88172645463325252ull;
    long differ = 0, n = 0, flushed = 0;
    for (int it = 0; it < 300000; it++) {
        float acc[16], hw[16];
        uint16_t a[32], b[32];
        for (int i = 0; i < 16; i++) {
            /* running sums as the kernels hold them: zero, ordinary, tiny
             * (near FLT_MIN) or any pattern, never subnormal (FTZ'd) */
            const uint32_t u = (uint32_t)xorshift(&seed);
            switch (xorshift(&seed) % 5) {
            case 0: acc[i] = 0.0f; break;
            case 1: acc[i] = f32_of(u); break;
            case 2: acc[i] = (float)((int)(u % 2001) - 1000) / 7.0f; break;
            case 3: acc[i] = ldexpf((float)((int)(u % 2001) - 1000) / 7.0f, (int)(u >> 20) % 256 - 128); break;
            default: acc[i] = f32_of((u & 0x80ffffffu)); break;
            }
            if (fabsf(acc[i]) < 0x1p-126f) acc[i] = copysignf(0.0f, acc[i]);
        }
        for (int i = 0; i < 32; i++) a[i] = edge_bf16(&seed), b[i] = edge_bf16(&seed);
        memcpy(hw, acc, sizeof hw);
        dpbf16(hw, a, b);
        for (int j = 0; j < 16; j++, n++) {
            const float s1 = bf16_step(daz(a[2 * j + 1]), daz(b[2 * j + 1]), acc[j]);
            const float want = bf16_step(daz(a[2 * j]), daz(b[2 * j]), s1);
            flushed += hw[j] == 0.0f && acc[j] != 0.0f;
            if (same(want, hw[j])) continue;
            if (differ++ < 5)
                fprintf(stderr, "vdpbf16ps(%a; %04x %04x . %04x %04x) = %a, the C %a\n", acc[j],
                        a[2 * j], a[2 * j + 1], b[2 * j], b[2 * j + 1], hw[j], want);
        }
    }
    cr_expect_eq(differ, 0, "%ld of %ld lanes differ from vdpbf16ps", differ, n);
    cr_expect_gt(flushed, 0, "the data never reached the flush to zero");
#else
    fprintf(stderr, "test_bf16: not x86: vdpbf16ps is not checked\n");
#endif
}

Test(bf16, rounding_to_bf16_is_to_nearest_even) {
    cr_expect_eq(bf16_round(1.0f), 0x3f80);
    cr_expect_eq(bf16_round(f32_of(0x3f808000u)), 0x3f80); /* tie, even stays */
    cr_expect_eq(bf16_round(f32_of(0x3f818000u)), 0x3f82); /* tie, odd rounds up */
    cr_expect_eq(bf16_round(f32_of(0x3f808001u)), 0x3f81);
    cr_expect_eq(bf16_round(f32_of(0x7f7fffffu)), 0x7f80); /* overflows to infinity */
    cr_expect_eq(bf16_round(-INFINITY), 0xff80);
    cr_expect_eq(bf16_round(f32_of(0x007fffffu)), 0x0000); /* subnormal -> zero */
    cr_expect_eq(bf16_round(f32_of(0x807fffffu)), 0x8000);
    cr_expect_eq(bf16_round(f32_of(0x7f800001u)) & 0x7fc0, 0x7fc0); /* NaN stays NaN */
    cr_expect_eq(bf16_round(f32_of(0xffa00000u)), 0xffe0);
}

/* ------------------------------------------------------ the GEMM's paths */

typedef struct problem {
    int M, K, N;
    float *inp, *bias, *gamma, *residual;
    uint16_t *weight, *binp;
    kernels_bmatrix *w;
} problem;

/* Values: 0 ordinary (activations and weights of a layer), 1 edge
 * patterns in both (infinities, NaN, subnormals, sums that reach FLT_MIN). */
static problem make(int M, int K, int N, int edges, uint64_t seed) {
    problem p = {.M = M, .K = K, .N = N};
    p.inp = malloc(sizeof(float) * (size_t)M * K);
    p.weight = malloc(sizeof(uint16_t) * (size_t)N * K);
    p.bias = malloc(sizeof(float) * N), p.gamma = malloc(sizeof(float) * N);
    p.residual = malloc(sizeof(float) * (size_t)M * N);
    p.binp = malloc(kernels_binp_bytes(M, K));
    for (int i = 0; i < M * K; i++) {
        const float r = (float)((int)(xorshift(&seed) % 20001) - 10000) / 5000.0f;
        p.inp[i] = edges ? bf16_f32(edge_bf16(&seed)) * (1.0f + r / 512) : r;
    }
    for (int i = 0; i < N * K; i++)
        p.weight[i] = edges ? edge_bf16(&seed)
                            : bf16_round((float)((int)(xorshift(&seed) % 20001) - 10000) / 40000.0f);
    for (int j = 0; j < N; j++) p.bias[j] = (float)(j % 7) / 8 - 0.4f, p.gamma[j] = 0.5f + (float)(j % 3) / 4;
    for (int i = 0; i < M * N; i++) p.residual[i] = (float)(i % 11) / 4 - 1;
    p.w = kernels_bmatrix_create(N, K);
    cr_assert(p.w);
    kernels_bmatrix_set_rows(p.w, 0, N, p.weight);
    return p;
}

static void drop(problem *p) {
    free(p->inp), free(p->weight), free(p->bias), free(p->gamma), free(p->residual), free(p->binp);
    kernels_bmatrix_free(p->w);
}

enum { EP_NONE, EP_BIAS, EP_GELU, EP_RESIDUAL, EP_LAYERSCALE, EP_COUNT };

static void run_gemm(problem *p, int e, kernels_isa isa, int threads, float *out) {
    const kernels_threads th = kernels_threading(KERNELS_INFERENCE, threads, isa);
    kernels_epilogue ep = {0};
    if (e >= EP_BIAS) ep.bias = p->bias;
    if (e == EP_GELU) ep.act = KERNELS_ACT_GELU;
    if (e >= EP_RESIDUAL) {
        memcpy(out, p->residual, sizeof(float) * (size_t)p->M * p->N);
        ep.residual = out;
    }
    if (e == EP_LAYERSCALE) ep.gamma = p->gamma;
    bf16_round_forward(p->binp, p->inp, p->M, p->K, p->w, th);
    kernels_linear_bf16(out, p->N, p->binp, p->M, p->w, &ep, th);
}

static void expect_paths_agree(int M, int K, int N, int edges) {
    problem p = make(M, K, N, edges, 7u + (uint64_t)(M * 131 + K * 17 + N));
    float *want = malloc(sizeof(float) * (size_t)M * N), *got = malloc(sizeof(float) * (size_t)M * N);
    for (int e = 0; e < EP_COUNT; e++) {
        run_gemm(&p, e, KERNELS_ISA_GENERIC, 1, want);
        for (size_t i = 0; i < NUM_PATHS; i++) {
            if (!kernels_isa_supported(PATHS[i])) continue;
            for (int threads = 1; threads <= 2; threads++) {
                run_gemm(&p, e, PATHS[i], threads, got);
                for (int j = 0; j < M * N; j++) {
                    if (same(got[j], want[j])) continue;
                    cr_expect(0, "%s, %d threads, M %d K %d N %d, epilogue %d, edges %d: [%d] %a, generic %a",
                              kernels_isa_name(PATHS[i]), threads, M, K, N, e, edges, j, got[j], want[j]);
                    break;
                }
            }
        }
    }
    free(want), free(got);
    drop(&p);
}

Test(bf16, every_path_gives_the_generic_bits_on_edge_shapes, .timeout = 600) {
    static const int MS[] = {1, 2, 3, 5, 12, 13, 25};
    static const int KS[] = {1, 2, 3, 17, 64, 191};
    static const int NS[] = {1, 15, 16, 17, 33, 47, 64};
    for (size_t a = 0; a < sizeof MS / sizeof *MS; a++)
        for (size_t b = 0; b < sizeof KS / sizeof *KS; b++)
            for (size_t c = 0; c < sizeof NS / sizeof *NS; c++)
                expect_paths_agree(MS[a], KS[b], NS[c], 0);
    note_skipped();
}

Test(bf16, every_path_gives_the_generic_bits_on_edge_values, .timeout = 600) {
    static const int SHAPES[][3] = {{1, 2, 16}, {4, 7, 33}, {13, 64, 32}, {25, 191, 47}, {12, 384, 64}};
    for (size_t s = 0; s < sizeof SHAPES / sizeof *SHAPES; s++)
        for (int rep = 0; rep < 8; rep++)
            expect_paths_agree(SHAPES[s][0] + rep % 2, SHAPES[s][1], SHAPES[s][2], 1);
}

/* |C sum - exact| <= gamma_K * sum |a w| (Higham's bound for a recursive
 * sum of exact products, K roundings of 2^-24), with the exact sum in
 * double over the same bf16 values. */
Test(bf16, generic_is_within_the_rounding_bound_of_a_double_sum) {
    static const int SHAPES[][3] = {{5, 384, 40}, {3, 1536, 17}, {1, 3, 5}};
    for (size_t s = 0; s < sizeof SHAPES / sizeof *SHAPES; s++) {
        const int M = SHAPES[s][0], K = SHAPES[s][1], N = SHAPES[s][2];
        problem p = make(M, K, N, 0, 99u + s);
        float *out = malloc(sizeof(float) * (size_t)M * N);
        run_gemm(&p, EP_NONE, KERNELS_ISA_GENERIC, 1, out);
        const double gamma = K * 0x1p-24 / (1 - K * 0x1p-24);
        for (int r = 0; r < M; r++)
            for (int j = 0; j < N; j++) {
                double exact = 0, mag = 0;
                for (int k = 0; k < K; k++) {
                    const double t = (double)bf16_f32(bf16_round(p.inp[r * K + k])) *
                                     (double)bf16_f32(p.weight[(size_t)j * K + k]);
                    exact += t, mag += fabs(t);
                }
                cr_expect(fabs(out[r * N + j] - exact) <= gamma * mag + 1e-30,
                          "M %d K %d N %d [%d,%d]: %.9g, double %.12g (bound %.3g)", M, K, N, r, j,
                          out[r * N + j], exact, gamma * mag);
            }
        free(out);
        drop(&p);
    }
}

/* ------------------------------------------------------------ whole models */

TEMP_DIR_SUITE(bf16_models);

/* What a forward pass of batch random images gives on path isa: logits,
 * the last block's tokens and block 0's attention, one buffer. */
static float *model_outputs(const char *path, kernels_isa isa, int batch, int threads,
                            size_t *floats) {
    const vit_load_options options = {.isa = kernels_isa_name(isa)};
    vit_model *model;
    base_error err;
    cr_assert(vit_model_load(path, &options, &model, &err) == BASE_OK, "%s: %s", path, err.message);
    cr_assert(vit_model_bf16_kernels(model), "%s: no bf16 layer", path);
    const vit_config *c = vit_model_config(model);
    const int S = c->image_size, C = vit_model_output_size(model), D = c->hidden_size;
    vit_context *ctx;
    cr_assert(vit_context_create(model, batch, S, threads, &ctx, &err) == BASE_OK, "%s", err.message);
    const size_t T = (size_t)vit_context_num_tokens(ctx);
    const size_t n_logits = (size_t)batch * C, n_tokens = (size_t)batch * T * D;
    *floats = n_logits + n_tokens + (size_t)batch * c->num_heads * T * T;
    float *out = malloc(sizeof(float) * *floats), *images = malloc(sizeof(float) * batch * 3 * S * S);
    uint64_t seed = 4;
    for (int i = 0; i < batch * 3 * S * S; i++)
        images[i] = (float)((int)(xorshift(&seed) % 2001) - 1000) / 500.0f;
    cr_assert(vit_context_capture(ctx, VIT_CAPTURE_TOKENS, c->num_layers - 1, out + n_logits, &err) == BASE_OK);
    cr_assert(vit_context_capture(ctx, VIT_CAPTURE_ATTENTION, 0, out + n_logits + n_tokens, &err) == BASE_OK);
    cr_assert(vit_forward(ctx, images, batch, out, &err) == BASE_OK, "%s", err.message);
    free(images);
    vit_context_free(ctx);
    vit_model_free(model);
    return out;
}

/* A vit quantize --dtype bf16 copy of source (packed, or --plain), every
 * path against generic. */
static void expect_bf16_copy_same_everywhere(const char *source, const char *tag, int plain,
                                             int batch) {
    char out[512], args[1536];
    snprintf(out, sizeof out, "%s/bf16-%s%s.safetensors", dir, tag, plain ? "-plain" : "");
    snprintf(args, sizeof args, "quantize -m %s -o %s --dtype bf16%s", source, out,
             plain ? " --plain" : "");
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "vit %s: %s", args, r->err);
    size_t n, m;
    float *want = model_outputs(out, KERNELS_ISA_GENERIC, batch, 1, &n);
    for (size_t i = 1; i < NUM_PATHS; i++) {
        if (!kernels_isa_supported(PATHS[i])) continue;
        for (int threads = 1; threads <= 2; threads++) {
            float *got = model_outputs(out, PATHS[i], batch, threads, &m);
            size_t at = 0;
            while (at < n && same(got[at], want[at])) at++;
            cr_expect(at == n, "%s on %s, %d threads: output %zu of %zu is %.9g, generic %.9g", out,
                      kernels_isa_name(PATHS[i]), threads, at, n, got[at < n ? at : 0],
                      want[at < n ? at : 0]);
            free(got);
        }
    }
    free(want);
    remove(out);
}

Test(bf16_models, fixture_models_give_the_generic_bits_on_every_path, .timeout = 900) {
    static const char *const DIRS[] = {"parity/timm_d128_h2", "parity/hf_vit_d48_h3",
                                       "parity/timm_dist_d96_h4", "family/deit3",
                                       "family/qknorm_nobias", "family/clip_ft"};
    for (size_t d = 0; d < sizeof DIRS / sizeof *DIRS; d++) {
        char dir[512], tag[64];
        snprintf(dir, sizeof dir, FIXTURES "/%s", DIRS[d]);
        snprintf(tag, sizeof tag, "fixture%zu", d);
        expect_bf16_copy_same_everywhere(dir, tag, d % 2, 3);
    }
    note_skipped();
}

Test(bf16_models, real_checkpoints_give_the_generic_bits_on_every_path, .timeout = 900) {
#ifdef __SANITIZE_ADDRESS__
    cr_skip_test("sanitizer build: memory, not bits (the fixtures run above)");
#endif
#ifdef VITC_TEST_EMULATED
    cr_skip_test("under an emulator: too slow for the real checkpoints");
#endif
    static const char *const MODELS[] = {"deit-tiny-patch16-224",
                                         "vit_tiny_patch16_224.augreg_in21k_ft_in1k"};
    for (size_t i = 0; i < sizeof MODELS / sizeof *MODELS; i++) {
        char dir[512];
        snprintf(dir, sizeof dir, SHARED_MODELS "/%s", MODELS[i]);
        struct stat st;
        if (stat(dir, &st) != 0) {
            fprintf(stderr, "test_bf16: %s is absent (../shared): skipped\n", dir);
            continue;
        }
        expect_bf16_copy_same_everywhere(dir, i ? "vit" : "deit", 0, 2);
    }
}
