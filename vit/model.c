/* Loading a checkpoint: find the files, settle the hyper-parameters, map
 * every tensor to its role and check its shape before anything runs. */
#include "vit_internal.h"

#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base_json.h"

/* A --labels file larger than this is not a label list (21k-class lists
 * are about 1 MB). Config JSON has its own limit (base_limits). */
#define MAX_LABELS_BYTES ((long)16 << 20)
#define MAX_LABELS 1000000

/* ------------------------------------------------------------------ files */

static int is_directory(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Checks path (following symlinks) is a regular file, without opening it:
 * opening a FIFO would block until a writer came. *missing (when non-NULL)
 * is set instead of an error when nothing is there at all. */
static base_status check_regular(const char *path, int *missing, base_error *err) {
    struct stat st;
    if (missing) *missing = 0;
    if (stat(path, &st) != 0) {
        const int error = errno;
        if (error == ENOENT && missing && lstat(path, &st) != 0) {
            *missing = 1;
            return BASE_OK;
        }
        if (error == ENOENT)
            return base_error_set(err, BASE_E_IO, missing ? "%s: broken symbolic link"
                                                        : "%s: no such model file or directory", path);
        return base_error_set(err, BASE_E_IO, "%s: cannot open (%s)", path, strerror(error));
    }
    if (!S_ISREG(st.st_mode))
        return base_error_set(err, BASE_E_IO, "%s: not a regular file (%s)", path, base_file_kind(st.st_mode));
    return BASE_OK;
}

/* Reads a whole small text file. Returns NULL (with err set) on failure. */
static char *read_text_file(const char *path, long max_bytes, base_error *err) {
    char *text;
    return base_read_text_file(path, (size_t)max_bytes, &text, NULL, err) == BASE_OK ? text : NULL;
}

/* ------------------------------------------------------------ model store */

static float *own(vit_model *m, size_t count) {
    if (m->num_owned == m->owned_capacity) {
        size_t capacity = m->owned_capacity ? m->owned_capacity * 2 : 64;
        float **grown = realloc(m->owned, capacity * sizeof *grown);
        if (!grown) return NULL;
        m->owned = grown;
        m->owned_capacity = capacity;
    }
    float *buffer = malloc((count ? count : 1) * sizeof(float));
    if (buffer) m->owned[m->num_owned++] = buffer;
    return buffer;
}

/* Notes that the forward pass reads t (and, for I8, its scales). */
static void mark_used(vit_model *m, const weights_tensor *t) {
    if (!m->used || !t) return;
    m->used[t - weights_at(m->file, 0)] = 1;
    if (t->dtype == WEIGHTS_I8) {
        char name[400];
        snprintf(name, sizeof name, "%s%s", t->name, WEIGHTS_SCALE_SUFFIX);
        const weights_tensor *scale = weights_find(m->file, name);
        if (scale) m->used[scale - weights_at(m->file, 0)] = 1;
    }
}

static base_status shape_error(const vit_model *m, const weights_ref *ref, const char *expected,
                              base_error *err) {
    char got[128] = "";
    size_t used = 0;
    for (int i = 0; i < ref->tensor->ndim && used < sizeof got - 24; i++)
        used += (size_t)snprintf(got + used, sizeof got - used, "%s%lld", i ? ", " : "",
                                 (long long)ref->tensor->shape[i]);
    return base_error_set(err, BASE_E_SHAPE, "%s: tensor '%s' has shape [%s], expected %s",
                         weights_path(m->file), ref->key, got, expected);
}

/* Checks a tensor (or fused slice) holds rows x cols values laid out as rows
 * of cols. For rows == 1 any shape with cols values fits (biases [D], tokens
 * [1, 1, D], tables [1, T, D]); otherwise dim 0 is rows and the trailing dims
 * multiply to cols (a conv kernel [D, C, P, P] reads as [D, C*P*P]). */
static int shape_matches(const weights_ref *ref, int64_t rows, int64_t cols) {
    const weights_tensor *t = ref->tensor;
    if (ref->row_count) {
        if (t->ndim == 1) return rows == 1 && ref->row_count == cols;
        return t->ndim == 2 && ref->row_count == rows && t->shape[1] == cols;
    }
    if (rows == 1) return (int64_t)t->numel == cols;
    if (t->ndim < 1 || t->shape[0] != rows) return 0;
    return (int64_t)t->numel == rows * cols;
}

/* Float32 values of a tensor (or slice): in place when the file already holds
 * aligned F32, else converted into a buffer the model owns. */
static base_status tensor_values(vit_model *m, const weights_ref *ref, const float **out,
                                base_error *err) {
    const weights_tensor *t = ref->tensor;
    const size_t row_len = t->ndim >= 2 ? t->numel / (size_t)t->shape[0] : 1;
    const size_t first = (size_t)ref->row_start * row_len;
    if (t->dtype == WEIGHTS_F32 && ((uintptr_t)t->data % sizeof(float)) == 0) {
        *out = (const float *)t->data + first;
        return BASE_OK;
    }
    float *whole = own(m, t->numel);
    if (!whole) return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", weights_path(m->file));
    base_status status = weights_to_f32(m->file, t, whole, err);
    if (status != BASE_OK) return status;
    *out = whole + first;
    return BASE_OK;
}

/* Looks up role, requires it (unless optional), checks its shape is
 * rows x cols and returns its values. */
static base_status take(vit_model *m, weights_role role, int layer, int64_t rows, int64_t cols,
                       int optional, const float **out, base_error *err) {
    weights_ref ref;
    *out = NULL;
    base_status status = weights_layout_find(m->file, m->layout, role, layer, &ref, err);
    if (status != BASE_OK) return status;
    if (!ref.tensor) {
        if (optional) return BASE_OK;
        return base_error_set(err, BASE_E_FORMAT, "%s: missing tensor '%s' (%s layout)",
                             weights_path(m->file), ref.key, weights_layout_name(m->layout));
    }
    if (!shape_matches(&ref, rows, cols)) {
        char expected[64];
        if (rows == 1)
            snprintf(expected, sizeof expected, "%lld values", (long long)cols);
        else
            snprintf(expected, sizeof expected, "[%lld, %lld]", (long long)rows, (long long)cols);
        return shape_error(m, &ref, expected, err);
    }
    /* A fused tensor is counted once, with its first slice. */
    if (ref.row_start == 0) m->param_count += ref.tensor->numel;
    mark_used(m, ref.tensor);
    return tensor_values(m, &ref, out, err);
}

/* A float32 linear weight [rows, cols] of block `layer`: from a packed
 * file whose float layout is the kernels', mapped into *f, and *w left NULL
 * unless the tensor is float32 in place (so a dtype the forward pass would
 * convert, an int8 file's proj or a bf16 file's, is never converted);
 * otherwise as take() gives it, packed later by vit_model_pack. */
static base_status take_mapped(vit_model *m, weights_role role, int layer, const char *what,
                              int64_t rows, int64_t cols, const float **w, kernels_fmatrix **f,
                              base_error *err) {
    weights_ref ref;
    *w = NULL;
    base_status s = weights_layout_find(m->file, m->layout, role, layer, &ref, err);
    if (s != BASE_OK || !m->packed_f || !ref.tensor || ref.row_count || !shape_matches(&ref, rows, cols) ||
        (ref.tensor->dtype == WEIGHTS_F32 && (uintptr_t)ref.tensor->data % sizeof(float) == 0))
        return s != BASE_OK ? s : take(m, role, layer, rows, cols, 0, w, err);
    char name[48];
    snprintf(name, sizeof name, "blocks.%d.%s", layer, what);
    if ((s = vit_packed_fmatrix(m, name, (int)rows, (int)cols, f, err)) != BASE_OK) return s;
    if (!*f) return take(m, role, layer, rows, cols, 0, w, err); /* not mappable here */
    m->param_count += ref.tensor->numel;
    mark_used(m, ref.tensor);
    return BASE_OK;
}

/* Whether the int8 kernels take a matrix of cols columns in groups of
 * `group` (kernels_qmatrix_create's limits); others load as float. */
static int packable(size_t cols, size_t group) {
    return cols <= (1u << 16) && (group == cols || group % 4 == 0);
}

/* The I8 matrices of parts (each rows_each x cols: a tensor or a slice of
 * one) stacked into one packed matrix in *q; *q stays NULL when a part is
 * not I8 or not packable, and the caller loads them as float. */
static base_status pack_int8(vit_model *m, const char *name, const weights_ref *parts, int n_parts,
                            int64_t rows_each, int64_t cols, kernels_qmatrix **q,
                            base_error *err) {
    *q = NULL;
    size_t groups = 0;
    const weights_tensor *scale[3];
    for (int i = 0; i < n_parts; i++) {
        const weights_tensor *t = parts[i].tensor;
        size_t g;
        if (!t || t->dtype != WEIGHTS_I8 || !shape_matches(&parts[i], rows_each, cols)) return BASE_OK;
        base_status s = weights_i8_scales(m->file, t, &scale[i], &g, err);
        if (s != BASE_OK) return s;
        if ((i > 0 && g != groups) || !packable((size_t)cols, (size_t)cols / g)) return BASE_OK;
        groups = g;
    }
    const int rows = (int)(rows_each * n_parts), group = (int)(cols / (int64_t)groups);
    base_status mapped = vit_packed_qmatrix(m, name, rows, (int)cols, group, q, err);
    if (mapped != BASE_OK || *q) { /* a packed file's own: nothing to pack */
        for (int i = 0; mapped == BASE_OK && i < n_parts; i++) {
            if (parts[i].row_start == 0) m->param_count += parts[i].tensor->numel;
            mark_used(m, parts[i].tensor);
        }
        return mapped;
    }
    kernels_qmatrix *packed = kernels_qmatrix_create(rows, (int)cols, group, m->isa);
    if (!packed) return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", weights_path(m->file));
    m->packed++;
    float *all = NULL; /* the scale tensor of part i as float32 (slices share one) */
    base_status s = BASE_OK;
    for (int i = 0; i < n_parts && s == BASE_OK; i++) {
        const weights_tensor *t = parts[i].tensor;
        if (i == 0 || scale[i] != scale[i - 1]) {
            free(all);
            all = malloc(sizeof(float) * scale[i]->numel);
            s = all ? weights_to_f32(m->file, scale[i], all, err)
                    : base_error_set(err, BASE_E_NOMEM, "out of memory");
            if (s != BASE_OK) break;
        }
        const size_t first = (size_t)parts[i].row_start;
        kernels_qmatrix_set_rows(packed, (int)(i * rows_each), (int)rows_each,
                                 (const signed char *)t->data + first * (size_t)cols,
                                 all + first * groups);
        if (parts[i].row_start == 0) m->param_count += t->numel;
        mark_used(m, t);
    }
    free(all);
    if (s != BASE_OK) {
        kernels_qmatrix_free(packed);
        return s;
    }
    *q = packed;
    return BASE_OK;
}

/* The BF16 matrices of parts (each rows_each x cols) stacked into one
 * matrix packed for the bf16 GEMM in *h, which computes in bf16 (kernels.h
 * kernels_linear_bf16) rather than widening the weights to float32; *h
 * stays NULL when a part is not BF16, and the caller loads them as float. */
static base_status pack_bf16(vit_model *m, const char *name, const weights_ref *parts,
                            int n_parts, int64_t rows_each, int64_t cols, kernels_bmatrix **h,
                            base_error *err) {
    *h = NULL;
    for (int i = 0; i < n_parts; i++)
        if (!parts[i].tensor || parts[i].tensor->dtype != WEIGHTS_BF16 ||
            !shape_matches(&parts[i], rows_each, cols))
            return BASE_OK;
    const int rows = (int)(rows_each * n_parts);
    base_status s = vit_packed_bmatrix(m, name, rows, (int)cols, h, err);
    if (s != BASE_OK) return s;
    if (!*h) {
        if (!(*h = kernels_bmatrix_create(rows, (int)cols)))
            return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", weights_path(m->file));
        m->packed++;
        for (int i = 0; i < n_parts; i++)
            kernels_bmatrix_set_rows(*h, (int)(i * rows_each), (int)rows_each,
                                     (const unsigned char *)parts[i].tensor->data +
                                         (size_t)parts[i].row_start * (size_t)cols * 2);
    }
    for (int i = 0; i < n_parts; i++) {
        if (parts[i].row_start == 0) m->param_count += parts[i].tensor->numel;
        mark_used(m, parts[i].tensor);
    }
    return BASE_OK;
}

/* A linear layer's weight [rows, cols]: packed int8 when the file stores it
 * as I8, packed bf16 when BF16 (then *w is NULL), else float32 as take()
 * gives it. */
static base_status take_linear(vit_model *m, weights_role role, int layer, int64_t rows,
                              int64_t cols, const float **w, kernels_qmatrix **q,
                              kernels_bmatrix **h, kernels_fmatrix **f, base_error *err) {
    weights_ref ref;
    *w = NULL;
    base_status s = weights_layout_find(m->file, m->layout, role, layer, &ref, err);
    const char *what = role == WEIGHTS_FC1_W ? "fc1" : role == WEIGHTS_FC2_W ? "fc2" : "proj";
    char name[48];
    snprintf(name, sizeof name, "blocks.%d.%s", layer, what);
    if (s == BASE_OK) s = pack_int8(m, name, &ref, 1, rows, cols, q, err);
    if (s == BASE_OK && !*q) s = pack_bf16(m, name, &ref, 1, rows, cols, h, err);
    if (s != BASE_OK || *q || *h) return s;
    return take_mapped(m, role, layer, what, rows, cols, w, f, err);
}

/* Q, K and V of one block as one [3D, D] matrix (and [3D] bias): the timm
 * fused tensor in place, or the three Hugging Face tensors concatenated. */
static base_status take_qkv(vit_model *m, int layer, const float **w, const float **b,
                           kernels_qmatrix **q, kernels_bmatrix **h, base_error *err) {
    const int D = m->config.hidden_size;
    const weights_role w_roles[3] = {WEIGHTS_Q_W, WEIGHTS_K_W, WEIGHTS_V_W};
    const weights_role b_roles[3] = {WEIGHTS_Q_B, WEIGHTS_K_B, WEIGHTS_V_B};
    const float *parts_w[3] = {NULL, NULL, NULL}, *parts_b[3];
    weights_ref refs[3];
    *q = NULL;
    for (int i = 0; i < 3; i++) {
        base_status status = weights_layout_find(m->file, m->layout, w_roles[i], layer, &refs[i], err);
        if (status != BASE_OK) return status;
    }
    char name[48];
    snprintf(name, sizeof name, "blocks.%d.qkv", layer);
    base_status packed = pack_int8(m, name, refs, 3, D, D, q, err);
    if (packed == BASE_OK && !*q) packed = pack_bf16(m, name, refs, 3, D, D, h, err);
    if (packed != BASE_OK) return packed;
    for (int i = 0; i < 3; i++) {
        base_status status = *q || *h ? BASE_OK : take(m, w_roles[i], layer, D, D, 0, &parts_w[i], err);
        if (status == BASE_OK) status = take(m, b_roles[i], layer, 1, D, 1, &parts_b[i], err);
        if (status != BASE_OK) return status;
    }
    const int has_bias = parts_b[0] && parts_b[1] && parts_b[2];
    if (!has_bias && (parts_b[0] || parts_b[1] || parts_b[2]))
        return base_error_set(err, BASE_E_FORMAT, "%s: block %d has a bias for only some of Q, K, V",
                             weights_path(m->file), layer);
    const size_t DD = (size_t)D * D;
    if (*q || *h) {
        *w = NULL;
    } else if (parts_w[1] == parts_w[0] + DD && parts_w[2] == parts_w[1] + DD) {
        *w = parts_w[0];
    } else {
        float *fused = own(m, 3 * DD);
        if (!fused) return base_error_set(err, BASE_E_NOMEM, "out of memory");
        for (int i = 0; i < 3; i++) memcpy(fused + i * DD, parts_w[i], DD * sizeof(float));
        *w = fused;
    }
    *b = NULL;
    if (has_bias) {
        if (parts_b[1] == parts_b[0] + D && parts_b[2] == parts_b[1] + D) {
            *b = parts_b[0];
        } else {
            float *fused = own(m, 3 * (size_t)D);
            if (!fused) return base_error_set(err, BASE_E_NOMEM, "out of memory");
            for (int i = 0; i < 3; i++) memcpy(fused + i * D, parts_b[i], D * sizeof(float));
            *b = fused;
        }
    }
    return BASE_OK;
}

/* ------------------------------------------------------ hyper-parameters */

/* Values a config file states; 0: not stated (num_classes: -1). */
typedef struct stated_config {
    int hidden_size, num_layers, num_heads, mlp_size, patch_size, image_size, num_channels;
    int num_classes;
    double mlp_ratio; /* timm model_args; 0: not stated */
    double layer_norm_eps;
    int eps_stated;   /* layer_norm_eps said by the config or its architecture name */
    /* Switches; -1: not stated. */
    int class_token, no_embed_class, reg_tokens, fc_norm, pre_norm, qk_norm, qkv_bias;
    int pos_antialias; /* vitc's own key: how its source library resamples positions */
    int global_pool;  /* vit_global_pool */
    int act;          /* vit_act */
    int act_stated_by; /* 0 nothing, 1 the config, 2 the architecture table */
    int dinov2;       /* HF model_type dinov2 (1) / dinov2_with_registers (2) */
    char architecture[96]; /* timm's, "" when none */
} stated_config;

static void stated_init(stated_config *c) {
    memset(c, 0, sizeof *c);
    c->num_classes = -1;
    c->class_token = c->no_embed_class = c->reg_tokens = c->fc_norm = c->pre_norm = -1;
    c->qk_norm = c->qkv_bias = c->global_pool = c->act = c->pos_antialias = -1;
}

/* A boolean key (JSON true/false; null or absent: *out left alone). */
static base_status json_bool(const cJSON *obj, const char *key, const char *where,
                            const char *name, int *out, base_error *err) {
    const cJSON *item = base_json_get(obj, key);
    if (!item) return BASE_OK;
    if (!cJSON_IsBool(item)) {
        char shown[48];
        return base_error_set(err, BASE_E_FORMAT, "%s: \"%s%s\" is %s; expected true or false",
                             name, where, key, base_json_show(item, shown, sizeof shown));
    }
    *out = cJSON_IsTrue(item);
    return BASE_OK;
}

/* An activation name: "gelu" (exact) or "quick_gelu"; anything else would
 * run silently wrong. */
static base_status json_act(const cJSON *obj, const char *key, const char *where,
                           const char *name, int *out, base_error *err) {
    const cJSON *act = base_json_get(obj, key);
    if (!act) return BASE_OK;
    if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu") == 0) {
        *out = VIT_ACT_GELU;
        return BASE_OK;
    }
    if (cJSON_IsString(act) && strcmp(act->valuestring, "quick_gelu") == 0) {
        *out = VIT_ACT_QUICK_GELU;
        return BASE_OK;
    }
    char shown[48];
    return base_error_set(err, cJSON_IsString(act) ? BASE_E_UNSUPPORTED : BASE_E_FORMAT,
                         "%s: \"%s%s\" is %s; only \"gelu\" (exact GELU) and \"quick_gelu\" are "
                         "supported", name, where, key, base_json_show(act, shown, sizeof shown));
}

