/* test_preprocess.c — decoding, PIL-exact resizing and preprocessing
 * recipes, checked against fixtures produced by tests/gen_preprocess.py with
 * PIL 9.4, torchvision 0.14 and a transcription of transformers' image
 * transforms. Expected values never come from vitc itself. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures/preprocess/"

static void fixture(char *buf, size_t size, const char *name) {
    snprintf(buf, size, FIXTURES "%s", name);
}

static void load_fixture(const char *name, data_image *img) {
    char path[1024];
    fixture(path, sizeof path, name);
    base_error err = {0};
    base_status st = data_image_load(path, img, &err);
    cr_assert_eq(st, BASE_OK, "loading %s: %s", name, err.message);
}

static uint8_t *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    cr_assert(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = 0;
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static char *read_fixture_text(const char *name) {
    char path[1024];
    fixture(path, sizeof path, name);
    size_t n;
    return (char *)read_all(path, &n);
}

/* Largest channel difference and number of differing channel values. */
static int image_diff(const data_image *a, const data_image *b, long *nonexact) {
    int worst = 0;
    long count = 0;
    size_t n = (size_t)a->width * a->height * 3;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)a->pixels[i] - (int)b->pixels[i]);
        if (d) count++;
        if (d > worst) worst = d;
    }
    if (nonexact) *nonexact = count;
    return worst;
}

/* Reads the fields of one whitespace-separated manifest line. */
static int split_fields(char *line, char **fields, int max) {
    int n = 0;
    for (char *tok = strtok(line, " \t\r\n"); tok && n < max; tok = strtok(NULL, " \t\r\n"))
        fields[n++] = tok;
    return n;
}

/* ------------------------------------------------------------ resize */

