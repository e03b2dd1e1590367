/* vit quantize: BF16 and int8 copies of the parity checkpoints against
 * PyTorch's float32 logits, the int8 rounding itself, refusals, and (with
 * ../shared) top-1 agreement with float32 on real photos. */
#include <criterion/criterion.h>
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "test_util.h"
#include "vit.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures/parity/"
#define SHARED VITC_SOURCE_DIR "/../shared"

static void out_path(char *path, size_t size, const char *name, const char *dtype) {
    snprintf(path, size, "/tmp/vitc-quantize-%d-%s-%s.safetensors", (int)getpid(), name, dtype);
}

/* The copy carries the source's preprocessing and labels in its metadata:
 * it sits alone in /tmp, without the config files the source has beside it. */
static void expect_same_recipe_and_labels(const vit_model *source, const vit_model *copy,
                                          const char *name) {
    const data_preprocess *a = vit_model_preprocess(source), *b = vit_model_preprocess(copy);
    const int same_geometry = a->resize_mode == b->resize_mode && a->resize_width == b->resize_width &&
                              a->resize_height == b->resize_height &&
                              a->resize_shortest == b->resize_shortest && a->resample == b->resample &&
                              a->do_center_crop == b->do_center_crop && a->crop_width == b->crop_width &&
                              a->crop_height == b->crop_height && a->crop_rounding == b->crop_rounding;
    const int same_values = a->do_rescale == b->do_rescale && a->rescale_factor == b->rescale_factor &&
                            a->do_normalize == b->do_normalize &&
                            memcmp(a->mean, b->mean, sizeof a->mean) == 0 &&
                            memcmp(a->std, b->std, sizeof a->std) == 0;
    cr_expect(same_geometry && same_values, "%s: the copy preprocesses differently", name);
    cr_expect_eq(vit_model_num_labels(copy), vit_model_num_labels(source), "%s", name);
    for (int i = 0; i < vit_model_num_labels(source); i++)
        cr_expect_str_eq(vit_model_label(copy, i), vit_model_label(source, i), "%s class %d", name, i);
}

/* Quantises fixture `name` with the command, runs PyTorch's input through
 * the copy and returns max |logit - PyTorch's float32 logit| / max |logit|. */
static float relative_logit_error(const char *name, const char *dtype) {
    char model[512], expected_path[512], out[512], args[2048];
    snprintf(model, sizeof model, FIXTURES "%s", name);
    snprintf(expected_path, sizeof expected_path, FIXTURES "%s/expected.safetensors", name);
    out_path(out, sizeof out, name, dtype);
    snprintf(args, sizeof args, "quantize -m %s -o %s --dtype %s", model, out, dtype);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "vit %s: %s", args, r->err);

    base_error err;
    vit_model *m, *source;
    cr_assert(vit_model_load(out, NULL, &m, &err) == BASE_OK, "%s", err.message);
    cr_assert(vit_model_load(model, NULL, &source, &err) == BASE_OK, "%s", err.message);
    expect_same_recipe_and_labels(source, m, name);
    vit_model_free(source);
    weights_file *expected;
    cr_assert(weights_open(expected_path, &expected, &err) == BASE_OK, "%s", err.message);
    const weights_tensor *input_t, *logits_t;
    float *input = tensor_f32(expected, "input", &input_t);
    float *logits = tensor_f32(expected, "logits", &logits_t);
    const int batch = (int)input_t->shape[0];
    vit_context *ctx;
    cr_assert(vit_context_create(m, batch, (int)input_t->shape[2], 0, &ctx, &err) == BASE_OK, "%s",
              err.message);
    float *got = malloc(logits_t->numel * sizeof(float));
    cr_assert(vit_forward(ctx, input, batch, got, &err) == BASE_OK, "%s", err.message);
    float worst = 0.0f, scale = 0.0f;
    for (size_t i = 0; i < logits_t->numel; i++) {
        worst = fmaxf(worst, fabsf(got[i] - logits[i]));
        scale = fmaxf(scale, fabsf(logits[i]));
    }
    free(got);
    free(input);
    free(logits);
    vit_context_free(ctx);
    weights_close(expected);
    vit_model_free(m);
    remove(out);
    return worst / scale;
}

