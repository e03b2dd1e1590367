/* The user's files are sacred: no command writes over the model it reads or
 * over one of its inputs (by any spelling, symlink or hard link), two vit
 * processes never write the same output at once, an output that cannot be
 * written is fatal (exit 1) for every command, and option conflicts name
 * the options given. Every refusal happens before anything is written. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#define MODEL_SRC VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3"
#define PHOTO VITC_SOURCE_DIR "/tests/fixtures/real/apple.png"

TEMP_DIR_SUITE(outputs);

/* dir/m: a copy of the fixture model with a --labels file, plus
 * pristine copies to compare with; dir/a.png, dir/b.png: two photos. */
static void setup_files(void) {
    shell("cp -r %s %s/m && cp -r %s/m %s/m.orig && printf 'zero\\none\\ntwo\\nthree\\nfour\\n' >%s/m/labels.txt"
          " && cp %s/m/labels.txt %s/m.orig/ && cp %s %s/a.png && cp %s %s/b.png",
          MODEL_SRC, dir, dir, dir, dir, dir, dir, PHOTO, dir, PHOTO, dir);
}

/* The model's files are byte for byte as they were. */
static void expect_model_intact(const char *after) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cmp -s %s/m/model.safetensors %s/m.orig/model.safetensors && "
             "cmp -s %s/m/config.json %s/m.orig/config.json && cmp -s %s/m/labels.txt %s/m.orig/labels.txt",
             dir, dir, dir, dir, dir, dir);
    cr_expect(system(cmd) == 0, "the model's files changed after: %s", after);
}

static void expect_file_equals_photo(const char *path, const char *after) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", path, PHOTO);
    cr_expect(system(cmd) == 0, "%s changed after: %s", path, after);
}

/* form with every {d} replaced by dir and {o} by o. */
static void expand(const char *form, const char *o, char *out, size_t size) {
    size_t n = 0;
    for (const char *p = form; *p && n + 1 < size;) {
        const char *with = strncmp(p, "{d}", 3) == 0 ? dir : strncmp(p, "{o}", 3) == 0 ? o : NULL;
        if (with) {
            n += (size_t)snprintf(out + n, size - n, "%s", with);
            p += 3;
        } else {
            out[n++] = *p++;
        }
    }
    out[n < size ? n : size - 1] = '\0';
}

/* "vit ARGS" must exit 1 with one stderr line holding needle. */
static void expect_refused(const char *args, const char *needle) {
    run_result *r = run(args);
    cr_expect_eq(r->status, 1, "'%s' exited %d: %s", args, r->status, r->err);
    cr_expect_eq(count_lines(r->err), 1, "'%s' stderr: %s", args, r->err);
    cr_expect(strstr(r->err, needle), "'%s' stderr lacks '%s': %s", args, needle, r->err);
}

/* Item 6: -o (or --npy) naming one of the files the model was loaded
 * from: weights, config.json, the --labels file. */
