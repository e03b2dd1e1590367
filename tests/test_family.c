/* The wider ViT family (issue 18): random-weight checkpoints with
 * LayerScale, registers, no class token + average pooling, fc_norm,
 * pre-norm, QuickGELU, qk-norm, QKV without bias, other eps, and HF DINOv2,
 * written by tests/gen_family.py (FamilyViT in tests/torch_vit.py, after
 * timm's and transformers' definitions). Logits, final tokens, block 0's
 * attention and the pooled features are compared with PyTorch's at the
 * tolerance of test_parity.c; every hostile file must fail with its
 * manifest's substring, in one line. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "vit.h"
#include "vit_internal.h"
#include "vit_train.h"

#define FAMILY VITC_SOURCE_DIR "/tests/fixtures/family/"
#define TOLERANCE 1e-4f

/* The model path of a case: its directory, or the case its weights are. */
static void case_model_path(const char *name, const cJSON *info, char *path, size_t size) {
    const cJSON *model_ref = cJSON_GetObjectItem(info, "model");
    if (cJSON_IsString(model_ref))
        snprintf(path, size, FAMILY "%s/%s", name, model_ref->valuestring);
    else
        snprintf(path, size, FAMILY "%s", name);
}

/* Runs a loaded model on the case's input and compares what PyTorch wrote
 * (FAMILY name/expected.safetensors). tolerance: TOLERANCE for float32
 * weights, looser for quantised copies (only the logits are then compared). */
static void compare(const char *name, const vit_model *model, int run_size, float tolerance,
                    int logits_only) {
    char path[1024];
    snprintf(path, sizeof path, FAMILY "%s/expected.safetensors", name);
    weights_file *expected;
    base_error err;
    cr_assert(weights_open(path, &expected, &err) == BASE_OK, "%s", err.message);
    const vit_config *c = vit_model_config(model);
    const weights_tensor *input_t;
    float *input = tensor_f32(expected, "input", &input_t);
    const int batch = (int)input_t->shape[0];
    cr_assert_eq(input_t->shape[2], run_size, "%s: input is %lld, run_size %d", name,
                 (long long)input_t->shape[2], run_size);

    vit_context *ctx;
    cr_assert(vit_context_create(model, batch, run_size, 0, &ctx, &err) == BASE_OK, "%s: %s", name,
              err.message);
    const int T = vit_context_num_tokens(ctx), D = c->hidden_size, H = c->num_heads;
    const size_t token_floats = (size_t)batch * T * D;
    float *last = malloc(token_floats * sizeof(float));
    float *attn = malloc((size_t)batch * H * T * T * sizeof(float));
    const weights_tensor *logits_t;
    float *logits = tensor_f32(expected, "logits", &logits_t);
    const size_t out_floats = (size_t)batch * vit_model_output_size(model);
    cr_assert_eq(out_floats, logits_t->numel, "%s: output size %zu, PyTorch %zu", name,
                 out_floats, logits_t->numel);
    float *got = malloc(out_floats * sizeof(float));
    cr_assert(vit_context_capture_tokens(ctx, c->num_layers - 1, last, &err) == BASE_OK);
    cr_assert(vit_context_capture(ctx, VIT_CAPTURE_ATTENTION, 0, attn, &err) == BASE_OK);
    cr_assert(vit_forward(ctx, input, batch, got, &err) == BASE_OK, "%s: %s", name, err.message);

    float e = max_abs_diff(got, logits, out_floats);
    cr_expect(e <= tolerance, "%s: output differs from PyTorch by %g", name, e);

    if (!logits_only) {
        const weights_tensor *tokens_t, *attn_t, *pooled_t;
        float *tokens = tensor_f32(expected, "tokens", &tokens_t);
        float *attn0 = tensor_f32(expected, "attn0", &attn_t);
        float *pooled = tensor_f32(expected, "pooled", &pooled_t);
        cr_assert_eq(tokens_t->numel, token_floats, "%s: %d tokens, PyTorch %lld", name, T,
                     (long long)tokens_t->shape[1]);
        cr_assert_eq(attn_t->numel, (size_t)batch * H * T * T);
        const int pooled_size = vit_config_pooled_size(c);
        cr_assert_eq(pooled_t->numel, (size_t)batch * pooled_size, "%s: pooled size %d, PyTorch %lld",
                     name, pooled_size, (long long)pooled_t->shape[1]);
        float *normed = malloc(token_floats * sizeof(float));
        float *pool = malloc((size_t)batch * pooled_size * sizeof(float));
        float *scratch = malloc((size_t)D * sizeof(float));
        for (int b = 0; b < batch; b++) {
            const float *x = last + (size_t)b * T * D;
            cr_assert(vit_pool_tokens(model, x, T, VIT_POOL_NONE, 0, normed + (size_t)b * T * D,
                                      NULL, &err) == BASE_OK, "%s", err.message);
            cr_assert(vit_pool_tokens(model, x, T, VIT_POOL_MODEL, 0, pool + (size_t)b * pooled_size,
                                      scratch, &err) == BASE_OK, "%s", err.message);
        }
        e = max_abs_diff(normed, tokens, token_floats);
        cr_expect(e <= tolerance, "%s: final tokens differ from PyTorch by %g", name, e);
        e = max_abs_diff(attn, attn0, attn_t->numel);
        cr_expect(e <= tolerance, "%s: block 0 attention differs from PyTorch by %g", name, e);
        e = max_abs_diff(pool, pooled, pooled_t->numel);
        cr_expect(e <= tolerance, "%s: pooled features differ from PyTorch by %g", name, e);
        free(normed); free(pool); free(scratch);
        free(tokens); free(attn0); free(pooled);
    }
    free(input); free(logits); free(got); free(last); free(attn);
    vit_context_free(ctx);
    weights_close(expected);
}

