/* preprocess.c — preprocessing recipes (timm pretrained_cfg, Hugging Face
 * image processors, default) and their application: resize, centre crop,
 * rescale and normalise into a planar float32 tensor.
 *
 * Semantic choices (each mirrors a reference implementation unless noted):
 *
 *  - timm eval transform: scale_size = floor(H / crop_pct) with H from
 *    input_size [3, H, W]; crop_mode "center" resizes the shorter side to
 *    scale_size (torchvision Resize(int): long side int(scale * long /
 *    short), truncated), "squash" resizes to scale_size x scale_size; both
 *    then CenterCrop(H, W) with top = round((h - ch) / 2) rounding half to
 *    even like Python. crop_mode "border" and non-square input_size with
 *    "center" (timm's ResizeKeepRatio) are refused as unsupported.
 *    Missing keys default to timm's: input_size 224, crop_pct 0.875,
 *    bicubic, ImageNet mean/std.
 *  - Hugging Face: size/crop_size as int N (N x N, get_size_dict with
 *    default_to_square), [h, w] list, {"height","width"} or
 *    {"shortest_edge"} (size only; long side int(N * long / short)).
 *    {"shortest_edge", "longest_edge"} is refused. Defaults follow the
 *    processor named by image_processor_type / feature_extractor_type:
 *    DeiT* -> 256x256 bicubic, crop 224, ImageNet mean/std; anything else
 *    -> ViT's 224x224 bilinear, no crop, mean/std 0.5. do_center_crop
 *    defaults to true when crop_size is given (or for DeiT). A JSON null is
 *    treated as an absent key. Centre crop top = (h - ch) // 2 (floor).
 *  - A recipe must produce a fixed output size, so configs that resize by
 *    shortest_edge (or not at all) without a centre crop are refused.
 *  - Crops larger than the image pad with zero pixels (before
 *    normalisation), as both references do; they only differ in where an
 *    odd padding goes: torchvision puts the smaller half on top/left
 *    (floor), transformers the larger (ceil).
 *  - Normalisation is float32: (float)(pixel * rescale) then (v - mean) /
 *    std, evaluated once per channel into a 256-entry table. For the
 *    usual rescale 1/255 we divide by 255 in double and round once, which
 *    equals torchvision's float32 p / 255 and transformers' float32(p *
 *    (1/255)) for every 8-bit value. Any other rescale_factor is held as a
 *    float in data_preprocess, so transformers' double product can differ
 *    from ours by one float32 ulp (about 2e-7).
 *  - data_preprocess_set_size: timm/default recipes recompute
 *    floor(size / crop_pct); Hugging Face recipes scale the resize by
 *    size / crop (rounded); recipes without a crop resize to size x size.
 *  - JSON texts are checked against base_limits (size, nesting) before
 *    parsing; std must be positive; sizes must be integers in 1..65536.
 *    A key that is present with a value of the wrong type or range is an
 *    error naming the file, the key and the value (base_json.h); only an
 *    absent (or null) key takes the default.
 */
#include "data.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resize_rows.h"
#include "base_json.h"

#define MAX_SIDE 65536

static const float IMAGENET_MEAN[3] = {0.485f, 0.456f, 0.406f};
static const float IMAGENET_STD[3] = {0.229f, 0.224f, 0.225f};
static const double DEFAULT_CROP_PCT = 0.875;

static void set_source(data_preprocess *p, const char *s) {
    snprintf(p->source, sizeof p->source, "%s", s);
}

/* floor(size / crop_pct) with crop_pct as the decimal the config wrote:
 * p->crop_pct is a float, and dividing by the float would floor 238 / 0.85
 * differently from Python's double arithmetic. */
static int timm_scale_size(int size, float crop_pct) {
    char text[32];
    snprintf(text, sizeof text, "%.7g", (double)crop_pct);
    double pct = strtod(text, NULL);
    return (int)floor((double)size / pct);
}

void data_preprocess_default(data_preprocess *p, int image_size) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    if (image_size <= 0) image_size = 224;
    p->resize_mode = DATA_RESIZE_SHORTEST_EDGE;
    p->resize_shortest = (int)floor(image_size / DEFAULT_CROP_PCT);
    p->resample = DATA_RESAMPLE_BICUBIC;
    p->do_center_crop = 1;
    p->crop_width = p->crop_height = image_size;
    p->crop_rounding = DATA_CROP_TORCHVISION;
    p->crop_pct = (float)DEFAULT_CROP_PCT;
    p->do_rescale = 1;
    p->rescale_factor = 1.0f / 255.0f;
    p->do_normalize = 1;
    memcpy(p->mean, IMAGENET_MEAN, sizeof p->mean);
    memcpy(p->std, IMAGENET_STD, sizeof p->std);
    set_source(p, "default");
}

/* ---- JSON helpers ---- */

/* A value from the file, for a one-line message. */
static const char *one_line(const char *s) {
    return strpbrk(s, "\n\r") ? "(text with a line break)" : s;
}

/* The item for key, with JSON null treated as absent. */
static const cJSON *get_key(const cJSON *obj, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return item && !cJSON_IsNull(item) ? item : NULL;
}

/* The value of item for a message (base_json_show into a buffer the caller
 * declares as `char shown[48]`). */
