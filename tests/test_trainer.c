/* The trainer library without the program: an ImageFolder made in a temp
 * dir, a few steps, a checkpoint resumed giving exactly the uninterrupted
 * run, a linear probe leaving the backbone alone, and sources that cannot
 * be opened. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "vit_trainer.h"

TEMP_DIR_SUITE(trainer);

/* dir/data/{apple,bear}/ with two photos each. */
static void make_folder(void) {
    shell("mkdir -p %s/data/apple %s/data/bear && for i in 1 2; do cp %s %s/data/apple/a$i.png; "
          "cp %s %s/data/bear/b$i.png; done",
          dir, dir, VITC_SOURCE_DIR "/tests/fixtures/real/apple.png", dir,
          VITC_SOURCE_DIR "/tests/fixtures/real/polars.png", dir);
}

static void open_folder(vit_trainer_source *s) {
    char path[256];
    snprintf(path, sizeof path, "%s/data", dir);
    base_error err;
    cr_assert_eq(vit_trainer_source_open(path, 1, NULL, 0, s, &err), BASE_OK, "%s", err.message);
    cr_assert_eq(s->count, 4);
    cr_assert_eq(s->num_classes, 2);
    cr_assert_str_eq(s->class_names[0], "apple");
    cr_assert_eq(vit_trainer_source_label(s, 3), 1);
}

/* A tiny model (D 16, one layer) training on train, batch 2, 3 epochs,
 * checkpointing into dir/NAME.safetensors. */
static void make_trainer(vit_trainer *t, const vit_trainer_source *train, const char *name,
                         int freeze) {
    static char out[4][256];
    static int next;
    char *path = out[next++ % 4];
    snprintf(path, sizeof out[0], "%s/%s.safetensors", dir, name);
    memset(t, 0, sizeof *t);
    const vit_config config = {.hidden_size = 16, .num_layers = 1, .num_heads = 2, .mlp_size = 32,
                               .patch_size = 8, .image_size = 32, .num_channels = 3,
                               .num_classes = 2, .layer_norm_eps = 1e-6f,
                               .num_prefix_tokens = 1};
    base_error err;
    t->out_path = path;
    snprintf(t->state_path, sizeof t->state_path, "%s.state", path);
    t->labels = train->class_names;
    t->num_labels = train->num_classes;
    t->epochs = 3;
    t->seed = 5;
    t->h = (vit_trainer_hyper){.batch = 2, .warmup = 1, .flip = 1, .freeze = freeze, .lr = 3e-3,
                               .min_lr = 1e-5, .wd = 0.05, .smoothing = 0.1, .clip = 1.0,
                               .min_scale = 0.08, .images = train->count};
    cr_assert_eq(vit_model_create(&config, &t->model, &err), BASE_OK, "%s", err.message);
    cr_assert_eq(vit_train_create(t->model, 2, &t->training, &err), BASE_OK, "%s", err.message);
    vit_model_init(t->model, t->seed);
    const vit_adamw_params hyper = {0.9f, 0.999f, 1e-8f, 0.05f};
    cr_assert_eq(vit_adamw_create(t->model, &hyper, &t->opt, &err), BASE_OK, "%s", err.message);
    if (freeze) vit_model_freeze_backbone(t->model, 1);
    t->in = (vit_trainer_input){.size = 32, .channels = 3, .augment = 1, .flip = 1,
                                .min_scale = 0.08, .seed = t->seed};
    vit_trainer_default_preprocess(NULL, 0, 32, &t->in.eval);
    t->pre = t->in.eval;
}