/* bf16 keeps 8 significant bits (relative rounding 2^-9), int8 about 7 per
 * group of 32; through a few random-weight blocks both stay near 1% of the
 * logits. A lost scale or a wrong rounding is off by far more. */
#define BF16_BOUND 0.02f
#define INT8_BOUND 0.04f

static void check_fixture(const char *name) {
    const float bf16 = relative_logit_error(name, "bf16");
    cr_expect(bf16 <= BF16_BOUND, "%s bf16: logits off by %g of their range", name, bf16);
    const float int8 = relative_logit_error(name, "int8");
    cr_expect(int8 <= INT8_BOUND, "%s int8: logits off by %g of their range", name, int8);
    cr_expect(bf16 > 0.0f && int8 > 0.0f, "%s: no rounding at all?", name);
}

Test(quantize, timm_with_config_matches_pytorch_within_bound) { check_fixture("timm_d128_h2"); }
Test(quantize, timm_distilled_matches_pytorch_within_bound) { check_fixture("timm_dist_d96_h4"); }
Test(quantize, hf_vit_matches_pytorch_within_bound) { check_fixture("hf_vit_d48_h3"); }
Test(quantize, hf_deit_matches_pytorch_within_bound) { check_fixture("hf_deit_teacher_d64_h2"); }

/* Every int8 weight is round(w / s) with s = max|group| / 127 for its group
 * of 32 along the row, so the dequantised matrix is within s / 2 of the
 * original, and each group's largest weight is kept exactly as +-127. */
Test(quantize, int8_groups_round_to_the_nearest_step) {
    char out[512], args[1024];
    out_path(out, sizeof out, "groups", "int8");
    snprintf(args, sizeof args, "quantize -m " FIXTURES "hf_vit_d48_h3 -o %s --dtype int8", out);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    base_error err;
    weights_file *src, *q;
    cr_assert(weights_open(FIXTURES "hf_vit_d48_h3/model.safetensors", &src, &err) == BASE_OK);
    cr_assert(weights_open(out, &q, &err) == BASE_OK, "%s", err.message);
    int matrices = 0;
    for (size_t i = 0; i < weights_count(q); i++) {
        const weights_tensor *t = weights_at(q, i);
        if (t->dtype != WEIGHTS_I8) continue;
        matrices++;
        const weights_tensor *orig = weights_find(src, t->name);
        char scale_name[512];
        snprintf(scale_name, sizeof scale_name, "%s_scale", t->name);
        const weights_tensor *scale_t = weights_find(q, scale_name);
        cr_assert(orig && scale_t, "%s: no original or no scale", t->name);
        const size_t cols = (size_t)t->shape[1], group = t->numel / scale_t->numel;
        cr_expect_eq(group, cols % 32 == 0 ? 32 : cols, "%s: groups of %zu", t->name, group);
        float *w = malloc(t->numel * sizeof(float)), *deq = malloc(t->numel * sizeof(float));
        float *scales = malloc(scale_t->numel * sizeof(float));
        cr_assert(weights_to_f32(src, orig, w, &err) == BASE_OK);
        cr_assert(weights_to_f32(q, t, deq, &err) == BASE_OK, "%s", err.message);
        cr_assert(weights_to_f32(q, scale_t, scales, &err) == BASE_OK);
        const signed char *codes = t->data;
        for (size_t g = 0; g < scale_t->numel; g++) {
            float max_abs = 0.0f;
            int max_code = 0;
            for (size_t k = g * group; k < (g + 1) * group; k++) {
                max_abs = fmaxf(max_abs, fabsf(w[k]));
                max_code = abs(codes[k]) > max_code ? abs(codes[k]) : max_code;
                cr_expect(fabsf(deq[k] - w[k]) <= scales[g] * 0.5001f, "%s[%zu]: %g -> %g, step %g",
                          t->name, k, w[k], deq[k], scales[g]);
            }
            cr_expect(fabsf(scales[g] - max_abs / 127.0f) <= 1e-6f * max_abs, "%s group %zu scale",
                      t->name, g);
            cr_expect_eq(max_code, 127, "%s group %zu: largest code %d", t->name, g, max_code);
        }
        free(w);
        free(deq);
        free(scales);
    }
    cr_expect_gt(matrices, 0, "no I8 matrices written");
    weights_close(src);
    weights_close(q);
    remove(out);
}