#define SHOW(item) base_json_show((item), shown, sizeof shown)

static int as_side(const cJSON *item, int *out) {
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    if (!(v >= 1 && v <= MAX_SIDE) || v != floor(v)) return 0;
    *out = (int)v;
    return 1;
}

static base_status get_bool(const cJSON *obj, const char *key, int *out, const char *name,
                           base_error *err) {
    const cJSON *item = get_key(obj, key);
    char shown[48];
    if (!item) return BASE_OK;
    if (!cJSON_IsBool(item))
        return base_error_set(err, BASE_E_FORMAT, "%s: \"%s\" is %s; expected true or false", name,
                             key, SHOW(item));
    *out = cJSON_IsTrue(item);
    return BASE_OK;
}

/* mean/std: a list of 3 numbers or a single number for all channels. */
static base_status get_triplet(const cJSON *obj, const char *key, float out[3], int positive,
                              const char *name, base_error *err) {
    const cJSON *item = get_key(obj, key);
    char shown[48];
    if (!item) return BASE_OK;
    double v[3];
    if (cJSON_IsNumber(item)) {
        v[0] = v[1] = v[2] = item->valuedouble;
    } else if (cJSON_IsArray(item) &&
               (cJSON_GetArraySize(item) == 3 || cJSON_GetArraySize(item) == 1)) {
        int n = cJSON_GetArraySize(item);
        for (int i = 0; i < n; i++) {
            const cJSON *e = cJSON_GetArrayItem(item, i);
            if (!cJSON_IsNumber(e))
                return base_error_set(err, BASE_E_FORMAT, "%s: \"%s\"[%d] is %s; expected a number",
                                     name, key, i, SHOW(e));
            v[i] = e->valuedouble;
        }
        if (n == 1) v[1] = v[2] = v[0];
    } else {
        return base_error_set(err, BASE_E_FORMAT, "%s: \"%s\" is %s; expected a list of 3 numbers",
                             name, key, SHOW(item));
    }
    for (int i = 0; i < 3; i++) {
        if (!isfinite(v[i]) || fabs(v[i]) > 1e6)
            return base_error_set(err, BASE_E_FORMAT, "%s: \"%s\"[%d] = %g is out of range", name,
                                 key, i, v[i]);
        if (positive && !(v[i] > 0))
            return base_error_set(err, BASE_E_FORMAT, "%s: \"%s\"[%d] = %g must be positive", name,
                                 key, i, v[i]);
        out[i] = (float)v[i];
    }
    return BASE_OK;
}

static base_status parse_json(const char *text, const char *name, const base_limits *limits,
                             cJSON **root, base_error *err) {
    return base_json_parse_object(text, name, limits, root, err);
}

/* ---- Hugging Face ---- */

typedef struct hf_size {
    int present;
    int shortest; /* > 0: shortest_edge */
    int height, width;
} hf_size;

static base_status get_hf_size(const cJSON *obj, const char *key, int allow_shortest, hf_size *out,
                              const char *name, base_error *err) {
    const cJSON *item = get_key(obj, key);
    char shown[48];
    if (!item) return BASE_OK;
    hf_size s = {1, 0, 0, 0};
    if (cJSON_IsNumber(item)) {
        if (!as_side(item, &s.height))
            return base_error_set(err, BASE_E_FORMAT,
                                 "%s: \"%s\" is %s; expected a whole number from 1 to %d", name,
                                 key, SHOW(item), MAX_SIDE);
        s.width = s.height;
    } else if (cJSON_IsArray(item)) {
        if (cJSON_GetArraySize(item) != 2 || !as_side(cJSON_GetArrayItem(item, 0), &s.height) ||
            !as_side(cJSON_GetArrayItem(item, 1), &s.width))
            return base_error_set(err, BASE_E_FORMAT,
                                 "%s: \"%s\" is %s; expected [height, width] with whole numbers "
                                 "from 1 to %d", name, key, SHOW(item), MAX_SIDE);
    } else if (cJSON_IsObject(item)) {
        const cJSON *h = get_key(item, "height"), *w = get_key(item, "width");
        const cJSON *se = get_key(item, "shortest_edge"), *le = get_key(item, "longest_edge");
        if (h || w) {
            if (!h || !w || !as_side(h, &s.height) || !as_side(w, &s.width))
                return base_error_set(err, BASE_E_FORMAT,
                                     "%s: \"%s\" is %s; expected whole numbers \"height\" and "
                                     "\"width\" from 1 to %d", name, key, SHOW(item), MAX_SIDE);
        } else if (se) {
            if (!allow_shortest)
                return base_error_set(err, BASE_E_UNSUPPORTED,
                                     "%s: \"%s\" with \"shortest_edge\" is not supported", name,
                                     key);
            if (le)
                return base_error_set(err, BASE_E_UNSUPPORTED,
                                     "%s: \"%s\" with \"longest_edge\" is not supported", name,
                                     key);
            if (!as_side(se, &s.shortest))
                return base_error_set(err, BASE_E_FORMAT,
                                     "%s: \"%s\" is %s; expected \"shortest_edge\" a whole number "
                                     "from 1 to %d", name, key, SHOW(item), MAX_SIDE);
        } else {
            return base_error_set(err, BASE_E_FORMAT,
                                 "%s: \"%s\" is %s; expected height/width or shortest_edge", name,
                                 key, SHOW(item));
        }
    } else {
        return base_error_set(err, BASE_E_FORMAT, "%s: \"%s\" is %s; expected a whole number or an "
                             "object", name, key, SHOW(item));
    }
    *out = s;
    return BASE_OK;
}

