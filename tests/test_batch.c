/* Batch processing of directories: walking, batched forward passes, error
 * rows, kill -9 and --resume, shards. */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>

#include "test_util.h"
#include "vit.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures"
#define MODEL FIXTURES "/parity/hf_vit_d48_h3"
#define APPLE FIXTURES "/real/apple.png"
#define POLARS FIXTURES "/real/polars.png"
#define JPEG FIXTURES "/preprocess/dec_photo.jpg"
#define HUGE FIXTURES "/preprocess/huge_50000.jpg"

TEMP_DIR_SUITE(batch);

/* ------------------------------------------------------------- walking */

static void touch(const char *rel) {
    shell("mkdir -p \"$(dirname '%s/%s')\" && : > '%s/%s'", dir, rel, dir, rel);
}

static void expect_walk(const data_walk_options *options, const char *const *expected, size_t n) {
    data_file_list list = {0};
    base_error err;
    char root[128];
    snprintf(root, sizeof root, "%s/a", dir);
    cr_assert(data_walk(root, options, &list, &err) == BASE_OK, "%s", err.message);
    cr_assert_eq(list.count, n, "walk found %zu files, expected %zu", list.count, n);
    for (size_t i = 0; i < n; i++) {
        char want[256];
        snprintf(want, sizeof want, "%s/a/%s", dir, expected[i]);
        cr_expect_str_eq(list.paths[i], want, "file %zu", i);
    }
    data_file_list_free(&list);
}

Test(batch, walk_is_sorted_filtered_and_survives_loops) {
    const char *files[] = {"a/c.png", "a/B.JPG", "a/Z.Png", "a/.hidden.png", "a/notes.txt",
                           "a/sub/d.jpeg", "a/sub/.secret/e.png", "a/sub/deeper/f.bmp", "a/.git/g.png"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) touch(files[i]);
    /* A loop back to the top and one to the parent of the current folder. */
    shell("ln -s .. '%s/a/sub/up' && ln -s . '%s/a/self'", dir, dir);
    const char *all[] = {"B.JPG", "Z.Png", "c.png", "sub/d.jpeg", "sub/deeper/f.bmp"};
    expect_walk(NULL, all, 5);
    data_walk_options flat = {.recursive = 0};
    const char *top[] = {"B.JPG", "Z.Png", "c.png"};
    expect_walk(&flat, top, 3);
    const char *png_ext[] = {"png"};
    data_walk_options png = {.recursive = 1, .extensions = png_ext, .num_extensions = 1};
    const char *pngs[] = {"Z.Png", "c.png"};
    expect_walk(&png, pngs, 2);
}

/* ------------------------------------------- batched == single forward */

Test(batch, batched_forward_equals_single_images) {
    vit_model *model;
    base_error err;
    cr_assert(vit_model_load(MODEL, NULL, &model, &err) == BASE_OK, "%s", err.message);
    enum { B = 7 };
    const int S = vit_model_config(model)->image_size, per = 3 * S * S;
    const int C = vit_model_output_size(model);
    float *images = malloc(sizeof(float) * per * B), batched[B * 5], single[5];
    srand(7);
    for (int i = 0; i < per * B; i++) images[i] = (float)rand() / RAND_MAX * 4.0f - 2.0f;
    vit_context *ctx;
    cr_assert(vit_context_create(model, B, 0, 0, &ctx, &err) == BASE_OK, "%s", err.message);
    cr_assert(vit_forward(ctx, images, B, batched, &err) == BASE_OK, "%s", err.message);
    for (int b = 0; b < B; b++) {
        cr_assert(vit_forward(ctx, images + (size_t)b * per, 1, single, &err) == BASE_OK);
        for (int c = 0; c < C; c++)
            cr_expect(fabsf(single[c] - batched[b * C + c]) <= 1e-5f,
                      "image %d class %d: single %g, batched %g", b, c, single[c], batched[b * C + c]);
    }
    vit_context_free(ctx);
    vit_model_free(model);
    free(images);
}

/* --------------------------------------------------------- result rows */

typedef struct row {
    char path[200];
    int index[2];
    double prob[2];
    char error[512];
} row;

/* Parses classify -k 2 CSV output (labels and paths have no commas here).
 * Fails the test on a torn or malformed line. */
static int parse_rows(const char *csv, row *rows, int max) {
    const char *line = strchr(csv, '\n');
    cr_assert(line, "no header in output");
    int n = 0;
    for (line++; *line; n++) {
        const char *end = strchr(line, '\n');
        cr_assert(end, "torn last line: '%s'", line);
        cr_assert(n < max);
        char text[1024];
        snprintf(text, sizeof text, "%.*s", (int)(end - line), line);
        char *fields[8];
        int count = 0;
        for (char *p = text;; p++) {
            if (count < 8) fields[count++] = p;
            p = strchr(p, ',');
            if (!p) break;
            *p = '\0';
        }
        cr_assert_eq(count, 8, "malformed row: %.*s", (int)(end - line), line);
        row *r = &rows[n];
        snprintf(r->path, sizeof r->path, "%s", fields[0]);
        for (int k = 0; k < 2; k++) {
            r->index[k] = *fields[1 + 3 * k] ? atoi(fields[1 + 3 * k]) : -1;
            r->prob[k] = *fields[3 + 3 * k] ? atof(fields[3 + 3 * k]) : -1.0;
        }
        snprintf(r->error, sizeof r->error, "%s", fields[7]);
        line = end + 1;
    }
    return n;
}