Test(resize, matches_pil_on_every_case) {
    char *manifest = read_fixture_text("resize_cases.txt");
    long cases = 0, total_values = 0, total_nonexact = 0;
    int overall_worst = 0;
    char *save = NULL;
    for (char *line = strtok_r(manifest, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[5];
        char copy[512];
        snprintf(copy, sizeof copy, "%s", line);
        if (split_fields(copy, f, 5) != 5) continue;
        data_image src, want, got;
        load_fixture(f[0], &src);
        load_fixture(f[4], &want);
        int w = atoi(f[1]), h = atoi(f[2]);
        base_error err = {0};
        cr_assert_eq(data_resize(&src, w, h, (data_resample)atoi(f[3]), &got, &err), BASE_OK,
                     "%s: %s", f[4], err.message);
        cr_assert_eq(got.width, want.width, "%s width", f[4]);
        cr_assert_eq(got.height, want.height, "%s height", f[4]);
        long nonexact;
        int worst = image_diff(&got, &want, &nonexact);
        cr_expect_leq(worst, 1, "%s: max diff %d vs PIL", f[4], worst);
        if (worst > overall_worst) overall_worst = worst;
        total_nonexact += nonexact;
        total_values += (long)w * h * 3;
        cases++;
        data_image_free(&src);
        data_image_free(&want);
        data_image_free(&got);
    }
    free(manifest);
    cr_assert_gt(cases, 30, "resize manifest has only %ld cases", cases);
    cr_log_info("resize vs PIL: %ld cases, %ld values, max diff %d, %ld non-exact", cases,
                total_values, overall_worst, total_nonexact);
    printf("resize vs PIL: %ld cases, %ld channel values, max diff %d, %ld non-exact\n", cases,
           total_values, overall_worst, total_nonexact);
}

Test(resize, rejects_bad_arguments) {
    data_image src, dst;
    load_fixture("src_noise_37x23.png", &src);
    base_error err = {0};
    cr_expect_eq(data_resize(&src, 0, 10, DATA_RESAMPLE_BICUBIC, &dst, &err), BASE_E_ARG);
    cr_expect_null(dst.pixels);
    cr_expect_eq(data_resize(&src, 10, -3, DATA_RESAMPLE_BILINEAR, &dst, &err), BASE_E_ARG);
    cr_expect_eq(data_resize(&src, 10, 10, (data_resample)1, &dst, &err), BASE_E_UNSUPPORTED);
    cr_expect_eq(data_resize(&src, 200000, 200000, DATA_RESAMPLE_NEAREST, &dst, &err),
                 BASE_E_LIMIT);
    data_image empty = {0};
    cr_expect_eq(data_resize(&empty, 10, 10, DATA_RESAMPLE_BICUBIC, &dst, &err), BASE_E_ARG);
    data_image_free(&src);
}

/* ------------------------------------------------------------ pipelines */

static void recipe_for(const char *cfg, data_preprocess *p) {
    base_error err = {0};
    base_status st;
    if (strncmp(cfg, "model_", 6) == 0) {
        char dir[1024];
        fixture(dir, sizeof dir, cfg);
        *strrchr(dir, '/') = '\0';
        st = data_preprocess_for_model(dir, 224, p, &err);
    } else {
        char *text = read_fixture_text(cfg);
        if (strstr(cfg, "timm"))
            st = data_preprocess_from_timm_json(text, cfg, p, &err);
        else
            st = data_preprocess_from_hf_json(text, cfg, p, &err);
        free(text);
    }
    cr_assert_eq(st, BASE_OK, "%s: %s", cfg, err.message);
}

Test(pipeline, matches_torchvision_and_transformers) {
    char *manifest = read_fixture_text("pipeline_cases.txt");
    int cases = 0;
    double overall = 0;
    char *save = NULL;
    for (char *line = strtok_r(manifest, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[6];
        char copy[512];
        snprintf(copy, sizeof copy, "%s", line);
        if (split_fields(copy, f, 6) != 6) continue;
        data_preprocess p;
        recipe_for(f[1], &p);
        int h = atoi(f[4]), w = atoi(f[5]);
        cr_assert_eq(data_preprocess_out_height(&p), h, "%s height", f[3]);
        cr_assert_eq(data_preprocess_out_width(&p), w, "%s width", f[3]);
        size_t n = (size_t)3 * h * w;
        float *got = malloc(n * sizeof *got), *want = malloc(n * sizeof *want);
        cr_assert(got && want);
        data_image src;
        load_fixture(f[0], &src);
        base_error err = {0};
        cr_assert_eq(data_preprocess_apply(&p, &src, got, &err), BASE_OK, "%s: %s", f[3],
                     err.message);
        if (strcmp(f[2], "f32") == 0) {
            char path[1024];
            fixture(path, sizeof path, f[3]);
            size_t bytes;
            uint8_t *raw = read_all(path, &bytes);
            cr_assert_eq(bytes, n * sizeof(float), "%s size", f[3]);
            memcpy(want, raw, bytes); /* fixtures are little-endian, like our targets */
            free(raw);
        } else {
            /* Reference 8-bit image before ToTensor; normalise it the way
             * torchvision does (float32 p / 255, then (x - mean) / std). */
            data_image ref;
            load_fixture(f[3], &ref);
            cr_assert_eq(ref.width, w);
            cr_assert_eq(ref.height, h);
            for (int c = 0; c < 3; c++)
                for (size_t i = 0; i < (size_t)h * w; i++) {
                    float x = (float)ref.pixels[3 * i + c] / 255.0f;
                    want[c * (size_t)h * w + i] = (x - p.mean[c]) / p.std[c];
                }
            data_image_free(&ref);
        }
        double worst = 0;
        size_t at = 0, inexact = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)got[i] - want[i]);
            inexact += d != 0;
            if (d > worst) {
                worst = d;
                at = i;
            }
        }
        cr_expect_leq(worst, 1e-5, "%s with %s: max |diff| %g at %zu (got %g want %g)", f[0],
                      f[1], worst, at, got[at], want[at]);
        if (worst > overall) overall = worst;
        printf("pipeline %s with %s: max |diff| %g, %zu of %zu values not bitwise equal\n", f[0],
               f[1], worst, inexact, n);
        cases++;
        data_image_free(&src);
        free(got);
        free(want);
    }
    free(manifest);
    cr_assert_geq(cases, 12);
    printf("pipelines vs torchvision/transformers: %d cases, max |diff| %g\n", cases, overall);
}

Test(pipeline, normalisation_equals_torchvision_bitwise) {
    /* All 256 values through ToTensor + Normalize(ImageNet), computed by torch. */
    char path[1024];
    fixture(path, sizeof path, "norm_imagenet_256.f32");
    size_t bytes;
    uint8_t *raw = read_all(path, &bytes);
    cr_assert_eq(bytes, 3 * 256 * sizeof(float));
    data_image img = {256, 1, malloc(256 * 3)};
    for (int v = 0; v < 256; v++) img.pixels[3 * v] = img.pixels[3 * v + 1] = img.pixels[3 * v + 2] = (uint8_t)v;
    data_preprocess p;
    data_preprocess_default(&p, 224);
    p.resize_mode = DATA_RESIZE_NONE;
    p.crop_width = 256;
    p.crop_height = 1;
    float out[3 * 256], want[3 * 256];
    memcpy(want, raw, bytes);
    base_error err = {0};
    cr_assert_eq(data_preprocess_apply(&p, &img, out, &err), BASE_OK, "%s", err.message);
    int mismatches = 0;
    for (int i = 0; i < 3 * 256; i++) mismatches += memcmp(&out[i], &want[i], sizeof(float)) != 0;
    cr_expect_eq(mismatches, 0, "%d of 768 values differ from torchvision", mismatches);
    free(raw);
    data_image_free(&img);
}

/* ------------------------------------------------------------ recipes */

static void parse_hf_fixture(const char *name, data_preprocess *p) {
    char *text = read_fixture_text(name);
    base_error err = {0};
    cr_assert_eq(data_preprocess_from_hf_json(text, name, p, &err), BASE_OK, "%s", err.message);
    free(text);
}

