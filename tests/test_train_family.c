/* Training for the ViT family's switches (issue 18): the loss and the
 * gradient of every parameter against PyTorch autograd for small random
 * models with each switch and sensible combinations (fixtures by
 * tests/gen_train_family.py), an AdamW step of a switch-heavy model, saved
 * models that reload with every switch and the training forward's logits,
 * and the linear probe (--freeze-backbone) of a model without a class
 * token. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train_fixture.h"
#include "vit.h"
#include "vit_train.h"

static const char *const CASES[] = {"deit3", "clip", "reg4_gap", "gap_norm", "qknorm_nobias",
                                    "dinov2_reg"};
#define NUM_CASES (sizeof CASES / sizeof *CASES)

/* The case's "config": vit_config fields by name. */
static vit_config case_config(const cJSON *meta) {
    const cJSON *c = cJSON_GetObjectItem(meta, "config");
    cr_assert(cJSON_IsObject(c), "case JSON has no config");
    return (vit_config){.hidden_size = json_int(c, "hidden_size"),
                        .num_layers = json_int(c, "num_layers"),
                        .num_heads = json_int(c, "num_heads"),
                        .mlp_size = json_int(c, "mlp_size"),
                        .patch_size = json_int(c, "patch_size"),
                        .image_size = json_int(c, "image_size"),
                        .num_channels = json_int(c, "num_channels"),
                        .layer_norm_eps = (float)json_number(c, "layer_norm_eps"),
                        .num_classes = json_int(c, "num_classes"),
                        .num_prefix_tokens = json_int(c, "num_prefix_tokens"),
                        .no_class_token = json_int(c, "no_class_token"),
                        .num_reg_tokens = json_int(c, "num_reg_tokens"),
                        .pos_embed_prefix = json_int(c, "pos_embed_prefix"),
                        .no_embed_class = json_int(c, "no_embed_class"),
                        .global_pool = (vit_global_pool)json_int(c, "global_pool"),
                        .no_final_norm = json_int(c, "no_final_norm"),
                        .fc_norm = json_int(c, "fc_norm"),
                        .pre_norm = json_int(c, "pre_norm"),
                        .act = (vit_act)json_int(c, "act"),
                        .no_qkv_bias = json_int(c, "no_qkv_bias"),
                        .qk_norm = json_int(c, "qk_norm"),
                        .layer_scale = json_int(c, "layer_scale")};
}

/* FIXTURES family_<name>.safetensors; every tensor of the training model is
 * in the file, and every parameter of the file is in the model (no switch's
 * tensor dropped). */
static void load_fixture(const char *name, train_fixture *fx) {
    char file[128];
    snprintf(file, sizeof file, "family_%s", name);
    load_train_fixture(file, case_config, fx);
    size_t file_params = 0;
    for (size_t i = 0; i < weights_count(fx->file); i++) {
        const char *n = weights_at(fx->file, i)->name;
        if (strchr(n, '.') ? (strncmp(n, "grad.", 5) && strncmp(n, "step1.", 6)) : 1)
            if (strcmp(n, "input") && strcmp(n, "labels") && strcmp(n, "loss") && strcmp(n, "logits"))
                file_params++;
    }
    cr_expect_eq(vit_model_num_tensors(fx->model), file_params, "%s: %zu tensors, the file %zu",
                 name, vit_model_num_tensors(fx->model), file_params);
}

/* Gradients within GRAD_TOLERANCE but where torch's is zero but for
 * rounding (below 1e-6): the k_norm bias adds one constant to every key's
 * score for a query, which softmax ignores. A ratio to torch's rounding
 * noise means nothing; ours must be as small. */
static void check_gradients(const char *name) {
    char file[128];
    snprintf(file, sizeof file, "family_%s", name);
    check_train_gradients(file, case_config, 1e-6);
}

