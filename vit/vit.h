/* vit.h — the vitc public API: load a ViT/DeiT checkpoint, run it.
 *
 *   vit_model *model;  vit_context *ctx;  base_error err;
 *   vit_model_load("models/deit-tiny", NULL, &model, &err);
 *   vit_context_create(model, batch, 0, threads, &ctx, &err); // 0: native size
 *   vit_forward(ctx, images, batch, logits, &err);       // images: B x 3 x S x S
 *
 * The model follows timm / Hugging Face semantics: Conv patch embedding,
 * class (and DeiT distillation) token, learned absolute position embeddings,
 * pre-norm encoder blocks (LayerNorm, multi-head self-attention, exact GELU
 * MLP), a final LayerNorm and a linear head on the class token (distilled
 * DeiT: the mean of the class and distillation heads). A checkpoint without a
 * head returns its pooled features (the normed class token). The switches of
 * timm's VisionTransformer and of transformers' DINOv2 (vit_config: register
 * tokens, no class token and average pooling, fc_norm, pre-norm, LayerScale,
 * qk-norm, QKV without bias, QuickGELU, no_embed_class) are read from the
 * checkpoint's tensors and config.
 *
 * A vit_model is read-only after loading and may be shared between threads;
 * each thread running forward passes needs its own vit_context, which holds
 * every buffer the forward pass touches, so the pass itself never allocates.
 *
 * Thread counts are arguments (vit_context_create, vit_load_options.threads,
 * vit_token_logits): the library neither reads nor sets the process's
 * OpenMP or OpenBLAS thread settings, so two contexts in one process (a
 * server with two models, a Python caller) each run on their own count.
 * 0 means one thread per processor the process may run on
 * (omp_get_num_procs). Outputs do not depend on the count.
 */
#ifndef VIT_H
#define VIT_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"
#include "base_error.h"
#include "weights.h"

/* How the features the head reads are pooled from the final tokens. */
typedef enum vit_global_pool {
    VIT_GLOBAL_POOL_TOKEN = 0, /* the class token (timm global_pool='token'); distilled
                                  DeiT: class and distillation tokens, one head each */
    VIT_GLOBAL_POOL_AVG,       /* the mean of the patch tokens, prefix tokens (class,
                                  registers) left out (timm global_pool='avg') */
    VIT_GLOBAL_POOL_TOKEN_AVG  /* [class token ‖ mean of the patch tokens], 2 x hidden
                                  (Hugging Face Dinov2ForImageClassification) */
} vit_global_pool;

/* The MLP's activation. */
typedef enum vit_act {
    VIT_ACT_GELU = 0,   /* exact (erf) GELU */
    VIT_ACT_QUICK_GELU  /* x * sigmoid(1.702 x) (OpenAI CLIP; timm act_layer='quick_gelu') */
} vit_act;

/* A model's hyper-parameters and switches. Every switch's zero value is
 * the original ViT's, so a config written with only the sizes (training's)
 * is a plain ViT. The token sequence is [class (unless no_class_token)] [distillation (distilled)] [registers
 * (num_reg_tokens)] [patches, row-major]: num_prefix_tokens of them before
 * the patches. */