static void parse_timm_fixture(const char *name, data_preprocess *p) {
    char *text = read_fixture_text(name);
    base_error err = {0};
    cr_assert_eq(data_preprocess_from_timm_json(text, name, p, &err), BASE_OK, "%s", err.message);
    free(text);
}

static void expect_triplet(const float *v, float a, float b, float c) {
    cr_expect_float_eq(v[0], a, 1e-7);
    cr_expect_float_eq(v[1], b, 1e-7);
    cr_expect_float_eq(v[2], c, 1e-7);
}

Test(recipe, hf_int_size_is_square_resize) {
    /* The real deit-tiny preprocessor_config.json: size 256 -> 256x256. */
    data_preprocess p;
    parse_hf_fixture("model_deit/preprocessor_config.json", &p);
    cr_expect_eq(p.resize_mode, DATA_RESIZE_EXACT);
    cr_expect_eq(p.resize_width, 256);
    cr_expect_eq(p.resize_height, 256);
    cr_expect_eq(p.resample, DATA_RESAMPLE_BICUBIC);
    cr_expect(p.do_center_crop);
    cr_expect_eq(p.crop_width, 224);
    cr_expect_eq(p.crop_height, 224);
    cr_expect_eq(p.crop_rounding, DATA_CROP_HF);
    cr_expect(p.do_rescale && p.do_normalize);
    cr_expect_float_eq(p.rescale_factor, 1.0f / 255.0f, 1e-12);
    expect_triplet(p.mean, 0.485f, 0.456f, 0.406f);
    expect_triplet(p.std, 0.229f, 0.224f, 0.225f);
    cr_expect_str_eq(p.source, "preprocessor_config.json");
}

Test(recipe, hf_vit_defaults) {
    /* ViTImageProcessor: bilinear, no crop, mean/std 0.5 unless given. */
    data_preprocess p;
    parse_hf_fixture("cfg_hf_vit_int.json", &p);
    cr_expect_eq(p.resize_mode, DATA_RESIZE_EXACT);
    cr_expect_eq(p.resize_width, 24);
    cr_expect_eq(p.resample, DATA_RESAMPLE_BILINEAR);
    cr_expect_not(p.do_center_crop);
    cr_expect_eq(data_preprocess_out_width(&p), 24);
    expect_triplet(p.mean, 0.5f, 0.5f, 0.5f);
    base_error err = {0};
    cr_assert_eq(data_preprocess_from_hf_json("{\"feature_extractor_type\": "
                                              "\"DeiTFeatureExtractor\"}",
                                              "deit.json", &p, &err),
                 BASE_OK, "%s", err.message);
    cr_expect_eq(p.resize_width, 256);
    cr_expect_eq(p.resample, DATA_RESAMPLE_BICUBIC);
    cr_expect(p.do_center_crop);
    cr_expect_eq(p.crop_width, 224);
    expect_triplet(p.std, 0.229f, 0.224f, 0.225f);
    cr_assert_eq(data_preprocess_from_hf_json("{}", "empty.json", &p, &err), BASE_OK);
    cr_expect_eq(p.resize_width, 224);
    cr_expect_eq(p.resample, DATA_RESAMPLE_BILINEAR);
    cr_expect_not(p.do_center_crop);
}

Test(recipe, hf_dict_and_shortest_edge) {
    data_preprocess p;
    parse_hf_fixture("cfg_hf_deit_small.json", &p);
    cr_expect_eq(p.resize_mode, DATA_RESIZE_EXACT);
    cr_expect_eq(p.resize_width, 27);
    cr_expect_eq(p.resize_height, 19);
    cr_expect_eq(p.crop_width, 16);
    parse_hf_fixture("cfg_hf_shortest_pad.json", &p);
    cr_expect_eq(p.resize_mode, DATA_RESIZE_SHORTEST_EDGE);
    cr_expect_eq(p.resize_shortest, 13);
    cr_expect_eq(p.crop_height, 16);
    cr_expect_float_eq(p.rescale_factor, 0.5f / 255.0f, 1e-10);
    expect_triplet(p.mean, 0.4f, 0.5f, 0.6f);
    parse_hf_fixture("cfg_hf_no_rescale.json", &p);
    cr_expect_eq(p.resize_width, 10); /* [height, width] list */
    cr_expect_eq(p.resize_height, 12);
    cr_expect_eq(p.resample, DATA_RESAMPLE_NEAREST);
    cr_expect_not(p.do_rescale);
    parse_hf_fixture("cfg_hf_no_normalize.json", &p);
    cr_expect_not(p.do_normalize);
    base_error err = {0};
    cr_expect_eq(data_preprocess_from_hf_json("{\"size\": 300, \"crop_size\": null}", "n.json", &p,
                                              &err),
                 BASE_OK, "null is absent: %s", err.message);
    cr_expect_not(p.do_center_crop);
}

