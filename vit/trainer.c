/* The training run: data sources, augmentation, the step and epoch loop,
 * linear probes, validation and the model + state checkpoint. Moved from
 * cli/train.c so it can be driven (and tested) without the program; the
 * arithmetic and the order of every random draw are unchanged. */
#include "vit_trainer.h"
#include "vit_internal.h"
#include "base_json.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------- sources */

void vit_trainer_source_free(vit_trainer_source *s) {
    data_mnist_free(&s->set);
    data_file_list_free(&s->files);
    data_file_list_free(&s->unreadable);
    free(s->labels);
    if (s->class_names)
        for (int i = 0; i < s->num_classes; i++) free(s->class_names[i]);
    free(s->class_names);
    memset(s, 0, sizeof *s);
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Adds the images of one class folder (label) to s. */
static base_status add_class(vit_trainer_source *s, const char *spec, const char *name, int label,
                            base_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", spec, name);
    const size_t before = s->files.count, before_u = s->unreadable.count;
    /* One unreadable folder should not cost the whole run: the caller says
     * so and ends with a partial-failure status. */
    if (data_walk_collect(path, NULL, &s->files, &s->unreadable, err) != BASE_OK) {
        /* The run fails on the error alone, as it did before. */
        while (s->unreadable.count > before_u) free(s->unreadable.paths[--s->unreadable.count]);
        return err->code;
    }
    int *grown = realloc(s->labels, sizeof *grown * (s->files.count ? s->files.count : 1));
    if (!grown) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    s->labels = grown;
    for (size_t i = before; i < s->files.count; i++) s->labels[i] = label;
    return BASE_OK;
}

base_status vit_trainer_source_open(const char *spec, int train, char *const *names, int num_names,
                                   vit_trainer_source *s, base_error *err) {
    memset(s, 0, sizeof *s);
    if (strcmp(spec, "fashion-mnist") == 0 && !is_dir(spec)) {
        if (data_mnist_load(NULL, train, &s->set, err) != BASE_OK) return err->code;
        s->mnist = 1;
        s->count = (size_t)s->set.count;
        s->num_classes = 10;
        return BASE_OK;
    }
    data_file_list classes = {0};
    if (data_list_subdirs(spec, &classes, err) != BASE_OK) return err->code;
    base_status st = BASE_OK;
    int empty = -1, empty_unlisted = 0; /* the first class folder without images */
    if (classes.count == 0) {
        st = base_error_set(err, BASE_E_IO, "no images found in %s (no class folders: expected "
                                          "DIR/<class>/*)", spec);
        goto done;
    }
    s->num_classes = (int)classes.count;
    if (!(s->class_names = calloc(classes.count, sizeof *s->class_names))) goto oom;
    for (size_t c = 0; c < classes.count; c++) {
        int label = (int)c;
        if (names) {
            label = -1;
            for (int k = 0; k < num_names; k++)
                if (strcmp(names[k], classes.paths[c]) == 0) label = k;
            if (label < 0) {
                st = base_error_set(err, BASE_E_ARG, "%s/%s: no such class in the training data",
                                   spec, classes.paths[c]);
                goto done;
            }
        }
        if (!(s->class_names[c] = strdup(classes.paths[c]))) goto oom;
        const size_t before = s->files.count, before_u = s->unreadable.count;
        if ((st = add_class(s, spec, classes.paths[c], label, err)) != BASE_OK) goto done;
        if (empty < 0 && s->files.count == before) {
            empty = (int)c;
            empty_unlisted = s->unreadable.count > before_u;
        }
    }
    s->count = s->files.count;
    if (s->count == 0)
        st = base_error_set(err, BASE_E_IO, "no images found in %s (expected DIR/<class>/*)", spec);
    else if (!names && empty >= 0) /* a training folder is a class the head has a row for */
        st = base_error_set(err, BASE_E_IO, "%s/%s: class folder %s (every folder under the training "
                           "data is a class: remove it or add images)", spec, classes.paths[empty],
                           empty_unlisted ? "could not be listed, so it has no images"
                                          : "holds no images");
    goto done;
oom:
    st = base_error_set(err, BASE_E_NOMEM, "out of memory");
done:
    data_file_list_free(&classes);
    return st;
}

int vit_trainer_source_label(const vit_trainer_source *s, size_t i) {
    return s->mnist ? s->set.labels[i] : s->labels[i];
}

/* ------------------------------------------------------------- input */

void vit_trainer_default_preprocess(const vit_model *pretrained, int mnist, int image_size,
                                    data_preprocess *out) {
    if (pretrained) {
        *out = *vit_model_preprocess(pretrained);
    } else if (mnist) {
        data_preprocess_default(out, image_size);
        out->resize_mode = DATA_RESIZE_EXACT;
        out->resize_width = out->resize_height = image_size;
        out->do_center_crop = 0;
        out->crop_width = out->crop_height = image_size;
        for (int c = 0; c < 3; c++)
            out->mean[c] = VIT_TRAINER_FMNIST_MEAN, out->std[c] = VIT_TRAINER_FMNIST_STD;
    } else {
        data_preprocess_default(out, image_size);
    }
}

/* Per-image generator: the same draws for (seed, epoch, index) whichever
 * thread runs it, so a run and its resume see the same augmentation. */
static void image_rng(vit_train_rng *rng, uint64_t seed, long epoch, size_t index) {
    vit_train_rng_seed(rng, seed ^ ((uint64_t)(epoch + 1) * 0x9E3779B97F4A7C15ull) ^
                                ((uint64_t)index * 0xD1B54A32D192ED03ull));
}

/* Normalised planar floats of an 8-bit RGB image into out (channels 1:
 * the first channel, the images being grey). */
static void normalise_rgb(const data_image *img, const data_preprocess *p, int channels,
                          float *out) {
    const size_t n = (size_t)img->width * img->height;
    for (int c = 0; c < channels; c++)
        for (size_t i = 0; i < n; i++)
            out[c * n + i] = (img->pixels[i * 3 + c] * p->rescale_factor - p->mean[c]) / p->std[c];
}

/* Tells the caller about an image that cannot be read: "PATH: why" when
 * the message does not name the file itself. */
static void warn(const vit_trainer_input *in, const char *path, const char *why) {
    if (!in->warn) return;
    char msg[4600];
    if (path) snprintf(msg, sizeof msg, "%s: %s", path, why);
    else snprintf(msg, sizeof msg, "%s", why);
    in->warn(in->warn_ctx, msg);
}

/* Fashion-MNIST item i: flipped and shifted at random when augmenting. */
static int load_mnist_item(const vit_trainer_source *s, size_t i, const vit_trainer_input *in,
                           vit_train_rng *rng, float *out) {
    const int S = in->size;
    const int H = s->set.height, W = s->set.width;
    const uint8_t *px = s->set.pixels + i * (size_t)H * W;
    const int flip = in->augment && in->flip && vit_train_rng_uniform(rng) < 0.5;
    int dx = 0, dy = 0;
    if (in->augment && in->shift > 0) {
        const int span = 2 * in->shift + 1;
        dx = (int)(vit_train_rng_uniform(rng) * span) - in->shift;
        dy = (int)(vit_train_rng_uniform(rng) * span) - in->shift;
    }
    if (S == W && H == W && in->channels == 1) {
        /* Pixel (x, y) shows source (x - dx, y - dy); outside it the
         * black background (0) of every Fashion-MNIST image. */
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const int sy = y - dy, sx = flip ? W - 1 - (x - dx) : x - dx;
                const int inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
                out[y * W + x] = ((inside ? px[sy * W + sx] : 0) / 255.0f - VIT_TRAINER_FMNIST_MEAN) /
                                 VIT_TRAINER_FMNIST_STD;
            }
        return 0;
    }
    /* Another size (a fine-tuned model): as an RGB image through the
     * model's own preprocessing, like any PNG. */
    base_error err;
    data_image rgb = {W, H, malloc((size_t)W * H * 3)};
    if (!rgb.pixels) return -1;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            memset(rgb.pixels + ((size_t)y * W + x) * 3, px[y * W + (flip ? W - 1 - x : x)], 3);
    float *tmp = malloc(sizeof(float) * 3 * S * S);
    int rc = -1;
    if (tmp && data_preprocess_apply(&in->eval, &rgb, tmp, &err) == BASE_OK) {
        memcpy(out, tmp, sizeof(float) * in->channels * S * S);
        rc = 0;
    }
    free(tmp);
    data_image_free(&rgb);
    return rc;
}

