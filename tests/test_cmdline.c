/* The command line as getopt_long users know it, and help texts that fit an
 * 80-column terminal and say what the docs say. Runs the built vit. */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#define MODEL VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3"
#define PHOTO VITC_SOURCE_DIR "/tests/fixtures/real/apple.png"

static const char *const COMMANDS[] = {"classify", "eval",     "info",  "attention", "features",
                                       "segment",  "patches", "train", "quantize",
                                       "serve"};
#define NUM_COMMANDS (sizeof COMMANDS / sizeof *COMMANDS)

/* Every spelling getopt_long accepts gives the same rows as the plain one. */
Test(cmdline, getopt_spellings_agree) {
    static char expected[sizeof ((run_result *)0)->out];
    run_result *r = run("classify -q -m " MODEL " -k 3 " PHOTO);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert_eq(count_lines(r->out), 4, "%s", r->out);
    snprintf(expected, sizeof expected, "%s", r->out);
    static const char *const spellings[] = {
        "classify -q -m " MODEL " -k3 " PHOTO,             /* value glued to the letter */
        "classify -qk3 -m " MODEL " " PHOTO,               /* bundled flags, then a value */
        "classify -qk 3 -m" MODEL " " PHOTO,               /* -mMODEL */
        "classify --quiet --top-k=3 --model=" MODEL " " PHOTO,
        "classify --qui --top=3 --mod " MODEL " " PHOTO,   /* unambiguous prefixes */
        "classify " PHOTO " -q -m " MODEL " --top-k 3",    /* options after the operand */
    };
    for (size_t i = 0; i < sizeof spellings / sizeof *spellings; i++) {
        r = run(spellings[i]);
        cr_expect_eq(r->status, 0, "%s: %s", spellings[i], r->err);
        cr_expect_str_eq(r->out, expected, "%s", spellings[i]);
        cr_expect_str_empty(r->err, "%s", spellings[i]);
    }
}

/* A refused option: one line worded as glibc's getopt words it, naming the
 * option, status 1, nothing on stdout. */
Test(cmdline, getopt_errors_are_one_line) {
    static const struct {
        const char *args, *says;
    } cases[] = {
        {"classify --bogus " PHOTO, "unrecognized option '--bogus' (see 'vit classify -h')"},
        {"classify -Z " PHOTO, "invalid option -- 'Z'"},
        {"classify --t 3 " PHOTO, "option '--t' is ambiguous; possibilities: '--top-k' '--threads'"},
        {"classify --quiet=yes " PHOTO, "option '--quiet' doesn't allow an argument"},
        {"classify " PHOTO " -k", "option requires an argument -- 'k'"},
        {"classify " PHOTO " --top-k", "option '--top-k' requires an argument"},
        {"classify -k x " PHOTO, "-k expects a whole number"},
        {"segment -k 3 -o x.png " PHOTO, "invalid option -- 'k'"}, /* clusters have their own name */
        {"info --max-pixels 5", "unrecognized option '--max-pixels'"}, /* info reads no image */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        run_result *r = run(cases[i].args);
        cr_expect_eq(r->status, 1, "%s", cases[i].args);
        cr_expect_eq(count_lines(r->err), 1, "%s: %s", cases[i].args, r->err);
        cr_expect(strstr(r->err, cases[i].says), "%s: %s", cases[i].args, r->err);
        cr_expect_str_empty(r->out, "%s", cases[i].args);
    }
}

/* "--" ends the options: a file named like one is still a file. */
Test(cmdline, double_dash_ends_options) {
    run_result *r = run("classify -q -m " MODEL " -- -q");
    cr_expect_eq(r->status, 2, "%s", r->err);
    cr_expect(strstr(r->err, "-q: cannot open"), "%s", r->err);
}

/* Every help text fits 80 columns (counted in characters, not bytes). */
Test(cmdline, help_fits_80_columns) {
    char args[64];
    for (size_t c = 0; c <= NUM_COMMANDS; c++) {
        snprintf(args, sizeof args, "%s -h", c < NUM_COMMANDS ? COMMANDS[c] : "");
        run_result *r = run(args);
        cr_expect_eq(r->status, 0, "%s", args);
        int column = 0, line = 1;
        for (const unsigned char *p = (const unsigned char *)r->out; *p; p++) {
            if (*p == '\n') {
                column = 0;
                line++;
            } else if ((*p & 0xC0) != 0x80 && ++column == 81) {
                cr_expect(0, "'vit %s' line %d is over 80 columns", args, line);
            }
        }
    }
}

