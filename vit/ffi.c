/* The flat C API for foreign-function callers (vit_ffi.h): a vit_model, its
 * context and recipe behind one handle, and the inspection commands' steps
 * (cli/inspect.c) made of the same library calls, so the numbers are the
 * commands' own. */
#include "vit_ffi.h"

#include <cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hub_cache.h"
#include "vit.h"
#include "vit_inspect.h"

#define FFI_BATCH 8 /* images per forward pass: the inspection commands' -b default */
#define KMEANS_MAX_ITER 300  /* vit segment's */
#define OVERLAY_ALPHA 0.55f  /* vit attention's */

struct vit_ffi_model {
    vit_model *model;
    vit_context *ctx;
    data_preprocess pre;
    int batch, size, tokens, prefix, dim, layers, heads, grid, patches;
    float *out; /* batch x vit_model_output_size: what vit_forward writes */
    char *info_json;
};

int vit_ffi_abi_version(void) { return VIT_FFI_ABI_VERSION; }

const char *vit_ffi_default_model(void) {
#ifdef VITC_DEFAULT_MODEL
    return VITC_DEFAULT_MODEL;
#else
    return "";
#endif
}

void vit_ffi_free(void *p) { free(p); }

/* The status, with its message copied for the caller. */
static int report(base_status st, const base_error *err, char *msg, size_t msg_size) {
    if (msg && msg_size) snprintf(msg, msg_size, "%s", st == BASE_OK ? "" : err->message);
    return (int)st;
}