/* Epochs first .. last - 1, each saved; returns the last epoch's loss sum. */
static double run_epochs(vit_trainer *t, long first, long last) {
    base_error err;
    double loss = 0.0;
    for (long e = first; e < last; e++) {
        vit_trainer_epoch_begin(t, e);
        loss = 0.0;
        for (long s = 0; s < t->steps_per_epoch; s++) {
            vit_trainer_step_result res;
            cr_assert_eq(vit_trainer_step(t, e, s, &res, &err), BASE_OK, "%s", err.message);
            cr_assert_eq(res.placed, 2);
            cr_assert(isfinite(res.loss) && res.lr > 0);
            loss += res.loss;
        }
        t->epoch_done = e + 1;
        /* The history goes into the state, so a resumed state keeps it. */
        const vit_trainer_epoch rec = {.epoch = e + 1, .train_loss = loss, .lr = 1e-3 * (e + 1),
                                       .eval_loss = NAN, .eval_top1 = NAN, .eval_top5 = NAN};
        cr_assert_eq(vit_trainer_record_epoch(t, &rec, &err), BASE_OK);
        cr_assert_eq(vit_trainer_save(t, -1.0, &err), BASE_OK, "%s", err.message);
    }
    return loss;
}

static int files_equal(const char *a, const char *b) {
    char cmd[8500];
    snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
    return system(cmd) == 0;
}

static void free_trainer(vit_trainer *t) {
    vit_trainer_free(t);
    vit_train_free(t->training);
    vit_model_free(t->model);
    vit_adamw_free(t->opt);
}

Test(trainer, steps_then_a_loadable_checkpoint) {
    make_folder();
    vit_trainer_source train;
    open_folder(&train);
    vit_trainer t;
    make_trainer(&t, &train, "m", 0);
    base_error err;
    cr_assert_eq(vit_trainer_prepare(&t, &train, NULL, &err), BASE_OK, "%s", err.message);
    cr_assert_eq(t.steps_per_epoch, 2);
    run_epochs(&t, 0, 3);
    cr_assert_eq(t.step, 6);
    cr_assert_eq(t.opt->step, 6);
    vit_trainer_scores none;
    cr_assert_lt(vit_trainer_validate(&t, &none), 0, "no validation source: -1");
    cr_assert_eq(none.images, 0);
    vit_model *m = NULL;
    cr_assert_eq(vit_model_load(t.out_path, NULL, &m, &err), BASE_OK, "%s", err.message);
    cr_assert_eq(vit_model_config(m)->num_classes, 2);
    vit_model_free(m);
    vit_trainer_state_info info;
    weights_file *f = NULL;
    cr_assert_eq(vit_trainer_state_read(t.state_path, &info, &f, &err), BASE_OK, "%s", err.message);
    cr_assert_eq(info.epoch, 3);
    cr_assert_eq(info.step, 6);
    cr_assert_eq(info.seed, 5);
    cr_assert_eq(info.config.hidden_size, 16);
    cr_assert_eq(info.h.batch, 2);
    cr_assert(info.have_hyper);
    weights_close(f);
    free_trainer(&t);
    vit_trainer_source_free(&train);
}

Test(trainer, resume_gives_the_uninterrupted_run) {
    make_folder();
    vit_trainer_source train;
    open_folder(&train);
    base_error err;
    vit_trainer a, b, c;
    make_trainer(&a, &train, "a", 0);
    cr_assert_eq(vit_trainer_prepare(&a, &train, NULL, &err), BASE_OK, "%s", err.message);
    run_epochs(&a, 0, 3);
    make_trainer(&b, &train, "b", 0);
    cr_assert_eq(vit_trainer_prepare(&b, &train, NULL, &err), BASE_OK, "%s", err.message);
    run_epochs(&b, 0, 1);
    /* A new trainer, like a new process, from b's state. */
    vit_trainer_state_info info;
    weights_file *f = NULL;
    cr_assert_eq(vit_trainer_state_read(b.state_path, &info, &f, &err), BASE_OK, "%s", err.message);
    make_trainer(&c, &train, "b", 0);
    c.step = info.step;
    c.epoch_done = info.epoch;
    cr_assert_eq(vit_trainer_state_load(f, &info, &c, &err), BASE_OK, "%s", err.message);
    weights_close(f);
    cr_assert_eq(vit_trainer_prepare(&c, &train, NULL, &err), BASE_OK, "%s", err.message);
    run_epochs(&c, info.epoch, 3);
    /* The files too, metadata included: nothing of the run's time or
     * command line in them. */
    cr_assert(files_equal(a.out_path, c.out_path), "the resumed model file differs");
    cr_assert(files_equal(a.state_path, c.state_path), "the resumed state file differs");
    cr_assert_eq(c.history_count, 3);
    cr_assert_eq(c.history[0].epoch, 1);
    cr_assert(isnan(c.history[2].eval_top1));
    const size_t n = vit_model_param_count(a.model);
    cr_assert_eq(memcmp(vit_model_params(a.model), vit_model_params(c.model), n * sizeof(float)), 0);
    cr_assert_eq(memcmp(a.opt->m, c.opt->m, n * sizeof(float)), 0);
    cr_assert_eq(memcmp(a.opt->v, c.opt->v, n * sizeof(float)), 0);
    cr_assert_eq(a.step, c.step);
    free_trainer(&a);
    free_trainer(&b);
    free_trainer(&c);
    vit_trainer_source_free(&train);
}

