/* Bad input around a checkpoint (issue 13): configs and preprocessing that do
 * not fit the weights, invalid config values, labels of the wrong count and
 * files that are not what they seem. Each must be refused at load with one
 * line naming the file, the key or size and the value: never an overflow,
 * never a silent guess, never a hang. Fixtures are built in a temporary
 * directory from the small checkpoints in tests/fixtures/parity. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_util.h"
#include "vit.h"

#define HF VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3" /* 32x32, patch 8, 5 classes */
#define TIMM VITC_SOURCE_DIR "/tests/fixtures/parity/timm_d128_h2" /* 32x32, no config */
#define TIMM_NOHEAD VITC_SOURCE_DIR "/tests/fixtures/parity/timm_nohead_d64_h1"
#define PHOTO VITC_SOURCE_DIR "/tests/fixtures/real/apple.png"

TEMP_DIR_SUITE(validate);

static void write_text(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    cr_assert(fp, "cannot write %s", path);
    fputs(text, fp);
    fclose(fp);
}

/* dir becomes a copy of a fixture checkpoint (weights, and its config if any). */
static void copy_fixture(const char *fixture) {
    shell("cp '%s/model.safetensors' '%s/' && if [ -f '%s/config.json' ]; then cp '%s/config.json' "
          "'%s/'; fi",
          fixture, dir, fixture, fixture, dir);
}

/* The HF fixture's config.json with "key": value (JSON text) set, or the
 * key removed when value is NULL. */
static void write_hf_config_with(const char *key, const char *value) {
    static char text[65536];
    slurp(HF "/config.json", text, sizeof text);
    cJSON *config = cJSON_Parse(text);
    cr_assert(config);
    cJSON_DeleteItemFromObjectCaseSensitive(config, key);
    if (value) {
        cJSON *item = cJSON_Parse(value);
        cr_assert(item, "bad test value %s", value);
        cJSON_AddItemToObject(config, key, item);
    }
    char *out = cJSON_Print(config);
    write_text("config.json", out);
    cJSON_free(out);
    cJSON_Delete(config);
}

static base_status load(vit_model **model, base_error *err) {
    *model = NULL;
    memset(err, 0, sizeof *err);
    return vit_model_load(dir, NULL, model, err);
}

/* Loads dir, expecting code and a one-line message holding every needle
 * (NULL-terminated list). */
static void expect_refused_all(base_status code, const char *const *needles) {
    vit_model *model;
    base_error err;
    base_status status = load(&model, &err);
    cr_assert_eq(status, code, "expected status %d, got %d: %s", code, status, err.message);
    cr_assert_null(model);
    cr_assert(strchr(err.message, '\n') == NULL, "message is not one line: %s", err.message);
    for (; *needles; needles++)
        cr_assert(strstr(err.message, *needles), "message lacks '%s': %s", *needles, err.message);
}
#define expect_refused(code, ...) expect_refused_all(code, (const char *const[]){__VA_ARGS__, NULL})

static vit_model *expect_loads(void) {
    vit_model *model;
    base_error err;
    cr_assert_eq(load(&model, &err), BASE_OK, "%s", err.message);
    return model;
}

/* ------------------------------------------ 1. preprocessing vs input size */

Test(validate, crop_smaller_than_the_model_input_is_refused) {
    copy_fixture(HF);
    write_text("preprocessor_config.json", "{\"size\": 8, \"crop_size\": 7}");
    expect_refused(BASE_E_SHAPE, "preprocessor_config.json", "7x7", "32x32");
}

Test(validate, crop_larger_than_the_model_input_is_refused) {
    copy_fixture(HF);
    write_text("preprocessor_config.json", "{\"size\": 48, \"crop_size\": 40}");
    expect_refused(BASE_E_SHAPE, "preprocessor_config.json", "40x40", "32x32");
}

