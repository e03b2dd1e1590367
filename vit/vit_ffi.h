/* vit_ffi.h — a small flat C API over vitc for foreign-function callers
 * (Python's ctypes: python/vitc), exported by the shared library libvitc.so.
 *
 * Everything is an opaque handle, plain pointers, ints and sizes: no
 * structs, enums or callbacks cross the boundary. Every call that can fail
 * returns a base_status (0: BASE_OK; the codes of base_error.h) and writes the
 * library's one-line message into the caller's buffer msg (msg_size bytes,
 * NUL-terminated; may be NULL). Outputs go into memory the caller owns and
 * sized from vit_ffi_size; nothing returned points into a handle's buffers
 * except the strings of vit_ffi_label / vit_ffi_info_json, which live as long
 * as the handle.
 *
 *   char msg[1024];
 *   vit_ffi_model *m;
 *   if (vit_ffi_open("model.safetensors", 0, 0, 0, &m, msg, sizeof msg)) puts(msg);
 *   const int s = vit_ffi_size(m, "image_size");
 *   float *x = malloc(sizeof(float) * 3 * s * s);
 *   float *p = malloc(sizeof(float) * vit_ffi_size(m, "outputs"));
 *   vit_ffi_preprocess_file(m, "cat.jpg", x, msg, sizeof msg);
 *   vit_ffi_logits(m, x, 1, 1, p, msg, sizeof msg);      // probabilities
 *   vit_ffi_close(m);
 *
 * What each call computes is what the matching `vit` command writes, bit for
 * bit: vit_ffi_logits = classify (softmax) / --all-classes logits,
 * vit_ffi_features = features [--pool P] [--l2] [--layer L], vit_ffi_attention
 * = attention --npy [--head H] [--layer L], vit_ffi_rollout = attention
 * --rollout --npy [--discard R], vit_ffi_patch_logits = patches --npy,
 * vit_ffi_segment = segment --npy. Images are batches of preprocessed
 * n x 3 x S x S floats (S = vit_ffi_size(m, "image_size")), which
 * vit_ffi_preprocess_file and vit_ffi_preprocess_pixels make exactly as the
 * commands do; a batch of any length is run in chunks of the handle's
 * context, and the bits do not depend on the chunking.
 *
 * Threads: a handle is used by one thread at a time (the caller locks);
 * two handles run in two threads at once. The thread count is the handle's
 * (vit_ffi_open), never the process's OpenMP setting.
 */
#ifndef VIT_FFI_H
#define VIT_FFI_H

#include <stddef.h>
#include <stdint.h>

/* Bumped whenever a signature below changes; the binding checks it. */
#define VIT_FFI_ABI_VERSION 1
int vit_ffi_abi_version(void);

typedef struct vit_ffi_model vit_ffi_model;

/* The shipped default model's path as this build knows it (weights/ of the
 * source tree it was built from), or "" when the build set none. The file
 * may since have moved: the caller checks. */
const char *vit_ffi_default_model(void);

/* Loads the model at path (a directory, a .safetensors file, or a Hugging
 * Face hub name org/name found in the local cache) and makes its context:
 * threads (0: one per processor), size (0: the model's own input size;
 * else positions resampled, as --size), allow_unused as --allow-unused.
 * Notices the CLI would print (vit_model_notices) are kept: vit_ffi_notices. */
int vit_ffi_open(const char *path, int threads, int size, int allow_unused, vit_ffi_model **out,
                 char *msg, size_t msg_size);
void vit_ffi_close(vit_ffi_model *m);

/* A size of the open model by name, or -1 for a name it does not know:
 * image_size, patch_size, tokens, prefix, hidden, layers, heads, grid_h,
 * grid_w, patches, classes (0: no head), outputs (floats per image of
 * vit_ffi_logits), pooled (floats of features pool "model"), registers,
 * class_token (1 / 0), labels, threads, batch (the context's chunk). */
int vit_ffi_size(const vit_ffi_model *m, const char *name);

/* Class label i, or NULL. */
const char *vit_ffi_label(const vit_ffi_model *m, int i);