Test(quantize, refuses_bad_requests_in_one_line) {
    char out[512], args[2048];
    out_path(out, sizeof out, "refuse", "int8");
    run_result *r = run("quantize -m " FIXTURES "hf_vit_d48_h3 -o /tmp/x.safetensors --dtype fp4");
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "--dtype expects bf16, int8, fp32 or packed"), "%s", r->err);
    r = run("quantize -m " FIXTURES "hf_vit_d48_h3 --dtype int8");
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "-o is required"), "%s", r->err);
    snprintf(args, sizeof args, "quantize -m " FIXTURES "hf_vit_d48_h3 -o %s --dtype int8", out);
    cr_assert_eq(run(args)->status, 0);
    snprintf(args, sizeof args, "quantize -m %s -o %s.again --dtype int8", out, out);
    r = run(args);
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "already quantised"), "%s", r->err);
    snprintf(args, sizeof args, "quantize -m %s -o %s --dtype bf16", out, out);
    r = run(args);
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "would overwrite the model it reads"), "%s", r->err);
    cr_expect_eq(count_lines(r->err), 1, "%s", r->err);
    remove(out);
}

/* ----------------------------------------------- real photos (../shared) */

/* Top-1 class index per line of `vit classify --format csv` output. */
static int top1_column(const char *csv, int *top1, int max) {
    int n = 0;
    const char *line = strchr(csv, '\n'); /* past the header */
    while (line && line[1] && n < max) {
        const char *comma = strchr(line + 1, ',');
        cr_assert(comma, "bad CSV row");
        top1[n++] = atoi(comma + 1);
        line = strchr(line + 1, '\n');
    }
    return n;
}

enum { MAX_IMAGES = 600 };
#if defined(__SANITIZE_ADDRESS__) || defined(VITC_TEST_EMULATED)
/* The sanitizer build checks memory, not accuracy: the everyday photos only.
 * So does a build under an emulator (aarch64 under qemu, issue 30), where
 * the 509 photos take hours: there scripts/aarch64 identity compares the
 * outputs with the native build's instead. */
#define REAL_INPUTS SHARED "/images"
#define MIN_REAL_IMAGES 9
#else
#define REAL_INPUTS SHARED "/imagenet-sample " SHARED "/images"
#define MIN_REAL_IMAGES 500
#endif

/* How many rows of `vit classify --format csv` output name an
 * imagenet-sample photo (its labels.csv: file,class_index,...) and how
 * many of those have the true class first. */
static void count_correct(const char *csv, int *labelled, int *correct) {
    static char labels[1 << 16];
    slurp(SHARED "/imagenet-sample/labels.csv", labels, sizeof labels);
    *labelled = *correct = 0;
    for (const char *line = strchr(csv, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        const char *comma = strchr(line + 1, ',');
        /* The CSV's path names the directory too; labels.csv, the file alone. */
        const char *name = line + 1;
        for (const char *c = name; c < comma; c++)
            if (*c == '/') name = c + 1;
        const size_t name_len = (size_t)(comma - name);
        for (const char *l = strchr(labels, '\n'); l && l[1]; l = strchr(l + 1, '\n')) {
            if (strncmp(l + 1, name, name_len) != 0 || l[1 + name_len] != ',') continue;
            (*labelled)++;
            *correct += atoi(l + 2 + name_len) == atoi(comma + 1);
            break;
        }
    }
}

/* Top-1 of every real photo under model (a path), into top1; the count.
 * correct: how many imagenet-sample photos it gets right (of labelled). */
static int classify_real(const char *model, int *top1, int *labelled, int *correct) {
    char args[2048];
    snprintf(args, sizeof args, "classify -q -k 1 --format csv -m %s " REAL_INPUTS, model);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "vit %s: %s", args, r->err);
    count_correct(r->out, labelled, correct);
    return top1_column(r->out, top1, MAX_IMAGES);
}