/* The README and every page under docs/, one after the other. */
static void read_docs(char *docs, size_t size) {
    FILE *fp = popen("cat " VITC_SOURCE_DIR "/README.md " VITC_SOURCE_DIR "/docs/*.md", "r");
    cr_assert(fp, "cannot read the docs");
    const size_t n = fread(docs, 1, size - 1, fp);
    docs[n] = '\0';
    pclose(fp);
    cr_assert(n > 0 && n < size - 1, "the docs are empty or larger than %zu bytes", size);
}

/* Help and docs say the same: every option a command's help lists is in
 * the README or a page under docs/ (by its long name, or its short letter
 * in backquotes). */
Test(cmdline, every_option_in_help_is_documented) {
    static char readme[1 << 21];
    read_docs(readme, sizeof readme);
    for (size_t c = 0; c < NUM_COMMANDS; c++) {
        char args[64];
        snprintf(args, sizeof args, "%s -h", COMMANDS[c]);
        run_result *r = run(args);
        for (char *line = strtok(r->out, "\n"); line; line = strtok(NULL, "\n")) {
            char shortname = 0, name[64];
            /* "  -k, --top-k N   ..." or "      --size S   ..." */
            /* (A long-only line matches the first pattern's "  -%c" too,
             * with '-' as the letter: that is no short option.) */
            if (sscanf(line, "  -%c, --%63[a-z0-9-]", &shortname, name) != 2) {
                shortname = 0;
                if (sscanf(line, "      --%63[a-z0-9-]", name) != 1) continue;
            }
            if (strcmp(name, "help") == 0) continue;
            char as_long[80], as_short[8];
            snprintf(as_long, sizeof as_long, "--%s", name);
            snprintf(as_short, sizeof as_short, "`-%c", shortname);
            int found = 0;
            for (const char *at = readme; !found && (at = strstr(at, as_long)); at++)
                found = !(isalnum((unsigned char)at[strlen(as_long)]) || at[strlen(as_long)] == '-');
            if (!found && shortname) found = strstr(readme, as_short) != NULL;
            cr_expect(found, "vit %s %s is in neither README.md nor docs/", COMMANDS[c], as_long);
        }
    }
}

/* eval's stdout is the accuracy alone (as the README shows), -q silences
 * the rest, and its per-image CSV names the first column as classify does. */
Test(cmdline, eval_output_and_quiet) {
    char dir[] = "/tmp/vitc-cmdline-XXXXXX";
    cr_assert(mkdtemp(dir));
    shell("mkdir -p %s/4 && cp %s %s/4/a.png", dir, PHOTO, dir);
    char args[512];
    snprintf(args, sizeof args, "eval -m " MODEL " -o %s/out.csv %s", dir, dir);
    run_result *r = run(args);
    cr_expect_eq(r->status, 0, "%s", r->err);
    cr_expect_eq(count_lines(r->out), 1, "%s", r->out);
    cr_expect(strncmp(r->out, "top-1 ", 6) == 0, "%s", r->out);
    cr_expect(strstr(r->err, "images/s"), "no timings on stderr: %s", r->err);
    char csv_path[128], csv[4096];
    snprintf(csv_path, sizeof csv_path, "%s/out.csv", dir);
    slurp(csv_path, csv, sizeof csv);
    cr_expect(strncmp(csv, "path,", 5) == 0, "%s", csv);
    snprintf(args, sizeof args, "eval -q -m " MODEL " %s", dir);
    r = run(args);
    cr_expect_eq(r->status, 0, "%s", r->err);
    cr_expect_str_empty(r->err);
    cr_expect_eq(count_lines(r->out), 1, "%s", r->out);
    shell("rm -rf %s", dir);
}

/* Without -m, info says it describes the shipped default. */
Test(cmdline, info_names_the_default_model) {
    run_result *r = run("info");
    cr_expect_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->out, "default model: no -m given"), "%s", r->out);
    r = run("info -m " MODEL);
    cr_expect(!strstr(r->out, "default model"), "%s", r->out);
}

