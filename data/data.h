/* data.h — images in, model-ready tensors out.
 *
 * Decoding uses stb_image; everything after decoding reproduces the reference
 * pipelines (PIL Image.resize as used by timm/torchvision and Hugging Face
 * image processors) closely enough that the 8-bit resized pixels equal PIL's
 * to within ±1.
 */
#ifndef DATA_H
#define DATA_H

#include <stddef.h>
#include <stdint.h>

#include "vit_error.h"
#include "vit_limits.h"

/* Refuse images larger than this before decoding pixels (width*height), by
 * default; data_image_load_capped and data_preprocess.max_pixels override. */
#define DATA_MAX_PIXELS VIT_DEFAULT_MAX_PIXELS

/* An 8-bit RGB image, rows top to bottom, pixels interleaved R,G,B. */
typedef struct data_image {
    int width, height;
    uint8_t *pixels; /* width*height*3 bytes, owned */
} data_image;

/* Decodes an image file (JPEG incl. progressive, PNG incl. 16-bit/palette/
 * grey/alpha, BMP, GIF first frame, TGA, PNM, PSD) to 8-bit RGB the way PIL's
 * convert('RGB') does: grey is replicated, alpha is dropped (not blended), and
 * 16-bit samples are reduced to 8 bits. The dimensions are read and checked
 * against DATA_MAX_PIXELS before pixels are decoded. EXIF orientation is
 * ignored, as PIL's Image.open and the reference pipelines do. */
vit_status data_image_load(const char *path, data_image *out, vit_error *err);

/* The same for an image held in memory; name is used in messages. */
vit_status data_image_load_memory(const void *bytes, size_t size, const char *name,
                                  data_image *out, vit_error *err);

/* The same two with a pixel cap other than DATA_MAX_PIXELS (max_pixels <= 0:
 * the default). Headers are read first: a file whose dimensions exceed the
 * cap is refused (VIT_E_LIMIT, naming the file, its size and the cap) before
 * any pixel memory is allocated. */
vit_status data_image_load_capped(const char *path, int64_t max_pixels, data_image *out,
                                  vit_error *err);
vit_status data_image_load_memory_capped(const void *bytes, size_t size, const char *name,
                                         int64_t max_pixels, data_image *out, vit_error *err);

/* Frees the pixels; safe on a zeroed or already freed image. */
void data_image_free(data_image *img);

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
vit_status data_resize(const data_image *src, int width, int height, data_resample filter,
                       data_image *dst, vit_error *err);

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
vit_status data_preprocess_from_hf_json(const char *json_text, const char *name,
                                        data_preprocess *p, vit_error *err);

/* Fills p from the text of a timm config.json (its "pretrained_cfg":
 * input_size, interpolation, crop_pct, crop_mode, mean, std), as timm's eval
 * transform does: shorter side to floor(size / crop_pct), centre crop size. */
vit_status data_preprocess_from_timm_json(const char *json_text, const char *name,
                                          data_preprocess *p, vit_error *err);

/* Chooses the recipe from config texts already in memory, as
 * data_preprocess_for_model does from files: preprocessor_json (Hugging
 * Face) if non-NULL, else config_json if it has a timm "pretrained_cfg",
 * else the default for image_size. Either text may be NULL; names are for
 * messages. Both are checked against limits (NULL: defaults) first. */
vit_status data_preprocess_from_texts(const char *preprocessor_json, const char *preprocessor_name,
                                      const char *config_json, const char *config_name,
                                      int image_size, const vit_limits *limits,
                                      data_preprocess *p, vit_error *err);

/* Reads a whole text file of at most max_bytes into *text (NUL-terminated,
 * caller frees). With missing non-NULL, a file that does not exist sets
 * *missing and returns VIT_OK; otherwise it is VIT_E_IO. Files with NUL bytes
 * are refused. */
vit_status data_read_text_file(const char *path, size_t max_bytes, char **text, int *missing,
                               vit_error *err);

/* Chooses the recipe for a model directory: preprocessor_config.json if
 * present, else config.json with a timm "pretrained_cfg", else the default
 * for image_size. model_dir may be NULL (default). */
vit_status data_preprocess_for_model(const char *model_dir, int image_size,
                                     data_preprocess *p, vit_error *err);

/* ---------------------------------------------------------------- CSV */

/* The one CSV reader of the program (RFC 4180): fields separated by commas,
 * records ended by "\n" or "\r\n", a field in double quotes may hold commas,
 * quotes (doubled) and line breaks. Reads from memory (text, len: no NUL
 * needed), one record at a time. */
