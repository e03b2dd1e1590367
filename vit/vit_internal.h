/* vit_internal.h — the model's private layout, shared by model.c (loading)
 * and forward.c (running). Not part of the public API. */
#ifndef VIT_INTERNAL_H
#define VIT_INTERNAL_H

#include "vit.h"

#include <cJSON.h>

#include "kernels.h"

/* One encoder block. Q, K and V are stored fused as [3D, D] (rows q; k; v,
 * heads contiguous inside each), so one GEMM produces all three. */
typedef struct vit_block {
    const float *ln1_w, *ln1_b;
    const float *qkv_w, *qkv_b; /* qkv_b NULL: the checkpoint has no qkv bias */
    const float *proj_w, *proj_b;
    const float *ln2_w, *ln2_b;
    const float *fc1_w, *fc1_b;
    const float *fc2_w, *fc2_b;
    /* The linear layers a file stores as I8, packed for the int8 kernels
     * (their float weight pointer is then NULL); NULL: float. */
    kernels_qmatrix *qkv_q, *proj_q, *fc1_q, *fc2_q;
    /* The float32 ones packed for vitc's GEMM at load (vit_model_pack);
     * NULL where the layer is int8. */
    kernels_fmatrix *qkv_f, *proj_f, *fc1_f, *fc2_f;
    /* The linear layers a file stores as BF16, packed for the bf16 GEMM
     * (kernels_linear_bf16; their float weight pointer is then NULL). */
    kernels_bmatrix *qkv_h, *proj_h, *fc1_h, *fc2_h;
    const float *ls1, *ls2;             /* [D] LayerScale; NULL without */
    const float *q_norm_w, *q_norm_b;   /* [D/H] qk-norm; NULL without */
    const float *k_norm_w, *k_norm_b;
} vit_block;

struct vit_model {
    vit_config config;
    weights_file *file;
    weights_layout layout;

    const float *patch_w, *patch_b; /* [D, C*P*P], [D] */
    const float *cls_token, *dist_token; /* [D]; NULL when the model has none */
    const float *reg_tokens;             /* [R, D]; NULL without registers */
    const float *pos_embed;              /* [pos_embed_prefix + grid*grid, D] */
    const float *norm_pre_w, *norm_pre_b; /* NULL unless pre_norm */
    vit_block *blocks;
    const float *norm_w, *norm_b;        /* NULL when the final norm is identity */
    const float *fc_norm_w, *fc_norm_b;  /* NULL unless fc_norm */
    const float *head_w, *head_b;           /* [classes, D]; NULL without a head */
    const float *head_dist_w, *head_dist_b; /* distilled DeiT only */
    /* Packed at load (vit_model_pack): the patch embedding [D, C*P*P], and
     * the head (NULL without one): [classes, pooled] or, with a
     * distillation head, both heads as one [classes, 2D] = [W | W_dist] / 2
     * with head_bias = (b + b_dist) / 2, the mean of the two heads. */
    kernels_fmatrix *patch_f, *head_f;
    float *head_bias;

    /* Buffers for tensors that could not be used in place (converted from
     * F16/BF16, or Q/K/V concatenated). */
    float **owned;
    size_t num_owned, owned_capacity;

    char **labels;
    int num_labels;
    char labels_source[64];

    int library_antialias; /* how the checkpoint's library resamples position
                              embeddings (VIT_POS_RESAMPLE_AUTO) */
    kernels_isa isa; /* the kernels' path, every dtype (VITC_ISA or the CPU's best) */
    /* The file's packed parts are in the kernels' layouts (packed.c): its
     * float32 / int8 matrices are mapped, not packed. */
    int packed_f, packed_q, packed_b;
    int mapped, packed; /* matrices mapped from the file / packed at load */

    data_preprocess preprocess;
    /* The config and preprocessing texts the model was loaded with (NULL:
     * none), kept so a copy of the model can carry them (vit_model_quantize). */
    char *config_text, *preprocessor_text;
    char config_source[64];
    char notices[1024];
    char dtypes[64];
    size_t param_count;
    /* Per tensor of the file (weights_at order): used by the forward pass. */
    unsigned char *used;

