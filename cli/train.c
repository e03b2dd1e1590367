/* vit train: train a ViT from scratch or fine-tune one, on Fashion-MNIST or
 * an ImageFolder directory, with a checkpoint every epoch. */
#include <inttypes.h>
#include <math.h>
#include <sys/stat.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "mpi_train.h"
#include "train_curves.h"
#include "vit_trainer.h"

enum {
    OPT_DATA, OPT_OUTPUT, OPT_ARCH, OPT_DIM, OPT_DEPTH, OPT_HEADS, OPT_MLP, OPT_PATCH, OPT_SIZE,
    OPT_EPOCHS, OPT_BATCH, OPT_LR, OPT_MIN_LR, OPT_WD, OPT_WARMUP, OPT_SMOOTHING, OPT_CLIP,
    OPT_SEED, OPT_VAL, OPT_RESUME, OPT_INIT, OPT_FREEZE, OPT_LIMIT, OPT_MIN_SCALE, OPT_NO_FLIP,
    OPT_SHIFT, OPT_THREADS, OPT_QUIET, OPT_LOG, OPT_PLOT, OPT_ALLOW_UNUSED, NUM_OPTS
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
    [OPT_QUIET] = {"quiet", 'q', 0, "", "no progress or per-epoch lines on stderr (errors only)"},
    [OPT_LOG] = {"log", 0, 1, "FILE.csv", "a row per epoch: timm's summary.csv columns, then "
                                          "images_per_s, train_top1 (kept across --resume)"},
    [OPT_PLOT] = {"plot", 0, 1, "FILE.png", "draw loss and accuracy against the epoch, after "
                                           "every epoch"},
    [OPT_ALLOW_UNUSED] = CLI_ALLOW_UNUSED_OPTION,
};

static const char USAGE[] =
    "usage: vit train --data SRC -o OUT.safetensors [--arch tiny|small|custom]\n"
    "                 [--epochs E] [-b B] [--lr X] [--wd X] [--seed N] [--val SRC]\n"
    "                 [--resume CKPT] [--init MODEL [--freeze-backbone]]\n"
    "\n"
    "Trains a ViT on SRC: fashion-mnist (the Debian package dataset-fashion-mnist;\n"
    "28x28 grey, flipped at random) or DIR/<class>/* photos (random resized crop and\n"
    "flip).\n"
    "AdamW, linear warm-up then cosine decay, label smoothing, gradient clipping; the\n"
    "same seed and thread count give the same model. OUT is replaced atomically after\n"
    "every epoch and loads with 'vit classify -m OUT'.";

/* The library's warnings (images that cannot be read), from any thread;
 * ctx counts them, for the exit status. */
static void warn_stderr(void *ctx, const char *message) {
    size_t *failed = ctx;
#pragma omp atomic
    (*failed)++;
    fprintf(stderr, "vit train: %s\n", message);
}

/* Opens a source, saying which directories could not be listed (the run
 * then ends with status 2) and why it cannot be opened. */