typedef struct data_csv {
    const char *text, *p, *end;
    int line;            /* the line the next record starts on, 1-based */
    int record_line;     /* the line the last record (or damage) started on */
    size_t record_start; /* its byte offset in text */
    int terminated;      /* the last record ended with a line break (0: at the end of text) */
    int unterminated;    /* the text ended inside a quoted field (with VIT_E_FORMAT) */
    char **fields;       /* the last record's fields, NUL-terminated, quotes undone */
    size_t *lengths;     /* their lengths (a field may hold a NUL byte) */
    size_t num_fields, capacity;
} data_csv;

void data_csv_init(data_csv *csv, const char *text, size_t len);

/* Reads the next record into csv->fields. *got is 1 for a record, 0 at the
 * end of the text. A damaged record (a quote inside an unquoted field, text
 * after a closing quote, a lone carriage return, a quoted field the text
 * ends inside) is VIT_E_FORMAT naming name and its line; callers decide
 * whether a damaged or unterminated last record is a cut they can drop. */
vit_status data_csv_next(data_csv *csv, const char *name, int *got, vit_error *err);
void data_csv_free(data_csv *csv);

/* ------------------------------------------------------------- labels */

/* Splits text into one label per line ('\n' or "\r\n"; a final newline does
 * not start another label; a leading UTF-8 byte-order mark is dropped). *labels (count + 1 entries, NULL-terminated)
 * and each label are malloc'd: free with data_labels_free. More than
 * max_labels lines is VIT_E_LIMIT. name is used in messages. */
vit_status data_labels_parse(const char *text, const char *name, int max_labels, char ***labels,
                             int *count, vit_error *err);
void data_labels_free(char **labels, int count);

/* Rows of a labels CSV (`file,class_index[,...]`, RFC 4180 quoting; an
 * optional header row whose second field is not a number; blank lines
 * skipped). files[i] is as written in the CSV (relative to the image
 * directory), classes[i] in 0..num_classes-1. */
typedef struct data_labelled_files {
    char **files;
    int *classes;
    size_t count, capacity;
} data_labelled_files;

/* Parses a labels CSV held in text (len bytes, no NUL needed) into out
 * (appended). A row without a class index, or with one outside
 * 0..num_classes-1, is VIT_E_FORMAT naming name and the line; no rows at all
 * is VIT_E_FORMAT too. */
vit_status data_labels_csv_parse(const char *text, size_t len, const char *name, int num_classes,
                                 data_labelled_files *out, vit_error *err);
void data_labelled_files_free(data_labelled_files *list);

/* Appends one (file, class) pair (file copied); -1 when out of memory. */
int data_labelled_files_add(data_labelled_files *list, const char *file, int class_index);

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
vit_status data_preprocess_apply(const data_preprocess *p, const data_image *img, float *out,
                                 vit_error *err);

/* Loads and preprocesses one file: data_image_load + data_preprocess_apply. */
vit_status data_preprocess_file(const data_preprocess *p, const char *path, float *out,
                                vit_error *err);

/* ---------------------------------------------------------- directories */

/* A growable list of paths (each owned). */
typedef struct data_file_list {
    char **paths;
    size_t count, capacity;
} data_file_list;

typedef struct data_walk_options {
    int recursive;                    /* descend into subdirectories */
    const char *const *extensions;    /* NULL: the image formats we decode */
    size_t num_extensions;
} data_walk_options;

/* Appends to out the image files under path (or path itself when it is not
 * a directory), in byte-wise sorted order: regular files (or symlinks to
 * them) whose extension matches case-insensitively; FIFOs, sockets and
 * devices are left out whatever their name (opening a FIFO blocks until a
 * writer comes); a dangling symlink with an image extension is kept so that
 * reading it reports it. Hidden entries (".name") are skipped, symlinks
 * followed but never around a loop. options NULL: recursive, default
 * extensions. A directory under path that cannot be listed fails the walk;
 * data_walk_collect goes on instead. */
vit_status data_walk(const char *path, const data_walk_options *options, data_file_list *out,
                     vit_error *err);

/* The same, but a directory that cannot be opened (path itself, or one
 * under it) adds one message to problems ("DIR: cannot open directory:
 * REASON") and the walk goes on with the rest; out then holds every file
 * that could be listed. Errors are only a path that does not exist and
 * running out of memory. */
vit_status data_walk_collect(const char *path, const data_walk_options *options,
                             data_file_list *out, data_file_list *problems, vit_error *err);

/* What a file that is not a regular one is, for messages: "a FIFO",
 * "a directory", "a character device" ... (mode as stat gives it). */
const char *data_file_kind(unsigned mode);

