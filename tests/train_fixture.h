/* train_fixture.h — reading the PyTorch training fixtures (tests/gen_train.py,
 * tests/gen_train_family.py, tests/gen_trajectory.py): tensors by name, the
 * "case" JSON's model configuration and AdamW hyper-parameters, the error
 * measure, and a case loaded as a created model and its trainer, checked
 * against autograd's gradients and torch.optim.AdamW's steps. */
#ifndef TRAIN_FIXTURE_H
#define TRAIN_FIXTURE_H

#include <cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "vit.h"
#include "vit_train.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures/train/"

/* The bound on gradients: per tensor, max |ours - torch| divided by
 * max |torch| (an elementwise ratio would blow up on entries near zero). */
#define GRAD_TOLERANCE 1e-4

/* Tensor name of f as floats (malloc'd), expected to hold expect values
 * (0: any number). */
static inline float *values_of(const weights_file *f, const char *name, size_t expect) {
    const weights_tensor *t;
    float *v = tensor_f32(f, name, &t);
    if (expect) cr_assert_eq(t->numel, expect, "'%s' has %zu values, expected %zu", name, t->numel, expect);
    return v;
}

static inline double json_number(const cJSON *obj, const char *key) {
    const cJSON *item = cJSON_GetObjectItem(obj, key);
    cr_assert(cJSON_IsNumber(item), "case JSON has no '%s'", key);
    return item->valuedouble;
}

static inline int json_int(const cJSON *obj, const char *key) {
    return (int)json_number(obj, key);
}

/* The model configuration of a case's "model" object (RefViT's names). */
static inline vit_config fixture_config(const cJSON *meta) {
    const cJSON *mc = cJSON_GetObjectItem(meta, "model");
    return (vit_config){.hidden_size = json_int(mc, "embed_dim"),
                        .num_layers = json_int(mc, "depth"),
                        .num_heads = json_int(mc, "num_heads"),
                        .mlp_size = json_int(mc, "mlp_dim"),
                        .patch_size = json_int(mc, "patch_size"),
                        .image_size = json_int(mc, "img_size"),
                        .num_channels = json_int(mc, "in_chans"),
                        .layer_norm_eps = (float)json_number(mc, "eps"),
                        .num_classes = json_int(mc, "num_classes"),
                        .num_prefix_tokens = 1};
}

/* The case's torch.optim.AdamW settings; the learning rate into *lr. */
static inline vit_adamw_params fixture_adamw(const cJSON *meta, float *lr) {
    const cJSON *a = cJSON_GetObjectItem(meta, "adamw");
    const cJSON *betas = cJSON_GetObjectItem(a, "betas");
    *lr = (float)json_number(a, "lr");
    return (vit_adamw_params){.beta1 = (float)cJSON_GetArrayItem(betas, 0)->valuedouble,
                              .beta2 = (float)cJSON_GetArrayItem(betas, 1)->valuedouble,
                              .eps = (float)json_number(a, "eps"),
                              .weight_decay = (float)json_number(a, "weight_decay")};
}

/* Copies the fixture's tensors prefix<name> into the model's parameters. */
static inline void fixture_params(const weights_file *f, const char *prefix, vit_model *m) {
    for (size_t i = 0; i < vit_model_num_tensors(m); i++) {
        const vit_param *t = vit_model_tensor_at(m, i);
        char key[128];
        snprintf(key, sizeof key, "%s%s", prefix, t->name);
        float *v = values_of(f, key, t->numel);
        memcpy(vit_model_params(m) + t->offset, v, t->numel * sizeof(float));
        free(v);
    }
}

/* max |a - b| / max |b| over n values (NaN counts as infinitely wrong). */
static inline double relative_error(const float *a, const float *b, size_t n) {
    double worst = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - b[i]);
        if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
        if (fabs((double)b[i]) > scale) scale = fabs((double)b[i]);
    }
    return worst / (scale > 0 ? scale : 1.0);
}

/* A training fixture: its file and "case" JSON, and a training model of its
 * configuration and batch holding its parameters, with its input batch. */
typedef struct train_fixture {
    weights_file *file;
    cJSON *meta;
    vit_config config;
    int batch;
    float smoothing;
    vit_model *model;
    vit_train *training;
    float *input;
    int *labels;
} train_fixture;

/* Loads FIXTURES<name>.safetensors, the configuration config_of(case JSON)
 * (fixture_config, or a test's own reader). */
static inline void load_train_fixture(const char *name, vit_config (*config_of)(const cJSON *),
                                      train_fixture *fx) {
    char path[1024];
    snprintf(path, sizeof path, FIXTURES "%s.safetensors", name);
    base_error err;
    cr_assert(weights_open(path, &fx->file, &err) == BASE_OK, "%s", err.message);
    fx->meta = cJSON_Parse(weights_metadata(fx->file, "case"));
    cr_assert(fx->meta);
    fx->config = config_of(fx->meta);
    fx->batch = json_int(fx->meta, "batch");
    fx->smoothing = (float)json_number(fx->meta, "smoothing");
    cr_assert(vit_model_create(&fx->config, &fx->model, &err) == BASE_OK, "%s: %s", name,
              err.message);
    cr_assert(vit_train_create(fx->model, fx->batch, &fx->training, &err) == BASE_OK, "%s: %s",
              name, err.message);
    fixture_params(fx->file, "", fx->model);
    const size_t image = (size_t)fx->config.num_channels * fx->config.image_size * fx->config.image_size;
    fx->input = values_of(fx->file, "input", image * fx->batch);
    float *labels = values_of(fx->file, "labels", (size_t)fx->batch);
    fx->labels = malloc(sizeof(int) * fx->batch);
    for (int b = 0; b < fx->batch; b++) fx->labels[b] = (int)labels[b];
    free(labels);
}