Test(validate, non_square_crop_is_refused) {
    copy_fixture(HF);
    write_text("preprocessor_config.json",
               "{\"size\": 40, \"crop_size\": {\"height\": 32, \"width\": 24}}");
    expect_refused(BASE_E_SHAPE, "preprocessor_config.json", "24x32", "32x32");
}

Test(validate, resize_without_crop_to_another_size_is_refused) {
    copy_fixture(HF);
    write_text("preprocessor_config.json", "{\"size\": 28, \"do_center_crop\": false}");
    expect_refused(BASE_E_SHAPE, "preprocessor_config.json", "28x28", "32x32");
}

/* model_args states the weights' size; pretrained_cfg preprocesses to another. */
Test(validate, timm_input_size_other_than_the_weights_is_refused) {
    copy_fixture(TIMM);
    write_text("config.json", "{\"architecture\": \"vit_test\", \"model_args\": {\"img_size\": 32}, "
                              "\"pretrained_cfg\": {\"input_size\": [3, 40, 40], \"crop_pct\": 1.0}}");
    expect_refused(BASE_E_SHAPE, "config.json", "40x40", "32x32");
}

Test(validate, matching_preprocessing_still_loads) {
    copy_fixture(HF);
    write_text("preprocessor_config.json", "{\"size\": 36, \"crop_size\": 32}");
    vit_model_free(expect_loads());
}

/* The CLI used to print "-nan%" labels and exit 0 (or overflow the heap). */
Test(validate, cli_refuses_a_mismatched_crop_in_one_line) {
    copy_fixture(HF);
    write_text("preprocessor_config.json", "{\"size\": 8, \"crop_size\": 7}");
    char args[512];
    snprintf(args, sizeof args, "classify -q -m %s %s", dir, PHOTO);
    run_result *r = run(args);
    cr_expect_eq(r->status, 1, "stdout: %s stderr: %s", r->out, r->err);
    cr_expect_eq(count_lines(r->err), 1, "stderr: %s", r->err);
    cr_expect(strstr(r->err, "7x7") && strstr(r->err, "32x32"), "stderr: %s", r->err);
    cr_expect(!strstr(r->out, "nan"), "stdout: %s", r->out);
}

/* --size is the way to run at another size: the recipe and the context are
 * both retargeted, the position embeddings resampled. */
Test(validate, size_option_still_runs_at_another_size) {
    copy_fixture(HF);
    char args[512];
    snprintf(args, sizeof args, "classify -q --size 48 -k 1 -m %s %s", dir, PHOTO);
    run_result *r = run(args);
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
    cr_expect(strstr(r->out, "%") && !strstr(r->out, "nan"), "stdout: %s", r->out);
}

/* The size differs on purpose: with --size the recipe is retargeted to it,
 * so a recipe made for another size than the weights' is no longer refused
 * (position embeddings are resampled), and one that still does not make
 * --size images is. */
Test(validate, size_option_accepts_a_recipe_for_another_size) {
    copy_fixture(HF);
    write_text("preprocessor_config.json", "{\"size\": 72, \"crop_size\": 64}");
    char args[512];
    snprintf(args, sizeof args, "classify -q -k 1 -m %s %s", dir, PHOTO);
    run_result *r = run(args);
    cr_expect_eq(r->status, 1, "without --size: %s", r->err);
    cr_expect(strstr(r->err, "64x64") && strstr(r->err, "32x32"), "stderr: %s", r->err);
    snprintf(args, sizeof args, "classify -q --size 64 -k 1 -m %s %s", dir, PHOTO);
    r = run(args);
    cr_expect_eq(r->status, 0, "with --size 64: %s", r->err);
    cr_expect(strstr(r->out, "%") && !strstr(r->out, "nan"), "stdout: %s", r->out);
}

/* Defence in depth: the library refuses images of another size than the
 * context's instead of reading past them. */