/* timm's global_pool: "token" or "avg" (others, e.g. "map", are refused). */
static base_status json_pool(const cJSON *obj, const char *key, const char *where,
                            const char *name, int *out, base_error *err) {
    const cJSON *pool = base_json_get(obj, key);
    if (!pool) return BASE_OK;
    if (cJSON_IsString(pool) && strcmp(pool->valuestring, "token") == 0) {
        *out = VIT_GLOBAL_POOL_TOKEN;
        return BASE_OK;
    }
    if (cJSON_IsString(pool) && strcmp(pool->valuestring, "avg") == 0) {
        *out = VIT_GLOBAL_POOL_AVG;
        return BASE_OK;
    }
    char shown[48];
    return base_error_set(err, cJSON_IsString(pool) ? BASE_E_UNSUPPORTED : BASE_E_FORMAT,
                         "%s: \"%s%s\" is %s; only \"token\" and \"avg\" are supported", name,
                         where, key, base_json_show(pool, shown, sizeof shown));
}

/* Largest value any integer key may state; the tensors bound the real ones. */
#define MAX_STATED 1000000000

/* A whole number in min..max (checked as a double first: the cast is then
 * defined). */
static int whole_in_range(const cJSON *item, int min, int max, int *out) {
    if (!cJSON_IsNumber(item)) return 0;
    const double v = item->valuedouble;
    if (!(v >= min && v <= max) || v != floor(v)) return 0;
    *out = (int)v;
    return 1;
}

/* A square size written as N or [N, N] (transformers accepts an iterable
 * for image_size and patch_size). Absent: *out is left alone. */
static base_status json_square(const cJSON *obj, const char *key, const char *where,
                              const char *name, int *out, base_error *err) {
    const cJSON *item = base_json_get(obj, key);
    if (!item) return BASE_OK;
    int h, w;
    if (whole_in_range(item, 1, MAX_STATED, &h)) {
        *out = h;
        return BASE_OK;
    }
    char shown[48];
    if (cJSON_IsArray(item) && cJSON_GetArraySize(item) == 2 &&
        whole_in_range(cJSON_GetArrayItem(item, 0), 1, MAX_STATED, &h) &&
        whole_in_range(cJSON_GetArrayItem(item, 1), 1, MAX_STATED, &w)) {
        if (h != w)
            return base_error_set(err, BASE_E_UNSUPPORTED, "%s: \"%s%s\" is %s; only square sizes are supported",
                                 name, where, key, base_json_show(item, shown, sizeof shown));
        *out = h;
        return BASE_OK;
    }
    return base_error_set(err, BASE_E_FORMAT, "%s: \"%s%s\" is %s; expected a whole number from 1 to %d or [N, N]",
                         name, where, key, base_json_show(item, shown, sizeof shown), MAX_STATED);
}

/* A key that must be a JSON object when present. */
static base_status json_object(const cJSON *obj, const char *key, const char *name,
                              const cJSON **out, base_error *err) {
    const cJSON *item = base_json_get(obj, key);
    *out = item;
    if (!item || cJSON_IsObject(item)) return BASE_OK;
    char shown[48];
    return base_error_set(err, BASE_E_FORMAT, "%s: \"%s\" is %s; expected an object", name, key,
                         base_json_show(item, shown, sizeof shown));
}

/* Hugging Face config.json (also the form we write into __metadata__).
 * Every key is optional; a present one must be valid (base_json.h). */
static base_status read_hf_config(const cJSON *json, const char *name, stated_config *c,
                                 base_error *err) {
    base_status s;
    c->layer_norm_eps = 1e-12; /* transformers' ViTConfig/DeiTConfig default */
    if ((s = base_json_int(json, "hidden_size", "", 1, MAX_STATED, name, &c->hidden_size, err)) ||
        (s = base_json_int(json, "num_hidden_layers", "", 1, MAX_STATED, name, &c->num_layers, err)) ||
        (s = base_json_int(json, "num_attention_heads", "", 1, MAX_STATED, name, &c->num_heads, err)) ||
        (s = base_json_int(json, "intermediate_size", "", 1, MAX_STATED, name, &c->mlp_size, err)) ||
        (s = json_square(json, "patch_size", "", name, &c->patch_size, err)) ||
        (s = json_square(json, "image_size", "", name, &c->image_size, err)) ||
        (s = base_json_int(json, "num_channels", "", 1, MAX_STATED, name, &c->num_channels, err)) ||
        (s = base_json_number(json, "layer_norm_eps", "", 0, 1, name, &c->layer_norm_eps, err)) ||
        (s = json_act(json, "hidden_act", "", name, &c->act, err)) ||
        (s = json_bool(json, "qkv_bias", "", name, &c->qkv_bias, err)))
        return s;
    if (c->act >= 0) c->act_stated_by = 1;
    const cJSON *type = base_json_get(json, "model_type");
    c->dinov2 = !cJSON_IsString(type) ? 0
                : strcmp(type->valuestring, "dinov2") == 0 ? 1
                : strcmp(type->valuestring, "dinov2_with_registers") == 0 ? 2 : 0;
    if (c->dinov2 && !base_json_get(json, "layer_norm_eps")) c->layer_norm_eps = 1e-6; /* Dinov2Config */
    if ((s = base_json_int(json, "num_register_tokens", "", 0, 4096, name, &c->reg_tokens, err)))
        return s;
    if (!base_json_get(json, "num_register_tokens")) c->reg_tokens = -1;
    int swiglu = 0;
    if ((s = json_bool(json, "use_swiglu_ffn", "", name, &swiglu, err))) return s;
    if (swiglu)
        return base_error_set(err, BASE_E_UNSUPPORTED, "%s: \"use_swiglu_ffn\" is true; the SwiGLU "
                             "MLP (dinov2-giant) is not supported", name);
    /* The switches vit_config_to_hf_json writes (vitc's own keys). */
    if ((s = json_bool(json, "class_token", "", name, &c->class_token, err)) ||
        (s = json_bool(json, "no_embed_class", "", name, &c->no_embed_class, err)) ||
        (s = json_bool(json, "fc_norm", "", name, &c->fc_norm, err)) ||
        (s = json_bool(json, "pre_norm", "", name, &c->pre_norm, err)) ||
        (s = json_bool(json, "qk_norm", "", name, &c->qk_norm, err)) ||
        (s = json_bool(json, "vitc_pos_embed_antialias", "", name, &c->pos_antialias, err)) ||
        (s = json_pool(json, "global_pool", "", name, &c->global_pool, err)))
        return s;
    c->eps_stated = 1; /* transformers' default when absent */
    return BASE_OK;
}