static int compare_rows(const void *a, const void *b) {
    return strcmp(((const row *)a)->path, ((const row *)b)->path);
}

/* Same files, same predictions (probabilities to the printed precision,
 * allowing for a different batch split). */
static void expect_same_rows(row *a, int na, row *b, int nb) {
    cr_assert_eq(na, nb, "%d rows vs %d", na, nb);
    qsort(a, (size_t)na, sizeof *a, compare_rows);
    qsort(b, (size_t)nb, sizeof *b, compare_rows);
    for (int i = 0; i < na; i++) {
        cr_expect_str_eq(a[i].path, b[i].path);
        cr_expect_str_eq(a[i].error, b[i].error, "%s", a[i].path);
        for (int k = 0; k < 2; k++) {
            cr_expect_eq(a[i].index[k], b[i].index[k], "%s: top-%d", a[i].path, k + 1);
            cr_expect(fabs(a[i].prob[k] - b[i].prob[k]) <= 2e-6, "%s: %g vs %g", a[i].path,
                      a[i].prob[k], b[i].prob[k]);
        }
    }
}

static char csv_a[1 << 20], csv_b[1 << 20];
static row rows_a[512], rows_b[512];

Test(batch, bad_files_become_error_rows_and_the_rest_carries_on) {
    shell("mkdir -p %s/in/sub && cp %s %s/in/good1.png && cp %s %s/in/good2.png && cp %s %s/in/sub/good3.jpg",
          dir, APPLE, dir, POLARS, dir, JPEG, dir);
    shell("head -c 3000 /dev/urandom > %s/in/corrupt.jpg && head -c 4000 %s > %s/in/truncated.jpg && "
          ": > %s/in/empty.png && echo 'not an image' > %s/in/notes.jpg && cp %s %s/in/huge.jpg",
          dir, JPEG, dir, dir, dir, HUGE, dir);
    char args[2048];
    snprintf(args, sizeof args, "classify -q -k 2 -b 3 -m " MODEL " -o %s/out.csv %s/in", dir, dir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 2, "exit status %d; stderr: %s", r->status, r->err);
    cr_expect_eq(count_lines(r->err), 5, "one stderr line per bad file: %s", r->err);
    static char err_text[65536];
    memcpy(err_text, r->err, sizeof err_text);
    char path[256];
    snprintf(path, sizeof path, "%s/out.csv", dir);
    slurp(path, csv_a, sizeof csv_a);
    int n = parse_rows(csv_a, rows_a, 512);
    cr_assert_eq(n, 8, "rows: %s", csv_a);
    const char *bad[] = {"corrupt.jpg", "empty.png", "huge.jpg", "notes.jpg", "truncated.jpg"};
    for (int i = 0; i < n; i++) {
        int is_bad = 0;
        for (int b = 0; b < 5; b++) is_bad |= strcmp(rows_a[i].path, bad[b]) == 0;
        if (is_bad) {
            cr_expect(rows_a[i].error[0], "%s has no error", rows_a[i].path);
            cr_expect(strstr(err_text, rows_a[i].path), "%s not named on stderr", rows_a[i].path);
            continue;
        }
        cr_expect_str_empty(rows_a[i].error, "%s: %s", rows_a[i].path, rows_a[i].error);
        /* Each good image gets the row it gets when classified alone. */
        snprintf(args, sizeof args, "classify -q -k 2 -m " MODEL " --format csv %s/in/%.200s", dir,
                 rows_a[i].path);
        r = run(args);
        cr_assert_eq(r->status, 0, "%s", r->err);
        row alone;
        cr_assert_eq(parse_rows(r->out, &alone, 1), 1);
        memcpy(alone.path, rows_a[i].path, sizeof alone.path);
        expect_same_rows(&rows_a[i], 1, &alone, 1);
    }
}

/* --------------------------------------------------------- kill, resume */

/* Under an emulator (aarch64 under qemu, 30-100x slower) a third of the
 * photos, so the two runs fit the timeout; the kill still lands mid-run. */
#ifdef VITC_TEST_EMULATED
enum { RESUME_PHOTOS = 24, KILL_AFTER_ROWS = 6 };
#else
enum { RESUME_PHOTOS = 80, KILL_AFTER_ROWS = 12 };
#endif

