/* The inspection tools: attention, rollout, keys, tokens and per-patch logits
 * against PyTorch (tests/gen_inspect.py on the parity checkpoints), k-means,
 * upsampling against F.interpolate, the .npy and PNG writers, and the four
 * commands end to end. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "test_util.h"
#include "vit.h"
#include "vit_inspect.h"

#define PARITY VITC_SOURCE_DIR "/tests/fixtures/parity/"
#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures/inspect/"
/* The bound against PyTorch: 1e-4, or BF16_TOLERANCE for a checkpoint
 * whose layers compute in bf16 (check_case sets it). */
static float tolerance = 1e-4f;
#define TOLERANCE tolerance
/* A BF16 checkpoint computes in bf16 (vit quantize --dtype bf16 files,
 * docs/quantize.md): every linear layer rounds its inputs to bf16 (relative
 * error up to 2^-9), where PyTorch's reference ran float32 activations on
 * the same bf16 weights. So such a fixture is held to a bf16-sized bound,
 * as tests/test_quantize.c holds its bf16 copies; tests/test_bf16.c holds
 * the bf16 arithmetic itself exactly. */
#define BF16_TOLERANCE 3e-2f

static float *tensor(const weights_file *f, const char *name, size_t expect_numel) {
    const weights_tensor *t = weights_find(f, name);
    cr_assert(t, "fixture has no '%s'", name);
    if (expect_numel) cr_assert_eq(t->numel, expect_numel, "'%s': %zu values, expected %zu", name, t->numel, expect_numel);
    float *values = malloc(t->numel * sizeof(float));
    base_error err;
    cr_assert(weights_to_f32(f, t, values, &err) == BASE_OK, "%s", err.message);
    return values;
}

/* A fixture case (case_dir: its model and expected.safetensors) run on its
 * input once, every layer's attention and the last layer's tokens (with
 * keys, also its keys) captured; ref: the inspection fixture to compare with. */
typedef struct inspected {
    vit_model *model;
    weights_file *expected, *ref;
    vit_context *ctx;
    int B, L;
    float *input, **attn, *tokens, *keys, *logits;
} inspected;

static void inspect_case(const char *case_dir, const char *ref_path, int keys, inspected *r) {
    base_error err;
    open_case(case_dir, &r->model, &r->expected);
    cr_assert(weights_open(ref_path, &r->ref, &err) == BASE_OK, "%s", err.message);
    const vit_config *c = vit_model_config(r->model);
    const weights_tensor *input_t = weights_find(r->expected, "input");
    const int B = (int)input_t->shape[0], S = (int)input_t->shape[2], L = c->num_layers;
    r->B = B;
    r->L = L;
    r->input = tensor(r->expected, "input", 0);
    cr_assert(vit_context_create(r->model, B, S, 0, &r->ctx, &err) == BASE_OK, "%s", err.message);
    const int T = vit_context_num_tokens(r->ctx);
    const size_t token_floats = (size_t)B * T * c->hidden_size;
    r->attn = calloc((size_t)L, sizeof *r->attn);
    for (int l = 0; l < L; l++) {
        r->attn[l] = malloc((size_t)B * c->num_heads * T * T * sizeof(float));
        cr_assert(vit_context_capture(r->ctx, VIT_CAPTURE_ATTENTION, l, r->attn[l], &err) == BASE_OK, "%s",
                  err.message);
    }
    r->tokens = malloc(token_floats * sizeof(float));
    cr_assert(vit_context_capture(r->ctx, VIT_CAPTURE_TOKENS, L - 1, r->tokens, &err) == BASE_OK);
    r->keys = NULL;
    if (keys) {
        r->keys = malloc(token_floats * sizeof(float));
        cr_assert(vit_context_capture(r->ctx, VIT_CAPTURE_KEYS, L - 1, r->keys, &err) == BASE_OK);
    }
    r->logits = malloc((size_t)B * vit_model_output_size(r->model) * sizeof(float));
    cr_assert(vit_forward(r->ctx, r->input, B, r->logits, &err) == BASE_OK, "%s", err.message);
}

static void inspected_free(inspected *r) {
    for (int l = 0; l < r->L; l++) free(r->attn[l]);
    free(r->attn); free(r->tokens); free(r->keys); free(r->logits); free(r->input);
    vit_context_free(r->ctx);
    weights_close(r->ref);
    weights_close(r->expected);
    vit_model_free(r->model);
}

/* ------------------------------------------------- parity with PyTorch */

static void check_case(const char *name) {
    char dir[1024], path[1024];
    snprintf(dir, sizeof dir, PARITY "%s", name);
    snprintf(path, sizeof path, FIXTURES "%s.safetensors", name);
    inspected run;
    inspect_case(dir, path, 1, &run);
    base_error err;
    const vit_model *model = run.model;
    tolerance = vit_model_bf16_kernels(model) ? BF16_TOLERANCE : 1e-4f;
    const weights_file *ref = run.ref;
    const vit_config *c = vit_model_config(model);
    const int B = run.B, T = vit_context_num_tokens(run.ctx), H = c->num_heads, D = c->hidden_size,
              L = c->num_layers, P = T - c->num_prefix_tokens, C = c->num_classes;
    const size_t attn_floats = (size_t)B * H * T * T, token_floats = (size_t)B * T * D;
    float **attn = run.attn, *tokens = run.tokens, *keys = run.keys;

    for (int l = 0; l < L; l++) {
        char key[32];
        snprintf(key, sizeof key, "attention_%d", l);
        float *want = tensor(ref, key, attn_floats);
        const float e = max_abs_diff(attn[l], want, attn_floats);
        cr_expect(e <= TOLERANCE, "%s: layer %d attention differs from PyTorch by %g", name, l, e);
        free(want);
    }
    float *want = tensor(ref, "tokens_last", token_floats);
    float e = max_abs_diff(tokens, want, token_floats);
    cr_expect(e <= TOLERANCE, "%s: last-layer tokens differ from PyTorch by %g", name, e);
    free(want);
    want = tensor(ref, "keys_last", token_floats);
    e = max_abs_diff(keys, want, token_floats);
    cr_expect(e <= TOLERANCE, "%s: last-layer keys differ from PyTorch by %g", name, e);
    free(want);

    /* Rollout from our captured attention, per image. */
    float *result = malloc((size_t)T * T * sizeof(float));
    float *scratch = malloc(vit_rollout_scratch_size(T) * sizeof(float));
    const float **layers = calloc((size_t)L, sizeof *layers);
    const float discards[2] = {0.0f, 0.5f};
    const char *names[2] = {"rollout_0", "rollout_50"};
    for (int d = 0; d < 2; d++) {
        want = tensor(ref, names[d], (size_t)B * T * T);
        for (int b = 0; b < B; b++) {
            for (int l = 0; l < L; l++) layers[l] = attn[l] + (size_t)b * H * T * T;
            cr_assert(vit_attention_rollout(layers, L, H, T, discards[d], result, scratch, &err) == BASE_OK, "%s", err.message);
            e = max_abs_diff(result, want + (size_t)b * T * T, (size_t)T * T);
            cr_expect(e <= TOLERANCE, "%s: %s of image %d differs from PyTorch by %g", name, names[d], b, e);
        }
        free(want);
    }

    /* The classifier on every patch token. */
    float *patch = malloc((size_t)P * C * sizeof(float));
    want = tensor(ref, "patch_logits", (size_t)B * P * C);
    for (int b = 0; b < B; b++) {
        cr_assert(vit_token_logits(model, tokens + ((size_t)b * T + c->num_prefix_tokens) * D, P, 0, patch, &err) == BASE_OK, "%s", err.message);
        e = max_abs_diff(patch, want + (size_t)b * P * C, (size_t)P * C);
        cr_expect(e <= TOLERANCE, "%s: patch logits of image %d differ from PyTorch by %g", name, b, e);
    }
    free(want);

    /* vit features --pool: the final LayerNorm, then timm's pre_logits pool
     * (class token / mean of the patch tokens / every token), with and
     * without F.normalize. */
    static const struct { const char *key; vit_pool pool; int l2; } POOLS[] = {
        {"pool_cls", VIT_POOL_CLS, 0},     {"pool_mean", VIT_POOL_MEAN, 0},
        {"pool_none", VIT_POOL_NONE, 0},   {"pool_cls_l2", VIT_POOL_CLS, 1},
        {"pool_mean_l2", VIT_POOL_MEAN, 1}, {"pool_none_l2", VIT_POOL_NONE, 1}};
    float *pooled = malloc((size_t)T * D * sizeof(float)), *pool_scratch = malloc((size_t)D * sizeof(float));
    for (size_t k = 0; k < sizeof POOLS / sizeof *POOLS; k++) {
        const size_t per_image = POOLS[k].pool == VIT_POOL_NONE ? (size_t)T * D : (size_t)D;
        want = tensor(ref, POOLS[k].key, (size_t)B * per_image);
        for (int b = 0; b < B; b++) {
            cr_assert(vit_pool_tokens(model, tokens + (size_t)b * T * D, T, POOLS[k].pool, POOLS[k].l2,
                                      pooled, pool_scratch, &err) == BASE_OK, "%s", err.message);
            e = max_abs_diff(pooled, want + (size_t)b * per_image, per_image);
            cr_expect(e <= TOLERANCE, "%s: %s of image %d differs from PyTorch by %g", name, POOLS[k].key, b, e);
        }
        free(want);
    }
    free(pooled); free(pool_scratch);

    free(patch); free(result); free(scratch); free(layers);
    inspected_free(&run);
    tolerance = 1e-4f;
}

