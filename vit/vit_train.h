/* vit_train.h — training a ViT in C: a forward pass that keeps what the
 * backward pass needs, gradients of every layer, cross-entropy with label
 * smoothing, AdamW, a warm-up + cosine schedule and gradient clipping.
 *
 *   vit_model *model;  vit_train *t;  vit_adamw *opt;  base_error err;
 *   vit_model_create(&config, &model, &err);      // vit.h: one model type
 *   vit_model_init(model, seed);                  // and/or vit_model_assign(model, pretrained, ...)
 *   vit_train_create(model, batch, &t, &err);
 *   vit_adamw_create(model, &hyper, &opt, &err);
 *   for each batch:
 *       vit_train_step_grads(t, images, labels, n, smoothing, &loss, &correct, &err);
 *       vit_train_clip_grad_norm(t, 1.0f);
 *       vit_adamw_step(opt, t, vit_train_lr_at(step, &schedule));
 *   vit_model_save(model, "out.safetensors", labels, &pre, ..., &err);
 *
 * The model is a vit_model made by vit_model_create (vit.h): the type
 * vit_model_load gives, its parameters float32 in one buffer, in timm's
 * names. It is the timm ViT (class token, learned position
 * embeddings, pre-norm blocks, exact GELU, final LayerNorm, linear head on
 * the class token) with every switch of vit_config but the DeiT
 * distillation token: LayerScale (ls1/ls2.gamma trained), register tokens
 * (trained like the class token), no class token with average pooling over
 * the patch tokens, fc_norm, pre-norm (norm_pre; no patch bias, as timm),
 * QuickGELU, QKV without bias, qk-norm, eps, no_embed_class, and Hugging
 * Face DINOv2's classifier on [class ‖ mean of patches]. The forward pass
 * is inference's (vit/vit_block.h) with its activations kept. The trainer
 * (vit_train) borrows the model and holds only the training state: the
 * gradients, laid out as the parameters, and every activation for batches
 * up to max_batch, so a step never allocates; AdamW's moments sit beside
 * it (vit_adamw). GEMMs go to OpenBLAS (threaded), row work to OpenMP with
 * a fixed split, and every reduction runs in a fixed order, so results are
 * the same for a seed and a thread count.
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

/* ------------------------------------------------------------- the trainer */

typedef struct vit_train vit_train;

/* Buffers for training model (a created one: vit_model_create; borrowed:
 * it must outlive the trainer) on batches of up to max_batch images:
 * gradients and activations. BASE_E_ARG for a loaded model. */
base_status vit_train_create(vit_model *model, int max_batch, vit_train **out, base_error *err);
void vit_train_free(vit_train *t);

/* The model trained, its config, and the batch size the buffers hold. */
vit_model *vit_train_model(const vit_train *t);
const vit_config *vit_train_config(const vit_train *t);
int vit_train_max_batch(const vit_train *t);

/* The gradients: vit_model_param_count floats, laid out as the model's
 * parameters (vit_param.offset). */
float *vit_train_grads(vit_train *t);

/* Forward and backward on a batch (n <= max_batch images, n x C x S x S
 * floats, preprocessed; labels in 0..num_classes-1): fills the gradients of
 * the mean cross-entropy with label smoothing (as F.cross_entropy's
 * label_smoothing), and returns the loss and the number of top-1 hits. */
base_status vit_train_step_grads(vit_train *t, const float *images, const int *labels, int n,
                                float label_smoothing, float *loss, int *correct, base_error *err);

/* The forward pass alone: n x num_classes logits into logits and, when
 * features is non-NULL, the n x vit_config_pooled_size features the head
 * reads (pooled, then fc_norm: the normed class token, the mean of the
 * patch tokens, or DINOv2's [class ‖ mean]). */
base_status vit_train_forward(vit_train *t, const float *images, int n, float *logits,
                             float *features, base_error *err);

/* The head alone on n precomputed features (as vit_train_forward gives
 * them): n x num_classes logits. */
base_status vit_train_head_forward(vit_train *t, const float *features, int n,
                                  float *logits, base_error *err);

/* The head alone on precomputed features (n x vit_config_pooled_size,
 * from vit_train_forward): gradients of the head only (the rest are left as
 * they are), loss and hits. For linear probes: features computed once. */
base_status vit_train_head_grads(vit_train *t, const float *features, const int *labels,
                                int n, float label_smoothing, float *loss, int *correct,
                                base_error *err);

/* The same for n images that are part of a batch of total (n <= total):
 * the gradients and *loss are the batch's mean restricted to these images
 * (their sums divided by total), so the parts of a batch add up to the
 * whole batch's (to rounding: data-parallel training over processes).
 * total == n gives exactly vit_train_step_grads / vit_train_head_grads. */
base_status vit_train_step_grads_part(vit_train *t, const float *images, const int *labels,
                                     int n, int total, float label_smoothing, float *loss,
                                     int *correct, base_error *err);
base_status vit_train_head_grads_part(vit_train *t, const float *features, const int *labels,
                                     int n, int total, float label_smoothing, float *loss,
                                     int *correct, base_error *err);

/* Scales the gradients of trainable tensors so their global L2 norm is at
 * most max_norm (as torch.nn.utils.clip_grad_norm_); returns the norm
 * before clipping. max_norm <= 0: only measures. */
double vit_train_clip_grad_norm(vit_train *t, float max_norm);

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

/* Zero moments for model's parameters (vit_model_param_count of each). */
base_status vit_adamw_create(const vit_model *model, const vit_adamw_params *hyper,
                            vit_adamw **out, base_error *err);
void vit_adamw_free(vit_adamw *opt);

/* One AdamW update of the trainable tensors of train's model, from its
 * gradients, at learning rate lr, as
 * torch.optim.AdamW: decoupled decay p *= 1 - lr * wd (decay tensors only),
 * then p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
void vit_adamw_step(vit_adamw *opt, vit_train *train, float lr);

/* ------------------------------------------------------------- schedule */

typedef struct vit_train_schedule {
    float base_lr, min_lr;
    long warmup_steps, total_steps;
} vit_train_schedule;

/* Learning rate for step (0-based): linear warm-up from base_lr / warmup
 * to base_lr over warmup_steps, then cosine decay to min_lr at total_steps. */
float vit_train_lr_at(long step, const vit_train_schedule *schedule);

#endif
