/* The vit program as a user meets it: exit statuses, one-line errors on
 * stderr, results alone on stdout, valid JSON. Runs the built binary on a
 * small fixture checkpoint; the expected labels come from PyTorch's config. */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#define VIT VITC_BINARY_DIR "/vit"
#define MODEL VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3"
#define PHOTO VITC_SOURCE_DIR "/tests/fixtures/real/apple.png"

Test(cli, unknown_flag_is_one_line_and_fatal) {
    run_result *r = run("classify --frobnicate -m " MODEL " " PHOTO);
    cr_expect_eq(r->status, 1);
    cr_expect_eq(count_lines(r->err), 1, "stderr: %s", r->err);
    cr_expect(strstr(r->err, "--frobnicate"), "stderr: %s", r->err);
    cr_expect_str_empty(r->out);
}

Test(cli, unknown_command) {
    run_result *r = run("frobnicate");
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "frobnicate"), "stderr: %s", r->err);
}

Test(cli, missing_model_is_fatal) {
    run_result *r = run("classify -m /nonexistent/model " PHOTO);
    cr_expect_eq(r->status, 1);
    cr_expect_eq(count_lines(r->err), 1, "stderr: %s", r->err);
    cr_expect(strstr(r->err, "/nonexistent/model"), "stderr: %s", r->err);
}

Test(cli, bad_number) {
    run_result *r = run("classify -k many -m " MODEL " " PHOTO);
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "-k") && strstr(r->err, "many"), "stderr: %s", r->err);
}

Test(cli, help_on_every_command) {
    const char *commands[] = {"classify", "info", "eval"};
    for (int i = 0; i < 3; i++) {
        char args[64];
        snprintf(args, sizeof args, "%s -h", commands[i]);
        run_result *r = run(args);
        cr_expect_eq(r->status, 0, "%s -h", commands[i]);
        cr_expect(strstr(r->out, "usage: vit"), "%s -h printed: %s", commands[i], r->out);
    }
}

Test(cli, classify_text_labels_from_config) {
    run_result *r = run("classify -k 5 -m " MODEL " " PHOTO);
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
    cr_expect(strstr(r->out, "apple.png\n"), "stdout: %s", r->out);
    /* All five classes are listed, with id2label's names. */
    const char *names[] = {"class zero", "class one", "class two", "class three", "class four"};
    for (int i = 0; i < 5; i++) cr_expect(strstr(r->out, names[i]), "missing %s in %s", names[i], r->out);
}

Test(cli, a_bad_image_does_not_stop_the_others) {
    run_result *r = run("classify -q --format json -k 2 -m " MODEL " /nonexistent.png " PHOTO);
    cr_expect_eq(r->status, 2, "stderr: %s", r->err);
    cr_expect_eq(count_lines(r->err), 1, "stderr: %s", r->err);
    cr_expect(strstr(r->err, "/nonexistent.png"), "stderr: %s", r->err);
    cJSON *json = cJSON_Parse(r->out);
    cr_assert(cJSON_IsArray(json), "stdout is not a JSON array: %s", r->out);
    cr_assert_eq(cJSON_GetArraySize(json), 2);
    const cJSON *bad = cJSON_GetArrayItem(json, 0), *good = cJSON_GetArrayItem(json, 1);
    cr_expect(cJSON_IsString(cJSON_GetObjectItem(bad, "error")));
    cr_expect_str_eq(cJSON_GetObjectItem(good, "path")->valuestring, PHOTO);
    cr_expect(cJSON_IsNull(cJSON_GetObjectItem(good, "error")));
    const cJSON *top = cJSON_GetObjectItem(good, "top");
    cr_assert_eq(cJSON_GetArraySize(top), 2);
    const cJSON *first = cJSON_GetArrayItem(top, 0);
    cr_expect(cJSON_IsString(cJSON_GetObjectItem(first, "label")));
    const double p = cJSON_GetObjectItem(first, "probability")->valuedouble;
    cr_expect(p > 0.0 && p <= 1.0);
    cJSON_Delete(json);
}

Test(cli, info_names_layout_and_preprocessing) {
    run_result *r = run("info -m " MODEL);
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
    cr_expect(strstr(r->out, "Hugging Face ViT"), "stdout: %s", r->out);
    cr_expect(strstr(r->out, "3 heads"), "stdout: %s", r->out);
    cr_expect(strstr(r->out, "preprocess"), "stdout: %s", r->out);
}

