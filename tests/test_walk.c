/* Walking directories and opening inputs: nothing blocks (FIFOs, sockets,
 * devices), an unreadable subdirectory costs only itself, an empty walk is
 * one clear error, and a few images the header checks used to refuse. */
#include <errno.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "data.h"
#include "test_util.h"

#define MODEL VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3"
#define APPLE VITC_SOURCE_DIR "/tests/fixtures/real/apple.png"
#define SMALL "--arch custom --dim 16 --depth 1 --heads 2 --mlp 32 --patch 8 --image-size 32 -t 1"

TEMP_DIR_SUITE(walk);

/* run() with a time limit: a command that blocks ends with status 124
 * (timeout(1)) and fails the test instead of hanging the suite. prefix
 * goes before the program (e.g. setpriv ...). */
static run_result *run_limited(const char *prefix, const char *args) {
    static run_result r;
    char cmd[8192], out_path[64], err_path[64];
    snprintf(out_path, sizeof out_path, "/tmp/vitc-walk-out.%d", (int)getpid());
    snprintf(err_path, sizeof err_path, "/tmp/vitc-walk-err.%d", (int)getpid());
    snprintf(cmd, sizeof cmd, "timeout -s KILL 60 %s %s %s >%s 2>%s </dev/null", prefix, VIT, args,
             out_path, err_path);
    int raw = system(cmd);
    cr_assert(WIFEXITED(raw), "'%s' did not exit normally", cmd);
    r.status = WEXITSTATUS(raw);
    cr_assert_neq(r.status, 137, "'%s' blocked (killed after 60 s)", cmd);
    slurp(out_path, r.out, sizeof r.out);
    slurp(err_path, r.err, sizeof r.err);
    remove(out_path);
    remove(err_path);
    return &r;
}

/* ------------------------------------------------------- non-regular files */

Test(walk, fifo_in_a_directory_is_left_out_and_never_waited_for, .timeout = 120) {
    shell("mkdir -p %s/in/sub && cp %s %s/in/a.png && cp %s %s/in/sub/b.png && mkfifo %s/in/pipe.png",
          dir, APPLE, dir, APPLE, dir, dir);
    char args[1024];
    snprintf(args, sizeof args, "classify -q -m %s -k 1 --format csv %s/in", MODEL, dir);
    run_result *r = run_limited("", args);
    cr_expect_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "\na.png,") && strstr(r->out, "\nsub/b.png,"), "%s", r->out);
    cr_expect(!strstr(r->out, "pipe.png"), "a FIFO got a row: %s", r->out);

    /* The same for the library walk: regular files only. */
    data_file_list files = {0};
    base_error err;
    char path[256];
    snprintf(path, sizeof path, "%s/in", dir);
    cr_assert_eq(data_walk(path, NULL, &files, &err), BASE_OK, "%s", err.message);
    cr_expect_eq(files.count, 2);
    for (size_t i = 0; i < files.count; i++)
        cr_expect(!strstr(files.paths[i], "pipe"), "%s", files.paths[i]);
    data_file_list_free(&files);
}

Test(walk, fifo_named_on_the_command_line_gets_an_error_row, .timeout = 120) {
    shell("mkfifo %s/pipe.png", dir);
    char args[1024];
    snprintf(args, sizeof args, "classify -q -m %s -k 1 --format csv %s/pipe.png %s", MODEL, dir, APPLE);
    run_result *r = run_limited("", args);
    cr_expect_eq(r->status, 2, "%s", r->err);
    cr_expect_eq(count_lines(r->err), 1, "%s", r->err);
    cr_expect(strstr(r->err, "pipe.png: not a regular file"), "%s", r->err);
    cr_expect(strstr(r->out, "pipe.png") && strstr(r->out, "not a regular file"), "%s", r->out);
    cr_expect(strstr(r->out, "apple.png,"), "%s", r->out);

    /* The library call returns at once with the reason. */
    char path[256];
    snprintf(path, sizeof path, "%s/pipe.png", dir);
    data_image img;
    base_error err;
    cr_expect_eq(data_image_load(path, &img, &err), BASE_E_IO);
    cr_expect(strstr(err.message, "not a regular file (a FIFO)"), "%s", err.message);
    cr_expect_eq(data_image_load("/dev/null", &img, &err), BASE_E_IO);
    cr_expect(strstr(err.message, "not a regular file (a character device)"), "%s", err.message);
}

