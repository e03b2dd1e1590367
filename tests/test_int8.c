/* The int8 kernels and models (issue 15): every instruction-set path this
 * CPU runs gives the bits of the portable one; the portable one computes
 * the quantisation PyTorch emulates (tests/gen_int8.py, fixtures under
 * tests/fixtures/int8/); int8 models run in int8 (their logits match the
 * emulation, not the dequantised float model). Paths the CPU lacks are
 * skipped with a message; the AVX-512 VNNI layout is also checked by its
 * C reference on every CPU. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "test_util.h"
#include "vit.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures/int8/"

static const kernels_isa PATHS[] = {KERNELS_ISA_GENERIC, KERNELS_ISA_AVX2, KERNELS_ISA_AVX512,
                                    KERNELS_ISA_AVX512_VNNI, KERNELS_ISA_VNNI_REFERENCE,
                                    KERNELS_ISA_AVX_VNNI, KERNELS_ISA_NEON, KERNELS_ISA_AVX512_BF16,
                                    KERNELS_ISA_NEON_DOTPROD, KERNELS_ISA_NEON_I8MM};
#define NUM_PATHS (sizeof PATHS / sizeof PATHS[0])

static int path_runs(kernels_isa isa) {
    if (kernels_isa_supported(isa)) return 1;
    /* A note, not cr_log_warn: Criterion exits 1 after any warning. */
    fprintf(stderr, "test_int8: int8 path %s: this CPU cannot run it, skipped\n",
            kernels_isa_name(isa));
    return 0;
}

static uint32_t lcg(uint32_t *state) { return *state = *state * 1664525u + 1013904223u; }
static float uniform(uint32_t *state) { return (float)(lcg(state) >> 8) / 16777216.0f * 2 - 1; }

/* One quantised layer of random int8 weights run on one path: out [rows, n]. */
static void run_layer(kernels_isa isa, int rows, int cols, int n, int group, const float *inp,
                      const signed char *w, const float *scales, const float *bias,
                      const float *residual, kernels_act act, int threads, float *out) {
    kernels_qmatrix *q = kernels_qmatrix_create(n, cols, group, isa);
    cr_assert(q, "qmatrix %d x %d group %d", n, cols, group);
    kernels_qmatrix_set_rows(q, 0, n, w, scales);
    void *qinp = malloc(kernels_qinp_bytes(rows, cols));
    float *inp_scale = malloc(sizeof(float) * rows * (cols / group));
    const kernels_threads th = {.count = threads, .gemm = KERNELS_GEMM_VITC};
    if (residual) memcpy(out, residual, sizeof(float) * rows * n);
    quantize_forward(qinp, inp_scale, inp, rows, cols, q, th);
    qmatmul_forward(out, residual ? out : NULL, qinp, inp_scale, q, bias, act, rows, th);
    free(qinp);
    free(inp_scale);
    kernels_qmatrix_free(q);
}

/* The scheme in double precision from the same int8 values: inputs
 * quantised per group of `group` along the row. */
static double reference(const float *x, int cols, const signed char *w, const float *scales,
                        int group, float bias) {
    double sum = bias;
    for (int g = 0; g < cols / group; g++) {
        const float *part = x + g * group;
        float max_abs = 0.0f;
        for (int k = 0; k < group; k++) max_abs = fmaxf(max_abs, fabsf(part[k]));
        if (max_abs == 0.0f) continue;
        const float inv = 127.0f / max_abs;
        double isum = 0.0;
        for (int k = 0; k < group; k++) {
            const float q = fminf(127.0f, fmaxf(-127.0f, rintf(part[k] * inv)));
            isum += (double)q * w[g * group + k];
        }
        sum += isum * scales[g] * (double)(max_abs / 127.0f);
    }
    return sum;
}

/* Shapes around every edge: rows not a multiple of the row blocks (4, 8),
 * columns not of the panel (16), rows of one group (cols % 32 != 0) and of
 * a length not a multiple of 4, residual and bias present or not. */