Test(validate, forward_refuses_images_of_another_size) {
    copy_fixture(HF);
    vit_model *model = expect_loads();
    vit_context *ctx;
    base_error err;
    cr_assert_eq(vit_context_create(model, 1, 0, 0, &ctx, &err), BASE_OK, "%s", err.message);
    float *images = calloc(3 * 7 * 7, sizeof(float)), out[5];
    cr_expect_eq(vit_forward_checked(ctx, images, 1, 3, 7, 7, out, &err), BASE_E_SHAPE);
    cr_expect(strstr(err.message, "7x7") && strstr(err.message, "32x32"), "%s", err.message);
    cr_expect_eq(vit_forward_checked(ctx, images, 1, 1, 32, 32, out, &err), BASE_E_SHAPE);
    free(images);
    images = calloc(3 * 32 * 32, sizeof(float));
    cr_expect_eq(vit_forward_checked(ctx, images, 1, 3, 32, 32, out, &err), BASE_OK, "%s",
                 err.message);
    free(images);
    vit_context_free(ctx);
    vit_model_free(model);
}

/* ------------------------------------------------ 2. input channel count */

/* The HF fixture with its patch kernel widened or narrowed to `channels`
 * (values are irrelevant: the load must stop before any forward pass). */
static void write_model_with_channels(int channels) {
    weights_file *good;
    base_error err;
    cr_assert(weights_open(HF "/model.safetensors", &good, &err) == BASE_OK, "%s", err.message);
    const size_t n = weights_count(good);
    weights_tensor *tensors = calloc(n, sizeof *tensors);
    float *kernel = NULL;
    for (size_t i = 0; i < n; i++) {
        tensors[i] = *weights_at(good, i);
        if (strcmp(tensors[i].name, "vit.embeddings.patch_embeddings.projection.weight") == 0) {
            weights_tensor *t = &tensors[i];
            cr_assert_eq(t->shape[1], 3, "fixture changed");
            t->shape[1] = channels;
            t->numel = (size_t)t->shape[0] * channels * t->shape[2] * t->shape[3];
            t->nbytes = t->numel * sizeof(float);
            kernel = calloc(t->numel, sizeof(float));
            t->data = kernel;
        }
    }
    cr_assert(kernel, "fixture has no patch kernel");
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert(weights_write(path, tensors, n, NULL, NULL, 0, &err) == BASE_OK, "%s", err.message);
    free(kernel);
    free(tensors);
    weights_close(good);
}

Test(validate, four_channel_patch_embedding_is_refused) {
    write_model_with_channels(4);
    expect_refused(BASE_E_UNSUPPORTED, "model.safetensors", "4 input channels", "only 3");
}

Test(validate, one_channel_patch_embedding_is_refused) {
    write_model_with_channels(1);
    expect_refused(BASE_E_UNSUPPORTED, "model.safetensors", "1 input channels", "only 3");
}

/* ------------------------------------------------- 3. config.json values */

typedef struct bad_value {
    const char *key, *value, *shown;
} bad_value;

Test(validate, invalid_hf_config_values_are_refused) {
    static const bad_value CASES[] = {
        {"num_attention_heads", "0", "0"},        {"num_attention_heads", "-3", "-3"},
        {"num_attention_heads", "\"3\"", "\"3\""}, {"num_attention_heads", "3.5", "3.5"},
        {"num_attention_heads", "1e300", "1e+300"}, {"num_attention_heads", "true", "true"},
        {"layer_norm_eps", "\"x\"", "\"x\""},     {"layer_norm_eps", "0", "0"},
        {"layer_norm_eps", "-1e-6", "-1e-06"},    {"num_hidden_layers", "-1", "-1"},
        {"patch_size", "0", "0"},                 {"image_size", "\"224\"", "\"224\""},
        {"image_size", "[32]", "[32]"},           {"hidden_size", "{}", "{}"},
        {"intermediate_size", "96.5", "96.5"},    {"num_channels", "\"3\"", "\"3\""},
    };
    copy_fixture(HF);
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        write_hf_config_with(CASES[i].key, CASES[i].value);
        char key[80];
        snprintf(key, sizeof key, "\"%s\"", CASES[i].key);
        expect_refused(BASE_E_FORMAT, "config.json", key, CASES[i].shown);
    }
}