Test(batch, kill_9_then_resume_equals_an_uninterrupted_run, .timeout = 600) {
    make_photos(dir, RESUME_PHOTOS);
    /* A larger input makes each image slow enough to kill a run mid-way. */
    const char *common = "classify -q -k 2 -b 3 --size 320 -m " MODEL;
    char args[1024], out[256], ref[256];
    snprintf(ref, sizeof ref, "%s/ref.csv", dir);
    snprintf(out, sizeof out, "%s/out.csv", dir);
    snprintf(args, sizeof args, "%s -o %s %s/in", common, ref, dir);
    cr_assert_eq(run(args)->status, 0);

    char input[128];
    snprintf(input, sizeof input, "%s/in", dir);
    const char *const argv[] = {"classify", "-q", "-k", "2", "-b", "3", "--size", "320", "-m", MODEL,
                                "-o", out, input, NULL};
    pid_t pid = spawn_vit(argv);
    /* Kill once some rows are written, at a moment that varies run to run. */
    const struct timespec tick = {0, 2000000};
    for (int waited = 0; waited < 20000 && count_file_lines(out) < KILL_AFTER_ROWS; waited++)
        nanosleep(&tick, NULL);
    struct timespec extra = {0, (long)(rand() % 20) * 1000000L};
    nanosleep(&extra, NULL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFSIGNALED(status), "the run finished before it could be killed");
    const int rows_before = count_file_lines(out) - 1;
    cr_expect(rows_before > 0 && rows_before < RESUME_PHOTOS + 1, "killed run left %d rows", rows_before);

    snprintf(args, sizeof args, "%s --resume -o %s %s/in", common, out, dir);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    slurp(ref, csv_a, sizeof csv_a);
    slurp(out, csv_b, sizeof csv_b);
    int na = parse_rows(csv_a, rows_a, 512), nb = parse_rows(csv_b, rows_b, 512);
    cr_expect_eq(na, RESUME_PHOTOS + 1);
    expect_same_rows(rows_a, na, rows_b, nb); /* also: no file twice, none lost */
    /* Batches keep their company on resume, so the files are identical. */
    cr_expect_str_eq(csv_b, csv_a);

    /* Resuming a finished file does nothing and changes nothing. */
    r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    static char again[1 << 20];
    slurp(out, again, sizeof again);
    cr_expect_str_eq(again, csv_b);
}

Test(batch, resume_drops_a_torn_last_row) {
    make_photos(dir, 5);
    char args[1024], out[256];
    snprintf(out, sizeof out, "%s/out.csv", dir);
    snprintf(args, sizeof args, "classify -q -k 2 -m " MODEL " -o %s %s/in", out, dir);
    cr_assert_eq(run(args)->status, 0);
    slurp(out, csv_a, sizeof csv_a);
    /* Cut the file in the middle of its third row. */
    const char *third = strchr(strchr(strchr(csv_a, '\n') + 1, '\n') + 1, '\n') + 1;
    cr_assert(truncate(out, (off_t)(third - csv_a) + 10) == 0);
    snprintf(args, sizeof args, "classify -k 2 -m " MODEL " --resume -o %s %s/in", out, dir);
    run_result *r = run(args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "incomplete last row"), "stderr: %s", r->err);
    slurp(out, csv_b, sizeof csv_b);
    cr_expect_str_eq(csv_b, csv_a);
}

/* --------------------------------------------------------------- shards */

Test(batch, shards_partition_the_files) {
    make_photos(dir, 30);
    char args[1024], path[256];
    snprintf(args, sizeof args, "classify -q -k 2 -m " MODEL " -o %s/all.csv %s/in", dir, dir);
    cr_assert_eq(run(args)->status, 0);
    snprintf(path, sizeof path, "%s/all.csv", dir);
    slurp(path, csv_a, sizeof csv_a);
    const int total = parse_rows(csv_a, rows_a, 512);
    int union_count = 0;
    for (int s = 0; s < 3; s++) {
        snprintf(args, sizeof args, "classify -q -k 2 --shard %d/3 -m " MODEL " -o %s/shard%d.csv %s/in",
                 s, dir, s, dir);
        cr_assert_eq(run(args)->status, 0);
        snprintf(path, sizeof path, "%s/shard%d.csv", dir, s);
        slurp(path, csv_b, sizeof csv_b);
        const int n = parse_rows(csv_b, rows_b + union_count, 512 - union_count);
        cr_expect(n > 0 && n < total, "shard %d has %d of %d files", s, n, total);
        union_count += n;
    }
    expect_same_rows(rows_a, total, rows_b, union_count);
}

Test(batch, bad_shard_and_resume_arguments) {
    run_result *r = run("classify --shard 3/3 -m " MODEL " " APPLE);
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "--shard"), "%s", r->err);
    r = run("classify --resume -m " MODEL " " APPLE);
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "--resume"), "%s", r->err);
}
