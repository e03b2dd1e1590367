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
    int allow_unused;
    vit_model *model = NULL;
    if (cli_limits("info", &args.values[OPT_LIMITS], CLI_NUM_MODEL_LIMIT_OPTIONS, &limits,
                   &allow_unused) == 0)
        model = cli_load_model_limited("info", args.values[OPT_MODEL], args.values[OPT_LABELS],
                                       NULL, &limits, 0, allow_unused);
    free(args.positional);
    if (!model) return CLI_EXIT_FATAL;
    const vit_config *c = vit_model_config(model);
    const int grid = c->image_size / c->patch_size;
    char switches[512], prefix[160] = "";
    vit_config_describe_switches(c, switches, sizeof switches);
    /* The prefix tokens by kind: class, distillation, registers. */
    snprintf(prefix, sizeof prefix, "%d prefix: %s%s%s", c->num_prefix_tokens,
             c->no_class_token ? "" : "class", c->distilled ? " + distillation" : "",
             c->num_reg_tokens ? (c->no_class_token ? "registers" : " + registers") : "");
    if (c->num_prefix_tokens == 0) snprintf(prefix, sizeof prefix, "no prefix tokens");
    char preprocess[256];
    data_preprocess_describe(vit_model_preprocess(model), preprocess, sizeof preprocess);
    /* Said, so that no one takes the default for the model they meant. */
    printf("file          %s%s\n", vit_model_weights_path(model),
           args.values[OPT_MODEL] ? "" : " (vitc's default model: no -m given)");
    printf("layout        %s\n", weights_layout_name(vit_model_layout(model)));
    printf("config        %s\n", vit_model_config_source(model));
    printf("architecture  %s, hidden %d, %d layers, %d heads, MLP %d\n",
           vit_model_layout(model) == WEIGHTS_LAYOUT_HF_DINOV2 ? "DINOv2"
           : c->distilled                                       ? "DeiT (distilled)"
                                                                : "ViT",
           c->hidden_size, c->num_layers, c->num_heads, c->mlp_size);
    printf("switches      %s\n", switches[0] ? switches : "none (the original ViT)");
    printf("input         %dx%d, patch %d, %d tokens (%s + %dx%d patches), %d channels\n",
           c->image_size, c->image_size, c->patch_size, c->num_prefix_tokens + grid * grid, prefix,
           grid, grid, c->num_channels);
    if (c->pos_embed_grid != grid)
        printf("positions     learned for a %dx%d grid, resampled to %dx%d\n", c->pos_embed_grid,
               c->pos_embed_grid, grid, grid);
    printf("layer norm    eps %g\n", (double)c->layer_norm_eps);
    printf("activation    %s\n", c->act == VIT_ACT_QUICK_GELU ? "QuickGELU, x * sigmoid(1.702 x)"
                                                            : "GELU (exact, erf)");
    printf("other sizes   position embeddings resampled %s\n",
           c->pos_embed_antialias ? "bicubic with antialiasing (timm >= 0.9; transformers' "
                                    "Dinov2WithRegisters)"
                                  : "bicubic (transformers)");
    const char *pooled = c->global_pool == VIT_GLOBAL_POOL_AVG       ? "mean of the patch tokens"
                         : c->global_pool == VIT_GLOBAL_POOL_TOKEN_AVG ? "[class token, mean of the patch tokens]"
                                                                       : "class token";
    if (c->num_classes > 0)
        printf("head          %d classes on the %s%s%s\n", c->num_classes, pooled,
               c->fc_norm ? " (fc_norm)" : "",
               c->distilled ? " (class and distillation heads averaged)" : "");
    else
        printf("head          none: outputs the %d-d features, %s%s\n", c->hidden_size, pooled,
               c->fc_norm ? " (fc_norm)" : "");
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
