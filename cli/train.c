/* vit train: train a ViT from scratch or fine-tune one, on Fashion-MNIST or
 * an ImageFolder directory, with a checkpoint every epoch. */
#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "vit_train.h"

enum {
    OPT_DATA, OPT_OUTPUT, OPT_ARCH, OPT_DIM, OPT_DEPTH, OPT_HEADS, OPT_MLP, OPT_PATCH, OPT_SIZE,
    OPT_EPOCHS, OPT_BATCH, OPT_LR, OPT_MIN_LR, OPT_WD, OPT_WARMUP, OPT_SMOOTHING, OPT_CLIP,
    OPT_SEED, OPT_VAL, OPT_RESUME, OPT_INIT, OPT_FREEZE, OPT_LIMIT, OPT_MIN_SCALE, OPT_NO_FLIP,
    OPT_SHIFT, OPT_THREADS, NUM_OPTS
};

static const cli_option OPTIONS[NUM_OPTS] = {
    [OPT_DATA] = {"data", 0, 1, "SRC", "fashion-mnist, or DIR/<class>/* images"},
    [OPT_OUTPUT] = {"output", 'o', 1, "FILE", "the model (.safetensors), written each epoch; "
                                             "FILE.state holds what --resume needs"},
    [OPT_ARCH] = {"arch", 0, 1, "NAME", "tiny (D 64, 4 layers, 4 heads, MLP 128), small (D 128, "
                                       "6 layers, 4 heads, MLP 256) or custom (default tiny)"},
    [OPT_DIM] = {"dim", 0, 1, "D", "hidden size (overrides --arch)"},
    [OPT_DEPTH] = {"depth", 0, 1, "L", "encoder layers"},
    [OPT_HEADS] = {"heads", 0, 1, "H", "attention heads"},
    [OPT_MLP] = {"mlp", 0, 1, "M", "MLP hidden size"},
    [OPT_PATCH] = {"patch", 0, 1, "P", "patch size (default 4 for fashion-mnist, else 8)"},
    [OPT_SIZE] = {"image-size", 0, 1, "S", "input size (default 28 for fashion-mnist, else 64)"},
    [OPT_EPOCHS] = {"epochs", 0, 1, "E", "epochs (default 10)"},
    [OPT_BATCH] = {"batch", 'b', 1, "B", "images per step (default 128)"},
    [OPT_LR] = {"lr", 0, 1, "X", "peak learning rate (default 1e-3)"},
    [OPT_MIN_LR] = {"min-lr", 0, 1, "X", "learning rate at the end of the cosine (default 1e-5)"},
    [OPT_WD] = {"wd", 0, 1, "X", "AdamW weight decay, weight matrices only (default 0.05)"},
    [OPT_WARMUP] = {"warmup", 0, 1, "E", "warm-up epochs (default 1)"},
    [OPT_SMOOTHING] = {"smoothing", 0, 1, "X", "label smoothing (default 0.1)"},
    [OPT_CLIP] = {"clip", 0, 1, "X", "clip the gradient norm at X, 0: never (default 1)"},
    [OPT_SEED] = {"seed", 0, 1, "N", "seed of initialisation, order and augmentation (default 0)"},
    [OPT_VAL] = {"val", 0, 1, "SRC", "validation images: DIR/<class>/*, or fashion-mnist (its "
                                    "test split)"},
    [OPT_RESUME] = {"resume", 0, 1, "CKPT", "continue from CKPT.state (or CKPT when it is one)"},
    [OPT_INIT] = {"init", 0, 1, "MODEL", "start from a pretrained model, with a new head"},
    [OPT_FREEZE] = {"freeze-backbone", 0, 0, NULL, "with --init: train the head only (linear "
                                                  "probe, features computed once)"},
    [OPT_LIMIT] = {"limit", 0, 1, "N", "use the first N training images only"},
    [OPT_MIN_SCALE] = {"min-scale", 0, 1, "X", "random resized crop: smallest area fraction "
                                              "for photos (default 0.08)"},
    [OPT_NO_FLIP] = {"no-flip", 0, 0, NULL, "no random horizontal flips"},
    [OPT_SHIFT] = {"shift", 0, 1, "N", "fashion-mnist: move each image by up to N pixels each way "
                                       "at random, background filling the gap (default 0)"},
    [OPT_THREADS] = {"threads", 't', 1, "N", "threads (default: all cores)"},
};

static const char USAGE[] =
    "usage: vit train --data SRC -o OUT.safetensors [--arch tiny|small|custom] [--epochs E]\n"
    "                 [-b B] [--lr X] [--wd X] [--seed N] [--val SRC] [--resume CKPT]\n"
    "                 [--init MODEL [--freeze-backbone]]\n"
    "\n"
    "Trains a ViT on SRC: fashion-mnist (the Debian package dataset-fashion-mnist; 28x28\n"
    "grey, flipped at random) or DIR/<class>/* photos (random resized crop and flip).\n"
    "AdamW, linear warm-up then cosine decay, label smoothing, gradient clipping; the\n"
    "same seed and thread count give the same model. OUT is replaced atomically after\n"
    "every epoch and loads with 'vit classify -m OUT'.";

/* Fashion-MNIST's pixel mean and std (training split, over [0, 1]). */
#define FMNIST_MEAN 0.2860f
#define FMNIST_STD 0.3530f

/* ------------------------------------------------------------- sources */

typedef struct source {
    int mnist;          /* Fashion-MNIST; else an ImageFolder */
    data_mnist set;     /* mnist */
    data_file_list files; /* folder: the images */
    int *labels;        /* folder: the class of each file */
    size_t count;
    char **class_names; /* folder: num_classes names (owned) */
    int num_classes;
    size_t problems;    /* folder: directories that could not be listed (reported) */
} source;