Test(recipe, timm_pretrained_cfg) {
    data_preprocess p;
    parse_timm_fixture("model_timm/config.json", &p);
    cr_expect_eq(p.resize_mode, DATA_RESIZE_SHORTEST_EDGE);
    cr_expect_eq(p.resize_shortest, 248); /* floor(224 / 0.9) */
    cr_expect_eq(p.resample, DATA_RESAMPLE_BICUBIC);
    cr_expect_eq(p.crop_width, 224);
    cr_expect_eq(p.crop_rounding, DATA_CROP_TORCHVISION);
    cr_expect_float_eq(p.crop_pct, 0.9f, 1e-7);
    expect_triplet(p.std, 0.5f, 0.5f, 0.5f);
    char line[256];
    data_preprocess_describe(&p, line, sizeof line);
    cr_expect_str_eq(line, "resize shorter side to 248 (bicubic), centre crop 224x224, mean "
                           "0.5,0.5,0.5 std 0.5,0.5,0.5 (timm pretrained_cfg)");
    parse_timm_fixture("cfg_timm_squash.json", &p);
    cr_expect_eq(p.resize_mode, DATA_RESIZE_EXACT);
    cr_expect_eq(p.resize_width, 22);
    cr_expect_eq(p.resample, DATA_RESAMPLE_NEAREST);
    base_error err = {0};
    cr_assert_eq(data_preprocess_from_timm_json("{\"pretrained_cfg\": {}}", "t.json", &p, &err),
                 BASE_OK, "%s", err.message);
    cr_expect_eq(p.resize_shortest, 256); /* timm defaults: 224, crop_pct 0.875 */
    expect_triplet(p.mean, 0.485f, 0.456f, 0.406f);
}

Test(recipe, for_model_picks_the_right_file) {
    data_preprocess p;
    base_error err = {0};
    cr_assert_eq(data_preprocess_for_model(FIXTURES "model_deit", 224, &p, &err), BASE_OK, "%s",
                 err.message);
    cr_expect_str_eq(p.source, "preprocessor_config.json");
    cr_expect_eq(p.resize_width, 256);
    cr_assert_eq(data_preprocess_for_model(FIXTURES "model_timm", 224, &p, &err), BASE_OK, "%s",
                 err.message);
    cr_expect_str_eq(p.source, "timm pretrained_cfg");
    cr_expect_eq(p.resize_shortest, 248);
    cr_assert_eq(data_preprocess_for_model(FIXTURES "model_plain", 384, &p, &err), BASE_OK);
    cr_expect_str_eq(p.source, "default");
    cr_expect_eq(p.resize_shortest, 438); /* floor(384 / 0.875) */
    cr_expect_eq(p.crop_width, 384);
    cr_assert_eq(data_preprocess_for_model(NULL, 224, &p, &err), BASE_OK);
    cr_expect_eq(p.resize_shortest, 256);
    cr_expect_eq(p.resample, DATA_RESAMPLE_BICUBIC);
    char line[256];
    data_preprocess_describe(&p, line, sizeof line);
    cr_expect_str_eq(line, "resize shorter side to 256 (bicubic), centre crop 224x224, mean "
                           "0.485,0.456,0.406 std 0.229,0.224,0.225 (default)");
}

Test(recipe, set_size) {
    data_preprocess p;
    parse_timm_fixture("model_timm/config.json", &p);
    data_preprocess_set_size(&p, 384);
    cr_expect_eq(p.crop_width, 384);
    cr_expect_eq(p.resize_shortest, 426); /* floor(384 / 0.9) */
    /* Python: floor(238 / 0.85) == 280; dividing by the float 0.85f gives 279. */
    base_error err = {0};
    cr_assert_eq(data_preprocess_from_timm_json("{\"pretrained_cfg\": {\"crop_pct\": 0.85}}", "t",
                                                &p, &err),
                 BASE_OK);
    data_preprocess_set_size(&p, 238);
    cr_expect_eq(p.resize_shortest, 280);
    parse_hf_fixture("model_deit/preprocessor_config.json", &p);
    data_preprocess_set_size(&p, 384);
    cr_expect_eq(p.crop_height, 384);
    cr_expect_eq(p.resize_width, 439); /* 256 * 384 / 224 = 438.9, ratio kept */
    parse_hf_fixture("cfg_hf_vit_int.json", &p);
    data_preprocess_set_size(&p, 384);
    cr_expect_eq(data_preprocess_out_height(&p), 384);
    cr_expect_eq(p.resize_height, 384);
}

