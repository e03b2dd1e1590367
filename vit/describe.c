/* The lines `vit info` prints about a model (vit_model_describe): in the
 * library, so every front end (the CLI, vit serve's GET /info, the Python
 * binding's model.info) describes a model with the same words. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vit.h"

/* Adds one line to info (key, then printf-style value). */
static void add_line(vit_model_description *info, const char *key, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static void add_line(vit_model_description *info, const char *key, const char *format, ...) {
    if (info->count == VIT_DESCRIPTION_MAX_LINES) return;
    info->lines[info->count].key = key;
    va_list ap;
    va_start(ap, format);
    vsnprintf(info->lines[info->count].value, sizeof info->lines[info->count].value, format, ap);
    va_end(ap);
    info->count++;
}

void vit_model_describe(const vit_model *model, int is_default, vit_model_description *info) {
    info->count = 0;
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
    add_line(info, "file", "%s%s", vit_model_weights_path(model),
             is_default ? " (vitc's default model: no -m given)" : "");
    add_line(info, "layout", "%s", weights_layout_name(vit_model_layout(model)));
    add_line(info, "config", "%s", vit_model_config_source(model));
    add_line(info, "architecture", "%s, hidden %d, %d layers, %d heads, MLP %d",
             vit_model_layout(model) == WEIGHTS_LAYOUT_HF_DINOV2 ? "DINOv2"
             : c->distilled                                       ? "DeiT (distilled)"
                                                                  : "ViT",
             c->hidden_size, c->num_layers, c->num_heads, c->mlp_size);
    add_line(info, "switches", "%s", switches[0] ? switches : "none (the original ViT)");
    add_line(info, "input", "%dx%d, patch %d, %d tokens (%s + %dx%d patches), %d channels",
             c->image_size, c->image_size, c->patch_size, c->num_prefix_tokens + grid * grid, prefix,
             grid, grid, c->num_channels);
    if (c->pos_embed_grid != grid)
        add_line(info, "positions", "learned for a %dx%d grid, resampled to %dx%d", c->pos_embed_grid,
                 c->pos_embed_grid, grid, grid);
    add_line(info, "layer norm", "eps %g", (double)c->layer_norm_eps);
    add_line(info, "activation", "%s",
             c->act == VIT_ACT_QUICK_GELU ? "QuickGELU, x * sigmoid(1.702 x)" : "GELU (exact, erf)");
    add_line(info, "other sizes", "position embeddings resampled %s",
             c->pos_embed_antialias ? "bicubic with antialiasing (timm >= 0.9; transformers' "
                                      "Dinov2WithRegisters)"
                                    : "bicubic (transformers)");
    const char *pooled = c->global_pool == VIT_GLOBAL_POOL_AVG       ? "mean of the patch tokens"
                         : c->global_pool == VIT_GLOBAL_POOL_TOKEN_AVG ? "[class token, mean of the patch tokens]"
                                                                       : "class token";
    if (c->num_classes > 0)
        add_line(info, "head", "%d classes on the %s%s%s", c->num_classes, pooled,
                 c->fc_norm ? " (fc_norm)" : "",
                 c->distilled ? " (class and distillation heads averaged)" : "");
    else
        add_line(info, "head", "none: outputs the %d-d features, %s%s", c->hidden_size, pooled,
                 c->fc_norm ? " (fc_norm)" : "");
    add_line(info, "parameters", "%.2f M (%s)", (double)vit_model_param_count(model) / 1e6,
             vit_model_dtypes(model));
    add_line(info, "kernels", "%s (VITC_ISA=%s forces a path; all give the same bits)",
             vit_model_kernels(model), vit_kernels_choices());
    if (vit_model_int8_kernels(model))
        add_line(info, "int8 layers", "run in int8 on the %s kernels", vit_model_int8_kernels(model));
    if (vit_model_bf16_kernels(model))
        add_line(info, "bf16 layers", "bf16 products, fp32 sums, on the %s kernels",
                 vit_model_bf16_kernels(model));
    add_line(info, "weights", "%s%s", vit_model_packing(model),
             strcmp(vit_model_packing(model), "mapped from the file") != 0
                 ? " (vit quantize writes a copy that maps them: docs/quantize.md)"
                 : "");
    add_line(info, "labels", "%d (%s)", vit_model_num_labels(model), vit_model_labels_source(model));
    add_line(info, "preprocess", "%s", preprocess);
}