/* One model input for item i of s into out. Returns -1 (warned) when an
 * image cannot be read. */
static int load_item(const vit_trainer_source *s, size_t i, const vit_trainer_input *in, long epoch,
                     float *out) {
    vit_train_rng rng;
    image_rng(&rng, in->seed, epoch, i);
    if (s->mnist) return load_mnist_item(s, i, in, &rng, out);
    base_error err;
    data_image img = {0}, crop = {0};
    if (data_image_load(s->files.paths[i], &img, &err) != BASE_OK) {
        warn(in, NULL, err.message);
        return -1;
    }
    int rc = 0;
    if (in->augment) {
        if (data_random_resized_crop(&img, in->size, in->min_scale, in->flip,
                                     vit_train_rng_uniform_cb, &rng, &crop, &err) != BASE_OK) {
            warn(in, s->files.paths[i], err.message);
            rc = -1;
        } else {
            normalise_rgb(&crop, &in->eval, in->channels, out);
        }
    } else if (data_preprocess_apply(&in->eval, &img, out, &err) != BASE_OK) {
        warn(in, NULL, err.message);
        rc = -1;
    }
    data_image_free(&img);
    data_image_free(&crop);
    return rc;
}

int vit_trainer_load_batch(const vit_trainer_source *s, const size_t *order, size_t first, int n,
                           const vit_trainer_input *in, long epoch, float *images, int *labels,
                           int *ok) {
    const size_t per = (size_t)in->channels * in->size * in->size;
#pragma omp parallel for schedule(dynamic) if (!s->mnist)
    for (int b = 0; b < n; b++) {
        const size_t item = order ? order[first + b] : first + b;
        ok[b] = load_item(s, item, in, epoch, images + (size_t)b * per) == 0;
    }
    int placed = 0;
    for (int b = 0; b < n; b++) {
        if (!ok[b]) continue;
        const size_t item = order ? order[first + b] : first + b;
        if (placed != b) memmove(images + placed * per, images + b * per, per * sizeof(float));
        labels[placed++] = vit_trainer_source_label(s, item);
    }
    return placed;
}