static inline void free_train_fixture(train_fixture *fx) {
    vit_train_free(fx->training);
    vit_model_free(fx->model);
    weights_close(fx->file);
    cJSON_Delete(fx->meta);
    free(fx->input);
    free(fx->labels);
}

/* The loss and every parameter's gradient of one step on the fixture's batch
 * against autograd's ("loss", "grad.<param>"): the loss within 1e-5
 * relative, each gradient within GRAD_TOLERANCE of max |torch|. A tensor
 * whose torch gradient is below zero_bound everywhere (0: none is) is zero
 * but for rounding: ours must be finite and as small, not close in ratio. */
static inline void check_train_gradients(const char *name, vit_config (*config_of)(const cJSON *),
                                         double zero_bound) {
    train_fixture fx;
    load_train_fixture(name, config_of, &fx);
    base_error err;
    float loss;
    int correct;
    cr_assert(vit_train_step_grads(fx.training, fx.input, fx.labels, fx.batch, fx.smoothing, &loss,
                                   &correct, &err) == BASE_OK, "%s", err.message);
    float *want_loss = values_of(fx.file, "loss", 1);
    cr_expect(fabsf(loss - want_loss[0]) <= 1e-5f * fabsf(want_loss[0]), "%s: loss %.8g, torch %.8g",
              name, (double)loss, (double)want_loss[0]);
    for (size_t i = 0; i < vit_model_num_tensors(fx.model); i++) {
        const vit_param *t = vit_model_tensor_at(fx.model, i);
        char key[96];
        snprintf(key, sizeof key, "grad.%s", t->name);
        float *want = values_of(fx.file, key, t->numel);
        const float *got = vit_train_grads(fx.training) + t->offset;
        double scale = 0.0, worst = 0.0;
        /* Not fmax: gcc 12.2 for aarch64 (Debian bookworm's, native and
         * cross) crashes vectorising an fmax reduction of widened floats
         * (internal compiler error in vect_transform_reduction). A NaN is
         * skipped either way. */
        for (size_t j = 0; j < t->numel; j++) {
            const double w = fabs((double)want[j]), g = fabs((double)got[j]);
            scale = w > scale ? w : scale;
            worst = g > worst ? g : worst;
        }
        if (scale < zero_bound) {
            cr_expect(worst <= zero_bound && isfinite(worst), "%s: gradient of %s is %.3g, torch's is "
                      "%.3g (zero but for rounding)", name, t->name, worst, scale);
        } else {
            const double e = relative_error(got, want, t->numel);
            cr_expect(e <= GRAD_TOLERANCE, "%s: gradient of %s differs from autograd by %.3g (relative)",
                      name, t->name, e);
        }
        free(want);
    }
    free(want_loss);
    free_train_fixture(&fx);
}

/* steps torch.optim.AdamW steps with the case's hyper-parameters, each from
 * the fixture's gradients ("grad.<param>"), against "step<k>.<param>":
 * within 1e-4 of the updates' size (about lr a step), not of the
 * parameter's, so that an error of 1e-4 of a step is caught. */
static inline void check_adamw_steps(train_fixture *fx, int steps) {
    float lr;
    const vit_adamw_params hyper = fixture_adamw(fx->meta, &lr);
    vit_adamw *opt;
    base_error err;
    cr_assert(vit_adamw_create(fx->model, &hyper, &opt, &err) == BASE_OK);
    for (int step = 1; step <= steps; step++) {
        for (size_t i = 0; i < vit_model_num_tensors(fx->model); i++) {
            const vit_param *t = vit_model_tensor_at(fx->model, i);
            char key[96];
            snprintf(key, sizeof key, "grad.%s", t->name);
            float *g = values_of(fx->file, key, t->numel);
            memcpy(vit_train_grads(fx->training) + t->offset, g, t->numel * sizeof(float));
            free(g);
        }
        vit_adamw_step(opt, fx->training, lr);
        for (size_t i = 0; i < vit_model_num_tensors(fx->model); i++) {
            const vit_param *t = vit_model_tensor_at(fx->model, i);
            char key[96];
            snprintf(key, sizeof key, "step%d.%s", step, t->name);
            float *want = values_of(fx->file, key, t->numel);
            const float *got = vit_model_params(fx->model) + t->offset;
            double worst = 0.0;
            for (size_t j = 0; j < t->numel; j++) {
                const double d = fabs((double)got[j] - want[j]);
                if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
            }
            cr_expect(worst <= 1e-4 * lr * step + 1e-6, "step %d: %s differs from torch by %.3g",
                      step, t->name, worst);
            free(want);
        }
    }
    vit_adamw_free(opt);
}

#endif
