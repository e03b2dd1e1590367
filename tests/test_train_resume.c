/* vit train --resume against the options given with it: the architecture,
 * seed and batch size are the state's (asking for others is refused, naming
 * the option and both values), --epochs must go beyond what is done, other
 * options continue as saved unless given, and changes are said. Also the
 * reason a configuration cannot be trained. */
#include "test_util.h"

TEMP_DIR_SUITE(train_resume);

#define SMALL "--arch custom --dim 16 --depth 1 --heads 2 --mlp 32 --patch 8 --image-size 32 -t 1"

/* dir/data/{apple,bear}/ with two photos each, trained 2 epochs into
 * dir/m.safetensors (+ .state) with --lr 3e-3. */
static void trained_run(void) {
    shell("mkdir -p %s/data/apple %s/data/bear && for i in 1 2; do cp %s %s/data/apple/a$i.png; "
          "cp %s %s/data/bear/b$i.png; done",
          dir, dir, VITC_SOURCE_DIR "/tests/fixtures/real/apple.png", dir,
          VITC_SOURCE_DIR "/tests/fixtures/real/polars.png", dir);
    char args[1024];
    snprintf(args, sizeof args, "train --data %s/data -o %s/m.safetensors " SMALL
             " --epochs 2 -b 2 --seed 5 --lr 3e-3", dir, dir);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
}

/* Resumes dir/m into dir/OUT with extra options. */
static run_result *resume(const char *out, const char *extra) {
    char args[1024];
    snprintf(args, sizeof args, "train --data %s/data -o %s/%s --resume %s/m.safetensors %s", dir,
             dir, out, dir, extra);
    return run(args);
}

Test(train_resume, other_architecture_is_refused_naming_option_and_values) {
    trained_run();
    const struct { const char *extra, *option, *saved, *given; } cases[] = {
        {"--dim 128 --epochs 3", "--dim", "hidden size 16", "hidden size 128"},
        {"--depth 3 --epochs 3", "--depth", "layers 1", "layers 3"},
        {"--heads 4 --epochs 3", "--heads", "heads 2", "heads 4"},
        {"--mlp 64 --epochs 3", "--mlp", "MLP size 32", "MLP size 64"},
        {"--patch 4 --epochs 3", "--patch", "patch size 8", "patch size 4"},
        {"--image-size 64 --epochs 3", "--image-size", "image size 32", "image size 64"},
        {"--arch small --epochs 3", "--arch small", "hidden size 16", "hidden size 128"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        run_result *r = resume("x.safetensors", cases[i].extra);
        cr_expect_eq(r->status, 1, "%s: %s", cases[i].extra, r->err);
        cr_expect_eq(count_lines(r->err), 1, "%s: %s", cases[i].extra, r->err);
        cr_expect(strstr(r->err, cases[i].option) && strstr(r->err, cases[i].saved) &&
                      strstr(r->err, cases[i].given),
                  "%s: %s", cases[i].extra, r->err);
    }
    /* Giving the saved values again is fine. */
    run_result *r = resume("same.safetensors", SMALL " --epochs 3");
    cr_expect_eq(r->status, 0, "%s", r->err);
}

Test(train_resume, epochs_must_go_beyond_those_done) {
    trained_run();
    run_result *r = resume("x.safetensors", "--epochs 1");
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "has already trained 2 epochs; --epochs must be larger"), "%s", r->err);
    r = resume("x.safetensors", "--epochs 2");
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "already trained 2 epochs"), "%s", r->err);
    /* Without --epochs: the state's own 2, all done. */
    r = resume("x.safetensors", "");
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "already trained 2 epochs"), "%s", r->err);
    char path[256];
    snprintf(path, sizeof path, "%s/x.safetensors", dir);
    cr_expect(access(path, F_OK) != 0, "a refused resume wrote a model");
}