void vit_config_to_hf_json(const vit_config *c, int num_channels, cJSON *json) {
    cJSON_AddNumberToObject(json, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(json, "num_hidden_layers", c->num_layers);
    cJSON_AddNumberToObject(json, "num_attention_heads", c->num_heads);
    cJSON_AddNumberToObject(json, "intermediate_size", c->mlp_size);
    cJSON_AddNumberToObject(json, "patch_size", c->patch_size);
    cJSON_AddNumberToObject(json, "image_size", c->image_size);
    cJSON_AddNumberToObject(json, "num_channels", num_channels);
    cJSON_AddNumberToObject(json, "layer_norm_eps", c->layer_norm_eps);
    cJSON_AddStringToObject(json, "hidden_act", c->act == VIT_ACT_QUICK_GELU ? "quick_gelu" : "gelu");
    /* The switches, only where they differ from the original ViT's (the
     * tensors show most; these say what they cannot). */
    if (c->no_class_token) cJSON_AddBoolToObject(json, "class_token", 0);
    if (c->num_reg_tokens) cJSON_AddNumberToObject(json, "num_register_tokens", c->num_reg_tokens);
    if (c->no_embed_class) cJSON_AddBoolToObject(json, "no_embed_class", 1);
    if (c->global_pool == VIT_GLOBAL_POOL_AVG) cJSON_AddStringToObject(json, "global_pool", "avg");
    if (c->fc_norm) cJSON_AddBoolToObject(json, "fc_norm", 1);
    if (c->pre_norm) cJSON_AddBoolToObject(json, "pre_norm", 1);
    if (c->qk_norm) cJSON_AddBoolToObject(json, "qk_norm", 1);
    if (c->no_qkv_bias) cJSON_AddBoolToObject(json, "qkv_bias", 0);
    /* A model vit train wrote is in timm's layout whatever it was trained
     * from: this keeps its source's resampling (an HF DeiT's, without
     * antialiasing) for runs at another size. */
    cJSON_AddBoolToObject(json, "vitc_pos_embed_antialias", c->pos_embed_antialias);
}

base_status vit_config_from_hf_json(const cJSON *json, const char *name, vit_config *c,
                                   base_error *err) {
    stated_config stated;
    stated_init(&stated);
    const base_status s = read_hf_config(json, name, &stated, err);
    if (s != BASE_OK) return s;
    c->hidden_size = stated.hidden_size;
    c->num_layers = stated.num_layers;
    c->num_heads = stated.num_heads;
    c->mlp_size = stated.mlp_size;
    c->patch_size = stated.patch_size;
    c->image_size = stated.image_size;
    c->num_channels = stated.num_channels;
    c->layer_norm_eps = (float)stated.layer_norm_eps;
    c->act = stated.act > 0 ? VIT_ACT_QUICK_GELU : VIT_ACT_GELU;
    c->no_class_token = stated.class_token == 0;
    c->num_reg_tokens = stated.reg_tokens > 0 ? stated.reg_tokens : 0;
    c->no_embed_class = stated.no_embed_class > 0;
    c->global_pool = stated.global_pool > 0 ? (vit_global_pool)stated.global_pool : VIT_GLOBAL_POOL_TOKEN;
    c->fc_norm = stated.fc_norm > 0;
    c->pre_norm = stated.pre_norm > 0;
    c->qk_norm = stated.qk_norm > 0;
    c->no_qkv_bias = stated.qkv_bias == 0;
    c->pos_embed_antialias = stated.pos_antialias != 0; /* timm's, unless said */
    return BASE_OK;
}

/* Heads of timm's named ViT/DeiT sizes (their configs state no dims). */
static int timm_architecture_heads(const char *architecture) {
    static const struct { const char *prefix; int heads; } SIZES[] = {
        /* before vit_base_: timm builds this one with 16 heads */
        {"vit_base_patch16_gap_224", 16},
        {"vit_tiny_", 3},   {"vit_small_", 6},  {"vit_base_", 12},   {"vit_large_", 16},
        {"vit_huge_", 16},  {"deit_tiny_", 3},  {"deit_small_", 6},  {"deit_base_", 12},
        {"deit3_small_", 6}, {"deit3_medium_", 8}, {"deit3_base_", 12}, {"deit3_large_", 16},
        {"deit3_huge_", 16}, {"vit_medium_", 8}, {"vit_betwixt_", 10}, {"vit_mediumd_", 8},
    };
    for (size_t i = 0; architecture && i < sizeof SIZES / sizeof *SIZES; i++)
        if (strncmp(architecture, SIZES[i].prefix, strlen(SIZES[i].prefix)) == 0) return SIZES[i].heads;
    return 0;
}

/* The switches timm's architecture names fix in code, which their
 * config.json does not spell out (model_args is absent for hub models).
 * Those the tensors show (LayerScale, registers, class token, fc_norm,
 * pre_norm, qk-norm, qkv bias) are not listed: the tensors decide them.
 * README lists this table. First match wins. */
typedef struct timm_arch_switches {
    const char *pattern; /* substring of the architecture name */
    int act;             /* vit_act, -1: not fixed */
    double eps;          /* 0: timm's ViT default 1e-6 */
    int no_embed_class;  /* -1: not fixed */
    int global_pool;     /* -1: not fixed */
} timm_arch_switches;

static const timm_arch_switches TIMM_ARCH_SWITCHES[] = {
    /* OpenAI CLIP towers kept as trained: QuickGELU, nn.LayerNorm (1e-5), pre-norm */
    {"_clip_quickgelu_", VIT_ACT_QUICK_GELU, 1e-5, 0, VIT_GLOBAL_POOL_TOKEN},
    /* CLIP fine-tunes (openai_ft_in1k, laion2b_ft_in1k...): GELU, 1e-5, pre-norm */
    {"_clip_", VIT_ACT_GELU, 1e-5, 0, VIT_GLOBAL_POOL_TOKEN},
    /* DeiT III: LayerScale, pos_embed without the class token */
    {"deit3_", VIT_ACT_GELU, 0, 1, VIT_GLOBAL_POOL_TOKEN},
    /* vit_*_reg4_gap_*: registers, no class token, average pooling, no_embed_class */
    {"_reg1_gap_", VIT_ACT_GELU, 0, 1, VIT_GLOBAL_POOL_AVG},
    {"_reg2_gap_", VIT_ACT_GELU, 0, 1, VIT_GLOBAL_POOL_AVG},
    {"_reg4_gap_", VIT_ACT_GELU, 0, 1, VIT_GLOBAL_POOL_AVG},
    {"_reg8_gap_", VIT_ACT_GELU, 0, 1, VIT_GLOBAL_POOL_AVG},
    /* SigLIP towers: some use tanh GELU, which vitc does not run (act -2: refuse
     * unless model_args.act_layer says) */
    {"_siglip_", -2, 0, -1, -1},
    /* timm's DINOv2 ports: with registers, pos_embed without the prefix */
    {"_reg4_dinov2", VIT_ACT_GELU, 0, 1, VIT_GLOBAL_POOL_TOKEN},
    {"_dinov2", VIT_ACT_GELU, 0, 0, VIT_GLOBAL_POOL_TOKEN},
    /* vit_*_gap_*: no class token, average pooling */
    {"_gap_", VIT_ACT_GELU, 0, 0, VIT_GLOBAL_POOL_AVG},
    /* the original ViT / DeiT names */
    {"vit_", VIT_ACT_GELU, 0, -1, -1},
    {"deit_", VIT_ACT_GELU, 0, -1, -1},
};

static const timm_arch_switches *timm_arch_lookup(const char *architecture) {
    for (size_t i = 0; i < sizeof TIMM_ARCH_SWITCHES / sizeof *TIMM_ARCH_SWITCHES; i++)
        if (strstr(architecture, TIMM_ARCH_SWITCHES[i].pattern)) return &TIMM_ARCH_SWITCHES[i];
    return NULL;
}

/* timm config.json: dims only when the model was built with explicit
 * model_args; the architecture name alone fixes them by convention. Every
 * key is optional; a present one must be valid (base_json.h). */
static base_status read_timm_config(const cJSON *json, const char *name, stated_config *c,
                                   base_error *err) {
    const cJSON *args, *pretrained;
    base_status s;
    char shown[48];
    if ((s = json_object(json, "model_args", name, &args, err)) ||
        (s = json_object(json, "pretrained_cfg", name, &pretrained, err)) ||
        (s = base_json_int(args, "embed_dim", "model_args.", 1, MAX_STATED, name, &c->hidden_size, err)) ||
        (s = base_json_int(args, "depth", "model_args.", 1, MAX_STATED, name, &c->num_layers, err)) ||
        (s = base_json_int(args, "num_heads", "model_args.", 1, MAX_STATED, name, &c->num_heads, err)) ||
        (s = json_square(args, "patch_size", "model_args.", name, &c->patch_size, err)) ||
        (s = json_square(args, "img_size", "model_args.", name, &c->image_size, err)) ||
        (s = base_json_int(args, "in_chans", "model_args.", 1, MAX_STATED, name, &c->num_channels, err)) ||
        (s = base_json_number(args, "mlp_ratio", "model_args.", 0, 1e6, name, &c->mlp_ratio, err)) ||
        (s = base_json_int(json, "num_classes", "", 0, MAX_LABELS, name, &c->num_classes, err)) ||
        (s = json_bool(args, "class_token", "model_args.", name, &c->class_token, err)) ||
        (s = json_bool(args, "no_embed_class", "model_args.", name, &c->no_embed_class, err)) ||
        (s = json_bool(args, "fc_norm", "model_args.", name, &c->fc_norm, err)) ||
        (s = json_bool(args, "pre_norm", "model_args.", name, &c->pre_norm, err)) ||
        (s = json_bool(args, "qk_norm", "model_args.", name, &c->qk_norm, err)) ||
        (s = json_bool(args, "qkv_bias", "model_args.", name, &c->qkv_bias, err)) ||
        (s = base_json_int(args, "reg_tokens", "model_args.", 0, 4096, name, &c->reg_tokens, err)) ||
        (s = json_act(args, "act_layer", "model_args.", name, &c->act, err)) ||
        (s = json_pool(json, "global_pool", "", name, &c->global_pool, err)) ||
        (s = json_pool(args, "global_pool", "model_args.", name, &c->global_pool, err)))
        return s;
    if (!base_json_get(args, "reg_tokens")) c->reg_tokens = -1;
    if (c->act >= 0) c->act_stated_by = 1;
    const cJSON *input_size = base_json_get(pretrained, "input_size");
    if (input_size) {
        int channels, h, w;
        if (!cJSON_IsArray(input_size) || cJSON_GetArraySize(input_size) != 3 ||
            !whole_in_range(cJSON_GetArrayItem(input_size, 0), 1, MAX_STATED, &channels) ||
            !whole_in_range(cJSON_GetArrayItem(input_size, 1), 1, MAX_STATED, &h) ||
            !whole_in_range(cJSON_GetArrayItem(input_size, 2), 1, MAX_STATED, &w))
            return base_error_set(err, BASE_E_FORMAT, "%s: \"pretrained_cfg.input_size\" is %s; "
                                 "expected [channels, height, width] of whole numbers",
                                 name, base_json_show(input_size, shown, sizeof shown));
        if (!c->image_size) c->image_size = h;
    }
    const cJSON *architecture = base_json_get(json, "architecture");
    if (architecture && !cJSON_IsString(architecture))
        return base_error_set(err, BASE_E_FORMAT, "%s: \"architecture\" is %s; expected a string",
                             name, base_json_show(architecture, shown, sizeof shown));
    if (!c->num_heads && architecture) c->num_heads = timm_architecture_heads(architecture->valuestring);
    c->layer_norm_eps = 1e-6; /* timm's ViT default */
    if (architecture) {
        snprintf(c->architecture, sizeof c->architecture, "%s", architecture->valuestring);
        const timm_arch_switches *known = timm_arch_lookup(architecture->valuestring);
        if (known) {
            c->eps_stated = 1;
            if (known->eps > 0) c->layer_norm_eps = known->eps;
            if (c->act < 0 && known->act >= 0) c->act = known->act, c->act_stated_by = 2;
            if (c->act < 0 && known->act == -2)
                return base_error_set(err, BASE_E_UNSUPPORTED, "%s: timm architecture '%s' may use "
                                     "tanh GELU, which vitc does not run, and model_args.act_layer "
                                     "does not say", name, c->architecture);
            if (c->no_embed_class < 0) c->no_embed_class = known->no_embed_class;
            if (c->global_pool < 0) c->global_pool = known->global_pool;
        }
    }
    return BASE_OK;
}

static int is_timm_config(const cJSON *json) {
    return cJSON_GetObjectItemCaseSensitive(json, "architecture") ||
           cJSON_GetObjectItemCaseSensitive(json, "pretrained_cfg");
}

static void add_notice(vit_model *m, const char *text) {
    size_t used = strlen(m->notices);
    snprintf(m->notices + used, sizeof m->notices - used, "%s\n", text);
}

/* Checks a stated value against the one the tensors imply. */
static base_status check_stated(const vit_model *m, const char *what, int stated, int actual,
                               const char *tensor, base_error *err) {
    if (stated > 0 && stated != actual)
        return base_error_set(err, BASE_E_SHAPE,
                             "%s: %s says %s = %d but tensor '%s' implies %d",
                             weights_path(m->file), m->config_source, what, stated, tensor, actual);
    return BASE_OK;
}

/* The tensors whose shapes give the model's sizes and switches. */
typedef struct config_tensors {
    weights_ref patch, pos, fc1, head, dist, cls, reg, norm, fc_norm, norm_pre, ls1, q_norm, q_bias;
} config_tensors;

static base_status find_config_tensors(vit_model *m, config_tensors *t, base_error *err) {
    const char *path = weights_path(m->file);
    base_status status;
    const struct { weights_role role; weights_ref *ref; } FIND[] = {
        {WEIGHTS_PATCH_W, &t->patch},    {WEIGHTS_POS_EMBED, &t->pos},   {WEIGHTS_FC1_W, &t->fc1},
        {WEIGHTS_HEAD_W, &t->head},      {WEIGHTS_DIST_TOKEN, &t->dist}, {WEIGHTS_CLS_TOKEN, &t->cls},
        {WEIGHTS_REG_TOKEN, &t->reg},    {WEIGHTS_NORM_W, &t->norm},     {WEIGHTS_FC_NORM_W, &t->fc_norm},
        {WEIGHTS_NORM_PRE_W, &t->norm_pre}, {WEIGHTS_LS1, &t->ls1},      {WEIGHTS_Q_NORM_W, &t->q_norm},
        {WEIGHTS_Q_B, &t->q_bias},
    };
    for (size_t i = 0; i < sizeof FIND / sizeof *FIND; i++)
        if ((status = weights_layout_find(m->file, m->layout, FIND[i].role, 0, FIND[i].ref, err)))
            return status;
    const weights_ref *required[] = {&t->patch, &t->pos, &t->fc1};
    for (int i = 0; i < 3; i++)
        if (!required[i]->tensor)
            return base_error_set(err, BASE_E_FORMAT, "%s: missing tensor '%s' (%s layout)", path,
                                 required[i]->key, weights_layout_name(m->layout));

    return BASE_OK;
}

/* side when n is a square side * side, else -1. */
static int square_side(int64_t n) {
    if (n <= 0 || n > (1 << 24)) return -1;
    const int side = (int)llround(sqrt((double)n));
    return (int64_t)side * side == n ? side : -1;
}

/* Which leading prefix tokens the position embeddings hold rows for: the
 * layout's convention (HF: all, DINOv2: the class token), for timm the
 * table's shape, with no_embed_class from the config or the architecture
 * table where the shape allows both. Sets pos_embed_prefix, pos_embed_grid
 * and image_size. */
static base_status settle_pos_embed(vit_model *m, const stated_config *stated,
                                   const config_tensors *t, base_error *err) {
    vit_config *c = &m->config;
    const char *path = weights_path(m->file);
    const weights_tensor *pe = t->pos.tensor;
    const int64_t pos_tokens = pe->ndim >= 2 ? pe->shape[pe->ndim - 2] : 0;
    if (pe->ndim < 2 || pe->shape[pe->ndim - 1] != c->hidden_size || pos_tokens <= 0 ||
        (int64_t)pe->numel != pos_tokens * c->hidden_size)
        return shape_error(m, &t->pos, "[1, tokens, D]", err);
    const int prefix = c->num_prefix_tokens;
    int with_prefix = pos_tokens > prefix ? square_side(pos_tokens - prefix) : -1;
    int without = square_side(pos_tokens);
    if (m->layout == WEIGHTS_LAYOUT_HF_DINOV2) {
        /* Dinov2Embeddings: the class token's position, registers after. */
        with_prefix = -1;
        without = pos_tokens > 1 ? square_side(pos_tokens - 1) : -1;
        if (without < 0)
            return base_error_set(err, BASE_E_UNSUPPORTED, "%s: tensor '%s' holds %lld positions, "
                                 "not the class token's and a square grid", path, t->pos.key,
                                 (long long)pos_tokens);
        c->pos_embed_prefix = 1;
        c->pos_embed_grid = without;
    } else {
        if (m->layout != WEIGHTS_LAYOUT_TIMM || prefix == 0) without = prefix == 0 ? without : -1;
        int use_without;
        if (with_prefix > 0 && without > 0 && prefix > 0) {
            if (stated->no_embed_class < 0)
                return base_error_set(err, BASE_E_FORMAT, "%s: tensor '%s' (%lld positions) fits both "
                                     "a %dx%d grid with the %d prefix tokens and a %dx%d grid "
                                     "without them, and no config states no_embed_class",
                                     path, t->pos.key, (long long)pos_tokens, with_prefix,
                                     with_prefix, prefix, without, without);
            use_without = stated->no_embed_class;
        } else if (with_prefix > 0 || without > 0) {
            use_without = with_prefix <= 0;
            if (stated->no_embed_class >= 0 && prefix > 0 && stated->no_embed_class != use_without)
                return base_error_set(err, BASE_E_SHAPE, "%s: %s says no_embed_class = %s but tensor "
                                     "'%s' holds %lld positions (%s the %d prefix tokens)",
                                     path, m->config_source,
                                     stated->no_embed_class ? "true" : "false", t->pos.key,
                                     (long long)pos_tokens, use_without ? "without" : "with", prefix);
        } else {
            return base_error_set(err, BASE_E_UNSUPPORTED,
                                 "%s: tensor '%s' holds %lld positions: not a square grid, with or "
                                 "without the %d prefix tokens", path, t->pos.key,
                                 (long long)pos_tokens, prefix);
        }
        c->pos_embed_prefix = use_without ? 0 : prefix;
        c->pos_embed_grid = use_without ? without : with_prefix;
    }
    c->no_embed_class = prefix > 0 && c->pos_embed_prefix == 0;
    c->image_size = c->pos_embed_grid * c->patch_size;
    return BASE_OK;
}

/* The prefix tokens (class, distillation, registers) from the tensors
 * present, checked against what the config states (sizes_from_tensors). */
static base_status settle_prefix_tokens(vit_model *m, const stated_config *stated,
                                       const config_tensors *t, base_error *err) {
    vit_config *c = &m->config;
    const char *path = weights_path(m->file);
    c->no_class_token = t->cls.tensor == NULL;
    c->distilled = t->dist.tensor != NULL;
    c->num_reg_tokens = 0;
    if (t->reg.tensor) {
        const weights_tensor *r = t->reg.tensor;
        const int64_t D = c->hidden_size;
        if (r->ndim < 1 || r->shape[r->ndim - 1] != D || r->numel % (size_t)D != 0 ||
            r->numel / (size_t)D > 4096 || r->numel == 0)
            return shape_error(m, &t->reg, "[1, registers, D]", err);
        c->num_reg_tokens = (int)(r->numel / (size_t)D);
    }
    if (stated->reg_tokens >= 0 && stated->reg_tokens != c->num_reg_tokens)
        return base_error_set(err, BASE_E_SHAPE, "%s: %s says %s = %d but the checkpoint "
                             "holds %d register tokens ('%s')", path, m->config_source,
                             m->layout == WEIGHTS_LAYOUT_TIMM ? "reg_tokens" : "num_register_tokens",
                             stated->reg_tokens,
                             c->num_reg_tokens, t->reg.key[0] ? t->reg.key : "reg_token");
    if (stated->class_token >= 0 && stated->class_token == c->no_class_token)
        return base_error_set(err, BASE_E_SHAPE, "%s: %s says class_token = %s but tensor '%s' is %s",
                             path, m->config_source, stated->class_token ? "true" : "false",
                             t->cls.key, c->no_class_token ? "absent" : "present");
    if (c->distilled && c->no_class_token)
        return base_error_set(err, BASE_E_FORMAT, "%s: tensor '%s' without a class token '%s'", path,
                             t->dist.key, t->cls.key);
    c->num_prefix_tokens = !c->no_class_token + c->distilled + c->num_reg_tokens;
    return BASE_OK;
}

/* The norms (final, fc_norm, pre-norm) and the pooling, from the tensors
 * present and what the config states (sizes_from_tensors). */
static base_status settle_norms_and_pool(vit_model *m, const stated_config *stated,
                                        const config_tensors *t, base_error *err) {
    vit_config *c = &m->config;
    const char *path = weights_path(m->file);
    c->no_final_norm = t->norm.tensor == NULL;
    c->fc_norm = t->fc_norm.tensor != NULL;
    c->pre_norm = t->norm_pre.tensor != NULL;
    if (c->no_final_norm && !c->fc_norm)
        return base_error_set(err, BASE_E_FORMAT, "%s: missing tensor '%s' (%s layout)", path,
                             t->norm.key, weights_layout_name(m->layout));
    if (stated->fc_norm > 0 && !c->fc_norm)
        return base_error_set(err, BASE_E_FORMAT, "%s: %s says fc_norm = true but tensor 'fc_norm.weight' "
                             "is missing", path, m->config_source);
    if (stated->pre_norm > 0 && !c->pre_norm)
        return base_error_set(err, BASE_E_FORMAT, "%s: %s says pre_norm = true but tensor "
                             "'norm_pre.weight' is missing", path, m->config_source);
    if (m->layout == WEIGHTS_LAYOUT_HF_DINOV2) {
        c->global_pool = VIT_GLOBAL_POOL_TOKEN; /* the features: Dinov2Model's pooler_output */
    } else if (c->no_class_token) {
        if (stated->global_pool == VIT_GLOBAL_POOL_TOKEN)
            return base_error_set(err, BASE_E_FORMAT, "%s: %s says global_pool = \"token\" but the "
                                 "checkpoint has no class token ('%s')", path, m->config_source,
                                 t->cls.key);
        c->global_pool = VIT_GLOBAL_POOL_AVG; /* the only pooling without a class token */
    } else if (stated->global_pool >= 0) {
        c->global_pool = (vit_global_pool)stated->global_pool;
    } else if (c->fc_norm) {
        /* timm's default ties fc_norm to avg, but a class token with fc_norm
         * exists both ways (BEiT-style fine-tunes): not a guess to make. */
        return base_error_set(err, BASE_E_FORMAT, "%s: the checkpoint has a class token and fc_norm, "
                             "and no config states global_pool (\"token\" or \"avg\")", path);
    } else {
        c->global_pool = VIT_GLOBAL_POOL_TOKEN;
    }
    if (c->distilled && c->global_pool != VIT_GLOBAL_POOL_TOKEN)
        return base_error_set(err, BASE_E_UNSUPPORTED, "%s: a distilled model with average pooling "
                             "is not supported", path);

    return BASE_OK;
}

/* The patch, block, MLP, grid and class counts and the switches the
 * tensors imply. */
static base_status sizes_from_tensors(vit_model *m, const stated_config *stated,
                                     const config_tensors *t, base_error *err) {
    vit_config *c = &m->config;
    const char *path = weights_path(m->file);
    const weights_tensor *pw = t->patch.tensor;
    if (pw->ndim != 4 || pw->shape[2] != pw->shape[3] || pw->shape[0] <= 0 || pw->shape[0] > 65536 ||
        pw->shape[1] <= 0 || pw->shape[1] > 64 || pw->shape[2] <= 0 || pw->shape[2] > 1024)
        return shape_error(m, &t->patch, "[D, channels, P, P]", err);
    c->hidden_size = (int)pw->shape[0];
    c->num_channels = (int)pw->shape[1];
    /* Images reach the model as RGB only (data_image is RGB, and vit train
     * stores grey models with their kernel spread over 3 channels): any
     * other count would make every forward pass read past each image. */
    if (c->num_channels != 3)
        return base_error_set(err, BASE_E_UNSUPPORTED,
                             "%s: tensor '%s' takes %d input channels; only 3 (RGB) are supported",
                             path, t->patch.key, c->num_channels);
    c->patch_size = (int)pw->shape[2];
    c->num_layers = weights_layout_num_layers(m->file, m->layout);
    if (c->num_layers <= 0)
        return base_error_set(err, BASE_E_FORMAT, "%s: no encoder blocks found (%s layout)", path,
                             weights_layout_name(m->layout));

    base_status status = settle_prefix_tokens(m, stated, t, err);
    if (status != BASE_OK) return status;

    const weights_tensor *fc = t->fc1.tensor;
    if (fc->ndim != 2 || fc->shape[1] != c->hidden_size || fc->shape[0] <= 0 || fc->shape[0] > (1 << 20))
        return shape_error(m, &t->fc1, "[mlp, D]", err);
    c->mlp_size = (int)fc->shape[0];

    if ((status = settle_pos_embed(m, stated, t, err)) != BASE_OK ||
        (status = settle_norms_and_pool(m, stated, t, err)) != BASE_OK)
        return status;

    c->num_classes = 0;
    if (t->head.tensor) {
        const int64_t in = vit_config_pooled_size(c) *
                           (m->layout == WEIGHTS_LAYOUT_HF_DINOV2 ? 2 : 1);
        if (t->head.tensor->ndim != 2 || t->head.tensor->shape[1] != in ||
            t->head.tensor->shape[0] <= 0 || t->head.tensor->shape[0] > MAX_LABELS) {
            char expected[64];
            snprintf(expected, sizeof expected, "[classes, %lld]", (long long)in);
            return shape_error(m, &t->head, expected, err);
        }
        c->num_classes = (int)t->head.tensor->shape[0];
        /* Dinov2ForImageClassification: the classifier reads [CLS ‖ mean(patches)]. */
        if (m->layout == WEIGHTS_LAYOUT_HF_DINOV2) c->global_pool = VIT_GLOBAL_POOL_TOKEN_AVG;
    }
    if (m->layout == WEIGHTS_LAYOUT_HF_DINOV2 && c->no_class_token)
        return base_error_set(err, BASE_E_FORMAT, "%s: missing tensor '%s' (%s layout)", path,
                             t->cls.key, weights_layout_name(m->layout));
    return BASE_OK;
}

/* Whether the blocks hold a per-block switch's tensors (roles): none in
 * any block is off; one anywhere is on, and then every block must hold
 * every one of them, else the error names the first missing (block 0 alone
 * used to decide, so a file without blocks.0.ls1.gamma ran with LayerScale
 * off and the other blocks' gammas loaded but unused). */
static base_status block_switch(vit_model *m, const weights_role *roles, int num_roles,
                               const char *what, int *on, base_error *err) {
    const int layers = m->config.num_layers;
    weights_ref ref, seen = {0};
    base_status status;
    *on = 0;
    for (int l = 0; l < layers && !*on; l++)
        for (int i = 0; i < num_roles && !*on; i++) {
            if ((status = weights_layout_find(m->file, m->layout, roles[i], l, &ref, err))) return status;
            if (ref.tensor) *on = 1, seen = ref;
        }
    for (int l = 0; *on && l < layers; l++)
        for (int i = 0; i < num_roles; i++) {
            if ((status = weights_layout_find(m->file, m->layout, roles[i], l, &ref, err))) return status;
            if (!ref.tensor && ref.key[0]) /* "": the layout has no such tensor */
                return base_error_set(err, BASE_E_FORMAT, "%s: missing tensor '%s' (%s layout): '%s' "
                                     "is there, and %s needs its tensors in every block",
                                     weights_path(m->file), ref.key,
                                     weights_layout_name(m->layout), seen.key, what);
        }
    return BASE_OK;
}

/* The per-block switches, decided from all blocks (block_switch), and
 * checked against what the config states. */
static base_status settle_block_switches(vit_model *m, const stated_config *stated,
                                        const config_tensors *t, base_error *err) {
    vit_config *c = &m->config;
    const char *path = weights_path(m->file);
    static const weights_role LS[] = {WEIGHTS_LS1, WEIGHTS_LS2};
    static const weights_role QK_NORM[] = {WEIGHTS_Q_NORM_W, WEIGHTS_Q_NORM_B, WEIGHTS_K_NORM_W,
                                           WEIGHTS_K_NORM_B};
    static const weights_role QKV_BIAS[] = {WEIGHTS_Q_B, WEIGHTS_K_B, WEIGHTS_V_B};
    int qkv_bias;
    base_status status;
    if ((status = block_switch(m, LS, 2, "LayerScale", &c->layer_scale, err)) ||
        (status = block_switch(m, QK_NORM, 4, "qk-norm", &c->qk_norm, err)) ||
        (status = block_switch(m, QKV_BIAS, 3, "the QKV bias", &qkv_bias, err)))
        return status;
    c->no_qkv_bias = !qkv_bias;
    if (stated->qk_norm >= 0 && stated->qk_norm != c->qk_norm)
        return base_error_set(err, BASE_E_SHAPE, "%s: %s says qk_norm = %s but tensor '%s' is %s",
                             path, m->config_source, stated->qk_norm ? "true" : "false",
                             t->q_norm.key, c->qk_norm ? "present" : "absent");
    if (stated->qkv_bias >= 0 && stated->qkv_bias == c->no_qkv_bias)
        return base_error_set(err, BASE_E_SHAPE, "%s: %s says qkv_bias = %s but tensor '%s' is %s",
                             path, m->config_source, stated->qkv_bias ? "true" : "false",
                             t->q_bias.key, c->no_qkv_bias ? "absent" : "present");
    return BASE_OK;
}

/* Every size the config states must be the one the tensors imply. */
static base_status check_stated_sizes(const vit_model *m, const stated_config *stated,
                                     const config_tensors *t, base_error *err) {
    const vit_config *c = &m->config;
    const char *path = weights_path(m->file);
    base_status status;
    if ((status = check_stated(m, "hidden size", stated->hidden_size, c->hidden_size, t->patch.key, err)) ||
        (status = check_stated(m, "patch size", stated->patch_size, c->patch_size, t->patch.key, err)) ||
        (status = check_stated(m, "channels", stated->num_channels, c->num_channels, t->patch.key, err)) ||
        (status = check_stated(m, "layers", stated->num_layers, c->num_layers, "encoder blocks", err)) ||
        (status = check_stated(m, "MLP size", stated->mlp_size, c->mlp_size, t->fc1.key, err)) ||
        (status = check_stated(m, "image size", stated->image_size, c->image_size, t->pos.key, err)))
        return status;
    /* timm builds the MLP as int(embed_dim * mlp_ratio). */
    if (stated->mlp_ratio > 0 && (double)c->hidden_size * stated->mlp_ratio < MAX_STATED &&
        (status = check_stated(m, "MLP size", (int)(c->hidden_size * stated->mlp_ratio), c->mlp_size,
                               t->fc1.key, err)))
        return status;
    if (stated->num_classes >= 0 && t->head.tensor && stated->num_classes != c->num_classes)
        return base_error_set(err, BASE_E_SHAPE, "%s: %s says num_classes = %d but tensor '%s' implies %d",
                             path, m->config_source, stated->num_classes, t->head.key, c->num_classes);
    return BASE_OK;
}

/* Heads and eps: the config's when stated, else the standard ones (noted). */
static base_status settle_heads_and_eps(vit_model *m, const stated_config *stated, const cJSON *json,
                                       base_error *err) {
    vit_config *c = &m->config;
    const char *path = weights_path(m->file);
    if (stated->num_heads > 0) {
        c->num_heads = stated->num_heads;
    } else {
        /* timm's and Hugging Face's standard ViT/DeiT sizes all use 64-wide heads. */
        c->num_heads = c->hidden_size % 64 == 0 ? c->hidden_size / 64 : 1;
        char note[160];
        snprintf(note, sizeof note, "%s: number of heads not stated, using %d (hidden size / 64)",
                 path, c->num_heads);
        add_notice(m, note);
    }
    if (c->num_heads <= 0 || c->hidden_size % c->num_heads != 0)
        return base_error_set(err, BASE_E_SHAPE, "%s: %d heads do not divide hidden size %d", path,
                             c->num_heads, c->hidden_size);
    if (!(stated->layer_norm_eps > 0 && stated->layer_norm_eps < 1))
        return base_error_set(err, BASE_E_FORMAT, "%s: %s says layer_norm_eps = %g; expected a "
                             "positive number below 1", path, m->config_source, stated->layer_norm_eps);
    c->layer_norm_eps = (float)stated->layer_norm_eps;
    /* CLIP-style towers (norm_pre) come with nn.LayerNorm's 1e-5 and, from
     * OpenAI, QuickGELU: neither shows in the tensors, so a file that has
     * norm_pre must have them said (config, or a known timm architecture). */
    if (c->pre_norm && !stated->eps_stated)
        return base_error_set(err, BASE_E_FORMAT, "%s: the checkpoint has norm_pre (a CLIP-style "
                             "tower) but %s%s%s; cannot tell its LayerNorm eps (1e-5 or 1e-6)", path,
                             !json ? "no config"
                             : stated->architecture[0] ? "vitc does not know the timm architecture '"
                                                       : "the config does not say",
                             stated->architecture, stated->architecture[0] ? "'" : "");
    if (stated->act >= 0) {
        c->act = (vit_act)stated->act;
    } else if (c->pre_norm) {
        return base_error_set(err, BASE_E_FORMAT, "%s: the checkpoint has norm_pre (a CLIP-style "
                             "tower) but %s; cannot tell its activation (gelu or quick_gelu)",
                             path, !json ? "no config" : "the config does not say (act_layer / hidden_act)");
    } else {
        c->act = VIT_ACT_GELU;
    }
    if (!json) {
        char note[160];
        snprintf(note, sizeof note, "%s: no config, layer-norm eps %g (timm default)", path,
                 (double)c->layer_norm_eps);
        add_notice(m, note);
    }
    return BASE_OK;
}

/* Settles the configuration: sizes from the tensors (they cannot lie about
 * what is in the file), heads and eps from the config when stated. */
static base_status settle_config(vit_model *m, const cJSON *json, int json_is_timm,
                                const char *config_path, base_error *err) {
    stated_config stated;
    stated_init(&stated);
    base_status status = BASE_OK;
    if (json) {
        if (json_is_timm) status = read_timm_config(json, config_path, &stated, err);
        else status = read_hf_config(json, config_path, &stated, err);
        if (status != BASE_OK) return status;
    } else {
        stated.layer_norm_eps = 1e-6;
    }
    config_tensors tensors;
    if ((status = find_config_tensors(m, &tensors, err)) ||
        (status = sizes_from_tensors(m, &stated, &tensors, err)) ||
        (status = settle_block_switches(m, &stated, &tensors, err)) ||
        (status = check_stated_sizes(m, &stated, &tensors, err)))
        return status;
    /* timm >= 0.9 resamples with antialiasing; transformers' ViT, DeiT and
     * Dinov2 without, its Dinov2WithRegisters with. */
    m->library_antialias =
        m->layout == WEIGHTS_LAYOUT_TIMM ||
        (m->layout == WEIGHTS_LAYOUT_HF_DINOV2 &&
         (stated.dinov2 == 2 || (stated.dinov2 == 0 && m->config.num_reg_tokens > 0)));
    if (stated.pos_antialias >= 0) m->library_antialias = stated.pos_antialias;
    return settle_heads_and_eps(m, &stated, json, err);
}

/* --------------------------------------------------------------- labels */

/* One label per line; a final newline does not start another label. */
static base_status set_labels_from_lines(vit_model *m, const char *text, const char *source,
                                        base_error *err) {
    return data_labels_parse(text, source, MAX_LABELS, &m->labels, &m->num_labels, err);
}

static base_status set_labels_from_id2label(vit_model *m, const cJSON *id2label,
                                           const char *config_path, base_error *err) {
    const int count = cJSON_GetArraySize(id2label);
    if (count <= 0 || count > MAX_LABELS) return BASE_OK;
    m->labels = calloc((size_t)count + 1, sizeof *m->labels);
    if (!m->labels) return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", config_path);
    m->num_labels = count; /* so a failure part-way frees what was filled */
    const cJSON *item;
    cJSON_ArrayForEach(item, id2label) {
        char *end;
        long index = strtol(item->string, &end, 10);
        if (*end || end == item->string || index < 0 || index >= count || !cJSON_IsString(item))
            return base_error_set(err, BASE_E_FORMAT, "%s: id2label entry \"%.40s\" is not an index 0..%d with a string label",
                                 config_path, strpbrk(item->string, "\n\r") ? "(key with a line break)" : item->string,
                                 count - 1);
        if (m->labels[index])
            return base_error_set(err, BASE_E_FORMAT, "%s: id2label has index %ld twice", config_path, index);
        if (!(m->labels[index] = strdup(item->valuestring)))
            return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", config_path);
    }
    return BASE_OK;
}

static base_status settle_labels(vit_model *m, const cJSON *json, const char *config_path,
                                const vit_load_options *options, base_error *err) {
    base_status status = BASE_OK;
    const int classes = m->config.num_classes;
    if (options && options->labels_path) {
        char *text = read_text_file(options->labels_path, MAX_LABELS_BYTES, err);
        if (!text) return err ? err->code : BASE_E_IO;
        status = set_labels_from_lines(m, text, options->labels_path, err);
        free(text);
        if (status != BASE_OK) return status;
        if (m->num_labels != classes)
            return base_error_set(err, BASE_E_SHAPE, "%s: %d labels for a model with %d classes",
                                 options->labels_path, m->num_labels, classes);
        snprintf(m->labels_source, sizeof m->labels_source, "--labels FILE");
        return BASE_OK;
    }
    /* A headless model has no classes to name: its id2label (transformers
     * writes LABEL_0, LABEL_1 by default) is not used. */
    const cJSON *id2label = json && classes > 0 ? base_json_get(json, "id2label") : NULL;
    if (id2label) {
        char shown[48];
        if (!cJSON_IsObject(id2label))
            return base_error_set(err, BASE_E_FORMAT, "%s: \"id2label\" is %s; expected an object",
                                 config_path, base_json_show(id2label, shown, sizeof shown));
        /* Labels of another count belong to another head: using them, or
         * silently others, would name every prediction wrongly. */
        const int count = cJSON_GetArraySize(id2label);
        if (count != classes)
            return base_error_set(err, BASE_E_SHAPE, "%s: id2label has %d labels but the model has "
                                 "%d classes", config_path, count, classes);
        status = set_labels_from_id2label(m, id2label, config_path, err);
        if (status == BASE_OK)
            snprintf(m->labels_source, sizeof m->labels_source, "%s id2label",
                     strcmp(m->config_source, "config.json") == 0 ? "config.json"
                                                                  : "safetensors __metadata__ config");
        return status;
    }
    if (classes == 1000) {
        status = set_labels_from_lines(m, weights_imagenet1k_labels(), "ImageNet-1k labels", err);
        if (status == BASE_OK) snprintf(m->labels_source, sizeof m->labels_source, "ImageNet-1k (shipped)");
        return status;
    }
    snprintf(m->labels_source, sizeof m->labels_source, "none");
    return BASE_OK;
}

/* ------------------------------------------------------------- weights */

static base_status take_all(vit_model *m, base_error *err) {
    const vit_config *c = &m->config;
    const int D = c->hidden_size, M = c->mlp_size, K = c->num_channels * c->patch_size * c->patch_size;
    const int dh = D / c->num_heads;
    const int grid = c->pos_embed_grid;
    const int pos_rows = c->pos_embed_prefix + grid * grid;
    base_status s;
    if (!(m->used = calloc(weights_count(m->file) + 1, 1)))
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    char note[512];
    if (vit_packed_settle(m, note, sizeof note)) add_notice(m, note);
    if ((s = take(m, WEIGHTS_PATCH_W, 0, D, K, 0, &m->patch_w, err)) ||
        /* timm: bias = not pre_norm (CLIP towers have none) */
        (s = take(m, WEIGHTS_PATCH_B, 0, 1, D, c->pre_norm, &m->patch_b, err)) ||
        (s = take(m, WEIGHTS_CLS_TOKEN, 0, 1, D, c->no_class_token, &m->cls_token, err)) ||
        (s = take(m, WEIGHTS_DIST_TOKEN, 0, 1, D, !c->distilled, &m->dist_token, err)) ||
        (s = take(m, WEIGHTS_REG_TOKEN, 0, 1, (int64_t)c->num_reg_tokens * D, !c->num_reg_tokens,
                  &m->reg_tokens, err)) ||
        (s = take(m, WEIGHTS_POS_EMBED, 0, 1, (int64_t)pos_rows * D, 0, &m->pos_embed, err)) ||
        (s = take(m, WEIGHTS_NORM_PRE_W, 0, 1, D, !c->pre_norm, &m->norm_pre_w, err)) ||
        (s = take(m, WEIGHTS_NORM_PRE_B, 0, 1, D, !c->pre_norm, &m->norm_pre_b, err)) ||
        (s = take(m, WEIGHTS_NORM_W, 0, 1, D, c->no_final_norm, &m->norm_w, err)) ||
        (s = take(m, WEIGHTS_NORM_B, 0, 1, D, c->no_final_norm, &m->norm_b, err)) ||
        (s = take(m, WEIGHTS_FC_NORM_W, 0, 1, D, !c->fc_norm, &m->fc_norm_w, err)) ||
        (s = take(m, WEIGHTS_FC_NORM_B, 0, 1, D, !c->fc_norm, &m->fc_norm_b, err)))
        return s;
    if (!(m->blocks = calloc((size_t)c->num_layers, sizeof *m->blocks)))
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    for (int l = 0; l < c->num_layers; l++) {
        vit_block *b = &m->blocks[l];
        if ((s = take(m, WEIGHTS_LN1_W, l, 1, D, 0, &b->ln1_w, err)) ||
            (s = take(m, WEIGHTS_LN1_B, l, 1, D, 0, &b->ln1_b, err)) ||
            (s = take_qkv(m, l, &b->qkv_w, &b->qkv_b, &b->qkv_q, &b->qkv_h, err)) ||
            /* The attention output projection in int8 too: with the
             * kernels' fused group step (kernels_int8.h) top-1 agreed
             * with float32 on 497 of the 500 imagenet-sample photos
             * (DeiT-tiny) and 499 (ViT-tiny), against 496 and 498 with
             * it in float32 on its dequantised weights (bench/README.md,
             * "Issue 27: int8"). */
            (s = take_linear(m, WEIGHTS_PROJ_W, l, D, D, &b->proj_w, &b->proj_q, &b->proj_h,
                                &b->proj_f, err)) ||
            (s = take(m, WEIGHTS_PROJ_B, l, 1, D, 0, &b->proj_b, err)) ||
            (s = take(m, WEIGHTS_LN2_W, l, 1, D, 0, &b->ln2_w, err)) ||
            (s = take(m, WEIGHTS_LN2_B, l, 1, D, 0, &b->ln2_b, err)) ||
            (s = take_linear(m, WEIGHTS_FC1_W, l, M, D, &b->fc1_w, &b->fc1_q, &b->fc1_h,
                                &b->fc1_f, err)) ||
            (s = take(m, WEIGHTS_FC1_B, l, 1, M, 0, &b->fc1_b, err)) ||
            (s = take_linear(m, WEIGHTS_FC2_W, l, D, M, &b->fc2_w, &b->fc2_q, &b->fc2_h,
                                &b->fc2_f, err)) ||
            (s = take(m, WEIGHTS_FC2_B, l, 1, D, 0, &b->fc2_b, err)) ||
            /* settle_block_switches made each switch's tensors all or
             * nothing across blocks: optional means none anywhere. */
            (s = take(m, WEIGHTS_LS1, l, 1, D, !c->layer_scale, &b->ls1, err)) ||
            (s = take(m, WEIGHTS_LS2, l, 1, D, !c->layer_scale, &b->ls2, err)) ||
            (s = take(m, WEIGHTS_Q_NORM_W, l, 1, dh, !c->qk_norm, &b->q_norm_w, err)) ||
            (s = take(m, WEIGHTS_Q_NORM_B, l, 1, dh, !c->qk_norm, &b->q_norm_b, err)) ||
            (s = take(m, WEIGHTS_K_NORM_W, l, 1, dh, !c->qk_norm, &b->k_norm_w, err)) ||
            (s = take(m, WEIGHTS_K_NORM_B, l, 1, dh, !c->qk_norm, &b->k_norm_b, err)))
            return s;
        if ((b->qkv_b == NULL) != c->no_qkv_bias)
            return base_error_set(err, BASE_E_FORMAT, "%s: block %d %s a qkv bias but block 0 %s",
                                 weights_path(m->file), l, b->qkv_b ? "has" : "lacks",
                                 c->no_qkv_bias ? "does not" : "has one");
    }
    if (c->num_classes > 0) {
        const int C = c->num_classes, in = vit_config_pooled_size(c);
        if ((s = take(m, WEIGHTS_HEAD_W, 0, C, in, 0, &m->head_w, err)) ||
            (s = take(m, WEIGHTS_HEAD_B, 0, 1, C, 0, &m->head_b, err)))
            return s;
        /* A distilled model may come with a distillation head (timm,
         * HF WithTeacher) or without (HF DeiTForImageClassification reads
         * the class token only). */
        if (m->dist_token) {
            if ((s = take(m, WEIGHTS_HEAD_DIST_W, 0, C, D, 1, &m->head_dist_w, err)) ||
                (s = take(m, WEIGHTS_HEAD_DIST_B, 0, 1, C, m->head_dist_w == NULL, &m->head_dist_b, err)))
                return s;
        }
    }
    return BASE_OK;
}

/* No tensor silently ignored: one the forward pass does not read (other
 * than the layout's known-unneeded ones) refuses the load, or with
 * allow_unused is named in a notice. */
static base_status check_unused(vit_model *m, int allow_unused, base_error *err) {
    char names[400] = "";
    size_t used_len = 0, count = 0;
    for (size_t i = 0; i < weights_count(m->file); i++) {
        const weights_tensor *t = weights_at(m->file, i);
        if (m->used[i] || weights_layout_known_unneeded(m->layout, t->name)) continue;
        if (count < 4 && used_len < sizeof names - 2)
            used_len += (size_t)snprintf(names + used_len, sizeof names - used_len, "%s'%.80s'",
                                         count ? ", " : "", t->name);
        count++;
    }
    if (!count) return BASE_OK;
    char more[48] = "";
    if (count > 4) snprintf(more, sizeof more, " and %zu more", count - 4);
    if (!allow_unused)
        return base_error_set(err, BASE_E_UNSUPPORTED,
                             "%s: %zu tensor%s the forward pass would not use: %s%s (a model "
                             "vitc does not support; --allow-unused loads it anyway)",
                             weights_path(m->file), count, count == 1 ? "" : "s", names, more);
    char note[700];
    snprintf(note, sizeof note, "%s: warning: %zu tensor%s not used (--allow-unused): %s%s",
             weights_path(m->file), count, count == 1 ? "" : "s", names, more);
    add_notice(m, note);
    return BASE_OK;
}

static void describe_dtypes(vit_model *m) {
    int seen[WEIGHTS_BOOL + 1] = {0};
    for (size_t i = 0; i < weights_count(m->file); i++)
        if (!vit_packed_is_part(weights_at(m->file, i)->name)) seen[weights_at(m->file, i)->dtype] = 1;
    size_t used = 0;
    for (int d = 0; d <= WEIGHTS_BOOL; d++)
        if (seen[d] && used < sizeof m->dtypes)
            used += (size_t)snprintf(m->dtypes + used, sizeof m->dtypes - used, "%s%s",
                                     used ? "+" : "", weights_dtype_name((weights_dtype)d));
}

/* Finds the safetensors file and the directory its configs live in. */
static base_status locate(const char *path, char *weights_path_out, char *dir_out, size_t size,
                         base_error *err) {
    if (is_directory(path)) {
        snprintf(dir_out, size, "%s", path);
        snprintf(weights_path_out, size, "%s/model.safetensors", path);
        int missing;
        base_status status = check_regular(weights_path_out, &missing, err);
        if (status == BASE_OK && missing)
            return base_error_set(err, BASE_E_IO, "%s: no model.safetensors in this directory", path);
        return status;
    }
    base_status status = check_regular(path, NULL, err);
    if (status != BASE_OK) return status;
    snprintf(weights_path_out, size, "%s", path);
    const char *slash = strrchr(path, '/');
    if (slash)
        snprintf(dir_out, size, "%.*s", (int)(slash - path), path);
    else
        snprintf(dir_out, size, ".");
    if (!dir_out[0]) snprintf(dir_out, size, "/");
    return BASE_OK;
}

/* What a load reads besides the weights, as text (NULL: absent); names are
 * for messages. */
typedef struct load_texts {
    const char *config, *config_name;
    const char *preprocessor, *preprocessor_name;
} load_texts;

/* Parses a config JSON text after checking it against the limits. */
static base_status parse_config(const char *text, const char *name, const base_limits *limits,
                               cJSON **json, base_error *err) {
    return base_json_parse_object(text, name, limits, json, err);
}

/* The texts one load uses (NULL: none) and the names messages give them. */
typedef struct chosen_texts {
    const char *config, *preprocessor;
    int config_from_meta, preprocessor_from_meta;
    char config_name[4200], preprocessor_name[4200];
} chosen_texts;

/* Chooses the texts of a load, config and preprocessing each on its own:
 * the file beside the weights (texts) first and the weights' __metadata__
 * when there is none, or with own_first the weights' own first
 * (check_neighbours). Without any config, config_name names the weights
 * file. */
static void choose_texts(const vit_model *m, const load_texts *texts, int own_first,
                         chosen_texts *c) {
    const char *path = weights_path(m->file);
    const char *meta_config = weights_metadata(m->file, "config");
    const char *meta_pre = weights_metadata(m->file, "preprocessor_config");
    memset(c, 0, sizeof *c);
    if (texts->config && (!own_first || !meta_config)) {
        c->config = texts->config;
        snprintf(c->config_name, sizeof c->config_name, "%s", texts->config_name);
    } else if (meta_config) {
        c->config = meta_config;
        c->config_from_meta = 1;
        snprintf(c->config_name, sizeof c->config_name, "%s (__metadata__ config)", path);
    } else {
        snprintf(c->config_name, sizeof c->config_name, "%s", path);
    }
    if (texts->preprocessor && (!own_first || !meta_pre)) {
        c->preprocessor = texts->preprocessor;
        snprintf(c->preprocessor_name, sizeof c->preprocessor_name, "%s", texts->preprocessor_name);
    } else if (meta_pre) {
        c->preprocessor = meta_pre;
        c->preprocessor_from_meta = 1;
        snprintf(c->preprocessor_name, sizeof c->preprocessor_name,
                 "%s (__metadata__ preprocessor_config)", path);
    }
}

/* The chosen config parsed (*json NULL without one: sizes inferred from
 * the tensors). */
static base_status read_model_config(vit_model *m, const chosen_texts *texts,
                                    const base_limits *limits, cJSON **json, base_error *err) {
    if (!texts->config) {
        snprintf(m->config_source, sizeof m->config_source, "inferred from tensor shapes");
        return BASE_OK;
    }
    snprintf(m->config_source, sizeof m->config_source, "%s",
             texts->config_from_meta ? "safetensors __metadata__" : "config.json");
    return parse_config(texts->config, texts->config_name, limits, json, err);
}

/* The recipe must make the images the position embeddings were learned
 * for: smaller ones were read past their end by the patch embedding, larger
 * ones gave confident garbage. Another size on purpose is --size
 * (data_preprocess_set_size + vit_context_create). recipe_name names the
 * recipe's file in the message. */
static base_status check_recipe_size(const vit_model *m, const vit_load_options *options,
                                    const char *recipe_name, base_error *err) {
    data_preprocess retargeted = m->preprocess;
    const int asked = options ? options->input_size : 0;
    if (asked > 0) data_preprocess_set_size(&retargeted, asked);
    const int out_h = data_preprocess_out_height(&retargeted);
    const int out_w = data_preprocess_out_width(&retargeted);
    const int size = asked > 0 ? asked : m->config.image_size;
    if (out_h != size || out_w != size)
        return base_error_set(err, BASE_E_SHAPE, "%s: preprocessing makes %dx%d images but %s "
                             "takes %dx%d (%s)",
                             recipe_name, out_w, out_h,
                             asked > 0 ? "this run (input size)" : "the model", size, size,
                             weights_path(m->file));
    return BASE_OK;
}

/* The layout, the configuration (*json: the config parsed, NULL without
 * one) and how position embeddings are resampled. */
static base_status settle_model_config(vit_model *m, const chosen_texts *texts,
                                      const vit_load_options *options, cJSON **json,
                                      base_error *err) {
    const base_limits limits = base_limits_resolve(options ? options->limits : NULL);
    m->layout = weights_layout_detect(m->file);
    if (m->layout == WEIGHTS_LAYOUT_UNKNOWN)
        return base_error_set(err, BASE_E_UNSUPPORTED,
                             "%s: not a ViT/DeiT checkpoint in timm or Hugging Face layout "
                             "(no patch-embedding tensor found)", weights_path(m->file));
    base_status status = read_model_config(m, texts, &limits, json, err);
    if (status == BASE_OK)
        status = settle_config(m, *json, *json && is_timm_config(*json), texts->config_name, err);
    if (status != BASE_OK) return status;
    const vit_pos_resample resample = options ? options->pos_resample : VIT_POS_RESAMPLE_AUTO;
    m->config.pos_embed_antialias = resample == VIT_POS_RESAMPLE_AUTO
                                        ? m->library_antialias
                                        : resample == VIT_POS_RESAMPLE_BICUBIC_AA;
    return BASE_OK;
}

/* The labels and the preprocessing recipe, once the configuration is
 * settled. A config serves preprocessing too (timm's pretrained_cfg, in
 * config.json or in __metadata__, where vit quantize copies it). */
static base_status settle_labels_and_recipe(vit_model *m, const chosen_texts *texts,
                                           const cJSON *json, const vit_load_options *options,
                                           base_error *err) {
    const base_limits limits = base_limits_resolve(options ? options->limits : NULL);
    base_status status = settle_labels(m, json, texts->config_name, options, err);
    if (status == BASE_OK)
        status = data_preprocess_from_texts(texts->preprocessor, texts->preprocessor_name,
                                            texts->config, texts->config_name, m->config.image_size,
                                            &limits, &m->preprocess, err);
    if (status != BASE_OK) return status;
    /* transformers' DINOv2 resamples its position embeddings to whatever it
     * is given (518 learned, 224 crops in its recipe): its recipe's size is
     * the one it runs at. */
    if (m->layout == WEIGHTS_LAYOUT_HF_DINOV2 && !(options && options->input_size > 0)) {
        const int h = data_preprocess_out_height(&m->preprocess);
        if (h == data_preprocess_out_width(&m->preprocess) && h >= m->config.patch_size && h <= 8192)
            m->config.image_size = h;
    }
    status = check_recipe_size(m, options,
                               texts->preprocessor ? texts->preprocessor_name : texts->config_name,
                               err);
    if (texts->preprocessor_from_meta)
        snprintf(m->preprocess.source, sizeof m->preprocess.source, "safetensors __metadata__");
    m->preprocess.max_pixels = limits.max_pixels;
    return status;
}

/* "A" or "A and B": the files beside the weights a load read. */
static void name_neighbours(const load_texts *texts, char *out, size_t size) {
    snprintf(out, size, "%s%s%s", texts->config ? texts->config_name : "",
             texts->config && texts->preprocessor ? " and " : "",
             texts->preprocessor ? texts->preprocessor_name : "");
}

/* A file that carries its configuration (__metadata__: vit quantize and vit
 * train write it) and has config files beside it: the load used those (m);
 * settled from the weights' own texts first it must come out the same, or
 * the files beside would silently change the model (a config.json of
 * another model once moved eps, mean and std). Refused naming both and
 * what differs; files that repeat the weights' configuration are fine. */
static base_status check_neighbours(const vit_model *m, const load_texts *texts,
                                   const vit_load_options *options, base_error *err) {
    if ((!texts->config && !texts->preprocessor) ||
        (!weights_metadata(m->file, "config") && !weights_metadata(m->file, "preprocessor_config")))
        return BASE_OK;
    vit_model *own = calloc(1, sizeof *own);
    chosen_texts *chosen = malloc(sizeof *chosen);
    char beside[8500], diff[400];
    name_neighbours(texts, beside, sizeof beside);
    base_status status = own && chosen ? BASE_OK : base_error_set(err, BASE_E_NOMEM, "out of memory");
    cJSON *json = NULL;
    if (status == BASE_OK) {
        own->file = m->file; /* borrowed: not closed below */
        choose_texts(own, texts, 1, chosen);
        status = settle_model_config(own, chosen, options, &json, err);
        if (status == BASE_OK) status = settle_labels_and_recipe(own, chosen, json, options, err);
        if (status != BASE_OK) {
            char inner[sizeof err->message];
            snprintf(inner, sizeof inner, "%s", err ? err->message : "");
            status = base_error_set(err, status, "%s (the configuration the weights carry; %s "
                                   "beside them may not replace it)", inner, beside);
        } else if (vit_model_settings_diff(own, m, diff, sizeof diff)) {
            status = base_error_set(err, BASE_E_FORMAT, "%s: the configuration it carries "
                                   "(__metadata__) and %s beside it disagree: %s (its own vs "
                                   "beside it); remove or correct the file beside it",
                                   weights_path(m->file), beside, diff);
        }
    }
    cJSON_Delete(json);
    if (own) own->file = NULL;
    vit_model_free(own);
    free(chosen);
    return status;
}

/* Everything after the weights are open: configuration, tensors, labels,
 * preprocessing. m->file is set; on failure the caller frees m. */
static base_status load_from(vit_model *m, const load_texts *texts, const vit_load_options *options,
                            base_error *err) {
    chosen_texts *chosen = malloc(sizeof *chosen);
    if (!chosen) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    choose_texts(m, texts, 0, chosen);
    cJSON *json = NULL;
    base_status status = settle_model_config(m, chosen, options, &json, err);
    if (status == BASE_OK) {
        const char *isa = options && options->isa ? options->isa : getenv("VITC_ISA");
        status = kernels_isa_choose(isa, &m->isa, err);
    }
    if (status == BASE_OK) status = take_all(m, err);
    if (status == BASE_OK) status = check_unused(m, options && options->allow_unused, err);
    if (status == BASE_OK)
        status = vit_model_pack(m, vit_threads_or_procs(options ? options->threads : 0), err);
    if (status == BASE_OK) status = settle_labels_and_recipe(m, chosen, json, options, err);
    if (status == BASE_OK) status = check_neighbours(m, texts, options, err);
    if (status == BASE_OK) {
        describe_dtypes(m);
        if ((chosen->config && !(m->config_text = strdup(chosen->config))) ||
            (chosen->preprocessor && !(m->preprocessor_text = strdup(chosen->preprocessor))))
            status = base_error_set(err, BASE_E_NOMEM, "%s: out of memory", weights_path(m->file));
    }
    cJSON_Delete(json);
    free(chosen);
    return status;
}

/* Reads dir/name into *text if it exists (else *text stays NULL). */
static base_status read_optional(const char *dir, const char *name, size_t max_bytes, char *path,
                                size_t path_size, char **text, base_error *err) {
    *text = NULL;
    snprintf(path, path_size, "%s/%s", dir, name);
    /* Only a file that is not there at all is absent: a FIFO, a device or a
     * directory in its place is a mistake to report, not to skip. */
    int missing;
    base_status status = check_regular(path, &missing, err);
    if (status != BASE_OK || missing) return status;
    return base_read_text_file(path, max_bytes, text, NULL, err);
}

base_status vit_model_load(const char *path, const vit_load_options *options, vit_model **out,
                          base_error *err) {
    *out = NULL;
    if (!path) return base_error_set(err, BASE_E_ARG, "no model given");
    const base_limits limits = base_limits_resolve(options ? options->limits : NULL);
    char weights_file_path[4096], dir[4096], config_path[4200], preprocessor_path[4200];
    base_status status = locate(path, weights_file_path, dir, sizeof dir, err);
    if (status != BASE_OK) return status;

    vit_model *m = calloc(1, sizeof *m);
    if (!m) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    char *config = NULL, *preprocessor = NULL;
    status = weights_open_limited(weights_file_path, &limits, &m->file, err);
    if (status == BASE_OK)
        status = read_optional(dir, "config.json", limits.max_json_bytes, config_path,
                               sizeof config_path, &config, err);
    if (status == BASE_OK)
        status = read_optional(dir, "preprocessor_config.json", limits.max_json_bytes,
                               preprocessor_path, sizeof preprocessor_path, &preprocessor, err);
    if (status == BASE_OK) {
        const load_texts texts = {config, config_path, preprocessor, preprocessor_path};
        status = load_from(m, &texts, options, err);
    }
    free(config);
    free(preprocessor);
    if (status != BASE_OK) {
        vit_model_free(m);
        return status;
    }
    *out = m;
    return BASE_OK;
}

base_status vit_model_load_memory(const void *weights, size_t size, const char *name,
                                 const char *config_json, const char *preprocessor_json,
                                 const vit_load_options *options, vit_model **out, base_error *err) {
    *out = NULL;
    if (!name) name = "(memory)";
    const base_limits limits = base_limits_resolve(options ? options->limits : NULL);
    vit_model *m = calloc(1, sizeof *m);
    if (!m) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    char config_name[4200], preprocessor_name[4200];
    snprintf(config_name, sizeof config_name, "%s config.json", name);
    snprintf(preprocessor_name, sizeof preprocessor_name, "%s preprocessor_config.json", name);
    base_status status = weights_open_memory(weights, size, name, &limits, &m->file, err);
    if (status == BASE_OK) {
        const load_texts texts = {config_json, config_name, preprocessor_json, preprocessor_name};
        status = load_from(m, &texts, options, err);
    }
    if (status != BASE_OK) {
        vit_model_free(m);
        return status;
    }
    *out = m;
    return BASE_OK;
}

void vit_model_free(vit_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->num_owned; i++) free(m->owned[i]);
    free(m->owned);
    vit_model_unpack(m);
    if (m->labels)
        for (int i = 0; i < m->num_labels; i++) free(m->labels[i]);
    free(m->labels);
    for (int l = 0; m->blocks && l < m->config.num_layers; l++) {
        kernels_qmatrix_free(m->blocks[l].qkv_q);
        kernels_qmatrix_free(m->blocks[l].proj_q);
        kernels_qmatrix_free(m->blocks[l].fc1_q);
        kernels_qmatrix_free(m->blocks[l].fc2_q);
        kernels_bmatrix_free(m->blocks[l].qkv_h);
        kernels_bmatrix_free(m->blocks[l].proj_h);
        kernels_bmatrix_free(m->blocks[l].fc1_h);
        kernels_bmatrix_free(m->blocks[l].fc2_h);
    }
    free(m->blocks);
    free(m->used);
    free(m->config_text);
    free(m->preprocessor_text);
    free(m->params);
    free(m->tensors);
    weights_close(m->file);
    free(m);
}