static void source_free(source *s) {
    data_mnist_free(&s->set);
    data_file_list_free(&s->files);
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

/* Opens SRC: "fashion-mnist" (split train or test) or an ImageFolder. For
 * a folder used for validation, classes must match names (the training
 * classes); its folders are then matched by name. */
static int source_open(const char *spec, int train, char **names, int num_names, source *s) {
    memset(s, 0, sizeof *s);
    vit_error err;
    if (strcmp(spec, "fashion-mnist") == 0 && !is_dir(spec)) {
        if (data_mnist_load(NULL, train, &s->set, &err) != VIT_OK) {
            fprintf(stderr, "vit train: %s\n", err.message);
            return -1;
        }
        s->mnist = 1;
        s->count = (size_t)s->set.count;
        s->num_classes = 10;
        return 0;
    }
    data_file_list classes = {0};
    if (data_list_subdirs(spec, &classes, &err) != VIT_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        return -1;
    }
    int rc = -1;
    if (classes.count == 0) {
        fprintf(stderr, "vit train: no images found in %s (no class folders: expected DIR/<class>/*)\n", spec);
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
                fprintf(stderr, "vit train: %s/%s: no such class in the training data\n", spec,
                        classes.paths[c]);
                goto done;
            }
        }
        if (!(s->class_names[c] = strdup(classes.paths[c]))) goto oom;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", spec, classes.paths[c]);
        const size_t before = s->files.count;
        data_file_list unreadable = {0};
        if (data_walk_collect(path, NULL, &s->files, &unreadable, &err) != VIT_OK) {
            fprintf(stderr, "vit train: %s\n", err.message);
            data_file_list_free(&unreadable);
            goto done;
        }
        /* One unreadable folder should not cost the whole run: said once
         * here, and the run ends with status 2. */
        for (size_t u = 0; u < unreadable.count; u++)
            fprintf(stderr, "vit train: %s\n", unreadable.paths[u]);
        s->problems += unreadable.count;
        data_file_list_free(&unreadable);
        int *grown = realloc(s->labels, sizeof *grown * (s->files.count ? s->files.count : 1));
        if (!grown) goto oom;
        s->labels = grown;
        for (size_t i = before; i < s->files.count; i++) s->labels[i] = label;
    }
    s->count = s->files.count;
    if (s->count == 0) {
        fprintf(stderr, "vit train: no images found in %s (expected DIR/<class>/*)\n", spec);
        goto done;
    }
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "vit train: out of memory\n");
done:
    data_file_list_free(&classes);
    return rc;
}

static int source_label(const source *s, size_t i) {
    return s->mnist ? s->set.labels[i] : s->labels[i];
}

/* What turns a source image into model input. */
typedef struct input_spec {
    int size, channels;
    int augment, flip;
    int shift; /* Fashion-MNIST: largest random translation, pixels */
    double min_scale;
    data_preprocess eval; /* for folders (and resized Fashion-MNIST) */
    uint64_t seed;
} input_spec;

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

/* One model input for item i of s into out. Returns -1 (message printed)
 * when an image cannot be read. */
static int load_item(const source *s, size_t i, const input_spec *in, long epoch, float *out) {
    vit_train_rng rng;
    image_rng(&rng, in->seed, epoch, i);
    const int S = in->size;
    vit_error err;
    if (s->mnist) {
        const int H = s->set.height, W = s->set.width;
        const uint8_t *px = s->set.pixels + i * (size_t)H * W;
        const int flip = in->augment && in->flip && vit_train_rng_uniform(&rng) < 0.5;
        int dx = 0, dy = 0;
        if (in->augment && in->shift > 0) {
            const int span = 2 * in->shift + 1;
            dx = (int)(vit_train_rng_uniform(&rng) * span) - in->shift;
            dy = (int)(vit_train_rng_uniform(&rng) * span) - in->shift;
        }
        if (S == W && H == W && in->channels == 1) {
            /* Pixel (x, y) shows source (x - dx, y - dy); outside it the
             * black background (0) of every Fashion-MNIST image. */
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    const int sy = y - dy, sx = flip ? W - 1 - (x - dx) : x - dx;
                    const int inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
                    out[y * W + x] = ((inside ? px[sy * W + sx] : 0) / 255.0f - FMNIST_MEAN) / FMNIST_STD;
                }
            return 0;
        }
        /* Another size (a fine-tuned model): as an RGB image through the
         * model's own preprocessing, like any PNG. */
        data_image rgb = {W, H, malloc((size_t)W * H * 3)};
        if (!rgb.pixels) return -1;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                memset(rgb.pixels + ((size_t)y * W + x) * 3, px[y * W + (flip ? W - 1 - x : x)], 3);
        float *tmp = malloc(sizeof(float) * 3 * S * S);
        int rc = -1;
        if (tmp && data_preprocess_apply(&in->eval, &rgb, tmp, &err) == VIT_OK) {
            memcpy(out, tmp, sizeof(float) * in->channels * S * S);
            rc = 0;
        }
        free(tmp);
        data_image_free(&rgb);
        return rc;
    }
    data_image img = {0}, crop = {0};
    if (data_image_load(s->files.paths[i], &img, &err) != VIT_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        return -1;
    }
    int rc = 0;
    if (in->augment) {
        if (data_random_resized_crop(&img, S, in->min_scale, in->flip, vit_train_rng_uniform_cb,
                                     &rng, &crop, &err) != VIT_OK) {
            fprintf(stderr, "vit train: %s: %s\n", s->files.paths[i], err.message);
            rc = -1;
        } else {
            normalise_rgb(&crop, &in->eval, in->channels, out);
        }
    } else if (data_preprocess_apply(&in->eval, &img, out, &err) != VIT_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        rc = -1;
    }
    data_image_free(&img);
    data_image_free(&crop);
    return rc;
}

/* Fills a batch with items order[first .. first + n); unreadable images are
 * left out. Returns the number of images placed. */
static int load_batch(const source *s, const size_t *order, size_t first, int n,
                      const input_spec *in, long epoch, float *images, int *labels, int *ok) {
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
        labels[placed++] = source_label(s, item);
    }
    return placed;
}