Test(cli, info_takes_the_safetensors_file_too) {
    run_result *r = run("info -m " MODEL "/model.safetensors");
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
    cr_expect(strstr(r->out, "config.json"), "config beside the file not used: %s", r->out);
}

/* ImageFolder eval: folders are matched to labels (underscores as spaces,
 * or class indices), every image is counted, and the per-image CSV carries
 * the class each folder stands for. */
Test(cli, eval_image_folder) {
    char dir[] = "/tmp/vitc-eval-XXXXXX";
    cr_assert(mkdtemp(dir));
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "mkdir -p %s/class_two %s/4 %s/.hidden && cp %s %s/class_two/a.png && "
             "cp %s %s/class_two/b.PNG && cp %s %s/4/c.png && cp %s %s/.hidden/d.png",
             dir, dir, dir, PHOTO, dir, PHOTO, dir, PHOTO, dir, PHOTO, dir);
    cr_assert(system(cmd) == 0);
    char args[1024];
    snprintf(args, sizeof args, "eval -m " MODEL " -o %s/out.csv %s", dir, dir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
    cr_expect(strstr(r->out, "/3)"), "three images expected: %s", r->out);
    char csv_path[256], csv[4096];
    snprintf(csv_path, sizeof csv_path, "%s/out.csv", dir);
    slurp(csv_path, csv, sizeof csv);
    cr_expect(strstr(csv, "\n4/c.png,4,"), "csv: %s", csv);
    cr_expect(strstr(csv, "\nclass_two/a.png,2,"), "csv: %s", csv);
    cr_expect(strstr(csv, "\nclass_two/b.PNG,2,"), "csv: %s", csv);
    cr_expect(!strstr(csv, "d.png"), "hidden folder was read: %s", csv);

    /* --confusion draws the matrix; it may not be one of the images. */
    snprintf(args, sizeof args, "eval -q -m " MODEL " %s --confusion %s/confusion.png", dir, dir);
    r = run(args);
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
    char png[256];
    snprintf(png, sizeof png, "%s/confusion.png", dir);
    data_image pic;
    base_error err;
    cr_expect(data_image_load(png, &pic, &err) == BASE_OK, "--confusion: %s", err.message);
    if (pic.pixels) cr_expect(pic.width > 100 && pic.height > 100, "%dx%d", pic.width, pic.height);
    data_image_free(&pic);
    snprintf(args, sizeof args, "eval -q -m " MODEL " %s --confusion %s/4/c.png", dir, dir);
    r = run(args);
    cr_expect_eq(r->status, 1, "stderr: %s", r->err);
    cr_expect(strstr(r->err, "c.png"), "stderr: %s", r->err);

    /* A folder that names no class is a fatal error naming it. */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/giraffe && cp %s %s/giraffe/e.png", dir, PHOTO, dir);
    cr_assert(system(cmd) == 0);
    snprintf(args, sizeof args, "eval -m " MODEL " %s", dir);
    r = run(args);
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "giraffe"), "stderr: %s", r->err);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert(system(cmd) == 0);
}

/* An input size the patches do not tile would drop the pixels past the last
 * whole patch without a word: refused, naming the sizes that work. */
Test(cli, size_not_a_multiple_of_the_patch_is_refused) {
    run_result *r = run("classify --size 36 -m " MODEL " " PHOTO);
    cr_expect_eq(r->status, 1, "stderr: %s", r->err);
    cr_expect_eq(count_lines(r->err), 1, "stderr: %s", r->err);
    cr_expect(strstr(r->err, "36 is not a multiple of the patch size 8 (32 or 40"), "stderr: %s",
              r->err);
    cr_expect_str_empty(r->out);
    r = run("classify --size 40 -m " MODEL " " PHOTO);
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
}

/* Output formats follow -o's extension in any case, as the walk matches
 * image extensions. */
Test(cli, output_extension_in_any_case) {
    char path[64], text[4096];
    snprintf(path, sizeof path, "/tmp/vitc-cli-%d.CSV", (int)getpid());
    char args[512];
    snprintf(args, sizeof args, "classify -q -k 2 -m " MODEL " -o %s " PHOTO, path);
    run_result *r = run(args);
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
    slurp(path, text, sizeof text);
    cr_expect(strncmp(text, "path,index_1,label_1,probability_1,", 35) == 0, "%s holds: %s", path,
              text);
    remove(path);
    char record[80];
    snprintf(record, sizeof record, "%s.run.json", path);
    remove(record);
}