static const char *quantization_text(weights_quant to) {
    switch (to) {
    case WEIGHTS_QUANT_BF16: return "bf16: every float tensor rounded to bfloat16";
    case WEIGHTS_QUANT_INT8:
        return "int8: encoder linear-layer weights, symmetric, one float32 scale per 32 weights "
               "of a row (<name>_scale); activations quantised per row and group at run time";
    case WEIGHTS_QUANT_F32: return "f32: every float tensor as float32";
    default: return NULL; /* as stored: the source's own text stays */
    }
}

/* The source's own metadata, with the texts the model was loaded with in
 * place of the same keys, so the copy loads without files beside it; the
 * packing's keys left out (vit_model_write_packed sets them). keys and
 * values hold n_source + 3 pairs. */
static size_t copy_metadata(const vit_model *m, weights_quant to, const char **keys,
                            const char **values) {
    const weights_file *f = m->file;
    const char *quantization = quantization_text(to);
    size_t n = 0;
    for (size_t i = 0; i < weights_metadata_count(f); i++) {
        const char *key = weights_metadata_key(f, i);
        if (strcmp(key, "config") == 0 || strcmp(key, "preprocessor_config") == 0 ||
            (quantization && strcmp(key, "quantization") == 0) || vit_packed_is_key(key))
            continue;
        keys[n] = key;
        values[n++] = weights_metadata_value(f, i);
    }
    if (m->config_text) keys[n] = "config", values[n++] = m->config_text;
    if (m->preprocessor_text) keys[n] = "preprocessor_config", values[n++] = m->preprocessor_text;
    if (quantization) keys[n] = "quantization", values[n++] = quantization;
    return n;
}

