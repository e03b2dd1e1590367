/* Crash safety of batch runs: kill -9 at many random (seeded) moments, each
 * time resume, and check that the results file never holds a torn row
 * other than a cut last line, never a row twice, never a row that differs
 * from the uninterrupted run's, and ends byte-for-byte equal to it. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <time.h>

#include "test_util.h"

#define MODEL VITC_SOURCE_DIR "/tests/fixtures/parity/hf_vit_d48_h3"
#define KILLS 60

TEMP_DIR_SUITE(crash);

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000.0) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Runs to the end; returns the exit status. */
static int run_to_end(const char *const *argv) {
    int status;
    cr_assert(waitpid(spawn_vit(argv), &status, 0) > 0);
    cr_assert(WIFEXITED(status), "vit did not exit normally");
    return WEXITSTATUS(status);
}

/* Every complete line of text is a line of reference, none twice, and only
 * the last line may be cut (then it starts a line of reference). */
static int expect_whole_rows(const char *text, const char *reference, int kill_number) {
    static char seen[1 << 16];
    const int ref_lines = count_lines(reference);
    cr_assert(ref_lines < (int)sizeof seen);
    memset(seen, 0, (size_t)ref_lines);
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        const size_t len = end ? (size_t)(end - line + 1) : strlen(line);
        /* Find it among the reference lines. */
        int found = -1, index = 0;
        for (const char *r = reference; *r; index++) {
            const char *r_end = strchr(r, '\n');
            const size_t r_len = (size_t)(r_end - r + 1);
            if (len <= r_len && memcmp(line, r, len) == 0 && (end || len < r_len)) {
                found = index;
                break;
            }
            r = r_end + 1;
        }
        cr_assert(found >= 0, "kill %d: a row not in the uninterrupted output: '%.*s'", kill_number,
                  (int)len, line);
        if (!end) return 1; /* a cut last line, dropped by the next --resume */
        cr_assert(!seen[found], "kill %d: row written twice: '%.*s'", kill_number, (int)len, line);
        seen[found] = 1;
        line = end + 1;
    }
    return 0;
}

/* Kills runs of `vit classify --resume -o out` at random moments within
 * about the time the rows still missing take, until `kills` kills have
 * landed; each run that finishes must have produced exactly the reference,
 * and then starts over from an empty file. Counts finished runs and kills
 * that left a cut last row. */
static void kill_and_resume(const char *format, int kills, unsigned *seed, int *finished, int *cut) {
    char in[128], ref[128], out[128];
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(ref, sizeof ref, "%s/ref.%s", dir, format);
    snprintf(out, sizeof out, "%s/out.%s", dir, format);
    const char *const ref_args[] = {"classify", "-q", "-k", "2", "-b", "2", "-t", "2", "-m", MODEL,
                                    "-o", ref, in, NULL};
    const double start = now_ms();
    cr_assert_eq(run_to_end(ref_args), 2, "the directory has two unreadable files");
    const double full_ms = now_ms() - start;
    static char reference[1 << 20], text[1 << 20];
    slurp(ref, reference, sizeof reference);
    cr_assert(count_lines(reference) >= 40);

    const char *const args[] = {"classify", "-q", "-k", "2", "-b", "2", "-t", "2", "-m", MODEL,
                                "--resume", "-o", out, in, NULL};
    int landed = 0;
    for (int attempt = 0; landed < kills; attempt++) {
        cr_assert(attempt < 20 * kills, "kills keep missing (a run takes %.0f ms)", full_ms);
        slurp(out, text, sizeof text);
        const double missing = 1.0 - (double)count_lines(text) / count_lines(reference);
        const double delay = full_ms * (0.15 + missing) * rand_r(seed) / RAND_MAX;
        pid_t pid = spawn_vit(args);
        sleep_ms(delay);
        kill(pid, SIGKILL);
        int status;
        cr_assert(waitpid(pid, &status, 0) > 0);
        slurp(out, text, sizeof text);
        if (WIFSIGNALED(status)) {
            landed++;
            *cut += expect_whole_rows(text, reference, landed);
            continue;
        }
        /* Finished before the kill: a complete, exact file. (Status 0 when
         * the unreadable files were in batches written before.) */
        cr_assert(WIFEXITED(status) && (WEXITSTATUS(status) == 2 || WEXITSTATUS(status) == 0),
                  "status %d", status);
        cr_assert_str_eq(text, reference, "a resumed %s run differs from the uninterrupted one", format);
        ++*finished;
        cr_assert(unlink(out) == 0);
    }
    /* Resume the last killed run to the end. */
    const int last = run_to_end(args);
    cr_assert(last == 0 || last == 2, "status %d", last);
    slurp(out, text, sizeof text);
    cr_assert_str_eq(text, reference, "the final %s file differs from the uninterrupted run", format);
    ++*finished;
}

Test(crash, kill_9_at_random_points_then_resume, .timeout = 600) {
    make_photos(dir, 40);
    shell("printf 'not an image' > %s/in/img17.png && head -c 300 %s/in/img23.png > %s/in/img23b.png",
          dir, dir, dir);
    unsigned seed = 8;
    int csv_runs = 0, jsonl_runs = 0, cut = 0;
    kill_and_resume("csv", KILLS / 2, &seed, &csv_runs, &cut);
    kill_and_resume("jsonl", KILLS - KILLS / 2, &seed, &jsonl_runs, &cut);
    cr_log_info("%d kills (seed 8), %d leaving a cut last row; %d csv and %d jsonl files completed "
                "by resuming, each equal to the uninterrupted run", KILLS, cut, csv_runs, jsonl_runs);
}