Test(train_family, gradients_deit3_layer_scale_no_embed_class) { check_gradients("deit3"); }
Test(train_family, gradients_clip_pre_norm_quick_gelu_eps) { check_gradients("clip"); }
Test(train_family, gradients_reg4_gap_fc_norm_layer_scale) { check_gradients("reg4_gap"); }
Test(train_family, gradients_gap_final_norm_no_qkv_bias) { check_gradients("gap_norm"); }
Test(train_family, gradients_qk_norm_no_qkv_bias) { check_gradients("qknorm_nobias"); }
Test(train_family, gradients_dinov2_registers_class_mean_head) { check_gradients("dinov2_reg"); }

/* One torch.optim.AdamW step of the switch-heavy reg4_gap model: gammas,
 * registers and fc_norm are stepped (no decay), as PyTorch does. */
Test(train_family, adamw_step_matches_torch_reg4_gap) {
    train_fixture fx;
    load_fixture("reg4_gap", &fx);
    check_adamw_steps(&fx, 1);
    free_train_fixture(&fx);
}

/* Saved, reloaded for inference: every switch kept, the logits the training
 * forward gives (and PyTorch's). */
static void check_save_reload(const char *name) {
    train_fixture fx;
    load_fixture(name, &fx);
    const vit_config *c = &fx.config;
    const int N = fx.batch, C = c->num_classes;
    float *train_logits = malloc(sizeof(float) * N * C), *got = malloc(sizeof(float) * N * C);
    base_error err;
    cr_assert(vit_train_forward(fx.training, fx.input, N, train_logits, NULL, &err) == BASE_OK);
    float *torch_logits = values_of(fx.file, "logits", (size_t)N * C);
    const double e_torch = relative_error(train_logits, torch_logits, (size_t)N * C);
    cr_expect(e_torch <= 1e-5, "%s: training forward differs from torch by %.3g", name, e_torch);
    char path[128];
    snprintf(path, sizeof path, "/tmp/vitc-train-family-%s-%d.safetensors", name, (int)getpid());
    data_preprocess pre;
    data_preprocess_default(&pre, c->image_size);
    cr_assert(vit_model_save(fx.model, path, NULL, &pre, NULL, 0, NULL, NULL, 0, &err) == BASE_OK,
              "%s", err.message);
    vit_model *model;
    cr_assert(vit_model_load(path, NULL, &model, &err) == BASE_OK, "%s: %s", name, err.message);
    const vit_config *r = vit_model_config(model);
    char want_sw[256], got_sw[256];
    vit_config_describe_switches(c, want_sw, sizeof want_sw);
    vit_config_describe_switches(r, got_sw, sizeof got_sw);
    cr_expect_str_eq(got_sw, want_sw, "%s: switches after reload", name);
    cr_expect_eq(r->no_class_token, c->no_class_token, "%s", name);
    cr_expect_eq(r->num_reg_tokens, c->num_reg_tokens, "%s", name);
    cr_expect_eq(r->pos_embed_prefix, c->pos_embed_prefix, "%s", name);
    cr_expect_eq(r->global_pool, c->global_pool, "%s", name);
    cr_expect_eq(r->no_final_norm, c->no_final_norm, "%s", name);
    cr_expect_eq(r->fc_norm, c->fc_norm, "%s", name);
    cr_expect_eq(r->pre_norm, c->pre_norm, "%s", name);
    cr_expect_eq(r->act, c->act, "%s", name);
    cr_expect_eq(r->no_qkv_bias, c->no_qkv_bias, "%s", name);
    cr_expect_eq(r->qk_norm, c->qk_norm, "%s", name);
    cr_expect_eq(r->layer_scale, c->layer_scale, "%s", name);
    cr_expect_eq(r->layer_norm_eps, c->layer_norm_eps, "%s", name);
    cr_expect_eq(r->num_classes, C, "%s", name);
    vit_context *ctx;
    cr_assert(vit_context_create(model, N, 0, 0, &ctx, &err) == BASE_OK, "%s", err.message);
    cr_assert(vit_forward(ctx, fx.input, N, got, &err) == BASE_OK);
    const double e = relative_error(got, train_logits, (size_t)N * C);
    cr_expect(e <= 1e-5, "%s: reloaded logits differ from the training forward's by %.3g", name, e);
    vit_context_free(ctx);
    vit_model_free(model);
    remove(path);
    free(train_logits);
    free(got);
    free(torch_logits);
    free_train_fixture(&fx);
}