typedef struct vit_config {
    int hidden_size;       /* D */
    int num_layers;
    int num_heads;
    int mlp_size;          /* hidden width of the MLP */
    int patch_size;
    int image_size;        /* the input size the model runs at by default: the position
                              embeddings' grid x patch, except where the checkpoint's
                              library always resamples them (DINOv2: its recipe's size) */
    int num_channels;
    float layer_norm_eps;  /* every LayerNorm's (also pre-norm, fc_norm, qk-norm) */
    int num_classes;       /* 0: no head, the output is the pooled features */
    int num_prefix_tokens; /* !no_class_token + distilled + num_reg_tokens */
    int pos_embed_antialias; /* resample position embeddings with antialiasing */

    int no_class_token;    /* 1: no class token (timm class_token=False); pooling is avg */
    int distilled;         /* 1: DeiT distillation token (and head, averaged with the class head) */
    int num_reg_tokens;    /* register tokens (timm reg_tokens, HF num_register_tokens) */
    int pos_embed_grid;    /* side of the patch grid the position embeddings hold */
    /* Leading prefix tokens that have a row in the position embeddings
     * (the rest get none): num_prefix_tokens (timm default), 0 (timm
     * no_embed_class: pos_embed holds only patch positions), 1 (HF DINOv2:
     * the class token's, registers inserted after). */
    int pos_embed_prefix;
    int no_embed_class;    /* pos_embed_prefix == 0 while there are prefix tokens */
    vit_global_pool global_pool;
    int no_final_norm;     /* 1: no LayerNorm `norm` on the tokens after the blocks
                              (identity: timm with fc_norm) */
    int fc_norm;           /* 1: LayerNorm `fc_norm` on the pooled features */
    int pre_norm;          /* 1: LayerNorm `norm_pre` before the blocks (CLIP) */
    vit_act act;
    int no_qkv_bias;       /* 1: Q, K, V have no biases (timm qkv_bias=False) */
    int qk_norm;           /* 1: LayerNorm over the head dim on Q and K (per head,
                              shared weights) before the scaled dot product */
    int layer_scale;       /* 1: per-channel LayerScale on both residual branches
                              (timm ls1/ls2.gamma, HF layer_scale1/2.lambda1) */
} vit_config;

/* The floats per image the head reads (the pooled features): hidden_size,
 * or 2 x hidden_size for VIT_GLOBAL_POOL_TOKEN_AVG. */
int vit_config_pooled_size(const vit_config *c);

/* The switches of c a plain ViT/DeiT lacks, named as vit info does
 * ("LayerScale, registers x4, ..."), into buf; empty when none. Returns buf. */
const char *vit_config_describe_switches(const vit_config *c, char *buf, size_t size);

/* How position embeddings are resampled at a size other than the native one. */
typedef enum vit_pos_resample {
    VIT_POS_RESAMPLE_AUTO = 0,  /* as the checkpoint's library does: timm (>= 0.9)
                                   antialiased bicubic, transformers plain bicubic */
    VIT_POS_RESAMPLE_BICUBIC,   /* F.interpolate bicubic, align_corners=False */
    VIT_POS_RESAMPLE_BICUBIC_AA /* the same with antialias=True */
} vit_pos_resample;

typedef struct vit_load_options {
    const char *labels_path; /* one label per line; overrides the checkpoint's */
    vit_pos_resample pos_resample;
    const base_limits *limits; /* safety limits (base_limits.h); NULL: the defaults */
    /* The input size the caller will run at (data_preprocess_set_size and
     * vit_context_create with it, as --size does), 0: the model's own. The
     * preprocessing recipe is checked to make images of this size. */
    int input_size;
    /* The kernels' instruction-set path, for every dtype: "auto",
     * "generic", "avx2", "avx512", "avx512vnni" (vit/kernels.h; all give
     * the same bits). NULL: the VITC_ISA environment variable, else auto.
     * A path the CPU cannot run is refused at load. */
    const char *isa;
    /* Load a checkpoint holding tensors the forward pass does not use
     * (refused otherwise, the unused ones named; a short list known to be
     * unneeded at inference is always accepted: README), with a notice
     * (vit_model_notices) naming them. */
    int allow_unused;
    /* Threads packing the weights at load (0: one per processor). */
    int threads;
} vit_load_options;

typedef struct vit_model vit_model;