/* "rescale_factor" (absent: unchanged). */
static base_status hf_rescale_factor(const cJSON *root, const char *name, double *rescale,
                                    base_error *err) {
    char shown[48];
    const cJSON *item = get_key(root, "rescale_factor");
    if (item) {
        if (!cJSON_IsNumber(item) || !(item->valuedouble > 0) || !isfinite(item->valuedouble))
            return base_error_set(err, BASE_E_FORMAT,
                                 "%s: \"rescale_factor\" is %s; expected a positive number", name,
                                 SHOW(item));
        *rescale = item->valuedouble;
    }
    return BASE_OK;
}

/* "resample", a PIL filter number (absent: unchanged). */
static base_status hf_resample(const cJSON *root, const char *name, int *resample, base_error *err) {
    char shown[48];
    const cJSON *item = get_key(root, "resample");
    if (item) {
        if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
            fabs(item->valuedouble) > 1000)
            return base_error_set(err, BASE_E_FORMAT,
                                 "%s: \"resample\" is %s; expected a PIL filter number", name,
                                 SHOW(item));
        int r = (int)item->valuedouble;
        if (r != DATA_RESAMPLE_NEAREST && r != DATA_RESAMPLE_BILINEAR && r != DATA_RESAMPLE_BICUBIC)
            return base_error_set(err, BASE_E_UNSUPPORTED,
                                 "%s: \"resample\" %d is not supported (0 nearest, 2 bilinear, 3 "
                                 "bicubic)",
                                 name, r);
        *resample = r;
    }
    return BASE_OK;
}

static base_status hf_from_root(const cJSON *root, const char *name, data_preprocess *p,
                               base_error *err) {
    char shown[48];
    const char *type_key = "image_processor_type";
    const cJSON *type = get_key(root, type_key);
    if (!type) type = get_key(root, type_key = "feature_extractor_type");
    /* The type picks the defaults: a wrong one must not pick them silently. */
    if (type && !cJSON_IsString(type))
        return base_error_set(err, BASE_E_FORMAT, "%s: \"%s\" is %s; expected a string", name,
                             type_key, SHOW(type));
    int deit = type && strstr(type->valuestring, "DeiT") != NULL;

    /* transformers' defaults for the named processor. */
    hf_size size = {1, 0, deit ? 256 : 224, deit ? 256 : 224};
    hf_size crop = {0, 0, 224, 224};
    int do_resize = 1, do_crop = -1, do_rescale = 1, do_normalize = 1;
    double rescale = 1.0 / 255.0;
    int resample = deit ? DATA_RESAMPLE_BICUBIC : DATA_RESAMPLE_BILINEAR;
    float mean[3], std[3];
    for (int c = 0; c < 3; c++) {
        mean[c] = deit ? IMAGENET_MEAN[c] : 0.5f;
        std[c] = deit ? IMAGENET_STD[c] : 0.5f;
    }

    base_status st;
    if ((st = get_hf_size(root, "size", 1, &size, name, err)) != BASE_OK) return st;
    if ((st = get_hf_size(root, "crop_size", 0, &crop, name, err)) != BASE_OK) return st;
    if ((st = get_bool(root, "do_resize", &do_resize, name, err)) != BASE_OK) return st;
    if ((st = get_bool(root, "do_center_crop", &do_crop, name, err)) != BASE_OK) return st;
    if ((st = get_bool(root, "do_rescale", &do_rescale, name, err)) != BASE_OK) return st;
    if ((st = get_bool(root, "do_normalize", &do_normalize, name, err)) != BASE_OK) return st;
    if ((st = get_triplet(root, "image_mean", mean, 0, name, err)) != BASE_OK) return st;
    if ((st = get_triplet(root, "image_std", std, 1, name, err)) != BASE_OK) return st;
    if ((st = hf_rescale_factor(root, name, &rescale, err)) != BASE_OK) return st;
    if ((st = hf_resample(root, name, &resample, err)) != BASE_OK) return st;
    if (do_crop < 0) do_crop = crop.present || deit;

    memset(p, 0, sizeof *p);
    if (!do_resize) {
        p->resize_mode = DATA_RESIZE_NONE;
    } else if (size.shortest > 0) {
        p->resize_mode = DATA_RESIZE_SHORTEST_EDGE;
        p->resize_shortest = size.shortest;
    } else {
        p->resize_mode = DATA_RESIZE_EXACT;
        p->resize_height = size.height;
        p->resize_width = size.width;
    }
    if (!do_crop && p->resize_mode != DATA_RESIZE_EXACT)
        return base_error_set(err, BASE_E_UNSUPPORTED,
                             "%s: output size would depend on the image (%s without a centre "
                             "crop)",
                             name, do_resize ? "shortest_edge resize" : "no resize");
    p->resample = (data_resample)resample;
    p->do_center_crop = do_crop;
    p->crop_height = do_crop ? crop.height : 0;
    p->crop_width = do_crop ? crop.width : 0;
    p->crop_rounding = DATA_CROP_HF;
    p->crop_pct = 0;
    p->do_rescale = do_rescale;
    p->rescale_factor = (float)rescale;
    p->do_normalize = do_normalize;
    memcpy(p->mean, mean, sizeof mean);
    memcpy(p->std, std, sizeof std);
    set_source(p, "preprocessor_config.json");
    return BASE_OK;
}