void vit_trainer_shuffle(size_t *order, size_t n, uint64_t seed, long epoch) {
    vit_train_rng rng;
    vit_train_rng_seed(&rng, seed * 0x9E3779B97F4A7C15ull + (uint64_t)epoch);
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        const size_t j = vit_train_rng_below(&rng, (uint32_t)(i + 1));
        const size_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

/* ------------------------------------------------------------- the run */

/* Adds n images' logits to sums: cross-entropy (log-softmax in double),
 * top-1 and top-5 hits. */
static void score_logits(const float *logits, const int *labels, int n, int C, double sums[3]) {
    for (int b = 0; b < n; b++) {
        const float *z = logits + (size_t)b * C;
        double max = z[0], total = 0.0;
        for (int c = 1; c < C; c++) max = z[c] > max ? z[c] : max;
        for (int c = 0; c < C; c++) total += exp((double)z[c] - max);
        sums[0] += log(total) + max - z[labels[b]];
        int top[5];
        const int k = vit_top_k(z, C, 5, top);
        sums[1] += top[0] == labels[b];
        for (int i = 0; i < k; i++) sums[2] += top[i] == labels[b];
    }
}

static void scores_from_sums(const double sums[3], size_t images, vit_trainer_scores *scores) {
    *scores = (vit_trainer_scores){0};
    if (!images) return;
    *scores = (vit_trainer_scores){sums[0] / images, sums[1] / images, sums[2] / images, images};
}

double vit_trainer_evaluate(vit_train *m, const vit_trainer_source *s,
                            const vit_trainer_input *in, float *images, int *labels, int *ok,
                            float *logits, float *features, vit_trainer_scores *scores) {
    const int B = vit_train_max_batch(m), C = vit_train_config(m)->num_classes;
    const int D = vit_config_pooled_size(vit_train_config(m)); /* features per image */
    vit_trainer_input plain = *in;
    plain.augment = 0;
    size_t seen = 0;
    double sums[3] = {0};
    base_error err;
    for (size_t first = 0; first < s->count; first += (size_t)B) {
        const int n = (int)(s->count - first < (size_t)B ? s->count - first : (size_t)B);
        const int placed = vit_trainer_load_batch(s, NULL, first, n, &plain, -1, images, labels, ok);
        if (placed == 0) continue;
        float *feat = features ? features + seen * D : NULL;
        if (vit_train_forward(m, images, placed, logits, feat, &err) != BASE_OK) return -1.0;
        score_logits(logits, labels, placed, C, sums);
        seen += (size_t)placed;
    }
    if (scores) scores_from_sums(sums, seen, scores);
    return seen ? sums[1] / seen : 0.0;
}

base_status vit_trainer_prepare(vit_trainer *t, const vit_trainer_source *train,
                               const vit_trainer_source *val, base_error *err) {
    const vit_config *c = vit_model_config(t->model);
    const long batch = t->h.batch;
    t->train = train;
    t->val = val && val->count ? val : NULL;
    const size_t per = (size_t)c->num_channels * c->image_size * c->image_size;
    t->images = malloc(sizeof(float) * per * batch);
    t->logits = malloc(sizeof(float) * c->num_classes * batch);
    t->batch_labels = malloc(sizeof(int) * batch);
    t->ok = malloc(sizeof(int) * batch);
    t->order = malloc(sizeof(size_t) * train->count);
    if (!t->images || !t->logits || !t->batch_labels || !t->ok || !t->order)
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    t->steps_per_epoch = (long)((train->count + batch - 1) / batch);
    t->sched = (vit_train_schedule){(float)t->h.lr, (float)t->h.min_lr,
                                    t->h.warmup * t->steps_per_epoch,
                                    t->epochs * t->steps_per_epoch};
    if (!t->h.freeze) return BASE_OK;
    /* Linear probe: every image's features once, without augmentation. */
    const int D = vit_config_pooled_size(c);
    t->features = malloc(sizeof(float) * D * train->count);
    t->feature_labels = malloc(sizeof(int) * train->count);
    if (t->val) t->val_features = malloc(sizeof(float) * D * t->val->count);
    if (!t->features || !t->feature_labels || (t->val && !t->val_features))
        return base_error_set(err, BASE_E_NOMEM, "out of memory for %zu feature rows", train->count);
    vit_trainer_evaluate(t->training, train, &t->in, t->images, t->batch_labels, t->ok, t->logits,
                         t->features, NULL);
    for (size_t i = 0; i < train->count; i++)
        t->feature_labels[i] = vit_trainer_source_label(train, i);
    if (t->val)
        vit_trainer_evaluate(t->training, t->val, &t->in, t->images, t->batch_labels, t->ok,
                             t->logits, t->val_features, NULL);
    return BASE_OK;
}

base_status vit_trainer_record_epoch(vit_trainer *t, const vit_trainer_epoch *e, base_error *err) {
    size_t keep = 0;
    while (keep < t->history_count && t->history[keep].epoch < e->epoch) keep++;
    vit_trainer_epoch *grown = realloc(t->history, (keep + 1) * sizeof *grown);
    if (!grown) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    grown[keep] = *e;
    t->history = grown;
    t->history_count = keep + 1;
    return BASE_OK;
}

void vit_trainer_free(vit_trainer *t) {
    free(t->history);
    t->history = NULL;
    t->history_count = 0;
    free(t->images);
    free(t->logits);
    free(t->batch_labels);
    free(t->ok);
    free(t->order);
    free(t->features);
    free(t->feature_labels);
    free(t->val_features);
    t->images = t->logits = t->features = t->val_features = NULL;
    t->batch_labels = t->ok = t->feature_labels = NULL;
    t->order = NULL;
}

void vit_trainer_epoch_begin(vit_trainer *t, long epoch) {
    vit_trainer_shuffle(t->order, t->train->count, t->seed, epoch);
}

/* The items [*lo, *hi) of a batch of n that process rank of size loads. */
static void slice(int n, const vit_trainer_parallel *par, int *lo, int *hi) {
    const int size = par ? par->size : 1, rank = par ? par->rank : 0;
    *lo = (int)((long long)n * rank / size);
    *hi = (int)((long long)n * (rank + 1) / size);
}

base_status vit_trainer_step(vit_trainer *t, long epoch, long s, vit_trainer_step_result *res,
                            base_error *err) {
    const size_t first = (size_t)s * t->h.batch, count = t->train->count;
    const size_t batch = (size_t)t->h.batch;
    const int n = (int)(count - first < batch ? count - first : batch);
    const int D = vit_config_pooled_size(vit_model_config(t->model)); /* features per image */
    const vit_trainer_parallel *par = t->parallel && t->parallel->size > 1 ? t->parallel : NULL;
    float *images = t->images;
    int *labels = t->batch_labels;
    base_status st = BASE_OK;
    int lo, hi, placed;
    slice(n, par, &lo, &hi);
    memset(res, 0, sizeof *res);
    if (t->features) {
        for (int b = lo; b < hi; b++) {
            memcpy(images + (size_t)(b - lo) * D, t->features + t->order[first + b] * D,
                   sizeof(float) * D);
            labels[b - lo] = t->feature_labels[t->order[first + b]];
        }
        placed = hi - lo;
    } else {
        placed = hi > lo ? vit_trainer_load_batch(t->train, t->order, first + lo, hi - lo, &t->in,
                                                  epoch, images, labels, t->ok)
                         : 0;
    }
    /* The whole batch's images, which the gradients are the mean over. */
    int total = placed;
    if (par) {
        double all = placed;
        if (par->sum(par->ctx, NULL, 0, &all, 1) != 0)
            return base_error_set(err, BASE_E_IO, "step %ld: the processes could not add up their "
                                                "image counts", t->step);
        total = (int)all;
    }
    res->placed = total;
    if (total == 0) return BASE_OK;
    if (placed == 0) {
        /* Nothing of this batch here: no part of its gradients. */
        memset(vit_train_grads(t->training), 0, sizeof(float) * vit_model_param_count(t->model));
    } else if (t->features) {
        st = vit_train_head_grads_part(t->training, images, labels, placed, total,
                                       (float)t->h.smoothing, &res->loss, &res->correct, err);
    } else {
        st = vit_train_step_grads_part(t->training, images, labels, placed, total,
                                       (float)t->h.smoothing, &res->loss, &res->correct, err);
    }
    if (st != BASE_OK) return st;
    if (par) {
        double stats[2] = {res->loss, res->correct};
        if (par->sum(par->ctx, vit_train_grads(t->training), vit_model_param_count(t->model), stats,
                     2) != 0)
            return base_error_set(err, BASE_E_IO, "step %ld: the processes could not add up their "
                                                "gradients", t->step);
        res->loss = (float)stats[0];
        res->correct = (int)stats[1];
    }
    if (!isfinite(res->loss))
        return base_error_set(err, BASE_E_ARG, "the loss is %g at step %ld: lower --lr",
                             (double)res->loss, t->step);
    vit_train_clip_grad_norm(t->training, (float)t->h.clip);
    res->lr = vit_train_lr_at(t->step, &t->sched);
    vit_adamw_step(t->opt, t->training, res->lr);
    t->step++;
    return BASE_OK;
}

int vit_trainer_validate(vit_trainer *t, vit_trainer_scores *scores) {
    *scores = (vit_trainer_scores){0};
    if (!t->val) return -1;
    if (!t->features) {
        vit_trainer_evaluate(t->training, t->val, &t->in, t->images, t->batch_labels, t->ok,
                             t->logits, NULL, scores);
        return 0;
    }
    /* A linear probe: the head on the features computed once. */
    const size_t batch = (size_t)t->h.batch, count = t->val->count;
    const vit_config *c = vit_model_config(t->model);
    const int D = vit_config_pooled_size(c); /* features per image */
    double sums[3] = {0};
    base_error err;
    for (size_t first = 0; first < count; first += batch) {
        const int n = (int)(count - first < batch ? count - first : batch);
        for (int b = 0; b < n; b++) t->batch_labels[b] = vit_trainer_source_label(t->val, first + b);
        if (vit_train_head_forward(t->training, t->val_features + first * D, n, t->logits, &err) == BASE_OK)
            score_logits(t->logits, t->batch_labels, n, c->num_classes, sums);
    }
    scores_from_sums(sums, count, scores);
    return 0;
}

/* ------------------------------------------------------------- checkpoint */

/* The tensors of the state: parameters as trained (not folded), then the
 * moments m and v, under the parameter names with these prefixes. */
static const char *const STATE_PREFIX[3] = {"", "adamw.m.", "adamw.v."};

/* The training options, as the state and the model's metadata record them. */
static void add_hyper(cJSON *j, const vit_trainer *t) {
    const vit_trainer_hyper *h = &t->h;
    cJSON_AddNumberToObject(j, "epochs", (double)t->epochs);
    cJSON_AddNumberToObject(j, "batch", (double)h->batch);
    cJSON_AddNumberToObject(j, "images", (double)h->images);
    cJSON_AddNumberToObject(j, "lr", h->lr);
    cJSON_AddNumberToObject(j, "min_lr", h->min_lr);
    cJSON_AddNumberToObject(j, "wd", h->wd);
    cJSON_AddNumberToObject(j, "warmup", (double)h->warmup);
    cJSON_AddNumberToObject(j, "smoothing", h->smoothing);
    cJSON_AddNumberToObject(j, "clip", h->clip);
    cJSON_AddNumberToObject(j, "shift", (double)h->shift);
    cJSON_AddNumberToObject(j, "min_scale", h->min_scale);
    cJSON_AddNumberToObject(j, "flip", (double)h->flip);
    cJSON_AddNumberToObject(j, "freeze", (double)h->freeze);
    if (h->init[0]) cJSON_AddStringToObject(j, "init", h->init);
}

/* The history as rows [epoch, train_loss, train_top1, eval_loss,
 * eval_top1, eval_top5, lr]; JSON has no NaN: null. */
static void add_history(cJSON *j, const vit_trainer *t) {
    cJSON *rows = cJSON_AddArrayToObject(j, "history");
    for (size_t i = 0; rows && i < t->history_count; i++) {
        const vit_trainer_epoch *e = &t->history[i];
        const double v[7] = {(double)e->epoch, e->train_loss, e->train_top1, e->eval_loss,
                             e->eval_top1, e->eval_top5, e->lr};
        cJSON *row = cJSON_CreateArray();
        for (int k = 0; row && k < 7; k++)
            cJSON_AddItemToArray(row, isfinite(v[k]) ? cJSON_CreateNumber(v[k]) : cJSON_CreateNull());
        cJSON_AddItemToArray(rows, row);
    }
}

/* Reads add_history's rows (absent in older states: none). */
static base_status read_history(const cJSON *j, vit_trainer_state_info *info, base_error *err) {
    const cJSON *rows = cJSON_GetObjectItem(j, "history");
    const int n = cJSON_IsArray(rows) ? cJSON_GetArraySize(rows) : 0;
    if (n == 0) return BASE_OK;
    if (!(info->history = calloc((size_t)n, sizeof *info->history)))
        return base_error_set(err, BASE_E_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        const cJSON *row = cJSON_GetArrayItem(rows, i);
        double v[7];
        for (int k = 0; k < 7; k++) {
            const cJSON *x = cJSON_GetArrayItem(row, k);
            v[k] = cJSON_IsNumber(x) ? x->valuedouble : NAN;
        }
        info->history[i] = (vit_trainer_epoch){(long)v[0], v[1], v[2], v[3], v[4], v[5], v[6]};
    }
    info->history_count = (size_t)n;
    return BASE_OK;
}

/* FNV-1a over the frozen parameters (a linear probe's backbone), which the
 * state leaves out: a resumed probe takes them from --init again, and this
 * tells whether that file still holds the same weights. 0: none frozen. */
static uint64_t frozen_checksum(vit_model *m) {
    uint64_t h = 0;
    const float *params = vit_model_params(m);
    for (size_t i = 0; i < vit_model_num_tensors(m); i++) {
        const vit_param *p = vit_model_tensor_at(m, i);
        if (p->trainable) continue;
        if (!h) h = 0xcbf29ce484222325ull;
        const unsigned char *b = (const unsigned char *)(params + p->offset);
        for (size_t k = 0; k < p->numel * sizeof(float); k++) h = (h ^ b[k]) * 0x100000001b3ull;
    }
    return h;
}

/* The state's JSON: where the run stands, the configuration and options. */
static char *state_json(const vit_trainer *t) {
    const vit_config *c = vit_model_config(t->model);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "epoch", (double)t->epoch_done);
    cJSON_AddNumberToObject(j, "step", (double)t->step);
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, t->seed);
    cJSON_AddStringToObject(j, "seed", seed);
    vit_config_to_hf_json(c, c->num_channels, cJSON_AddObjectToObject(j, "config"));
    /* What those keys leave to the tensors (a state is read by config alone). */
    cJSON *sw = cJSON_AddObjectToObject(j, "switches");
    const struct {
        const char *key;
        int value;
    } switches[] = {{"pos_embed_prefix", c->pos_embed_prefix},
                    {"global_pool", (int)c->global_pool},
                    {"no_final_norm", c->no_final_norm},
                    {"layer_scale", c->layer_scale}};
    for (size_t i = 0; i < sizeof switches / sizeof *switches; i++)
        cJSON_AddNumberToObject(sw, switches[i].key, switches[i].value);
    cJSON_AddNumberToObject(j, "num_classes", c->num_classes);
    add_hyper(j, t);
    add_history(j, t);
    const uint64_t frozen = frozen_checksum(t->model);
    if (frozen) {
        char hex[17];
        snprintf(hex, sizeof hex, "%016" PRIx64, frozen);
        cJSON_AddStringToObject(j, "frozen_checksum", hex);
    }
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return text;
}