Test(validate, unsupported_hf_values_are_refused) {
    copy_fixture(HF);
    write_hf_config_with("image_size", "[32, 24]");
    expect_refused(BASE_E_UNSUPPORTED, "config.json", "\"image_size\"", "square");
    write_hf_config_with("hidden_act", "\"relu\"");
    expect_refused(BASE_E_UNSUPPORTED, "config.json", "\"hidden_act\"", "\"relu\"");
}

/* Only an absent key (or null, Python's None) takes the default. */
Test(validate, absent_or_null_keys_take_defaults) {
    copy_fixture(HF);
    write_hf_config_with("image_size", "[32, 32]");
    vit_model_free(expect_loads());
    write_hf_config_with("num_attention_heads", "null");
    vit_model *model = expect_loads();
    cr_expect_eq(vit_model_config(model)->num_heads, 1, "48 / 64 is no whole number: 1 head");
    cr_expect(strstr(vit_model_notices(model), "not stated"), "%s", vit_model_notices(model));
    vit_model_free(model);
    write_hf_config_with("layer_norm_eps", NULL);
    model = expect_loads();
    cr_expect_float_eq(vit_model_config(model)->layer_norm_eps, 1e-12f, 1e-18f);
    vit_model_free(model);
}

Test(validate, invalid_timm_config_values_are_refused) {
    static const struct {
        const char *config, *needle1, *needle2;
    } CASES[] = {
        {"{\"architecture\": \"vit_x\", \"model_args\": {\"num_heads\": \"2\"}}",
         "\"model_args.num_heads\"", "\"2\""},
        {"{\"architecture\": \"vit_x\", \"model_args\": {\"num_heads\": 0}}",
         "\"model_args.num_heads\"", "is 0"},
        {"{\"architecture\": \"vit_x\", \"model_args\": {\"embed_dim\": 128.5}}",
         "\"model_args.embed_dim\"", "128.5"},
        {"{\"architecture\": \"vit_x\", \"model_args\": {\"depth\": -1}}", "\"model_args.depth\"",
         "-1"},
        {"{\"architecture\": \"vit_x\", \"model_args\": {\"img_size\": \"32\"}}",
         "\"model_args.img_size\"", "\"32\""},
        {"{\"architecture\": \"vit_x\", \"model_args\": {\"mlp_ratio\": \"4\"}}",
         "\"model_args.mlp_ratio\"", "\"4\""},
        {"{\"architecture\": \"vit_x\", \"model_args\": [1]}", "\"model_args\"", "[1]"},
        {"{\"architecture\": 5}", "\"architecture\"", "5"},
        {"{\"architecture\": \"vit_x\", \"num_classes\": -1}", "\"num_classes\"", "-1"},
        {"{\"architecture\": \"vit_x\", \"pretrained_cfg\": {\"input_size\": [3, \"32\", 32]}}",
         "\"pretrained_cfg.input_size\"", "\"32\""},
        {"{\"architecture\": \"vit_x\", \"pretrained_cfg\": {\"crop_pct\": \"0.9\"}}",
         "\"pretrained_cfg.crop_pct\"", "\"0.9\""},
        {"{\"architecture\": \"vit_x\", \"pretrained_cfg\": {\"interpolation\": 3}}",
         "\"pretrained_cfg.interpolation\"", "3"},
        {"{\"architecture\": \"vit_x\", \"pretrained_cfg\": \"x\"}", "\"pretrained_cfg\"",
         "\"x\""},
    };
    copy_fixture(TIMM);
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        write_text("config.json", CASES[i].config);
        expect_refused(BASE_E_FORMAT, "config.json", CASES[i].needle1, CASES[i].needle2);
    }
}