base_status data_preprocess_from_hf_json(const char *json_text, const char *name,
                                        data_preprocess *p, base_error *err) {
    if (!name) name = "preprocessor_config.json";
    if (!p) return base_error_set(err, BASE_E_ARG, "%s: no recipe to fill", name);
    cJSON *root;
    base_status st = parse_json(json_text, name, NULL, &root, err);
    if (st != BASE_OK) return st;
    data_preprocess tmp;
    st = hf_from_root(root, name, &tmp, err);
    cJSON_Delete(root);
    if (st == BASE_OK) *p = tmp;
    return st;
}

/* ---- timm ---- */

/* pretrained_cfg.input_size: [3, height, width] (absent: unchanged). */
static base_status timm_input_size(const cJSON *cfg, const char *name, int *height, int *width,
                                  base_error *err) {
    char shown[48];
    const cJSON *item = get_key(cfg, "input_size");
    if (item) {
        int channels = 0;
        if (!cJSON_IsArray(item) || cJSON_GetArraySize(item) != 3 ||
            !as_side(cJSON_GetArrayItem(item, 0), &channels) ||
            !as_side(cJSON_GetArrayItem(item, 1), height) ||
            !as_side(cJSON_GetArrayItem(item, 2), width))
            return base_error_set(err, BASE_E_FORMAT,
                                 "%s: \"pretrained_cfg.input_size\" is %s; expected [3, height, "
                                 "width]", name, SHOW(item));
        if (channels != 3)
            return base_error_set(err, BASE_E_UNSUPPORTED,
                                 "%s: pretrained_cfg.input_size has %d channels, only 3 supported",
                                 name, channels);
    }
    return BASE_OK;
}

/* pretrained_cfg.crop_pct (absent: unchanged). */
static base_status timm_crop_pct(const cJSON *cfg, const char *name, double *crop_pct, base_error *err) {
    char shown[48];
    const cJSON *item = get_key(cfg, "crop_pct");
    if (item) {
        if (!cJSON_IsNumber(item) || !(item->valuedouble > 0 && item->valuedouble <= 10))
            return base_error_set(err, BASE_E_FORMAT,
                                 "%s: \"pretrained_cfg.crop_pct\" is %s; expected a number in (0, "
                                 "10]", name, SHOW(item));
        *crop_pct = item->valuedouble;
    }
    return BASE_OK;
}

/* pretrained_cfg.interpolation (absent: unchanged). */
static base_status timm_interpolation(const cJSON *cfg, const char *name, data_resample *resample,
                                     base_error *err) {
    char shown[48];
    const cJSON *item = get_key(cfg, "interpolation");
    if (item) {
        const char *s = cJSON_IsString(item) ? item->valuestring : NULL;
        if (!s)
            return base_error_set(err, BASE_E_FORMAT,
                                 "%s: \"pretrained_cfg.interpolation\" is %s; expected a string",
                                 name, SHOW(item));
        if (strcmp(s, "bicubic") == 0) *resample = DATA_RESAMPLE_BICUBIC;
        else if (strcmp(s, "bilinear") == 0) *resample = DATA_RESAMPLE_BILINEAR;
        else if (strcmp(s, "nearest") == 0) *resample = DATA_RESAMPLE_NEAREST;
        else
            return base_error_set(err, BASE_E_UNSUPPORTED,
                                 "%s: pretrained_cfg.interpolation \"%.40s\" is not supported "
                                 "(bicubic, bilinear, nearest)",
                                 name, one_line(s));
    }
    return BASE_OK;
}

/* pretrained_cfg.crop_mode: squash sets *squash, center leaves it. */
static base_status timm_crop_mode(const cJSON *cfg, const char *name, int *squash, base_error *err) {
    char shown[48];
    const cJSON *item = get_key(cfg, "crop_mode");
    if (item) {
        const char *s = cJSON_IsString(item) ? item->valuestring : NULL;
        if (!s)
            return base_error_set(err, BASE_E_FORMAT,
                                 "%s: \"pretrained_cfg.crop_mode\" is %s; expected a string", name,
                                 SHOW(item));
        if (strcmp(s, "squash") == 0) *squash = 1;
        else if (strcmp(s, "center") != 0)
            return base_error_set(err, BASE_E_UNSUPPORTED,
                                 "%s: pretrained_cfg.crop_mode \"%.40s\" is not supported (center, "
                                 "squash)",
                                 name, one_line(s));
    }
    return BASE_OK;
}