/* Appends the names (not paths) of path's non-hidden subdirectories, sorted. */
vit_status data_list_subdirs(const char *path, data_file_list *out, vit_error *err);

/* Whether path ends in one of the extensions (options NULL: the defaults). */
int data_has_image_extension(const char *path, const data_walk_options *options);

/* Frees every path and the list itself, leaving it empty. */
void data_file_list_free(data_file_list *list);

/* ------------------------------------------------------------- batches */

/* One batch handed out by a data_loader. Files that could not be read are
 * left out of images; row says where each file's image went. */
typedef struct data_batch {
    size_t first;            /* index (in the loader's paths) of the batch's first file */
    int count;               /* files in the batch */
    int num_good;            /* images decoded, packed at the front of images */
    const float *images;     /* num_good x 3 x height x width, preprocessed */
    int height, width;       /* of every image: the recipe's output size */
    /* Writable so the caller can still fail a file after the forward pass
     * (the CLI does when its outputs are not finite); the loader refills
     * both at the next data_loader_next. */
    int *row;          /* per file: its image's index in images, or -1 */
    vit_error *errors; /* per file: why it failed, where row is -1 */
} data_batch;

typedef struct data_loader data_loader;

/* Prepares to load paths (which must outlive the loader) in batches of
 * batch_size. With prefetch, one background thread prepares the next batch
 * while the caller works on the current one; without, each batch is decoded
 * when asked for, with `threads` threads. */
vit_status data_loader_create(const data_preprocess *pre, const char *const *paths, size_t count,
                              int batch_size, int threads, int prefetch, data_loader **out,
                              vit_error *err);

/* Hands out the next batch (valid until the next call) and returns its file
 * count; 0 when every file has been handed out. */
int data_loader_next(data_loader *loader, data_batch *batch);

/* Stops the background thread and frees; NULL is allowed. */
void data_loader_free(data_loader *loader);

/* A stable 64-bit hash (FNV-1a) of a string: the same on every machine and
 * run, for splitting work into shards. */
uint64_t data_hash(const char *text);

/* ------------------------------------------------------------- outputs
 * Files the inspection commands write (data/output.c). Every file is written
 * atomically: into "<path>.tmp.<pid>.<n>" beside it, then renamed over path,
 * so a reader never sees half a file and a failed run leaves none. */

/* A file being written atomically. */
typedef struct data_atomic_file data_atomic_file;

/* Whether path may be replaced by a finished file renamed over it: it does
 * not exist, or is a regular file or a symbolic link (the link is replaced,
 * its target left alone). A device, FIFO, socket or directory is refused:
 * the rename would remove it (as root, /dev/null itself). */
vit_status data_output_replaceable(const char *path, vit_error *err);

/* Creates the temporary file for path (mode 0666 minus umask), after
 * data_output_replaceable. */
vit_status data_atomic_open(const char *path, data_atomic_file **out, vit_error *err);

/* Appends size bytes. */
vit_status data_atomic_write(data_atomic_file *f, const void *bytes, size_t size, vit_error *err);

/* Flushes, syncs and renames the file into place, and frees f (also on
 * failure, when the temporary file is removed). */
vit_status data_atomic_commit(data_atomic_file *f, vit_error *err);

/* Removes the temporary file and frees f; NULL is allowed. */
void data_atomic_abort(data_atomic_file *f);

/* Writes bytes to path atomically. */
vit_status data_write_file_atomic(const char *path, const void *bytes, size_t size,
                                  vit_error *err);

/* Element types of .npy arrays. */
typedef enum data_npy_dtype {
    DATA_NPY_F32, /* '<f4' */
    DATA_NPY_I32  /* '<i4' */
} data_npy_dtype;

#define DATA_NPY_MAX_DIMS 8

/* Starts a NumPy .npy file (format 1.0, C order, little-endian, header
 * padded with spaces to a multiple of 64 bytes and ending in a newline);
 * the caller appends exactly prod(shape) elements with data_atomic_write
 * (little-endian, as this machine stores them) and commits. */
vit_status data_npy_open(const char *path, data_npy_dtype dtype, const int64_t *shape, int ndim,
                         data_atomic_file **out, vit_error *err);

/* Writes a whole .npy file: prod(shape) elements from data. */
vit_status data_write_npy(const char *path, data_npy_dtype dtype, const int64_t *shape, int ndim,
                          const void *data, vit_error *err);

/* Writes 8-bit pixels (channels 1: grey, 3: RGB, 4: RGBA; rows top to
 * bottom, no padding) as a PNG file with stb_image_write. */
vit_status data_write_png(const char *path, int width, int height, int channels,
                          const uint8_t *pixels, vit_error *err);