/* Rewrites path (written by weights_quantize) with its matrices packed for
 * m's kernels: loaded on m's path, then written with the parts. */
static base_status pack_copy(const vit_model *m, const char *path, base_error *err) {
    const vit_load_options options = {.isa = kernels_isa_name(m->isa), .allow_unused = 1};
    vit_model *copy = NULL;
    base_status status = vit_model_load(path, &options, &copy, err);
    const size_t n_source = copy ? weights_metadata_count(copy->file) : 0;
    const char **keys = calloc(n_source + 1, sizeof *keys);
    const char **values = calloc(n_source + 1, sizeof *values);
    if (status == BASE_OK && (!keys || !values))
        status = base_error_set(err, BASE_E_NOMEM, "%s: out of memory", path);
    if (status == BASE_OK) {
        for (size_t i = 0; i < n_source; i++) {
            keys[i] = weights_metadata_key(copy->file, i);
            values[i] = weights_metadata_value(copy->file, i);
        }
        status = vit_model_write_packed(copy, path, keys, values, n_source, err);
    }
    free(keys);
    free(values);
    vit_model_free(copy);
    return status;
}

base_status vit_model_quantize(const vit_model *m, weights_quant to, int packed, const char *path,
                              base_error *err) {
    const size_t n_source = weights_metadata_count(m->file);
    const char **keys = calloc(n_source + 3, sizeof *keys);
    const char **values = calloc(n_source + 3, sizeof *values);
    if (!keys || !values) {
        free(keys);
        free(values);
        return base_error_set(err, BASE_E_NOMEM, "%s: out of memory", path);
    }
    const size_t n = copy_metadata(m, to, keys, values);
    base_status status = weights_quantize(m->file, to, path, keys, values, n, err);
    free(keys);
    free(values);
    if (status != BASE_OK || !packed) return status; /* failed: path untouched (atomic) */
    status = pack_copy(m, path, err);
    if (status != BASE_OK) remove(path); /* not left half done */
    return status;
}

