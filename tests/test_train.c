/* Training: gradients of every layer and an AdamW step against PyTorch
 * (fixtures by tests/gen_train.py), a finite-difference check, overfitting
 * a small batch, determinism, and saved checkpoints that load for
 * inference with the same outputs. */
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

static void check_gradients(const char *name) { check_train_gradients(name, fixture_config, 0.0); }

Test(train, gradients_match_autograd_grey_two_layers_smoothing) { check_gradients("grey_d16_h2"); }
Test(train, gradients_match_autograd_rgb_three_heads) { check_gradients("rgb_d24_h3"); }

/* Two torch.optim.AdamW steps from the fixture's parameters and gradients. */
Test(train, adamw_matches_torch) {
    train_fixture fx;
    load_train_fixture("grey_d16_h2", fixture_config, &fx);
    check_adamw_steps(&fx, 2);
    free_train_fixture(&fx);
}

/* Frees a trainer and the model it trains. */
static void free_trained(vit_train *m) {
    vit_model *model = vit_train_model(m);
    vit_train_free(m);
    vit_model_free(model);
}

/* A tiny model of random weights, with its trainer. */
static vit_train *tiny_model(int batch, int classes, uint64_t seed) {
    const vit_config c = {.hidden_size = 16, .num_layers = 2, .num_heads = 2, .mlp_size = 32,
                          .patch_size = 4, .image_size = 8, .num_channels = 1,
                          .layer_norm_eps = 1e-6f, .num_classes = classes, .num_prefix_tokens = 1};
    vit_model *model;
    vit_train *m;
    base_error err;
    cr_assert(vit_model_create(&c, &model, &err) == BASE_OK, "%s", err.message);
    cr_assert(vit_train_create(model, batch, &m, &err) == BASE_OK, "%s", err.message);
    vit_model_init(model, seed);
    /* Larger than timm's 0.02 so every layer matters to the loss. */
    vit_train_rng rng;
    vit_train_rng_seed(&rng, seed + 1);
    float *p = vit_model_params(vit_train_model(m));
    for (size_t i = 0; i < vit_model_param_count(vit_train_model(m)); i++) p[i] += 0.3f * (float)vit_train_rng_normal(&rng);
    return m;
}

static void random_batch(float *images, int *labels, int n, int size, int classes, uint64_t seed) {
    vit_train_rng rng;
    vit_train_rng_seed(&rng, seed);
    for (int i = 0; i < n * size; i++) images[i] = (float)vit_train_rng_normal(&rng);
    for (int b = 0; b < n; b++) labels[b] = b % classes;
}

/* Central differences along a random ±1 direction within each tensor
 * against the analytic directional derivative. Float loss, so h is large
 * (2e-3) and the bound generous, but a wrong or missing term in any layer
 * shifts the derivative by far more. */
Test(train, finite_differences_agree_with_backward) {
    enum { N = 4, CLASSES = 3 };
    vit_train *m = tiny_model(N, CLASSES, 7);
    float images[N * 64];
    int labels[N];
    random_batch(images, labels, N, 64, CLASSES, 8);
    base_error err;
    float loss;
    cr_assert(vit_train_step_grads(m, images, labels, N, 0.1f, &loss, NULL, &err) == BASE_OK);
    const size_t P = vit_model_param_count(vit_train_model(m));
    float *grads = malloc(P * sizeof(float)), *saved = malloc(P * sizeof(float));
    memcpy(grads, vit_train_grads(m), P * sizeof(float));
    memcpy(saved, vit_model_params(vit_train_model(m)), P * sizeof(float));
    vit_train_rng rng;
    vit_train_rng_seed(&rng, 9);
    const float h = 2e-3f;
    for (size_t i = 0; i < vit_model_num_tensors(vit_train_model(m)); i++) {
        const vit_param *t = vit_model_tensor_at(vit_train_model(m), i);
        float *dir = malloc(t->numel * sizeof(float));
        double analytic = 0.0;
        for (size_t j = 0; j < t->numel; j++) {
            dir[j] = vit_train_rng_next(&rng) >> 63 ? 1.0f : -1.0f;
            analytic += (double)dir[j] * grads[t->offset + j];
        }
        float up, down;
        float *p = vit_model_params(vit_train_model(m)) + t->offset;
        for (size_t j = 0; j < t->numel; j++) p[j] = saved[t->offset + j] + h * dir[j];
        vit_train_step_grads(m, images, labels, N, 0.1f, &up, NULL, &err);
        for (size_t j = 0; j < t->numel; j++) p[j] = saved[t->offset + j] - h * dir[j];
        vit_train_step_grads(m, images, labels, N, 0.1f, &down, NULL, &err);
        memcpy(p, saved + t->offset, t->numel * sizeof(float));
        const double numeric = ((double)up - down) / (2.0 * h);
        cr_expect(fabs(numeric - analytic) <= 0.02 * fabs(analytic) + 2e-3,
                  "%s: finite differences %.6g, backward %.6g", t->name, numeric, analytic);
        free(dir);
    }
    free(grads);
    free(saved);
    free_trained(m);
}

/* Trains on one batch until it is learnt; returns the final loss. */
static float overfit(vit_train *m, const float *images, const int *labels, int n, int steps,
                     float first_loss[1], int *hits) {
    vit_adamw *opt;
    base_error err;
    const vit_adamw_params hyper = {0.9f, 0.999f, 1e-8f, 0.01f};
    cr_assert(vit_adamw_create(vit_train_model(m), &hyper, &opt, &err) == BASE_OK);
    const vit_train_schedule sched = {3e-3f, 1e-4f, 10, steps};
    float loss = 0.0f;
    for (int s = 0; s < steps; s++) {
        cr_assert(vit_train_step_grads(m, images, labels, n, 0.0f, &loss, hits, &err) == BASE_OK);
        if (s == 0) first_loss[0] = loss;
        vit_train_clip_grad_norm(m, 1.0f);
        vit_adamw_step(opt, m, vit_train_lr_at(s, &sched));
    }
    vit_train_step_grads(m, images, labels, n, 0.0f, &loss, hits, &err);
    vit_adamw_free(opt);
    return loss;
}