/* Resizes a single-channel sh x sw grid to dh x dw as
 * torch.nn.functional.interpolate(mode='bilinear', align_corners=False). */
void data_upsample_bilinear(const float *src, int sh, int sw, float *dst, int dh, int dw);

/* The region of an image of width x height (in its pixel coordinates, x0,
 * y0, x1, y1, possibly fractional, possibly beyond the image when the crop
 * pads) that p's resize and centre crop turn into the model input. Exact up
 * to the crop's rounding of its offset (half a resized pixel). */
void data_preprocess_source_box(const data_preprocess *p, int width, int height, double box[4]);

/* Colour of t in [0, 1] (clamped) on the "turbo" colormap (Google, 2019): a
 * perceptually smoothed rainbow, dark blue (0) through green to dark red (1). */
void data_colormap_turbo(float t, uint8_t rgb[3]);

/* A distinct colour for category `index` (20 colours, then repeating
 * lighter/darker). */
void data_palette_color(int index, uint8_t rgb[3]);

/* A copy of img with grid (gh x gw values, raster order) laid over box
 * (data_preprocess_source_box): values mapped linearly from [lo, hi] to the
 * turbo colormap, bilinearly upsampled to the box as F.interpolate would,
 * blended with opacity alpha; pixels outside the box (which the model did not
 * see) are dimmed. out is allocated. */
vit_status data_overlay_heatmap(const data_image *img, const double box[4], const float *grid,
                                int gh, int gw, float lo, float hi, float alpha, data_image *out,
                                vit_error *err);

/* The same for categories: labels (gh x gw, raster order) upsampled to the
 * box by nearest neighbour (F.interpolate mode='nearest') and drawn with
 * colors[label] (3 bytes each; label < 0: left as is) at opacity alpha. */
vit_status data_overlay_labels(const data_image *img, const double box[4], const int *labels,
                               int gh, int gw, const uint8_t *colors, float alpha,
                               data_image *out, vit_error *err);

/* The label grid upsampled to the whole width x height image by nearest
 * neighbour within box, `outside` elsewhere: one byte per pixel into out. */
void data_label_mask(const double box[4], const int *labels, int gh, int gw, int width,
                     int height, uint8_t outside, uint8_t *out);

/* Fills a rectangle, blending rgb at opacity alpha; clipped to the image. */
void data_fill_rect(data_image *img, int x, int y, int w, int h, const uint8_t rgb[3],
                    float alpha);

/* Draws ASCII text with its top-left corner at (x, y) in a small built-in
 * font (stb_easy_font) magnified `scale` times; clipped to the image.
 * Returns the width drawn, in pixels. data_text_height is a line's height. */
int data_draw_text(data_image *img, int x, int y, int scale, const char *text,
                   const uint8_t rgb[3]);
int data_text_width(const char *text, int scale);
int data_text_height(int scale);

/* ------------------------------------------------------------- datasets
 * Training data (data/dataset.c). */

/* Where the Debian package dataset-fashion-mnist puts the idx files. */
#define DATA_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* An MNIST-format split held in memory: count grey images of height x
 * width bytes (rows top to bottom) and a class byte each. */
typedef struct data_mnist {
    int count, height, width;
    uint8_t *pixels; /* count * height * width */
    uint8_t *labels; /* count */
} data_mnist;

/* Reads dir/{train,t10k}-images-idx3-ubyte and -labels-idx1-ubyte (each
 * gzip-compressed with a .gz suffix, or plain) for the training (train 1)
 * or test split. dir NULL: DATA_FASHION_MNIST_DIR. Headers, sizes and
 * labels (< 256 classes, as stored) are checked. */
vit_status data_mnist_load(const char *dir, int train, data_mnist *out, vit_error *err);
void data_mnist_free(data_mnist *set);

/* The ten Fashion-MNIST class names ("T-shirt/top" .. "Ankle boot"). */
const char *data_fashion_mnist_label(int index);

/* The caller's source of uniform numbers in [0, 1) (state is theirs), so
 * augmentation is seeded and reproducible without hidden state. */
typedef double (*data_uniform_fn)(void *state);

/* torchvision's RandomResizedCrop (area fraction in [min_scale, 1], aspect
 * ratio in [3/4, 4/3] log-uniform, ten tries then a centre crop) resized
 * to size x size bilinearly, then with flip a horizontal mirror half the
 * time. out is allocated. */
vit_status data_random_resized_crop(const data_image *img, int size, double min_scale, int flip,
                                    data_uniform_fn uniform, void *state, data_image *out,
                                    vit_error *err);

#endif