const vit_config *vit_model_config(const vit_model *m) { return &m->config; }
const data_preprocess *vit_model_preprocess(const vit_model *m) { return &m->preprocess; }
weights_layout vit_model_layout(const vit_model *m) { return m->layout; }
const char *vit_model_config_source(const vit_model *m) { return m->config_source; }
const char *vit_model_notices(const vit_model *m) { return m->notices; }
const char *vit_model_weights_path(const vit_model *m) { return weights_path(m->file); }
size_t vit_model_param_count(const vit_model *m) { return m->param_count; }
const char *vit_model_dtypes(const vit_model *m) { return m->dtypes; }

int vit_model_int8_groups(const vit_model *m) {
    int most = 0;
    for (int l = 0; l < m->config.num_layers; l++) {
        const kernels_qmatrix *layers[4] = {m->blocks[l].qkv_q, m->blocks[l].proj_q,
                                            m->blocks[l].fc1_q, m->blocks[l].fc2_q};
        for (int i = 0; i < 4; i++)
            if (layers[i] && kernels_qmatrix_groups(layers[i]) > most)
                most = kernels_qmatrix_groups(layers[i]);
    }
    return most;
}

int vit_model_has_bf16(const vit_model *m) {
    for (int l = 0; l < m->config.num_layers; l++)
        if (m->blocks[l].qkv_h || m->blocks[l].proj_h || m->blocks[l].fc1_h || m->blocks[l].fc2_h)
            return 1;
    return 0;
}