    /* A created model (vit_model_create, vit/params.c): every parameter
     * float32 in this one owned buffer (param_count floats), laid out as
     * the table of num_tensors says, the pointers above pointing into it.
     * NULL for a loaded model. */
    float *params;
    vit_param *tensors;
    size_t num_tensors;
};

/* The kernels' form of the model's MLP activation (inference and training). */
static inline kernels_act vit_kernels_act(vit_act act) {
    return act == VIT_ACT_QUICK_GELU ? KERNELS_ACT_QUICK_GELU : KERNELS_ACT_GELU;
}

/* Packs the model's float32 linear layers for vitc's GEMM (the *_f
 * fields, forward.c) on `threads` threads (>= 1); BASE_E_NOMEM when out of
 * memory. Called once at load; vit_model_unpack frees them (NULL fields
 * allowed). */
base_status vit_model_pack(vit_model *m, int threads, base_error *err);

/* threads when > 0, else one per processor the process may run on
 * (omp_get_num_procs: the machine, not the process's OpenMP settings). */
int vit_threads_or_procs(int threads);
void vit_model_unpack(vit_model *m);

/* Packed copies (packed.c). vit_packed_settle, once m->used exists:
 * whether the file's parts can be used (packed_f, packed_q), every part
 * marked used; 1 with a notice line in note when a layout is stale. */
int vit_packed_settle(vit_model *m, char *note, size_t size);
/* Whether a tensor name is a packed part / a metadata key is the packing's. */
int vit_packed_is_part(const char *name);
int vit_packed_is_key(const char *key);
/* The packed matrix name ("patch", "head", "blocks.3.fc1") mapped from the
 * file into *out when the file's layout is the kernels' (else *out NULL,
 * as when a file loaded from memory holds its parts unaligned: the caller
 * packs); BASE_E_FORMAT when the file claims it but its parts do not fit. */
base_status vit_packed_fmatrix(vit_model *m, const char *name, int rows, int cols,
                              kernels_fmatrix **out, base_error *err);
base_status vit_packed_qmatrix(vit_model *m, const char *name, int rows, int cols, int group,
                              kernels_qmatrix **out, base_error *err);
base_status vit_packed_bmatrix(vit_model *m, const char *name, int rows, int cols,
                              kernels_bmatrix **out, base_error *err);
/* Writes m's file's tensors, with every packed matrix of m before them,
 * and the n_meta metadata pairs plus the layout names, to path. */
base_status vit_model_write_packed(const vit_model *m, const char *path, const char *const *keys,
                                  const char *const *values, size_t n_meta, base_error *err);

/* The most input-scale groups (kernels_qmatrix_groups) of any of the
 * model's int8 layers; 0 when every layer is float. */
int vit_model_int8_groups(const vit_model *m);

/* Whether any linear layer of m runs on the bf16 GEMM. */
int vit_model_has_bf16(const vit_model *m);

/* What two loads of one checkpoint settled differently (hyper-parameters,
 * preprocessing, labels): "name A vs B" items, comma-separated, into out
 * (cut to size). Returns how many differ (0: the same model). */
int vit_model_settings_diff(const vit_model *a, const vit_model *b, char *out, size_t size);

/* The configuration as Hugging Face config.json keys (hidden_size,
 * num_hidden_layers, ..., hidden_act), added to json: the one writer of a
 * vit_config, for the model file's __metadata__ config and the training
 * state. num_channels is given apart (a grey model is saved with RGB
 * weights). vit_config_from_hf_json reads them back the way config.json is
 * read: a present but invalid key is an error naming name, an absent one
 * leaves 0 (layer_norm_eps: transformers' 1e-12). */
void vit_config_to_hf_json(const vit_config *c, int num_channels, cJSON *json);
base_status vit_config_from_hf_json(const cJSON *json, const char *name, vit_config *c,
                                   base_error *err);

#endif
