/* fuzz_config — config.json (Hugging Face and timm, incl. id2label and
 * timm's pretrained_cfg) and preprocessor_config.json, read the way a model
 * directory is: against a tiny Hugging Face and a tiny timm checkpoint
 * (tests/fuzz/corpus/safetensors/{hf,timm}_tiny.safetensors), plus the
 * recipe readers on their own. Input: one JSON text, tried in every role. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vit.h"

#ifndef VITC_SOURCE_DIR
#define VITC_SOURCE_DIR "."
#endif
#define MODELS VITC_SOURCE_DIR "/tests/fuzz/corpus/safetensors/"

typedef struct blob {
    char *bytes;
    size_t size;
} blob;

static blob hf, timm;

static blob read_all(const char *path) {
    blob b = {0};
    FILE *fp = fopen(path, "rb");
    if (!fp || fseek(fp, 0, SEEK_END) != 0) {
        fprintf(stderr, "fuzz_config: cannot read %s\n", path);
        abort();
    }
    b.size = (size_t)ftell(fp);
    rewind(fp);
    b.bytes = malloc(b.size ? b.size : 1);
    if (!b.bytes || fread(b.bytes, 1, b.size, fp) != b.size) abort();
    fclose(fp);
    return b;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    hf = read_all(MODELS "hf_tiny.safetensors");
    timm = read_all(MODELS "timm_tiny.safetensors");
    return 0;
}

static void load(const blob *weights, const char *config, const char *preprocessor) {
    vit_model *model;
    base_error err;
    if (vit_model_load_memory(weights->bytes, weights->size, "tiny", config, preprocessor, NULL,
                              &model, &err) == BASE_OK) {
        /* What the CLI reads back from a loaded model. */
        char line[256];
        data_preprocess_describe(vit_model_preprocess(model), line, sizeof line);
        for (int i = 0; i < vit_model_num_labels(model); i++) (void)vit_model_label(model, i);
        vit_model_free(model);
    } else if (!memchr(err.message, '\0', sizeof err.message) || strchr(err.message, '\n')) {
        abort(); /* every refusal is one line */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    load(&hf, text, NULL);
    load(&timm, text, NULL);
    load(&hf, NULL, text);
    data_preprocess p;
    base_error err;
    (void)data_preprocess_from_hf_json(text, "preprocessor_config.json", &p, &err);
    (void)data_preprocess_from_timm_json(text, "config.json", &p, &err);
    free(text);
    return 0;
}
