/* fuzz_safetensors — the safetensors header and tensor table, then the model
 * loader on top of it (layout detection, hyper-parameters from shapes and
 * __metadata__, every tensor's shape against the architecture) and, for a
 * small model the loader accepts, one forward pass: whatever the loader lets
 * through must be safe to run. Input: a whole .safetensors file.
 * NaN and Inf weights included (corpus/safetensors/regress-forward-nan-expf:
 * NaN once reached a float-to-int conversion in fast_expf). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vit.h"

/* Small caps keep every input fast; the defaults are tested elsewhere. */
static const base_limits LIMITS = {.max_pixels = 1 << 20,
                                  .max_header_bytes = 1 << 20,
                                  .max_tensors = 4096,
                                  .max_json_bytes = 1 << 20,
                                  .max_json_depth = 64};

static void exercise_file(const weights_file *f) {
    base_error err;
    for (size_t i = 0; i < weights_count(f); i++) {
        const weights_tensor *t = weights_at(f, i);
        if (weights_find(f, t->name) == NULL) abort(); /* every listed name is findable */
        if (t->dtype != WEIGHTS_F32 && t->dtype != WEIGHTS_F16 && t->dtype != WEIGHTS_BF16) continue;
        if (t->numel > 65536) continue;
        float *values = malloc((t->numel ? t->numel : 1) * sizeof *values);
        if (values && weights_to_f32(f, t, values, &err) != BASE_OK) abort();
        free(values);
    }
    (void)weights_metadata(f, "config");
    const weights_layout layout = weights_layout_detect(f);
    const int layers = weights_layout_num_layers(f, layout);
    for (int role = 0; role < WEIGHTS_ROLE_COUNT; role++)
        for (int layer = 0; layer < (layers < 3 ? layers : 3) || layer == 0; layer++) {
            weights_ref ref;
            (void)weights_layout_find(f, layout, (weights_role)role, layer, &ref, &err);
        }
}

static void run_model(const vit_model *model) {
    const vit_config *c = vit_model_config(model);
    /* Only small models: the point is memory safety, not speed. */
    if (c->image_size > 64 || c->hidden_size > 64 || c->num_layers > 4 || c->mlp_size > 256)
        return;
    vit_context *ctx;
    base_error err;
    if (vit_context_create(model, 1, 0, 0, &ctx, &err) != BASE_OK) return;
    const size_t in = (size_t)3 * c->image_size * c->image_size;
    float *image = calloc(in, sizeof *image);
    float *out = calloc((size_t)vit_model_output_size(model), sizeof *out);
    if (image && out) {
        for (size_t i = 0; i < in; i++) image[i] = (float)(i % 7) * 0.25f - 0.75f;
        (void)vit_forward(ctx, image, 1, out, &err);
    }
    free(image);
    free(out);
    vit_context_free(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    weights_file *f;
    base_error err;
    if (weights_open_memory(data, size, "fuzz.safetensors", &LIMITS, &f, &err) == BASE_OK) {
        exercise_file(f);
        weights_close(f);
    }
    vit_model *model;
    const vit_load_options options = {.limits = &LIMITS};
    if (vit_model_load_memory(data, size, "fuzz.safetensors", NULL, NULL, &options, &model,
                              &err) == BASE_OK) {
        run_model(model);
        vit_model_free(model);
    }
    return 0;
}
