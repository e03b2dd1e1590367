/* A checkpoint that does not fit must be refused at load time with one line
 * naming the file and the problem: never a crash, never a silent guess.
 * Each case breaks one valid fixture (tests/fixtures/parity/hf_vit_d48_h3)
 * in one way. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vit.h"

#define GOOD VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3"

static char dir[64];

static void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/vitc-model-XXXXXX");
    cr_assert(mkdtemp(dir));
}

static void remove_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert(system(cmd) == 0);
}

TestSuite(model, .init = make_dir, .fini = remove_dir);

static void write_text(const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    cr_assert(fp);
    fputs(text, fp);
    fclose(fp);
}

static char *read_good_config(void) {
    FILE *fp = fopen(GOOD "/config.json", "r");
    cr_assert(fp);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    text[n] = '\0';
    fclose(fp);
    return text;
}

/* Rewrites the good checkpoint into dir, letting edit change, drop (return 0)
 * or keep (return 1) each tensor. */
typedef int (*tensor_edit)(weights_tensor *t);

static void write_model(tensor_edit edit) {
    weights_file *good;
    base_error err;
    cr_assert(weights_open(GOOD "/model.safetensors", &good, &err) == BASE_OK, "%s", err.message);
    weights_tensor *kept = calloc(weights_count(good), sizeof *kept);
    size_t n = 0;
    for (size_t i = 0; i < weights_count(good); i++) {
        kept[n] = *weights_at(good, i);
        if (!edit || edit(&kept[n])) n++;
    }
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    cr_assert(weights_write(path, kept, n, NULL, NULL, 0, &err) == BASE_OK, "%s", err.message);
    free(kept);
    weights_close(good);
}

/* Loads dir and expects failure with code and every needle in the message. */
static void expect_refused(base_status code, const char *needle1, const char *needle2) {
    vit_model *model = (vit_model *)1;
    base_error err = {0};
    base_status status = vit_model_load(dir, NULL, &model, &err);
    cr_assert_eq(status, code, "expected status %d, got %d: %s", code, status, err.message);
    cr_assert_null(model);
    cr_assert(strchr(err.message, '\n') == NULL, "message is not one line: %s", err.message);
    cr_assert(strstr(err.message, needle1), "message lacks '%s': %s", needle1, err.message);
    if (needle2) cr_assert(strstr(err.message, needle2), "message lacks '%s': %s", needle2, err.message);
}

static int drop_fc1_of_layer1(weights_tensor *t) {
    return strcmp(t->name, "vit.encoder.layer.1.intermediate.dense.weight") != 0;
}
static int transpose_proj(weights_tensor *t) {
    if (strcmp(t->name, "vit.encoder.layer.0.attention.output.dense.weight") == 0) {
        /* Same bytes, claimed as [D/2, 2D]: a shape that does not fit. */
        t->shape[0] /= 2;
        t->shape[1] *= 2;
    }
    return 1;
}
static int rename_everything(weights_tensor *t) {
    static char names[256][64];
    static int next;
    snprintf(names[next % 256], sizeof names[0], "unrelated.%d", next);
    t->name = names[next++ % 256];
    return 1;
}
static int drop_head_bias(weights_tensor *t) { return strcmp(t->name, "classifier.bias") != 0; }

Test(model, good_copy_loads) {
    write_model(NULL);
    write_text("config.json", read_good_config());
    vit_model *model;
    base_error err;
    cr_assert(vit_model_load(dir, NULL, &model, &err) == BASE_OK, "%s", err.message);
    cr_assert_eq(vit_model_config(model)->num_heads, 3);
    cr_assert_str_eq(vit_model_label(model, 4), "class four");
    vit_model_free(model);
}

Test(model, missing_tensor) {
    write_model(drop_fc1_of_layer1);
    write_text("config.json", read_good_config());
    expect_refused(BASE_E_FORMAT, "model.safetensors", "vit.encoder.layer.1.intermediate.dense.weight");
}

Test(model, missing_head_bias) {
    write_model(drop_head_bias);
    write_text("config.json", read_good_config());
    expect_refused(BASE_E_FORMAT, "model.safetensors", "classifier.bias");
}

Test(model, wrong_shape) {
    write_model(transpose_proj);
    write_text("config.json", read_good_config());
    expect_refused(BASE_E_SHAPE, "vit.encoder.layer.0.attention.output.dense.weight", "[24, 96]");
}

Test(model, not_a_vit) {
    write_model(rename_everything);
    expect_refused(BASE_E_UNSUPPORTED, "model.safetensors", "not a ViT");
}

Test(model, config_contradicts_tensors) {
    write_model(NULL);
    char *config = read_good_config();
    char *hidden = strstr(config, "\"hidden_size\": 48");
    cr_assert(hidden, "fixture config changed");
    memcpy(hidden, "\"hidden_size\": 64", 17);
    write_text("config.json", config);
    expect_refused(BASE_E_SHAPE, "hidden size = 64", "48");
}

Test(model, heads_do_not_divide_hidden) {
    write_model(NULL);
    char *config = read_good_config();
    char *heads = strstr(config, "\"num_attention_heads\": 3");
    cr_assert(heads, "fixture config changed");
    heads[strlen("\"num_attention_heads\": ")] = '5';
    write_text("config.json", config);
    expect_refused(BASE_E_SHAPE, "5 heads", "48");
}

Test(model, config_not_json) {
    write_model(NULL);
    write_text("config.json", "{\"hidden_size\": 48,");
    expect_refused(BASE_E_FORMAT, "config.json", "JSON");
}

Test(model, truncated_weights) {
    write_model(NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *fp = fopen(path, "r+");
    cr_assert(fp);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fclose(fp);
    cr_assert(truncate(path, size / 2) == 0);
    expect_refused(BASE_E_FORMAT, "model.safetensors", NULL);
}

Test(model, missing_directory) {
    remove_dir();
    expect_refused(BASE_E_IO, dir, NULL);
    cr_assert(mkdir(dir, 0700) == 0);
}

Test(model, labels_file_with_wrong_count) {
    write_model(NULL);
    write_text("config.json", read_good_config());
    write_text("labels.txt", "a\nb\nc\n");
    char labels[256];
    snprintf(labels, sizeof labels, "%s/labels.txt", dir);
    vit_load_options options = {.labels_path = labels};
    vit_model *model;
    base_error err;
    cr_assert_eq(vit_model_load(dir, &options, &model, &err), BASE_E_SHAPE);
    cr_assert(strstr(err.message, "3 labels for a model with 5 classes"), "%s", err.message);
}

Test(model, labels_file_overrides) {
    write_model(NULL);
    write_text("config.json", read_good_config());
    write_text("labels.txt", "zero\none\ntwo\nthree\nfour\n");
    char labels[256];
    snprintf(labels, sizeof labels, "%s/labels.txt", dir);
    vit_load_options options = {.labels_path = labels};
    vit_model *model;
    base_error err;
    cr_assert(vit_model_load(dir, &options, &model, &err) == BASE_OK, "%s", err.message);
    cr_assert_str_eq(vit_model_label(model, 3), "three");
    vit_model_free(model);
}