Test(validate, timm_values_that_contradict_the_tensors_are_refused) {
    copy_fixture(TIMM);
    write_text("config.json", "{\"architecture\": \"vit_x\", \"model_args\": {\"mlp_ratio\": 2}}");
    expect_refused(BASE_E_SHAPE, "MLP size = 256", "512");
    write_text("config.json", "{\"architecture\": \"vit_x\", \"num_classes\": 1000}");
    expect_refused(BASE_E_SHAPE, "num_classes = 1000", "10");
    write_text("config.json", "{\"architecture\": \"vit_x\", \"model_args\": {\"mlp_ratio\": 4, "
                              "\"num_heads\": 2}, \"num_classes\": 10, \"pretrained_cfg\": "
                              "{\"input_size\": [3, 32, 32], \"crop_pct\": 1.0}}");
    vit_model_free(expect_loads());
}

Test(validate, invalid_preprocessor_values_name_key_and_value) {
    static const bad_value CASES[] = {
        {"size", "\"224\"", "\"224\""},
        {"size", "32.5", "32.5"},
        {"size", "{\"height\": 32}", "{\"height\":32}"},
        {"crop_size", "0", "0"},
        {"do_resize", "1", "1"},
        {"do_center_crop", "\"yes\"", "\"yes\""},
        {"do_normalize", "0", "0"},
        {"rescale_factor", "\"0.0039\"", "\"0.0039\""},
        {"resample", "\"bicubic\"", "\"bicubic\""},
        {"image_mean", "\"0.5\"", "\"0.5\""},
        {"image_std", "[0.5, \"x\", 0.5]", "\"x\""},
        {"image_processor_type", "5", "5"},
    };
    copy_fixture(HF);
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        char text[256], key[80];
        snprintf(text, sizeof text, "{\"size\": 32, \"%s\": %s}", CASES[i].key, CASES[i].value);
        if (strcmp(CASES[i].key, "size") == 0)
            snprintf(text, sizeof text, "{\"size\": %s}", CASES[i].value);
        write_text("preprocessor_config.json", text);
        snprintf(key, sizeof key, "\"%s\"", CASES[i].key);
        expect_refused(BASE_E_FORMAT, "preprocessor_config.json", key, CASES[i].shown);
    }
}

/* The real checkpoints' configs (int image_size, size as an int, timm
 * pretrained_cfg) are valid and still load. */
Test(validate, real_configs_still_load) {
    const char *models[] = {VITC_SOURCE_DIR "/../shared/models/deit-tiny-patch16-224",
                            VITC_SOURCE_DIR "/../shared/models/vit_tiny_patch16_224.augreg_in21k_ft_in1k"};
    if (access(models[0], R_OK) != 0) cr_skip_test("../shared is absent: no real checkpoints");
    for (int i = 0; i < 2; i++) {
        vit_model *model;
        base_error err;
        cr_assert_eq(vit_model_load(models[i], NULL, &model, &err), BASE_OK, "%s", err.message);
        cr_expect_eq(vit_model_config(model)->num_heads, 3);
        cr_expect_eq(vit_model_num_labels(model), 1000);
        vit_model_free(model);
    }
}

/* --------------------------------------------------- 4. id2label count */

Test(validate, id2label_with_too_few_labels_is_refused) {
    copy_fixture(HF);
    write_hf_config_with("id2label", "{\"0\": \"a\", \"1\": \"b\"}");
    expect_refused(BASE_E_SHAPE, "config.json", "2 labels", "5 classes");
}

Test(validate, id2label_with_too_many_labels_is_refused) {
    copy_fixture(HF);
    char text[4096] = "{";
    for (int i = 0; i < 7; i++) {
        char entry[32];
        snprintf(entry, sizeof entry, "%s\"%d\": \"c%d\"", i ? ", " : "", i, i);
        strcat(text, entry);
    }
    strcat(text, "}");
    write_hf_config_with("id2label", text);
    expect_refused(BASE_E_SHAPE, "config.json", "7 labels", "5 classes");
}