Test(trainer, linear_probe_trains_the_head_only) {
    make_folder();
    vit_trainer_source train, val;
    open_folder(&train);
    char path[256];
    snprintf(path, sizeof path, "%s/data", dir);
    base_error err;
    cr_assert_eq(vit_trainer_source_open(path, 0, train.class_names, 2, &val, &err), BASE_OK);
    vit_trainer t;
    make_trainer(&t, &train, "p", 1);
    cr_assert_eq(vit_trainer_prepare(&t, &train, &val, &err), BASE_OK, "%s", err.message);
    cr_assert_not_null(t.features);
    const size_t n = vit_model_param_count(t.model);
    float *before = malloc(n * sizeof(float));
    memcpy(before, vit_model_params(t.model), n * sizeof(float));
    run_epochs(&t, 0, 3);
    const vit_param *head = vit_model_find(t.model, "head.weight");
    cr_assert_not_null(head);
    const float *now = vit_model_params(t.model);
    for (size_t i = 0; i < vit_model_num_tensors(t.model); i++) {
        const vit_param *p = vit_model_tensor_at(t.model, i);
        const int same = memcmp(before + p->offset, now + p->offset, p->numel * sizeof(float)) == 0;
        if (strncmp(p->name, "head.", 5) == 0) cr_assert(!same, "%s did not train", p->name);
        else cr_assert(same, "%s changed in a linear probe", p->name);
    }
    vit_trainer_scores scores;
    cr_assert_eq(vit_trainer_validate(&t, &scores), 0);
    cr_assert(scores.top1 >= 0.0 && scores.top1 <= scores.top5 && scores.top5 <= 1.0, "%g %g",
              scores.top1, scores.top5);
    cr_assert(scores.images == 4 && scores.loss > 0 && isfinite(scores.loss));
    free(before);
    free_trainer(&t);
    vit_trainer_source_free(&train);
    vit_trainer_source_free(&val);
}

Test(trainer, sources_that_cannot_be_used_say_why) {
    vit_trainer_source s;
    base_error err;
    char path[256];
    snprintf(path, sizeof path, "%s/none", dir);
    cr_assert_neq(vit_trainer_source_open(path, 1, NULL, 0, &s, &err), BASE_OK);
    vit_trainer_source_free(&s);
    shell("mkdir -p %s/empty", dir);
    snprintf(path, sizeof path, "%s/empty", dir);
    cr_assert_neq(vit_trainer_source_open(path, 1, NULL, 0, &s, &err), BASE_OK);
    cr_assert(strstr(err.message, "no class folders"), "%s", err.message);
    vit_trainer_source_free(&s);
    make_folder();
    shell("mkdir -p %s/data/cat && cp %s %s/data/cat/c.png", dir,
          VITC_SOURCE_DIR "/tests/fixtures/real/apple.png", dir);
    char *names[] = {"apple", "bear"};
    snprintf(path, sizeof path, "%s/data", dir);
    cr_assert_neq(vit_trainer_source_open(path, 0, names, 2, &s, &err), BASE_OK);
    cr_assert(strstr(err.message, "cat: no such class in the training data"), "%s", err.message);
    vit_trainer_source_free(&s);
}