/* Loads a checkpoint. path is a model directory (model.safetensors beside
 * config.json / preprocessor_config.json) or a .safetensors file. The key
 * layout (timm or Hugging Face) is detected; hyper-parameters come from
 * config.json, else the file's __metadata__ "config", else tensor shapes.
 * Every tensor's shape is checked against the configuration before use.
 * Refused with one line naming the file: a config key that is present but
 * invalid (wrong type, not a whole number, out of range; an absent key or
 * JSON null takes the default), a patch embedding for other than 3 input
 * channels, a preprocessing recipe whose output is not the model's input
 * size, and a config.json / preprocessor_config.json that exists but is not
 * a regular file (FIFO, device, directory; never opened). The switches
 * (vit_config) come from the tensors present, timm's config.json
 * (architecture name and model_args) and HF configs; one they cannot decide
 * is an error naming the file and the missing fact. A checkpoint holding
 * tensors the forward pass does not use is refused, naming them, unless
 * options->allow_unused (then a notice) or they are known to be unneeded
 * (weights_layout_known_unneeded: HF mask_token, pooler). */
base_status vit_model_load(const char *path, const vit_load_options *options, vit_model **out,
                          base_error *err);

/* The same from memory: the safetensors bytes (size bytes, kept by the model
 * until vit_model_free, not copied) and the texts of config.json and
 * preprocessor_config.json (NULL: absent). name stands for the file in
 * messages. For fuzzing and for callers that hold the files already. */
base_status vit_model_load_memory(const void *weights, size_t size, const char *name,
                                 const char *config_json, const char *preprocessor_json,
                                 const vit_load_options *options, vit_model **out, base_error *err);

/* Writes a copy of the model's checkpoint to path in the dtype `to` asks
 * (weights_quantize says what each stores; WEIGHTS_QUANT_KEEP as stored).
 * packed: its matrices also packed for the model's kernels (vit/packed.c),
 * so loading it maps them instead of packing (a larger file: the source
 * tensors stay, for other kernels and other tools). The copy carries in
 * its __metadata__ the config and preprocessing texts the model was loaded
 * with, so it loads on its own. */
base_status vit_model_quantize(const vit_model *model, weights_quant to, int packed,
                              const char *path, base_error *err);

/* Frees the model; NULL is allowed. Contexts must be freed first. */
void vit_model_free(vit_model *model);

const vit_config *vit_model_config(const vit_model *model);

/* The preprocessing the checkpoint was trained with (at its native size). */
const data_preprocess *vit_model_preprocess(const vit_model *model);

/* Detected key layout, and where the configuration came from ("config.json",
 * "safetensors __metadata__", "inferred from tensor shapes"). */
weights_layout vit_model_layout(const vit_model *model);
const char *vit_model_config_source(const vit_model *model);

/* Notes a user should see on stderr (e.g. inferred hyper-parameters), one per
 * line; empty when there are none. */
const char *vit_model_notices(const vit_model *model);

/* The safetensors file the model was read from. */
const char *vit_model_weights_path(const vit_model *model);

/* Number of parameters, and the stored dtypes ("F32", "F16+F32"...). */
size_t vit_model_param_count(const vit_model *model);
const char *vit_model_dtypes(const vit_model *model);

/* The instruction-set path the model runs on, every dtype ("generic",
 * "avx2", "avx512", "avx512vnni": vit_load_options.isa). Every path gives
 * the same bits. */
const char *vit_model_kernels(const vit_model *model);

/* The VITC_ISA values this build knows, "|"-separated ("generic|avx2|..."). */
const char *vit_kernels_choices(void);

/* Whether its matrices were mapped from a packed copy (vit quantize) or
 * packed at load: "mapped from the file", "packed at load", or (a copy
 * packed for other int8 kernels) "partly mapped from the file, partly
 * packed at load". */
const char *vit_model_packing(const vit_model *model);

/* The path of the int8 kernels its int8 layers run on ("generic", "avx2",
 * "avx512vnni"; avx512 without VNNI runs avx2's), or NULL when every layer
 * is float. */
const char *vit_model_int8_kernels(const vit_model *model);

/* The path its bf16 layers (a vit quantize --dtype bf16 file's linear
 * layers) compute on: "avx512bf16 (vdpbf16ps)", "avx2 (fma)", "neon
 * (vfmaq)" or "generic (C)", every one the same bits; NULL when it has
 * none. */
const char *vit_model_bf16_kernels(const vit_model *model);