Test(validate, id2label_that_is_not_an_object_is_refused) {
    copy_fixture(HF);
    write_hf_config_with("id2label", "[\"a\", \"b\", \"c\", \"d\", \"e\"]");
    expect_refused(BASE_E_FORMAT, "config.json", "\"id2label\"", "[\"a\"");
}

/* transformers writes id2label {LABEL_0, LABEL_1} into every config: a
 * headless model has no classes for it to contradict. */
Test(validate, headless_model_ignores_id2label) {
    copy_fixture(TIMM_NOHEAD);
    write_text("config.json", "{\"id2label\": {\"0\": \"LABEL_0\", \"1\": \"LABEL_1\"}}");
    vit_model *model = expect_loads();
    cr_expect_eq(vit_model_num_labels(model), 0);
    vit_model_free(model);
}

/* --labels FILE replaces id2label, so a bad one can be worked around. */
Test(validate, labels_file_replaces_a_bad_id2label) {
    copy_fixture(HF);
    write_hf_config_with("id2label", "{\"0\": \"a\"}");
    write_text("labels.txt", "v\nw\nx\ny\nz\n");
    char labels[256];
    snprintf(labels, sizeof labels, "%s/labels.txt", dir);
    vit_load_options options = {.labels_path = labels};
    vit_model *model;
    base_error err;
    cr_assert_eq(vit_model_load(dir, &options, &model, &err), BASE_OK, "%s", err.message);
    cr_expect_str_eq(vit_model_label(model, 4), "z");
    vit_model_free(model);
}

/* ------------------------------------------------------- 18. messages */

Test(validate, fifo_as_the_model_is_not_a_regular_file, .timeout = 20) {
    char fifo[256];
    snprintf(fifo, sizeof fifo, "%s/model.safetensors", dir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    vit_model *model;
    base_error err;
    cr_expect_eq(vit_model_load(fifo, NULL, &model, &err), BASE_E_IO);
    cr_expect(strstr(err.message, fifo) && strstr(err.message, "not a regular file") &&
                  strstr(err.message, "FIFO"),
              "%s", err.message);
    /* The directory holding it: the same words, not "no model.safetensors". */
    cr_expect_eq(vit_model_load(dir, NULL, &model, &err), BASE_E_IO);
    cr_expect(strstr(err.message, "not a regular file"), "%s", err.message);
    char args[512];
    snprintf(args, sizeof args, "classify -m %s %s", fifo, PHOTO);
    run_result *r = run(args);
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "not a regular file") && !strstr(r->err, "no such"), "stderr: %s",
              r->err);
}

/* A config that is there but is not a file must be reported, not skipped
 * as absent, and must not hang the load. */
Test(validate, config_fifo_is_an_error, .timeout = 20) {
    copy_fixture(HF);
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    cr_assert_eq(mkfifo(path, 0600), 0);
    expect_refused(BASE_E_IO, "config.json", "not a regular file", "FIFO");
}

Test(validate, preprocessor_config_symlink_to_dev_zero_is_an_error, .timeout = 20) {
    copy_fixture(HF);
    char path[256];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    cr_assert_eq(symlink("/dev/zero", path), 0);
    expect_refused(BASE_E_IO, "preprocessor_config.json", "not a regular file", "character device");
}

Test(validate, config_directory_is_an_error) {
    copy_fixture(HF);
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    cr_assert_eq(mkdir(path, 0700), 0);
    expect_refused(BASE_E_IO, "config.json", "not a regular file", "directory");
}

Test(validate, broken_config_symlink_is_an_error) {
    copy_fixture(HF);
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    cr_assert_eq(symlink("/nonexistent/config.json", path), 0);
    expect_refused(BASE_E_IO, "config.json", "broken symbolic link");
}