Test(outputs, model_files_are_never_outputs) {
    setup_files();
    shell("mkdir -p %s/ev/2 %s/td/x %s/td/y && cp %s %s/ev/2/ && cp %s %s/td/x/ && cp %s %s/td/y/",
          dir, dir, dir, PHOTO, dir, PHOTO, dir, PHOTO, dir);
    const char *forms[] = {
        "classify -m {d}/m/model.safetensors --labels {d}/m/labels.txt {d}/a.png -o {d}/{o}",
        "eval -m {d}/m --labels {d}/m/labels.txt {d}/ev -o {d}/{o}",
        "attention -m {d}/m {d}/a.png -o {d}/{o}",
        "attention -m {d}/m {d}/a.png -o {d}/out.png --npy {d}/{o}",
        "features -m {d}/m {d}/a.png -o {d}/{o}",
        "segment -m {d}/m {d}/a.png -o {d}/{o}",
        "patches -m {d}/m --labels {d}/m/labels.txt {d}/a.png -o {d}/{o}",
        "train --init {d}/m --data {d}/td --epochs 1 -o {d}/{o}",
        "quantize -m {d}/m --dtype int8 -o {d}/{o}",
    };
    const char *model_files[] = {"m/model.safetensors", "m/config.json", "m/labels.txt"};
    for (int i = 0; i < 3; i++)
        for (size_t f = 0; f < sizeof forms / sizeof *forms; f++) {
            /* Only commands given --labels read the labels file. */
            if (i == 2 && !strstr(forms[f], "--labels ")) continue;
            char args[4096];
            expand(forms[f], model_files[i], args, sizeof args);
            expect_refused(args, "would overwrite the model it reads");
            expect_model_intact(args);
        }
    /* Nothing was written anywhere. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test -z \"$(find %s -name 'out*' -o -name '*.lock' -o -name '*.tmp*' -o -name '*.state')\"", dir);
    cr_expect(system(cmd) == 0, "a refused run left files behind");
}

/* Item 7: -o or --npy naming an input, by any spelling or link. */
Test(outputs, inputs_are_never_outputs) {
    setup_files();
    shell("cd %s && ln -s a.png link.png && ln a.png hard.png && mkdir -p d && cp a.png d/p.png && "
          "cp a.png d/q.jpg && cp a.png d/q.png", dir);
    const char *forms[] = {
        "classify -m {d}/m {d}/a.png {d}/b.png -o {d}/a.png",
        "classify -m {d}/m {d}/b.png {d}/a.png -o {d}/./hard.png",
        "classify -m {d}/m {d}/b.png -o {d}/link.png {d}/a.png",
        "segment -m {d}/m {d}/a.png -o {d}/a.png",
        "attention -m {d}/m {d}/a.png -o {d}/d/../a.png",
        "patches -m {d}/m {d}/a.png -o {d}/out.png --npy {d}/a.png",
        "features -m {d}/m {d}/b.png {d}/a.png -o {d}/hard.png",
        /* One output per input: d/p.png onto itself; d/q.jpg onto d/q.png,
         * another input; --npy likewise. */
        "attention -m {d}/m {d}/d -o {d}/d/",
        "attention -m {d}/m {d}/d/q.jpg {d}/d/p.png -o {d}/d/",
        "segment -m {d}/m {d}/d/p.png {d}/d/p.npy -o {d}/out/ --npy {d}/d/",
    };
    shell("cp %s %s/d/p.npy", PHOTO, dir);
    for (size_t f = 0; f < sizeof forms / sizeof *forms; f++) {
        char args[4096];
        expand(forms[f], "", args, sizeof args);
        expect_refused(args, "would overwrite the input");
        const char *files[] = {"a.png", "b.png", "hard.png", "d/p.png", "d/q.jpg", "d/q.png", "d/p.npy"};
        for (int i = 0; i < 7; i++) {
            char path[512];
            snprintf(path, sizeof path, "%s/%s", dir, files[i]);
            expect_file_equals_photo(path, args);
        }
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test -z \"$(find %s -name 'out*' -o -name '*.lock' -o -name '*.tmp*' -o -name '*overlay*')\"", dir);
    cr_expect(system(cmd) == 0, "a refused run left files behind");
}

/* Issue 24: the --files-from list is an input too: -o naming it (by any
 * spelling or link, or as standard input) is refused, for every command
 * that takes a list. */
Test(outputs, files_from_lists_are_never_outputs) {
    setup_files();
    shell("cd %s && printf '%%s/a.png\\n' %s >list.txt && cp list.txt list.orig && "
          "ln -s list.txt link.txt && ln list.txt hard.txt", dir, dir);
    const char *forms[] = {
        "classify -m {d}/m --files-from {d}/list.txt -o {d}/list.txt",
        "classify -m {d}/m {d}/b.png --files-from {d}/list.txt -o {d}/hard.txt",
        "classify --stream -m {d}/m --files-from {d}/list.txt -o {d}/link.txt",
        "features -m {d}/m --files-from {d}/list.txt -o {d}/./list.txt",
        "attention -m {d}/m --files-from {d}/list.txt -o {d}/hard.txt",
        "attention -m {d}/m --files-from {d}/list.txt -o {d}/out.png --npy {d}/link.txt",
        "segment -m {d}/m --files-from {d}/list.txt -o {d}/list.txt",
        "patches -m {d}/m --files-from {d}/list.txt -o {d}/hard.txt",
    };
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cmp -s %s/list.txt %s/list.orig", dir, dir);
    for (size_t f = 0; f < sizeof forms / sizeof *forms; f++) {
        char args[4096];
        expand(forms[f], "", args, sizeof args);
        expect_refused(args, "would overwrite the --files-from list");
        cr_expect(system(cmd) == 0, "the list changed after: %s", args);
    }
    /* The shell opened the list as standard input. */
    snprintf(cmd, sizeof cmd, "cd %s && %s classify -m m --files-from - -o list.txt <list.txt 2>err.txt; "
             "test $? = 1 && grep -q 'would overwrite the --files-from list standard input' err.txt && "
             "cmp -s list.txt list.orig", dir, VIT);
    cr_expect(system(cmd) == 0, "--files-from - <list.txt -o list.txt was not refused");
    snprintf(cmd, sizeof cmd, "test -z \"$(find %s -name 'out*' -o -name '*.lock' -o -name '*.tmp*')\"", dir);
    cr_expect(system(cmd) == 0, "a refused run left files behind");
}

/* Normal use still writes: -o beside the inputs, into the input directory
 * under new names, and over an earlier output. */
Test(outputs, ordinary_outputs_still_work) {
    setup_files();
    char args[2048];
    snprintf(args, sizeof args, "classify -q -m %s/m %s/a.png -o %s/r.csv", dir, dir, dir);
    cr_expect_eq(run(args)->status, 0);
    cr_expect_eq(run(args)->status, 0, "a second run over the same -o: %s", run(args)->err);
    snprintf(args, sizeof args, "segment -q -m %s/m %s/a.png -o %s/a.mask.png --npy %s/a.mask.npy", dir, dir, dir, dir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 0, "%s", r->err);
    snprintf(args, sizeof args, "attention -q -m %s/m %s/a.png %s/b.png -o %s/att/ --npy %s/att/", dir, dir, dir, dir, dir);
    r = run(args);
    cr_expect_eq(r->status, 0, "%s", r->err);
    r = run(args);
    cr_expect_eq(r->status, 0, "rerun over its own outputs: %s", r->err);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "test -s %s/att/a.png && test -s %s/att/b.npy && test -s %s/a.mask.overlay.png", dir, dir, dir);
    cr_expect(system(cmd) == 0, "outputs missing");
    snprintf(cmd, sizeof cmd, "test -z \"$(find %s -name '*.lock')\"", dir);
    cr_expect(system(cmd) == 0, "a lock file was left behind");
}

