/* weights.h — reading and writing checkpoints.
 *
 * Two parts:
 *  - safetensors: a validating, zero-copy (mmap) reader and an atomic writer.
 *    Nothing in a file is trusted: the header length, the JSON, every dtype,
 *    shape and byte range are checked before a tensor is handed out.
 *  - layouts: the key names timm and Hugging Face use for ViT/DeiT, mapped to
 *    one canonical set of roles so the model loader never sees hub spellings.
 */
#ifndef WEIGHTS_H
#define WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "base_error.h"
#include "base_limits.h"

/* ---------------------------------------------------------------- safetensors */

typedef enum weights_dtype {
    WEIGHTS_F32,
    WEIGHTS_F16,
    WEIGHTS_BF16,
    WEIGHTS_F64,
    WEIGHTS_I8,
    WEIGHTS_U8,
    WEIGHTS_I16,
    WEIGHTS_I32,
    WEIGHTS_I64,
    WEIGHTS_BOOL
} weights_dtype;

#define WEIGHTS_MAX_DIMS 8
/* Default safety limits for files from strangers (base_limits overrides). */
#define WEIGHTS_MAX_HEADER_BYTES BASE_DEFAULT_MAX_HEADER_BYTES
#define WEIGHTS_MAX_TENSORS BASE_DEFAULT_MAX_TENSORS

typedef struct weights_tensor {
    const char *name;
    weights_dtype dtype;
    int ndim;
    int64_t shape[WEIGHTS_MAX_DIMS];
    size_t numel;      /* product of shape (1 for a scalar) */
    size_t nbytes;     /* numel * element size, validated against the file */
    const void *data;  /* points into the mapping; valid until weights_close. The
                          format does not align tensors: it may be misaligned for
                          its dtype, so read it with weights_to_f32 or memcpy. */
} weights_tensor;

typedef struct weights_file weights_file;

/* Maps and validates a .safetensors file. On failure *out is NULL and err
 * names the file, the tensor (if any) and the problem. */
base_status weights_open(const char *path, weights_file **out, base_error *err);

/* weights_open with limits other than the defaults (NULL: defaults): header
 * length, tensor count and the JSON nesting depth of the header. */
base_status weights_open_limited(const char *path, const base_limits *limits, weights_file **out,
                                base_error *err);

/* The same checks on a file held in memory (size bytes at bytes, which must
 * stay valid and unchanged until weights_close; nothing is copied). name
 * stands for the path in messages and weights_path. For fuzzing and for
 * callers that already hold the bytes. */
base_status weights_open_memory(const void *bytes, size_t size, const char *name,
                               const base_limits *limits, weights_file **out, base_error *err);

/* Unmaps and frees; NULL is allowed. Tensors obtained from f become invalid. */
void weights_close(weights_file *f);

/* The path given to weights_open. */
const char *weights_path(const weights_file *f);

/* Number of tensors, and the i-th in file-offset order. */
size_t weights_count(const weights_file *f);
const weights_tensor *weights_at(const weights_file *f, size_t i);

/* The tensor called name, or NULL. */
const weights_tensor *weights_find(const weights_file *f, const char *name);

/* The string value of key in the header's "__metadata__", or NULL. */
const char *weights_metadata(const weights_file *f, const char *key);

/* Number of "__metadata__" entries, and the i-th key and value (NULL past
 * the end), in header order. */
size_t weights_metadata_count(const weights_file *f);
const char *weights_metadata_key(const weights_file *f, size_t i);
const char *weights_metadata_value(const weights_file *f, size_t i);

/* Size in bytes of one element of dtype; its safetensors spelling ("F32"). */
size_t weights_dtype_size(weights_dtype dtype);
const char *weights_dtype_name(weights_dtype dtype);

/* Converts t (F32, F16 or BF16) to float32 into dst (t->numel floats). An
 * I8 matrix [rows, cols] written by weights_quantize is dequantized with its
 * scales, the tensor "<name>_scale" in f ([rows, groups] or [rows]; groups
 * of cols / groups weights along each row).
 * Other dtypes are BASE_E_UNSUPPORTED, with the file and tensor named. */
base_status weights_to_f32(const weights_file *f, const weights_tensor *t, float *dst,
                          base_error *err);

/* The "<name>_scale" tensor of an I8 matrix t [rows, cols] and its group
 * count (a divisor of cols; the group is cols / groups weights along a
 * row). BASE_E_FORMAT naming both when it is missing or malformed. */
base_status weights_i8_scales(const weights_file *f, const weights_tensor *t,
                             const weights_tensor **scale, size_t *groups, base_error *err);

/* Writes tensors (data taken from each .data, .nbytes bytes) and optional
 * string metadata (n_meta key/value pairs) as a safetensors file. The file is
 * written to a temporary name beside path and renamed into place, so a crash
 * never leaves a half-written checkpoint. */
base_status weights_write(const char *path, const weights_tensor *tensors, size_t n_tensors,
                         const char *const *meta_keys, const char *const *meta_values,
                         size_t n_meta, base_error *err);

/* ------------------------------------------------------------ quantisation */

typedef enum weights_quant {
    WEIGHTS_QUANT_BF16, /* every floating-point tensor as BF16 (round to nearest even) */
    WEIGHTS_QUANT_INT8  /* the encoder blocks' linear-layer matrices [rows, cols] as I8,
                           symmetric, with one F32 scale (max|w| / 127) per group of
                           WEIGHTS_INT8_GROUP weights along a row (per row when cols is
                           not a multiple), "<name>_scale" [rows, groups]; everything
                           else (embeddings, norms, biases, head) F32 */,
    WEIGHTS_QUANT_F32,  /* every floating-point tensor as F32 */
    WEIGHTS_QUANT_KEEP  /* every tensor as stored (I8 files included) */
} weights_quant;