static void check_case(const char *name) {
    char path[1024], model_path[1024];
    snprintf(path, sizeof path, FAMILY "%s/case.json", name);
    cJSON *info = read_json(path);
    const int run_size = cJSON_GetObjectItem(info, "run_size")->valueint;
    case_model_path(name, info, model_path, sizeof model_path);

    base_error err;
    vit_model *model;
    cr_assert(vit_model_load(model_path, NULL, &model, &err) == BASE_OK, "%s: %s", name, err.message);
    cr_expect_str_empty(vit_model_notices(model), "%s: unexpected notice: %s", name,
                        vit_model_notices(model));
    const vit_config *c = vit_model_config(model);
    const cJSON *prefix = cJSON_GetObjectItem(info, "num_prefix_tokens");
    const cJSON *regs = cJSON_GetObjectItem(info, "num_register_tokens");
    const cJSON *cls = cJSON_GetObjectItem(info, "class_token");
    /* case.json's num_prefix_tokens is class + registers (no distilled cases). */
    if (cJSON_IsNumber(prefix)) cr_expect_eq(c->num_prefix_tokens, prefix->valueint, "%s", name);
    if (cJSON_IsNumber(regs)) cr_expect_eq(c->num_reg_tokens, regs->valueint, "%s", name);
    if (cJSON_IsBool(cls)) cr_expect_eq(!c->no_class_token, cJSON_IsTrue(cls), "%s", name);
    const cJSON *eps = cJSON_GetObjectItem(info, "layer_norm_eps");
    if (cJSON_IsNumber(eps))
        cr_expect(fabs(c->layer_norm_eps - eps->valuedouble) <= 1e-9 * eps->valuedouble + 1e-12,
                  "%s: eps %g, expected %g", name, (double)c->layer_norm_eps, eps->valuedouble);
    const cJSON *act = cJSON_GetObjectItem(info, "act");
    if (cJSON_IsString(act))
        cr_expect_eq(c->act == VIT_ACT_QUICK_GELU, strcmp(act->valuestring, "quick_gelu") == 0,
                     "%s: activation", name);

    compare(name, model, run_size, TOLERANCE, 0);
    vit_model_free(model);
    cJSON_Delete(info);
}