Test(int8, every_path_gives_the_generic_bits_and_the_scheme) {
    const int shapes[][3] = {{1, 32, 16},  {5, 64, 17},  {13, 96, 40}, {9, 48, 16},
                             {7, 6, 3},    {4, 100, 33}, {17, 192, 64}, {2, 768, 24}};
    uint32_t seed = 12345;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int rows = shapes[s][0], cols = shapes[s][1], n = shapes[s][2];
        const int group = cols % 32 == 0 ? 32 : cols, groups = cols / group;
        float *inp = malloc(sizeof(float) * rows * cols), *bias = malloc(sizeof(float) * n);
        float *residual = malloc(sizeof(float) * rows * n), *scales = malloc(sizeof(float) * n * groups);
        signed char *w = malloc((size_t)n * cols);
        for (int i = 0; i < rows * cols; i++) inp[i] = uniform(&seed) * (1 + i % 7);
        for (int i = 0; i < n * cols; i++) w[i] = (signed char)(lcg(&seed) % 255 - 127);
        for (int i = 0; i < n * groups; i++) scales[i] = 0.001f + 0.01f * (uniform(&seed) + 1);
        for (int i = 0; i < n; i++) bias[i] = uniform(&seed);
        for (int i = 0; i < rows * n; i++) residual[i] = uniform(&seed) * 3;
        /* bias, residual, and the activation of the epilogue (GELU,
         * QuickGELU: the same bits on every path, not part of the scheme
         * reference) */
        for (int variant = 0; variant < 12; variant++) {
            const float *b = variant & 1 ? bias : NULL, *res = variant & 2 ? residual : NULL;
            const kernels_act act = (kernels_act)(variant / 4);
            float *want = malloc(sizeof(float) * rows * n), *got = malloc(sizeof(float) * rows * n);
            run_layer(KERNELS_ISA_GENERIC, rows, cols, n, group, inp, w, scales, b, res, act, 1, want);
            for (int r = 0; r < rows && act == KERNELS_ACT_NONE; r++)
                for (int j = 0; j < n; j++) {
                    const double ref = reference(inp + (size_t)r * cols, cols, w + (size_t)j * cols,
                                                 scales + (size_t)j * groups, group, b ? b[j] : 0.0f) +
                                       (res ? res[(size_t)r * n + j] : 0.0);
                    cr_assert(fabs(want[(size_t)r * n + j] - ref) <= 1e-5 * (1 + fabs(ref)),
                              "%dx%d->%d [%d,%d]: generic %.9g, scheme %.9g", rows, cols, n, r, j,
                              want[(size_t)r * n + j], ref);
                }
            for (size_t p = 1; p < NUM_PATHS; p++) {
                if (!kernels_isa_supported(PATHS[p])) continue;
                for (int threads = 1; threads <= 2; threads++) {
                    run_layer(PATHS[p], rows, cols, n, group, inp, w, scales, b, res, act, threads,
                              got);
                    cr_assert(memcmp(got, want, sizeof(float) * rows * n) == 0,
                              "%s differs from generic at %dx%d->%d (bias %d, residual %d, act %d, "
                              "%d threads)",
                              kernels_isa_name(PATHS[p]), rows, cols, n, b != NULL, res != NULL,
                              (int)act, threads);
                }
            }
            free(want);
            free(got);
        }
        free(inp); free(bias); free(residual); free(scales); free(w);
    }
    for (size_t p = 1; p < NUM_PATHS; p++) path_runs(PATHS[p]);
}

/* Groups of other sizes than 32 (multiples of 4; vitc's files have none,
 * other tools' may): neon-i8mm's octs take groups of 8k, and run smaller
 * ones on the dotprod quads; every path gives the generic bits. */