/* Class labels: the count (0 when the checkpoint has none) and the label of
 * a class, or NULL. Where labels come from: "config.json id2label",
 * "safetensors __metadata__ config id2label", "--labels FILE", "ImageNet-1k
 * (shipped)", or "none". An id2label whose count is not the number of
 * classes is refused at load (it belongs to another head); a headless model
 * ignores id2label. */
int vit_model_num_labels(const vit_model *model);
const char *vit_model_label(const vit_model *model, int class_index);
const char *vit_model_labels_source(const vit_model *model);

/* What `vit info` prints about a model, line by line (key, value): file,
 * layout, config, architecture, switches, input, positions (when
 * resampled), layer norm, activation, other sizes, head, parameters,
 * kernels, int8 layers (when any), weights, labels, preprocess. is_default:
 * the model is the shipped default (said on the file line). Also vit
 * serve's GET /info and the Python binding's model.info. */
#define VIT_DESCRIPTION_MAX_LINES 20
typedef struct vit_model_description {
    int count;
    struct {
        const char *key;
        char value[1024];
    } lines[VIT_DESCRIPTION_MAX_LINES];
} vit_model_description;
void vit_model_describe(const vit_model *model, int is_default, vit_model_description *out);

/* Floats per image that vit_forward writes: num_classes, or hidden_size for
 * a checkpoint without a head. */
int vit_model_output_size(const vit_model *model);

/* ---- A model made for training: the same vit_model, its parameters
 * float32 in one owned buffer with a table of tensors in timm's names (the
 * names the loader reads), none packed. vit/vit_train.h runs and trains it
 * through the same forward pieces as vit_forward (vit/vit_block.h);
 * vit_model_save writes it for vit_model_load. */

/* One parameter tensor of a created model: its timm name and shape, where
 * its values sit in vit_model_params (and its gradient in the trainer's
 * buffer of the same layout), and how the optimiser treats it. */
typedef struct vit_param {
    char name[48];
    int ndim;
    int64_t shape[4];
    size_t offset, numel;
    int decay;     /* AdamW weight decay applies: weight matrices only (like timm,
                      no decay on norms, biases, position embeddings, class token) */
    int trainable; /* 0: frozen (vit_adamw_step leaves it alone) */
} vit_param;

/* A model of config with every parameter zero (vit_model_init or
 * vit_model_assign fill them): num_classes >= 1, num_prefix_tokens the
 * class token and registers, no distillation token (a config stating only
 * sizes is the original ViT's); its position grid is image_size's. What
 * training cannot handle is BASE_E_ARG with one line saying why. */
base_status vit_model_create(const vit_config *config, vit_model **out, base_error *err);

/* timm's initialisation of a created model: weights and tokens truncated
 * normal (std 0.02, drawn in table order from seed), biases zero,
 * LayerNorm weight one, LayerScale 1e-5. */
void vit_model_init(vit_model *m, uint64_t seed);

/* Fills created model m from src (a loaded model: any dtype, packed or
 * not) whose sizes and switches match, transformed where m differs: a
 * 1-channel m takes the sum of src's 3-channel patch kernel (the exact
 * equivalent for grey inputs), another patch grid is resampled as src's
 * library does, src's patch bias is folded into the patch positions when
 * m has none (pre-norm). With copy_head 0 m's head keeps its values (a new
 * head for new classes, which may pool otherwise). BASE_E_SHAPE when the
 * backbones differ, naming the switches that do. */
base_status vit_model_assign(vit_model *m, const vit_model *src, int copy_head, base_error *err);

/* A created model's parameters (vit_model_param_count floats; NULL for a
 * loaded model), its tensors (0 for a loaded model) and the tensor called
 * name (timm spelling), or NULL. */
float *vit_model_params(vit_model *m);
size_t vit_model_num_tensors(const vit_model *m);
vit_param *vit_model_tensor_at(vit_model *m, size_t i);
vit_param *vit_model_find(vit_model *m, const char *name);