static base_status timm_from_cfg(const cJSON *cfg, const char *name, data_preprocess *p,
                                base_error *err) {
    int height = 224, width = 224, squash = 0;
    double crop_pct = DEFAULT_CROP_PCT;
    data_resample resample = DATA_RESAMPLE_BICUBIC;
    base_status st;
    if ((st = timm_input_size(cfg, name, &height, &width, err)) != BASE_OK ||
        (st = timm_crop_pct(cfg, name, &crop_pct, err)) != BASE_OK ||
        (st = timm_interpolation(cfg, name, &resample, err)) != BASE_OK ||
        (st = timm_crop_mode(cfg, name, &squash, err)) != BASE_OK)
        return st;
    float mean[3], std[3];
    memcpy(mean, IMAGENET_MEAN, sizeof mean);
    memcpy(std, IMAGENET_STD, sizeof std);
    if ((st = get_triplet(cfg, "mean", mean, 0, name, err)) != BASE_OK) return st;
    if ((st = get_triplet(cfg, "std", std, 1, name, err)) != BASE_OK) return st;

    /* Range-checked as doubles: a tiny crop_pct overflows an int (found by
     * fuzz_config). */
    const double scale_hd = floor(height / crop_pct), scale_wd = floor(width / crop_pct);
    if (!(scale_hd >= 1 && scale_wd >= 1 && scale_hd <= MAX_SIDE && scale_wd <= MAX_SIDE))
        return base_error_set(err, BASE_E_FORMAT,
                             "%s: pretrained_cfg.crop_pct %g gives an invalid resize %.0fx%.0f", name,
                             crop_pct, scale_wd, scale_hd);
    const int scale_h = (int)scale_hd, scale_w = (int)scale_wd;
    memset(p, 0, sizeof *p);
    if (squash) {
        p->resize_mode = DATA_RESIZE_EXACT;
        p->resize_height = scale_h;
        p->resize_width = scale_w;
    } else {
        if (height != width)
            return base_error_set(err, BASE_E_UNSUPPORTED,
                                 "%s: non-square input_size %dx%d with crop_mode center is not "
                                 "supported",
                                 name, width, height);
        p->resize_mode = DATA_RESIZE_SHORTEST_EDGE;
        p->resize_shortest = scale_h;
    }
    p->resample = resample;
    p->do_center_crop = 1;
    p->crop_height = height;
    p->crop_width = width;
    p->crop_rounding = DATA_CROP_TORCHVISION;
    p->crop_pct = (float)crop_pct;
    p->do_rescale = 1;
    p->rescale_factor = 1.0f / 255.0f;
    p->do_normalize = 1;
    memcpy(p->mean, mean, sizeof mean);
    memcpy(p->std, std, sizeof std);
    set_source(p, "timm pretrained_cfg");
    return BASE_OK;
}

base_status data_preprocess_from_timm_json(const char *json_text, const char *name,
                                          data_preprocess *p, base_error *err) {
    if (!name) name = "config.json";
    if (!p) return base_error_set(err, BASE_E_ARG, "%s: no recipe to fill", name);
    cJSON *root;
    base_status st = parse_json(json_text, name, NULL, &root, err);
    if (st != BASE_OK) return st;
    const cJSON *cfg = get_key(root, "pretrained_cfg");
    data_preprocess tmp;
    char shown[48];
    if (!cfg)
        st = base_error_set(err, BASE_E_FORMAT, "%s: no \"pretrained_cfg\" (not a timm config)", name);
    else if (!cJSON_IsObject(cfg))
        st = base_error_set(err, BASE_E_FORMAT, "%s: \"pretrained_cfg\" is %s; expected an object",
                           name, SHOW(cfg));
    else
        st = timm_from_cfg(cfg, name, &tmp, err);
    cJSON_Delete(root);
    if (st == BASE_OK) *p = tmp;
    return st;
}

/* ---- model directories ---- */

base_status data_preprocess_from_texts(const char *preprocessor_json, const char *preprocessor_name,
                                      const char *config_json, const char *config_name,
                                      int image_size, const base_limits *limits,
                                      data_preprocess *p, base_error *err) {
    if (!p) return base_error_set(err, BASE_E_ARG, "no recipe to fill");
    cJSON *root;
    data_preprocess tmp;
    base_status st;
    if (preprocessor_json) {
        if (!preprocessor_name) preprocessor_name = "preprocessor_config.json";
        if ((st = parse_json(preprocessor_json, preprocessor_name, limits, &root, err)) != BASE_OK)
            return st;
        st = hf_from_root(root, preprocessor_name, &tmp, err);
        cJSON_Delete(root);
        if (st == BASE_OK) *p = tmp;
        return st;
    }
    if (config_json) {
        if (!config_name) config_name = "config.json";
        if ((st = parse_json(config_json, config_name, limits, &root, err)) != BASE_OK) return st;
        const cJSON *cfg = get_key(root, "pretrained_cfg");
        if (cfg) {
            char shown[48];
            if (!cJSON_IsObject(cfg))
                st = base_error_set(err, BASE_E_FORMAT, "%s: \"pretrained_cfg\" is %s; expected an "
                                   "object", config_name, SHOW(cfg));
            else
                st = timm_from_cfg(cfg, config_name, &tmp, err);
            cJSON_Delete(root);
            if (st == BASE_OK) *p = tmp;
            return st;
        }
        cJSON_Delete(root);
    }
    data_preprocess_default(p, image_size);
    return BASE_OK;
}

