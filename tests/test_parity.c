/* Forward-pass parity with PyTorch: random-weight checkpoints in every key
 * layout we read, with inputs and activations written by tests/gen_parity.py
 * (a plain-torch reimplementation of timm / HF ViT semantics). */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "vit.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures/parity/"
#define TOLERANCE 1e-4f
/* A BF16 checkpoint computes in bf16 (vit quantize --dtype bf16 files,
 * docs/quantize.md): every linear layer rounds its inputs to bf16 (relative
 * error up to 2^-9), where PyTorch's reference ran float32 activations on
 * the same bf16 weights. So such a fixture is held to a bf16-sized bound,
 * as tests/test_quantize.c holds its bf16 copies; tests/test_bf16.c holds
 * the bf16 arithmetic itself exactly. */
#define BF16_TOLERANCE 3e-2f

/* Loads the case's checkpoint, runs the expected input through it and
 * compares the encoder input, block 0's output and the final output. */
static void check_case(const char *name, const vit_load_options *options) {
    char path[1024];
    snprintf(path, sizeof path, FIXTURES "%s/case.json", name);
    cJSON *info = read_json(path);
    const int run_size = cJSON_GetObjectItem(info, "run_size")->valueint;
    const cJSON *model_ref = cJSON_GetObjectItem(info, "model");
    char model_path[1024];
    if (cJSON_IsString(model_ref))
        snprintf(model_path, sizeof model_path, FIXTURES "%s/%s", name, model_ref->valuestring);
    else
        snprintf(model_path, sizeof model_path, FIXTURES "%s", name);

    base_error err;
    vit_model *model;
    cr_assert(vit_model_load(model_path, options, &model, &err) == BASE_OK, "%s", err.message);
    snprintf(path, sizeof path, FIXTURES "%s/expected.safetensors", name);
    weights_file *expected;
    cr_assert(weights_open(path, &expected, &err) == BASE_OK, "%s", err.message);

    const weights_tensor *input_t;
    float *input = tensor_f32(expected, "input", &input_t);
    float *embed = tensor_f32(expected, "embed", NULL);
    float *block0 = tensor_f32(expected, "block0", NULL);
    const weights_tensor *logits_t;
    float *logits = tensor_f32(expected, "logits", &logits_t);
    const int batch = (int)input_t->shape[0];
    cr_assert_eq(input_t->shape[2], run_size);

    vit_context *ctx;
    cr_assert(vit_context_create(model, batch, run_size, 0, &ctx, &err) == BASE_OK, "%s", err.message);
    const size_t token_floats =
        (size_t)batch * vit_context_num_tokens(ctx) * vit_model_config(model)->hidden_size;
    float *got_embed = malloc(token_floats * sizeof(float));
    float *got_block0 = malloc(token_floats * sizeof(float));
    const size_t out_floats = (size_t)batch * vit_model_output_size(model);
    cr_assert_eq(out_floats, logits_t->numel, "%s: output size %zu, PyTorch %zu", name,
                 out_floats, logits_t->numel);
    float *got_logits = malloc(out_floats * sizeof(float));
    cr_assert(vit_context_capture_tokens(ctx, -1, got_embed, &err) == BASE_OK);
    cr_assert(vit_context_capture_tokens(ctx, 0, got_block0, &err) == BASE_OK);
    cr_assert(vit_forward(ctx, input, batch, got_logits, &err) == BASE_OK, "%s", err.message);

    const float tol = vit_model_bf16_kernels(model) ? BF16_TOLERANCE : TOLERANCE;
    float e = max_abs_diff(got_embed, embed, token_floats);
    cr_expect(e <= TOLERANCE, "%s: encoder input differs from PyTorch by %g", name, e);
    e = max_abs_diff(got_block0, block0, token_floats);
    cr_expect(e <= tol, "%s: block 0 output differs from PyTorch by %g", name, e);
    e = max_abs_diff(got_logits, logits, out_floats);
    cr_expect(e <= tol, "%s: output differs from PyTorch by %g", name, e);

    free(got_embed); free(got_block0); free(got_logits);
    free(input); free(embed); free(block0); free(logits);
    vit_context_free(ctx);
    weights_close(expected);
    vit_model_free(model);
    cJSON_Delete(info);
}

static const vit_load_options PLAIN_BICUBIC = {.pos_resample = VIT_POS_RESAMPLE_BICUBIC};

Test(parity, timm_inferred_config) { check_case("timm_d128_h2", NULL); }
Test(parity, timm_distilled_with_config) { check_case("timm_dist_d96_h4", NULL); }
Test(parity, timm_without_head_gives_features) { check_case("timm_nohead_d64_h1", NULL); }
Test(parity, timm_at_larger_size_plain_bicubic_pos_embed) {
    check_case("timm_d128_h2_size48", &PLAIN_BICUBIC);
}
/* With no option a timm checkpoint resamples as timm >= 0.9 does. */
Test(parity, timm_at_larger_size_antialiased_pos_embed_by_default) {
    check_case("timm_d128_h2_size48_aa", NULL);
}
Test(parity, hf_vit) { check_case("hf_vit_d48_h3", NULL); }
Test(parity, hf_vit_layer_norm_eps_from_config) { check_case("hf_vit_eps_d32_h2", NULL); }
Test(parity, hf_deit_with_teacher) { check_case("hf_deit_teacher_d64_h2", NULL); }
Test(parity, hf_deit_without_teacher) { check_case("hf_deit_plain_d32_h2", NULL); }

/* A NaN score (from a corrupt checkpoint) must come out as NaN, not as
 * garbage probabilities from an undefined float-to-int conversion inside
 * the vectorised exp (found by fuzz_safetensors). */
Test(parity, softmax_carries_nan_through) {
    float values[4] = {NAN, 1.0f, 2.0f, 0.5f};
    vit_softmax(values, 4);
    for (int i = 0; i < 4; i++) cr_expect(isnan(values[i]), "value %d is %g", i, values[i]);
    float finite[3] = {0.0f, 0.0f, -INFINITY};
    vit_softmax(finite, 3);
    cr_expect(fabsf(finite[0] - 0.5f) < 1e-6f && finite[2] == 0.0f, "%g %g %g", finite[0],
              finite[1], finite[2]);
}
