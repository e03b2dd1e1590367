/* train_fixture.h — reading the PyTorch training fixtures (tests/gen_train.py,
 * tests/gen_trajectory.py): tensors by name, the "case" JSON's model
 * configuration and AdamW hyper-parameters, and the error measure. */
#ifndef TRAIN_FIXTURE_H
#define TRAIN_FIXTURE_H

#include <cJSON.h>
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>

#include "test_util.h"
#include "vit.h"
#include "vit_train.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures/train/"

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
static inline void fixture_params(const weights_file *f, const char *prefix, vit_train_model *m) {
    for (size_t i = 0; i < vit_train_num_tensors(m); i++) {
        const vit_train_tensor *t = vit_train_tensor_at(m, i);
        char key[128];
        snprintf(key, sizeof key, "%s%s", prefix, t->name);
        float *v = values_of(f, key, t->numel);
        memcpy(vit_train_params(m) + t->offset, v, t->numel * sizeof(float));
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

#endif