Test(walk, train_data_with_a_fifo_does_not_block, .timeout = 120) {
    shell("mkdir -p %s/data/a %s/data/b && cp %s %s/data/a/1.png && cp %s %s/data/b/1.png && "
          "mkfifo %s/data/a/pipe.png",
          dir, dir, APPLE, dir, APPLE, dir, dir);
    char args[1024];
    snprintf(args, sizeof args, "train --data %s/data -o %s/m.safetensors " SMALL " --epochs 1 -b 2",
             dir, dir);
    run_result *r = run_limited("", args);
    cr_expect_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "2 images, 2 classes"), "%s", r->err);
}

/* Text inputs (labels, configs) may be pipes, but a FIFO nobody writes to
 * must not hang the run: it reads as empty. One with a writer is read. */
Test(walk, a_fifo_as_labels_file_does_not_block, .timeout = 120) {
    shell("mkfifo %s/labels.txt", dir);
    char args[1024];
    snprintf(args, sizeof args, "classify -q -m %s -k 1 --labels %s/labels.txt %s", MODEL, dir, APPLE);
    run_result *r = run_limited("", args);
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "labels.txt: 0 labels"), "%s", r->err);
    /* The writer waits in open(2) for a reader; the pause lets it get
     * there before vit opens the FIFO. */
    shell("(printf 'a\\nb\\nc\\nd\\nfifth\\n' > %s/labels.txt &) && sleep 0.3", dir);
    r = run_limited("", args);
    cr_expect_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "fifth (4)"), "%s", r->out);
}

/* ------------------------------------------------ unreadable subdirectory */

/* Root reads any directory whatever its mode, so the unreadable case runs
 * the program as nobody (setpriv), on a tree nobody can reach. */
static int can_drop_privileges(void) {
    return geteuid() == 0 && system("command -v setpriv >/dev/null 2>&1") == 0;
}

#define AS_NOBODY "setpriv --reuid=nobody --regid=nogroup --clear-groups"

Test(walk, an_unreadable_subdirectory_is_reported_and_the_rest_goes_on, .timeout = 120) {
    if (!can_drop_privileges())
        cr_skip_test("needs root and setpriv to make a directory unreadable (root reads any)");
    shell("chmod 755 %s && mkdir -p %s/in/locked %s/in/z && cp %s %s/in/a.png && "
          "cp %s %s/in/locked/b.png && cp %s %s/in/z/c.png && chmod 000 %s/in/locked",
          dir, dir, dir, APPLE, dir, APPLE, dir, APPLE, dir, dir);
    char args[1024];
    snprintf(args, sizeof args, "classify -q -m %s -k 1 --format csv %s/in", MODEL, dir);
    run_result *r = run_limited(AS_NOBODY, args);
    cr_expect_eq(r->status, 2, "%s", r->err);
    cr_expect_eq(count_lines(r->err), 1, "%s", r->err);
    cr_expect(strstr(r->err, "vit classify: ") && strstr(r->err, "/in/locked: cannot open directory: "
                                                                  "Permission denied"),
              "%s", r->err);
    cr_expect(strstr(r->out, "\na.png,") && strstr(r->out, "\nz/c.png,"), "%s", r->out);
    cr_expect_eq(count_lines(r->out), 3, "header and two rows: %s", r->out);

    /* The inspection commands share the walk. */
    shell("mkdir %s/out && chown nobody %s/out", dir, dir);
    snprintf(args, sizeof args, "features -q -m %s %s/in -o %s/out/f.npy", MODEL, dir, dir);
    r = run_limited(AS_NOBODY, args);
    cr_expect_eq(r->status, 2, "%s", r->err);
    cr_expect(strstr(r->err, "locked: cannot open directory"), "%s", r->err);
}

Test(walk, an_unreadable_class_folder_does_not_stop_training_or_eval, .timeout = 120) {
    if (!can_drop_privileges())
        cr_skip_test("needs root and setpriv to make a directory unreadable (root reads any)");
    shell("chmod 755 %s && mkdir -p %s/data/a/more %s/data/b/locked && cp %s %s/data/a/1.png && "
          "cp %s %s/data/a/more/2.png && cp %s %s/data/b/1.png && chmod 000 %s/data/b/locked && "
          "mkdir %s/out && chown nobody %s/out",
          dir, dir, dir, APPLE, dir, APPLE, dir, APPLE, dir, dir, dir, dir);
    char args[1024];
    snprintf(args, sizeof args, "train --data %s/data -o %s/out/m.safetensors " SMALL " --epochs 1 -b 3",
             dir, dir);
    run_result *r = run_limited(AS_NOBODY, args);
    cr_expect_eq(r->status, 2, "%s", r->err);
    cr_expect(strstr(r->err, "vit train: ") && strstr(r->err, "b/locked: cannot open directory"),
              "%s", r->err);
    cr_expect(strstr(r->err, "3 images, 2 classes"), "%s", r->err);

    snprintf(args, sizeof args, "eval -m %s/out/m.safetensors %s/data", dir, dir);
    r = run_limited(AS_NOBODY, args);
    cr_expect_eq(r->status, 2, "%s", r->err);
    cr_expect(strstr(r->err, "b/locked: cannot open directory"), "%s", r->err);
    cr_expect(strstr(r->out, "/3)"), "%s", r->out);
}