Test(inspect_parity, hf_vit) { check_case("hf_vit_d48_h3"); }
Test(inspect_parity, timm_distilled) { check_case("timm_dist_d96_h4"); }
Test(inspect_parity, hf_deit_three_layers) { check_case("hf_deit_teacher_d64_h2"); }

/* ------------------------------------------------------------- rollout */

/* Uniform attention over T tokens: every entry ties, so discard keeps to
 * "lowest flat indices first, (0, 0) spared". */
Test(rollout, discard_ties_and_protected_class_entry) {
    enum { T = 4 };
    float attn[T * T], result[T * T], scratch[T * T + 16 * T]; /* vit_rollout_scratch_size */
    for (int i = 0; i < T * T; i++) attn[i] = 1.0f / T;
    const float *layers[1] = {attn};
    base_error err;
    /* floor(16 * 0.3) = 4 smallest: flat 0..3 (row 0); 0 is spared. */
    cr_assert(vit_attention_rollout(layers, 1, 1, T, 0.3f, result, scratch, &err) == BASE_OK);
    /* Row 0 keeps only (0,0): (0.25 + 1) / 2 renormalised = 1. */
    cr_expect_float_eq(result[0], 1.0f, 1e-6f);
    for (int j = 1; j < T; j++) cr_expect_float_eq(result[j], 0.0f, 1e-7f);
    /* Other rows untouched: (0.25 + I)/2 renormalised. */
    cr_expect_float_eq(result[T + 1], 0.625f, 1e-6f);
    cr_expect_float_eq(result[T + 0], 0.125f, 1e-6f);
    cr_expect(vit_attention_rollout(layers, 1, 1, T, 1.0f, result, scratch, &err) == BASE_E_ARG);
}

Test(rollout, identity_attention_gives_identity) {
    enum { T = 5 };
    float attn[2 * T * T], result[T * T], scratch[T * T + 16 * T]; /* vit_rollout_scratch_size */
    memset(attn, 0, sizeof attn);
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < T; i++) attn[h * T * T + i * T + i] = 1.0f;
    const float *layers[3] = {attn, attn, attn};
    base_error err;
    cr_assert(vit_attention_rollout(layers, 3, 2, T, 0.0f, result, scratch, &err) == BASE_OK);
    for (int i = 0; i < T * T; i++) cr_expect_float_eq(result[i], i % (T + 1) == 0 ? 1.0f : 0.0f, 1e-6f);
}

Test(attention_row, head_and_mean) {
    /* 2 heads, 3 tokens, 1 prefix: row 0, keys 1..2. */
    const float attn[18] = {0.2f, 0.3f, 0.5f, 0, 0, 0, 0, 0, 0,
                            0.4f, 0.5f, 0.1f, 0, 0, 0, 0, 0, 0};
    float out[2];
    vit_attention_row(attn, 2, 3, 0, 1, 1, out);
    cr_expect(out[0] == 0.5f && out[1] == 0.1f);
    vit_attention_row(attn, 2, 3, 0, -1, 1, out);
    cr_expect_float_eq(out[0], 0.4f, 1e-7f);
    cr_expect_float_eq(out[1], 0.3f, 1e-7f);
}

/* ------------------------------------------------------------- k-means */

/* Our own tiny generator for test data (xorshift32). */
static float test_noise(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return (float)(*s >> 8) / 16777216.0f - 0.5f;
}

enum { BLOBS = 4, PER_BLOB = 40, DIM = 16, N = BLOBS * PER_BLOB };

/* Four well-separated blobs, points interleaved in a scrambled order. */
static void make_blobs(float *points, int *truth) {
    uint32_t s = 12345;
    for (int i = 0; i < N; i++) {
        const int blob = (i * 7 + i / 5) % BLOBS;
        truth[i] = blob;
        for (int j = 0; j < DIM; j++)
            points[i * DIM + j] = (j % BLOBS == blob ? 10.0f : 0.0f) + 0.5f * test_noise(&s);
    }
    /* Renumber the truth by first appearance, as vit_kmeans labels. */
    int map[BLOBS] = {-1, -1, -1, -1}, next = 0;
    for (int i = 0; i < N; i++) {
        if (map[truth[i]] < 0) map[truth[i]] = next++;
        truth[i] = map[truth[i]];
    }
}

Test(kmeans, recovers_separable_clusters_for_every_seed) {
    float points[N * DIM], centroids[BLOBS * DIM];
    int truth[N], labels[N];
    double scratch[2 * BLOBS * DIM + 2 * N + BLOBS];
    cr_assert_geq(sizeof scratch / sizeof *scratch, vit_kmeans_scratch_size(N, DIM, BLOBS));
    make_blobs(points, truth);
    base_error err;
    for (uint64_t seed = 0; seed < 20; seed++) {
        int iterations = -1;
        cr_assert(vit_kmeans(points, N, DIM, BLOBS, seed, 100, labels, centroids, scratch, &iterations, &err) == BASE_OK, "%s", err.message);
        for (int i = 0; i < N; i++)
            cr_assert_eq(labels[i], truth[i], "seed %llu: point %d in cluster %d, truth %d",
                         (unsigned long long)seed, i, labels[i], truth[i]);
        cr_expect(iterations >= 1 && iterations < 100);
        /* Centroid of cluster 0 is the mean of its points. */
        double mean = 0.0;
        int members = 0;
        for (int i = 0; i < N; i++) {
            mean += labels[i] == 0 ? points[i * DIM] : 0.0;
            members += labels[i] == 0;
        }
        cr_expect_float_eq(centroids[0], (float)(mean / members), 1e-4f);
    }
}

