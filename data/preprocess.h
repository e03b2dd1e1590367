/* preprocess.h — from a decoded image to the model's input tensor.
 *
 * A recipe (data_preprocess) says how timm or a Hugging Face image processor
 * prepares an image: resize (shortest edge or exact, PIL's resampling
 * filters with their antialiasing, reproduced so the 8-bit resized pixels
 * equal PIL's to within 1), centre crop, scale to [0, 1], normalise by
 * mean/std, CHW float32. Recipes come from preprocessor_config.json, timm's
 * pretrained_cfg in config.json, or the defaults; every key present is
 * validated. --size retargets a recipe (data_preprocess_set_size).
 *
 *     data_preprocess pre;
 *     data_preprocess_for_model("models/deit", 224, &pre, &err);
 *     float *x = malloc(sizeof(float) * 3 * data_preprocess_out_height(&pre) *
 *                       data_preprocess_out_width(&pre));
 *     data_preprocess_file(&pre, "cat.jpg", x, &err);  // 3 x H x W, normalised
 */
#ifndef DATA_PREPROCESS_H
#define DATA_PREPROCESS_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"
#include "base_error.h"
#include "base_limits.h"

/* Resampling filters, numbered as PIL numbers them (Image.Resampling). */
typedef enum data_resample {
    DATA_RESAMPLE_NEAREST = 0,
    DATA_RESAMPLE_BILINEAR = 2,
    DATA_RESAMPLE_BICUBIC = 3
} data_resample;

/* Keys' cubic convolution kernel at distance x (support 2) with coefficient
 * a, evaluated in double exactly as Pillow does: PIL's BICUBIC is a = -0.5
 * (DATA_BICUBIC_A_PIL), and so is torch's antialiased bicubic. (torch's
 * plain bicubic, a = -0.75, is computed in float in another order, so it
 * keeps its own code in patching/ to stay bit-identical with torch.) */
#define DATA_BICUBIC_A_PIL (-0.5)
double data_bicubic_weight(double x, double a);

/* Resizes src to width x height exactly as PIL's Image.resize(size, filter)
 * does for an RGB image: separable convolution with the filter's support
 * widened by the scale when downscaling (antialiasing), horizontal pass then
 * vertical pass, each rounded and clamped to 8 bits. dst is allocated. */
base_status data_resize(const data_image *src, int width, int height, data_resample filter,
                       data_image *dst, base_error *err);

/* How the first resize step picks its output size. */
typedef enum data_resize_mode {
    DATA_RESIZE_NONE = 0,     /* no resize */
    DATA_RESIZE_EXACT,        /* to resize_width x resize_height (HF size dict/int) */
    DATA_RESIZE_SHORTEST_EDGE /* shorter side to resize_shortest, longer side
                                 int(shortest * long / short), as torchvision does */
} data_resize_mode;

/* How a centre crop rounds an odd margin. */
typedef enum data_crop_rounding {
    DATA_CROP_TORCHVISION = 0, /* top = round((h - ch) / 2), half to even (timm) */
    DATA_CROP_HF              /* top = (h - ch) / 2, floored (transformers) */
} data_crop_rounding;

/* A complete preprocessing recipe. */
typedef struct data_preprocess {
    data_resize_mode resize_mode;
    int resize_width, resize_height; /* DATA_RESIZE_EXACT */
    int resize_shortest;             /* DATA_RESIZE_SHORTEST_EDGE */
    data_resample resample;
    int do_center_crop;
    int crop_width, crop_height; /* output size of the pipeline when cropping */
    data_crop_rounding crop_rounding;
    float crop_pct;         /* timm crop_pct when known (crop / resize), else 0 */
    int do_rescale;
    float rescale_factor;   /* usually 1/255 */
    int do_normalize;
    float mean[3], std[3];
    char source[64];        /* "preprocessor_config.json", "timm pretrained_cfg", "default" */
    int64_t max_pixels;     /* images over this many pixels are refused before decoding
                               (data_preprocess_file), and so is a resize to more
                               (data_preprocess_apply); 0: DATA_MAX_PIXELS. Not part of
                               the recipe proper: the recipe readers leave it 0 and
                               vit_model_load sets it from its limits. */
} data_preprocess;