#define FAMILY_CASE(NAME) \
    Test(family, NAME) { check_case(#NAME); }

FAMILY_CASE(deit3)
FAMILY_CASE(deit3_implicit)
FAMILY_CASE(clip_ft)
FAMILY_CASE(clip_implicit)
FAMILY_CASE(reg4_gap)
FAMILY_CASE(reg4_token)
FAMILY_CASE(reg4_token_s24)
FAMILY_CASE(reg2_embed_class)
FAMILY_CASE(gap_implicit)
FAMILY_CASE(qknorm_nobias)
FAMILY_CASE(dinov2_hf)
FAMILY_CASE(dinov2_hf_native)
FAMILY_CASE(dinov2_reg_hf)
FAMILY_CASE(dinov2_model_hf)

/* Every case directory is one of the tests above: a case added to the
 * fixtures without a test here fails. */
Test(family, every_case_is_tested) {
    static const char *const TESTED[] = {
        "deit3", "deit3_implicit", "clip_ft", "clip_implicit", "reg4_gap", "reg4_token",
        "reg4_token_s24", "reg2_embed_class", "gap_implicit", "qknorm_nobias", "dinov2_hf",
        "dinov2_hf_native", "dinov2_reg_hf", "dinov2_model_hf", "hostile"};
    DIR *dir = opendir(FAMILY);
    cr_assert(dir);
    struct dirent *e;
    while ((e = readdir(dir))) {
        if (e->d_name[0] == '.' || strchr(e->d_name, '.')) continue;
        int known = 0;
        for (size_t i = 0; i < sizeof TESTED / sizeof *TESTED; i++)
            known |= strcmp(e->d_name, TESTED[i]) == 0;
        cr_expect(known, "family case '%s' has no test in test_family.c", e->d_name);
    }
    closedir(dir);
}

/* Each hostile file fails to load, its one-line error naming the fault. */
Test(family, hostile_files_are_refused_with_their_fault_named) {
    cJSON *manifest = read_json(FAMILY "hostile/manifest.json");
    const cJSON *item;
    int count = 0;
    cJSON_ArrayForEach(item, manifest) {
        char path[1024];
        snprintf(path, sizeof path, FAMILY "hostile/%s", item->string);
        /* The directory: config.json beside the weights is read. */
        char *slash = strrchr(path, '/');
        *slash = '\0';
        vit_model *model = NULL;
        base_error err;
        const base_status status = vit_model_load(path, NULL, &model, &err);
        cr_expect(status != BASE_OK, "%s loaded", item->string);
        if (status == BASE_OK) {
            vit_model_free(model);
            continue;
        }
        cr_expect(strstr(err.message, item->valuestring), "%s: error '%s' does not name '%s'",
                  item->string, err.message, item->valuestring);
        cr_expect(!strchr(err.message, '\n'), "%s: error is not one line: %s", item->string,
                  err.message);
        count++;
    }
    cr_expect(count >= 18, "only %d hostile files", count);
    cJSON_Delete(manifest);
}

/* allow_unused loads the file anyway and says which tensors it ignores. */
Test(family, allow_unused_loads_with_a_notice) {
    vit_load_options options = {.allow_unused = 1};
    vit_model *model;
    base_error err;
    cr_assert(vit_model_load(FAMILY "hostile/unused_tensor", &options, &model, &err) == BASE_OK,
              "%s", err.message);
    cr_expect(strstr(vit_model_notices(model), "blocks.0.foo.weight"), "notices: %s",
              vit_model_notices(model));
    vit_model_free(model);
}

/* quantize's copies (int8 block linears, bf16) of switch-heavy models load
 * with the same switches and stay close to float32. */
static void check_quantized(const char *name, weights_quant to, float tolerance) {
    char path[1024], model_path[1024], out[256];
    snprintf(path, sizeof path, FAMILY "%s/case.json", name);
    cJSON *info = read_json(path);
    const int run_size = cJSON_GetObjectItem(info, "run_size")->valueint;
    case_model_path(name, info, model_path, sizeof model_path);
    base_error err;
    vit_model *model, *copy;
    cr_assert(vit_model_load(model_path, NULL, &model, &err) == BASE_OK, "%s", err.message);
    snprintf(out, sizeof out, "/tmp/vitc-family-%d-%s-%d.safetensors", (int)getpid(), name, (int)to);
    cr_assert(vit_model_quantize(model, to, 1, out, &err) == BASE_OK, "%s", err.message);
    cr_assert(vit_model_load(out, NULL, &copy, &err) == BASE_OK, "%s: %s", name, err.message);
    char a[256], b[256];
    cr_expect_str_eq(vit_config_describe_switches(vit_model_config(model), a, sizeof a),
                     vit_config_describe_switches(vit_model_config(copy), b, sizeof b));
    cr_expect(fabsf(vit_model_config(model)->layer_norm_eps - vit_model_config(copy)->layer_norm_eps) == 0);
    cr_expect_eq(vit_model_config(model)->act, vit_model_config(copy)->act);
    if (to == WEIGHTS_QUANT_INT8) cr_expect(vit_model_int8_kernels(copy) != NULL, "%s: no int8 layers", name);
    compare(name, copy, run_size, tolerance, 1);
    vit_model_free(copy);
    vit_model_free(model);
    remove(out);
    cJSON_Delete(info);
}

Test(family, int8_and_bf16_copies_keep_the_switches) {
    static const char *const CASES[] = {"clip_ft", "reg4_gap", "qknorm_nobias", "dinov2_reg_hf"};
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        check_quantized(CASES[i], WEIGHTS_QUANT_BF16, 0.1f);
        check_quantized(CASES[i], WEIGHTS_QUANT_INT8, 0.25f);
    }
}

/* Training runs every switch: a model created from a family
 * checkpoint's config, its weights copied (DINOv2's position grid resampled
 * to the run size as HF does), gives PyTorch's logits; one that differs in
 * a switch is refused naming it. */
static void check_training_forward(const char *name) {
    char path[512];
    snprintf(path, sizeof path, FAMILY "%s", name);
    vit_model *model;
    weights_file *expected;
    open_case(path, &model, &expected);
    base_error err;
    const weights_tensor *in = weights_find(expected, "input");
    const int batch = (int)in->shape[0];
    /* At the size the fixture runs (DINOv2: its recipe's, not the grid's). */
    vit_config run = *vit_model_config(model);
    const vit_config *c = &run;
    run.image_size = (int)in->shape[2];
    vit_model *created = NULL;
    vit_train *train = NULL;
    cr_assert(vit_model_create(c, &created, &err) == BASE_OK, "%s: %s", name, err.message);
    cr_assert(vit_model_assign(created, model, 1, &err) == BASE_OK, "%s: %s", name, err.message);
    cr_assert(vit_train_create(created, batch, &train, &err) == BASE_OK, "%s: %s", name, err.message);
    float *input = tensor_f32(expected, "input", NULL), *want = tensor_f32(expected, "logits", NULL);
    float *got = malloc(sizeof(float) * batch * c->num_classes);
    cr_assert(vit_train_forward(train, input, batch, got, NULL, &err) == BASE_OK, "%s", err.message);
    for (int i = 0; i < batch * c->num_classes; i++)
        cr_expect(fabsf(got[i] - want[i]) <= TOLERANCE * (1.0f + fabsf(want[i])),
                  "%s: training logit %d is %g, PyTorch %g", name, i, (double)got[i], (double)want[i]);
    /* The same backbone without LayerScale is not this model. */
    vit_config other = *c;
    other.layer_scale = !other.layer_scale;
    vit_model *wrong;
    cr_assert(vit_model_create(&other, &wrong, &err) == BASE_OK, "%s", err.message);
    cr_expect(vit_model_assign(wrong, model, 1, &err) != BASE_OK, "%s", name);
    cr_expect(strstr(err.message, "LayerScale") && !strchr(err.message, '\n'), "%s", err.message);
    vit_model_free(wrong);
    free(input);
    free(want);
    free(got);
    vit_train_free(train);
    vit_model_free(created);
    weights_close(expected);
    vit_model_free(model);
}

Test(family, training_forward_matches_pytorch_for_every_switch) {
    static const char *const CASES[] = {"deit3", "clip_ft", "clip_implicit", "reg4_gap",
                                        "reg4_token", "reg2_embed_class", "gap_implicit",
                                        "qknorm_nobias", "dinov2_hf", "dinov2_reg_hf"};
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) check_training_forward(CASES[i]);
}