/* OpenMP threads sleep at barriers unless the user says otherwise (cli/main.c):
 * libgomp prints the spin count it chose from the environment when
 * OMP_DISPLAY_ENV=verbose (0: sleep at once; 300000 its own default). Only
 * where libgomp is linked into the program, whose default can precede it. */
Test(cmdline, openmp_threads_wait_passively_by_default) {
#ifndef VITC_PROGRAM_STATIC_GOMP
    cr_skip_test("the program links the shared libgomp, which reads the environment first");
#endif
    setenv("OMP_DISPLAY_ENV", "verbose", 1);
    run_result *r = run("--version");
    cr_expect(strstr(r->err, "GOMP_SPINCOUNT = '0'"), "%s", r->err);
    setenv("OMP_WAIT_POLICY", "active", 1);
    r = run("--version");
    cr_expect(strstr(r->err, "OMP_WAIT_POLICY = 'ACTIVE'"), "%s", r->err);
    unsetenv("OMP_WAIT_POLICY");
    setenv("GOMP_SPINCOUNT", "10000", 1);
    r = run("--version");
    cr_expect(strstr(r->err, "GOMP_SPINCOUNT = '10000'"), "%s", r->err);
    unsetenv("GOMP_SPINCOUNT");
    unsetenv("OMP_DISPLAY_ENV");
}

/* fashion-mnist with the default ImageNet model has no meaningful accuracy:
 * refused with the model to use (before the dataset is even looked for). */
Test(cmdline, fashion_mnist_needs_its_model) {
    run_result *r = run("eval fashion-mnist");
    cr_expect_eq(r->status, 1);
    cr_expect_eq(count_lines(r->err), 1, "%s", r->err);
    cr_expect(strstr(r->err, "-m weights/fashion-mnist-vit.safetensors"), "%s", r->err);
}

/* On a narrow terminal the progress line is cut to its width (it never
 * wraps), and is erased before an error line. script(1) gives vit a
 * terminal 30 columns wide. */
Test(cmdline, progress_fits_a_narrow_terminal) {
    if (system("command -v script >/dev/null 2>&1") != 0) {
        fprintf(stderr, "skipped: script(1) (bsdutils) is not installed\n");
        return;
    }
    char dir[] = "/tmp/vitc-cmdline-XXXXXX";
    cr_assert(mkdtemp(dir));
    make_photos(dir, 5);
    shell("printf 'not an image' > %s/in/img003.png", dir);
    /* stderr is the terminal; what reaches it is kept in the typescript. */
    shell("script -qec \"stty cols 30; %s classify -m %s -b 1 %s/in >/dev/null\" "
          "%s/typescript >/dev/null </dev/null || true", VIT, MODEL, dir, dir);
    static char err[65536];
    char path[128];
    snprintf(path, sizeof path, "%s/typescript", dir);
    slurp(path, err, sizeof err);
    cr_assert(strstr(err, "img003.png"), "no error line: %s", err);
    /* Every piece between carriage returns / line ends is at most 29 wide
     * once the erase-line sequence is taken out. */
    int drawn = 0, width = 0;
    for (const char *p = err; *p; p++) {
        if (*p == '\r' || *p == '\n') {
            width = 0;
            continue;
        }
        if (strncmp(p, "\033[K", 3) == 0) {
            p += 2;
            continue;
        }
        if (strncmp(p, "  ", 2) == 0 && width == 0 && strstr(p, "files")) drawn = 1;
        width++;
        /* Error and summary lines are not cut; only the progress line is. */
        const char *line_start = p - (width - 1);
        if (width == 30 && strncmp(line_start, "vit ", 4) != 0 &&
            strncmp(line_start, "Script ", 7) != 0) /* script(1)'s own header and footer */
            cr_expect(0, "progress piece over 29 columns: %.40s", line_start);
    }
    cr_expect(drawn, "no progress line drawn: %s", err);
    /* The error line starts on a cleared line, not after progress text. */
    const char *at = strstr(err, "vit classify: ");
    cr_assert(at);
    cr_expect(at >= err + 4 && strncmp(at - 4, "\r\033[K", 4) == 0, "error not on a cleared line: %s",
              err);
    shell("rm -rf %s", dir);
}