/* Checkpoints are opened directly too (vit train --resume, --init). */
Test(validate, weights_open_on_a_fifo_does_not_block, .timeout = 20) {
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    weights_file *f = NULL;
    base_error err;
    cr_expect_eq(weights_open(path, &f, &err), BASE_E_IO);
    cr_expect(strstr(err.message, "not a regular file"), "%s", err.message);
    cr_expect_null(f);
}

/* Reading a FIFO nobody writes to ends at once (empty), without hanging. */
Test(validate, reading_a_fifo_without_writer_does_not_block, .timeout = 20) {
    char path[256];
    snprintf(path, sizeof path, "%s/labels.fifo", dir);
    cr_assert_eq(mkfifo(path, 0600), 0);
    char *text = NULL;
    base_error err;
    cr_expect_eq(base_read_text_file(path, 1024, &text, NULL, &err), BASE_OK, "%s", err.message);
    cr_expect(text && text[0] == '\0');
    free(text);
}

/* One JSON error style for both configs. */
Test(validate, malformed_config_json_says_where) {
    copy_fixture(HF);
    write_text("config.json", "{\"hidden_size\": 48,");
    expect_refused(BASE_E_FORMAT, "config.json", "malformed JSON near byte");
    write_text("config.json", "[1, 2]");
    expect_refused(BASE_E_FORMAT, "config.json", "not a JSON object");
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    write_text("preprocessor_config.json", "[1, 2]");
    expect_refused(BASE_E_FORMAT, "preprocessor_config.json", "not a JSON object");
    write_text("preprocessor_config.json", "{\"size\": 32,");
    expect_refused(BASE_E_FORMAT, "preprocessor_config.json", "malformed JSON near byte");
}

Test(validate, labels_file_byte_order_mark_is_dropped) {
    copy_fixture(HF);
    write_text("labels.txt", "\xEF\xBB\xBFzero\none\ntwo\nthree\nfour\n");
    char labels[256];
    snprintf(labels, sizeof labels, "%s/labels.txt", dir);
    vit_load_options options = {.labels_path = labels};
    vit_model *model;
    base_error err;
    cr_assert_eq(vit_model_load(dir, &options, &model, &err), BASE_OK, "%s", err.message);
    cr_expect_str_eq(vit_model_label(model, 0), "zero");
    vit_model_free(model);
}

/* Labels read from a config carried in __metadata__ (vit quantize, vit
 * train) say so. */
Test(validate, labels_source_names_the_metadata_config) {
    char config[65536], path[256];
    slurp(HF "/config.json", config, sizeof config);
    weights_file *good;
    base_error err;
    cr_assert(weights_open(HF "/model.safetensors", &good, &err) == BASE_OK, "%s", err.message);
    const size_t n = weights_count(good);
    weights_tensor *tensors = calloc(n, sizeof *tensors);
    for (size_t i = 0; i < n; i++) tensors[i] = *weights_at(good, i);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    const char *keys[] = {"config"}, *values[] = {config};
    cr_assert(weights_write(path, tensors, n, keys, values, 1, &err) == BASE_OK, "%s", err.message);
    free(tensors);
    weights_close(good);
    vit_model *model = expect_loads();
    cr_expect_eq(vit_model_num_labels(model), 5);
    cr_expect(strstr(vit_model_labels_source(model), "__metadata__"), "%s",
              vit_model_labels_source(model));
    vit_model_free(model);
    char args[512];
    snprintf(args, sizeof args, "info -m %s", path);
    run_result *r = run(args);
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
    cr_expect(strstr(r->out, "labels        5 (safetensors __metadata__ config id2label)"),
              "stdout: %s", r->out);
}

/* dir/q/model.safetensors: a bf16 copy of dir's model (HF fixture with a
 * preprocessor_config.json), carrying both texts in __metadata__, as vit
 * quantize writes it. */