/* Marks every tensor but the head frozen (1) or all trainable (0). */
void vit_model_freeze_backbone(vit_model *m, int freeze);

/* Writes a created model as a safetensors file (atomically) in the names
 * vit_model_load reads: its tensors (timm's; a [class ‖ mean] head in the
 * Hugging Face DINOv2 names of weights/layout.c), and in __metadata__ the
 * config (Hugging Face form, id2label from labels when non-NULL) and
 * preprocessing (pre, non-NULL: as a preprocessor_config). A 1-channel
 * model is written as a 3-channel one whose patch kernel is folded with the
 * ITU-R 601 luma weights, so RGB input computes the model on PIL's
 * convert('L') grey (exactly for grey images) and every colour input
 * works. extra tensors and metadata (may be NULL / 0) are appended:
 * training state for resume. BASE_E_ARG for a loaded model. */
base_status vit_model_save(const vit_model *m, const char *path, const char *const *labels,
                          const data_preprocess *pre, const weights_tensor *extra,
                          size_t num_extra, const char *const *meta_keys,
                          const char *const *meta_values, size_t num_meta, base_error *err);

typedef struct vit_context vit_context;

/* Allocates the buffers for batches of up to max_batch images of
 * image_size x image_size pixels (0: the model's native size), run on
 * `threads` OpenMP threads (1..1024; 0: one per processor). At another
 * size the position embeddings are resampled once, here. */
base_status vit_context_create(const vit_model *model, int max_batch, int image_size, int threads,
                              vit_context **out, base_error *err);

void vit_context_free(vit_context *ctx);

/* The input size, token count (prefix + patches) and thread count of the
 * context. */
int vit_context_image_size(const vit_context *ctx);
int vit_context_num_tokens(const vit_context *ctx);
int vit_context_threads(const vit_context *ctx);

/* What vit_context_capture copies out of the forward pass. */
typedef enum vit_capture_kind {
    VIT_CAPTURE_TOKENS,    /* batch x tokens x hidden: the residual stream after the
                              embedding (layer -1) or after encoder block `layer` */
    VIT_CAPTURE_ATTENTION, /* batch x heads x tokens x tokens: block `layer`'s softmax
                              probabilities, row = query, column = key */
    VIT_CAPTURE_KEYS,      /* batch x tokens x hidden: block `layer`'s attention keys,
                              heads side by side (head h = columns h*dh ..) */
    VIT_CAPTURE_KIND_COUNT
} vit_capture_kind;

/* Asks the next forward passes to copy `kind` for `layer` into dst (sized
 * for the batches that will be passed; layout above). dst NULL stops it.
 * Any number of (kind, layer) pairs may be active at once. Costs nothing
 * when unused. */
base_status vit_context_capture(vit_context *ctx, vit_capture_kind kind, int layer, float *dst,
                               base_error *err);

/* The same as vit_context_capture(ctx, VIT_CAPTURE_TOKENS, layer, dst, err). */
base_status vit_context_capture_tokens(vit_context *ctx, int layer, float *dst, base_error *err);

/* Applies the model's final LayerNorm (and fc_norm) and classifier head to
 * n token rows taken after the last encoder block (n x hidden floats): n x
 * num_classes logits into out (the mean of both heads for distilled DeiT).
 * This is the classifier run on every patch token. BASE_E_ARG for a model
 * without head; BASE_E_UNSUPPORTED for a head on [class ‖ mean] (DINOv2:
 * vit_patch_logits gives it the class token). The head's GEMM runs on
 * `threads` threads (0: one per processor). */
base_status vit_token_logits(const vit_model *model, const float *tokens, int n, int threads,
                            float *out, base_error *err);