Test(train, tiny_model_overfits_a_batch) {
    enum { N = 16, CLASSES = 4 };
    vit_train *m = tiny_model(N, CLASSES, 11);
    vit_model_init(vit_train_model(m), 11); /* timm init for real training */
    float images[N * 64];
    int labels[N], hits;
    random_batch(images, labels, N, 64, CLASSES, 12);
    float first;
    const float last = overfit(m, images, labels, N, 300, &first, &hits);
    cr_expect(last < 0.05f * first, "loss went from %g to %g only", first, last);
    cr_expect_eq(hits, N, "%d of %d images right after training", hits, N);
    free_trained(m);
}

Test(train, same_seed_same_weights) {
    enum { N = 8, CLASSES = 3 };
    float images[N * 64], first;
    int labels[N], hits;
    random_batch(images, labels, N, 64, CLASSES, 5);
    vit_train *a = tiny_model(N, CLASSES, 3), *b = tiny_model(N, CLASSES, 3);
    overfit(a, images, labels, N, 20, &first, &hits);
    overfit(b, images, labels, N, 20, &first, &hits);
    cr_expect(memcmp(vit_model_params(vit_train_model(a)), vit_model_params(vit_train_model(b)),
                     vit_model_param_count(vit_train_model(a)) * sizeof(float)) == 0,
              "two runs from the same seed differ");
    free_trained(a);
    free_trained(b);
}

/* A saved 1-channel model loads for inference (3 channels, luma-folded
 * kernel) and gives the training forward's logits on grey RGB input. */
Test(train, saved_model_loads_and_matches) {
    enum { N = 2, CLASSES = 3 };
    vit_train *m = tiny_model(N, CLASSES, 21);
    float images[N * 64];
    int labels[N];
    random_batch(images, labels, N, 64, CLASSES, 22);
    float want[N * CLASSES];
    base_error err;
    cr_assert(vit_train_forward(m, images, N, want, NULL, &err) == BASE_OK);
    char path[64];
    snprintf(path, sizeof path, "/tmp/vitc-train-save-%d.safetensors", (int)getpid());
    const char *names[CLASSES] = {"ant", "bee", "cat"};
    data_preprocess pre;
    data_preprocess_default(&pre, 8);
    cr_assert(vit_model_save(vit_train_model(m), path, names, &pre, NULL, 0, NULL, NULL, 0, &err) == BASE_OK, "%s",
              err.message);
    vit_model *model;
    cr_assert(vit_model_load(path, NULL, &model, &err) == BASE_OK, "%s", err.message);
    cr_expect_eq(vit_model_config(model)->num_channels, 3);
    cr_expect_eq(vit_model_config(model)->num_heads, 2);
    cr_expect_str_eq(vit_model_label(model, 1), "bee");
    float rgb[N * 3 * 64], got[N * CLASSES];
    for (int b = 0; b < N; b++)
        for (int ch = 0; ch < 3; ch++) memcpy(rgb + (b * 3 + ch) * 64, images + b * 64, sizeof(float) * 64);
    vit_context *ctx;
    cr_assert(vit_context_create(model, N, 0, 0, &ctx, &err) == BASE_OK);
    cr_assert(vit_forward(ctx, rgb, N, got, &err) == BASE_OK);
    for (int i = 0; i < N * CLASSES; i++)
        cr_expect(fabsf(got[i] - want[i]) <= 1e-4f * (1.0f + fabsf(want[i])), "logit %d: %g vs %g",
                  i, (double)got[i], (double)want[i]);
    vit_context_free(ctx);
    vit_model_free(model);
    remove(path);
    free_trained(m);
}

/* The training forward on the inference parity fixtures (timm and Hugging
 * Face layouts, through vit_model_assign): the logits PyTorch gave. */
static void check_parity_forward(const char *name) {
    char path[1024];
    base_error err;
    vit_model *model;
    weights_file *expected;
    snprintf(path, sizeof path, VITC_SOURCE_DIR "/tests/fixtures/parity/%s", name);
    open_case(path, &model, &expected);
    const weights_tensor *in = weights_find(expected, "input");
    const int batch = (int)in->shape[0];
    const vit_config *c = vit_model_config(model);
    vit_model *created;
    vit_train *m;
    cr_assert(vit_model_create(c, &created, &err) == BASE_OK, "%s", err.message);
    cr_assert(vit_model_assign(created, model, 1, &err) == BASE_OK, "%s", err.message);
    cr_assert(vit_train_create(created, batch, &m, &err) == BASE_OK, "%s", err.message);
    float *input = values_of(expected, "input", 0), *want = values_of(expected, "logits", 0);
    float *got = malloc(sizeof(float) * batch * c->num_classes);
    cr_assert(vit_train_forward(m, input, batch, got, NULL, &err) == BASE_OK, "%s", err.message);
    const double e = relative_error(got, want, (size_t)batch * c->num_classes);
    cr_expect(e <= 1e-5, "%s: training forward differs from PyTorch by %.3g (relative)", name, e);
    free(input);
    free(want);
    free(got);
    free_trained(m);
    weights_close(expected);
    vit_model_free(model);
}

Test(train, forward_matches_parity_fixture_timm) { check_parity_forward("timm_d128_h2"); }
Test(train, forward_matches_parity_fixture_hf_vit) { check_parity_forward("hf_vit_d48_h3"); }