Test(train_resume, seed_and_batch_are_the_states) {
    trained_run();
    run_result *r = resume("x.safetensors", "--epochs 3 --seed 6");
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "--seed 6") && strstr(r->err, "seed 5"), "%s", r->err);
    r = resume("x.safetensors", "--epochs 3 -b 1");
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "-b 1") && strstr(r->err, "batch 2"), "%s", r->err);
}

/* The learning rate printed with epoch 3's step, from "lr X" in the
 * progress line. */
static void epoch3_lr(const char *err, char *lr, size_t size) {
    const char *line = strstr(err, "epoch 3/3  step");
    cr_assert(line, "%s", err);
    const char *at = strstr(line, " lr ");
    cr_assert(at, "%s", err);
    snprintf(lr, size, "%.8s", at + 4);
}

Test(train_resume, options_not_given_continue_as_saved_and_changes_are_said) {
    trained_run();
    char saved_lr[16], same_lr[16], new_lr[16];
    run_result *r = resume("a.safetensors", "--epochs 3");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "resuming ") && strstr(r->err, "after epoch 2 of 3"), "%s", r->err);
    cr_expect(strstr(r->err, "epochs changed from 2 to 3"), "%s", r->err);
    cr_expect(!strstr(r->err, "lr changed"), "%s", r->err);
    epoch3_lr(r->err, saved_lr, sizeof saved_lr);

    r = resume("b.safetensors", "--epochs 3 --lr 3e-3");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(!strstr(r->err, "lr changed"), "%s", r->err);
    epoch3_lr(r->err, same_lr, sizeof same_lr);
    cr_expect_str_eq(saved_lr, same_lr, "the saved --lr 3e-3 was not used without --lr");

    r = resume("c.safetensors", "--epochs 3 --lr 1e-3 --wd 0.05");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "lr changed from 0.003 to 0.001"), "%s", r->err);
    cr_expect(!strstr(r->err, "wd changed"), "%s", r->err);
    epoch3_lr(r->err, new_lr, sizeof new_lr);
    cr_expect_str_neq(saved_lr, new_lr);
}

Test(train_resume, untrainable_configuration_says_why) {
    trained_run();
    char args[1024];
    snprintf(args, sizeof args, "train --data %s/data -o %s/p.safetensors --arch custom --dim 16 "
             "--depth 1 --heads 2 --mlp 32 --image-size 28 --patch 29 -t 1", dir, dir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect_eq(count_lines(r->err), 1, "%s", r->err);
    cr_expect(strstr(r->err, "image size 28 is smaller than patch size 29"), "%s", r->err);
}

/* A linear probe (--init --freeze-backbone) resumed without repeating them
 * goes on as one, from its --init model's preprocessing; an --init of
 * another architecture is refused. */
Test(train_resume, a_fine_tuned_run_resumes_as_one) {
    trained_run();
    char args[1024];
    snprintf(args, sizeof args, "train --data %s/data -o %s/p.safetensors --init %s/m.safetensors "
             "--freeze-backbone --epochs 2 -b 2 -t 1", dir, dir, dir);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    snprintf(args, sizeof args, "train --data %s/data -o %s/p2.safetensors --resume %s/p.safetensors "
             "--epochs 3 -t 1", dir, dir, dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "fine-tuning from ") && strstr(r->err, "/m.safetensors (--init, as saved)"),
              "%s", r->err);
    cr_expect(strstr(r->err, "features of 4 images"), "not resumed as a linear probe: %s", r->err);
    /* The probe's state holds the head and its moments, not the frozen
     * backbone (which is --init's): head.weight, head.bias, x3. */
    char state[512];
    snprintf(state, sizeof state, "%s/p.safetensors.state", dir);
    weights_file *f = NULL;
    base_error err;
    cr_assert_eq(weights_open(state, &f, &err), BASE_OK, "%s", err.message);
    cr_expect_eq(weights_count(f), 6, "%zu tensors in a linear probe's state", weights_count(f));
    cr_expect_not_null(weights_find(f, "adamw.v.head.weight"));
    weights_close(f);
    /* An --init file that no longer holds the backbone the probe was
     * trained on is refused, not silently mixed. */
    snprintf(args, sizeof args, "train --data %s/data -o %s/other.safetensors " SMALL
             " --epochs 1 -b 2 --seed 6", dir, dir);
    cr_assert_eq(run(args)->status, 0);
    shell("cp %s/m.safetensors %s/m.keep && cp %s/other.safetensors %s/m.safetensors", dir, dir,
          dir, dir);
    snprintf(args, sizeof args, "train --data %s/data -o %s/p4.safetensors --resume %s/p.safetensors "
             "--epochs 3 -t 1", dir, dir, dir);
    r = run(args);
    shell("mv %s/m.keep %s/m.safetensors", dir, dir);
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "frozen backbone is not the one"), "%s", r->err);

    snprintf(args, sizeof args, "train --data %s/data -o %s/p3.safetensors --resume %s/p.safetensors "
             "--epochs 3 -t 1 --init " VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3", dir,
             dir, dir);
    r = run(args);
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "--init ") && strstr(r->err, "is ViT D 48") &&
                  strstr(r->err, "the state has D 16"),
              "%s", r->err);
}