const char *vit_model_bf16_kernels(const vit_model *m) {
    return vit_model_has_bf16(m) ? kernels_bf16_path(m->isa) : NULL;
}

const char *vit_model_int8_kernels(const vit_model *m) {
    return vit_model_int8_groups(m) ? kernels_isa_name(kernels_isa_int8(m->isa)) : NULL;
}

const char *vit_model_kernels(const vit_model *m) { return kernels_isa_name(m->isa); }
const char *vit_kernels_choices(void) { return kernels_isa_choices(); }
const char *vit_model_packing(const vit_model *m) {
    if (!m->mapped) return "packed at load";
    return m->packed ? "partly mapped from the file, partly packed at load" : "mapped from the file";
}
int vit_model_num_labels(const vit_model *m) { return m->num_labels; }
const char *vit_model_labels_source(const vit_model *m) { return m->labels_source; }

const char *vit_model_label(const vit_model *m, int class_index) {
    if (class_index < 0 || class_index >= m->num_labels) return NULL;
    return m->labels[class_index];
}

int vit_model_output_size(const vit_model *m) {
    return m->config.num_classes > 0 ? m->config.num_classes : m->config.hidden_size;
}

int vit_config_pooled_size(const vit_config *c) {
    return c->global_pool == VIT_GLOBAL_POOL_TOKEN_AVG ? 2 * c->hidden_size : c->hidden_size;
}