Test(kmeans, deterministic_for_a_seed) {
    /* Unstructured data: the result depends on the seed, but only on it. */
    enum { n = 200, dim = 8, k = 5 };
    float points[n * dim], c1[k * dim], c2[k * dim];
    int l1[n], l2[n];
    double scratch[2 * k * dim + 2 * n + k];
    uint32_t s = 99;
    for (int i = 0; i < n * dim; i++) points[i] = test_noise(&s);
    vit_l2_normalize_rows(points, n, dim);
    base_error err;
    cr_assert(vit_kmeans(points, n, dim, k, 7, 300, l1, c1, scratch, NULL, &err) == BASE_OK);
    cr_assert(vit_kmeans(points, n, dim, k, 7, 300, l2, c2, scratch, NULL, &err) == BASE_OK);
    cr_expect(memcmp(l1, l2, sizeof l1) == 0 && memcmp(c1, c2, sizeof c1) == 0);
    int differs = 0;
    for (uint64_t seed = 8; seed < 16 && !differs; seed++) {
        cr_assert(vit_kmeans(points, n, dim, k, seed, 300, l2, c2, scratch, NULL, &err) == BASE_OK);
        differs = memcmp(l1, l2, sizeof l1) != 0;
    }
    cr_expect(differs, "the seed is not used");
    cr_expect(vit_kmeans(points, n, dim, n + 1, 0, 10, l1, NULL, scratch, NULL, &err) == BASE_E_ARG);
}

Test(kmeans, l2_normalize) {
    float x[6] = {3, 4, 0, 0, 0, 0};
    vit_l2_normalize_rows(x, 2, 3);
    cr_expect_float_eq(x[0], 0.6f, 1e-7f);
    cr_expect_float_eq(x[1], 0.8f, 1e-7f);
    cr_expect(x[3] == 0 && x[4] == 0 && x[5] == 0);
}

/* ------------------------------------------------------------- resampling */

Test(resample, bilinear_and_nearest_match_interpolate) {
    base_error err;
    weights_file *f;
    cr_assert(weights_open(FIXTURES "resample.safetensors", &f, &err) == BASE_OK, "%s", err.message);
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "src_%d", i);
        const weights_tensor *st = weights_find(f, name);
        snprintf(name, sizeof name, "bilinear_%d", i);
        const weights_tensor *dt = weights_find(f, name);
        const int sh = (int)st->shape[0], sw = (int)st->shape[1], dh = (int)dt->shape[0], dw = (int)dt->shape[1];
        snprintf(name, sizeof name, "src_%d", i);
        float *src = tensor(f, name, 0);
        snprintf(name, sizeof name, "bilinear_%d", i);
        float *want = tensor(f, name, 0);
        float *got = malloc((size_t)dh * dw * sizeof(float));
        data_upsample_bilinear(src, sh, sw, got, dh, dw);
        const float e = max_abs_diff(got, want, (size_t)dh * dw);
        cr_expect(e <= 1e-6f, "bilinear %dx%d -> %dx%d differs from F.interpolate by %g", sh, sw, dh, dw, e);

        snprintf(name, sizeof name, "labels_%d", i);
        float *lf = tensor(f, name, 0);
        snprintf(name, sizeof name, "nearest_%d", i);
        float *nf = tensor(f, name, 0);
        int *labels = malloc((size_t)sh * sw * sizeof(int));
        for (int j = 0; j < sh * sw; j++) labels[j] = (int)lf[j];
        uint8_t *mask = malloc((size_t)dh * dw);
        const double box[4] = {0, 0, dw, dh};
        data_label_mask(box, labels, sh, sw, dw, dh, 255, mask);
        for (int j = 0; j < dh * dw; j++)
            cr_assert_eq(mask[j], (uint8_t)nf[j], "nearest %d: pixel %d is %d, torch %d", i, j, mask[j], (int)nf[j]);
        free(src); free(want); free(got); free(lf); free(nf); free(labels); free(mask);
    }
    weights_close(f);
}

Test(resample, source_box_of_recipes) {
    data_preprocess p;
    double box[4];
    /* DeiT default at 224: shorter side 256, centre crop 224. A 512x256
     * image -> 512x256 resized, crop x 144..368, y 16..240 (scale 1). */
    data_preprocess_default(&p, 224);
    data_preprocess_source_box(&p, 512, 256, box);
    cr_expect(box[0] == 144 && box[1] == 16 && box[2] == 368 && box[3] == 240,
              "box %g %g %g %g", box[0], box[1], box[2], box[3]);
    /* Twice the size: everything doubles. */
    data_preprocess_source_box(&p, 1024, 512, box);
    cr_expect(box[0] == 288 && box[1] == 32 && box[2] == 736 && box[3] == 480,
              "box %g %g %g %g", box[0], box[1], box[2], box[3]);
}

/* ------------------------------------ register / no-class-token models */

#define FAMILY VITC_SOURCE_DIR "/tests/fixtures/family/"

/* The map the commands draw for one image (cli/inspect.c, attention_image):
 * the class token's row, or without one the mean of the patch rows, over the
 * patch columns. attn: one image's [heads, T, T] (heads 1: a rollout). */
static void family_map(const vit_config *c, const float *attn, int heads, int T, int head, float *out) {
    if (c->no_class_token)
        vit_attention_mean_row(attn, heads, T, c->num_prefix_tokens, head, c->num_prefix_tokens, out);
    else
        vit_attention_row(attn, heads, T, 0, head, c->num_prefix_tokens, out);
}

/* tests/gen_inspect_family.py: maps (one layer, a head or the mean; rollout),
 * pools and patch logits on models with registers and / or without a class
 * token, against FamilyViT. P is the number of patches, never + registers. */
