/* settings_diff.c — what two loads of one checkpoint settled differently:
 * the hyper-parameters, the preprocessing recipe and the labels. vit/model.c
 * uses it to refuse a config beside a file that carries its own and says
 * otherwise (a config there once replaced the embedded one without a word:
 * eps 1e-12 became 1e-6, the mean and std changed, a top class fell from
 * 52.5% to 38.3%). */
#include "vit_internal.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef struct diff_list {
    char *out;
    size_t size, used;
    int count;
} diff_list;

static void add(diff_list *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(diff_list *d, const char *fmt, ...) {
    d->count++;
    if (d->used >= d->size) return;
    d->used += (size_t)snprintf(d->out + d->used, d->size - d->used, "%s", d->count > 1 ? ", " : "");
    if (d->used >= d->size) return;
    va_list ap;
    va_start(ap, fmt);
    d->used += (size_t)vsnprintf(d->out + d->used, d->size - d->used, fmt, ap);
    va_end(ap);
}

#define INT_FIELD(type, field, name) {name, offsetof(type, field)}

/* The integer settings, by the names messages give them. Most come from
 * the tensors and cannot differ; they are compared all the same, so that
 * nothing a config can move escapes the comparison. */
static const struct { const char *name; size_t offset; } CONFIG_INTS[] = {
    INT_FIELD(vit_config, hidden_size, "hidden_size"),
    INT_FIELD(vit_config, num_layers, "num_layers"),
    INT_FIELD(vit_config, num_heads, "num_heads"),
    INT_FIELD(vit_config, mlp_size, "mlp_size"),
    INT_FIELD(vit_config, patch_size, "patch_size"),
    INT_FIELD(vit_config, image_size, "image_size"),
    INT_FIELD(vit_config, num_channels, "num_channels"),
    INT_FIELD(vit_config, num_classes, "num_classes"),
    INT_FIELD(vit_config, num_prefix_tokens, "prefix tokens"),
    INT_FIELD(vit_config, pos_embed_antialias, "position-embedding antialiasing"),
    INT_FIELD(vit_config, no_class_token, "no class token"),
    INT_FIELD(vit_config, distilled, "distillation token"),
    INT_FIELD(vit_config, num_reg_tokens, "register tokens"),
    INT_FIELD(vit_config, pos_embed_grid, "position-embedding grid"),
    INT_FIELD(vit_config, pos_embed_prefix, "position-embedding prefix"),
    INT_FIELD(vit_config, no_embed_class, "no_embed_class"),
    INT_FIELD(vit_config, no_final_norm, "no final norm"),
    INT_FIELD(vit_config, fc_norm, "fc_norm"),
    INT_FIELD(vit_config, pre_norm, "pre_norm"),
    INT_FIELD(vit_config, no_qkv_bias, "no qkv bias"),
    INT_FIELD(vit_config, qk_norm, "qk_norm"),
    INT_FIELD(vit_config, layer_scale, "LayerScale"),
};

static const struct { const char *name; size_t offset; } RECIPE_INTS[] = {
    INT_FIELD(data_preprocess, resize_width, "resize width"),
    INT_FIELD(data_preprocess, resize_height, "resize height"),
    INT_FIELD(data_preprocess, resize_shortest, "resize shortest edge"),
    INT_FIELD(data_preprocess, do_center_crop, "do_center_crop"),
    INT_FIELD(data_preprocess, crop_width, "crop width"),
    INT_FIELD(data_preprocess, crop_height, "crop height"),
    INT_FIELD(data_preprocess, do_rescale, "do_rescale"),
    INT_FIELD(data_preprocess, do_normalize, "do_normalize"),
};

static int int_at(const void *base, size_t offset) {
    int v;
    memcpy(&v, (const char *)base + offset, sizeof v);
    return v;
}

static void diff_config(const vit_config *a, const vit_config *b, diff_list *d) {
    for (size_t i = 0; i < sizeof CONFIG_INTS / sizeof *CONFIG_INTS; i++) {
        const int x = int_at(a, CONFIG_INTS[i].offset), y = int_at(b, CONFIG_INTS[i].offset);
        if (x != y) add(d, "%s %d vs %d", CONFIG_INTS[i].name, x, y);
    }
    if (a->layer_norm_eps != b->layer_norm_eps)
        add(d, "layer_norm_eps %g vs %g", (double)a->layer_norm_eps, (double)b->layer_norm_eps);
    if (a->global_pool != b->global_pool)
        add(d, "global_pool %d vs %d", (int)a->global_pool, (int)b->global_pool);
    if (a->act != b->act) add(d, "activation %d vs %d", (int)a->act, (int)b->act);
}

static void diff_triple(const char *name, const float *x, const float *y, diff_list *d) {
    if (x[0] != y[0] || x[1] != y[1] || x[2] != y[2])
        add(d, "%s %g,%g,%g vs %g,%g,%g", name, (double)x[0], (double)x[1], (double)x[2],
            (double)y[0], (double)y[1], (double)y[2]);
}

static void diff_recipe(const data_preprocess *a, const data_preprocess *b, diff_list *d) {
    if (a->resize_mode != b->resize_mode)
        add(d, "resize mode %d vs %d", (int)a->resize_mode, (int)b->resize_mode);
    for (size_t i = 0; i < sizeof RECIPE_INTS / sizeof *RECIPE_INTS; i++) {
        const int x = int_at(a, RECIPE_INTS[i].offset), y = int_at(b, RECIPE_INTS[i].offset);
        if (x != y) add(d, "%s %d vs %d", RECIPE_INTS[i].name, x, y);
    }
    if (a->resample != b->resample) add(d, "resample %d vs %d", (int)a->resample, (int)b->resample);
    if (a->crop_rounding != b->crop_rounding)
        add(d, "crop rounding %d vs %d", (int)a->crop_rounding, (int)b->crop_rounding);
    if (a->crop_pct != b->crop_pct) add(d, "crop_pct %g vs %g", (double)a->crop_pct, (double)b->crop_pct);
    if (a->rescale_factor != b->rescale_factor)
        add(d, "rescale_factor %g vs %g", (double)a->rescale_factor, (double)b->rescale_factor);
    diff_triple("mean", a->mean, b->mean, d);
    diff_triple("std", a->std, b->std, d);
}

static void diff_labels(const vit_model *a, const vit_model *b, diff_list *d) {
    if (a->num_labels != b->num_labels) {
        add(d, "labels %d vs %d", a->num_labels, b->num_labels);
        return;
    }
    for (int i = 0; i < a->num_labels; i++) {
        const char *x = a->labels[i] ? a->labels[i] : "", *y = b->labels[i] ? b->labels[i] : "";
        if (strcmp(x, y) != 0) {
            add(d, "label %d '%.40s' vs '%.40s'", i, x, y);
            return; /* one shows it; a whole list would drown the rest */
        }
    }
}

int vit_model_settings_diff(const vit_model *a, const vit_model *b, char *out, size_t size) {
    diff_list d = {out, size, 0, 0};
    if (size) out[0] = '\0';
    diff_config(&a->config, &b->config, &d);
    diff_recipe(&a->preprocess, &b->preprocess, &d);
    diff_labels(a, b, &d);
    return d.count;
}
