/* Reduced-precision copies of a checkpoint: BF16 everywhere, or I8 linear
 * layers with a scale per group of 32 weights. The model loader widens BF16
 * to F32 and packs the I8 layers for the int8 kernels (vit/kernels.h);
 * weights_to_f32 dequantises I8 for everything else (training from an
 * int8 file, tools). */
#include "weights.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int is_float(weights_dtype dtype) {
    return dtype == WEIGHTS_F32 || dtype == WEIGHTS_F16 || dtype == WEIGHTS_BF16;
}

/* The encoder's linear-layer matrices: 2-D "*.weight" tensors inside the
 * blocks (timm qkv, proj, fc1, fc2; Hugging Face query, key, value, dense).
 * Embeddings, norms and biases are not 2-D weights in either layout. The
 * classifier head stays float32: quantising it too cost top-1 agreement
 * with float32 on real photos (98.4% instead of 99%+ on the timm ViT-tiny)
 * for 3% of the weights. */
static int is_linear_weight(const weights_tensor *t) {
    const size_t len = strlen(t->name), suffix = strlen(".weight");
    const int in_block = strstr(t->name, "blocks.") || strstr(t->name, "encoder.layer.");
    return in_block && t->ndim == 2 && is_float(t->dtype) && len > suffix &&
           strcmp(t->name + len - suffix, ".weight") == 0;
}

/* float -> bfloat16 bits, rounding to nearest even; NaN stays NaN. */
static uint16_t bf16_from_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Symmetric int8 in groups of `group` weights along each row (the input
 * dimension), each group with its own step max|w| / 127: one weight far
 * larger than its row's others then coarsens only its own group. Per-row
 * steps flipped the top-1 class of 7 of 500 ImageNet photos on the timm
 * ViT-tiny (all near-ties), groups of 32 far fewer. */
static void quantize_groups(const float *w, size_t count, size_t group, int8_t *q, float *scales) {
    for (size_t g = 0; g < count / group; g++) {
        const float *part = w + g * group;
        float max_abs = 0.0f;
        for (size_t c = 0; c < group; c++) max_abs = fmaxf(max_abs, fabsf(part[c]));
        const float scale = max_abs > 0.0f ? max_abs / 127.0f : 1.0f, inv = 1.0f / scale;
        for (size_t c = 0; c < group; c++) {
            const float v = nearbyintf(part[c] * inv);
            q[g * group + c] = (int8_t)(v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v));
        }
        scales[g] = scale;
    }
}

base_status weights_quantize(const weights_file *f, weights_quant to, const char *path,
                            const char *const *meta_keys, const char *const *meta_values,
                            size_t n_meta, base_error *err) {
    const size_t n = weights_count(f);
    for (size_t i = 0; i < n; i++)
        if (weights_at(f, i)->dtype == WEIGHTS_I8 && to != WEIGHTS_QUANT_KEEP)
            return base_error_set(err, BASE_E_ARG, "%s: already quantised (tensor '%s' is I8)",
                                 weights_path(f), weights_at(f, i)->name);
    /* Up to two output tensors per input (matrix + scales), each with its
     * own buffer and, for scales, its own name. */
    weights_tensor *out = calloc(2 * n + 1, sizeof *out);
    void **buffers = calloc(2 * n + 1, sizeof *buffers);
    char **names = calloc(n + 1, sizeof *names);
    size_t n_out = 0, n_buffers = 0;
    base_status status = out && buffers && names ? BASE_OK
                                                : base_error_set(err, BASE_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n && status == BASE_OK; i++) {
        const weights_tensor *t = weights_at(f, i);
        weights_tensor *o = &out[n_out++];
        *o = *t;
        if (!is_float(t->dtype) || t->numel == 0 || to == WEIGHTS_QUANT_KEEP ||
            (to == WEIGHTS_QUANT_F32 && t->dtype == WEIGHTS_F32))
            continue; /* stored as it is */
        float *values = malloc(sizeof(float) * t->numel);
        buffers[n_buffers++] = values;
        if (!values) {
            status = base_error_set(err, BASE_E_NOMEM, "%s: out of memory", weights_path(f));
            break;
        }
        status = weights_to_f32(f, t, values, err);
        if (status != BASE_OK) break;
        if (to == WEIGHTS_QUANT_BF16) {
            uint16_t *half = (uint16_t *)values; /* in place: element i after i */
            for (size_t k = 0; k < t->numel; k++) half[k] = bf16_from_f32(values[k]);
            o->dtype = WEIGHTS_BF16;
            o->data = half;
            o->nbytes = t->numel * sizeof(uint16_t);
        } else if (to == WEIGHTS_QUANT_INT8 && is_linear_weight(t)) {
            const size_t rows = (size_t)t->shape[0], cols = (size_t)t->shape[1];
            const size_t group = cols % WEIGHTS_INT8_GROUP == 0 ? WEIGHTS_INT8_GROUP : cols;
            const size_t groups = cols / group;
            int8_t *q = malloc(t->numel);
            float *scales = malloc(sizeof(float) * rows * groups);
            buffers[n_buffers++] = q;
            buffers[n_buffers++] = scales;
            names[i] = malloc(strlen(t->name) + sizeof WEIGHTS_SCALE_SUFFIX);
            if (!q || !scales || !names[i]) {
                status = base_error_set(err, BASE_E_NOMEM, "%s: out of memory", weights_path(f));
                break;
            }
            quantize_groups(values, t->numel, group, q, scales);
            o->dtype = WEIGHTS_I8;
            o->data = q;
            o->nbytes = t->numel;
            strcpy(names[i], t->name);
            strcat(names[i], WEIGHTS_SCALE_SUFFIX);
            weights_tensor *s = &out[n_out++];
            *s = (weights_tensor){.name = names[i], .dtype = WEIGHTS_F32, .ndim = 2,
                                  .shape = {(int64_t)rows, (int64_t)groups},
                                  .numel = rows * groups,
                                  .nbytes = rows * groups * sizeof(float), .data = scales};
        } else {
            o->dtype = WEIGHTS_F32;
            o->data = values;
            o->nbytes = t->numel * sizeof(float);
        }
    }
    if (status == BASE_OK)
        status = weights_write(path, out, n_out, meta_keys, meta_values, n_meta, err);
    for (size_t i = 0; i < n_buffers; i++) free(buffers[i]);
    for (size_t i = 0; names && i < n; i++) free(names[i]);
    free(buffers);
    free(names);
    free(out);
    return status;
}
