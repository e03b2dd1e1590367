/* vit info: what a checkpoint is and how its inputs will be prepared. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "cli.h"

enum { OPT_MODEL, OPT_REVISION, OPT_LABELS, OPT_LIMITS, NUM_OPTS = OPT_LIMITS + CLI_NUM_MODEL_LIMIT_OPTIONS };

static const cli_option OPTIONS[NUM_OPTS] = {
    [OPT_MODEL] = {"model", 'm', 1, "MODEL", CLI_MODEL_HELP},
    [OPT_REVISION] = CLI_REVISION_OPTION,
    [OPT_LABELS] = {"labels", 0, 1, "FILE", "class labels, one per line"},
    [OPT_LIMITS] = CLI_MODEL_LIMIT_OPTIONS,
};

static const char USAGE[] =
    "usage: vit info [-m MODEL]\n"
    "\n"
    "Describes a checkpoint: layout, architecture, parameters, labels and\n"
    "preprocessing. Without -m, the model vitc ships as its default.";

void cli_info_describe(const vit_model *model, int is_default, cli_info_lines *info) {
    vit_model_describe(model, is_default, info);
}

cJSON *cli_info_json(const vit_model *model, int is_default) {
    cli_info_lines info;
    cli_info_describe(model, is_default, &info);
    cJSON *obj = cJSON_CreateObject();
    const vit_config *c = vit_model_config(model);
    int ok = obj != NULL;
    /* The lines of vit info, keys with '_' for ' ', then the numbers. */
    for (int i = 0; ok && i < info.count; i++) {
        char key[32];
        snprintf(key, sizeof key, "%s", info.lines[i].key);
        for (char *p = key; *p; p++)
            if (*p == ' ') *p = '_';
        char *text = cli_json_text(info.lines[i].value);
        ok = text && cJSON_AddStringToObject(obj, key, text);
        free(text);
    }
    ok = ok && cJSON_AddNumberToObject(obj, "num_classes", c->num_classes) &&
         cJSON_AddNumberToObject(obj, "image_size", c->image_size) &&
         cJSON_AddNumberToObject(obj, "patch_size", c->patch_size) &&
         cJSON_AddNumberToObject(obj, "hidden_size", c->hidden_size) &&
         cJSON_AddNumberToObject(obj, "num_layers", c->num_layers) &&
         cJSON_AddNumberToObject(obj, "num_heads", c->num_heads) &&
         cJSON_AddNumberToObject(obj, "num_parameters", (double)vit_model_param_count(model)) &&
         cJSON_AddNumberToObject(obj, "num_labels", vit_model_num_labels(model)) &&
         cJSON_AddNumberToObject(obj, "feature_size", vit_config_pooled_size(c));
    if (!ok) {
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}

int cli_info(int argc, char **argv) {
    cli_args args;
    int parsed = cli_parse("info", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0) return cli_parse_exit(parsed);
    if (args.num_positional > 0) {
        fprintf(stderr, "vit info: unexpected argument '%s' (the model goes after -m)\n",
                args.positional[0]);
        free(args.positional);
        return CLI_EXIT_FATAL;
    }
    base_limits limits;
    int allow_unused;
    vit_model *model = NULL;
    if (cli_limits("info", &args.values[OPT_LIMITS], CLI_NUM_MODEL_LIMIT_OPTIONS, &limits,
                   &allow_unused) == 0)
        model = cli_load_model_limited("info", args.values[OPT_MODEL], args.values[OPT_LABELS],
                                       NULL, &limits, 0, allow_unused);
    free(args.positional);
    if (!model) return CLI_EXIT_FATAL;
    cli_info_lines info;
    cli_info_describe(model, args.values[OPT_MODEL] == NULL, &info);
    for (int i = 0; i < info.count; i++) printf("%-14s%s\n", info.lines[i].key, info.lines[i].value);
    vit_model_free(model);
    return CLI_EXIT_OK;
}