Test(recipe, malformed_configs_are_errors) {
    static const char *hf_bad[] = {
        "",
        "{",
        "[]",
        "null",
        "{\"size\": -1}",
        "{\"size\": 0}",
        "{\"size\": 2.5}",
        "{\"size\": \"224\"}",
        "{\"size\": 1e12}",
        "{\"size\": {\"height\": 224}}",
        "{\"size\": {\"foo\": 1}}",
        "{\"size\": [224]}",
        "{\"crop_size\": {\"shortest_edge\": 5}}",
        "{\"size\": {\"shortest_edge\": 224}}",
        "{\"size\": {\"shortest_edge\": 224, \"longest_edge\": 1333}, \"crop_size\": 224}",
        "{\"do_resize\": false}",
        "{\"resample\": 1}",
        "{\"resample\": \"bicubic\"}",
        "{\"image_std\": [0.5, 0, 0.5]}",
        "{\"image_std\": [1, 2]}",
        "{\"image_mean\": \"x\"}",
        "{\"image_mean\": [0.5, \"a\", 0.5]}",
        "{\"do_resize\": \"yes\"}",
        "{\"do_normalize\": 1}",
        "{\"rescale_factor\": 0}",
        "{\"size\": 224} trailing",
    };
    for (size_t i = 0; i < sizeof hf_bad / sizeof *hf_bad; i++) {
        data_preprocess p;
        base_error err = {0};
        base_status st = data_preprocess_from_hf_json(hf_bad[i], "bad_hf.json", &p, &err);
        cr_expect_neq(st, BASE_OK, "accepted %s", hf_bad[i]);
        cr_expect(strstr(err.message, "bad_hf.json") != NULL, "%s -> %s", hf_bad[i], err.message);
    }
    static const char *timm_bad[] = {
        "{}",
        "{\"pretrained_cfg\": 5}",
        "{\"pretrained_cfg\": {\"input_size\": [3, 224]}}",
        "{\"pretrained_cfg\": {\"input_size\": [1, 224, 224]}}",
        "{\"pretrained_cfg\": {\"input_size\": [3, 0, 224]}}",
        "{\"pretrained_cfg\": {\"input_size\": [3, 224, 192]}}",
        "{\"pretrained_cfg\": {\"crop_pct\": 0}}",
        "{\"pretrained_cfg\": {\"crop_pct\": \"0.9\"}}",
        "{\"pretrained_cfg\": {\"crop_pct\": 1e-9}}",
        "{\"pretrained_cfg\": {\"interpolation\": \"lanczos\"}}",
        "{\"pretrained_cfg\": {\"interpolation\": 3}}",
        "{\"pretrained_cfg\": {\"crop_mode\": \"border\"}}",
        "{\"pretrained_cfg\": {\"std\": [0, 0.5, 0.5]}}",
        "{\"pretrained_cfg\": {\"mean\": [1, 2, 3, 4]}}",
        "{\"pretrained_cfg\": {\"mean\": [1, 2, 3], }}",
    };
    for (size_t i = 0; i < sizeof timm_bad / sizeof *timm_bad; i++) {
        data_preprocess p;
        base_error err = {0};
        base_status st = data_preprocess_from_timm_json(timm_bad[i], "bad_timm.json", &p, &err);
        cr_expect_neq(st, BASE_OK, "accepted %s", timm_bad[i]);
        cr_expect(strstr(err.message, "bad_timm.json") != NULL, "%s -> %s", timm_bad[i],
                  err.message);
    }
    /* Oversized and deeply nested JSON. */
    size_t big = BASE_DEFAULT_MAX_JSON_BYTES + 16;
    char *text = malloc(big + 1);
    cr_assert(text);
    memset(text, ' ', big);
    text[0] = '{';
    text[big - 1] = '}';
    text[big] = 0;
    data_preprocess p;
    base_error err = {0};
    cr_expect_eq(data_preprocess_from_hf_json(text, "big.json", &p, &err), BASE_E_LIMIT);
    for (size_t i = 0; i < 100000; i++) text[i] = '[';
    text[100000] = 0;
    cr_expect_neq(data_preprocess_from_hf_json(text, "deep.json", &p, &err), BASE_OK);
    free(text);
}

/* ------------------------------------------------------------ decoding */