/* ---------------------------------------------------------- two writers */

/* dir/in/: n hard links to the photo, a run slow enough at -b 1 -t 1 to
 * overlap another one. */
static void make_links(int n) {
    char path[512];
    snprintf(path, sizeof path, "%s/in", dir);
    cr_assert(mkdir(path, 0777) == 0);
    snprintf(path, sizeof path, "%s/in/img00000.png", dir);
    shell("cp %s %s", PHOTO, path);
    for (int i = 1; i < n; i++) {
        char link_path[512];
        snprintf(link_path, sizeof link_path, "%s/in/img%05d.png", dir, i);
        cr_assert(link(path, link_path) == 0, "link: %s", strerror(errno));
    }
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, ms % 1000 * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Waits (up to 60 s) until `ready` holds for path. */
static int wait_for(const char *path, int (*ready)(const char *)) {
    for (int i = 0; i < 6000; i++) {
        if (ready(path)) return 1;
        sleep_ms(10);
    }
    return 0;
}

static int has_two_lines(const char *path) { return count_file_lines(path) >= 2; }

static int exists(const char *path) { return access(path, F_OK) == 0; }

static int wait_exit(pid_t pid) {
    int status;
    cr_assert(waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Every line of a classify CSV whole: a path and 5 x 3 + 1 more fields. */
static void expect_whole_csv(const char *path, int rows) {
    static char text[1 << 20];
    slurp(path, text, sizeof text);
    cr_expect_eq(count_lines(text), rows + 1, "%s: %d lines, expected %d", path, count_lines(text), rows + 1);
    int line = 0;
    for (char *p = text; *p; line++) {
        char *end = strchr(p, '\n');
        cr_assert(end, "%s: last line cut", path);
        int commas = 0;
        for (char *q = p; q < end; q++) commas += *q == ',';
        cr_expect_eq(commas, 16, "%s line %d cut or mixed: %.*s", path, line + 1, (int)(end - p), p);
        if (line > 0) cr_expect(strncmp(p, "img", 3) == 0, "%s line %d: %.*s", path, line + 1, (int)(end - p), p);
        p = end + 1;
    }
}

/* Item 8: a second writer of the same -o is refused at once (exit 1), the
 * first finishes with whole rows, and the lock goes with the process. */
Test(outputs, second_writer_of_a_csv_is_refused, .timeout = 240) {
    shell("cp -r %s %s/m", MODEL_SRC, dir);
    const int n = 3000;
    make_links(n);
    char model[256], in[256], out[256];
    snprintf(model, sizeof model, "%s/m", dir);
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(out, sizeof out, "%s/r.csv", dir);
    for (int resume = 0; resume < 2; resume++) {
        remove(out);
        const char *argv[] = {"classify", "-q", "-b", "1", "-t", "1", "--no-prefetch", "-m", model,
                              "-o", out, in, resume ? "--resume" : NULL, NULL};
        pid_t first = spawn_vit(argv);
        cr_assert(wait_for(out, has_two_lines), "the first run wrote no rows");
        char args[1024];
        snprintf(args, sizeof args, "classify -q -b 1 -m %s -o %s %s%s", model, out, in,
                 resume ? " --resume" : "");
        run_result *r = run(args);
        cr_expect_eq(r->status, 1, "second writer exited %d: %s", r->status, r->err);
        cr_expect_eq(count_lines(r->err), 1, "stderr: %s", r->err);
        cr_expect(strstr(r->err, "is being written by another vit process"), "stderr: %s", r->err);
        cr_expect_eq(wait_exit(first), 0, "the first run failed");
        expect_whole_csv(out, n);
    }
    /* Killed holder: the next run goes ahead. */
    const char *argv[] = {"classify", "-q", "-b", "1", "-t", "1", "--no-prefetch", "-m", model,
                          "-o", out, in, NULL};
    pid_t first = spawn_vit(argv);
    cr_assert(wait_for(out, has_two_lines));
    kill(first, SIGKILL);
    wait_exit(first);
    char args[1024];
    snprintf(args, sizeof args, "classify -q -m %s -o %s %s --resume", model, out, in);
    run_result *r = run(args);
    cr_expect_eq(r->status, 0, "after a kill: %s", r->err);
    expect_whole_csv(out, n);
}

/* The same for outputs written by rename: a directory of pictures (locked
 * itself) and one .npy (OUT.lock beside it, removed at the end; one left by
 * kill -9 blocks nothing). */
Test(outputs, second_writer_of_atomic_outputs_is_refused, .timeout = 240) {
    shell("cp -r %s %s/m && cp %s %s/a.png", MODEL_SRC, dir, PHOTO, dir);
    make_links(3000);
    char model[256], in[256], out[256], probe[300], args[2048];
    snprintf(model, sizeof model, "%s/m", dir);
    snprintf(in, sizeof in, "%s/in", dir);

    snprintf(out, sizeof out, "%s/att/", dir);
    snprintf(probe, sizeof probe, "%s/att/img00000.png", dir);
    const char *argv[] = {"attention", "-q", "-b", "1", "-t", "1", "-m", model, "-o", out, in, NULL};
    pid_t first = spawn_vit(argv);
    cr_assert(wait_for(probe, exists), "the first run wrote nothing");
    snprintf(args, sizeof args, "attention -q -m %s -o %s %s/a.png", model, out, dir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 1, "second writer exited %d: %s", r->status, r->err);
    cr_expect(strstr(r->err, "is being written by another vit process"), "stderr: %s", r->err);
    snprintf(probe, sizeof probe, "%s/att/a.png", dir);
    cr_expect(!exists(probe), "the refused run wrote %s", probe);
    kill(first, SIGKILL);
    wait_exit(first);
    r = run(args);
    cr_expect_eq(r->status, 0, "after the holder was killed: %s", r->err);

    snprintf(out, sizeof out, "%s/f.npy", dir);
    snprintf(probe, sizeof probe, "%s/f.npy.lock", dir);
    const char *fargv[] = {"features", "-q", "-b", "1", "-t", "1", "-m", model, "-o", out, in, NULL};
    first = spawn_vit(fargv);
    cr_assert(wait_for(probe, exists), "no lock file beside %s", out);
    sleep_ms(200);
    snprintf(args, sizeof args, "features -q -m %s -o %s %s/a.png", model, out, dir);
    r = run(args);
    cr_expect_eq(r->status, 1, "second writer exited %d: %s", r->status, r->err);
    cr_expect(strstr(r->err, "is being written by another vit process"), "stderr: %s", r->err);
    kill(first, SIGKILL);
    wait_exit(first);
    cr_expect(exists(probe), "kill -9 should leave the lock file (the test relies on it)");
    r = run(args);
    cr_expect_eq(r->status, 0, "a stale lock file blocked the next run: %s", r->err);
    cr_expect(!exists(probe), "the lock file was not removed");
    cr_expect(exists(out));
}

/* ------------------------------------------- unwritable outputs, options */

/* Item 18a: an output that cannot be written is fatal, exit 1, one line,
 * for every inspection command: a single -o, a --npy, and a per-input
 * output in a DIR whose subdirectory cannot be made. */
Test(outputs, unwritable_output_is_fatal) {
    shell("cp -r %s %s/m && cp %s %s/a.png && touch %s/blocker && mkdir -p %s/in/sub %s/out && "
          "cp %s %s/in/sub/x.png && touch %s/out/sub",
          MODEL_SRC, dir, PHOTO, dir, dir, dir, dir, PHOTO, dir, dir);
    const char *commands[] = {"attention", "segment", "patches", "features"};
    for (int c = 0; c < 4; c++) {
        char args[2048];
        const char *ext = c == 3 ? "npy" : "png";
        snprintf(args, sizeof args, "%s -q -m %s/m %s/a.png -o %s/blocker/x.%s", commands[c], dir,
                 dir, dir, ext);
        expect_refused(args, "blocker/x.");
        if (c == 3) continue;
        snprintf(args, sizeof args, "%s -q -m %s/m %s/a.png -o %s/y.png --npy %s/blocker/y.npy",
                 commands[c], dir, dir, dir, dir);
        expect_refused(args, "blocker/y.npy");
        snprintf(args, sizeof args, "%s -q -m %s/m %s/in -o %s/out/", commands[c], dir, dir, dir);
        expect_refused(args, "out/sub");
    }
}

/* An output that exists and is not a regular file is never renamed over:
 * the atomic writers would replace it (run as root, -o /dev/null turned
 * /dev/null into a regular file). A FIFO stands in for the device here. */
Test(outputs, devices_and_fifos_are_never_replaced) {
    shell("cp -r %s %s/m && cp %s %s/a.png && mkfifo %s/fifo && mkdir -p %s/ev/2 && cp %s %s/ev/2/",
          MODEL_SRC, dir, PHOTO, dir, dir, dir, PHOTO, dir);
    const char *forms[] = {
        "attention -q -m {d}/m {d}/a.png -o {o}",
        "segment -q -m {d}/m {d}/a.png -o {d}/s.png --npy {o}",
        "features -q -m {d}/m {d}/a.png -o {o}",
        "quantize -m {d}/m --dtype int8 -o {o}",
        "eval -m {d}/m {d}/ev -o {o}",
    };
    char fifo[512];
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        char args[2048];
        expand(forms[i], fifo, args, sizeof args);
        expect_refused(args, "would replace it");
        struct stat st;
        cr_expect(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode), "the FIFO was replaced by: %s", args);
    }
}

/* Item 18b: an option conflict names the options given. */
Test(outputs, option_conflicts_name_the_options_given) {
    const struct { const char *options, *present, *absent; } cases[] = {
        {"--grid --head 1", "--grid", "--rollout"},
        {"--rollout --head 1", "--head", "--grid"},
        {"--rollout --grid", "--grid", "--head"},
        {"--discard 0.5", "--discard", "--grid"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[2048];
        snprintf(args, sizeof args, "attention -m %s %s %s -o %s/x.png", MODEL_SRC, PHOTO,
                 cases[i].options, dir);
        run_result *r = run(args);
        cr_expect_eq(r->status, 1, "%s: %s", cases[i].options, r->err);
        cr_expect_eq(count_lines(r->err), 1, "%s: %s", cases[i].options, r->err);
        cr_expect(strstr(r->err, cases[i].present) && !strstr(r->err, cases[i].absent),
                  "%s: %s", cases[i].options, r->err);
        if (strstr(cases[i].options, "--head"))
            cr_expect(strstr(r->err, "--head"), "%s: %s", cases[i].options, r->err);
    }
}
