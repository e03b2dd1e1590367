/* vit train from the command line: ImageFolder and Fashion-MNIST sources,
 * checkpoints that load, resume, fine-tuning, and the shipped model. */
#include "test_util.h"

#include <math.h>
#include <sys/stat.h>

TEMP_DIR_SUITE(train_cli);

/* dir/data/{apple,bear}/ with a few copies of two photos each. */
static void make_folder(void) {
    shell("mkdir -p %s/data/apple %s/data/bear && for i in 1 2 3 4; do "
          "cp %s %s/data/apple/a$i.png; cp %s %s/data/bear/b$i.png; done",
          dir, dir, VITC_SOURCE_DIR "/tests/fixtures/real/apple.png", dir,
          VITC_SOURCE_DIR "/tests/fixtures/real/polars.png", dir);
}

#define SMALL "--arch custom --dim 16 --depth 1 --heads 2 --mlp 32 --patch 8 --image-size 32 -t 1"

Test(train_cli, image_folder_trains_resumes_and_classifies) {
    make_folder();
    char args[2048];
    snprintf(args, sizeof args, "train --data %s/data --val %s/data -o %s/m.safetensors " SMALL
             " --epochs 2 -b 4 --seed 5 --lr 3e-3", dir, dir, dir);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "epoch 2/2: loss"), "%s", r->err);
    cr_expect(strstr(r->err, "val top-1"), "%s", r->err);
    struct stat st;
    char path[256];
    snprintf(path, sizeof path, "%s/m.safetensors.state", dir);
    cr_expect(stat(path, &st) == 0, "no state file");

    snprintf(args, sizeof args, "classify -m %s/m.safetensors -k 1 %s/data/apple/a1.png", dir, dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "apple") || strstr(r->out, "bear"), "%s", r->out);

    /* The labels come with the model: eval matches the folders by name. */
    snprintf(args, sizeof args, "eval -m %s/m.safetensors %s/data", dir, dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "(8)") || strstr(r->out, "/8)"), "%s", r->out);

    /* Resuming a finished run to more epochs continues from its state. */
    snprintf(args, sizeof args, "train --data %s/data -o %s/m.safetensors " SMALL
             " --epochs 3 -b 4 --resume %s/m.safetensors", dir, dir, dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "after epoch 2"), "%s", r->err);
    cr_expect(strstr(r->err, "epoch 3/3: loss") && !strstr(r->err, "epoch 1/3"), "%s", r->err);

    /* Fine-tuning: a new head on the trained backbone, alone or not. */
    snprintf(args, sizeof args, "train --data %s/data -o %s/probe.safetensors --init %s/m.safetensors "
             "--freeze-backbone --epochs 2 -b 4 -t 1", dir, dir, dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "features of 8 images"), "%s", r->err);
    snprintf(args, sizeof args, "train --data %s/data -o %s/ft.safetensors --init %s/m.safetensors "
             "--epochs 1 -b 4 -t 1", dir, dir, dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
}

/* Issue 24: an image under --data that cannot be read is named and the run
 * ends with status 2 (it ended 0); an empty class folder is refused rather
 * than becoming a class no image teaches ("10 images, 3 classes"). */
Test(train_cli, failed_images_exit_2_and_empty_classes_are_refused) {
    make_folder();
    shell("printf 'not an image' >%s/data/bear/broken.png", dir);
    char args[2048];
    snprintf(args, sizeof args, "train --data %s/data -o %s/m.safetensors " SMALL
             " --epochs 1 -b 4 --seed 5", dir, dir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 2, "%s", r->err);
    cr_expect(strstr(r->err, "broken.png"), "%s", r->err);
    cr_expect(strstr(r->err, "9 images, 2 classes"), "%s", r->err);

    shell("rm %s/data/bear/broken.png && rm -f %s/m.safetensors* && mkdir %s/data/empty", dir, dir, dir);
    r = run(args);
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(count_lines(r->err) == 1 && strstr(r->err, "data/empty: class folder holds no images"),
              "%s", r->err);
    struct stat st;
    char path[256];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    cr_expect(stat(path, &st) != 0, "a refused run wrote %s", path);
}

Test(train_cli, same_seed_same_model) {
    make_folder();
    for (int i = 0; i < 2; i++) {
        char args[1024];
        snprintf(args, sizeof args, "train --data %s/data -o %s/m%d.safetensors " SMALL
                 " --epochs 2 -b 3 --seed 9", dir, dir, i);
        run_result *r = run(args);
        cr_assert_eq(r->status, 0, "%s", r->err);
    }
    /* The files themselves: no time or command line in the metadata. */
    shell("cmp %s/m0.safetensors %s/m1.safetensors && cmp %s/m0.safetensors.state "
          "%s/m1.safetensors.state", dir, dir, dir, dir);
    /* And what the two models say about the same images. */
    char a[1024], b[1024];
    snprintf(a, sizeof a, "classify -m %s/m0.safetensors -k 2 --format csv %s/data", dir, dir);
    run_result *r = run(a);
    cr_assert_eq(r->status, 0, "%s", r->err);
    static char first[sizeof r->out];
    memcpy(first, r->out, sizeof first);
    snprintf(b, sizeof b, "classify -m %s/m1.safetensors -k 2 --format csv %s/data", dir, dir);
    r = run(b);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect_str_eq(r->out, first);
}

Test(train_cli, bad_arguments_are_refused) {
    run_result *r = run("train -o /tmp/x.safetensors");
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "--data"), "%s", r->err);
    r = run("train --data fashion-mnist -o /tmp/x.safetensors --freeze-backbone");
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "--init"), "%s", r->err);
    char args[1024];
    snprintf(args, sizeof args, "train --data %s/none -o %s/x.safetensors", dir, dir);
    r = run(args);
    cr_expect_eq(r->status, 1);
}