/* The library: with a problem list the walk goes on, without one it fails
 * as before. Run in a child that has become nobody. */
Test(walk, walk_collect_lists_the_files_and_the_problems, .timeout = 60) {
    if (geteuid() != 0) cr_skip_test("needs root to become nobody (root reads any directory)");
    shell("chmod 755 %s && mkdir -p %s/in/locked && touch %s/in/a.png %s/in/locked/b.png && "
          "chmod 000 %s/in/locked", dir, dir, dir, dir, dir);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        if (setgid(65534) != 0 || setuid(65534) != 0) _exit(10);
        char path[256];
        snprintf(path, sizeof path, "%s/in", dir);
        data_file_list files = {0}, problems = {0};
        base_error err;
        if (data_walk_collect(path, NULL, &files, &problems, &err) != BASE_OK) _exit(11);
        if (files.count != 1 || !strstr(files.paths[0], "a.png")) _exit(12);
        if (problems.count != 1 || !strstr(problems.paths[0], "locked: cannot open directory"))
            _exit(13);
        data_file_list_free(&files);
        if (data_walk(path, NULL, &files, &err) != BASE_E_IO) _exit(14);
        _exit(0);
    }
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child check %d failed",
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

/* ----------------------------------------------------------- empty walks */

Test(walk, nothing_to_work_on_is_one_line_and_fatal, .timeout = 120) {
    shell("mkdir -p %s/empty %s/in/a %s/in/b && cp %s %s/in/a/1.png && cp %s %s/in/b/1.png", dir,
          dir, dir, APPLE, dir, APPLE, dir);
    char args[1024];
    /* Outputs go into dir: a command that went on would replace them
     * atomically (never name /dev/null here: it would be renamed over). */
    const char *const commands[] = {"classify -m " MODEL " %s/empty -o %s/out.csv",
                                    "classify -m " MODEL " --ext xyz %s/in -o %s/out.csv",
                                    "features -m " MODEL " %s/empty -o %s/f.npy",
                                    "attention -m " MODEL " %s/empty -o %s/out/",
                                    "segment -m " MODEL " %s/empty -o %s/out/",
                                    "patches -m " MODEL " %s/empty -o %s/out/"};
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        snprintf(args, sizeof args, commands[i], dir, dir);
        run_result *r = run_limited("", args);
        cr_expect_eq(r->status, 1, "%s: %s", args, r->err);
        cr_expect_eq(count_lines(r->err), 1, "%s: %s", args, r->err);
        cr_expect(strstr(r->err, "no images found in "), "%s: %s", args, r->err);
        cr_expect_str_empty(r->out, "%s", args);
    }
    /* An ImageFolder whose class folders are empty (named by class index,
     * which eval matches to the model's classes). */
    shell("mkdir -p %s/classes/0 %s/classes/1", dir, dir);
    snprintf(args, sizeof args, "eval -m %s %s/classes", MODEL, dir);
    run_result *r = run_limited("", args);
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "no images found in "), "%s", r->err);
    snprintf(args, sizeof args, "train --data %s/classes -o %s/m.safetensors " SMALL, dir, dir);
    r = run_limited("", args);
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect_eq(count_lines(r->err), 1, "%s", r->err);
    cr_expect(strstr(r->err, "no images found in "), "%s", r->err);
    snprintf(args, sizeof args, "train --data %s/empty -o %s/m.safetensors " SMALL, dir, dir);
    r = run_limited("", args);
    cr_expect_eq(r->status, 1, "%s", r->err);
    cr_expect(strstr(r->err, "no images found in "), "%s", r->err);
}

/* Under UBSan an empty listing once reached qsort(NULL, 0, ...). */
Test(walk, an_empty_directory_walks_to_nothing) {
    shell("mkdir -p %s/empty/sub", dir);
    char path[256];
    snprintf(path, sizeof path, "%s/empty", dir);
    data_file_list files = {0};
    base_error err;
    cr_assert_eq(data_walk(path, NULL, &files, &err), BASE_OK, "%s", err.message);
    cr_expect_eq(files.count, 0);
    cr_assert_eq(data_list_subdirs(path, &files, &err), BASE_OK, "%s", err.message);
    cr_expect_eq(files.count, 1);
    data_file_list_free(&files);
    snprintf(path, sizeof path, "%s/empty/sub", dir);
    cr_assert_eq(data_list_subdirs(path, &files, &err), BASE_OK, "%s", err.message);
    cr_expect_eq(files.count, 0);
    data_file_list_free(&files);
}

