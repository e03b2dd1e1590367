/* vit_trainer.h — the training run around vit_train.h: data sources
 * (Fashion-MNIST or an ImageFolder, DIR/CLASS/ images), augmentation, the epoch
 * loop one step at a time, a linear probe on frozen features, validation,
 * and the checkpoint (a loadable model file plus FILE.state with the AdamW
 * moments and where the run stands, each written atomically).
 *
 *   vit_trainer_source train;  vit_trainer t = {0};  base_error err;
 *   vit_trainer_source_open("DIR", 1, NULL, 0, &train, &err);
 *   ... t.model, t.training, t.opt (vit_model_create, vit_train_create,
 *       vit_adamw_create), t.out_path,
 *       t.state_path, t.labels, t.epochs, t.seed, t.h, t.in ...
 *   vit_trainer_prepare(&t, &train, NULL, &err);
 *   for (long e = 0; e < t.epochs; e++) {
 *       vit_trainer_epoch_begin(&t, e);
 *       for (long s = 0; s < t.steps_per_epoch; s++) vit_trainer_step(&t, e, s, &res, &err);
 *       t.epoch_done = e + 1;
 *       vit_trainer_save(&t, -1.0, seconds, &err);
 *   }
 *   vit_trainer_free(&t);  vit_trainer_source_free(&train);
 *
 * Nothing here prints: errors come back as base_error, and images that cannot
 * be read during a step are reported through the input's warn callback (it
 * may be called from several OpenMP threads at once). Randomness is a pure
 * function of (seed, epoch, image index), so a run and its resume see the
 * same order and augmentation whatever the thread count. Limits: the whole
 * Fashion-MNIST split sits in memory; ImageFolder images are decoded every
 * epoch; a linear probe keeps hidden_size floats per image.
 */
#ifndef VIT_TRAINER_H
#define VIT_TRAINER_H

#include "data.h"
#include "vit_train.h"
#include "weights.h"

/* Fashion-MNIST's pixel mean and std (training split, over [0, 1]). */
#define VIT_TRAINER_FMNIST_MEAN 0.2860f
#define VIT_TRAINER_FMNIST_STD 0.3530f

/* ------------------------------------------------------------- sources */

typedef struct vit_trainer_source {
    int mnist;              /* Fashion-MNIST; else an ImageFolder */
    data_mnist set;         /* mnist */
    data_file_list files;   /* folder: the images */
    int *labels;            /* folder: the class of each file */
    size_t count;
    char **class_names;     /* folder: num_classes names (owned) */
    int num_classes;
    data_file_list unreadable; /* folder: directories that could not be listed */
} vit_trainer_source;

/* Opens spec: "fashion-mnist" (train: its training split, else the test
 * split) unless a directory of that name exists, or an ImageFolder. With
 * names (validation), every class folder must be one of them and takes its
 * index. Directories that cannot be listed are kept in s->unreadable (also
 * on failure) rather than failing the run. Without names (training data) a
 * class folder without images is an error naming it; a validation folder
 * without images adds nothing. */
base_status vit_trainer_source_open(const char *spec, int train, char *const *names, int num_names,
                                   vit_trainer_source *s, base_error *err);
void vit_trainer_source_free(vit_trainer_source *s);
int vit_trainer_source_label(const vit_trainer_source *s, size_t i);

/* ------------------------------------------------------------- input */

/* What turns a source image into model input. */
typedef struct vit_trainer_input {
    int size, channels;
    int augment, flip;
    int shift;            /* Fashion-MNIST: largest random translation, pixels */
    double min_scale;     /* random resized crop: smallest area fraction */
    data_preprocess eval; /* for folders (and resized Fashion-MNIST) */
    uint64_t seed;
    /* Told about each image that cannot be read (may be NULL). */
    void (*warn)(void *ctx, const char *message);
    void *warn_ctx;
} vit_trainer_input;

/* The preprocessing a model trained on a source states: the --init model's
 * (pretrained non-NULL), Fashion-MNIST's own statistics, or the default. */
void vit_trainer_default_preprocess(const vit_model *pretrained, int mnist, int image_size,
                                    data_preprocess *out);

/* Fills a batch with items order[first .. first + n) (first + b without
 * order); unreadable images are left out. Returns the number placed. */
int vit_trainer_load_batch(const vit_trainer_source *s, const size_t *order, size_t first, int n,
                           const vit_trainer_input *in, long epoch, float *images, int *labels,
                           int *ok);

/* The epoch's order of n items: a Fisher-Yates shuffle seeded by (seed, epoch). */
void vit_trainer_shuffle(size_t *order, size_t n, uint64_t seed, long epoch);

/* ------------------------------------------------------------- the run */

/* Data-parallel training over several processes (vit_trainer.parallel;
 * NULL: one process). size processes run the same trainer on the same data
 * with the same seed, each with its own rank: every step's global batch (the
 * same items and augmentation as in one process) is cut into size contiguous
 * slices, process rank loads slice rank and computes its part of the
 * gradients (vit_train_step_grads_part), and sum adds the parts so that every
 * process holds the same gradients, to the bit, and applies the same update.
 * The library does no communication itself: sum is the caller's (the
 * program's MPI, or anything else). */
typedef struct vit_trainer_parallel {
    int rank, size;
    /* Replaces floats[0 .. nf) and doubles[0 .. nd) on every process by
     * their sums over all processes, added in rank order (((x0 + x1) + x2)
     * ...), so that every process gets the same bits. Nonzero: it failed. */
    int (*sum)(void *ctx, float *floats, size_t nf, double *doubles, size_t nd);
    void *ctx;
} vit_trainer_parallel;