static void check_family(const char *name, int want_prefix, int want_patches) {
    char dir[1024], path[1024];
    snprintf(dir, sizeof dir, FAMILY "%s", name);
    snprintf(path, sizeof path, FIXTURES "family_%s.safetensors", name);
    inspected run;
    inspect_case(dir, path, 0, &run);
    base_error err;
    const vit_model *model = run.model;
    const weights_file *ref = run.ref;
    const vit_config *c = vit_model_config(model);
    const int B = run.B, T = vit_context_num_tokens(run.ctx), H = c->num_heads, D = c->hidden_size,
              L = c->num_layers, prefix = c->num_prefix_tokens, P = T - prefix, C = c->num_classes;
    cr_assert_eq(prefix, want_prefix, "%s: %d prefix tokens", name, prefix);
    cr_assert_eq(P, want_patches, "%s: %d patches", name, P);
    const size_t plane = (size_t)T * T;
    float **attn = run.attn, *tokens = run.tokens, *logits = run.logits;

    float *want = tensor(ref, "tokens_last", (size_t)B * T * D);
    float e = max_abs_diff(tokens, want, (size_t)B * T * D);
    cr_expect(e <= TOLERANCE, "%s: last-block tokens differ from PyTorch by %g", name, e);
    free(want);

    float *map = malloc((size_t)P * sizeof(float));
    char key[64];
    for (int l = 0; l < L; l++)
        for (int h = -1; h < H; h++) {
            if (h < 0) snprintf(key, sizeof key, "map_%d_mean", l);
            else snprintf(key, sizeof key, "map_%d_head%d", l, h);
            want = tensor(ref, key, (size_t)B * P);
            for (int b = 0; b < B; b++) {
                family_map(c, attn[l] + (size_t)b * H * plane, H, T, h, map);
                e = max_abs_diff(map, want + (size_t)b * P, (size_t)P);
                cr_expect(e <= TOLERANCE, "%s: %s of image %d differs from PyTorch by %g", name, key, b, e);
                if (c->num_reg_tokens && h < 0) {
                    /* The check has teeth: register columns in the grid (keys
                     * from the first register on) must break it. */
                    const int first_reg = prefix - c->num_reg_tokens;
                    float *wide = malloc((size_t)(T - first_reg) * sizeof(float));
                    if (c->no_class_token)
                        vit_attention_mean_row(attn[l] + (size_t)b * H * plane, H, T, prefix, -1, first_reg, wide);
                    else
                        vit_attention_row(attn[l] + (size_t)b * H * plane, H, T, 0, -1, first_reg, wide);
                    cr_expect(max_abs_diff(wide, want + (size_t)b * P, (size_t)P) > 10 * TOLERANCE,
                              "%s: register columns go unnoticed", name);
                    free(wide);
                }
            }
            free(want);
        }

    /* Rollout through every layer, as attention --rollout at the last layer. */
    float *result = malloc(plane * sizeof(float)), *scratch = malloc(vit_rollout_scratch_size(T) * sizeof(float));
    const float **layers = calloc((size_t)L, sizeof *layers);
    const float discards[2] = {0.0f, 0.5f};
    const char *names[2] = {"rollout_0", "rollout_50"};
    for (int d = 0; d < 2; d++) {
        want = tensor(ref, names[d], (size_t)B * P);
        for (int b = 0; b < B; b++) {
            for (int l = 0; l < L; l++) layers[l] = attn[l] + (size_t)b * H * plane;
            cr_assert(vit_attention_rollout(layers, L, H, T, discards[d], result, scratch, &err) == BASE_OK, "%s", err.message);
            family_map(c, result, 1, T, 0, map);
            e = max_abs_diff(map, want + (size_t)b * P, (size_t)P);
            cr_expect(e <= TOLERANCE, "%s: %s of image %d differs from PyTorch by %g", name, names[d], b, e);
        }
        free(want);
    }

    /* features --pool: mean over the patches only (fc_norm after), model, none, cls. */
    static const struct { const char *key; vit_pool pool; } POOLS[] = {
        {"pool_mean", VIT_POOL_MEAN}, {"pool_model", VIT_POOL_MODEL}, {"pool_none", VIT_POOL_NONE},
        {"pool_cls", VIT_POOL_CLS}};
    float *pooled = malloc((size_t)T * D * sizeof(float)), *pool_scratch = malloc((size_t)D * sizeof(float));
    for (size_t k = 0; k < sizeof POOLS / sizeof *POOLS; k++) {
        if (POOLS[k].pool == VIT_POOL_CLS && c->no_class_token) {
            cr_expect(vit_pool_tokens(model, tokens, T, VIT_POOL_CLS, 0, pooled, pool_scratch, &err) == BASE_E_ARG,
                      "%s: --pool cls accepted without a class token", name);
            cr_expect(weights_find(ref, "pool_cls") == NULL);
            continue;
        }
        const size_t per_image = POOLS[k].pool == VIT_POOL_NONE    ? (size_t)T * D
                                 : POOLS[k].pool == VIT_POOL_MODEL ? (size_t)vit_config_pooled_size(c)
                                                                   : (size_t)D;
        want = tensor(ref, POOLS[k].key, (size_t)B * per_image);
        for (int b = 0; b < B; b++) {
            cr_assert(vit_pool_tokens(model, tokens + (size_t)b * T * D, T, POOLS[k].pool, 0, pooled,
                                      pool_scratch, &err) == BASE_OK, "%s", err.message);
            e = max_abs_diff(pooled, want + (size_t)b * per_image, per_image);
            cr_expect(e <= TOLERANCE, "%s: %s of image %d differs from PyTorch by %g", name, POOLS[k].key, b, e);
        }
        free(want);
    }

    /* patches: the classifier on every patch token (DINOv2: [class ‖ patch],
     * whose mean over the patches is the model's logits). */
    float *patch = malloc((size_t)P * C * sizeof(float));
    want = tensor(ref, "patch_logits", (size_t)B * P * C);
    for (int b = 0; b < B; b++) {
        cr_assert(vit_patch_logits(model, tokens + (size_t)b * T * D, T, 0, patch, &err) == BASE_OK, "%s", err.message);
        e = max_abs_diff(patch, want + (size_t)b * P * C, (size_t)P * C);
        cr_expect(e <= TOLERANCE, "%s: patch logits of image %d differ from PyTorch by %g", name, b, e);
        if (c->global_pool == VIT_GLOBAL_POOL_TOKEN_AVG)
            for (int j = 0; j < C; j++) {
                double sum = 0.0;
                for (int p = 0; p < P; p++) sum += patch[(size_t)p * C + j];
                cr_expect(fabs(sum / P - logits[(size_t)b * C + j]) <= TOLERANCE,
                          "%s: the patch logits' mean is not the logits (class %d)", name, j);
            }
    }
    free(want);

    free(patch); free(pooled); free(pool_scratch); free(result); free(scratch); free(layers); free(map);
    inspected_free(&run);
}

Test(inspect_family, registers_no_class_token) { check_family("reg4_gap", 4, 16); }
Test(inspect_family, class_token_and_registers) { check_family("reg4_token", 5, 16); }
Test(inspect_family, dinov2_with_registers) { check_family("dinov2_reg_hf", 5, 16); }
Test(inspect_family, no_class_token_no_registers) { check_family("gap_implicit", 0, 16); }

/* ------------------------------------------------------------- writers */

static char tmpdir[256];

static void make_tmpdir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vitc-inspect-test.%d", (int)getpid());
    shell("rm -rf %s && mkdir -p %s", tmpdir, tmpdir);
}

static void remove_tmpdir(void) { shell("rm -rf %s", tmpdir); }

/* Whether /usr/bin/python3 can import numpy; skips the test if not. */
static void need_numpy(void) {
    if (system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0)
        cr_skip_test("python3-numpy is not installed: .npy files not checked with numpy.load");
}

/* Asserts numpy.load(path) has dtype and shape (a Python tuple literal). */
static void numpy_check(const char *path, const char *dtype, const char *shape, const char *extra) {
    shell("/usr/bin/python3 -c \"import numpy as np; a = np.load('%s'); "
          "assert a.dtype == np.dtype('%s'), a.dtype; assert a.shape == %s, a.shape; %s\"",
          path, dtype, shape, extra ? extra : "");
}

/* Reads a .npy file's float32 payload (after checking the header's size). */
static float *npy_floats(const char *path, size_t count) {
    FILE *fp = fopen(path, "rb");
    cr_assert(fp, "cannot open %s", path);
    unsigned char head[10];
    cr_assert(fread(head, 1, 10, fp) == 10 && memcmp(head, "\x93NUMPY\x01\x00", 8) == 0);
    const size_t hlen = head[8] | (size_t)head[9] << 8;
    cr_assert((10 + hlen) % 64 == 0, "%s: header of %zu bytes is not padded to 64", path, 10 + hlen);
    fseek(fp, (long)(10 + hlen), SEEK_SET);
    float *v = malloc(count * sizeof(float) + 1);
    cr_assert(fread(v, sizeof(float), count, fp) == count, "%s: short payload", path);
    cr_assert(fgetc(fp) == EOF, "%s: longer than %zu floats", path, count);
    fclose(fp);
    return v;
}

Test(writers, npy_loads_with_numpy, .init = make_tmpdir, .fini = remove_tmpdir) {
    need_numpy();
    char path[512];
    base_error err;
    float f[24];
    for (int i = 0; i < 24; i++) f[i] = (float)i * 0.5f - 3.0f;
    snprintf(path, sizeof path, "%s/a.npy", tmpdir);
    const int64_t shape3[3] = {2, 3, 4};
    cr_assert(data_write_npy(path, DATA_NPY_F32, shape3, 3, f, &err) == BASE_OK, "%s", err.message);
    numpy_check(path, "<f4", "(2, 3, 4)", "assert a[1, 2, 3] == 23 * 0.5 - 3 and a[0, 0, 0] == -3");
    free(npy_floats(path, 24));
    int32_t v[5] = {0, -1, 2, 70000, -70000};
    const int64_t shape1[1] = {5};
    snprintf(path, sizeof path, "%s/b.npy", tmpdir);
    cr_assert(data_write_npy(path, DATA_NPY_I32, shape1, 1, v, &err) == BASE_OK, "%s", err.message);
    numpy_check(path, "<i4", "(5,)", "assert list(a) == [0, -1, 2, 70000, -70000]");
    /* Only the finished files, no temporaries. */
    shell("test $(ls %s | wc -l) -eq 2", tmpdir);
    /* An unwritable place: one line naming the file. */
    cr_expect(data_write_npy("/nonexistent-dir/x.npy", DATA_NPY_F32, shape1, 1, f, &err) == BASE_E_IO);
    cr_expect(strstr(err.message, "/nonexistent-dir/x.npy") != NULL, "%s", err.message);
}