static void make_carrying_copy(void) {
    copy_fixture(HF);
    write_text("preprocessor_config.json",
               "{\"do_resize\": true, \"size\": {\"height\": 32, \"width\": 32}, \"resample\": 2, "
               "\"do_normalize\": true, \"image_mean\": [0.5, 0.5, 0.5], "
               "\"image_std\": [0.5, 0.5, 0.5]}");
    vit_model *model = expect_loads();
    base_error err;
    char path[256];
    snprintf(path, sizeof path, "%s/q", dir);
    cr_assert(mkdir(path, 0777) == 0);
    snprintf(path, sizeof path, "%s/q/model.safetensors", dir);
    cr_assert(vit_model_quantize(model, WEIGHTS_QUANT_BF16, 1, path, &err) == BASE_OK, "%s", err.message);
    vit_model_free(model);
}

/* Loads dir/q: 1 when it loads, else 0 with the message in err. */
static int copy_loads(base_error *err) {
    char path[256];
    snprintf(path, sizeof path, "%s/q", dir);
    vit_model *model = NULL;
    memset(err, 0, sizeof *err);
    const base_status status = vit_model_load(path, NULL, &model, err);
    vit_model_free(model);
    return status == BASE_OK;
}

/* Issue 24: a config beside a file that carries its own replaced it without
 * a word (ViT-tiny's config.json beside an int8 DeiT-tiny: eps 1e-12 ->
 * 1e-6, "lemon" 52.5% -> 38.3%). Files beside that repeat the carried
 * configuration are fine; any that changes what the model computes, its
 * preprocessing or its labels is refused, naming both and what differs. */
Test(validate, config_beside_a_file_that_carries_one_must_agree) {
    make_carrying_copy();
    base_error err;
    cr_expect(copy_loads(&err), "alone: %s", err.message);
    shell("cp %s/config.json %s/preprocessor_config.json %s/q/", dir, dir, dir);
    cr_expect(copy_loads(&err), "beside it, the same files: %s", err.message);
    write_hf_config_with("architectures", "[\"ViTModel\"]"); /* not read by the forward pass */
    shell("cp %s/config.json %s/q/", dir, dir);
    cr_expect(copy_loads(&err), "a config differing only in unused keys: %s", err.message);

    const char *const changed[][3] = {
        {"layer_norm_eps", "1e-6", "layer_norm_eps 1e-12 vs 1e-06"},
        {"id2label", "{\"0\": \"a\", \"1\": \"b\", \"2\": \"c\", \"3\": \"d\", \"4\": \"e\"}",
         "label 0 'class zero' vs 'a'"},
        {"num_attention_heads", "1", "num_heads 3 vs 1"},
    };
    for (int i = 0; i < 3; i++) {
        write_hf_config_with(changed[i][0], changed[i][1]);
        shell("cp %s/config.json %s/q/", dir, dir);
        cr_expect(!copy_loads(&err), "config.json beside with %s %s loaded", changed[i][0],
                  changed[i][1]);
        cr_expect(strstr(err.message, "q/model.safetensors") && strstr(err.message, "q/config.json") &&
                      strstr(err.message, changed[i][2]) && !strchr(err.message, '\n'),
                  "%s", err.message);
    }
    write_hf_config_with("architectures", NULL);
    shell("cp %s/config.json %s/q/ && sed -i 's/0.5, 0.5, 0.5], \"image_std/0.4, 0.5, 0.5], "
          "\"image_std/' %s/q/preprocessor_config.json", dir, dir, dir);
    cr_expect(!copy_loads(&err), "a preprocessor_config.json with another mean loaded");
    cr_expect(strstr(err.message, "q/preprocessor_config.json") && strstr(err.message, "mean 0.5,0.5,0.5 "
                                                                                       "vs 0.4,0.5,0.5"),
              "%s", err.message);
    /* Without the preprocessor file beside, the carried recipe is used:
     * the config beside does not drop it. */
    shell("rm %s/q/preprocessor_config.json", dir);
    cr_expect(copy_loads(&err), "config.json beside, no preprocessor_config.json: %s", err.message);
}