static int fail(base_status st, char *msg, size_t msg_size, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(base_status st, char *msg, size_t msg_size, const char *format, ...) {
    if (msg && msg_size) {
        va_list ap;
        va_start(ap, format);
        vsnprintf(msg, msg_size, format, ap);
        va_end(ap);
    }
    return (int)st;
}

/* vit info's lines as one JSON object, keys as printed. */
static char *describe_json(const vit_model *model, int is_default) {
    vit_model_description d;
    vit_model_describe(model, is_default, &d);
    cJSON *obj = cJSON_CreateObject();
    int ok = obj != NULL;
    for (int i = 0; ok && i < d.count; i++)
        ok = cJSON_AddStringToObject(obj, d.lines[i].key, d.lines[i].value) != NULL;
    char *text = ok ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    return text;
}

/* A hub name org/name that is not an existing path: its snapshot in the
 * local Hugging Face cache (as -m resolves it), written to buf. */
static base_status resolve_path(const char *path, char *buf, size_t size, const char **resolved,
                               base_error *err) {
    struct stat st;
    *resolved = path;
    if (!hub_cache_is_name(path) || stat(path, &st) == 0) return BASE_OK;
    base_status s = hub_cache_resolve(path, NULL, buf, size, err);
    if (s != BASE_OK) return s;
    *resolved = buf;
    return BASE_OK;
}

static base_status open_context(vit_ffi_model *m, int threads, int size, base_error *err) {
    const vit_config *c = vit_model_config(m->model);
    m->pre = *vit_model_preprocess(m->model);
    if (size) data_preprocess_set_size(&m->pre, size);
    base_status st = vit_context_create(m->model, m->batch, size, threads, &m->ctx, err);
    if (st != BASE_OK) return st;
    m->size = vit_context_image_size(m->ctx);
    m->tokens = vit_context_num_tokens(m->ctx);
    m->prefix = c->num_prefix_tokens;
    m->dim = c->hidden_size;
    m->layers = c->num_layers;
    m->heads = c->num_heads;
    m->grid = m->size / c->patch_size;
    m->patches = m->tokens - m->prefix;
    m->out = malloc(sizeof(float) * (size_t)m->batch * vit_model_output_size(m->model));
    if (!m->out || !(m->info_json = describe_json(m->model, 0)))
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    return BASE_OK;
}

int vit_ffi_open(const char *path, int threads, int size, int allow_unused, vit_ffi_model **out,
                 char *msg, size_t msg_size) {
    *out = NULL;
    if (!path || !*path) return fail(BASE_E_ARG, msg, msg_size, "no model path given");
    if (threads < 0 || threads > 1024)
        return fail(BASE_E_ARG, msg, msg_size, "threads must be 0 (all processors) to 1024, got %d", threads);
    if (size < 0 || size > 8192)
        return fail(BASE_E_ARG, msg, msg_size, "size must be 0 (the model's) to 8192, got %d", size);
    base_error err;
    char buf[8192];
    const char *resolved;
    base_status st = resolve_path(path, buf, sizeof buf, &resolved, &err);
    if (st != BASE_OK) return report(st, &err, msg, msg_size);
    vit_ffi_model *m = calloc(1, sizeof *m);
    if (!m) return fail(BASE_E_NOMEM, msg, msg_size, "out of memory");
    m->batch = FFI_BATCH;
    const vit_load_options options = {.input_size = size, .allow_unused = allow_unused,
                                      .threads = threads};
    st = vit_model_load(resolved, &options, &m->model, &err);
    if (st == BASE_OK) st = open_context(m, threads, size, &err);
    if (st != BASE_OK) {
        vit_ffi_close(m);
        return report(st, &err, msg, msg_size);
    }
    *out = m;
    return BASE_OK;
}

void vit_ffi_close(vit_ffi_model *m) {
    if (!m) return;
    vit_context_free(m->ctx);
    vit_model_free(m->model);
    free(m->out);
    free(m->info_json);
    free(m);
}

int vit_ffi_size(const vit_ffi_model *m, const char *name) {
    const vit_config *c = vit_model_config(m->model);
    const struct { const char *name; int value; } sizes[] = {
        {"image_size", m->size}, {"patch_size", c->patch_size}, {"tokens", m->tokens},
        {"prefix", m->prefix}, {"hidden", m->dim}, {"layers", m->layers}, {"heads", m->heads},
        {"grid_h", m->grid}, {"grid_w", m->grid}, {"patches", m->patches},
        {"classes", c->num_classes}, {"outputs", vit_model_output_size(m->model)},
        {"pooled", vit_config_pooled_size(c)}, {"registers", c->num_reg_tokens},
        {"class_token", !c->no_class_token}, {"labels", vit_model_num_labels(m->model)},
        {"threads", vit_context_threads(m->ctx)}, {"batch", m->batch}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        if (strcmp(sizes[i].name, name) == 0) return sizes[i].value;
    return -1;
}

const char *vit_ffi_label(const vit_ffi_model *m, int i) { return vit_model_label(m->model, i); }
const char *vit_ffi_info_json(const vit_ffi_model *m) { return m->info_json; }
const char *vit_ffi_notices(const vit_ffi_model *m) { return vit_model_notices(m->model); }

int vit_ffi_load_image(const char *path, uint8_t **pixels, int *width, int *height, char *msg,
                       size_t msg_size) {
    data_image img;
    base_error err;
    *pixels = NULL;
    const base_status st = data_image_load(path, &img, &err);
    if (st != BASE_OK) return report(st, &err, msg, msg_size);
    *pixels = img.pixels;
    *width = img.width;
    *height = img.height;
    return BASE_OK;
}

int vit_ffi_preprocess_file(const vit_ffi_model *m, const char *path, float *out, char *msg,
                            size_t msg_size) {
    base_error err;
    return report(data_preprocess_file(&m->pre, path, out, &err), &err, msg, msg_size);
}

int vit_ffi_preprocess_pixels(const vit_ffi_model *m, const uint8_t *pixels, int width,
                              int height, float *out, char *msg, size_t msg_size) {
    if (!pixels || width < 1 || height < 1)
        return fail(BASE_E_ARG, msg, msg_size, "an image needs at least one pixel, got %dx%d", width, height);
    const int64_t max = m->pre.max_pixels > 0 ? m->pre.max_pixels : DATA_MAX_PIXELS;
    if ((int64_t)width * height > max)
        return fail(BASE_E_LIMIT, msg, msg_size, "a %dx%d image is over the limit of %lld pixels",
                    width, height, (long long)max);
    /* The recipe only reads the pixels: the caller's array is not copied. */
    const data_image img = {.width = width, .height = height, .pixels = (uint8_t *)pixels};
    base_error err;
    return report(data_preprocess_apply(&m->pre, &img, out, &err), &err, msg, msg_size);
}

/* One call's pass over a batch: every chunk through the forward pass, then
 * `each` for every image (its index in the batch and its row in the chunk). */
typedef struct ffi_pass {
    vit_ffi_model *m;
    int (*each)(struct ffi_pass *p, int image, int row, base_error *err);
    void *state;
} ffi_pass;

static base_status run_pass(ffi_pass *p, const float *images, int n, base_error *err) {
    vit_ffi_model *m = p->m;
    if (!images || n < 1) return base_error_set(err, BASE_E_ARG, "empty batch: no images given");
    const size_t floats = (size_t)3 * m->size * m->size;
    for (int first = 0; first < n; first += m->batch) {
        const int count = n - first < m->batch ? n - first : m->batch;
        base_status st = vit_forward_checked(m->ctx, images + (size_t)first * floats, count, 3,
                                            m->size, m->size, m->out, err);
        for (int i = 0; st == BASE_OK && i < count; i++)
            st = (base_status)p->each(p, first + i, i, err);
        if (st != BASE_OK) return st;
    }
    return BASE_OK;
}

/* Captures for a pass: buffers for a chunk, stopped whatever happens. */
static base_status capture(vit_ffi_model *m, vit_capture_kind kind, int layer, size_t per_image,
                          float **dst, base_error *err) {
    if (!(*dst = malloc(sizeof(float) * (size_t)m->batch * per_image)))
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    return vit_context_capture(m->ctx, kind, layer, *dst, err);
}

static void release(vit_ffi_model *m, vit_capture_kind kind, int layer, float *buffer) {
    base_error ignored;
    if (buffer) vit_context_capture(m->ctx, kind, layer, NULL, &ignored);
    free(buffer);
}

static base_status check_layer(const vit_ffi_model *m, int layer, int allow_embed, base_error *err) {
    if (layer >= (allow_embed ? -1 : 0) && layer < m->layers) return BASE_OK;
    return base_error_set(err, BASE_E_ARG, "layer %d is not one of the model's blocks 0..%d%s", layer,
                         m->layers - 1, allow_embed ? " (or -1, the embedding)" : "");
}

typedef struct logits_state {
    float *out;
    int softmax;
} logits_state;

static int logits_each(ffi_pass *p, int image, int row, base_error *err) {
    const logits_state *s = p->state;
    const int n = vit_model_output_size(p->m->model);
    float *dst = s->out + (size_t)image * n;
    memcpy(dst, p->m->out + (size_t)row * n, sizeof(float) * n);
    /* As classify (cli_run_batch): such outputs make no result. */
    for (int c = 0; c < n; c++)
        if (!isfinite(dst[c]))
            return base_error_set(err, BASE_E_FORMAT, "image %d: model output is not finite (NaN/Inf)", image);
    if (s->softmax && vit_model_config(p->m->model)->num_classes > 0) vit_softmax(dst, n);
    return BASE_OK;
}

int vit_ffi_logits(vit_ffi_model *m, const float *images, int n, int softmax, float *out,
                   char *msg, size_t msg_size) {
    logits_state s = {out, softmax};
    ffi_pass p = {m, logits_each, &s};
    base_error err;
    return report(run_pass(&p, images, n, &err), &err, msg, msg_size);
}

typedef struct features_state {
    float *captured, *out, *scratch;
    int pool, l2;
    size_t row_floats;
} features_state;

static int features_each(ffi_pass *p, int image, int row, base_error *err) {
    const features_state *s = p->state;
    const vit_ffi_model *m = p->m;
    const float *tokens = s->captured + (size_t)row * m->tokens * m->dim;
    float *dst = s->out + (size_t)image * s->row_floats;
    if (s->pool < 0) { /* vit features without --pool: the stream as it is */
        memcpy(dst, tokens, s->row_floats * sizeof *dst);
        if (s->l2) vit_l2_normalize_rows(dst, m->tokens, m->dim);
        return BASE_OK;
    }
    return vit_pool_tokens(m->model, tokens, m->tokens, (vit_pool)s->pool, s->l2, dst, s->scratch, err);
}

int vit_ffi_features(vit_ffi_model *m, const float *images, int n, int pool, int layer, int l2,
                     float *out, char *msg, size_t msg_size) {
    base_error err;
    const vit_config *c = vit_model_config(m->model);
    if (pool < -1 || pool > VIT_POOL_MODEL)
        return fail(BASE_E_ARG, msg, msg_size, "pool %d is not one of -1..%d", pool, VIT_POOL_MODEL);
    if (pool == VIT_POOL_CLS && c->no_class_token)
        return fail(BASE_E_ARG, msg, msg_size, "%s has no class token (use pool mean)",
                    vit_model_weights_path(m->model));
    if (pool >= 0) layer = m->layers - 1; /* pooling reads the last block's tokens */
    if (check_layer(m, layer, 1, &err) != BASE_OK) return report(err.code, &err, msg, msg_size);
    features_state s = {.out = out, .pool = pool, .l2 = l2 != 0};
    s.row_floats = pool == VIT_POOL_MODEL ? (size_t)vit_config_pooled_size(c)
                   : pool == VIT_POOL_CLS || pool == VIT_POOL_MEAN ? (size_t)m->dim
                                                                  : (size_t)m->tokens * m->dim;
    base_status st = BASE_OK;
    if (!(s.scratch = malloc(sizeof(float) * m->dim)))
        st = base_error_set(&err, BASE_E_NOMEM, "out of memory");
    if (st == BASE_OK)
        st = capture(m, VIT_CAPTURE_TOKENS, layer, (size_t)m->tokens * m->dim, &s.captured, &err);
    ffi_pass p = {m, features_each, &s};
    if (st == BASE_OK) st = run_pass(&p, images, n, &err);
    release(m, VIT_CAPTURE_TOKENS, layer, s.captured);
    free(s.scratch);
    return report(st, &err, msg, msg_size);
}

typedef struct attention_state {
    float **layers; /* captured attention per block (rollout: 0..layer; else [layer] only) */
    const float **per_image;
    float *out, *result, *scratch;
    int layer, head, rollout;
    float discard;
} attention_state;

/* One map (n x patches): a head's or the mean's row, as vit attention. */
static void attention_map(const vit_ffi_model *m, const float *attn, int heads, int head, float *dst) {
    if (vit_model_config(m->model)->no_class_token)
        vit_attention_mean_row(attn, heads, m->tokens, m->prefix, head, m->prefix, dst);
    else
        vit_attention_row(attn, heads, m->tokens, 0, head, m->prefix, dst);
}

static int attention_each(ffi_pass *p, int image, int row, base_error *err) {
    attention_state *s = p->state;
    const vit_ffi_model *m = p->m;
    const size_t per_image = (size_t)m->heads * m->tokens * m->tokens;
    if (s->rollout) {
        for (int l = 0; l <= s->layer; l++) s->per_image[l] = s->layers[l] + (size_t)row * per_image;
        base_status st = vit_attention_rollout(s->per_image, s->layer + 1, m->heads, m->tokens,
                                              s->discard, s->result, s->scratch, err);
        if (st == BASE_OK) attention_map(m, s->result, 1, 0, s->out + (size_t)image * m->patches);
        return st;
    }
    const float *attn = s->layers[s->layer] + (size_t)row * per_image;
    if (s->head >= -1) {
        attention_map(m, attn, m->heads, s->head, s->out + (size_t)image * m->patches);
        return BASE_OK;
    }
    /* Every head, then their mean (vit attention --grid's maps). */
    float *dst = s->out + (size_t)image * (m->heads + 1) * m->patches;
    for (int h = 0; h <= m->heads; h++)
        attention_map(m, attn, m->heads, h < m->heads ? h : -1, dst + (size_t)h * m->patches);
    return BASE_OK;
}

/* The attention captures of a pass, rollout's buffers, the pass, the cleanup. */
static base_status attention_pass(vit_ffi_model *m, attention_state *s, const float *images, int n,
                                 base_error *err) {
    const size_t per_image = (size_t)m->heads * m->tokens * m->tokens;
    base_status st = BASE_OK;
    s->layers = calloc((size_t)m->layers, sizeof *s->layers);
    s->per_image = calloc((size_t)m->layers, sizeof *s->per_image);
    if (s->rollout) {
        s->result = malloc(sizeof(float) * m->tokens * m->tokens);
        s->scratch = malloc(sizeof(float) * vit_rollout_scratch_size(m->tokens));
    }
    if (!s->layers || !s->per_image || (s->rollout && (!s->result || !s->scratch)))
        st = base_error_set(err, BASE_E_NOMEM, "out of memory");
    for (int l = s->rollout ? 0 : s->layer; st == BASE_OK && l <= s->layer; l++)
        st = capture(m, VIT_CAPTURE_ATTENTION, l, per_image, &s->layers[l], err);
    ffi_pass p = {m, attention_each, s};
    if (st == BASE_OK) st = run_pass(&p, images, n, err);
    for (int l = 0; s->layers && l < m->layers; l++)
        release(m, VIT_CAPTURE_ATTENTION, l, s->layers[l]);
    free(s->layers);
    free(s->per_image);
    free(s->result);
    free(s->scratch);
    return st;
}

int vit_ffi_attention(vit_ffi_model *m, const float *images, int n, int layer, int head,
                      float *out, char *msg, size_t msg_size) {
    base_error err;
    if (check_layer(m, layer, 0, &err) != BASE_OK) return report(err.code, &err, msg, msg_size);
    if (head < -2 || head >= m->heads)
        return fail(BASE_E_ARG, msg, msg_size, "head %d is not one of the model's heads 0..%d",
                    head, m->heads - 1);
    attention_state s = {.out = out, .layer = layer, .head = head};
    return report(attention_pass(m, &s, images, n, &err), &err, msg, msg_size);
}

int vit_ffi_rollout(vit_ffi_model *m, const float *images, int n, int layer, float discard,
                    float *out, char *msg, size_t msg_size) {
    base_error err;
    if (check_layer(m, layer, 0, &err) != BASE_OK) return report(err.code, &err, msg, msg_size);
    if (!(discard >= 0.0f && discard < 1.0f))
        return fail(BASE_E_ARG, msg, msg_size, "discard expects a fraction in [0, 1), got %g", (double)discard);
    attention_state s = {.out = out, .layer = layer, .rollout = 1, .discard = discard};
    return report(attention_pass(m, &s, images, n, &err), &err, msg, msg_size);
}

typedef struct tokens_state {
    float *captured, *out, *points;
    int32_t *labels;
    int k, keys;
    uint64_t seed;
    double *scratch;
} tokens_state;

static int patch_logits_each(ffi_pass *p, int image, int row, base_error *err) {
    const tokens_state *s = p->state;
    const vit_ffi_model *m = p->m;
    const size_t classes = (size_t)vit_model_config(m->model)->num_classes;
    return vit_patch_logits(m->model, s->captured + (size_t)row * m->tokens * m->dim, m->tokens,
                            vit_context_threads(m->ctx), s->out + (size_t)image * m->patches * classes,
                            err);
}

int vit_ffi_patch_logits(vit_ffi_model *m, const float *images, int n, int layer, float *out,
                         char *msg, size_t msg_size) {
    base_error err;
    if (check_layer(m, layer, 0, &err) != BASE_OK) return report(err.code, &err, msg, msg_size);
    if (vit_model_config(m->model)->num_classes == 0)
        return fail(BASE_E_ARG, msg, msg_size, "%s has no classification head (it outputs features)",
                    vit_model_weights_path(m->model));
    tokens_state s = {.out = out};
    base_status st = capture(m, VIT_CAPTURE_TOKENS, layer, (size_t)m->tokens * m->dim, &s.captured, &err);
    ffi_pass p = {m, patch_logits_each, &s};
    if (st == BASE_OK) st = run_pass(&p, images, n, &err);
    release(m, VIT_CAPTURE_TOKENS, layer, s.captured);
    return report(st, &err, msg, msg_size);
}

static int segment_each(ffi_pass *p, int image, int row, base_error *err) {
    const tokens_state *s = p->state;
    const vit_ffi_model *m = p->m;
    const int np = m->patches, D = m->dim;
    memcpy(s->points, s->captured + ((size_t)row * m->tokens + m->prefix) * D,
           (size_t)np * D * sizeof *s->points);
    vit_l2_normalize_rows(s->points, np, D);
    return vit_kmeans(s->points, np, D, s->k, s->seed, KMEANS_MAX_ITER,
                      (int *)s->labels + (size_t)image * np, NULL, s->scratch, NULL, err);
}

int vit_ffi_segment(vit_ffi_model *m, const float *images, int n, int k, int seed, int layer,
                    int keys, int32_t *out, char *msg, size_t msg_size) {
    base_error err;
    if (check_layer(m, layer, 0, &err) != BASE_OK) return report(err.code, &err, msg, msg_size);
    if (k < 1 || k > 254 || k > m->patches)
        return fail(BASE_E_ARG, msg, msg_size, "clusters must be 1 to %d (254 at most, and no more "
                    "than the patches), got %d", m->patches < 254 ? m->patches : 254, k);
    if (seed < 0) return fail(BASE_E_ARG, msg, msg_size, "seed must be 0 or more, got %d", seed);
    tokens_state s = {.labels = out, .k = k, .keys = keys != 0, .seed = (uint64_t)seed};
    const vit_capture_kind kind = s.keys ? VIT_CAPTURE_KEYS : VIT_CAPTURE_TOKENS;
    base_status st = BASE_OK;
    s.points = malloc(sizeof(float) * m->patches * m->dim);
    s.scratch = malloc(sizeof(double) * vit_kmeans_scratch_size(m->patches, m->dim, k));
    if (!s.points || !s.scratch) st = base_error_set(&err, BASE_E_NOMEM, "out of memory");
    if (st == BASE_OK) st = capture(m, kind, layer, (size_t)m->tokens * m->dim, &s.captured, &err);
    ffi_pass p = {m, segment_each, &s};
    if (st == BASE_OK) st = run_pass(&p, images, n, &err);
    release(m, kind, layer, s.captured);
    free(s.points);
    free(s.scratch);
    return report(st, &err, msg, msg_size);
}

int vit_ffi_overlay_heatmap(const vit_ffi_model *m, const uint8_t *pixels, int width, int height,
                            const float *grid, uint8_t *out, char *msg, size_t msg_size) {
    if (!pixels || width < 1 || height < 1)
        return fail(BASE_E_ARG, msg, msg_size, "an image needs at least one pixel, got %dx%d", width, height);
    const int cells = m->grid * m->grid;
    float lo = grid[0], hi = grid[0];
    for (int i = 1; i < cells; i++) {
        if (grid[i] < lo) lo = grid[i];
        if (grid[i] > hi) hi = grid[i];
    }
    const data_image img = {.width = width, .height = height, .pixels = (uint8_t *)pixels};
    double box[4];
    data_preprocess_source_box(&m->pre, width, height, box);
    data_image pic = {0};
    base_error err;
    const base_status st = data_overlay_heatmap(&img, box, grid, m->grid, m->grid, lo, hi,
                                               OVERLAY_ALPHA, &pic, &err);
    if (st == BASE_OK) memcpy(out, pic.pixels, (size_t)width * height * 3);
    data_image_free(&pic);
    return report(st, &err, msg, msg_size);
}

int vit_ffi_write_png(const char *path, int width, int height, int channels,
                      const uint8_t *pixels, char *msg, size_t msg_size) {
    if (!pixels || width < 1 || height < 1 || (channels != 1 && channels != 3 && channels != 4))
        return fail(BASE_E_ARG, msg, msg_size, "a PNG needs 1, 3 or 4 channels and at least one "
                    "pixel, got %dx%dx%d", height, width, channels);
    base_error err;
    return report(data_write_png(path, width, height, channels, pixels, &err), &err, msg, msg_size);
}
