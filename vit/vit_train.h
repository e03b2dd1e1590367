/* vit_train.h — training a ViT in C: a forward pass that keeps what the
 * backward pass needs, gradients of every layer, cross-entropy with label
 * smoothing, AdamW, a warm-up + cosine schedule and gradient clipping.
 *
 *   vit_train_model *m;  vit_adamw *opt;  base_error err;
 *   vit_train_create(&config, batch, &m, &err);
 *   vit_train_init(m, seed);                      // or vit_train_copy_from(m, pretrained, ...)
 *   vit_adamw_create(m, &hyper, &opt, &err);
 *   for each batch:
 *       vit_train_step_grads(m, images, labels, n, smoothing, &loss, &correct, &err);
 *       vit_train_clip_grad_norm(m, 1.0f);
 *       vit_adamw_step(opt, m, vit_train_lr_at(step, &schedule));
 *   vit_train_save(m, "out.safetensors", labels, &pre, &err);
 *
 * The model is the timm ViT (class token, learned position embeddings,
 * pre-norm blocks, exact GELU, final LayerNorm, linear head on the class
 * token) with every switch of vit_config but the DeiT distillation token:
 * LayerScale (ls1/ls2.gamma trained), register tokens (trained like the
 * class token), no class token with average pooling over the patch tokens,
 * fc_norm, pre-norm (norm_pre; no patch bias, as timm), QuickGELU, QKV
 * without bias, qk-norm, eps, no_embed_class, and Hugging Face DINOv2's
 * classifier on [class ‖ mean of patches]. Parameters carry timm's names
 * (the DINOv2 head: the Hugging Face DINOv2 layout, the only one that
 * spells it), so a saved file loads with vit_model_load with every switch. The training model owns its parameters, gradients and
 * every activation for batches up to max_batch: a step never allocates.
 * GEMMs go to OpenBLAS (threaded), row work to OpenMP with a fixed split,
 * and every reduction runs in a fixed order, so results are the same for a
 * seed and a thread count.
 */
#ifndef VIT_TRAIN_H
#define VIT_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "vit.h"

/* ------------------------------------------------------------- randomness */

/* A seeded generator (xoshiro256**, seeded through splitmix64); the caller
 * owns its state, so there is no hidden global. */
typedef struct vit_train_rng {
    uint64_t s[4];
} vit_train_rng;

void vit_train_rng_seed(vit_train_rng *rng, uint64_t seed);
uint64_t vit_train_rng_next(vit_train_rng *rng);
/* Uniform in [0, 1). */
double vit_train_rng_uniform(vit_train_rng *rng);
/* Uniform integer in [0, n). */
uint32_t vit_train_rng_below(vit_train_rng *rng, uint32_t n);
/* Standard normal (Box-Muller). */
double vit_train_rng_normal(vit_train_rng *rng);
/* The same signature as data's uniform callbacks (state: a vit_train_rng). */
double vit_train_rng_uniform_cb(void *rng);

/* ------------------------------------------------------------- the model */

/* One parameter tensor: its timm name and shape, where its values (and
 * gradient) sit in the flat buffers, and how the optimiser treats it. */
typedef struct vit_train_tensor {
    char name[48];
    int ndim;
    int64_t shape[4];
    size_t offset, numel;
    int decay;     /* AdamW weight decay applies: weight matrices only (like timm,
                      no decay on norms, biases, position embeddings, class token) */
    int trainable; /* 0: frozen (vit_adamw_step leaves it alone) */
} vit_train_tensor;

typedef struct vit_train_model vit_train_model;

/* Allocates a model of config (num_classes >= 1; num_prefix_tokens the
 * class token and registers; no distillation token; a config stating only
 * sizes is the original ViT's) and buffers for batches of up to max_batch
 * images. What it cannot train is BASE_E_ARG with one line saying why. Values are zero
 * until vit_train_init or vit_train_copy_from. */
base_status vit_train_create(const vit_config *config, int max_batch, vit_train_model **out,
                            base_error *err);
void vit_train_free(vit_train_model *m);

const vit_config *vit_train_config(const vit_train_model *m);
int vit_train_max_batch(const vit_train_model *m);

/* The flat parameter and gradient buffers (vit_train_num_params floats
 * each) and the tensors laid out in them. */
size_t vit_train_num_params(const vit_train_model *m);
float *vit_train_params(vit_train_model *m);
float *vit_train_grads(vit_train_model *m);
size_t vit_train_num_tensors(const vit_train_model *m);
vit_train_tensor *vit_train_tensor_at(vit_train_model *m, size_t i);
/* The tensor called name (timm spelling), or NULL. */
vit_train_tensor *vit_train_find(vit_train_model *m, const char *name);

/* timm's initialisation: weights and tokens truncated normal (std 0.02),
 * biases zero, LayerNorm weight one. */
void vit_train_init(vit_train_model *m, uint64_t seed);