Test(writers, png_round_trip, .init = make_tmpdir, .fini = remove_tmpdir) {
    char path[512];
    base_error err;
    enum { W = 37, H = 23 };
    uint8_t px[W * H * 3];
    for (int i = 0; i < W * H * 3; i++) px[i] = (uint8_t)(i * 31 + 7);
    snprintf(path, sizeof path, "%s/p.png", tmpdir);
    cr_assert(data_write_png(path, W, H, 3, px, &err) == BASE_OK, "%s", err.message);
    data_image img;
    cr_assert(data_image_load(path, &img, &err) == BASE_OK, "%s", err.message);
    cr_expect(img.width == W && img.height == H);
    cr_expect(memcmp(img.pixels, px, sizeof px) == 0);
    data_image_free(&img);
}

/* ------------------------------------------------------------- commands */

#define MODEL PARITY "hf_vit_d48_h3" /* 32x32 input, patch 8: a 4x4 grid, 17 tokens, 48 dims, 5 classes */

/* A small test photo: a bright square on a dark gradient. */
static void make_image(const char *path, int w, int h) {
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                px[((size_t)y * w + x) * 3 + c] =
                    (uint8_t)(x > w / 3 && x < 2 * w / 3 && y > h / 3 && y < 2 * h / 3 ? 220 - 40 * c : (x + y + 30 * c) % 90);
    base_error err;
    cr_assert(data_write_png(path, w, h, 3, px, &err) == BASE_OK, "%s", err.message);
    free(px);
}

/* The index bytes of an indexed PNG as vitc writes it (colour type 3, 8
 * bits, filter 0 on every row) and its palette: what a reader that keeps
 * the indices (PIL mode "P") gets. malloc'd, width x height. */
static uint8_t *png_indices(const char *path, int *w, int *h, uint8_t palette[768]) {
    size_t n = 0;
    FILE *fp = fopen(path, "rb");
    cr_assert(fp, "%s was not written", path);
    uint8_t *file = malloc(1 << 22), *idat = malloc(1 << 22);
    n = fread(file, 1, 1 << 22, fp);
    fclose(fp);
    cr_assert(n > 8 && memcmp(file, "\x89PNG\r\n\x1a\n", 8) == 0, "%s is not a PNG", path);
    size_t at = 8, packed = 0;
    *w = *h = 0;
    while (at + 12 <= n) {
        const size_t len = (size_t)file[at] << 24 | file[at + 1] << 16 | file[at + 2] << 8 | file[at + 3];
        const uint8_t *type = file + at + 4, *data = file + at + 8;
        if (memcmp(type, "IHDR", 4) == 0) {
            *w = data[0] << 24 | data[1] << 16 | data[2] << 8 | data[3];
            *h = data[4] << 24 | data[5] << 16 | data[6] << 8 | data[7];
            cr_assert(data[8] == 8 && data[9] == 3, "%s: not an 8-bit indexed PNG", path);
        } else if (memcmp(type, "PLTE", 4) == 0) {
            memcpy(palette, data, len < 768 ? len : 768);
        } else if (memcmp(type, "IDAT", 4) == 0) {
            memcpy(idat + packed, data, len);
            packed += len;
        }
        at += 12 + len;
    }
    cr_assert(*w > 0 && *h > 0, "%s: no IHDR", path);
    uLongf raw_size = (uLongf)(*w + 1) * *h;
    uint8_t *raw = malloc(raw_size), *indices = malloc((size_t)*w * *h);
    cr_assert(uncompress(raw, &raw_size, idat, packed) == Z_OK, "%s: bad image data", path);
    for (int y = 0; y < *h; y++) {
        cr_assert(raw[(size_t)y * (*w + 1)] == 0, "%s: row %d is filtered", path, y);
        memcpy(indices + (size_t)y * *w, raw + (size_t)y * (*w + 1) + 1, (size_t)*w);
    }
    free(file);
    free(idat);
    free(raw);
    return indices;
}

static void expect_png_size(const char *path, int w, int h, int channels) {
    int pw, ph, comp;
    FILE *fp = fopen(path, "rb");
    cr_assert(fp, "%s was not written", path);
    unsigned char head[26];
    cr_assert(fread(head, 1, 26, fp) == 26);
    fclose(fp);
    cr_assert(memcmp(head, "\x89PNG", 4) == 0, "%s is not a PNG", path);
    pw = head[16] << 24 | head[17] << 16 | head[18] << 8 | head[19];
    ph = head[20] << 24 | head[21] << 16 | head[22] << 8 | head[23];
    comp = head[25] == 0 ? 1 : head[25] == 2 ? 3 : head[25] == 6 ? 4 : head[25] == 3 ? 'P' : -1;
    cr_expect(pw == w && ph == h && comp == channels, "%s: %dx%d with %d channels, expected %dx%d with %d",
              path, pw, ph, comp, w, h, channels);
    data_image img;
    base_error err;
    cr_expect(data_image_load(path, &img, &err) == BASE_OK, "%s does not decode: %s", path, err.message);
    data_image_free(&img);
}

/* The library's own view of one image: preprocessed and run through the
 * model with the given captures (dst arrays sized for one image). */
static void library_run(const char *image, vit_capture_kind kind, int layer, float *dst,
                        float **attn_layers) {
    base_error err;
    vit_model *model;
    cr_assert(vit_model_load(MODEL, NULL, &model, &err) == BASE_OK, "%s", err.message);
    vit_context *ctx;
    cr_assert(vit_context_create(model, 1, 0, 0, &ctx, &err) == BASE_OK);
    float input[3 * 32 * 32], logits[5];
    cr_assert(data_preprocess_file(vit_model_preprocess(model), image, input, &err) == BASE_OK, "%s", err.message);
    if (dst) cr_assert(vit_context_capture(ctx, kind, layer, dst, &err) == BASE_OK);
    for (int l = 0; attn_layers && l < 2; l++)
        cr_assert(vit_context_capture(ctx, VIT_CAPTURE_ATTENTION, l, attn_layers[l], &err) == BASE_OK);
    cr_assert(vit_forward(ctx, input, 1, logits, &err) == BASE_OK, "%s", err.message);
    vit_context_free(ctx);
    vit_model_free(model);
}

Test(commands, attention_single_image_and_rollout, .init = make_tmpdir, .fini = remove_tmpdir) {
    char img[512], args[2048], out[512], npy[512];
    snprintf(img, sizeof img, "%s/photo.png", tmpdir);
    make_image(img, 60, 45);
    snprintf(out, sizeof out, "%s/att.png", tmpdir);
    snprintf(npy, sizeof npy, "%s/att.npy", tmpdir);
    snprintf(args, sizeof args, "attention -q -m %s %s -o %s --npy %s --head 1 --layer 0", MODEL, img, out, npy);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    expect_png_size(out, 60, 45, 3);
    /* The map is block 0's head-1 class-token row over the patches. */
    float *attn0 = malloc(3 * 17 * 17 * sizeof(float));
    library_run(img, VIT_CAPTURE_ATTENTION, 0, attn0, NULL);
    float *got = npy_floats(npy, 16);
    for (int j = 0; j < 16; j++) cr_expect_float_eq(got[j], attn0[1 * 17 * 17 + 1 + j], 1e-6f, "patch %d", j);
    free(got);

    snprintf(args, sizeof args, "attention -q -m %s %s -o %s --npy %s --rollout --discard 0.5", MODEL, img, out, npy);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    expect_png_size(out, 60, 45, 3);
    float *a[2] = {malloc(3 * 17 * 17 * sizeof(float)), malloc(3 * 17 * 17 * sizeof(float))};
    library_run(img, VIT_CAPTURE_ATTENTION, 0, attn0, a);
    float result[17 * 17], scratch[3 * 17 * 17];
    const float *layers[2] = {a[0], a[1]};
    base_error err;
    cr_assert(vit_attention_rollout(layers, 2, 3, 17, 0.5f, result, scratch, &err) == BASE_OK);
    got = npy_floats(npy, 16);
    for (int j = 0; j < 16; j++) cr_expect_float_eq(got[j], result[1 + j], 1e-6f, "patch %d", j);
    free(got);
    free(a[0]); free(a[1]); free(attn0);

    if (system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0)
        numpy_check(npy, "<f4", "(4, 4)", NULL);

    snprintf(args, sizeof args, "attention -q -m %s %s -o %s --grid --npy %s", MODEL, img, out, npy);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    /* The maps drawn: 3 heads, then their mean. */
    got = npy_floats(npy, 4 * 16);
    for (int j = 0; j < 16; j++)
        cr_expect_float_eq(got[3 * 16 + j], (got[j] + got[16 + j] + got[32 + j]) / 3, 1e-6f,
                           "--grid .npy: map 3 is not the heads' mean at patch %d", j);
    free(got);
    if (system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0)
        numpy_check(npy, "<f4", "(4, 4, 4)", NULL);
    /* 3 heads + mean in 2x2 tiles of 60x45 with 4-pixel gaps. */
    expect_png_size(out, 2 * 60 + 3 * 4, 2 * 45 + 3 * 4, 3);

    r = run("attention -m " MODEL " x.png -o y.png --rollout --head 0");
    cr_expect_eq(r->status, 1);
    r = run("attention -m " MODEL " x.png -o y.png --head 3");
    cr_expect_eq(r->status, 1, "head 3 of 3 accepted");
}