static base_status save_state(const vit_trainer *t, base_error *err) {
    vit_model *m = t->model;
    const size_t nt = vit_model_num_tensors(m);
    weights_tensor *w = calloc(3 * nt, sizeof *w);
    char (*names)[64] = calloc(3 * nt, sizeof *names);
    char *text = w && names ? state_json(t) : NULL;
    base_status st;
    if (!text) {
        st = base_error_set(err, BASE_E_NOMEM, "out of memory");
        goto done;
    }
    const float *bufs[3] = {vit_model_params(m), t->opt->m, t->opt->v};
    /* A frozen tensor's moments stay zero and its values are --init's: a
     * linear probe's state holds the head alone (not 3x the backbone). */
    size_t kept = 0;
    for (size_t i = 0; i < nt; i++) {
        const vit_param *p = vit_model_tensor_at(m, i);
        if (!p->trainable) continue;
        for (int k = 0; k < 3; k++, kept++) {
            weights_tensor *x = &w[kept];
            snprintf(names[kept], sizeof names[0], "%s%s", STATE_PREFIX[k], p->name);
            x->name = names[kept];
            x->dtype = WEIGHTS_F32;
            x->ndim = p->ndim;
            memcpy(x->shape, p->shape, sizeof(int64_t) * p->ndim);
            x->numel = p->numel;
            x->nbytes = p->numel * sizeof(float);
            x->data = bufs[k] + p->offset;
        }
    }
    const char *keys[] = {"vitc_train_state"}, *values[] = {text};
    st = weights_write(t->state_path, w, kept, keys, values, 1, err);
done:
    free(text);
    free(w);
    free(names);
    return st;
}

