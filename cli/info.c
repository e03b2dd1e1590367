/* vit info: what a checkpoint is and how its inputs will be prepared. */
#include <stdlib.h>

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

int cli_info(int argc, char **argv) {
    cli_args args;
    int parsed = cli_parse("info", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0 || args.num_positional > 0) {
        if (parsed == 0)
            fprintf(stderr, "vit info: unexpected argument '%s' (the model goes after -m)\n",
                    args.positional[0]);
        free(args.positional);
        return parsed > 0 ? CLI_EXIT_OK : CLI_EXIT_FATAL;
    }
    vit_limits limits;
    vit_model *model = NULL;
    if (cli_limits("info", &args.values[OPT_LIMITS], CLI_NUM_MODEL_LIMIT_OPTIONS, &limits) == 0)
        model = cli_load_model_limited("info", args.values[OPT_MODEL], args.values[OPT_LABELS],
                                       NULL, &limits, 0);
    free(args.positional);
    if (!model) return CLI_EXIT_FATAL;
    const vit_config *c = vit_model_config(model);
    const int grid = c->image_size / c->patch_size;
    char preprocess[256];
    data_preprocess_describe(vit_model_preprocess(model), preprocess, sizeof preprocess);
    /* Said, so that no one takes the default for the model they meant. */
    printf("file          %s%s\n", vit_model_weights_path(model),
           args.values[OPT_MODEL] ? "" : " (vitc's default model: no -m given)");
    printf("layout        %s\n", weights_layout_name(vit_model_layout(model)));
    printf("config        %s\n", vit_model_config_source(model));
    printf("architecture  %s, hidden %d, %d layers, %d heads, MLP %d\n",
           c->num_prefix_tokens == 2 ? "DeiT (distilled)" : "ViT", c->hidden_size, c->num_layers,
           c->num_heads, c->mlp_size);
    printf("input         %dx%d, patch %d, %d tokens (%d prefix + %dx%d patches), %d channels\n",
           c->image_size, c->image_size, c->patch_size, c->num_prefix_tokens + grid * grid,
           c->num_prefix_tokens, grid, grid, c->num_channels);
    printf("layer norm    eps %g\n", (double)c->layer_norm_eps);
    printf("other sizes   position embeddings resampled %s\n",
           c->pos_embed_antialias ? "bicubic with antialiasing (timm >= 0.9)"
                                  : "bicubic (transformers)");
    if (c->num_classes > 0)
        printf("head          %d classes%s\n", c->num_classes,
               c->num_prefix_tokens == 2 ? " (class and distillation heads averaged)" : "");
    else
        printf("head          none: outputs the %d-d class-token features\n", c->hidden_size);
    printf("parameters    %.2f M (%s)\n", (double)vit_model_param_count(model) / 1e6,
           vit_model_dtypes(model));
    if (vit_model_int8_kernels(model))
        printf("int8 layers   run in int8 on the %s kernels (VITC_ISA=generic|avx2|avx512vnni forces a path)\n",
               vit_model_int8_kernels(model));
    printf("labels        %d (%s)\n", vit_model_num_labels(model), vit_model_labels_source(model));
    printf("preprocess    %s\n", preprocess);
    vit_model_free(model);
    return CLI_EXIT_OK;
}