/* The top-1 agreement with float32 each dtype must reach: int8 99%; bf16
 * (which now computes in bf16: activations rounded to bf16 at every
 * linear layer, not only the weights) 99.5%, issue 27's guard. */
static double min_agreement(const char *dtype) { return strcmp(dtype, "bf16") == 0 ? 0.995 : 0.99; }

/* Quantises model_name to each dtype and checks top-1 agreement with
 * float32 on the 500 ImageNet photos and the everyday ones, and ImageNet
 * top-1 accuracy within half a point of float32's. */
static void check_agreement(const char *model_name, const char *const *dtypes, int n_dtypes) {
    char model[512], out[512], args[2048];
    snprintf(model, sizeof model, SHARED "/models/%s", model_name);
    static int ref[MAX_IMAGES], got[MAX_IMAGES];
    int labelled, correct, got_labelled, got_correct;
    const int n = classify_real(model, ref, &labelled, &correct);
    cr_assert_geq(n, MIN_REAL_IMAGES, "%d rows", n);
    /* Else the accuracy check below compares nothing (as it once did). */
    if (MIN_REAL_IMAGES >= 500) cr_assert_geq(labelled, 500, "%d photos matched labels.csv", labelled);
    for (int d = 0; d < n_dtypes; d++) {
        out_path(out, sizeof out, "real", dtypes[d]);
        snprintf(args, sizeof args, "quantize -m %s -o %s --dtype %s", model, out, dtypes[d]);
        run_result *r = run(args);
        cr_assert_eq(r->status, 0, "%s", r->err);
        cr_assert_eq(classify_real(out, got, &got_labelled, &got_correct), n);
        int same = 0;
        for (int i = 0; i < n; i++) same += ref[i] == got[i];
        fprintf(stderr, "test_quantize: %s %s: top-1 agrees with float32 on %d of %d photos; "
                "top-1 %d of %d labelled (float32 %d)\n", model_name, dtypes[d], same, n,
                got_correct, got_labelled, correct);
        cr_expect(same >= min_agreement(dtypes[d]) * n,
                  "%s %s: top-1 agrees with float32 on %d of %d photos (at least %.1f%% needed)",
                  model_name, dtypes[d], same, n, 100 * min_agreement(dtypes[d]));
        /* ImageNet top-1 within half a point of float32's. */
        cr_expect(got_labelled == labelled && abs(got_correct - correct) * 200 <= labelled,
                  "%s %s: top-1 %d of %d labelled photos, float32 %d of %d", model_name,
                  dtypes[d], got_correct, got_labelled, correct, labelled);
        remove(out);
    }
}

static void need_shared(void) {
    struct stat st;
    if (stat(SHARED "/models", &st) != 0)
        cr_skip_test("../shared/models is absent: real-photo agreement tests skipped");
}

Test(quantize, real_deit_tiny_int8_and_bf16_agree_with_float32, .timeout = 900) {
    need_shared();
    const char *dtypes[] = {"int8", "bf16"};
    check_agreement("deit-tiny-patch16-224", dtypes, 2);
}

Test(quantize, real_vit_tiny_int8_and_bf16_agree_with_float32, .timeout = 900) {
    need_shared();
    const char *dtypes[] = {"int8", "bf16"};
    check_agreement("vit_tiny_patch16_224.augreg_in21k_ft_in1k", dtypes, 2);
}