Test(int8, groups_of_other_sizes_give_the_generic_bits) {
    const int shapes[][4] = {{3, 48, 20, 12}, {5, 64, 17, 16}, {4, 40, 16, 8}, {2, 24, 33, 4},
                             {7, 96, 32, 24}};
    uint32_t seed = 777;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int rows = shapes[s][0], cols = shapes[s][1], n = shapes[s][2], group = shapes[s][3];
        const int groups = cols / group;
        float *inp = malloc(sizeof(float) * rows * cols), *bias = malloc(sizeof(float) * n);
        float *scales = malloc(sizeof(float) * n * groups);
        float *want = malloc(sizeof(float) * rows * n), *got = malloc(sizeof(float) * rows * n);
        signed char *w = malloc((size_t)n * cols);
        for (int i = 0; i < rows * cols; i++) inp[i] = uniform(&seed) * (1 + i % 5);
        for (int i = 0; i < n * cols; i++) w[i] = (signed char)(lcg(&seed) % 255 - 127);
        for (int i = 0; i < n * groups; i++) scales[i] = 0.001f + 0.01f * (uniform(&seed) + 1);
        for (int i = 0; i < n; i++) bias[i] = uniform(&seed);
        run_layer(KERNELS_ISA_GENERIC, rows, cols, n, group, inp, w, scales, bias, NULL,
                  KERNELS_ACT_NONE, 1, want);
        for (size_t p = 1; p < NUM_PATHS; p++) {
            if (!kernels_isa_supported(PATHS[p])) continue;
            run_layer(PATHS[p], rows, cols, n, group, inp, w, scales, bias, NULL, KERNELS_ACT_NONE,
                      1, got);
            cr_assert(memcmp(got, want, sizeof(float) * rows * n) == 0,
                      "%s differs from generic at %dx%d->%d, groups of %d",
                      kernels_isa_name(PATHS[p]), rows, cols, n, group);
        }
        free(inp); free(bias); free(scales); free(want); free(got); free(w);
    }
}

/* A NaN or infinity in a row makes that row's outputs NaN, never a number,
 * and leaves the other rows alone (one group of 32 each here). */
Test(int8, non_finite_rows_stay_non_finite) {
    const int rows = 3, cols = 32, n = 16;
    float inp[3 * 32], scales[16], out[3 * 16];
    signed char w[16 * 32];
    for (int i = 0; i < rows * cols; i++) inp[i] = (float)(i % 11) - 5;
    for (int i = 0; i < n * cols; i++) w[i] = (signed char)(i % 13 - 6);
    for (int i = 0; i < n; i++) scales[i] = 0.5f;
    inp[1 * cols + 4] = NAN;
    inp[2 * cols + 9] = INFINITY;
    for (size_t p = 0; p < NUM_PATHS; p++) {
        if (!kernels_isa_supported(PATHS[p])) continue;
        run_layer(PATHS[p], rows, cols, n, cols, inp, w, scales, NULL, NULL, KERNELS_ACT_NONE, 1, out);
        for (int j = 0; j < n; j++) {
            cr_assert(isfinite(out[j]), "%s: a finite row gave %g", kernels_isa_name(PATHS[p]), out[j]);
            cr_assert(isnan(out[n + j]) && isnan(out[2 * n + j]), "%s: a non-finite row gave a number",
                      kernels_isa_name(PATHS[p]));
        }
    }
}

/* The PyTorch emulation's single-layer cases (ties to even, zero rows,
 * scale 2, tiny and huge rows): the quantised inputs and their scales are
 * the same bits, the outputs within float rounding of the float64 result. */