Test(commands, directory_outputs_named_after_inputs, .init = make_tmpdir, .fini = remove_tmpdir) {
    char path[512], args[2048];
    shell("mkdir -p %s/in/sub %s/out", tmpdir, tmpdir);
    snprintf(path, sizeof path, "%s/in/a.png", tmpdir);
    make_image(path, 40, 30);
    snprintf(path, sizeof path, "%s/in/sub/b.png", tmpdir);
    make_image(path, 33, 50);
    shell("printf 'not an image' > %s/in/broken.jpg", tmpdir);
    snprintf(args, sizeof args, "attention -m %s %s/in -o %s/out/ --npy %s/out/", MODEL, tmpdir, tmpdir, tmpdir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 2, "one bad file: exit 2, got %d: %s", r->status, r->err);
    cr_expect(strstr(r->err, "broken.jpg") != NULL, "%s", r->err);
    cr_expect(strstr(r->err, "3 files, 1 failed") != NULL, "%s", r->err);
    snprintf(path, sizeof path, "%s/out/a.png", tmpdir);
    expect_png_size(path, 40, 30, 3);
    snprintf(path, sizeof path, "%s/out/sub/b.png", tmpdir);
    expect_png_size(path, 33, 50, 3);
    snprintf(path, sizeof path, "%s/out/sub/b.npy", tmpdir);
    free(npy_floats(path, 16));
    shell("test ! -e %s/out/broken.png && test -z \"$(find %s/out -name '*.tmp.*')\"", tmpdir, tmpdir);

    /* Several images need a directory for -o. */
    snprintf(args, sizeof args, "segment -m %s %s/in -o %s/out/one.png", MODEL, tmpdir, tmpdir);
    r = run(args);
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "must be a directory") != NULL, "%s", r->err);
}

Test(commands, segment_mask_overlay_and_labels, .init = make_tmpdir, .fini = remove_tmpdir) {
    char img[512], args[2048], out[512], npy[512], over[512];
    snprintf(img, sizeof img, "%s/photo.png", tmpdir);
    make_image(img, 64, 48);
    snprintf(out, sizeof out, "%s/mask.png", tmpdir);
    snprintf(over, sizeof over, "%s/mask.overlay.png", tmpdir);
    snprintf(npy, sizeof npy, "%s/labels.npy", tmpdir);
    snprintf(args, sizeof args, "segment -q -m %s %s -o %s --npy %s --clusters 3 --seed 5", MODEL, img, out, npy);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    expect_png_size(out, 64, 48, 'P');
    expect_png_size(over, 64, 48, 3);
    /* Same labels as k-means on the library's normalised patch tokens. */
    float tokens[17 * 48];
    library_run(img, VIT_CAPTURE_TOKENS, 1, tokens, NULL);
    vit_l2_normalize_rows(tokens + 48, 16, 48);
    int labels[16];
    double scratch[2 * 3 * 48 + 2 * 16 + 3];
    base_error err;
    cr_assert(vit_kmeans(tokens + 48, 16, 48, 3, 5, 300, labels, NULL, scratch, NULL, &err) == BASE_OK);
    FILE *fp = fopen(npy, "rb");
    cr_assert(fp);
    int32_t got[16];
    fseek(fp, 128, SEEK_SET); /* a short 2-d header pads to 128 bytes */
    cr_assert(fread(got, 4, 16, fp) == 16);
    fclose(fp);
    for (int j = 0; j < 16; j++) cr_expect_eq(got[j], labels[j], "patch %d", j);
    /* The mask holds the ids (255 outside the crop), shown in the
     * overlay's colours: a palette PNG. */
    int mw, mh;
    uint8_t palette[768] = {0};
    uint8_t *m = png_indices(out, &mw, &mh, palette);
    cr_assert(mw == 64 && mh == 48);
    int outside = 0, ids = 0;
    for (int i = 0; i < 64 * 48; i++) {
        outside += m[i] == 255;
        ids += m[i] < 3;
    }
    cr_expect(outside > 0 && ids > 0 && outside + ids == 64 * 48, "outside %d ids %d", outside, ids);
    free(m);
    for (int c = 0; c < 3; c++) {
        uint8_t rgb[3];
        data_palette_color(c, rgb);
        cr_expect(memcmp(palette + 3 * c, rgb, 3) == 0, "cluster %d's colour is not the overlay's", c);
    }
    if (system("/usr/bin/python3 -c 'import PIL, numpy' >/dev/null 2>&1") == 0)
        shell("/usr/bin/python3 -c \"import numpy, PIL.Image as I; im = I.open('%s'); "
              "a = numpy.array(im); assert im.mode == 'P' and a.shape == (48, 64) and "
              "set(numpy.unique(a)) <= {0, 1, 2, 255}, (im.mode, a.shape)\"", out);
    if (system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0)
        numpy_check(npy, "<i4", "(4, 4)", "assert a.min() >= 0 and a.max() < 3");
    /* Deterministic: a second run writes the same files. */
    shell("cp %s %s.first && cp %s %s.first", out, out, npy, npy);
    r = run(args);
    cr_assert_eq(r->status, 0);
    shell("cmp %s %s.first && cmp %s %s.first", out, out, npy, npy);
}

Test(commands, patches_logits_and_picture, .init = make_tmpdir, .fini = remove_tmpdir) {
    char img[512], args[2048], out[512], npy[512];
    snprintf(img, sizeof img, "%s/photo.png", tmpdir);
    make_image(img, 50, 50);
    snprintf(out, sizeof out, "%s/p.png", tmpdir);
    snprintf(npy, sizeof npy, "%s/p.npy", tmpdir);
    snprintf(args, sizeof args, "patches -q -m %s %s -o %s --npy %s", MODEL, img, out, npy);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    /* The legend sits in a strip below the picture, never over it (and
     * widens a picture narrower than itself). */
    data_image pic;
    base_error err;
    cr_assert(data_image_load(out, &pic, &err) == BASE_OK, "%s", err.message);
    cr_expect(pic.width >= 50 && pic.height > 50, "%dx%d", pic.width, pic.height);
    int dark = 0;
    for (size_t i = (size_t)50 * pic.width * 3; i < (size_t)pic.width * pic.height * 3; i++)
        dark += pic.pixels[i] < 64;
    cr_expect(dark > 0, "no legend below the picture");
    data_image_free(&pic);
    char bare[2048];
    snprintf(bare, sizeof bare, "patches -q -m %s %s -o %s --legend 0", MODEL, img, out);
    cr_assert_eq(run(bare)->status, 0);
    expect_png_size(out, 50, 50, 3);
    float tokens[17 * 48], want[16 * 5];
    library_run(img, VIT_CAPTURE_TOKENS, 1, tokens, NULL);
    vit_model *model;
    cr_assert(vit_model_load(MODEL, NULL, &model, &err) == BASE_OK);
    cr_assert(vit_token_logits(model, tokens + 48, 16, 0, want, &err) == BASE_OK);
    vit_model_free(model);
    float *got = npy_floats(npy, 16 * 5);
    cr_expect(max_abs_diff(got, want, 16 * 5) == 0.0f);
    free(got);
    if (system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0)
        numpy_check(npy, "<f4", "(4, 4, 5)", NULL);
    r = run("patches -m " PARITY "timm_nohead_d64_h1 x.png -o y.png");
    cr_expect_eq(r->status, 1);
}