/* The DeiT/timm default for a model trained at image_size: shorter side to
 * floor(image_size / 0.875) bicubic, centre crop image_size (torchvision
 * rounding), rescale 1/255, ImageNet mean/std. */
void data_preprocess_default(data_preprocess *p, int image_size);

/* Fills p from the text of a Hugging Face preprocessor_config.json. size and
 * crop_size may be plain integers (size N: N x N) or dicts ({"height",
 * "width"} or {"shortest_edge"}); resample is PIL's code; do_resize,
 * do_center_crop, do_normalize, do_rescale and rescale_factor are honoured,
 * with transformers' defaults when absent. name is used in messages. */
base_status data_preprocess_from_hf_json(const char *json_text, const char *name,
                                        data_preprocess *p, base_error *err);

/* Fills p from the text of a timm config.json (its "pretrained_cfg":
 * input_size, interpolation, crop_pct, crop_mode, mean, std), as timm's eval
 * transform does: shorter side to floor(size / crop_pct), centre crop size. */
base_status data_preprocess_from_timm_json(const char *json_text, const char *name,
                                          data_preprocess *p, base_error *err);

/* Chooses the recipe from config texts already in memory, as
 * data_preprocess_for_model does from files: preprocessor_json (Hugging
 * Face) if non-NULL, else config_json if it has a timm "pretrained_cfg",
 * else the default for image_size. Either text may be NULL; names are for
 * messages. Both are checked against limits (NULL: defaults) first. */
base_status data_preprocess_from_texts(const char *preprocessor_json, const char *preprocessor_name,
                                      const char *config_json, const char *config_name,
                                      int image_size, const base_limits *limits,
                                      data_preprocess *p, base_error *err);

/* p as a Hugging Face preprocessor_config.json that
 * data_preprocess_from_texts reads back (caller frees; NULL when out of
 * memory). Only exact-size resizes and shortest-edge resizes with a centre
 * crop can be stated. */
char *data_preprocess_to_json(const data_preprocess *p);


/* Chooses the recipe for a model directory: preprocessor_config.json if
 * present, else config.json with a timm "pretrained_cfg", else the default
 * for image_size. model_dir may be NULL (default). */
base_status data_preprocess_for_model(const char *model_dir, int image_size,
                                     data_preprocess *p, base_error *err);

/* Retargets p to produce size x size inputs (for --size): the crop becomes
 * size and the resize scales with it (timm: floor(size / crop_pct); exact
 * resize keeps its ratio to the crop). */
void data_preprocess_set_size(data_preprocess *p, int size);

/* The output height/width of p. */
int data_preprocess_out_height(const data_preprocess *p);
int data_preprocess_out_width(const data_preprocess *p);

/* One line describing p, e.g. "resize shorter side to 248 (bicubic), centre
 * crop 224x224, mean 0.5,0.5,0.5 std 0.5,0.5,0.5 (timm pretrained_cfg)". */
void data_preprocess_describe(const data_preprocess *p, char *buf, size_t size);

/* Runs p on img and writes a float32 C x H x W tensor (C = 3, planar) into
 * out, which holds 3 * out_height * out_width floats. */
base_status data_preprocess_apply(const data_preprocess *p, const data_image *img, float *out,
                                 base_error *err);

/* Loads and preprocesses one file: data_image_load + data_preprocess_apply. */
base_status data_preprocess_file(const data_preprocess *p, const char *path, float *out,
                                base_error *err);

/* The same for an encoded image held in memory (vit serve: a request's
 * body), with the same checks and pixel cap; name is used in messages. */
base_status data_preprocess_memory(const data_preprocess *p, const void *bytes, size_t size,
                                  const char *name, float *out, base_error *err);

/* The region of an image of width x height (in its pixel coordinates, x0,
 * y0, x1, y1, possibly fractional, possibly beyond the image when the crop
 * pads) that p's resize and centre crop turn into the model input. Exact up
 * to the crop's rounding of its offset (half a resized pixel). */
void data_preprocess_source_box(const data_preprocess *p, int width, int height, double box[4]);

#endif