Test(train_family, saved_models_reload_with_every_switch) {
    for (size_t i = 0; i < NUM_CASES; i++) check_save_reload(CASES[i]);
}

/* --freeze-backbone on a model without a class token: the features are what
 * the head reads (the mean of the patch tokens after fc_norm), head-only
 * gradients on them are the full step's head gradients, and steps leave
 * the backbone alone. */
Test(train_family, linear_probe_without_class_token) {
    train_fixture fx;
    load_fixture("reg4_gap", &fx);
    const int N = fx.batch, D = fx.config.hidden_size, C = fx.config.num_classes;
    base_error err;
    float *features = malloc(sizeof(float) * N * D), *logits = malloc(sizeof(float) * N * C);
    cr_assert(vit_train_forward(fx.training, fx.input, N, logits, features, &err) == BASE_OK);
    float loss_full, loss_head;
    cr_assert(vit_train_step_grads(fx.training, fx.input, fx.labels, N, fx.smoothing, &loss_full,
                                   NULL, &err) == BASE_OK);
    const vit_param *hw = vit_model_find(fx.model, "head.weight");
    cr_assert(hw);
    float *full = malloc(hw->numel * sizeof(float));
    memcpy(full, vit_train_grads(fx.training) + hw->offset, hw->numel * sizeof(float));
    cr_assert(vit_train_head_grads(fx.training, features, fx.labels, N, fx.smoothing, &loss_head, NULL,
                                   &err) == BASE_OK);
    cr_expect(fabsf(loss_full - loss_head) <= 1e-6f * fabsf(loss_full), "%g vs %g",
              (double)loss_full, (double)loss_head);
    cr_expect(relative_error(vit_train_grads(fx.training) + hw->offset, full, hw->numel) <= 1e-6);
    /* The head reads fc_norm's output: a head fed the un-normed mean would not. */
    float *want = values_of(fx.file, "grad.head.weight", hw->numel);
    cr_expect(relative_error(vit_train_grads(fx.training) + hw->offset, want, hw->numel) <= GRAD_TOLERANCE);
    free(want);

    vit_model_freeze_backbone(fx.model, 1);
    const size_t P = vit_model_param_count(fx.model);
    float *before = malloc(P * sizeof(float));
    memcpy(before, vit_model_params(fx.model), P * sizeof(float));
    const vit_adamw_params hyper = {0.9f, 0.999f, 1e-8f, 0.05f};
    vit_adamw *opt;
    cr_assert(vit_adamw_create(fx.model, &hyper, &opt, &err) == BASE_OK);
    for (int s = 0; s < 3; s++) {
        cr_assert(vit_train_head_grads(fx.training, features, fx.labels, N, 0.0f, NULL, NULL, &err) == BASE_OK);
        vit_adamw_step(opt, fx.training, 1e-2f);
    }
    for (size_t i = 0; i < vit_model_num_tensors(fx.model); i++) {
        const vit_param *t = vit_model_tensor_at(fx.model, i);
        const int same = memcmp(vit_model_params(fx.model) + t->offset, before + t->offset,
                                t->numel * sizeof(float)) == 0;
        if (strncmp(t->name, "head.", 5) == 0)
            cr_expect(!same, "%s did not move", t->name);
        else
            cr_expect(same, "frozen %s moved", t->name);
    }
    vit_adamw_free(opt);
    free(before);
    free(full);
    free(features);
    free(logits);
    free_train_fixture(&fx);
}