Test(commands, features_in_input_order_with_nan_rows, .init = make_tmpdir, .fini = remove_tmpdir) {
    char path[512], args[2048], out[512];
    shell("mkdir -p %s/in", tmpdir);
    snprintf(path, sizeof path, "%s/in/b.png", tmpdir);
    make_image(path, 40, 40);
    snprintf(path, sizeof path, "%s/in/a.png", tmpdir);
    make_image(path, 70, 35);
    shell("printf 'x' > %s/in/c.png", tmpdir);
    snprintf(out, sizeof out, "%s/f.npy", tmpdir);
    snprintf(args, sizeof args, "features -q -m %s %s/in -o %s --tokens all", MODEL, tmpdir, out);
    run_result *r = run(args);
    cr_expect_eq(r->status, 2, "%s", r->err);
    float *got = npy_floats(out, 3 * 17 * 48);
    float tokens[17 * 48];
    library_run(path, VIT_CAPTURE_TOKENS, 1, tokens, NULL); /* a.png, row 0 */
    /* Batched with b.png in the command: equal up to summation order. */
    const float e = max_abs_diff(got, tokens, 17 * 48);
    cr_expect(e <= 1e-4f, "row 0 differs from a.png's own tokens by %g", e);
    cr_expect(isnan(got[2 * 17 * 48]) && isnan(got[3 * 17 * 48 - 1]), "c.png's row is not NaN");
    cr_expect(!isnan(got[17 * 48]));
    free(got);
    char list[256];
    snprintf(path, sizeof path, "%s/f.files.jsonl", tmpdir);
    slurp(path, list, sizeof list);
    cr_expect_str_eq(list, "\"a.png\"\n\"b.png\"\n\"c.png\"\n");

    snprintf(args, sizeof args, "features -q -m %s %s/in/a.png -o %s --tokens cls --layer embed", MODEL, tmpdir, out);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    got = npy_floats(out, 48);
    snprintf(path, sizeof path, "%s/in/a.png", tmpdir);
    library_run(path, VIT_CAPTURE_TOKENS, -1, tokens, NULL);
    cr_expect(max_abs_diff(got, tokens, 48) == 0.0f);
    free(got);
    if (system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0) {
        numpy_check(out, "<f4", "(1, 1, 48)", NULL);
        snprintf(args, sizeof args, "features -q -m %s %s/in/a.png -o %s --tokens patch", MODEL, tmpdir, out);
        cr_assert_eq(run(args)->status, 0);
        numpy_check(out, "<f4", "(1, 16, 48)", NULL);
    }
}

/* One image through a family model at `size` (0: native), as the commands
 * load and preprocess it: the last block's tokens and every layer's attention
 * (arrays for one image, attn may be NULL). Returns the model (caller frees). */
static vit_model *family_run(const char *name, int size, const char *image, float *tokens, float **attn) {
    char path[1024];
    snprintf(path, sizeof path, FAMILY "%s", name);
    base_error err;
    vit_model *model;
    const vit_load_options options = {.input_size = size};
    cr_assert(vit_model_load(path, &options, &model, &err) == BASE_OK, "%s", err.message);
    const vit_config *c = vit_model_config(model);
    data_preprocess pre = *vit_model_preprocess(model);
    if (size) data_preprocess_set_size(&pre, size);
    vit_context *ctx;
    cr_assert(vit_context_create(model, 1, size, 0, &ctx, &err) == BASE_OK, "%s", err.message);
    const int S = vit_context_image_size(ctx);
    float *input = malloc((size_t)3 * S * S * sizeof(float));
    float *out = malloc((size_t)vit_model_output_size(model) * sizeof(float));
    cr_assert(data_preprocess_file(&pre, image, input, &err) == BASE_OK, "%s", err.message);
    cr_assert(vit_context_capture(ctx, VIT_CAPTURE_TOKENS, c->num_layers - 1, tokens, &err) == BASE_OK);
    for (int l = 0; attn && l < c->num_layers; l++)
        cr_assert(vit_context_capture(ctx, VIT_CAPTURE_ATTENTION, l, attn[l], &err) == BASE_OK);
    cr_assert(vit_forward(ctx, input, 1, out, &err) == BASE_OK, "%s", err.message);
    free(input);
    free(out);
    vit_context_free(ctx);
    return model;
}

/* The commands on register / no-class-token models: grids of the 16 patches
 * only (registers excluded by position, numbers written out here rather than
 * taken from num_prefix_tokens), the maps as the library computes them, the
 * refusals in one line. */