/* ---------------------------------------------------------------- images */

/* A 24-bit BMP of W x H (rows padded to 4 bytes), stored top-down (negative
 * height) or bottom-up. Pixel (x, y) is pattern(x, y); PIL 9.4 decodes both
 * files to exactly this pattern (checked when this test was written). */
enum { BMP_W = 30, BMP_H = 24 };

static void pattern(int x, int y, uint8_t rgb[3]) {
    rgb[0] = (uint8_t)(x * 8);
    rgb[1] = (uint8_t)(y * 10);
    rgb[2] = (uint8_t)((x + y) * 3);
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static size_t make_bmp(uint8_t *b, int top_down) {
    const size_t row = (BMP_W * 3 + 3) / 4 * 4, data = row * BMP_H;
    memset(b, 0, 54 + data);
    b[0] = 'B';
    b[1] = 'M';
    put32(b + 2, (uint32_t)(54 + data));
    put32(b + 10, 54);
    put32(b + 14, 40);
    put32(b + 18, BMP_W);
    put32(b + 22, top_down ? (uint32_t)-BMP_H : BMP_H);
    b[26] = 1;  /* planes */
    b[28] = 24; /* bits per pixel */
    put32(b + 34, (uint32_t)data);
    for (int y = 0; y < BMP_H; y++) {
        uint8_t *r = b + 54 + row * (size_t)(top_down ? y : BMP_H - 1 - y);
        for (int x = 0; x < BMP_W; x++) {
            uint8_t rgb[3];
            pattern(x, y, rgb);
            r[3 * x] = rgb[2]; /* stored B, G, R */
            r[3 * x + 1] = rgb[1];
            r[3 * x + 2] = rgb[0];
        }
    }
    return 54 + data;
}

Test(walk, top_down_bmp_decodes_like_pil) {
    static uint8_t bytes[2][54 + 92 * BMP_H];
    data_image img[2];
    for (int top_down = 0; top_down < 2; top_down++) {
        const size_t n = make_bmp(bytes[top_down], top_down);
        base_error err;
        cr_assert_eq(data_image_load_memory(bytes[top_down], n, "t.bmp", &img[top_down], &err),
                     BASE_OK, "%s: %s", top_down ? "top-down" : "bottom-up", err.message);
        cr_assert_eq(img[top_down].width, BMP_W);
        cr_assert_eq(img[top_down].height, BMP_H);
    }
    for (int y = 0; y < BMP_H; y++)
        for (int x = 0; x < BMP_W; x++) {
            uint8_t rgb[3];
            pattern(x, y, rgb);
            const uint8_t *p = img[1].pixels + 3 * ((size_t)y * BMP_W + x);
            cr_assert(p[0] == rgb[0] && p[1] == rgb[1] && p[2] == rgb[2],
                      "top-down pixel (%d, %d) is %d,%d,%d, PIL's %d,%d,%d", x, y, p[0], p[1], p[2],
                      rgb[0], rgb[1], rgb[2]);
        }
    cr_expect_arr_eq(img[0].pixels, img[1].pixels, (size_t)BMP_W * BMP_H * 3);
    data_image_free(&img[0]);
    data_image_free(&img[1]);

    /* Cut short, a top-down file is still refused as truncated. */
    const size_t n = make_bmp(bytes[1], 1);
    base_error err;
    data_image cut;
    cr_expect_eq(data_image_load_memory(bytes[1], n - 100, "t.bmp", &cut, &err), BASE_E_FORMAT);
    cr_expect(strstr(err.message, "truncated BMP"), "%s", err.message);
}

Test(walk, binary_pbm_is_named_as_such) {
    static const uint8_t pbm[] = "P4\n8 2\n\xAA\x55";
    data_image img;
    base_error err;
    cr_expect_eq(data_image_load_memory(pbm, sizeof pbm - 1, "b.pbm", &img, &err), BASE_E_UNSUPPORTED);
    cr_expect(strstr(err.message, "bitmap PBM (P4) images are not supported"), "%s", err.message);
    cr_expect(!strstr(err.message, "ASCII"), "%s", err.message);
    static const uint8_t ascii[] = "P1\n2 1\n0 1\n";
    cr_expect_eq(data_image_load_memory(ascii, sizeof ascii - 1, "a.pbm", &img, &err), BASE_E_UNSUPPORTED);
    cr_expect(strstr(err.message, "ASCII PNM"), "%s", err.message);
}