base_status vit_trainer_save(const vit_trainer *t, double val_acc, base_error *err) {
    /* Only what the run determines: no wall-clock time and no command line,
     * so a run resumed after a crash writes the same file as one that was
     * not interrupted (timings go to stderr and to vit train --log). */
    cJSON *j = cJSON_CreateObject();
    char seed[32], *info = NULL;
    snprintf(seed, sizeof seed, "%" PRIu64, t->seed);
    if (j && cJSON_AddNumberToObject(j, "epoch", (double)t->epoch_done) &&
        cJSON_AddNumberToObject(j, "step", (double)t->step) &&
        cJSON_AddStringToObject(j, "seed", seed) &&
        cJSON_AddNumberToObject(j, "val_top1", val_acc >= 0 ? round(val_acc * 1e6) / 1e6 : -1)) {
        add_hyper(j, t);
        info = cJSON_PrintUnformatted(j);
    }
    cJSON_Delete(j);
    if (!info) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    const char *keys[] = {"vitc_training"}, *values[] = {info};
    const base_status st = vit_model_save(t->model, t->out_path, (const char *const *)t->labels,
                                         &t->pre, NULL, 0, keys, values, 1, err);
    free(info);
    return st != BASE_OK ? st : save_state(t, err);
}

base_status vit_trainer_state_read(const char *path, vit_trainer_state_info *info,
                                  weights_file **file, base_error *err) {
    memset(info, 0, sizeof *info);
    if (weights_open(path, file, err) != BASE_OK) return err->code;
    const char *meta = weights_metadata(*file, "vitc_train_state");
    if (!meta) return base_error_set(err, BASE_E_FORMAT, "%s is not a vit train state file", path);
    /* Through the limits-checked parse, like every other JSON we read: a
     * state file is an input too. */
    cJSON *j = NULL;
    base_error why;
    if (base_json_parse_object(meta, "vitc_train_state", NULL, &j, &why) != BASE_OK)
        return base_error_set(err, why.code, "%s is not a vit train state file (%s)", path,
                             why.message);
#define GET(key) (cJSON_IsNumber(cJSON_GetObjectItem(j, key)) ? cJSON_GetObjectItem(j, key)->valuedouble : -1)
    const cJSON *config = cJSON_GetObjectItem(j, "config");
    if (cJSON_IsObject(config)) {
        /* The model's own config keys, read as config.json is. */
        info->config = (vit_config){.num_prefix_tokens = 1};
        char name[4200];
        snprintf(name, sizeof name, "%s (state config)", path);
        if (vit_config_from_hf_json(config, name, &info->config, err) != BASE_OK) {
            cJSON_Delete(j);
            return err->code;
        }
        info->config.num_classes = (int)GET("num_classes");
        const vit_config *k = &info->config;
        info->config.num_prefix_tokens = !k->no_class_token + k->num_reg_tokens;
        const cJSON *sw = cJSON_GetObjectItem(j, "switches");
#define SWITCH(key) (cJSON_IsNumber(cJSON_GetObjectItem(sw, key)) ? cJSON_GetObjectItem(sw, key)->valueint : 0)
        if (cJSON_IsObject(sw)) {
            info->config.pos_embed_prefix = SWITCH("pos_embed_prefix");
            info->config.global_pool = (vit_global_pool)SWITCH("global_pool");
            info->config.no_final_norm = SWITCH("no_final_norm");
            info->config.layer_scale = SWITCH("layer_scale");
        }
#undef SWITCH
    } else {
        /* A state written before the config had one writer: its own keys. */
        info->config = (vit_config){
            .hidden_size = (int)GET("hidden_size"), .num_layers = (int)GET("num_layers"),
            .num_heads = (int)GET("num_heads"), .mlp_size = (int)GET("mlp_size"),
            .patch_size = (int)GET("patch_size"), .image_size = (int)GET("image_size"),
            .num_channels = (int)GET("num_channels"), .num_classes = (int)GET("num_classes"),
            .layer_norm_eps = (float)GET("layer_norm_eps"), .num_prefix_tokens = 1};
    }
    info->epoch = (long)GET("epoch");
    info->step = (long)GET("step");
    info->epochs = (long)GET("epochs");
    info->have_hyper = cJSON_IsNumber(cJSON_GetObjectItem(j, "lr"));
    info->h = (vit_trainer_hyper){
        .batch = (long)GET("batch"), .warmup = (long)GET("warmup"), .shift = (long)GET("shift"),
        .flip = (long)GET("flip"), .lr = GET("lr"), .min_lr = GET("min_lr"), .wd = GET("wd"),
        .smoothing = GET("smoothing"), .clip = GET("clip"), .min_scale = GET("min_scale"),
        .images = (size_t)GET("images"), .freeze = GET("freeze") > 0};
#undef GET
    const cJSON *init = cJSON_GetObjectItem(j, "init");
    if (cJSON_IsString(init)) snprintf(info->h.init, sizeof info->h.init, "%s", init->valuestring);
    if (read_history(j, info, err) != BASE_OK) {
        cJSON_Delete(j);
        return err->code;
    }
    const cJSON *frozen = cJSON_GetObjectItem(j, "frozen_checksum");
    if (cJSON_IsString(frozen))
        snprintf(info->frozen_checksum, sizeof info->frozen_checksum, "%s", frozen->valuestring);
    const cJSON *s = cJSON_GetObjectItem(j, "seed");
    info->seed = cJSON_IsString(s) ? strtoull(s->valuestring, NULL, 10) : 0;
    cJSON_Delete(j);
    return BASE_OK;
}