Test(commands, register_and_no_class_token_models, .init = make_tmpdir, .fini = remove_tmpdir) {
    char img[512], args[2048], out[512], npy[512];
    snprintf(img, sizeof img, "%s/photo.png", tmpdir);
    make_image(img, 48, 40);
    snprintf(out, sizeof out, "%s/o.png", tmpdir);
    snprintf(npy, sizeof npy, "%s/o.npy", tmpdir);
    base_error err;

    /* reg4_gap: tokens reg0..reg3, 16 patches (T 20, D 32, 2 heads, 2 layers, 6 classes). */
    float tokens[21 * 32], pooled[64], scratch[32], map[16], logits[16 * 6];
    float *attn[2] = {malloc(2 * 21 * 21 * sizeof(float)), malloc(2 * 21 * 21 * sizeof(float))}; /* T <= 21 */
    vit_model *model = family_run("reg4_gap", 0, img, tokens, attn);
    snprintf(args, sizeof args, "attention -q -m " FAMILY "reg4_gap %s -o %s --npy %s --layer 0 --head 1", img, out, npy);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    float *got = npy_floats(npy, 16);
    vit_attention_mean_row(attn[0], 2, 20, 4, 1, 4, map);
    cr_expect(max_abs_diff(got, map, 16) == 0.0f, "attention: not the patch queries' mean row");
    free(got);
    snprintf(args, sizeof args, "attention -q -m " FAMILY "reg4_gap %s -o %s --npy %s --rollout", img, out, npy);
    cr_assert_eq(run(args)->status, 0);
    float result[20 * 20], rscratch[3 * 20 * 20];
    const float *layers[2] = {attn[0], attn[1]};
    cr_assert(vit_attention_rollout(layers, 2, 2, 20, 0.0f, result, rscratch, &err) == BASE_OK);
    vit_attention_mean_row(result, 1, 20, 4, 0, 4, map);
    got = npy_floats(npy, 16);
    cr_expect(max_abs_diff(got, map, 16) == 0.0f, "rollout: not the mean of the patch rows");
    free(got);
    snprintf(args, sizeof args, "attention -q -m " FAMILY "reg4_gap %s -o %s --npy %s --grid", img, out, npy);
    cr_assert_eq(run(args)->status, 0);
    got = npy_floats(npy, 3 * 16); /* (heads + mean) x 4 x 4 */
    vit_attention_mean_row(attn[1], 2, 20, 4, 1, 4, map);
    cr_expect(max_abs_diff(got + 16, map, 16) == 0.0f, "--grid: head 1 is not its patch queries' mean row");
    free(got);

    snprintf(args, sizeof args, "features -q -m " FAMILY "reg4_gap %s -o %s --tokens patch", img, npy);
    cr_assert_eq(run(args)->status, 0);
    got = npy_floats(npy, 16 * 32);
    cr_expect(max_abs_diff(got, tokens + 4 * 32, 16 * 32) <= 1e-6f, "--tokens patch: not tokens 4..19");
    free(got);
    snprintf(args, sizeof args, "features -q -m " FAMILY "reg4_gap %s -o %s --tokens reg", img, npy);
    cr_assert_eq(run(args)->status, 0);
    got = npy_floats(npy, 4 * 32);
    cr_expect(max_abs_diff(got, tokens, 4 * 32) <= 1e-6f, "--tokens reg: not tokens 0..3");
    free(got);
    snprintf(args, sizeof args, "features -q -m " FAMILY "reg4_gap %s -o %s --tokens all", img, npy);
    cr_assert_eq(run(args)->status, 0);
    free(npy_floats(npy, 20 * 32));
    snprintf(args, sizeof args, "features -q -m " FAMILY "reg4_gap %s -o %s --pool mean", img, npy);
    cr_assert_eq(run(args)->status, 0);
    cr_assert(vit_pool_tokens(model, tokens, 20, VIT_POOL_MEAN, 0, pooled, scratch, &err) == BASE_OK);
    got = npy_floats(npy, 32);
    cr_expect(max_abs_diff(got, pooled, 32) <= 1e-6f, "--pool mean");
    free(got);
    snprintf(args, sizeof args, "features -q -m " FAMILY "reg4_gap %s -o %s --pool model", img, npy);
    cr_assert_eq(run(args)->status, 0);
    got = npy_floats(npy, 32);
    cr_expect(max_abs_diff(got, pooled, 32) <= 1e-6f, "--pool model of an avg-pool model is its mean");
    free(got);
    static const char *const refused[] = {"--tokens cls", "--pool cls"};
    for (int k = 0; k < 2; k++) {
        snprintf(args, sizeof args, "features -q -m " FAMILY "reg4_gap %s -o %s %s", img, npy, refused[k]);
        r = run(args);
        cr_expect_eq(r->status, 1, "%s accepted", refused[k]);
        cr_expect(strstr(r->err, "has no class token") && strchr(r->err, '\n') == r->err + strlen(r->err) - 1,
                  "%s: %s", refused[k], r->err);
    }
    snprintf(args, sizeof args, "segment -q -m " FAMILY "reg4_gap %s -o %s --npy %s", img, out, npy);
    cr_assert_eq(run(args)->status, 0, "%s", run(args)->err);
    free(npy_floats(npy, 16)); /* int32: 16 patch labels, no register */
    snprintf(args, sizeof args, "patches -q -m " FAMILY "reg4_gap %s -o %s --npy %s", img, out, npy);
    cr_assert_eq(run(args)->status, 0);
    cr_assert(vit_patch_logits(model, tokens, 20, 0, logits, &err) == BASE_OK, "%s", err.message);
    got = npy_floats(npy, 16 * 6);
    cr_expect(max_abs_diff(got, logits, 16 * 6) == 0.0f, "patches");
    free(got);
    vit_model_free(model);

    /* reg4_token: cls, reg0..reg3, 16 patches; the map is the class row from column 5. */
    model = family_run("reg4_token", 0, img, tokens, attn);
    snprintf(args, sizeof args, "attention -q -m " FAMILY "reg4_token %s -o %s --npy %s", img, out, npy);
    cr_assert_eq(run(args)->status, 0);
    got = npy_floats(npy, 16);
    for (int j = 0; j < 16; j++)
        map[j] = (attn[1][5 + j] + attn[1][21 * 21 + 5 + j]) / 2.0f;
    cr_expect(max_abs_diff(got, map, 16) <= 1e-6f, "attention: not the class row over columns 5..20");
    free(got);
    snprintf(args, sizeof args, "features -q -m " FAMILY "reg4_token %s -o %s --tokens reg", img, npy);
    cr_assert_eq(run(args)->status, 0);
    got = npy_floats(npy, 4 * 32);
    cr_expect(max_abs_diff(got, tokens + 32, 4 * 32) <= 1e-6f, "--tokens reg: not tokens 1..4");
    free(got);
    snprintf(args, sizeof args, "features -q -m " FAMILY "reg4_token %s -o %s --tokens cls", img, npy);
    cr_assert_eq(run(args)->status, 0);
    got = npy_floats(npy, 32);
    cr_expect(max_abs_diff(got, tokens, 32) <= 1e-6f, "--tokens cls: not token 0");
    free(got);
    vit_model_free(model);

    /* DINOv2 with registers at --size 16: patches read [class, patch], the
     * model's pool is 2 x hidden. */
    model = family_run("dinov2_reg_hf", 16, img, tokens, NULL);
    snprintf(args, sizeof args, "patches -q -m " FAMILY "dinov2_reg_hf --size 16 %s -o %s --npy %s", img, out, npy);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert(vit_patch_logits(model, tokens, 21, 0, logits, &err) == BASE_OK, "%s", err.message);
    got = npy_floats(npy, 16 * 4);
    cr_expect(max_abs_diff(got, logits, 16 * 4) == 0.0f, "dinov2 patches");
    free(got);
    snprintf(args, sizeof args, "features -q -m " FAMILY "dinov2_reg_hf --size 16 %s -o %s --pool model", img, npy);
    cr_assert_eq(run(args)->status, 0);
    cr_assert(vit_pool_tokens(model, tokens, 21, VIT_POOL_MODEL, 0, pooled, scratch, &err) == BASE_OK);
    got = npy_floats(npy, 64);
    cr_expect(max_abs_diff(got, pooled, 64) <= 1e-6f, "dinov2 --pool model");
    free(got);
    vit_model_free(model);
    snprintf(args, sizeof args, "features -q -m " FAMILY "gap_implicit %s -o %s --tokens reg", img, npy);
    r = run(args);
    cr_expect(r->status == 1 && strstr(r->err, "no register tokens"), "%s", r->err);
    free(attn[0]);
    free(attn[1]);
}

/* Pictures are drawn on the input scaled to --max-side (1024 by default, 0
 * for the input's size); segment's mask, which is data, keeps the input's
 * size. */
Test(commands, pictures_fit_max_side, .init = make_tmpdir, .fini = remove_tmpdir) {
    char img[512], args[2048], out[512];
    snprintf(img, sizeof img, "%s/wide.png", tmpdir);
    make_image(img, 300, 200);
    snprintf(out, sizeof out, "%s/a.png", tmpdir);
    snprintf(args, sizeof args, "attention -q -m %s %s -o %s --max-side 150", MODEL, img, out);
    cr_assert_eq(run(args)->status, 0);
    expect_png_size(out, 150, 100, 3);
    snprintf(args, sizeof args, "attention -q -m %s %s -o %s --max-side 0", MODEL, img, out);
    cr_assert_eq(run(args)->status, 0);
    expect_png_size(out, 300, 200, 3);
    snprintf(args, sizeof args, "attention -q -m %s %s -o %s", MODEL, img, out);
    cr_assert_eq(run(args)->status, 0);
    expect_png_size(out, 300, 200, 3); /* under the default: as it is */
    snprintf(out, sizeof out, "%s/m.png", tmpdir);
    snprintf(args, sizeof args, "segment -q -m %s %s -o %s --max-side 60", MODEL, img, out);
    cr_assert_eq(run(args)->status, 0);
    expect_png_size(out, 300, 200, 'P');
    snprintf(out, sizeof out, "%s/m.overlay.png", tmpdir);
    expect_png_size(out, 60, 40, 3);
    run_result *r = run("attention -m " MODEL " x.png -o y.png --max-side -1");
    cr_expect_eq(r->status, 1, "%s", r->err);
}