/* The writer beside the reader above: what the trainer stores in a model
 * file's __metadata__ preprocessor_config, which data_preprocess_from_texts
 * reads back. */
char *data_preprocess_to_json(const data_preprocess *pre) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "image_processor_type", "ViTImageProcessor");
    cJSON_AddBoolToObject(j, "do_resize", pre->resize_mode != DATA_RESIZE_NONE);
    cJSON *size = cJSON_AddObjectToObject(j, "size");
    if (pre->resize_mode == DATA_RESIZE_SHORTEST_EDGE) {
        cJSON_AddNumberToObject(size, "shortest_edge", pre->resize_shortest);
    } else {
        cJSON_AddNumberToObject(size, "height", pre->resize_height);
        cJSON_AddNumberToObject(size, "width", pre->resize_width);
    }
    cJSON_AddNumberToObject(j, "resample", (int)pre->resample);
    cJSON_AddBoolToObject(j, "do_center_crop", pre->do_center_crop);
    if (pre->do_center_crop) {
        cJSON *crop = cJSON_AddObjectToObject(j, "crop_size");
        cJSON_AddNumberToObject(crop, "height", pre->crop_height);
        cJSON_AddNumberToObject(crop, "width", pre->crop_width);
    }
    cJSON_AddBoolToObject(j, "do_rescale", pre->do_rescale);
    cJSON_AddNumberToObject(j, "rescale_factor", pre->rescale_factor);
    cJSON_AddBoolToObject(j, "do_normalize", pre->do_normalize);
    const double mean[3] = {pre->mean[0], pre->mean[1], pre->mean[2]};
    const double std[3] = {pre->std[0], pre->std[1], pre->std[2]};
    cJSON_AddItemToObject(j, "image_mean", cJSON_CreateDoubleArray(mean, 3));
    cJSON_AddItemToObject(j, "image_std", cJSON_CreateDoubleArray(std, 3));
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return text;
}

base_status data_preprocess_for_model(const char *model_dir, int image_size, data_preprocess *p,
                                     base_error *err) {
    if (!p) return base_error_set(err, BASE_E_ARG, "no recipe to fill");
    if (!model_dir) {
        data_preprocess_default(p, image_size);
        return BASE_OK;
    }
    char pre_path[4096], config_path[4096];
    if (snprintf(pre_path, sizeof pre_path, "%s/preprocessor_config.json", model_dir) >=
            (int)sizeof pre_path ||
        snprintf(config_path, sizeof config_path, "%s/config.json", model_dir) >=
            (int)sizeof config_path)
        return base_error_set(err, BASE_E_ARG, "%s: model directory path too long", model_dir);
    const size_t max_bytes = BASE_DEFAULT_MAX_JSON_BYTES;
    char *pre = NULL, *config = NULL;
    int missing;
    base_status st = base_read_text_file(pre_path, max_bytes, &pre, &missing, err);
    if (st == BASE_OK && !pre) st = base_read_text_file(config_path, max_bytes, &config, &missing, err);
    if (st == BASE_OK)
        st = data_preprocess_from_texts(pre, pre_path, config, config_path, image_size, NULL, p, err);
    free(pre);
    free(config);
    return st;
}

/* ---- size, description ---- */

static int scale_side(int side, int size, int crop) {
    long v = lround((double)side * size / crop);
    return v < 1 ? 1 : v > MAX_SIDE ? MAX_SIDE : (int)v;
}

void data_preprocess_set_size(data_preprocess *p, int size) {
    if (!p || size <= 0 || size > MAX_SIDE) return;
    if (!p->do_center_crop || p->crop_height <= 0 || p->crop_width <= 0) {
        /* No crop: the resize alone fixes the output size. */
        p->resize_mode = DATA_RESIZE_EXACT;
        p->resize_height = p->resize_width = size;
        return;
    }
    int old_h = p->crop_height, old_w = p->crop_width;
    p->crop_height = p->crop_width = size;
    switch (p->resize_mode) {
    case DATA_RESIZE_SHORTEST_EDGE:
        if (p->crop_pct > 0) p->resize_shortest = timm_scale_size(size, p->crop_pct);
        else p->resize_shortest = scale_side(p->resize_shortest, size, old_h);
        break;
    case DATA_RESIZE_EXACT:
        if (p->crop_pct > 0) {
            p->resize_height = p->resize_width = timm_scale_size(size, p->crop_pct);
        } else {
            p->resize_height = scale_side(p->resize_height, size, old_h);
            p->resize_width = scale_side(p->resize_width, size, old_w);
        }
        break;
    case DATA_RESIZE_NONE: break;
    }
}

int data_preprocess_out_height(const data_preprocess *p) {
    if (!p) return 0;
    if (p->do_center_crop) return p->crop_height;
    return p->resize_mode == DATA_RESIZE_EXACT ? p->resize_height : 0;
}

int data_preprocess_out_width(const data_preprocess *p) {
    if (!p) return 0;
    if (p->do_center_crop) return p->crop_width;
    return p->resize_mode == DATA_RESIZE_EXACT ? p->resize_width : 0;
}

static const char *resample_name(data_resample r) {
    switch (r) {
    case DATA_RESAMPLE_NEAREST: return "nearest";
    case DATA_RESAMPLE_BILINEAR: return "bilinear";
    case DATA_RESAMPLE_BICUBIC: return "bicubic";
    }
    return "unknown filter";
}