static int source_open(const char *spec, int train, char **names, int num_names,
                       vit_trainer_source *s) {
    base_error err;
    const base_status st = vit_trainer_source_open(spec, train, names, num_names, s, &err);
    for (size_t u = 0; u < s->unreadable.count; u++)
        fprintf(stderr, "vit train: %s\n", s->unreadable.paths[u]);
    if (st == BASE_OK) return 0;
    fprintf(stderr, "vit train: %s\n", err.message);
    return -1;
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

/* The options as given (or their defaults). */
typedef struct train_opts {
    long epochs, batch, seed, threads, limit, warmup, shift, flip, freeze;
    double lr, min_lr, wd, smoothing, clip, min_scale;
    long dim, depth, heads, mlp, patch, size;
    const char *init_path;
} train_opts;

static int parse_options(const char *const *v, const cli_args *args, train_opts *o) {
    *o = (train_opts){.epochs = 10, .batch = 128, .warmup = 1, .flip = !v[OPT_NO_FLIP],
                      .freeze = v[OPT_FREEZE] != NULL, .lr = 1e-3, .min_lr = 1e-5, .wd = 0.05,
                      .smoothing = 0.1, .clip = 1.0, .min_scale = 0.08, .dim = 64, .depth = 4,
                      .heads = 4, .mlp = 128, .init_path = v[OPT_INIT]};
    if (v[OPT_ARCH] && strcmp(v[OPT_ARCH], "small") == 0) o->dim = 128, o->depth = 6, o->mlp = 256;
    else if (v[OPT_ARCH] && strcmp(v[OPT_ARCH], "tiny") != 0 && strcmp(v[OPT_ARCH], "custom") != 0) {
        fprintf(stderr, "vit train: --arch is tiny, small or custom, not '%s'\n", v[OPT_ARCH]);
        return -1;
    }
    if ((v[OPT_EPOCHS] && cli_int("train", "--epochs", v[OPT_EPOCHS], 1, 100000, &o->epochs)) ||
        (v[OPT_BATCH] && cli_int("train", "-b", v[OPT_BATCH], 1, 4096, &o->batch)) ||
        (v[OPT_SEED] && cli_int("train", "--seed", v[OPT_SEED], 0, 0x7fffffffL, &o->seed)) ||
        (v[OPT_THREADS] && cli_int("train", "-t", v[OPT_THREADS], 1, 1024, &o->threads)) ||
        (v[OPT_LIMIT] && cli_int("train", "--limit", v[OPT_LIMIT], 1, 1L << 40, &o->limit)) ||
        (v[OPT_SHIFT] && cli_int("train", "--shift", v[OPT_SHIFT], 0, 64, &o->shift)) ||
        (v[OPT_WARMUP] && cli_int("train", "--warmup", v[OPT_WARMUP], 0, 100000, &o->warmup)) ||
        (v[OPT_DIM] && cli_int("train", "--dim", v[OPT_DIM], 1, 8192, &o->dim)) ||
        (v[OPT_DEPTH] && cli_int("train", "--depth", v[OPT_DEPTH], 1, 256, &o->depth)) ||
        (v[OPT_HEADS] && cli_int("train", "--heads", v[OPT_HEADS], 1, 256, &o->heads)) ||
        (v[OPT_MLP] && cli_int("train", "--mlp", v[OPT_MLP], 1, 65536, &o->mlp)) ||
        (v[OPT_PATCH] && cli_int("train", "--patch", v[OPT_PATCH], 1, 1024, &o->patch)) ||
        (v[OPT_SIZE] && cli_int("train", "--image-size", v[OPT_SIZE], 1, 8192, &o->size)) ||
        parse_float("--lr", v[OPT_LR], 0, 10, &o->lr) ||
        parse_float("--min-lr", v[OPT_MIN_LR], 0, 10, &o->min_lr) ||
        parse_float("--wd", v[OPT_WD], 0, 10, &o->wd) ||
        parse_float("--smoothing", v[OPT_SMOOTHING], 0, 1, &o->smoothing) ||
        parse_float("--clip", v[OPT_CLIP], 0, 1e9, &o->clip) ||
        parse_float("--min-scale", v[OPT_MIN_SCALE], 0.001, 1, &o->min_scale))
        return -1;
    if (!v[OPT_DATA] || !v[OPT_OUTPUT] || args->num_positional) {
        fprintf(stderr, "vit train: needs --data SRC and -o OUT.safetensors, and no other "
                        "arguments (see 'vit train -h')\n");
        return -1;
    }
    if (v[OPT_FREEZE] && !v[OPT_INIT] && !v[OPT_RESUME]) {
        fprintf(stderr, "vit train: --freeze-backbone needs --init MODEL\n");
        return -1;
    }
    return 0;
}

/* The architecture is the state's: an option asking for another one would
 * be silently ignored, so it is refused, naming it. */
static int check_resume_arch(const char *const *v, const vit_config *wanted,
                             const vit_config *config, const char *path) {
    const int by_arch = v[OPT_ARCH] && strcmp(v[OPT_ARCH], "custom") != 0;
    char arch_option[64];
    snprintf(arch_option, sizeof arch_option, "--arch %s", v[OPT_ARCH] ? v[OPT_ARCH] : "");
    const struct {
        const char *option, *what;
        int given, asked, has;
    } arch[] = {
        {v[OPT_DIM] ? "--dim" : arch_option, "hidden size", v[OPT_DIM] || by_arch,
         wanted->hidden_size, config->hidden_size},
        {v[OPT_DEPTH] ? "--depth" : arch_option, "layers", v[OPT_DEPTH] || by_arch,
         wanted->num_layers, config->num_layers},
        {v[OPT_HEADS] ? "--heads" : arch_option, "heads", v[OPT_HEADS] || by_arch,
         wanted->num_heads, config->num_heads},
        {v[OPT_MLP] ? "--mlp" : arch_option, "MLP size", v[OPT_MLP] || by_arch,
         wanted->mlp_size, config->mlp_size},
        {"--patch", "patch size", v[OPT_PATCH] != NULL, wanted->patch_size, config->patch_size},
        {"--image-size", "image size", v[OPT_SIZE] != NULL, wanted->image_size, config->image_size},
    };
    for (size_t i = 0; i < sizeof arch / sizeof *arch; i++)
        if (arch[i].given && arch[i].asked != arch[i].has) {
            fprintf(stderr, "vit train: --resume: %s asks for %s %d, but the state in %s has "
                            "%s %d (a resumed run keeps its architecture)\n",
                    arch[i].option, arch[i].what, arch[i].asked, path, arch[i].what, arch[i].has);
            return -1;
        }
    return 0;
}

/* Options not given continue as saved; given ones that differ are changes,
 * appended to changes. init_path may come to point into saved. */
static int continue_options(const char *const *v, train_opts *o, const vit_trainer_hyper *saved,
                            size_t images, const char *path, char *changes, size_t size,
                            size_t *n) {
#define CHANGES(...) (*n += (size_t)snprintf(changes + *n, *n < size ? size - *n : 0, __VA_ARGS__))
#define KEEP_OR_CHANGE(opt, var, name, fmt, cast)                                        \
    do {                                                                                 \
        if (!v[opt]) var = saved->name;                                                  \
        else if (var != saved->name)                                                     \
            CHANGES(", " #name " changed from " fmt " to " fmt, (cast)saved->name, (cast)var); \
    } while (0)
    KEEP_OR_CHANGE(OPT_LR, o->lr, lr, "%g", double);
    KEEP_OR_CHANGE(OPT_MIN_LR, o->min_lr, min_lr, "%g", double);
    KEEP_OR_CHANGE(OPT_WD, o->wd, wd, "%g", double);
    KEEP_OR_CHANGE(OPT_WARMUP, o->warmup, warmup, "%ld", long);
    KEEP_OR_CHANGE(OPT_SMOOTHING, o->smoothing, smoothing, "%g", double);
    KEEP_OR_CHANGE(OPT_CLIP, o->clip, clip, "%g", double);
    KEEP_OR_CHANGE(OPT_SHIFT, o->shift, shift, "%ld", long);
    KEEP_OR_CHANGE(OPT_MIN_SCALE, o->min_scale, min_scale, "%g", double);
#undef KEEP_OR_CHANGE
    if (!v[OPT_NO_FLIP]) o->flip = saved->flip;
    else if (saved->flip) CHANGES(", flips turned off");
    if (!v[OPT_BATCH]) o->batch = saved->batch;
    /* A fine-tuned run goes on from its --init model's preprocessing (the
     * weights come from the state). */
    if (!o->init_path && saved->init[0]) {
        o->init_path = saved->init;
        CHANGES(", fine-tuning from %s (--init, as saved)", o->init_path);
    } else if (o->init_path && strcmp(o->init_path, saved->init) != 0)
        CHANGES(", --init changed from %s to %s", saved->init[0] ? saved->init : "none",
                o->init_path);
    if (!o->freeze) o->freeze = saved->freeze;
    else if (!saved->freeze) CHANGES(", the backbone is frozen from now on");
    const long clamped = (size_t)o->batch > images ? (long)images : o->batch;
    if (clamped != saved->batch) {
        /* The schedule counts steps, and the state's step count only means
         * the same point of it with the same batch size. */
        fprintf(stderr, "vit train: --resume: -b %ld, but the state in %s was trained with "
                        "batch %ld (its step count only fits that batch size)\n",
                clamped, path, saved->batch);
        return -1;
    }
    if (saved->images != images)
        CHANGES(", training images changed from %zu to %zu", saved->images, images);
#undef CHANGES
    return 0;
}

/* --resume: reads the state (left open in *state), takes its architecture,
 * seed, epoch and step, and the options not given; says what changed. */
static int resume(const char *const *v, train_opts *o, const vit_trainer_source *train,
                  vit_config *config, vit_trainer *t, long *start_epoch,
                  vit_trainer_state_info *info, weights_file **state) {
    char path[4200];
    const size_t len = strlen(v[OPT_RESUME]);
    snprintf(path, sizeof path, "%s%s", v[OPT_RESUME],
             len > 6 && strcmp(v[OPT_RESUME] + len - 6, ".state") == 0 ? "" : ".state");
    base_error err;
    if (vit_trainer_state_read(path, info, state, &err) != BASE_OK) {
        fprintf(stderr, "vit train: --resume: %s\n", err.message);
        return -1;
    }
    const vit_config wanted = *config;
    *config = info->config;
    *start_epoch = info->epoch;
    t->step = info->step;
    if (config->num_classes != train->num_classes) {
        fprintf(stderr, "vit train: --resume: the state has %d classes, the data %d\n",
                config->num_classes, train->num_classes);
        return -1;
    }
    if (check_resume_arch(v, &wanted, config, path) != 0) return -1;
    if (v[OPT_SEED] && (uint64_t)o->seed != info->seed) {
        fprintf(stderr, "vit train: --resume: --seed %ld, but the state in %s was trained with "
                        "seed %" PRIu64 " (the seed fixes the order and augmentation)\n",
                o->seed, path, info->seed);
        return -1;
    }
    t->seed = info->seed;
    if (!v[OPT_EPOCHS] && info->epochs > 0) o->epochs = info->epochs;
    if (o->epochs <= *start_epoch) {
        char given[64];
        snprintf(given, sizeof given,
                 v[OPT_EPOCHS] ? "got %ld" : "the state's own %ld when not given", o->epochs);
        fprintf(stderr, "vit train: --resume: the state in %s has already trained %ld epoch%s; "
                        "--epochs must be larger (%s)\n", path, *start_epoch,
                *start_epoch == 1 ? "" : "s", given);
        return -1;
    }
    t->epochs = o->epochs;
    char changes[2048] = "";
    size_t n = 0;
    if (info->epochs > 0 && o->epochs != info->epochs)
        n += (size_t)snprintf(changes, sizeof changes, ", epochs changed from %ld to %ld",
                              info->epochs, o->epochs);
    if (info->have_hyper &&
        continue_options(v, o, &info->h, train->count, path, changes, sizeof changes, &n) != 0)
        return -1;
    fprintf(stderr, "resuming %s after epoch %ld of %ld (step %ld)%s\n", path, *start_epoch,
            o->epochs, t->step, changes);
    return 0;
}

/* With --init: the resumed architecture must be the --init model's (only
 * its preprocessing is taken); a new run takes its architecture. */
static int adopt_init(const vit_model *init, int resumed, int mnist, const char *init_path,
                      vit_config *config) {
    const vit_config *ic = vit_model_config(init);
    if (resumed) {
        if (ic->hidden_size != config->hidden_size || ic->num_layers != config->num_layers ||
            ic->num_heads != config->num_heads || ic->mlp_size != config->mlp_size ||
            ic->patch_size != config->patch_size || ic->image_size != config->image_size) {
            fprintf(stderr, "vit train: --resume: --init %s is ViT D %d, %d layers, %d heads, MLP %d, "
                            "patch %d, %dx%d, but the state has D %d, %d layers, %d heads, MLP %d, "
                            "patch %d, %dx%d\n",
                    init_path, ic->hidden_size, ic->num_layers, ic->num_heads, ic->mlp_size,
                    ic->patch_size, ic->image_size, ic->image_size, config->hidden_size,
                    config->num_layers, config->num_heads, config->mlp_size, config->patch_size,
                    config->image_size, config->image_size);
            return -1;
        }
        /* the switches, which the state's config may not spell out */
    } else {
        config->hidden_size = ic->hidden_size;
        config->num_layers = ic->num_layers;
        config->num_heads = ic->num_heads;
        config->mlp_size = ic->mlp_size;
        config->patch_size = ic->patch_size;
        config->image_size = ic->image_size;
        config->layer_norm_eps = ic->layer_norm_eps;
        if (!mnist) config->num_channels = ic->num_channels;
    }
    /* Every switch of the --init model (vit.h): trained as it runs. A
     * Hugging Face DINOv2 backbone gets that library's classifier, on
     * [class token ‖ mean of the patches]. */
    config->num_prefix_tokens = ic->num_prefix_tokens;
    config->no_class_token = ic->no_class_token;
    config->distilled = ic->distilled;
    config->num_reg_tokens = ic->num_reg_tokens;
    config->pos_embed_prefix = ic->pos_embed_prefix;
    config->no_embed_class = ic->no_embed_class;
    config->global_pool = vit_model_layout(init) == WEIGHTS_LAYOUT_HF_DINOV2
                              ? VIT_GLOBAL_POOL_TOKEN_AVG
                              : ic->global_pool;
    config->no_final_norm = ic->no_final_norm;
    config->fc_norm = ic->fc_norm;
    config->pre_norm = ic->pre_norm;
    config->act = ic->act;
    config->no_qkv_bias = ic->no_qkv_bias;
    config->qk_norm = ic->qk_norm;
    config->layer_scale = ic->layer_scale;
    /* Saved in timm's layout, the model keeps its source library's way of
     * resampling positions (transformers' DeiT: no antialiasing). */
    config->pos_embed_antialias = ic->pos_embed_antialias;
    return 0;
}

/* The model and optimiser: from the state, the --init model, or new (a
 * linear probe's state holds the head only: the backbone comes from --init
 * first, then the state). */
static int create_model(vit_trainer *t, const vit_config *config, const train_opts *o,
                        const vit_model *init, weights_file *state,
                        vit_trainer_state_info *saved) {
    base_error err;
    /* Under MPI each rank computes a slice of every batch. */
    const int ranks = cli_mpi_train_size();
    if (vit_model_create(config, &t->model, &err) != BASE_OK ||
        vit_train_create(t->model, (int)((o->batch + ranks - 1) / ranks), &t->training, &err) !=
            BASE_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        return -1;
    }
    vit_model_init(t->model, t->seed);
    const vit_adamw_params hyper = {0.9f, 0.999f, 1e-8f, (float)o->wd};
    if (vit_adamw_create(t->model, &hyper, &t->opt, &err) != BASE_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        return -1;
    }
    if (init && (!state || o->freeze) && vit_model_assign(t->model, init, 0, &err) != BASE_OK) {
        fprintf(stderr, "vit train: --init: %s\n", err.message);
        return -1;
    }
    if (o->freeze) vit_model_freeze_backbone(t->model, 1);
    if (state && vit_trainer_state_load(state, saved, t, &err) != BASE_OK) {
        fprintf(stderr, "vit train: --resume: %s\n", err.message);
        return -1;
    }
    return 0;
}

/* Where the curves go (--log, --plot), and what they need beyond the
 * trainer's history: this run's images/s per epoch, the log being
 * continued (a resumed run keeps its earlier rows' timings). */
typedef struct train_curves {
    const char *log_path, *plot_path;
    char *old_log;
    double *speeds; /* per epoch from start_epoch on */
    long start_epoch;
} train_curves;

/* One epoch's sums, as the steps add them up. */
typedef struct epoch_sums {
    double loss, seconds;
    size_t hits, seen;
    float lr;
} epoch_sums;

/* The steps of one epoch, with a progress line on stderr when speak. 0,
 * or -1 (printed; the other ranks told). */
static int run_steps(vit_trainer *t, long epoch, int speak, epoch_sums *sums) {
    const int tty = isatty(STDERR_FILENO);
    const long steps = t->steps_per_epoch;
    const double start = cli_now_seconds();
    double last_print = start;
    base_error err;
    *sums = (epoch_sums){0};
    for (long s = 0; s < steps; s++) {
        vit_trainer_step_result res;
        if (vit_trainer_step(t, epoch, s, &res, &err) != BASE_OK) {
            if (cli_mpi_train_rank() == 0) fprintf(stderr, "vit train: %s\n", err.message);
            else fprintf(stderr, "vit train: (rank %d) %s\n", cli_mpi_train_rank(), err.message);
            cli_mpi_train_abort(1); /* the other ranks may be waiting for this one */
            return -1;
        }
        cli_mpi_train_after_step(t);
        if (res.placed == 0) continue;
        sums->loss += (double)res.loss * res.placed;
        sums->hits += (size_t)res.correct;
        sums->seen += (size_t)res.placed;
        sums->lr = res.lr;
        const double now = cli_now_seconds();
        if (speak && (now - last_print >= (tty ? 0.5 : 30.0) || s + 1 == steps)) {
            last_print = now;
            char line[256];
            snprintf(line, sizeof line,
                     "epoch %ld/%ld  step %ld/%ld  loss %.4f  acc %.2f%%  lr %.2e  %.0f images/s",
                     epoch + 1, t->epochs, s + 1, steps, sums->loss / sums->seen,
                     100.0 * sums->hits / sums->seen, (double)res.lr, sums->seen / (now - start));
            if (tty) cli_progress_line("%s", line);
            else fprintf(stderr, "%s\n", line);
        }
    }
    sums->seconds = cli_now_seconds() - start;
    if (speak && tty) cli_progress_clear();
    return 0;
}

/* The epoch's line on stderr. */
static void say_epoch(const vit_trainer *t, const vit_trainer_epoch *e, const epoch_sums *sums,
                      double gradient_sums) {
    fprintf(stderr, "epoch %ld/%ld: loss %.4f, train top-1 %.2f%%", e->epoch, t->epochs,
            e->train_loss, 100.0 * e->train_top1);
    if (isfinite(e->eval_top1)) fprintf(stderr, ", val top-1 %.2f%%", 100.0 * e->eval_top1);
    fprintf(stderr, ", %.1f s (%.0f images/s", sums->seconds, sums->seen / sums->seconds);
    if (cli_mpi_train_size() > 1) fprintf(stderr, "; %.2f s in gradient sums", gradient_sums);
    fprintf(stderr, ")\n");
}

/* After an epoch's steps: validation, its record, the checkpoint, the
 * curves. Rank 0 alone speaks and writes. 0, or -1 (printed). */
static int end_epoch(vit_trainer *t, long epoch, const epoch_sums *sums, double gradient_sums,
                     int speak, train_curves *curves) {
    vit_trainer_scores val;
    const int validated = vit_trainer_validate(t, &val) == 0;
    t->epoch_done = epoch + 1;
    if (cli_mpi_train_rank() != 0) return 0;
    const vit_trainer_epoch e = {
        .epoch = epoch + 1, .lr = sums->lr,
        .train_loss = sums->seen ? sums->loss / sums->seen : 0.0,
        .train_top1 = sums->seen ? (double)sums->hits / sums->seen : 0.0,
        .eval_loss = validated ? val.loss : NAN, .eval_top1 = validated ? val.top1 : NAN,
        .eval_top5 = validated ? val.top5 : NAN};
    if (speak) say_epoch(t, &e, sums, gradient_sums);
    curves->speeds[epoch - curves->start_epoch] = sums->seen / sums->seconds;
    base_error err;
    if (vit_trainer_record_epoch(t, &e, &err) != BASE_OK ||
        vit_trainer_save(t, validated ? val.top1 : -1.0, &err) != BASE_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        cli_mpi_train_abort(1);
        return -1;
    }
    if ((curves->log_path &&
         cli_train_write_log(curves->log_path, t->history, t->history_count, curves->speeds,
                             curves->start_epoch, curves->old_log) != 0) ||
        (curves->plot_path && cli_train_plot(curves->plot_path, t->history, t->history_count) != 0)) {
        cli_mpi_train_abort(1);
        return -1;
    }
    return 0;
}

/* The epochs from start_epoch on, with progress on stderr (unless quiet),
 * a checkpoint and the curves after each. */
static int run_epochs(vit_trainer *t, train_curves *curves, int quiet) {
    const int speak = cli_mpi_train_rank() == 0 && !quiet;
    const double run_start = cli_now_seconds();
    for (long epoch = curves->start_epoch; epoch < t->epochs; epoch++) {
        vit_trainer_epoch_begin(t, epoch);
        const double sums_before = cli_mpi_train_sum_seconds();
        epoch_sums sums;
        if (run_steps(t, epoch, speak, &sums) != 0 ||
            end_epoch(t, epoch, &sums, cli_mpi_train_sum_seconds() - sums_before, speak, curves) != 0)
            return -1;
    }
    if (speak)
        printf("wrote %s (%zu parameters) in %.1f s\n", t->out_path, vit_model_param_count(t->model),
               cli_now_seconds() - run_start);
    return 0;
}

/* Everything one run holds, released by run_free. */
typedef struct train_run {
    const char *const *v;
    train_opts o;
    vit_trainer_source train, val;
    vit_trainer t;
    vit_trainer_state_info saved; /* --resume; o.init_path may point into it */
    vit_config config;
    long start_epoch;
    vit_model *init;
    weights_file *state;
    cli_protected protect;
    cli_lock lock;
    train_curves curves;
    size_t failed_images; /* warnings of images that could not be read: exit 2 */
} train_run;

static void run_free(train_run *r) {
    cli_unlock_output(&r->lock);
    cli_protected_free(&r->protect);
    vit_trainer_free(&r->t);
    vit_trainer_source_free(&r->train);
    vit_trainer_source_free(&r->val);
    vit_train_free(r->t.training);
    vit_model_free(r->t.model);
    vit_adamw_free(r->t.opt);
    free(r->t.labels);
    vit_model_free(r->init);
    weights_close(r->state);
    free(r->saved.history);
    free(r->curves.old_log);
    free(r->curves.speeds);
}

/* Whether two outputs are one file: the same path, or (existing) the same
 * inode. */
static int same_output(const char *a, const char *b) {
    struct stat sa, sb;
    if (strcmp(a, b) == 0) return 1;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* --log and --plot: files of their own, harming none of the run's inputs;
 * a resumed log is read back (its earlier rows keep their timings). */
static int open_curves(train_run *r) {
    train_curves *c = &r->curves;
    const char *paths[2] = {c->log_path, c->plot_path}, *options[2] = {"--log", "--plot"};
    for (int i = 0; i < 2; i++) {
        if (!paths[i]) continue;
        const char *clash = same_output(paths[i], r->t.out_path)     ? "-o"
                            : same_output(paths[i], r->t.state_path) ? "-o's .state"
                            : i == 1 && paths[0] && same_output(paths[1], paths[0]) ? "--log"
                                                                                      : NULL;
        if (clash) {
            fprintf(stderr, "vit train: %s %s is the file %s names\n", options[i], paths[i], clash);
            return -1;
        }
        if (cli_check_output("train", &r->protect, paths[i]) != 0) return -1;
    }
    c->start_epoch = r->start_epoch;
    if (!(c->speeds = calloc((size_t)(r->t.epochs > 0 ? r->t.epochs : 1), sizeof *c->speeds))) {
        fprintf(stderr, "vit train: out of memory\n");
        return -1;
    }
    base_error err;
    if (c->log_path && r->state &&
        base_read_text_file(c->log_path, (size_t)1 << 26, &c->old_log, NULL, &err) != BASE_OK)
        c->old_log = NULL; /* none to continue: earlier rows get no timing */
    return 0;
}

/* The training data, its class names, and the architecture: a state to
 * resume, a pretrained backbone, or new from the options. */
static int open_run(train_run *r) {
    const char *const *v = r->v;
    train_opts *o = &r->o;
    vit_trainer_source *train = &r->train;
    if (source_open(v[OPT_DATA], 1, NULL, 0, train) != 0) return -1;
    if (o->limit && (size_t)o->limit < train->count) train->count = (size_t)o->limit;
    r->t.num_labels = train->num_classes;
    if (!(r->t.labels = calloc((size_t)r->t.num_labels + 1, sizeof *r->t.labels))) return -1;
    for (int c = 0; c < r->t.num_labels; c++)
        r->t.labels[c] = train->mnist ? (char *)data_fashion_mnist_label(c) : train->class_names[c];
    r->config = (vit_config){.hidden_size = (int)o->dim, .num_layers = (int)o->depth,
                             .num_heads = (int)o->heads, .mlp_size = (int)o->mlp,
                             .patch_size = (int)(o->patch ? o->patch : train->mnist ? 4 : 8),
                             .image_size = (int)(o->size ? o->size : train->mnist ? 28 : 64),
                             .num_channels = train->mnist ? 1 : 3, .layer_norm_eps = 1e-6f,
                             .num_classes = train->num_classes, .num_prefix_tokens = 1,
                             .pos_embed_antialias = 1 /* timm's, the layout it is saved in */};
    if (v[OPT_RESUME] && resume(v, o, train, &r->config, &r->t, &r->start_epoch, &r->saved,
                                &r->state) != 0)
        return -1;
    if (o->freeze && !o->init_path) {
        fprintf(stderr, "vit train: --freeze-backbone needs --init MODEL\n");
        return -1;
    }
    if (o->init_path && !(r->init = cli_load_model("train", o->init_path, NULL, NULL,
                                                    r->v[OPT_ALLOW_UNUSED] != NULL)))
        return -1;
    if (r->init &&
        adopt_init(r->init, r->state != NULL, train->mnist, o->init_path, &r->config) != 0)
        return -1;
    /* Before anything is written: OUT and OUT.state must not be the --init
     * model's files or training images (OUT.state may be the --resume
     * state: continuing it is the point), and no other vit process may be
     * training into OUT. */
    if (cli_protect_run("train", &r->protect, r->init, NULL,
                        (const char *const *)train->files.paths,
                        train->mnist ? 0 : train->files.count) != 0 ||
        cli_check_output("train", &r->protect, r->t.out_path) != 0 ||
        cli_check_output("train", &r->protect, r->t.state_path) != 0 ||
        (cli_mpi_train_rank() == 0 && cli_lock_output("train", r->t.out_path, 0, &r->lock) != 0) ||
        open_curves(r) != 0)
        return -1;
    if (r->config.hidden_size % r->config.num_heads) {
        fprintf(stderr, "vit train: %d heads do not divide hidden size %d\n",
                r->config.num_heads, r->config.hidden_size);
        return -1;
    }
    return 0;
}

/* The model, its input, the validation data and the trainer's buffers
 * (for a linear probe, every image's features). */
static int prepare_run(train_run *r) {
    const char *const *v = r->v;
    train_opts *o = &r->o;
    vit_trainer *t = &r->t;
    const vit_trainer_source *train = &r->train;
    if ((size_t)o->batch > train->count) o->batch = (long)train->count;
    t->h = (vit_trainer_hyper){.batch = o->batch, .warmup = o->warmup, .shift = o->shift,
                               .flip = o->flip, .lr = o->lr, .min_lr = o->min_lr, .wd = o->wd,
                               .smoothing = o->smoothing, .clip = o->clip,
                               .min_scale = o->min_scale, .images = train->count,
                               .freeze = o->freeze};
    snprintf(t->h.init, sizeof t->h.init, "%s", o->init_path ? o->init_path : "");
    t->parallel = cli_mpi_train_parallel();
    if (create_model(t, &r->config, o, r->init, r->state, &r->saved) != 0) return -1;
    /* Preprocessing the saved model states (and validation uses). */
    t->in = (vit_trainer_input){.size = r->config.image_size, .channels = r->config.num_channels,
                                .augment = 1, .flip = (int)o->flip, .shift = (int)o->shift,
                                .min_scale = o->min_scale, .seed = t->seed, .warn = warn_stderr,
                                .warn_ctx = &r->failed_images};
    vit_trainer_default_preprocess(r->init, train->mnist, r->config.image_size, &t->in.eval);
    t->pre = t->in.eval;
    if (v[OPT_VAL] && source_open(v[OPT_VAL], 0, train->mnist ? NULL : train->class_names,
                                  train->num_classes, &r->val) != 0)
        return -1;
    if (v[OPT_VAL] && r->val.mnist != train->mnist) {
        fprintf(stderr, "vit train: --val must be the same kind of source as --data\n");
        return -1;
    }
    const double t0 = cli_now_seconds();
    base_error err;
    if (vit_trainer_prepare(t, train, &r->val, &err) != BASE_OK) {
        fprintf(stderr, "vit train: %s\n", err.message);
        return -1;
    }
    if (t->features && !r->v[OPT_QUIET])
        fprintf(stderr, "features of %zu images in %.1f s\n", train->count + r->val.count,
                cli_now_seconds() - t0);
    return 0;
}

/* Under MPI with -t not given: the host's cores shared by its ranks. */
static int default_threads(long threads) {
    if (threads || cli_mpi_train_size() <= 1) return (int)threads;
    const int share = omp_get_num_procs() / cli_mpi_train_local_size();
    return share > 1 ? share : 1;
}

/* Options, sources, model and trainer; then the epochs. Under MPI every
 * rank sets up the same run (ranks other than 0 quietly: they would say
 * the same), they agree that all are ready and start alike, and train. */
static int train_main(int argc, char **argv) {
    cli_mpi_train_quiet_begin();
    cli_args args;
    int parsed = cli_parse("train", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0) {
        cli_mpi_train_quiet_end(0);
        return cli_parse_exit(parsed);
    }
    int exit_code = CLI_EXIT_FATAL, ready = 0, root_ready;
    train_run r = {.v = args.values};
    if (parse_options(r.v, &args, &r.o) == 0) {
        cli_set_threads(default_threads(r.o.threads));
        r.t.out_path = r.v[OPT_OUTPUT];
        r.t.epochs = r.o.epochs;
        r.t.seed = (uint64_t)r.o.seed;
        r.curves.log_path = r.v[OPT_LOG];
        r.curves.plot_path = r.v[OPT_PLOT];
        snprintf(r.t.state_path, sizeof r.t.state_path, "%s.state", r.t.out_path);
        ready = open_run(&r) == 0 && prepare_run(&r) == 0;
    }
    const int all_ready = cli_mpi_train_agree(ready, &root_ready);
    /* A rank that failed alone says why; when rank 0 failed too, it has. */
    cli_mpi_train_quiet_end(!ready && root_ready);
    if (!all_ready || cli_mpi_train_check_same(&r.t) != 0) goto done;
    const vit_config *c = &r.config;
    char workers[64];
    if (cli_mpi_train_size() > 1)
        snprintf(workers, sizeof workers, "%d processes x %d threads", cli_mpi_train_size(),
                 omp_get_max_threads());
    else
        snprintf(workers, sizeof workers, "%d threads", omp_get_max_threads());
    if (cli_mpi_train_rank() == 0 && !r.v[OPT_QUIET])
        fprintf(stderr, "training %s: %zu images, %d classes; ViT D %d, %d layers, %d heads, "
                        "MLP %d, patch %d, %dx%d x%d; %zu parameters; %ld epoch%s of %ld step%s "
                        "(batch %ld), %s\n",
                r.v[OPT_DATA], r.train.count, c->num_classes, c->hidden_size, c->num_layers,
                c->num_heads, c->mlp_size, c->patch_size, c->image_size, c->image_size,
                c->num_channels, vit_model_param_count(r.t.model), r.t.epochs,
                r.t.epochs == 1 ? "" : "s", r.t.steps_per_epoch,
                r.t.steps_per_epoch == 1 ? "" : "s", r.o.batch, workers);
    if (run_epochs(&r.t, &r.curves, r.v[OPT_QUIET] != NULL) != 0) goto done;
    exit_code = r.train.unreadable.count || r.val.unreadable.count || r.failed_images
                    ? CLI_EXIT_SOME_FAILED
                    : CLI_EXIT_OK;
done:
    run_free(&r);
    free(args.positional);
    return exit_code;
}

int cli_train(int argc, char **argv) {
    if (cli_mpi_train_start() != 0) return CLI_EXIT_FATAL;
    const int status = train_main(argc, argv);
    cli_mpi_train_finish();
    return status;
}