/* vit info's lines as a JSON object {"key": "value", ...} (keys as vit
 * info prints them), and the load notices ("" when none). */
const char *vit_ffi_info_json(const vit_ffi_model *m);
const char *vit_ffi_notices(const vit_ffi_model *m);

/* Decodes an image file into 8-bit RGB as every command does
 * (data_image_load): *pixels (height x width x 3, free with vit_ffi_free),
 * *width, *height. */
int vit_ffi_load_image(const char *path, uint8_t **pixels, int *width, int *height, char *msg,
                       size_t msg_size);
void vit_ffi_free(void *p);

/* One image into the model's input (3 x S x S floats): from a file, or from
 * decoded RGB pixels (height x width x 3 bytes, rows top to bottom), by the
 * same recipe and code (data_preprocess_apply). */
int vit_ffi_preprocess_file(const vit_ffi_model *m, const char *path, float *out, char *msg,
                            size_t msg_size);
int vit_ffi_preprocess_pixels(const vit_ffi_model *m, const uint8_t *pixels, int width,
                              int height, float *out, char *msg, size_t msg_size);

/* n x outputs floats: probabilities (softmax 1; a headless model's
 * features either way) or logits. An image whose outputs are not all
 * finite fails the call (BASE_E_FORMAT), as classify fails its file. */
int vit_ffi_logits(vit_ffi_model *m, const float *images, int n, int softmax, float *out,
                   char *msg, size_t msg_size);

/* Features. pool: 0 cls, 1 mean, 2 none, 3 model (vit_pool's numbering),
 * from the last block's tokens through the final norm: n x hidden (cls,
 * mean), n x pooled (model), n x tokens x hidden (none). pool -1: the raw
 * residual stream after block `layer` (-1: the embedding), n x tokens x
 * hidden. l2: each vector divided by its L2 norm. */
int vit_ffi_features(vit_ffi_model *m, const float *images, int n, int pool, int layer, int l2,
                     float *out, char *msg, size_t msg_size);

/* Block `layer`'s attention map over the patches (n x patches floats, raster
 * order): the class token's row of head `head` (-1: the mean of the heads);
 * a model without a class token: the mean of the patch rows. With head
 * -2, every head and then their mean: n x (heads + 1) x patches (--grid). */
int vit_ffi_attention(vit_ffi_model *m, const float *images, int n, int layer, int head,
                      float *out, char *msg, size_t msg_size);

/* Attention rollout through blocks 0 .. layer (discard as --discard): the
 * class token's row over the patches (without one, the mean of the patch
 * rows), n x patches floats. */
int vit_ffi_rollout(vit_ffi_model *m, const float *images, int n, int layer, float discard,
                    float *out, char *msg, size_t msg_size);

/* The classifier on every patch token after block `layer`: n x patches x
 * classes logits. */
int vit_ffi_patch_logits(vit_ffi_model *m, const float *images, int n, int layer, float *out,
                         char *msg, size_t msg_size);

/* k-means segmentation of the patches (L2-normalised tokens after block
 * `layer`, or its attention keys with keys 1) into k clusters with seed:
 * n x patches int32 cluster ids. */
int vit_ffi_segment(vit_ffi_model *m, const float *images, int n, int k, int seed, int layer,
                    int keys, int32_t *out, char *msg, size_t msg_size);

/* The heatmap picture vit attention draws: grid (grid_h x grid_w values)
 * over the RGB image (height x width x 3), where the model's recipe
 * crops it, turbo colours from the grid's min to max; out has the image's
 * size (height x width x 3). */
int vit_ffi_overlay_heatmap(const vit_ffi_model *m, const uint8_t *pixels, int width, int height,
                            const float *grid, uint8_t *out, char *msg, size_t msg_size);

/* Writes 8-bit pixels (channels 1, 3 or 4) as a PNG file, atomically. */
int vit_ffi_write_png(const char *path, int width, int height, int channels,
                      const uint8_t *pixels, char *msg, size_t msg_size);

#endif