base_status vit_trainer_state_load(weights_file *f, vit_trainer_state_info *info,
                                  vit_trainer *t, base_error *err) {
    vit_model *m = t->model;
    float *bufs[3] = {vit_model_params(m), t->opt->m, t->opt->v};
    const size_t nt = vit_model_num_tensors(m);
    for (size_t i = 0; i < nt; i++) {
        const vit_param *p = vit_model_tensor_at(m, i);
        for (int k = 0; k < 3; k++) {
            char name[96];
            snprintf(name, sizeof name, "%s%s", STATE_PREFIX[k], p->name);
            const weights_tensor *w = weights_find(f, name);
            if (!w && !p->trainable) continue; /* a probe's backbone: from --init */
            if (!w || w->numel != p->numel)
                return base_error_set(err, BASE_E_SHAPE, "%s: tensor '%s' missing or of another size",
                                     weights_path(f), name);
            if (weights_to_f32(f, w, bufs[k] + p->offset, err) != BASE_OK) return err->code;
        }
    }
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, frozen_checksum(m));
    const char *saved = info->frozen_checksum[0] ? info->frozen_checksum : NULL;
    if (saved && strcmp(saved, hex) != 0)
        return base_error_set(err, BASE_E_FORMAT, "%s: the frozen backbone is not the one this "
                             "state was trained on (--init %s changed since?)",
                             weights_path(f), t->h.init);
    t->opt->step = t->step;
    /* The epochs after the state's are not done: a crash came between
     * recording them and saving. */
    free(t->history);
    t->history = info->history;
    t->history_count = info->history_count;
    while (t->history_count && t->history[t->history_count - 1].epoch > info->epoch)
        t->history_count--;
    info->history = NULL;
    info->history_count = 0;
    return BASE_OK;
}