Test(decode, matches_pil_convert_rgb) {
    char *manifest = read_fixture_text("decode_cases.txt");
    int cases = 0;
    char *save = NULL;
    for (char *line = strtok_r(manifest, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[3];
        char copy[512];
        snprintf(copy, sizeof copy, "%s", line);
        if (split_fields(copy, f, 3) != 3) continue;
        data_image got, want;
        load_fixture(f[0], &got);
        load_fixture(f[1], &want);
        cr_assert_eq(got.width, want.width, "%s width", f[0]);
        cr_assert_eq(got.height, want.height, "%s height", f[0]);
        long nonexact;
        int worst = image_diff(&got, &want, &nonexact);
        int tol = atoi(f[2]);
        cr_expect_leq(worst, tol, "%s: max diff %d vs PIL (allowed %d)", f[0], worst, tol);
        if (tol > 0) {
            double mean = 0;
            size_t n = (size_t)got.width * got.height * 3;
            for (size_t i = 0; i < n; i++) mean += abs((int)got.pixels[i] - (int)want.pixels[i]);
            mean /= (double)n;
            cr_expect_leq(mean, 1.0, "%s: mean diff %g vs PIL", f[0], mean);
            printf("decode %s vs PIL: max diff %d, mean %.3f, %ld of %zu values differ\n", f[0],
                   worst, mean, nonexact, n);
        }
        cases++;
        data_image_free(&got);
        data_image_free(&want);
    }
    free(manifest);
    cr_assert_geq(cases, 20);
}

/* ------------------------------------------------------------ hostile input */

static char tmpdir[256];

static void make_tmpdir(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vitc_test_preprocess_XXXXXX");
    cr_assert(mkdtemp(tmpdir), "mkdtemp failed");
}

static void remove_tmpdir(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

static void write_tmp(const char *name, const void *data, size_t size, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    if (size) cr_assert_eq(fwrite(data, 1, size, f), size);
    fclose(f);
}

/* Loads path and expects failure with the file named in the message. */
static void expect_load_error(const char *path, base_status want) {
    data_image img;
    base_error err = {0};
    base_status st = data_image_load(path, &img, &err);
    cr_expect_neq(st, BASE_OK, "%s loaded", path);
    if (want != BASE_OK) cr_expect_eq(st, want, "%s: status %d (%s)", path, st, err.message);
    cr_expect(strstr(err.message, path) != NULL, "message lacks the file: %s", err.message);
    cr_expect_null(img.pixels);
    cr_expect_null(strchr(err.message, '\n'), "multi-line message");
}

Test(hostile, bad_files_are_clear_errors, .init = make_tmpdir, .fini = remove_tmpdir) {
    char path[512];
    snprintf(path, sizeof path, "%s/does_not_exist.jpg", tmpdir);
    expect_load_error(path, BASE_E_IO);
    expect_load_error(tmpdir, BASE_E_IO); /* a directory */
    write_tmp("empty.png", "", 0, path, sizeof path);
    expect_load_error(path, BASE_E_FORMAT);

    size_t n;
    char src[1024];
    fixture(src, sizeof src, "dec_photo.jpg");
    uint8_t *jpeg = read_all(src, &n);
    size_t cuts[] = {1, 2, 3, 10, 100, n / 2, n - 2};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        write_tmp("truncated.jpg", jpeg, cuts[i], path, sizeof path);
        expect_load_error(path, BASE_OK);
    }
    free(jpeg);
    fixture(src, sizeof src, "src_polars.png");
    uint8_t *png = read_all(src, &n);
    size_t png_cuts[] = {4, 8, 20, 40, n / 2, n - 13};
    for (size_t i = 0; i < sizeof png_cuts / sizeof *png_cuts; i++) {
        write_tmp("truncated.png", png, png_cuts[i], path, sizeof path);
        expect_load_error(path, BASE_OK);
    }
    free(png);
    fixture(src, sizeof src, "dec_rgb.bmp");
    uint8_t *bmp = read_all(src, &n);
    write_tmp("truncated.bmp", bmp, n / 2, path, sizeof path);
    expect_load_error(path, BASE_E_FORMAT);
    free(bmp);
    static const char ppm[] = "P6 20 10 255\nabc";
    write_tmp("truncated.ppm", ppm, sizeof ppm - 1, path, sizeof path);
    expect_load_error(path, BASE_E_FORMAT);

    srand(12345);
    uint8_t noise[4096];
    for (int trial = 0; trial < 20; trial++) {
        for (size_t i = 0; i < sizeof noise; i++) noise[i] = (uint8_t)rand();
        write_tmp("random.jpg", noise, (size_t)(trial * 200 + 1), path, sizeof path);
        expect_load_error(path, BASE_OK);
    }
}

/* A PNG whose IDAT chunk declares far more bytes than the file holds (a
 * file cut short, or a hostile one): stb 2.27 grew its buffer to the
 * declared length first (2 GiB for a 348-byte file, found by fuzz_image).
 * Refused as truncated before stb sees it, naming the file and the chunk. */
Test(hostile, png_chunk_longer_than_the_file_is_truncated) {
    char path[1024];
    size_t n;
    fixture(path, sizeof path, "src_polars.png");
    uint8_t *png = read_all(path, &n);
    size_t at = 8;
    while (at + 8 <= n && memcmp(png + at + 4, "IDAT", 4) != 0)
        at += 12 + ((size_t)png[at] << 24 | (size_t)png[at + 1] << 16 | (size_t)png[at + 2] << 8 | png[at + 3]);
    cr_assert(at + 8 <= n, "no IDAT in src_polars.png");
    const uint8_t huge[4] = {0x49, 0x46, 0x00, 0x89}; /* 1,229,324,425 bytes */
    memcpy(png + at, huge, 4);
    data_image img;
    base_error err = {0};
    const base_status st = data_image_load_memory(png, n, "overrun.png", &img, &err);
    cr_expect_eq(st, BASE_E_FORMAT, "status %d (%s)", st, err.message);
    cr_expect(strstr(err.message, "overrun.png: truncated PNG (the IDAT chunk"), "%s", err.message);
    cr_expect_null(img.pixels);
    free(png);
}

/* Where the entropy-coded data of scan k (1: the first) starts in a JPEG,
 * and *frame where its SOF segment's payload starts; 0 when not found. */
static size_t jpeg_scan_start(const uint8_t *b, size_t n, int k, size_t *frame) {
    size_t i = 2;
    while (i + 4 <= n && b[i] == 0xFF) {
        const uint8_t m = b[i + 1];
        const size_t len = (size_t)b[i + 2] << 8 | b[i + 3];
        if (m >= 0xC0 && m <= 0xC2 && frame) *frame = i + 4;
        i += 2 + len;
        if (m != 0xDA) continue;
        if (--k == 0) return i;
        while (i + 1 < n && !(b[i] == 0xFF && b[i + 1] != 0 && (b[i + 1] < 0xD0 || b[i + 1] > 0xD7))) i++;
    }
    return 0;
}

/* The first `keep` bytes of jpeg then an end-of-image marker, loaded:
 * must fail as a truncated JPEG, naming the file. */
static void expect_truncated_jpeg(const uint8_t *jpeg, size_t keep, const char *what) {
    uint8_t *cut = malloc(keep + 2);
    memcpy(cut, jpeg, keep);
    cut[keep] = 0xFF;
    cut[keep + 1] = 0xD9;
    data_image img;
    base_error err = {0};
    const base_status st = data_image_load_memory(cut, keep + 2, what, &img, &err);
    cr_expect_eq(st, BASE_E_FORMAT, "%s: status %d (%s)", what, st, err.message);
    cr_expect(strstr(err.message, what) && strstr(err.message, "truncated JPEG"), "%s", err.message);
    cr_expect_null(img.pixels);
    free(cut);
}

/* Issue 24: an end-of-image marker inside the scan data (the file cut and
 * an EOI appended, or made so) decoded as a grey-filled picture, answered
 * as a result; PIL loads it too, libjpeg only warning. Every caller now
 * gets "truncated JPEG", checked before the pixels are allocated: a file
 * declaring 10000x10000 with 50 bytes of scan data is refused at once. */
Test(hostile, jpeg_scan_data_cut_short_is_truncated) {
    const char *names[] = {"dec_photo.jpg", "dec_photo_prog.jpg", "dec_grey.jpg", "dec_444.jpg"};
    for (int f = 0; f < 4; f++) {
        char path[1024];
        size_t n;
        fixture(path, sizeof path, names[f]);
        uint8_t *jpeg = read_all(path, &n);
        const size_t first = jpeg_scan_start(jpeg, n, 1, NULL);
        cr_assert(first > 0, "%s: no scan", names[f]);
        const size_t keeps[] = {first, first + 50, first + (n - first) / 2, n - 4};
        for (int k = 0; k < 4; k++) {
            char what[128];
            snprintf(what, sizeof what, "%s cut at %zu of %zu", names[f], keeps[k], n);
            expect_truncated_jpeg(jpeg, keeps[k], what);
        }
        data_image img;
        base_error err;
        cr_expect_eq(data_image_load_memory(jpeg, n, names[f], &img, &err), BASE_OK, "%s", err.message);
        data_image_free(&img);
        free(jpeg);
    }
    /* 10000 x 10000 (within the pixel cap) declared, 50 bytes of scan data. */
    char path[1024];
    size_t n, frame = 0;
    fixture(path, sizeof path, "dec_grey.jpg");
    uint8_t *jpeg = read_all(path, &n);
    const size_t first = jpeg_scan_start(jpeg, n, 1, &frame);
    cr_assert(first > 0 && frame > 0);
    jpeg[frame + 1] = jpeg[frame + 3] = 10000 >> 8;
    jpeg[frame + 2] = jpeg[frame + 4] = 10000 & 255;
    const double start = (double)clock() / CLOCKS_PER_SEC;
    expect_truncated_jpeg(jpeg, first + 50, "10000x10000.jpg");
    cr_expect_lt((double)clock() / CLOCKS_PER_SEC - start, 0.5, "not refused before decoding");
    free(jpeg);
}

/* The check reads every real photo as complete (../shared: a few everyday
 * photos and the 500 ImageNet ones, baseline and progressive, from many
 * encoders). */
Test(hostile, every_shared_photo_decodes, .timeout = 300) {
    DIR *dirs[2] = {opendir(VITC_SOURCE_DIR "/../shared/images"),
                    opendir(VITC_SOURCE_DIR "/../shared/imagenet-sample")};
    const char *roots[2] = {VITC_SOURCE_DIR "/../shared/images", VITC_SOURCE_DIR "/../shared/imagenet-sample"};
    if (!dirs[0] || !dirs[1]) {
        for (int d = 0; d < 2; d++)
            if (dirs[d]) closedir(dirs[d]);
        cr_skip_test("../shared is absent: the real-photo decoding check is skipped");
    }
    int photos = 0;
    for (int d = 0; d < 2; d++) {
        for (struct dirent *e; (e = readdir(dirs[d]));) {
            const char *dot = strrchr(e->d_name, '.');
            if (!dot || (strcasecmp(dot, ".jpg") && strcasecmp(dot, ".jpeg"))) continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", roots[d], e->d_name);
            data_image img;
            base_error err;
            cr_expect_eq(data_image_load(path, &img, &err), BASE_OK, "%s", err.message);
            data_image_free(&img);
            photos++;
        }
        closedir(dirs[d]);
    }
    cr_expect_geq(photos, 509, "only %d photos", photos);
}

Test(hostile, absurd_dimensions_are_refused_before_decoding) {
    char path[1024];
    fixture(path, sizeof path, "huge_50000.png");
    data_image img;
    base_error err = {0};
    cr_expect_eq(data_image_load(path, &img, &err), BASE_E_LIMIT, "%s", err.message);
    cr_expect(strstr(err.message, "huge_50000.png") && strstr(err.message, "50000x50000"), "%s",
              err.message);
    cr_expect(strstr(err.message, "2500 megapixels"), "%s", err.message);
    fixture(path, sizeof path, "huge_50000.jpg");
    cr_expect_eq(data_image_load(path, &img, &err), BASE_E_LIMIT, "%s", err.message);
    cr_expect(strstr(err.message, "huge_50000.jpg") != NULL, "%s", err.message);
    static const char pgm[] = "P5 50000 50000 255\n";
    cr_expect_eq(data_image_load_memory(pgm, sizeof pgm - 1, "huge.pgm", &img, &err), BASE_E_LIMIT);
}

Test(hostile, memory_api_edge_cases) {
    data_image img;
    base_error err = {0};
    cr_expect_eq(data_image_load_memory(NULL, 0, "null.png", &img, &err), BASE_E_FORMAT);
    cr_expect(strstr(err.message, "null.png") != NULL);
    cr_expect_eq(data_image_load_memory("x", 1, "x.png", &img, &err), BASE_E_FORMAT);
    cr_expect_str_eq(err.message, "x.png: not an image (unknown format)");
    cr_expect_eq(data_image_load_memory("GIF89a", 6, "t.gif", &img, &err), BASE_E_FORMAT);
    cr_expect_eq(data_image_load_memory("\x89PNG\r\n\x1a\n", 8, "t.png", &img, &err),
                 BASE_E_FORMAT);
    cr_expect_eq(data_image_load_memory("P1 2 2 0 1 1 0", 14, "a.pbm", &img, &err),
                 BASE_E_UNSUPPORTED);
    data_image_free(&img);
    data_image_free(NULL);
}

Test(hostile, corrupted_bytes_never_crash) {
    /* Flip bytes of valid files: any outcome but a crash is acceptable. */
    static const char *names[] = {"dec_photo.jpg", "dec_photo_prog.jpg", "dec_palette.png",
                                  "dec_rgb16.png", "dec_palette.gif", "dec_rgb.bmp",
                                  "dec_grey1000.pgm"};
    srand(777);
    int decoded = 0, refused = 0;
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        char path[1024];
        fixture(path, sizeof path, names[k]);
        size_t n;
        uint8_t *orig = read_all(path, &n);
        uint8_t *buf = malloc(n);
        for (int trial = 0; trial < 40; trial++) {
            memcpy(buf, orig, n);
            int flips = 1 + rand() % 8;
            for (int f = 0; f < flips; f++) buf[(size_t)rand() % n] = (uint8_t)rand();
            size_t len = trial % 4 == 0 ? (size_t)rand() % n + 1 : n;
            data_image img;
            base_error err = {0};
            base_status st = data_image_load_memory(buf, len, names[k], &img, &err);
            if (st == BASE_OK) {
                decoded++;
                cr_expect(img.width > 0 && img.height > 0 && img.pixels);
                data_image_free(&img);
            } else {
                refused++;
                cr_expect(strstr(err.message, names[k]) != NULL, "%s", err.message);
            }
        }
        free(buf);
        free(orig);
    }
    printf("corrupted inputs: %d decoded, %d refused, no crash\n", decoded, refused);
}

Test(hostile, preprocess_file_names_the_file) {
    data_preprocess p;
    data_preprocess_default(&p, 224);
    float *out = malloc(3 * 224 * 224 * sizeof *out);
    base_error err = {0};
    cr_expect_eq(data_preprocess_file(&p, "/nonexistent/cat.jpg", out, &err), BASE_E_IO);
    cr_expect(strstr(err.message, "/nonexistent/cat.jpg") != NULL, "%s", err.message);
    char path[1024];
    fixture(path, sizeof path, "src_polars.png");
    cr_expect_eq(data_preprocess_file(&p, path, out, &err), BASE_OK, "%s", err.message);
    free(out);
}
