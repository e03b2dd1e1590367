/* Inputs from pipelines: --files-from lists (lines or NUL-separated, after
 * the PATHs, as listed, refused when malformed) and classify --stream,
 * whose rows come back while its input is still open and are the same as
 * a plain classify run's. */
#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>

#include "test_util.h"

#define MODEL VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3"
#define APPLE VITC_SOURCE_DIR "/tests/fixtures/real/apple.png"
#define POLARS VITC_SOURCE_DIR "/tests/fixtures/real/polars.png"
#define LOSSY VITC_SOURCE_DIR "/tests/fixtures/webp/lossy.webp"

TEMP_DIR_SUITE(inputs);

/* Runs "vit ARGS" with standard input from the file at input. */
static run_result *run_with_input(const char *input, const char *args) {
    static run_result r;
    char cmd[8192], out_path[96], err_path[96];
    snprintf(out_path, sizeof out_path, "%s/stdout", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    snprintf(cmd, sizeof cmd, "timeout -s KILL 120 %s %s >%s 2>%s <%s", VIT, args, out_path, err_path,
             input);
    const int raw = system(cmd);
    cr_assert(WIFEXITED(raw), "'%s' did not exit normally", cmd);
    r.status = WEXITSTATUS(raw);
    slurp(out_path, r.out, sizeof r.out);
    slurp(err_path, r.err, sizeof r.err);
    return &r;
}

/* Writes len bytes of text to dir/name; returns the path (static). */
static const char *write_list(const char *name, const char *text, size_t len) {
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert(f);
    cr_assert_eq(fwrite(text, 1, len, f), len);
    fclose(f);
    return path;
}

static char expected[sizeof ((run_result *)0)->out];

/* What plain classify prints for PATHs, for comparison. */
static void classify_plain(const char *format, const char *paths) {
    char args[4096];
    snprintf(args, sizeof args, "classify -q -k 3 --format %s -m " MODEL " %s", format, paths);
    run_result *r = run(args);
    cr_assert(r->status == 0 || r->status == 2, "stderr: %s", r->err);
    snprintf(expected, sizeof expected, "%s", r->out);
}

/* ------------------------------------------------------------ --files-from */

Test(inputs, files_from_lines_after_the_paths_as_listed) {
    classify_plain("csv", POLARS " " APPLE " " LOSSY " " APPLE);
    const char list[] = APPLE "\n\n" LOSSY "\n" APPLE; /* blank line skipped, last without \n */
    const char *path = write_list("list.txt", list, sizeof list - 1);
    char args[1024];
    snprintf(args, sizeof args, "classify -q -k 3 --format csv -m " MODEL " " POLARS " --files-from %s",
             path);
    run_result *r = run(args);
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
    cr_expect_str_eq(r->out, expected);
}

Test(inputs, files_from_stdin_nul_separated) {
    classify_plain("jsonl", APPLE " " POLARS);
    const char list[] = APPLE "\0" POLARS "\0";
    const char *path = write_list("list0", list, sizeof list - 1);
    run_result *r = run_with_input(path, "classify -q -k 3 --format jsonl -m " MODEL " --files-from - -0");
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
    cr_expect_str_eq(r->out, expected);
}

/* Listed paths are files, never walked: a directory is one failed row. */
Test(inputs, listed_directories_are_not_walked) {
    char list[256];
    const int n = snprintf(list, sizeof list, "%s\n" APPLE "\n", VITC_SOURCE_DIR "/tests/fixtures/webp");
    const char *path = write_list("list.txt", list, (size_t)n);
    char args[1024];
    snprintf(args, sizeof args, "classify -q --format csv -m " MODEL " --files-from %s", path);
    run_result *r = run(args);
    cr_expect_eq(r->status, 2, "stderr: %s", r->err);
    cr_expect_eq(count_lines(r->out), 3, "stdout: %s", r->out);
    cr_expect(strstr(r->err, "is a directory"), "stderr: %s", r->err);
}

Test(inputs, malformed_unreadable_and_empty_lists_are_one_line) {
    const char *crlf = write_list("crlf.txt", APPLE "\r\n", sizeof APPLE + 1);
    char args[1024];
    snprintf(args, sizeof args, "classify -m " MODEL " --files-from %s", crlf);
    run_result *r = run(args);
    cr_expect_eq(r->status, 1);
    cr_expect(count_lines(r->err) == 1 && strstr(r->err, "crlf.txt: line 1 ends in a carriage return"),
              "stderr: %s", r->err);
    cr_expect_str_empty(r->out);

    /* An over-long line refuses the list like the others: the message must
     * not say it was skipped (it said so while the run stopped, exit 1). */
    static char overlong[5000];
    memset(overlong, 'x', sizeof overlong - 1);
    overlong[sizeof overlong - 2] = '\n';
    const char *longlist = write_list("long.txt", overlong, sizeof overlong - 1);
    snprintf(args, sizeof args, "classify -m " MODEL " " APPLE " --files-from %s", longlist);
    r = run(args);
    cr_expect_eq(r->status, 1);
    cr_expect(count_lines(r->err) == 1 && strstr(r->err, "long.txt: line 1 is longer than PATH_MAX") &&
                  !strstr(r->err, "skipped"),
              "stderr: %s", r->err);
    cr_expect_str_empty(r->out);

    r = run("classify -m " MODEL " --files-from /nonexistent/list.txt");
    cr_expect_eq(r->status, 1);
    cr_expect(count_lines(r->err) == 1 && strstr(r->err, "/nonexistent/list.txt"), "stderr: %s", r->err);

    const char *blank = write_list("blank.txt", "\n\n", 2);
    r = run_with_input(blank, "classify -m " MODEL " --files-from -");
    cr_expect_eq(r->status, 1);
    cr_expect(count_lines(r->err) == 1 && strstr(r->err, "no paths in --files-from standard input"),
              "stderr: %s", r->err);

    r = run("classify -m " MODEL " -0 " APPLE);
    cr_expect_eq(r->status, 1);
    cr_expect(strstr(r->err, "--files-from"), "stderr: %s", r->err);
}

/* The inspection commands take lists the same way. */
Test(inputs, features_takes_a_list) {
    const char *list = write_list("list.txt", APPLE "\n" POLARS "\n", sizeof APPLE + sizeof POLARS);
    char args[1024];
    snprintf(args, sizeof args, "features -q -m " MODEL " -o %s/f.npy --files-from %s", dir, list);
    run_result *r = run(args);
    cr_expect_eq(r->status, 0, "stderr: %s", r->err);
    char jsonl[256], text[4096];
    snprintf(jsonl, sizeof jsonl, "%s/f.files.jsonl", dir);
    slurp(jsonl, text, sizeof text);
    cr_expect(strstr(text, "apple.png") && strstr(text, "polars.png"), "%s: %s", jsonl, text);
}

/* ---------------------------------------------------------------- --stream */

typedef struct streamer {
    pid_t pid;
    int in, out; /* our ends: its stdin, its stdout */
    char got[1 << 16];
    size_t length;
} streamer;

/* output: -o OUTPUT (NULL: the rows come on stdout). */
static void stream_start_to(streamer *s, const char *format, const char *output) {
    int to[2], from[2];
    cr_assert(pipe(to) == 0 && pipe(from) == 0);
    char err_path[96];
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    s->pid = fork();
    cr_assert(s->pid >= 0);
    if (s->pid == 0) {
        dup2(to[0], 0);
        dup2(from[1], 1);
        const int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (err >= 0) dup2(err, 2);
        close(to[1]);
        close(from[0]);
        if (output)
            execl(VIT, VIT, "classify", "--stream", "-k", "3", "--format", format, "-m", MODEL, "-o",
                  output, (char *)NULL);
        else
            execl(VIT, VIT, "classify", "--stream", "-k", "3", "--format", format, "-m", MODEL,
                  (char *)NULL);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    s->in = to[1];
    s->out = from[0];
    s->length = 0;
    s->got[0] = '\0';
}

static void stream_start(streamer *s, const char *format) { stream_start_to(s, format, NULL); }

static void stream_send(streamer *s, const char *text) {
    cr_assert_eq(write(s->in, text, strlen(text)), (ssize_t)strlen(text));
}

/* Reads its output until it holds `lines` lines (or EOF when lines < 0),
 * failing after 60 s. */
static void stream_read(streamer *s, int lines) {
    while (lines < 0 || count_lines(s->got) < lines) {
        struct pollfd p = {.fd = s->out, .events = POLLIN};
        cr_assert_gt(poll(&p, 1, 60000), 0, "no row after 60 s; got: %s", s->got);
        const ssize_t n = read(s->out, s->got + s->length, sizeof s->got - 1 - s->length);
        cr_assert_geq(n, 0);
        if (n == 0) {
            cr_assert_lt(lines, 0, "output ended early: %s", s->got);
            break;
        }
        s->length += (size_t)n;
        s->got[s->length] = '\0';
    }
}

static int stream_wait(streamer *s) {
    int status;
    cr_assert_eq(waitpid(s->pid, &status, 0), s->pid);
    close(s->out);
    return status;
}

Test(inputs, stream_answers_each_batch_before_the_input_ends, .timeout = 240) {
    classify_plain("csv", APPLE " " POLARS " /nonexistent.png " LOSSY);
    streamer s;
    stream_start(&s, "csv");
    stream_send(&s, APPLE "\n");
    /* Header and the first row, with the pipe still open: written at once. */
    stream_read(&s, 2);
    stream_send(&s, POLARS "\n/nonexistent.png\n" LOSSY "\n");
    close(s.in);
    stream_read(&s, -1);
    const int status = stream_wait(&s);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 2, "status %d", status);
    cr_expect_str_eq(s.got, expected);
    char err_path[96], err[4096];
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    slurp(err_path, err, sizeof err);
    cr_expect(strstr(err, "/nonexistent.png") && strstr(err, "4 files, 1 failed"), "stderr: %s", err);
}

Test(inputs, stream_jsonl_and_a_closed_json_array, .timeout = 240) {
    classify_plain("jsonl", APPLE " " POLARS);
    streamer s;
    stream_start(&s, "jsonl");
    stream_send(&s, APPLE "\n");
    stream_read(&s, 1);
    stream_send(&s, POLARS);  /* the last entry needs no newline */
    close(s.in);
    stream_read(&s, -1);
    int status = stream_wait(&s);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    cr_expect_str_eq(s.got, expected);

    stream_start(&s, "json");
    stream_send(&s, APPLE "\n" POLARS "\n");
    close(s.in);
    stream_read(&s, -1);
    status = stream_wait(&s);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    cJSON *json = cJSON_Parse(s.got);
    cr_expect(cJSON_IsArray(json) && cJSON_GetArraySize(json) == 2, "not a closed array: %s", s.got);
    cJSON_Delete(json);
}

/* A line no path can be is one failed row; the stream goes on. */
Test(inputs, stream_overlong_line_is_one_failed_row, .timeout = 240) {
    streamer s;
    stream_start(&s, "csv");
    static char line[10000];
    memset(line, 'x', sizeof line - 2);
    line[sizeof line - 2] = '\n';
    stream_send(&s, line);
    stream_send(&s, APPLE "\n");
    close(s.in);
    stream_read(&s, -1);
    const int status = stream_wait(&s);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 2, "status %d", status);
    cr_expect_eq(count_lines(s.got), 3, "%s", s.got);
    cr_expect(strstr(s.got, "longer than PATH_MAX"), "%s", s.got);
    cr_expect(strstr(s.got, "\n" APPLE ",4,"), "%s", s.got);
}