#define WEIGHTS_INT8_GROUP 32

/* The suffix of the scale tensor beside an I8 matrix. */
#define WEIGHTS_SCALE_SUFFIX "_scale"

/* Writes a copy of f with its tensors stored as `to` asks, and the n_meta
 * metadata pairs given (the caller decides what of f's own to keep), to
 * path (atomically, as weights_write). Refuses a file that already holds I8
 * tensors unless `to` is WEIGHTS_QUANT_KEEP. */
base_status weights_quantize(const weights_file *f, weights_quant to, const char *path,
                            const char *const *meta_keys, const char *const *meta_values,
                            size_t n_meta, base_error *err);

/* -------------------------------------------------------------------- layouts */

typedef enum weights_layout {
    WEIGHTS_LAYOUT_UNKNOWN = 0,
    WEIGHTS_LAYOUT_TIMM,    /* patch_embed.proj, blocks.N.attn.qkv, head */
    WEIGHTS_LAYOUT_HF_VIT,  /* vit.embeddings..., vit.encoder.layer.N..., classifier */
    WEIGHTS_LAYOUT_HF_DEIT, /* deit.embeddings..., cls_classifier/distillation_classifier */
    WEIGHTS_LAYOUT_HF_DINOV2 /* [dinov2.]embeddings..., encoder.layer.N.norm1 / mlp.fc1 /
                                layer_scale1.lambda1, classifier on [CLS ‖ mean] */
} weights_layout;

/* Every tensor the model needs, independent of hub spelling. Per-layer roles
 * take a layer index. Q, K, V are separate roles: timm stores them fused as
 * one qkv tensor, which weights_layout_find exposes as slices. */
typedef enum weights_role {
    WEIGHTS_PATCH_W, WEIGHTS_PATCH_B, WEIGHTS_CLS_TOKEN, WEIGHTS_DIST_TOKEN, WEIGHTS_POS_EMBED,
    WEIGHTS_LN1_W, WEIGHTS_LN1_B,
    WEIGHTS_Q_W, WEIGHTS_Q_B, WEIGHTS_K_W, WEIGHTS_K_B, WEIGHTS_V_W, WEIGHTS_V_B,
    WEIGHTS_PROJ_W, WEIGHTS_PROJ_B,
    WEIGHTS_LN2_W, WEIGHTS_LN2_B,
    WEIGHTS_FC1_W, WEIGHTS_FC1_B, WEIGHTS_FC2_W, WEIGHTS_FC2_B,
    WEIGHTS_NORM_W, WEIGHTS_NORM_B,
    WEIGHTS_HEAD_W, WEIGHTS_HEAD_B, WEIGHTS_HEAD_DIST_W, WEIGHTS_HEAD_DIST_B,
    /* The switches of the wider family (a layout without a spelling for a
     * role never finds it: the key is then empty). */
    WEIGHTS_REG_TOKEN,                     /* [1, R, D] register tokens */
    WEIGHTS_NORM_PRE_W, WEIGHTS_NORM_PRE_B, /* timm pre_norm */
    WEIGHTS_FC_NORM_W, WEIGHTS_FC_NORM_B,   /* timm fc_norm (after pooling) */
    WEIGHTS_LS1, WEIGHTS_LS2,               /* per-block LayerScale [D] */
    WEIGHTS_Q_NORM_W, WEIGHTS_Q_NORM_B, WEIGHTS_K_NORM_W, WEIGHTS_K_NORM_B, /* qk-norm [D/H] */
    WEIGHTS_ROLE_COUNT
} weights_role;

/* Recognises the layout from the tensor names. */
weights_layout weights_layout_detect(const weights_file *f);

/* Human-readable layout name ("timm", "Hugging Face ViT", ...). */
const char *weights_layout_name(weights_layout layout);

/* The number of encoder layers present (highest block index + 1). */
int weights_layout_num_layers(const weights_file *f, weights_layout layout);

/* Where a role's values live: a tensor, and for a slice of a fused tensor the
 * first row and row count along dimension 0 (row_count 0: the whole tensor). */
typedef struct weights_ref {
    const weights_tensor *tensor;
    int64_t row_start;
    int64_t row_count;
    char key[160]; /* the key looked up, for messages */
} weights_ref;

/* Finds role (for layer, where per-layer) in f. Returns BASE_OK with
 * ref->tensor NULL when the tensor is absent; the caller decides whether the
 * role is optional. */
base_status weights_layout_find(const weights_file *f, weights_layout layout, weights_role role,
                               int layer, weights_ref *ref, base_error *err);

/* How a file of layout spells the tensor timm calls timm_name, for writing
 * one (a trained model saved in the layout the loader reads back): into
 * out, the Hugging Face keys after prefix ("dinov2.", "vit.", ...; the
 * heads take none). Returns 0 for a whole tensor, 1 when the layout stores
 * a third of it (timm's fused qkv: part 0..2 names Q, K or V), -1 when the
 * layout has no spelling for it (out unchanged). */
int weights_layout_spell(weights_layout layout, const char *prefix, const char *timm_name,
                         int part, char *out, size_t size);

/* Whether name is a tensor known to be unneeded at inference in the layout
 * (HF embeddings.mask_token, HF pooler.dense.*): such a tensor is never
 * reported as unused. */
int weights_layout_known_unneeded(weights_layout layout, const char *name);

/* ------------------------------------------------------------- shipped files */

/* The 1000 ImageNet-1k class names in index order, one per line, for
 * 1000-class checkpoints that carry no labels (timm). Embedded at build time
 * from weights/imagenet1k_labels.txt. */
const char *weights_imagenet1k_labels(void);

#endif