void data_preprocess_describe(const data_preprocess *p, char *buf, size_t size) {
    if (!buf || size == 0) return;
    if (!p) {
        snprintf(buf, size, "(no recipe)");
        return;
    }
    char resize[96], crop[64], scale[64], norm[128];
    switch (p->resize_mode) {
    case DATA_RESIZE_SHORTEST_EDGE:
        snprintf(resize, sizeof resize, "resize shorter side to %d (%s)", p->resize_shortest,
                 resample_name(p->resample));
        break;
    case DATA_RESIZE_EXACT:
        snprintf(resize, sizeof resize, "resize to %dx%d (%s)", p->resize_width, p->resize_height,
                 resample_name(p->resample));
        break;
    default: snprintf(resize, sizeof resize, "no resize"); break;
    }
    if (p->do_center_crop)
        snprintf(crop, sizeof crop, ", centre crop %dx%d", p->crop_width, p->crop_height);
    else
        snprintf(crop, sizeof crop, ", no crop");
    if (!p->do_rescale)
        snprintf(scale, sizeof scale, ", no rescale");
    else if (fabsf(p->rescale_factor - 1.0f / 255.0f) > 1e-9f)
        snprintf(scale, sizeof scale, ", rescale %g", (double)p->rescale_factor);
    else
        scale[0] = '\0';
    if (p->do_normalize)
        snprintf(norm, sizeof norm, ", mean %g,%g,%g std %g,%g,%g", (double)p->mean[0],
                 (double)p->mean[1], (double)p->mean[2], (double)p->std[0], (double)p->std[1],
                 (double)p->std[2]);
    else
        snprintf(norm, sizeof norm, ", no normalisation");
    snprintf(buf, size, "%s%s%s%s (%s)", resize, crop, scale, norm,
             p->source[0] ? p->source : "custom");
}

/* ---- application ---- */

/* Python's int(round(x / 2)) for an integer x: halves go to the even side. */
static int half_round_even(int x) {
    int q = x / 2; /* x >= 0 here */
    if (x % 2 == 0) return q;
    return (q % 2 == 0) ? q : q + 1;
}

/* Source start and destination offset of a centre crop along one axis. */
static void crop_axis(int size, int crop, data_crop_rounding rounding, int *src_start,
                      int *dst_start, int *count) {
    if (size >= crop) {
        int margin = size - crop;
        *src_start = rounding == DATA_CROP_TORCHVISION ? half_round_even(margin) : margin / 2;
        *dst_start = 0;
        *count = crop;
    } else {
        int pad = crop - size;
        *src_start = 0;
        *dst_start = rounding == DATA_CROP_TORCHVISION ? pad / 2 : (pad + 1) / 2;
        *count = size;
    }
}

static base_status check_recipe(const data_preprocess *p, base_error *err) {
    if (p->resize_mode == DATA_RESIZE_EXACT &&
        (p->resize_width <= 0 || p->resize_height <= 0 || p->resize_width > MAX_SIDE ||
         p->resize_height > MAX_SIDE))
        return base_error_set(err, BASE_E_ARG, "preprocess: invalid resize %dx%d", p->resize_width,
                             p->resize_height);
    if (p->resize_mode == DATA_RESIZE_SHORTEST_EDGE &&
        (p->resize_shortest <= 0 || p->resize_shortest > MAX_SIDE))
        return base_error_set(err, BASE_E_ARG, "preprocess: invalid shorter side %d",
                             p->resize_shortest);
    if (p->do_center_crop) {
        if (p->crop_width <= 0 || p->crop_height <= 0 || p->crop_width > MAX_SIDE ||
            p->crop_height > MAX_SIDE)
            return base_error_set(err, BASE_E_ARG, "preprocess: invalid crop %dx%d", p->crop_width,
                                 p->crop_height);
    } else if (p->resize_mode != DATA_RESIZE_EXACT) {
        return base_error_set(err, BASE_E_ARG,
                             "preprocess: output size depends on the image (no exact resize and "
                             "no crop)");
    }
    if (p->do_normalize)
        for (int c = 0; c < 3; c++)
            if (!(p->std[c] > 0) && !(p->std[c] < 0))
                return base_error_set(err, BASE_E_ARG, "preprocess: std[%d] is zero", c);
    if (p->do_rescale && !(p->rescale_factor > 0))
        return base_error_set(err, BASE_E_ARG, "preprocess: rescale factor must be positive");
    return BASE_OK;
}

/* Where the rows of the crop go: planes of ow-wide rows, the crop's
 * rows starting at (dx, dy) (the padding's offset), through the lookup. */
typedef struct planar_sink {
    float lut[3][256];
    float *out;
    size_t plane;
    int ow, dx, dy, nx;
} planar_sink;

/* The normalised float of every 8-bit value, per channel. */
static void fill_lut(const data_preprocess *p, float lut[3][256]) {
    int exact_255 = p->rescale_factor == 1.0f / 255.0f;
    for (int c = 0; c < 3; c++) {
        for (int v = 0; v < 256; v++) {
            float x;
            if (!p->do_rescale) x = (float)v;
            else if (exact_255) x = (float)(v / 255.0);
            else x = (float)(v * (double)p->rescale_factor);
            if (p->do_normalize) x = (x - p->mean[c]) / p->std[c];
            lut[c][v] = x;
        }
    }
}