Test(inputs, stream_stops_on_sigterm_after_its_batch, .timeout = 240) {
    streamer s;
    stream_start(&s, "csv");
    stream_send(&s, APPLE "\n");
    stream_read(&s, 2);
    cr_assert_eq(wait_until_catching(s.pid, SIGTERM), 0);
    kill(s.pid, SIGTERM);
    const int status = stream_wait(&s);
    close(s.in);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 143, "status %d", status);
}

/* A stream cannot be resumed, so its stop message must not offer --resume
 * (it did, for -o with a resumable format). */
Test(inputs, stream_stopped_by_sigterm_does_not_offer_resume, .timeout = 240) {
    char rows[96], err_path[96], err[4096], text[4096];
    snprintf(rows, sizeof rows, "%s/rows.csv", dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    streamer s;
    stream_start_to(&s, "csv", rows);
    stream_send(&s, APPLE "\n");
    for (int waited = 0; waited < 600; waited++) { /* the header and one row */
        slurp(rows, text, sizeof text);
        if (count_lines(text) >= 2) break;
        nanosleep(&(struct timespec){0, 100000000}, NULL);
    }
    cr_assert_eq(count_lines(text), 2, "rows: %s", text);
    cr_assert_eq(wait_until_catching(s.pid, SIGTERM), 0);
    kill(s.pid, SIGTERM);
    const int status = stream_wait(&s);
    close(s.in);
    cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 143, "status %d", status);
    slurp(err_path, err, sizeof err);
    cr_expect(strstr(err, "stopped by SIGTERM") && !strstr(err, "--resume"), "stderr: %s", err);
}