/* ------------------------------------------------------------- state */

/* The training options a resumed run continues with unless told otherwise. */
typedef struct hyper {
    long batch, warmup, shift, flip, freeze;
    double lr, min_lr, wd, smoothing, clip, min_scale;
    size_t images;
    char init[4096]; /* --init MODEL, "" when trained from scratch */
} hyper;

typedef struct run {
    vit_train_model *model;
    vit_adamw *opt;
    const char *out_path;
    char state_path[4200];
    char **labels;
    int num_labels;
    data_preprocess pre;
    char *recipe; /* the command line, for the metadata */
    long epochs, epoch_done, step;
    uint64_t seed;
    hyper h; /* saved in the state, so a resume continues with the same ones */
} run;

/* The model file (loadable) and the state file (model, AdamW moments, where
 * we stand), each written atomically; the state names the epoch the model
 * file holds, so a crash between the two is harmless. */
static int save_run(run *r, double val_acc, double seconds) {
    vit_error err;
    char info[1024];
    snprintf(info, sizeof info,
             "{\"epoch\":%ld,\"epochs\":%ld,\"step\":%ld,\"seed\":%" PRIu64 ",\"val_top1\":%.4f,"
             "\"seconds\":%.1f,\"command\":\"%s\"}",
             r->epoch_done, r->epochs, r->step, r->seed, val_acc, seconds, r->recipe);
    const char *keys[] = {"vitc_training"}, *values[] = {info};
    if (vit_train_save(r->model, r->out_path, (const char *const *)r->labels, &r->pre, NULL, 0,
                       keys, values, 1, &err) != VIT_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        return -1;
    }
    /* State: parameters as trained (not folded), moments m and v. */
    const size_t nt = vit_train_num_tensors(r->model);
    weights_tensor *t = calloc(3 * nt, sizeof *t);
    char (*names)[64] = calloc(3 * nt, sizeof *names);
    if (!t || !names) {
        free(t);
        free(names);
        fprintf(stderr, "vit train: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < nt; i++) {
        const vit_train_tensor *p = vit_train_tensor_at(r->model, i);
        const float *bufs[3] = {vit_train_params(r->model), r->opt->m, r->opt->v};
        static const char *const PREFIX[3] = {"", "adamw.m.", "adamw.v."};
        for (int k = 0; k < 3; k++) {
            weights_tensor *w = &t[k * nt + i];
            snprintf(names[k * nt + i], sizeof names[0], "%s%s", PREFIX[k], p->name);
            w->name = names[k * nt + i];
            w->dtype = WEIGHTS_F32;
            w->ndim = p->ndim;
            memcpy(w->shape, p->shape, sizeof(int64_t) * p->ndim);
            w->numel = p->numel;
            w->nbytes = p->numel * sizeof(float);
            w->data = bufs[k] + p->offset;
        }
    }
    const vit_config *c = vit_train_config(r->model);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "epoch", (double)r->epoch_done);
    cJSON_AddNumberToObject(j, "step", (double)r->step);
    char seed[32];
    snprintf(seed, sizeof seed, "%" PRIu64, r->seed);
    cJSON_AddStringToObject(j, "seed", seed);
    cJSON_AddNumberToObject(j, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(j, "num_layers", c->num_layers);
    cJSON_AddNumberToObject(j, "num_heads", c->num_heads);
    cJSON_AddNumberToObject(j, "mlp_size", c->mlp_size);
    cJSON_AddNumberToObject(j, "patch_size", c->patch_size);
    cJSON_AddNumberToObject(j, "image_size", c->image_size);
    cJSON_AddNumberToObject(j, "num_channels", c->num_channels);
    cJSON_AddNumberToObject(j, "num_classes", c->num_classes);
    cJSON_AddNumberToObject(j, "layer_norm_eps", c->layer_norm_eps);
    cJSON_AddNumberToObject(j, "epochs", (double)r->epochs);
    cJSON_AddNumberToObject(j, "batch", (double)r->h.batch);
    cJSON_AddNumberToObject(j, "images", (double)r->h.images);
    cJSON_AddNumberToObject(j, "lr", r->h.lr);
    cJSON_AddNumberToObject(j, "min_lr", r->h.min_lr);
    cJSON_AddNumberToObject(j, "wd", r->h.wd);
    cJSON_AddNumberToObject(j, "warmup", (double)r->h.warmup);
    cJSON_AddNumberToObject(j, "smoothing", r->h.smoothing);
    cJSON_AddNumberToObject(j, "clip", r->h.clip);
    cJSON_AddNumberToObject(j, "shift", (double)r->h.shift);
    cJSON_AddNumberToObject(j, "min_scale", r->h.min_scale);
    cJSON_AddNumberToObject(j, "flip", (double)r->h.flip);
    cJSON_AddNumberToObject(j, "freeze", (double)r->h.freeze);
    if (r->h.init[0]) cJSON_AddStringToObject(j, "init", r->h.init);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    const char *skeys[] = {"vitc_train_state"}, *svalues[] = {text};
    const int rc = text && weights_write(r->state_path, t, 3 * nt, skeys, svalues, 1, &err) == VIT_OK ? 0 : -1;
    if (rc) fprintf(stderr, "vit train: %s\n", text ? err.message : "out of memory");
    free(text);
    free(t);
    free(names);
    return rc;
}

/* Reads a state file: the configuration into c, the epoch and step done,
 * and the epochs planned and options used (*have_hyper 0 for a state
 * written before they were saved). */
static int read_state_header(const char *path, vit_config *c, long *epoch, long *step,
                             uint64_t *seed, long *epochs, hyper *h, int *have_hyper,
                             weights_file **file) {
    vit_error err;
    if (weights_open(path, file, &err) != VIT_OK) {
        fprintf(stderr, "vit train: --resume: %s\n", err.message);
        return -1;
    }
    const char *meta = weights_metadata(*file, "vitc_train_state");
    cJSON *j = meta ? cJSON_Parse(meta) : NULL;
    if (!j) {
        fprintf(stderr, "vit train: --resume: %s is not a vit train state file\n", path);
        return -1;
    }
#define GET(key) (cJSON_IsNumber(cJSON_GetObjectItem(j, key)) ? cJSON_GetObjectItem(j, key)->valuedouble : -1)
    *c = (vit_config){.hidden_size = (int)GET("hidden_size"), .num_layers = (int)GET("num_layers"),
                      .num_heads = (int)GET("num_heads"), .mlp_size = (int)GET("mlp_size"),
                      .patch_size = (int)GET("patch_size"), .image_size = (int)GET("image_size"),
                      .num_channels = (int)GET("num_channels"),
                      .num_classes = (int)GET("num_classes"),
                      .layer_norm_eps = (float)GET("layer_norm_eps"), .num_prefix_tokens = 1};
    *epoch = (long)GET("epoch");
    *step = (long)GET("step");
    *epochs = (long)GET("epochs");
    *have_hyper = cJSON_IsNumber(cJSON_GetObjectItem(j, "lr"));
    *h = (hyper){.batch = (long)GET("batch"), .warmup = (long)GET("warmup"),
                 .shift = (long)GET("shift"), .flip = (long)GET("flip"), .lr = GET("lr"),
                 .min_lr = GET("min_lr"), .wd = GET("wd"), .smoothing = GET("smoothing"),
                 .clip = GET("clip"), .min_scale = GET("min_scale"),
                 .images = (size_t)GET("images"), .freeze = GET("freeze") > 0};
#undef GET
    const cJSON *init = cJSON_GetObjectItem(j, "init");
    if (cJSON_IsString(init)) snprintf(h->init, sizeof h->init, "%s", init->valuestring);
    const cJSON *s = cJSON_GetObjectItem(j, "seed");
    *seed = cJSON_IsString(s) ? strtoull(s->valuestring, NULL, 10) : 0;
    cJSON_Delete(j);
    return 0;
}

/* Copies the parameters and moments from an open state file. */
static int load_state(weights_file *f, run *r) {
    vit_error err;
    const size_t nt = vit_train_num_tensors(r->model);
    for (size_t i = 0; i < nt; i++) {
        const vit_train_tensor *p = vit_train_tensor_at(r->model, i);
        float *bufs[3] = {vit_train_params(r->model), r->opt->m, r->opt->v};
        static const char *const PREFIX[3] = {"", "adamw.m.", "adamw.v."};
        for (int k = 0; k < 3; k++) {
            char name[96];
            snprintf(name, sizeof name, "%s%s", PREFIX[k], p->name);
            const weights_tensor *t = weights_find(f, name);
            if (!t || t->numel != p->numel) {
                fprintf(stderr, "vit train: --resume: %s: tensor '%s' missing or of another size\n",
                        weights_path(f), name);
                return -1;
            }
            if (weights_to_f32(f, t, bufs[k] + p->offset, &err) != VIT_OK) {
                fprintf(stderr, "vit train: --resume: %s\n", err.message);
                return -1;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------- the run */

/* Top-1 accuracy of the model on all of s (no augmentation); features,
 * when non-NULL, receives every image's normed class token. */
static double evaluate(vit_train_model *m, const source *s, const input_spec *in, float *images,
                       int *labels, int *ok, float *logits, float *features) {
    const int B = vit_train_max_batch(m), C = vit_train_config(m)->num_classes;
    const int D = vit_train_config(m)->hidden_size;
    input_spec plain = *in;
    plain.augment = 0;
    size_t hits = 0, seen = 0;
    vit_error err;
    for (size_t first = 0; first < s->count; first += (size_t)B) {
        const int n = (int)(s->count - first < (size_t)B ? s->count - first : (size_t)B);
        const int placed = load_batch(s, NULL, first, n, &plain, -1, images, labels, ok);
        if (placed == 0) continue;
        float *feat = features ? features + seen * D : NULL;
        if (vit_train_forward(m, images, placed, logits, feat, &err) != VIT_OK) return -1.0;
        for (int b = 0; b < placed; b++) {
            int best;
            vit_top_k(logits + (size_t)b * C, C, 1, &best);
            hits += best == labels[b];
        }
        seen += (size_t)placed;
    }
    return seen ? (double)hits / seen : 0.0;
}

static void shuffle(size_t *order, size_t n, uint64_t seed, long epoch) {
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

static int parse_float(const char *option, const char *text, double min, double max, double *out) {
    if (!text) return 0;
    char *end;
    const double v = strtod(text, &end);
    if (end == text || *end || !(v >= min && v <= max)) {
        fprintf(stderr, "vit train: %s expects a number from %g to %g, got '%s'\n", option, min,
                max, text);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_train(int argc, char **argv) {
    cli_args args;
    int parsed = cli_parse("train", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0) {
        free(args.positional);
        return parsed > 0 ? CLI_EXIT_OK : CLI_EXIT_FATAL;
    }
    const char *const *v = args.values;
    int exit_code = CLI_EXIT_FATAL;
    source train = {0}, val = {0};
    run r = {0};
    vit_model *init = NULL;
    weights_file *state = NULL;
    cli_protected protect = {0};
    cli_lock lock = {0};
    float *images = NULL, *logits = NULL, *features = NULL, *val_features = NULL;
    int *labels = NULL, *ok = NULL, *feature_labels = NULL, *val_labels = NULL;
    size_t *order = NULL;
    vit_error err;

    long epochs = 10, batch = 128, seed = 0, threads = 0, limit = 0, warmup = 1, shift = 0;
    long flip = !v[OPT_NO_FLIP];
    double lr = 1e-3, min_lr = 1e-5, wd = 0.05, smoothing = 0.1, clip = 1.0, min_scale = 0.08;
    long dim = 64, depth = 4, heads = 4, mlp = 128, patch = 0, size = 0;
    if (v[OPT_ARCH] && strcmp(v[OPT_ARCH], "small") == 0) dim = 128, depth = 6, mlp = 256;
    else if (v[OPT_ARCH] && strcmp(v[OPT_ARCH], "tiny") != 0 && strcmp(v[OPT_ARCH], "custom") != 0) {
        fprintf(stderr, "vit train: --arch is tiny, small or custom, not '%s'\n", v[OPT_ARCH]);
        goto done;
    }
    if ((v[OPT_EPOCHS] && cli_int("train", "--epochs", v[OPT_EPOCHS], 1, 100000, &epochs)) ||
        (v[OPT_BATCH] && cli_int("train", "-b", v[OPT_BATCH], 1, 4096, &batch)) ||
        (v[OPT_SEED] && cli_int("train", "--seed", v[OPT_SEED], 0, 0x7fffffffL, &seed)) ||
        (v[OPT_THREADS] && cli_int("train", "-t", v[OPT_THREADS], 1, 1024, &threads)) ||
        (v[OPT_LIMIT] && cli_int("train", "--limit", v[OPT_LIMIT], 1, 1L << 40, &limit)) ||
        (v[OPT_SHIFT] && cli_int("train", "--shift", v[OPT_SHIFT], 0, 64, &shift)) ||
        (v[OPT_WARMUP] && cli_int("train", "--warmup", v[OPT_WARMUP], 0, 100000, &warmup)) ||
        (v[OPT_DIM] && cli_int("train", "--dim", v[OPT_DIM], 1, 8192, &dim)) ||
        (v[OPT_DEPTH] && cli_int("train", "--depth", v[OPT_DEPTH], 1, 256, &depth)) ||
        (v[OPT_HEADS] && cli_int("train", "--heads", v[OPT_HEADS], 1, 256, &heads)) ||
        (v[OPT_MLP] && cli_int("train", "--mlp", v[OPT_MLP], 1, 65536, &mlp)) ||
        (v[OPT_PATCH] && cli_int("train", "--patch", v[OPT_PATCH], 1, 1024, &patch)) ||
        (v[OPT_SIZE] && cli_int("train", "--image-size", v[OPT_SIZE], 1, 8192, &size)) ||
        parse_float("--lr", v[OPT_LR], 0, 10, &lr) ||
        parse_float("--min-lr", v[OPT_MIN_LR], 0, 10, &min_lr) ||
        parse_float("--wd", v[OPT_WD], 0, 10, &wd) ||
        parse_float("--smoothing", v[OPT_SMOOTHING], 0, 1, &smoothing) ||
        parse_float("--clip", v[OPT_CLIP], 0, 1e9, &clip) ||
        parse_float("--min-scale", v[OPT_MIN_SCALE], 0.001, 1, &min_scale))
        goto done;
    if (!v[OPT_DATA] || !v[OPT_OUTPUT] || args.num_positional) {
        fprintf(stderr, "vit train: needs --data SRC and -o OUT.safetensors, and no other "
                        "arguments (see 'vit train -h')\n");
        goto done;
    }
    if (v[OPT_FREEZE] && !v[OPT_INIT] && !v[OPT_RESUME]) {
        fprintf(stderr, "vit train: --freeze-backbone needs --init MODEL\n");
        goto done;
    }
    cli_set_threads((int)threads);
    r.out_path = v[OPT_OUTPUT];
    r.epochs = epochs;
    r.seed = (uint64_t)seed;
    snprintf(r.state_path, sizeof r.state_path, "%s.state", r.out_path);
    {
        size_t len = 64;
        for (int i = 0; i < argc; i++) len += strlen(argv[i]) + 1;
        if (!(r.recipe = malloc(len))) goto done;
        strcpy(r.recipe, "vit train");
        for (int i = 0; i < argc; i++) {
            strcat(r.recipe, " ");
            /* JSON-safe: the recipe sits in a JSON string. */
            for (const char *p = argv[i]; *p; p++) {
                const size_t n = strlen(r.recipe);
                r.recipe[n] = *p == '"' || *p == '\\' || (unsigned char)*p < 32 ? '_' : *p;
                r.recipe[n + 1] = '\0';
            }
        }
    }

    if (source_open(v[OPT_DATA], 1, NULL, 0, &train) != 0) goto done;
    if (limit && (size_t)limit < train.count) train.count = (size_t)limit;
    r.num_labels = train.num_classes;
    r.labels = calloc((size_t)r.num_labels + 1, sizeof *r.labels);
    if (!r.labels) goto done;
    for (int c = 0; c < r.num_labels; c++)
        r.labels[c] = train.mnist ? (char *)data_fashion_mnist_label(c) : train.class_names[c];

    /* The model: a state to resume, a pretrained backbone, or new. */
    vit_config config = {.hidden_size = (int)dim, .num_layers = (int)depth, .num_heads = (int)heads,
                         .mlp_size = (int)mlp, .patch_size = (int)(patch ? patch : train.mnist ? 4 : 8),
                         .image_size = (int)(size ? size : train.mnist ? 28 : 64),
                         .num_channels = train.mnist ? 1 : 3, .layer_norm_eps = 1e-6f,
                         .num_classes = train.num_classes, .num_prefix_tokens = 1};
    long start_epoch = 0;
    static hyper saved; /* static: it holds a path buffer */
    int have_saved = 0;
    const char *init_path = v[OPT_INIT];
    long freeze = v[OPT_FREEZE] != NULL;
    if (v[OPT_RESUME]) {
        char path[4200];
        const size_t len = strlen(v[OPT_RESUME]);
        snprintf(path, sizeof path, "%s%s", v[OPT_RESUME],
                 len > 6 && strcmp(v[OPT_RESUME] + len - 6, ".state") == 0 ? "" : ".state");
        uint64_t state_seed;
        long saved_epochs;
        const vit_config wanted = config;
        if (read_state_header(path, &config, &start_epoch, &r.step, &state_seed, &saved_epochs,
                              &saved, &have_saved, &state) != 0)
            goto done;
        if (config.num_classes != train.num_classes) {
            fprintf(stderr, "vit train: --resume: the state has %d classes, the data %d\n",
                    config.num_classes, train.num_classes);
            goto done;
        }
        /* The architecture is the state's: an option asking for another
         * one would be silently ignored, so it is refused, naming it. */
        const int by_arch = v[OPT_ARCH] && strcmp(v[OPT_ARCH], "custom") != 0;
        char arch_option[64];
        snprintf(arch_option, sizeof arch_option, "--arch %s", v[OPT_ARCH] ? v[OPT_ARCH] : "");
        const struct {
            const char *option, *what;
            int given, asked, has;
        } arch[] = {
            {v[OPT_DIM] ? "--dim" : arch_option, "hidden size", v[OPT_DIM] || by_arch,
             wanted.hidden_size, config.hidden_size},
            {v[OPT_DEPTH] ? "--depth" : arch_option, "layers", v[OPT_DEPTH] || by_arch,
             wanted.num_layers, config.num_layers},
            {v[OPT_HEADS] ? "--heads" : arch_option, "heads", v[OPT_HEADS] || by_arch,
             wanted.num_heads, config.num_heads},
            {v[OPT_MLP] ? "--mlp" : arch_option, "MLP size", v[OPT_MLP] || by_arch,
             wanted.mlp_size, config.mlp_size},
            {"--patch", "patch size", v[OPT_PATCH] != NULL, wanted.patch_size, config.patch_size},
            {"--image-size", "image size", v[OPT_SIZE] != NULL, wanted.image_size, config.image_size},
        };
        for (size_t i = 0; i < sizeof arch / sizeof *arch; i++)
            if (arch[i].given && arch[i].asked != arch[i].has) {
                fprintf(stderr, "vit train: --resume: %s asks for %s %d, but the state in %s has "
                                "%s %d (a resumed run keeps its architecture)\n",
                        arch[i].option, arch[i].what, arch[i].asked, path, arch[i].what, arch[i].has);
                goto done;
            }
        if (v[OPT_SEED] && (uint64_t)seed != state_seed) {
            fprintf(stderr, "vit train: --resume: --seed %ld, but the state in %s was trained with "
                            "seed %" PRIu64 " (the seed fixes the order and augmentation)\n",
                    seed, path, state_seed);
            goto done;
        }
        r.seed = state_seed;
        if (!v[OPT_EPOCHS] && saved_epochs > 0) epochs = saved_epochs;
        if (epochs <= start_epoch) {
            char given[64];
            snprintf(given, sizeof given, v[OPT_EPOCHS] ? "got %ld" : "the state's own %ld when not given",
                     epochs);
            fprintf(stderr, "vit train: --resume: the state in %s has already trained %ld epochs; "
                            "--epochs must be larger (%s)\n", path, start_epoch, given);
            goto done;
        }
        r.epochs = epochs;
        /* Options not given continue as saved; given ones that differ are
         * changes, said on stderr. */
        char changes[2048] = "";
        size_t n = 0;
#define CHANGES(...) \
    (n += (size_t)snprintf(changes + n, n < sizeof changes ? sizeof changes - n : 0, __VA_ARGS__))
        if (saved_epochs > 0 && epochs != saved_epochs)
            CHANGES(", epochs changed from %ld to %ld", saved_epochs, epochs);
        if (have_saved) {
#define KEEP_OR_CHANGE(opt, var, name, fmt, cast)                                        \
    do {                                                                                 \
        if (!v[opt]) var = saved.name;                                                   \
        else if (var != saved.name)                                                      \
            CHANGES(", " #name " changed from " fmt " to " fmt, (cast)saved.name, (cast)var); \
    } while (0)
            KEEP_OR_CHANGE(OPT_LR, lr, lr, "%g", double);
            KEEP_OR_CHANGE(OPT_MIN_LR, min_lr, min_lr, "%g", double);
            KEEP_OR_CHANGE(OPT_WD, wd, wd, "%g", double);
            KEEP_OR_CHANGE(OPT_WARMUP, warmup, warmup, "%ld", long);
            KEEP_OR_CHANGE(OPT_SMOOTHING, smoothing, smoothing, "%g", double);
            KEEP_OR_CHANGE(OPT_CLIP, clip, clip, "%g", double);
            KEEP_OR_CHANGE(OPT_SHIFT, shift, shift, "%ld", long);
            KEEP_OR_CHANGE(OPT_MIN_SCALE, min_scale, min_scale, "%g", double);
#undef KEEP_OR_CHANGE
            if (!v[OPT_NO_FLIP]) flip = saved.flip;
            else if (saved.flip) CHANGES(", flips turned off");
            if (!v[OPT_BATCH]) batch = saved.batch;
            /* A fine-tuned run goes on from its --init model's preprocessing
             * (the weights come from the state). */
            if (!init_path && saved.init[0]) {
                init_path = saved.init;
                CHANGES(", fine-tuning from %s (--init, as saved)", init_path);
            } else if (init_path && strcmp(init_path, saved.init) != 0)
                CHANGES(", --init changed from %s to %s", saved.init[0] ? saved.init : "none",
                        init_path);
            if (!freeze) freeze = saved.freeze;
            else if (!saved.freeze) CHANGES(", the backbone is frozen from now on");
            const long clamped = (size_t)batch > train.count ? (long)train.count : batch;
            if (clamped != saved.batch) {
                /* The schedule counts steps, and the state's step count only
                 * means the same point of it with the same batch size. */
                fprintf(stderr, "vit train: --resume: -b %ld, but the state in %s was trained "
                                "with batch %ld (its step count only fits that batch size)\n",
                        clamped, path, saved.batch);
                goto done;
            }
            if (saved.images != train.count)
                CHANGES(", training images changed from %zu to %zu", saved.images, train.count);
        }
#undef CHANGES
        fprintf(stderr, "resuming %s after epoch %ld of %ld (step %ld)%s\n", path, start_epoch,
                epochs, r.step, changes);
    }
    if (freeze && !init_path) {
        fprintf(stderr, "vit train: --freeze-backbone needs --init MODEL\n");
        goto done;
    }
    if (init_path) {
        if (!(init = cli_load_model("train", init_path, NULL, NULL))) goto done;
    }
    if (init && state) {
        /* Only the preprocessing is taken from it: the architecture must be
         * the state's, or the model is another one. */
        const vit_config *ic = vit_model_config(init);
        if (ic->hidden_size != config.hidden_size || ic->num_layers != config.num_layers ||
            ic->num_heads != config.num_heads || ic->mlp_size != config.mlp_size ||
            ic->patch_size != config.patch_size || ic->image_size != config.image_size) {
            fprintf(stderr, "vit train: --resume: --init %s is ViT D %d, %d layers, %d heads, MLP %d, "
                            "patch %d, %dx%d, but the state has D %d, %d layers, %d heads, MLP %d, "
                            "patch %d, %dx%d\n",
                    init_path, ic->hidden_size, ic->num_layers, ic->num_heads, ic->mlp_size,
                    ic->patch_size, ic->image_size, ic->image_size, config.hidden_size,
                    config.num_layers, config.num_heads, config.mlp_size, config.patch_size,
                    config.image_size, config.image_size);
            goto done;
        }
    } else if (init) {
        const vit_config *ic = vit_model_config(init);
        config.hidden_size = ic->hidden_size;
        config.num_layers = ic->num_layers;
        config.num_heads = ic->num_heads;
        config.mlp_size = ic->mlp_size;
        config.patch_size = ic->patch_size;
        config.image_size = ic->image_size;
        config.layer_norm_eps = ic->layer_norm_eps;
        if (!train.mnist) config.num_channels = ic->num_channels;
    }
    /* Before anything is written: OUT and OUT.state must not be the --init
     * model's files or training images (OUT.state may be the --resume
     * state: continuing it is the point), and no other vit process may be
     * training into OUT. */
    if (cli_protect_run("train", &protect, init, NULL, (const char *const *)train.files.paths,
                        train.mnist ? 0 : train.files.count) != 0 ||
        cli_check_output("train", &protect, r.out_path) != 0 ||
        cli_check_output("train", &protect, r.state_path) != 0 ||
        cli_lock_output("train", r.out_path, 0, &lock) != 0)
        goto done;
    if (config.hidden_size % config.num_heads) {
        fprintf(stderr, "vit train: %d heads do not divide hidden size %d\n", config.num_heads,
                config.hidden_size);
        goto done;
    }
    if ((size_t)batch > train.count) batch = (long)train.count;
    r.h = (hyper){.batch = batch, .warmup = warmup, .shift = shift, .flip = flip, .lr = lr,
                  .min_lr = min_lr, .wd = wd, .smoothing = smoothing, .clip = clip,
                  .min_scale = min_scale, .images = train.count, .freeze = freeze};
    snprintf(r.h.init, sizeof r.h.init, "%s", init_path ? init_path : "");
    if (vit_train_create(&config, (int)batch, &r.model, &err) != VIT_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        goto done;
    }
    vit_train_init(r.model, r.seed);
    const vit_adamw_params hyper = {0.9f, 0.999f, 1e-8f, (float)wd};
    if (vit_adamw_create(r.model, &hyper, &r.opt, &err) != VIT_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        goto done;
    }
    if (state) {
        if (load_state(state, &r) != 0) goto done;
        r.opt->step = r.step;
    } else if (init && vit_train_copy_from(r.model, init, 0, &err) != VIT_OK) {
        fprintf(stderr, "vit train: --init: %s\n", err.message);
        goto done;
    }
    if (freeze) vit_train_freeze_backbone(r.model, 1);

    /* Preprocessing the saved model states (and validation uses). */
    input_spec in = {.size = config.image_size, .channels = config.num_channels, .augment = 1,
                     .flip = (int)flip, .shift = (int)shift, .min_scale = min_scale, .seed = r.seed};
    if (init) {
        in.eval = *vit_model_preprocess(init);
    } else if (train.mnist) {
        data_preprocess_default(&in.eval, config.image_size);
        in.eval.resize_mode = DATA_RESIZE_EXACT;
        in.eval.resize_width = in.eval.resize_height = config.image_size;
        in.eval.do_center_crop = 0;
        in.eval.crop_width = in.eval.crop_height = config.image_size;
        for (int c = 0; c < 3; c++) in.eval.mean[c] = FMNIST_MEAN, in.eval.std[c] = FMNIST_STD;
    } else {
        data_preprocess_default(&in.eval, config.image_size);
    }
    r.pre = in.eval;
    if (v[OPT_VAL] && source_open(v[OPT_VAL], 0, train.mnist ? NULL : train.class_names,
                                  train.num_classes, &val) != 0)
        goto done;
    if (v[OPT_VAL] && val.mnist != train.mnist) {
        fprintf(stderr, "vit train: --val must be the same kind of source as --data\n");
        goto done;
    }

    const size_t per = (size_t)config.num_channels * config.image_size * config.image_size;
    images = malloc(sizeof(float) * per * batch);
    logits = malloc(sizeof(float) * config.num_classes * batch);
    labels = malloc(sizeof(int) * batch);
    ok = malloc(sizeof(int) * batch);
    order = malloc(sizeof(size_t) * train.count);
    if (!images || !logits || !labels || !ok || !order) {
        fprintf(stderr, "vit train: out of memory\n");
        goto done;
    }
    const int D = config.hidden_size;
    if (freeze) {
        /* Linear probe: every image's features once, without augmentation. */
        features = malloc(sizeof(float) * D * train.count);
        feature_labels = malloc(sizeof(int) * train.count);
        if (val.count) val_features = malloc(sizeof(float) * D * val.count);
        if (!features || !feature_labels || (val.count && !val_features)) {
            fprintf(stderr, "vit train: out of memory for %zu feature rows\n", train.count);
            goto done;
        }
        const double t0 = cli_now_seconds();
        evaluate(r.model, &train, &in, images, labels, ok, logits, features);
        for (size_t i = 0; i < train.count; i++) feature_labels[i] = source_label(&train, i);
        if (val.count) evaluate(r.model, &val, &in, images, labels, ok, logits, val_features);
        fprintf(stderr, "features of %zu images in %.1f s\n", train.count + val.count,
                cli_now_seconds() - t0);
    }

    const long steps_per_epoch = (long)((train.count + batch - 1) / batch);
    const vit_train_schedule sched = {(float)lr, (float)min_lr, warmup * steps_per_epoch,
                                      epochs * steps_per_epoch};
    const vit_config *c = &config;
    fprintf(stderr, "training %s: %zu images, %d classes; ViT D %d, %d layers, %d heads, MLP %d, "
                    "patch %d, %dx%d x%d; %zu parameters; %ld epochs of %ld steps (batch %ld), "
                    "%d threads\n",
            v[OPT_DATA], train.count, c->num_classes, c->hidden_size, c->num_layers, c->num_heads,
            c->mlp_size, c->patch_size, c->image_size, c->image_size, c->num_channels,
            vit_train_num_params(r.model), epochs, steps_per_epoch, batch, omp_get_max_threads());
    const int tty = isatty(STDERR_FILENO);
    const double run_start = cli_now_seconds();
    for (long epoch = start_epoch; epoch < epochs; epoch++) {
        shuffle(order, train.count, r.seed, epoch);
        double loss_sum = 0.0, epoch_start = cli_now_seconds(), last_print = epoch_start;
        size_t hits = 0, seen = 0;
        for (long s = 0; s < steps_per_epoch; s++) {
            const size_t first = (size_t)s * batch;
            const int n = (int)(train.count - first < (size_t)batch ? train.count - first : (size_t)batch);
            float loss;
            int correct, placed = n;
            vit_status st;
            if (features) {
                for (int b = 0; b < n; b++) {
                    memcpy(images + (size_t)b * D, features + order[first + b] * D, sizeof(float) * D);
                    labels[b] = feature_labels[order[first + b]];
                }
                st = vit_train_head_grads(r.model, images, labels, n, (float)smoothing, &loss,
                                          &correct, &err);
            } else {
                placed = load_batch(&train, order, first, n, &in, epoch, images, labels, ok);
                if (placed == 0) continue;
                st = vit_train_step_grads(r.model, images, labels, placed, (float)smoothing, &loss,
                                          &correct, &err);
            }
            if (st != VIT_OK) {
                fprintf(stderr, "vit train: %s\n", err.message);
                goto done;
            }
            if (!isfinite(loss)) {
                fprintf(stderr, "vit train: the loss is %g at step %ld: lower --lr\n", (double)loss, r.step);
                goto done;
            }
            vit_train_clip_grad_norm(r.model, (float)clip);
            const float rate = vit_train_lr_at(r.step, &sched);
            vit_adamw_step(r.opt, r.model, rate);
            r.step++;
            loss_sum += (double)loss * placed;
            hits += (size_t)correct;
            seen += (size_t)placed;
            const double now = cli_now_seconds();
            if (now - last_print >= (tty ? 0.5 : 30.0) || s + 1 == steps_per_epoch) {
                last_print = now;
                fprintf(stderr, "%sepoch %ld/%ld  step %ld/%ld  loss %.4f  acc %.2f%%  lr %.2e  %.0f images/s%s",
                        tty ? "\r" : "", epoch + 1, epochs, s + 1, steps_per_epoch, loss_sum / seen,
                        100.0 * hits / seen, (double)rate, seen / (now - epoch_start), tty ? "  " : "\n");
            }
        }
        double val_acc = -1.0;
        if (val.count) {
            if (features) {
                size_t vh = 0;
                for (size_t first = 0; first < val.count; first += (size_t)batch) {
                    const int n = (int)(val.count - first < (size_t)batch ? val.count - first : (size_t)batch);
                    float loss;
                    int correct;
                    for (int b = 0; b < n; b++) labels[b] = source_label(&val, first + b);
                    vit_train_head_grads(r.model, val_features + first * D, labels, n, 0.0f, &loss,
                                         &correct, &err);
                    vh += (size_t)correct;
                }
                val_acc = (double)vh / val.count;
            } else {
                val_acc = evaluate(r.model, &val, &in, images, labels, ok, logits, NULL);
            }
        }
        r.epoch_done = epoch + 1;
        const double took = cli_now_seconds() - epoch_start;
        fprintf(stderr, "%sepoch %ld/%ld: loss %.4f, train top-1 %.2f%%", tty ? "\r" : "",
                epoch + 1, epochs, seen ? loss_sum / seen : 0.0, seen ? 100.0 * hits / seen : 0.0);
        if (val_acc >= 0) fprintf(stderr, ", val top-1 %.2f%%", 100.0 * val_acc);
        fprintf(stderr, ", %.1f s (%.0f images/s)\n", took, seen / took);
        if (save_run(&r, val_acc, cli_now_seconds() - run_start) != 0) goto done;
    }
    printf("wrote %s (%zu parameters) in %.1f s\n", r.out_path, vit_train_num_params(r.model),
           cli_now_seconds() - run_start);
    exit_code = train.problems || val.problems ? CLI_EXIT_SOME_FAILED : CLI_EXIT_OK;

done:
    cli_unlock_output(&lock);
    cli_protected_free(&protect);
    source_free(&train);
    source_free(&val);
    vit_train_free(r.model);
    vit_adamw_free(r.opt);
    free(r.labels);
    free(r.recipe);
    vit_model_free(init);
    weights_close(state);
    free(images);
    free(logits);
    free(labels);
    free(ok);
    free(order);
    free(features);
    free(feature_labels);
    free(val_features);
    free(val_labels);
    free(args.positional);
    return exit_code;
}