const char *vit_config_describe_switches(const vit_config *c, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
#define SWITCH(cond, ...)                                                                   \
    do {                                                                                    \
        if ((cond) && used < size) {                                                        \
            used += (size_t)snprintf(buf + used, size - used, "%s", used ? ", " : "");      \
            if (used < size) used += (size_t)snprintf(buf + used, size - used, __VA_ARGS__); \
        }                                                                                   \
    } while (0)
    SWITCH(c->no_class_token, "no class token");
    SWITCH(c->distilled, "distillation token");
    SWITCH(c->num_reg_tokens, "%d register tokens", c->num_reg_tokens);
    SWITCH(c->no_embed_class, "position embeddings without the prefix tokens (no_embed_class)");
    SWITCH(c->num_prefix_tokens > 1 && c->pos_embed_prefix == 1 && !c->no_class_token,
           "position embeddings for the class token only");
    SWITCH(c->pre_norm, "pre-norm (norm_pre)");
    SWITCH(c->layer_scale, "LayerScale");
    SWITCH(c->no_qkv_bias, "QKV without bias");
    SWITCH(c->qk_norm, "qk-norm");
    SWITCH(c->act == VIT_ACT_QUICK_GELU, "QuickGELU");
    SWITCH(c->no_final_norm, "no final norm");
    SWITCH(c->global_pool == VIT_GLOBAL_POOL_AVG, "average pooling");
    SWITCH(c->global_pool == VIT_GLOBAL_POOL_TOKEN_AVG, "[class token, mean of patches] pooling");
    SWITCH(c->fc_norm, "fc_norm after pooling");
#undef SWITCH
    return buf;
}
