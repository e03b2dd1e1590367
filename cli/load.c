/* The model a command names (load.h). */
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

const char *cli_default_model(char *buf, size_t size) {
#ifdef VITC_DEFAULT_MODEL
    if (access(VITC_DEFAULT_MODEL, R_OK) == 0) return VITC_DEFAULT_MODEL;
#endif
    /* A copied or installed tree: weights/ beside the program or one up. */
    char exe[4096];
    const ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return NULL;
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = '\0';
    static const char *const PLACES[] = {"%s/weights/%s", "%s/../weights/%s"};
    for (size_t i = 0; i < sizeof PLACES / sizeof *PLACES; i++) {
        snprintf(buf, size, PLACES[i], exe, CLI_DEFAULT_MODEL_NAME);
        if (access(buf, R_OK) == 0) return buf;
    }
    return NULL;
}

vit_model *cli_load_model(const char *command, const char *model_path, const char *labels_path,
                          const char *pos_resample, int allow_unused) {
    return cli_load_model_limited(command, model_path, labels_path, pos_resample, NULL, 0,
                                  allow_unused);
}

vit_model *cli_load_model_limited(const char *command, const char *model_path,
                                  const char *labels_path, const char *pos_resample,
                                  const base_limits *limits, int input_size, int allow_unused) {
    char shipped[4200];
    if (!model_path && !(model_path = cli_default_model(shipped, sizeof shipped))) {
        fprintf(stderr, "vit %s: no model given (use -m DIR or -m FILE.safetensors), and the "
                        "shipped model weights/%s is not found\n", command, CLI_DEFAULT_MODEL_NAME);
        return NULL;
    }
    char resolved[8192]; /* -m org/name where no option table resolved it (train --init) */
    if (cli_resolve_model(command, model_path, NULL, resolved, sizeof resolved, stderr, &model_path) != 0)
        return NULL;
    /* -t, as cli_set_threads left it for this thread: the library takes
     * thread counts as arguments only. */
    vit_load_options options = {.labels_path = labels_path, .limits = limits, .input_size = input_size,
                                .allow_unused = allow_unused, .threads = omp_get_max_threads()};
    if (!pos_resample || strcmp(pos_resample, "auto") == 0) {
        options.pos_resample = VIT_POS_RESAMPLE_AUTO;
    } else if (strcmp(pos_resample, "bicubic") == 0) {
        options.pos_resample = VIT_POS_RESAMPLE_BICUBIC;
    } else if (strcmp(pos_resample, "bicubic-aa") == 0) {
        options.pos_resample = VIT_POS_RESAMPLE_BICUBIC_AA;
    } else {
        fprintf(stderr, "vit %s: --pos-resample expects auto, bicubic or bicubic-aa, got '%s'\n",
                command, pos_resample);
        return NULL;
    }
    vit_model *model;
    base_error err;
    if (vit_model_load(model_path, &options, &model, &err) != BASE_OK) {
        fprintf(stderr, "vit %s: %s\n", command, err.message);
        return NULL;
    }
    const char *notices = vit_model_notices(model);
    if (notices[0]) fprintf(stderr, "%s", notices);
    return model;
}