/* One row of the crop (nx RGB pixels) into the three planes. */
static void planar_row(void *ctx, int y, const uint8_t *row) {
    planar_sink *s = ctx;
    float *r = s->out + (size_t)(s->dy + y) * s->ow + s->dx, *g = r + s->plane, *b = g + s->plane;
    for (int x = 0; x < s->nx; x++) {
        r[x] = s->lut[0][row[3 * x]];
        g[x] = s->lut[1][row[3 * x + 1]];
        b[x] = s->lut[2][row[3 * x + 2]];
    }
}

base_status data_preprocess_apply(const data_preprocess *p, const data_image *img, float *out,
                                 base_error *err) {
    if (!p || !img || !out) return base_error_set(err, BASE_E_ARG, "preprocess: missing argument");
    if (!img->pixels || img->width <= 0 || img->height <= 0)
        return base_error_set(err, BASE_E_ARG, "preprocess: empty image");
    base_status st = check_recipe(p, err);
    if (st != BASE_OK) return st;

    /* 1. resize, with torchvision's/transformers' output size rule. */
    int rw = img->width, rh = img->height;
    if (p->resize_mode == DATA_RESIZE_EXACT) {
        rw = p->resize_width;
        rh = p->resize_height;
    } else if (p->resize_mode == DATA_RESIZE_SHORTEST_EDGE) {
        int64_t s = p->resize_shortest;
        if (img->width <= img->height) {
            rw = (int)s;
            double l = (double)(s * img->height) / img->width;
            rh = l > 2e9 ? INT32_MAX : (int)l;
        } else {
            rh = (int)s;
            double l = (double)(s * img->width) / img->height;
            rw = l > 2e9 ? INT32_MAX : (int)l;
        }
    }
    /* The resized image is held in memory too: the same pixel cap applies,
     * which bounds the work an extreme aspect ratio can cause (a 5 x 186879
     * image resized to 18 x 672764 made fuzz_image time out). */
    const int64_t max_pixels = p->max_pixels > 0 ? p->max_pixels : DATA_MAX_PIXELS;
    if ((rw != img->width || rh != img->height) && rw > max_pixels / rh)
        return base_error_set(err, BASE_E_LIMIT,
                             "preprocess: resizing %dx%d to %dx%d exceeds the limit of %lld pixels",
                             img->width, img->height, rw, rh, (long long)max_pixels);

    /* 2. per-channel lookup from 8-bit value to the normalised float. */
    planar_sink sink;
    fill_lut(p, sink.lut);

    /* 3. centre crop (zero-padded when the crop is larger) into CHW: only
     * the rows and columns of the resized image the crop keeps are
     * computed, each row normalised into the planes as it comes. */
    int oh = p->do_center_crop ? p->crop_height : rh;
    int ow = p->do_center_crop ? p->crop_width : rw;
    int sy = 0, ny = oh, sx = 0, nx = ow;
    sink.out = out;
    sink.plane = (size_t)oh * ow;
    sink.ow = ow;
    sink.dx = sink.dy = 0;
    if (p->do_center_crop) {
        crop_axis(rh, oh, p->crop_rounding, &sy, &sink.dy, &ny);
        crop_axis(rw, ow, p->crop_rounding, &sx, &sink.dx, &nx);
    }
    sink.nx = nx;
    if (ny < oh || nx < ow)
        for (int c = 0; c < 3; c++)
            for (size_t i = 0; i < sink.plane; i++) out[c * sink.plane + i] = sink.lut[c][0];
    if (rw != img->width || rh != img->height)
        return data_resize_rows(img, rw, rh, p->resample, sx, sy, nx, ny, planar_row, &sink, err);
    for (int y = 0; y < ny; y++)
        planar_row(&sink, y, img->pixels + ((size_t)(sy + y) * img->width + sx) * 3);
    return BASE_OK;
}

/* Preprocesses a decoded image (or passes on why it failed to decode). */
static base_status preprocess_decoded(const data_preprocess *p, base_status st, data_image *img,
                                     const char *name, float *out, base_error *err) {
    if (st != BASE_OK) return st;
    st = data_preprocess_apply(p, img, out, err);
    if (st != BASE_OK && err && name && !strstr(err->message, name)) {
        /* Resize/recipe messages do not know the file; name it. */
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err->message);
        base_error_set(err, st, "%s: %s", name, msg);
    }
    data_image_free(img);
    return st;
}

base_status data_preprocess_file(const data_preprocess *p, const char *path, float *out,
                                base_error *err) {
    data_image img;
    base_status st = data_image_load_capped(path, p ? p->max_pixels : 0, &img, err);
    return preprocess_decoded(p, st, &img, path, out, err);
}

base_status data_preprocess_memory(const data_preprocess *p, const void *bytes, size_t size,
                                  const char *name, float *out, base_error *err) {
    data_image img;
    base_status st = data_image_load_memory_capped(bytes, size, name, p ? p->max_pixels : 0, &img, err);
    return preprocess_decoded(p, st, &img, name, out, err);
}