Test(inputs, stream_refuses_resume_shard_and_paths) {
    run_result *r = run("classify --stream --shard 0/2 -m " MODEL);
    cr_expect(r->status == 1 && count_lines(r->err) == 1 && strstr(r->err, "--shard"), "%s", r->err);
    r = run("classify --stream --resume -o /tmp/x.csv -m " MODEL);
    cr_expect(r->status == 1 && count_lines(r->err) == 1 && strstr(r->err, "--resume"), "%s", r->err);
    r = run("classify --stream -m " MODEL " " APPLE);
    cr_expect(r->status == 1 && count_lines(r->err) == 1 && strstr(r->err, "PATH"), "%s", r->err);
}

/* --all-classes streams as it runs plainly; formats that need every image
 * before the end (npy, hf) are refused. */
Test(inputs, stream_all_classes_and_refused_formats) {
    run_result *r = run("classify --all-classes logits --format csv -m " MODEL " " APPLE " " POLARS);
    cr_assert_eq(r->status, 0, "%s", r->err);
    snprintf(expected, sizeof expected, "%s", r->out);
    char out_path[96];
    static char got[sizeof expected];
    snprintf(out_path, sizeof out_path, "%s/stream.csv", dir);
    shell("printf '%%s\\n%%s\\n' " APPLE " " POLARS " | " VIT " classify --stream -q --all-classes "
          "logits --format csv -m " MODEL " > %s", out_path);
    slurp(out_path, got, sizeof got);
    cr_expect_str_eq(got, expected);
    r = run("classify --stream --all-classes probs -o /tmp/never.npy -m " MODEL);
    cr_expect(r->status == 1 && count_lines(r->err) == 1 && strstr(r->err, "npy"), "%s", r->err);
    r = run("classify --stream --format hf -m " MODEL);
    cr_expect(r->status == 1 && count_lines(r->err) == 1 && strstr(r->err, "hf"), "%s", r->err);
}