/* The config vit train / quantize metadata use (vit_config_to_hf_json)
 * carries the switches back. */
Test(family, hf_json_config_round_trips_the_switches) {
    static const char *const CASES[] = {"clip_ft", "reg4_gap", "qknorm_nobias", "gap_implicit"};
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        char path[512];
        snprintf(path, sizeof path, FAMILY "%s", CASES[i]);
        vit_model *model;
        base_error err;
        cr_assert(vit_model_load(path, NULL, &model, &err) == BASE_OK, "%s", err.message);
        const vit_config *c = vit_model_config(model);
        cJSON *json = cJSON_CreateObject();
        vit_config_to_hf_json(c, 3, json);
        vit_config back = {0};
        cr_assert(vit_config_from_hf_json(json, "round trip", &back, &err) == BASE_OK, "%s", err.message);
        cr_expect_eq(back.no_class_token, c->no_class_token, "%s", CASES[i]);
        cr_expect_eq(back.num_reg_tokens, c->num_reg_tokens, "%s", CASES[i]);
        cr_expect_eq(back.no_embed_class, c->no_embed_class, "%s", CASES[i]);
        cr_expect_eq(back.global_pool, c->global_pool, "%s", CASES[i]);
        cr_expect_eq(back.fc_norm, c->fc_norm, "%s", CASES[i]);
        cr_expect_eq(back.pre_norm, c->pre_norm, "%s", CASES[i]);
        cr_expect_eq(back.qk_norm, c->qk_norm, "%s", CASES[i]);
        cr_expect_eq(back.no_qkv_bias, c->no_qkv_bias, "%s", CASES[i]);
        cr_expect_eq(back.act, c->act, "%s", CASES[i]);
        cr_expect_eq(back.layer_norm_eps, c->layer_norm_eps, "%s", CASES[i]);
        cJSON_Delete(json);
        vit_model_free(model);
    }
}

/* The command line: the refusal is one line naming the tensor,
 * --allow-unused loads with a warning, and vit info names the switches. */
Test(family, cli_allow_unused_and_info_switches) {
    run_result *r = run("info -m " FAMILY "hostile/unused_tensor");
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "blocks.0.foo.weight") && count_lines(r->err) == 1, "%s", r->err);
    r = run("info --allow-unused -m " FAMILY "hostile/unused_tensor");
    cr_expect_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "warning") && strstr(r->err, "blocks.0.foo.weight"), "%s", r->err);
    r = run("info -m " FAMILY "reg4_gap");
    cr_expect_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "4 register tokens") && strstr(r->out, "no class token") &&
                  strstr(r->out, "LayerScale") && strstr(r->out, "average pooling") &&
                  strstr(r->out, "fc_norm"),
              "%s", r->out);
    r = run("info -m " FAMILY "clip_ft");
    cr_expect(strstr(r->out, "pre-norm") && strstr(r->out, "QuickGELU") && strstr(r->out, "eps 1e-05"),
              "%s", r->out);
}