/* Copies every parameter of a pretrained model whose shapes and switches
 * match (a 1-channel training model takes the sum of a 3-channel patch
 * kernel, the exact equivalent for grey inputs; a patch grid of another
 * size is resampled as the checkpoint's library does; a pre-norm
 * checkpoint's patch bias is folded into the patch positions). With
 * copy_head 0 the head keeps its current values (a new head for new
 * classes, which may pool otherwise). BASE_E_SHAPE when the backbones
 * differ, naming the switches that do. */
base_status vit_train_copy_from(vit_train_model *m, const vit_model *src, int copy_head,
                               base_error *err);

/* Marks every tensor but the head frozen (1) or all trainable (0). */
void vit_train_freeze_backbone(vit_train_model *m, int freeze);

/* Forward and backward on a batch (n <= max_batch images, n x C x S x S
 * floats, preprocessed; labels in 0..num_classes-1): fills the gradients of
 * the mean cross-entropy with label smoothing (as F.cross_entropy's
 * label_smoothing), and returns the loss and the number of top-1 hits. */
base_status vit_train_step_grads(vit_train_model *m, const float *images, const int *labels, int n,
                                float label_smoothing, float *loss, int *correct, base_error *err);

/* The forward pass alone: n x num_classes logits into logits and, when
 * features is non-NULL, the n x vit_config_pooled_size features the head
 * reads (pooled, then fc_norm: the normed class token, the mean of the
 * patch tokens, or DINOv2's [class ‖ mean]). */
base_status vit_train_forward(vit_train_model *m, const float *images, int n, float *logits,
                             float *features, base_error *err);

/* The head alone on n precomputed features (as vit_train_forward gives
 * them): n x num_classes logits. */
base_status vit_train_head_forward(vit_train_model *m, const float *features, int n,
                                  float *logits, base_error *err);

/* The head alone on precomputed features (n x vit_config_pooled_size,
 * from vit_train_forward): gradients of the head only (the rest are left as
 * they are), loss and hits. For linear probes: features computed once. */
base_status vit_train_head_grads(vit_train_model *m, const float *features, const int *labels,
                                int n, float label_smoothing, float *loss, int *correct,
                                base_error *err);

/* The same for n images that are part of a batch of total (n <= total):
 * the gradients and *loss are the batch's mean restricted to these images
 * (their sums divided by total), so the parts of a batch add up to the
 * whole batch's (to rounding: data-parallel training over processes).
 * total == n gives exactly vit_train_step_grads / vit_train_head_grads. */
base_status vit_train_step_grads_part(vit_train_model *m, const float *images, const int *labels,
                                     int n, int total, float label_smoothing, float *loss,
                                     int *correct, base_error *err);
base_status vit_train_head_grads_part(vit_train_model *m, const float *features, const int *labels,
                                     int n, int total, float label_smoothing, float *loss,
                                     int *correct, base_error *err);

/* Scales the gradients of trainable tensors so their global L2 norm is at
 * most max_norm (as torch.nn.utils.clip_grad_norm_); returns the norm
 * before clipping. max_norm <= 0: only measures. */
double vit_train_clip_grad_norm(vit_train_model *m, float max_norm);

/* Writes the model as a safetensors file (atomically) that vit_model_load
 * reads: the timm tensors, and in __metadata__ the config (Hugging Face
 * form, id2label from labels when non-NULL) and preprocessing (pre,
 * non-NULL: as a preprocessor_config). A 1-channel model is written as a
 * 3-channel one whose patch kernel is folded with the ITU-R 601 luma
 * weights, so RGB input computes the model on PIL's convert('L') grey
 * (exactly for grey images) and every colour input works. extra tensors
 * and metadata (may be NULL / 0) are appended: training state for resume. */
base_status vit_train_save(const vit_train_model *m, const char *path, const char *const *labels,
                          const data_preprocess *pre, const weights_tensor *extra,
                          size_t num_extra, const char *const *meta_keys,
                          const char *const *meta_values, size_t num_meta, base_error *err);

/* ------------------------------------------------------------- optimiser */

typedef struct vit_adamw_params {
    float beta1, beta2, eps, weight_decay; /* 0.9, 0.999, 1e-8, 0.05 are usual */
} vit_adamw_params;

/* AdamW state: first and second moments for every parameter, and the step. */
typedef struct vit_adamw {
    vit_adamw_params hyper;
    long step;
    size_t n;
    float *m, *v;
} vit_adamw;

base_status vit_adamw_create(const vit_train_model *model, const vit_adamw_params *hyper,
                            vit_adamw **out, base_error *err);
void vit_adamw_free(vit_adamw *opt);

/* One AdamW update of the trainable tensors at learning rate lr, as
 * torch.optim.AdamW: decoupled decay p *= 1 - lr * wd (decay tensors only),
 * then p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
void vit_adamw_step(vit_adamw *opt, vit_train_model *model, float lr);

/* ------------------------------------------------------------- schedule */

typedef struct vit_train_schedule {
    float base_lr, min_lr;
    long warmup_steps, total_steps;
} vit_train_schedule;

/* Learning rate for step (0-based): linear warm-up from base_lr / warmup
 * to base_lr over warmup_steps, then cosine decay to min_lr at total_steps. */
float vit_train_lr_at(long step, const vit_train_schedule *schedule);

#endif