/* The training options a resumed run continues with unless told otherwise. */
typedef struct vit_trainer_hyper {
    long batch, warmup, shift, flip, freeze;
    double lr, min_lr, wd, smoothing, clip, min_scale;
    size_t images;
    char init[4096]; /* --init MODEL, "" when trained from scratch */
} vit_trainer_hyper;

/* What one epoch scored: the curves vit train --log and --plot show, kept
 * in the state so a resumed run has the whole history. */
typedef struct vit_trainer_epoch {
    long epoch;                      /* 1-based */
    double train_loss, train_top1;   /* over the epoch's batches (smoothed loss) */
    double eval_loss, eval_top1, eval_top5; /* NaN without validation images */
    double lr;                       /* the learning rate of its last step */
} vit_trainer_epoch;

typedef struct vit_trainer {
    /* Set by the caller. */
    vit_model *model;     /* a created one (vit_model_create) */
    vit_train *training;  /* its gradients and activations (vit_train_create) */
    vit_adamw *opt;
    const char *out_path;
    char state_path[4200];
    char **labels; /* num_labels class names for the model file */
    int num_labels;
    data_preprocess pre; /* written with the model */
    long epochs, epoch_done, step;
    uint64_t seed;
    vit_trainer_hyper h; /* saved in the state */
    vit_trainer_input in;
    /* Data parallelism (NULL: one process). The model needs batches of
     * only ceil(h.batch / size) images. Validation and a linear probe's
     * features are computed by every process in full. */
    const vit_trainer_parallel *parallel;
    /* Every epoch so far, earliest first (vit_trainer_record_epoch). */
    vit_trainer_epoch *history;
    size_t history_count;
    /* Set by vit_trainer_prepare. */
    const vit_trainer_source *train, *val;
    long steps_per_epoch;
    vit_train_schedule sched;
    float *images, *logits, *features, *val_features;
    int *batch_labels, *ok, *feature_labels;
    size_t *order;
} vit_trainer;

/* Buffers for batches of h.batch images and, with h.freeze (a linear
 * probe), every image's features computed once without augmentation. */
base_status vit_trainer_prepare(vit_trainer *t, const vit_trainer_source *train,
                               const vit_trainer_source *val, base_error *err);
/* Appends an epoch to t->history, replacing it and any later one already
 * there (an epoch run again after a crash). */
base_status vit_trainer_record_epoch(vit_trainer *t, const vit_trainer_epoch *e, base_error *err);

/* Frees what vit_trainer_prepare allocated (not the model, optimiser,
 * or labels, which the caller owns). */
void vit_trainer_free(vit_trainer *t);

/* Shuffles the training order for epoch. */
void vit_trainer_epoch_begin(vit_trainer *t, long epoch);

typedef struct vit_trainer_step_result {
    float loss;  /* mean over the placed images */
    int correct, placed;
    float lr;    /* the rate this step used */
} vit_trainer_step_result;

/* Step s of epoch (after vit_trainer_epoch_begin): loads the batch, computes
 * gradients, clips them and updates the parameters. placed 0 (no readable
 * image): nothing was done. A non-finite loss is an error. With
 * t->parallel, every process calls it for the same step: it loads its
 * slice, and res holds the whole batch's loss, hits and images. */
base_status vit_trainer_step(vit_trainer *t, long epoch, long s, vit_trainer_step_result *res,
                            base_error *err);

/* Scores on labelled images, as timm's validate reports them. */
typedef struct vit_trainer_scores {
    double loss;       /* mean cross-entropy (no label smoothing) */
    double top1, top5; /* fractions of the images */
    size_t images;     /* 0: no images were scored (the rest is 0) */
} vit_trainer_scores;

/* Scores on the validation source (no augmentation); -1 (and *scores all
 * 0) when there is none, 0 when scored. */
int vit_trainer_validate(vit_trainer *t, vit_trainer_scores *scores);

/* Scores (when non-NULL) of the model on all of s; top-1 accuracy as the
 * value; features, when non-NULL, receives every image's normed class
 * token. -1 on failure. */
double vit_trainer_evaluate(vit_train *m, const vit_trainer_source *s,
                            const vit_trainer_input *in, float *images, int *labels, int *ok,
                            float *logits, float *features, vit_trainer_scores *scores);

/* The model file (loadable) and the state file (parameters, AdamW moments,
 * where the run stands), each written atomically; the state names the epoch
 * the model file holds, so a crash between the two is harmless. */
base_status vit_trainer_save(const vit_trainer *t, double val_acc, base_error *err);

/* What a state file says: the configuration, epochs done and planned, step,
 * seed and options (*have_hyper 0 for a state written before they were
 * saved). *file stays open for vit_trainer_state_load. */
typedef struct vit_trainer_state_info {
    vit_config config;
    long epoch, step, epochs;
    uint64_t seed;
    vit_trainer_hyper h;
    int have_hyper;
    /* A linear probe's state leaves the frozen backbone out (it is --init's):
     * the checksum of those weights, hex, or "" when nothing was frozen. */
    char frozen_checksum[17];
    /* The epochs' scores (malloc'd; vit_trainer_state_load hands them to
     * the trainer, else free them). */
    vit_trainer_epoch *history;
    size_t history_count;
} vit_trainer_state_info;

base_status vit_trainer_state_read(const char *path, vit_trainer_state_info *info,
                                  weights_file **file, base_error *err);

/* Copies the parameters and AdamW moments of an open state file into t.
 * Tensors t->model has frozen may be absent (a linear probe's state): they
 * keep the values they have, which must be the ones info's checksum names
 * (copy the --init model in first). */
base_status vit_trainer_state_load(weights_file *f, vit_trainer_state_info *info,
                                  vit_trainer *t, base_error *err);

#endif