/* A model trained from a Hugging Face ViT is saved in timm's layout but
 * keeps transformers' way of resampling positions (no antialiasing), so
 * --size gives what its source would; one trained from scratch resamples
 * as timm does. */
Test(train_resume, trained_models_keep_their_sources_resampling) {
    trained_run();
    char args[1024];
    snprintf(args, sizeof args, "train --data %s/data -o %s/hf.safetensors --init "
             VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3 --freeze-backbone --epochs 1 "
             "-b 2 -t 1", dir, dir);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    snprintf(args, sizeof args, "info -m %s/hf.safetensors", dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "position embeddings resampled bicubic (transformers)"), "%s", r->out);
    snprintf(args, sizeof args, "info -m %s/m.safetensors", dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "position embeddings resampled bicubic with antialiasing"), "%s", r->out);
}

/* --log writes timm's summary.csv columns, a row per epoch, and keeps the
 * earlier rows (their timings too) across --resume; --plot draws a PNG. */
Test(train_resume, log_and_plot_continue_across_resume) {
    trained_run();
    char args[1024], path[512];
    snprintf(args, sizeof args, "train --data %s/data --val %s/data -o %s/l.safetensors " SMALL
             " --epochs 2 -b 2 --seed 5 --log %s/l.csv --plot %s/l.png", dir, dir, dir, dir, dir);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    static char first[65536], after[65536];
    snprintf(path, sizeof path, "%s/l.csv", dir);
    slurp(path, first, sizeof first);
    const char *header = "epoch,train_loss,eval_loss,eval_top1,eval_top5,lr,images_per_s,"
                         "train_top1\n1,";
    cr_expect(strncmp(first, header, strlen(header)) == 0, "%s", first);
    cr_expect_eq(count_lines(first), 3, "%s", first);
    snprintf(path, sizeof path, "%s/l.png", dir);
    data_image png;
    base_error err;
    cr_expect(data_image_load(path, &png, &err) == BASE_OK, "--plot: %s", err.message);
    data_image_free(&png);
    snprintf(args, sizeof args, "train --data %s/data --val %s/data -o %s/l.safetensors --resume "
             "%s/l.safetensors --epochs 3 --log %s/l.csv", dir, dir, dir, dir, dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    snprintf(path, sizeof path, "%s/l.csv", dir);
    slurp(path, after, sizeof after);
    cr_expect_eq(count_lines(after), 4, "%s", after);
    cr_expect(strncmp(after, first, strlen(first)) == 0, "the first epochs' rows changed:\n%s\n%s",
              first, after);
    cr_expect(strstr(after, "\n3,") != NULL, "%s", after);
    /* A log may not be the model it logs. */
    snprintf(args, sizeof args, "train --data %s/data -o %s/x.safetensors " SMALL
             " --epochs 1 --log %s/x.safetensors", dir, dir, dir);
    r = run(args);
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "--log") != NULL, "%s", r->err);
}