Test(int8, one_layer_matches_the_pytorch_emulation) {
    base_error err;
    weights_file *f;
    cr_assert(weights_open(FIXTURES "linear.safetensors", &f, &err) == BASE_OK, "%s", err.message);
    const int ks[] = {64, 48};
    for (size_t c = 0; c < 2; c++) {
        char name[32];
        const int K = ks[c];
        snprintf(name, sizeof name, "x_k%d", K);
        const weights_tensor *xt;
        float *x = tensor_f32(f, name, &xt);
        snprintf(name, sizeof name, "w_k%d", K);
        const weights_tensor *wt = weights_find(f, name);
        cr_assert(wt && wt->dtype == WEIGHTS_I8);
        snprintf(name, sizeof name, "w_k%d_scale", K);
        const weights_tensor *st;
        float *scales = tensor_f32(f, name, &st);
        snprintf(name, sizeof name, "b_k%d", K);
        float *bias = tensor_f32(f, name, NULL);
        snprintf(name, sizeof name, "xs_k%d", K);
        float *want_scale = tensor_f32(f, name, NULL);
        snprintf(name, sizeof name, "y_k%d", K);
        float *want_y = tensor_f32(f, name, NULL);
        snprintf(name, sizeof name, "xq_k%d", K);
        const weights_tensor *xq = weights_find(f, name);
        cr_assert(xq && xq->dtype == WEIGHTS_I8);
        const int rows = (int)xt->shape[0], n = (int)wt->shape[0];
        const int group = K / (int)st->shape[1];
        for (size_t p = 0; p < NUM_PATHS; p++) {
            if (!kernels_isa_supported(PATHS[p])) continue;
            kernels_qmatrix *q = kernels_qmatrix_create(n, K, group, PATHS[p]);
            kernels_qmatrix_set_rows(q, 0, n, wt->data, scales);
            void *qinp = malloc(kernels_qinp_bytes(rows, K));
            float inp_scale[64 * 4], y[64 * 64];
            const kernels_threads th = {.count = 1, .gemm = KERNELS_GEMM_VITC};
            quantize_forward(qinp, inp_scale, x, rows, K, q, th);
            /* activations: u8 q + 128 (VNNI), s8 q (NEON), int16 q (generic, avx2) */
            const int quads = PATHS[p] == KERNELS_ISA_AVX512_VNNI || PATHS[p] == KERNELS_ISA_VNNI_REFERENCE ||
                              PATHS[p] == KERNELS_ISA_AVX_VNNI || PATHS[p] == KERNELS_ISA_AVX512_BF16;
            const int bytes = PATHS[p] == KERNELS_ISA_NEON || PATHS[p] == KERNELS_ISA_NEON_DOTPROD ||
                              PATHS[p] == KERNELS_ISA_NEON_I8MM;
            const int kpad = (K + 3) / 4 * 4; /* also the octs' (K a multiple of 8) */
            const int groups = K / group;
            for (int r = 0; r < rows; r++) {
                for (int g = 0; g < groups; g++)
                    cr_assert(memcmp(&inp_scale[r * groups + g], &want_scale[r * groups + g],
                                     sizeof(float)) == 0,
                              "K %d row %d group %d: scale %.9g, PyTorch %.9g", K, r, g,
                              inp_scale[r * groups + g], want_scale[r * groups + g]);
                for (int k = 0; k < K; k++) {
                    const int got = quads   ? ((const unsigned char *)qinp)[r * kpad + k] - 128
                                    : bytes ? ((const signed char *)qinp)[r * kpad + k]
                                            : ((const short *)qinp)[r * kpad + k];
                    cr_assert_eq(got, ((const signed char *)xq->data)[r * K + k],
                                 "K %d row %d col %d: quantised to %d", K, r, k, got);
                }
            }
            qmatmul_forward(y, NULL, qinp, inp_scale, q, bias, KERNELS_ACT_NONE, rows, th);
            for (int r = 0; r < rows; r++) {
                float row_max = 0.0f;
                for (int j = 0; j < n; j++) row_max = fmaxf(row_max, fabsf(want_y[r * n + j]));
                for (int j = 0; j < n; j++)
                    cr_assert(fabsf(y[r * n + j] - want_y[r * n + j]) <= 2e-6f * (1 + row_max),
                              "%s K %d [%d,%d]: %.9g, PyTorch %.9g", kernels_isa_name(PATHS[p]), K,
                              r, j, y[r * n + j], want_y[r * n + j]);
            }
            free(qinp);
            kernels_qmatrix_free(q);
        }
        free(x); free(scales); free(bias); free(want_scale); free(want_y);
    }
    weights_close(f);
}

/* A whole int8 model on one path against the emulation: block 0's output
 * and the logits within 1e-4, while the dequantised float model (what
 * vitc ran before) is far further off. */
static void check_model(const char *name, kernels_isa isa) {
    char path[512];
    snprintf(path, sizeof path, FIXTURES "%s", name);
    base_error err;
    vit_model *model;
    const vit_load_options options = {.isa = kernels_isa_name(isa)};
    cr_assert(vit_model_load(path, &options, &model, &err) == BASE_OK, "%s", err.message);
    snprintf(path, sizeof path, FIXTURES "%s/expected.safetensors", name);
    weights_file *expected;
    cr_assert(weights_open(path, &expected, &err) == BASE_OK, "%s", err.message);
    const weights_tensor *input_t, *logits_t;
    float *input = tensor_f32(expected, "input", &input_t);
    float *logits = tensor_f32(expected, "logits_int8_emul", &logits_t);
    float *dequant = tensor_f32(expected, "logits_dequant", NULL);
    float *block0 = tensor_f32(expected, "block0_int8_emul", NULL);
    const int batch = (int)input_t->shape[0], size = (int)input_t->shape[2];
    vit_context *ctx;
    cr_assert(vit_context_create(model, batch, size, 0, &ctx, &err) == BASE_OK, "%s", err.message);
    const size_t tokens = (size_t)batch * vit_context_num_tokens(ctx) * vit_model_config(model)->hidden_size;
    float *got_block0 = malloc(sizeof(float) * tokens), *got = malloc(sizeof(float) * logits_t->numel);
    cr_assert(vit_context_capture_tokens(ctx, 0, got_block0, &err) == BASE_OK);
    cr_assert(vit_forward(ctx, input, batch, got, &err) == BASE_OK, "%s", err.message);
    float e = max_abs_diff(got_block0, block0, tokens);
    cr_expect(e <= 1e-4f, "%s on %s: block 0 differs from the emulation by %g", name,
              kernels_isa_name(isa), e);
    e = max_abs_diff(got, logits, logits_t->numel);
    cr_expect(e <= 1e-4f, "%s on %s: logits differ from the emulation by %g", name,
              kernels_isa_name(isa), e);
    const float gap = max_abs_diff(dequant, logits, logits_t->numel);
    cr_expect(gap > 100 * 1e-4f, "%s: the fixture cannot tell int8 from dequantised (%g)", name, gap);
    free(got_block0); free(got); free(input); free(logits); free(dequant); free(block0);
    vit_context_free(ctx);
    weights_close(expected);
    vit_model_free(model);
}