/* The classifier on every patch token of one image: tokens are all
 * num_tokens rows after the last encoder block (prefix tokens first), out
 * gets (num_tokens - num_prefix_tokens) x num_classes logits, patches in
 * raster order; registers, class and distillation tokens get none. Each
 * patch takes the place of the pooled features: final norm, fc_norm where
 * the model has one (timm fc_norm models: as if the pool were that one
 * token), head — vit_token_logits. A head on [class ‖ mean of patches]
 * (VIT_GLOBAL_POOL_TOKEN_AVG, DINOv2) reads [normed class token ‖ normed
 * patch]: the patch stands in for the mean, so, the head being linear, the
 * mean of the patch logits is the model's logits. BASE_E_ARG for a model
 * without head or bad sizes. threads as vit_token_logits. */
base_status vit_patch_logits(const vit_model *model, const float *tokens, int num_tokens,
                            int threads, float *out, base_error *err);

/* How vit_pool_tokens makes one image's features, following timm's
 * forward_head(pre_logits=True) on forward_features' output. */
typedef enum vit_pool {
    VIT_POOL_CLS,  /* the final-normed class token (timm global_pool='token');
                      BASE_E_ARG for a model without one */
    VIT_POOL_MEAN, /* the mean of the final-normed patch tokens, prefix tokens
                      (class, distillation, registers) left out, then fc_norm when
                      the model has one (timm global_pool='avg') */
    VIT_POOL_NONE, /* every final-normed token (HF ViTModel's last_hidden_state) */
    VIT_POOL_MODEL /* what the model's head reads (vit_config_pooled_size floats):
                      its global_pool, then fc_norm; DINOv2's [class ‖ mean];
                      distilled DeiT: the class token */
} vit_pool;

/* One image's features from its tokens after the last encoder block
 * (num_tokens x hidden floats, as VIT_CAPTURE_TOKENS gives for the last
 * layer): the model's final LayerNorm on the tokens (identity for a model
 * without one, timm fc_norm models), then pool: hidden floats into out
 * (CLS, MEAN), vit_config_pooled_size (MODEL), or num_tokens x hidden
 * (NONE). With l2, each output row is divided by max(its L2 norm, 1e-12),
 * as torch.nn.functional.normalize. scratch: hidden floats (MEAN, MODEL),
 * else unused (may be NULL). Does not allocate. BASE_E_ARG for bad sizes. */
base_status vit_pool_tokens(const vit_model *model, const float *tokens, int num_tokens,
                           vit_pool pool, int l2, float *out, float *scratch, base_error *err);

/* Stages of the forward pass, for profiling. */
typedef enum vit_stage {
    VIT_STAGE_PATCH_EMBED,
    VIT_STAGE_LAYER_NORM,
    VIT_STAGE_QKV,
    VIT_STAGE_ATTENTION,
    VIT_STAGE_PROJECTION,
    VIT_STAGE_MLP_FC1,
    VIT_STAGE_GELU,
    VIT_STAGE_MLP_FC2,
    VIT_STAGE_HEAD,
    VIT_STAGE_COUNT
} vit_stage;

/* The stage's name ("attention", ...). */
const char *vit_stage_name(vit_stage stage);

/* With seconds non-NULL, later forward passes add each stage's wall time to
 * seconds[stage] (VIT_STAGE_COUNT entries); NULL turns timing off. */
void vit_context_profile(vit_context *ctx, double *seconds);

/* Runs batch images (batch x 3 x S x S floats, preprocessed) through the
 * model and writes batch x vit_model_output_size floats (logits, or class
 * token features for a headless model) to out. */
base_status vit_forward(vit_context *ctx, const float *images, int batch, float *out,
                       base_error *err);

/* vit_forward for images whose size the caller states (batch x channels x
 * height x width floats): refuses (BASE_E_SHAPE, naming both sizes) images
 * of any other size than the context's 3 x S x S, which vit_forward would
 * read past or misread. Use it whenever the images come from a recipe. */
base_status vit_forward_checked(vit_context *ctx, const float *images, int batch, int channels,
                               int height, int width, float *out, base_error *err);

/* In-place numerically stable softmax over n values. */
void vit_softmax(float *values, int n);

/* Indices of the k largest values, largest first (ties: lower index first).
 * Returns the number written, min(k, n). */
int vit_top_k(const float *values, int n, int k, int *indices);

#endif