Test(train_cli, fashion_mnist_source) {
    char args[1024];
    snprintf(args, sizeof args, "train --data fashion-mnist --limit 256 --epochs 1 -b 64 -t 1 "
             "--dim 16 --depth 1 --heads 2 --mlp 32 -o %s/f.safetensors", dir);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "256 images, 10 classes"), "%s", r->err);
    snprintf(args, sizeof args, "info -m %s/f.safetensors", dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "28x28, patch 4"), "%s", r->out);
    cr_expect(strstr(r->out, "safetensors __metadata__"), "%s", r->out);
}

/* The Fashion-MNIST model vitc ships (by -m; the default model is the
 * ImageNet one, tests/test_default_model.c): the sample images are
 * classified, and its Fashion-MNIST test accuracy reaches the 90% and
 * is the number weights/README.md states. */
#define FASHION_MODEL VITC_SOURCE_DIR "/weights/fashion-mnist-vit.safetensors"

Test(train_cli, shipped_fashion_model_classifies) {
    run_result *r = run("classify -k 1 -m " FASHION_MODEL " " VITC_SOURCE_DIR
                        "/data/samples/ankle-boot-0000.png");
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "Ankle boot"), "%s", r->out);
    r = run("info -m " FASHION_MODEL);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "fashion-mnist-vit.safetensors"), "%s", r->out);
    cr_expect(strstr(r->out, "mean 0.286"), "the preprocessing is the model's own: %s", r->out);
}

Test(train_cli, shipped_model_reaches_stated_accuracy, .timeout = 600) {
    run_result *r = run("eval -m " FASHION_MODEL " fashion-mnist");
    cr_assert_eq(r->status, 0, "%s", r->err);
    double top1 = 0, stated = 0;
    cr_assert(sscanf(r->out, "top-1 %lf%%", &top1) == 1, "%s", r->out);
    cr_expect(top1 >= 90.0, "test accuracy %.2f%%, below 90%%", top1);
    static char readme[65536];
    slurp(VITC_SOURCE_DIR "/weights/README.md", readme, sizeof readme);
    const char *row = strstr(readme, "| **test accuracy** | **");
    cr_assert(row && sscanf(row, "| **test accuracy** | **%lf%%", &stated) == 1,
              "weights/README.md states no test accuracy");
    cr_expect(fabs(top1 - stated) < 0.005, "test accuracy %.2f%%, weights/README.md says %.2f%%", top1,
              stated);
}

/* --shift N moves Fashion-MNIST images at random: another model than without
 * it, the same one for the same seed, and --shift 0 is the default. */
Test(train_cli, shift_augmentation_is_seeded_and_optional) {
    const char *const shifts[] = {"", "--shift 0", "--shift 2", "--shift 2"};
    static char loss[4][128];
    for (int i = 0; i < 4; i++) {
        char args[1024];
        snprintf(args, sizeof args, "train --data fashion-mnist --limit 256 --epochs 1 -b 64 -t 1 "
                 "--dim 16 --depth 1 --heads 2 --mlp 32 %s -o %s/s%d.safetensors", shifts[i], dir, i);
        run_result *r = run(args);
        cr_assert_eq(r->status, 0, "%s", r->err);
        const char *line = strstr(r->err, "epoch 1/1: loss");
        cr_assert(line, "%s", r->err);
        snprintf(loss[i], sizeof loss[i], "%.22s", line);
    }
    cr_expect_str_eq(loss[0], loss[1]);
    cr_expect_str_neq(loss[1], loss[2]);
    cr_expect_str_eq(loss[2], loss[3]);
    run_result *r = run("train --data fashion-mnist -o /tmp/x.safetensors --shift -1");
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "--shift"), "%s", r->err);
}

/* --init with the ViT family's switches (issue 18): a linear probe on a
 * model without a class token (registers, average pooling, fc_norm,
 * LayerScale), and fine-tuning Hugging Face DINOv2 with registers; the
 * results keep their switches (vit info), classify, and resume. */
Test(train_cli, init_family_models_probe_fine_tune_and_resume) {
    make_folder();
    char args[2048];
    snprintf(args, sizeof args, "train --data %s/data -o %s/gap.safetensors --init "
             VITC_SOURCE_DIR "/tests/fixtures/family/reg4_gap --freeze-backbone --epochs 2 -b 4 -t 1",
             dir, dir);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "features of 8 images"), "%s", r->err);
    snprintf(args, sizeof args, "info -m %s/gap.safetensors", dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "4 register tokens") && strstr(r->out, "no class token") &&
                  strstr(r->out, "LayerScale") && strstr(r->out, "average pooling") &&
                  strstr(r->out, "fc_norm"), "%s", r->out);

    snprintf(args, sizeof args, "train --data %s/data -o %s/dino.safetensors --init "
             VITC_SOURCE_DIR "/tests/fixtures/family/dinov2_reg_hf --epochs 1 -b 4 -t 1", dir, dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    snprintf(args, sizeof args, "classify -m %s/dino.safetensors -k 1 %s/data/apple/a1.png", dir, dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "apple") || strstr(r->out, "bear"), "%s", r->out);
    snprintf(args, sizeof args, "train --data %s/data -o %s/dino.safetensors --epochs 2 -b 4 -t 1 "
             "--resume %s/dino.safetensors", dir, dir, dir);
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "after epoch 1") && strstr(r->err, "epoch 2/2: loss"), "%s", r->err);
}