Test(int8, models_match_the_pytorch_emulation_on_every_path) {
    for (size_t p = 0; p < NUM_PATHS; p++) {
        if (!path_runs(PATHS[p])) continue;
        check_model("timm_d64_h4", PATHS[p]);
        check_model("hf_vit_d48_h3", PATHS[p]);
    }
}

/* An int8 model's outputs do not depend on the batch or the thread count. */
Test(int8, outputs_do_not_depend_on_batch_or_threads) {
    base_error err;
    vit_model *model;
    cr_assert(vit_model_load(FIXTURES "timm_d64_h4", NULL, &model, &err) == BASE_OK, "%s", err.message);
    weights_file *expected;
    cr_assert(weights_open(FIXTURES "timm_d64_h4/expected.safetensors", &expected, &err) == BASE_OK);
    const weights_tensor *input_t;
    float *input = tensor_f32(expected, "input", &input_t);
    const int batch = (int)input_t->shape[0], size = (int)input_t->shape[2];
    const int classes = vit_model_output_size(model);
    float *together = malloc(sizeof(float) * batch * classes), *alone = malloc(sizeof(float) * classes);
    vit_context *ctx;
    cr_assert(vit_context_create(model, batch, size, 0, &ctx, &err) == BASE_OK);
    cr_assert(vit_forward(ctx, input, batch, together, &err) == BASE_OK);
    const size_t image = (size_t)3 * size * size;
    for (int b = 0; b < batch; b++) {
        cr_assert(vit_forward(ctx, input + b * image, 1, alone, &err) == BASE_OK);
        cr_assert(memcmp(alone, together + (size_t)b * classes, sizeof(float) * classes) == 0,
                  "image %d: other bits alone than in a batch of %d", b, batch);
    }
    free(together); free(alone); free(input);
    vit_context_free(ctx);
    weights_close(expected);
    vit_model_free(model);
}

Test(int8, forcing_a_path_names_what_the_cpu_runs) {
    kernels_isa isa;
    base_error err;
    cr_assert(kernels_isa_choose("nonsense", &isa, &err) == BASE_E_UNSUPPORTED);
    cr_assert(strstr(err.message, "VITC_ISA=nonsense: unknown"), "%s", err.message);
    cr_assert(kernels_isa_choose("generic", &isa, &err) == BASE_OK && isa == KERNELS_ISA_GENERIC);
    cr_assert(kernels_isa_choose(NULL, &isa, &err) == BASE_OK && kernels_isa_supported(isa));
    if (!kernels_isa_supported(KERNELS_ISA_AVX512_VNNI)) {
        cr_assert(kernels_isa_choose("avx512vnni", &isa, &err) == BASE_E_UNSUPPORTED);
        cr_assert(strstr(err.message, "this CPU cannot run it (it runs: generic"), "%s", err.message);
    }
    setenv("VITC_ISA", "bogus", 1);
    run_result *r = run("info -m " FIXTURES "timm_d64_h4");
    unsetenv("VITC_ISA");
    cr_assert_eq(r->status, 1, "exit %d", r->status);
    cr_assert(strstr(r->err, "VITC_ISA=bogus: unknown") && count_lines(r->err) == 1, "%s", r->err);
}
