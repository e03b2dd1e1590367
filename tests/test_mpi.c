/* classify, eval and features on several MPI processes (cli/mpi.c): the
 * outputs of 'mpirun -np 2' and '-np 3' (TCP only, as between hosts) must
 * be byte for byte those of one process; --resume after a partial file and
 * after a rank killed mid-run completes the file without losing or doubling
 * a row; exit statuses are the job's. Skipped, with a message, where vitc
 * was built without MPI or mpirun is absent (and the tests on real photos
 * where ../shared is). Each run uses -t 1 and few images: the whole file
 * takes about a minute. */
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include "test_util.h"

#define FIXTURES VITC_SOURCE_DIR "/tests/fixtures"
#define TINY FIXTURES "/parity/hf_vit_d48_h3"
#define SHARED VITC_SOURCE_DIR "/../shared"
#define DEIT SHARED "/models/deit-tiny-patch16-224"
#define SAMPLE SHARED "/imagenet-sample"

/* Open MPI refuses to run as root (CI does) without these; the program
 * never sets them itself. */
#define MPIRUN                                                                                   \
    "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 " \
    "ASAN_OPTIONS=detect_leaks=0 mpirun --oversubscribe --mca btl tcp,self -np "

TEMP_DIR_SUITE(mpi);

static void require_mpi(void) {
#ifndef VITC_HAVE_MPI
    cr_skip_test("vitc was built without MPI (scripts/setup installs libopenmpi-dev): MPI tests skipped");
#endif
    if (system("command -v mpirun >/dev/null 2>&1") != 0)
        cr_skip_test("mpirun is absent (scripts/setup installs openmpi-bin): MPI tests skipped");
}

static void require_shared(void) {
    if (access(DEIT "/model.safetensors", R_OK) != 0 || access(SAMPLE "/labels.csv", R_OK) != 0)
        cr_skip_test("../shared is absent: MPI tests on real photos skipped");
}

/* Runs "mpirun -np N vit ARGS" (in dir) with stdout to dir/OUT (NULL:
 * discarded) and stderr to dir/err; returns the exit status. */
static int mpi_vit(int ranks, const char *out, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int mpi_vit(int ranks, const char *out, const char *fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd %s && " MPIRUN "%d %s %s >%s%s 2>err </dev/null", dir, ranks, VIT,
             args, out ? "" : "/dev/null", out ? out : "");
    const int raw = system(cmd);
    cr_assert(WIFEXITED(raw), "'%s' did not exit normally", cmd);
    return WEXITSTATUS(raw);
}

/* The same on one process, without mpirun. */
static int one_vit(const char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int one_vit(const char *out, const char *fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd %s && %s %s >%s%s 2>err1 </dev/null", dir, VIT, args,
             out ? "" : "/dev/null", out ? out : "");
    const int raw = system(cmd);
    cr_assert(WIFEXITED(raw), "'%s' did not exit normally", cmd);
    return WEXITSTATUS(raw);
}

static void expect_same_file(const char *a, const char *b) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cd %s && cmp -s '%s' '%s'", dir, a, b);
    cr_expect(system(cmd) == 0, "%s and %s differ (dir %s)", a, b, dir);
}

static const char *err_text(void) {
    static char text[65536];
    char path[256];
    snprintf(path, sizeof path, "%s/err", dir);
    slurp(path, text, sizeof text);
    return text;
}

/* dir/in: 13 photos of three kinds in turn (so rows that changed places
 * would show) and a corrupt JPEG in the middle of the order. */
static void make_mixed_photos(void) {
    static const char *const SOURCES[] = {FIXTURES "/real/apple.png", FIXTURES "/real/polars.png",
                                          FIXTURES "/preprocess/dec_photo.jpg"};
    shell("mkdir -p %s/in", dir);
    for (int i = 0; i < 13; i++) {
        const char *src = SOURCES[i % 3];
        shell("cp %s %s/in/p%02d%s", src, dir, i, strrchr(src, '.'));
    }
    shell("head -c 700 %s > %s/in/p06b.jpg", FIXTURES "/preprocess/dec_photo.jpg", dir);
}

/* dir/sample: the first n photos of ../shared/imagenet-sample (symlinks). */
static void make_sample(int n) {
    shell("mkdir -p %s/sample && ls %s | grep -v labels.csv | head -%d | while read f; do ln -s %s/\"$f\" %s/sample/; done",
          dir, SAMPLE, n, SAMPLE, dir);
    shell("head -%d %s/labels.csv > %s/labels.csv", n + 1, SAMPLE, dir);
}

Test(mpi, classify_matches_one_process_in_every_format) {
    require_mpi();
    make_mixed_photos();
    cr_assert_eq(one_vit(NULL, "classify -m %s in -o one.csv -t 2 -b 4 -q", TINY), 2);
    cr_assert_eq(one_vit(NULL, "classify -m %s in -o one.jsonl -t 2 -b 4 -q", TINY), 2);
    cr_assert_eq(one_vit("one.json", "classify -m %s in --format json -t 2 -b 4 -q", TINY), 2);
    cr_assert_eq(one_vit("one.txt", "classify -m %s in -k 3 -t 2 -q", TINY), 2);
    for (int ranks = 2; ranks <= 3; ranks++) {
        char name[64];
        /* Other -b than the single run: outputs are batch-invariant. */
        cr_expect_eq(mpi_vit(ranks, NULL, "classify -m %s in -o n.csv -t 1 -b 3", TINY), 2,
                     "-np %d csv: %s", ranks, err_text());
        /* rank 0 reports once for the job: each failure and one summary line */
        const char *err = err_text();
        cr_expect(strstr(err, "p06b.jpg") && strstr(err, "vit classify: 14 files, 1 failed"), "%s", err);
        cr_expect_null(strstr(strstr(err, "p06b.jpg") + 1, "p06b.jpg"), "failure reported twice: %s", err);
        expect_same_file("one.csv", "n.csv");
        expect_same_file("one.csv.run.json", "n.csv.run.json");
        cr_expect_eq(mpi_vit(ranks, NULL, "classify -m %s in -o n.jsonl -t 1 -b 2 -q", TINY), 2);
        expect_same_file("one.jsonl", "n.jsonl");
        snprintf(name, sizeof name, "n%d.json", ranks);
        cr_expect_eq(mpi_vit(ranks, name, "classify -m %s in --format json -t 1 -b 5 -q", TINY), 2);
        expect_same_file("one.json", name);
        snprintf(name, sizeof name, "n%d.txt", ranks);
        cr_expect_eq(mpi_vit(ranks, name, "classify -m %s in -k 3 -t 1 -q", TINY), 2);
        expect_same_file("one.txt", name);
    }
    /* Without the corrupt file: exit 0, on one process and on three. */
    shell("rm %s/in/p06b.jpg", dir);
    cr_expect_eq(one_vit(NULL, "classify -m %s in -o good1.csv -q", TINY), 0);
    cr_expect_eq(mpi_vit(3, NULL, "classify -m %s in -o good3.csv -t 1 -b 2 -q", TINY), 0, "%s", err_text());
    expect_same_file("good1.csv", "good3.csv");
}

Test(mpi, classify_resumes_a_partial_file_on_any_number_of_ranks) {
    require_mpi();
    make_mixed_photos();
    cr_assert_eq(one_vit(NULL, "classify -m %s in -o one.csv -t 2 -b 2 -q", TINY), 2);
    cr_assert_eq(one_vit(NULL, "classify -m %s in -o one.jsonl -t 2 -b 2 -q", TINY), 2);
    for (int ranks = 2; ranks <= 3; ranks++) {
        /* Five whole rows and part of the sixth, as a killed run leaves. */
        shell("cd %s && head -6 one.csv > part.csv && sed -n 7p one.csv | head -c 20 >> part.csv && "
              "cp one.csv.run.json part.csv.run.json", dir);
        cr_expect_eq(mpi_vit(ranks, NULL, "classify -m %s in -o part.csv -t 1 -b 2 --resume", TINY), 2,
                     "%s", err_text());
        cr_expect(strstr(err_text(), "dropped an incomplete last row"), "%s", err_text());
        expect_same_file("one.csv", "part.csv");
        shell("cd %s && head -4 one.jsonl > part.jsonl && cp one.jsonl.run.json part.jsonl.run.json", dir);
        cr_expect_eq(mpi_vit(ranks, NULL, "classify -m %s in -o part.jsonl -t 1 -b 2 --resume -q", TINY), 2);
        expect_same_file("one.jsonl", "part.jsonl");
    }
    /* Another run's file is refused on rank 0, once, before anything runs. */
    cr_expect_eq(mpi_vit(2, NULL, "classify -m %s in -o part.csv -k 3 --resume", TINY), 1);
    cr_expect(strstr(err_text(), "cannot resume into it"), "%s", err_text());
    expect_same_file("one.csv", "part.csv");
}

Test(mpi, features_and_eval_match_one_process) {
    require_mpi();
    make_mixed_photos();
    cr_assert_eq(one_vit(NULL, "features -m %s in -o one.npy -t 2 -b 4 -q", TINY), 2);
    cr_assert_eq(one_vit(NULL, "features -m %s in -o onecls.npy --tokens cls --layer 0 -q", TINY), 2);
    for (int ranks = 2; ranks <= 3; ranks++) {
        cr_expect_eq(mpi_vit(ranks, NULL, "features -m %s in -o n.npy -t 1 -b 3 -q", TINY), 2, "%s", err_text());
        expect_same_file("one.npy", "n.npy");
        expect_same_file("one.files.jsonl", "n.files.jsonl");
        cr_expect_eq(mpi_vit(ranks, NULL, "features -m %s in -o ncls.npy --tokens cls --layer 0 -t 1 -b 2 -q", TINY), 2);
        expect_same_file("onecls.npy", "ncls.npy");
    }
    /* eval: an ImageFolder of the tiny model's classes (indices as names). */
    shell("mkdir -p %s/folder/0 %s/folder/1 && cp %s/in/p0[0-4]* %s/folder/0/ && cp %s/in/p0[5-9]* %s/in/p1* %s/folder/1/",
          dir, dir, dir, dir, dir, dir, dir);
    cr_assert_eq(one_vit("one.out", "eval -m %s folder -o one.csv -t 2 -b 4", TINY), 2);
    for (int ranks = 2; ranks <= 3; ranks++) {
        cr_expect_eq(mpi_vit(ranks, "n.out", "eval -m %s folder -o n.csv -t 1 -b 3", TINY), 2, "%s", err_text());
        expect_same_file("one.csv", "n.csv");
        expect_same_file("one.classes.csv", "n.classes.csv");
        expect_same_file("one.confusion.csv", "n.confusion.csv");
        shell("cd %s && head -1 one.out > a && head -1 n.out > b", dir);
        expect_same_file("a", "b"); /* top-1 / top-5 */
    }
}

Test(mpi, real_photos_classify_eval_features) {
    require_mpi();
    require_shared();
    make_sample(24);
    cr_assert_eq(one_vit(NULL, "classify -m %s sample -o one.csv -t 2 -q", DEIT), 0);
    cr_assert_eq(one_vit("one.out", "eval -m %s %s --labels-csv labels.csv -o one-eval.csv -t 2", DEIT, SAMPLE), 0);
    cr_assert_eq(one_vit(NULL, "features -m %s sample -o one.npy --tokens cls -t 2 -q", DEIT), 0);
    const int ranks[] = {2, 3};
    for (int r = 0; r < 2; r++) {
        cr_expect_eq(mpi_vit(ranks[r], NULL, "classify -m %s sample -o n.csv -t 1 -b 4 -q", DEIT), 0, "%s", err_text());
        expect_same_file("one.csv", "n.csv");
    }
    cr_expect_eq(mpi_vit(3, "n.out", "eval -m %s %s --labels-csv labels.csv -o n-eval.csv -t 1 -b 3", DEIT, SAMPLE), 0);
    shell("cd %s && head -1 one.out > a && head -1 n.out > b", dir);
    expect_same_file("a", "b");
    expect_same_file("one-eval.csv", "n-eval.csv");
    expect_same_file("one-eval.classes.csv", "n-eval.classes.csv");
    expect_same_file("one-eval.confusion.csv", "n-eval.confusion.csv");
    cr_expect_eq(mpi_vit(2, NULL, "features -m %s sample -o n.npy --tokens cls -t 1 -b 5 -q", DEIT), 0);
    expect_same_file("one.npy", "n.npy");
}

/* The pid of rank `rank` among mpirun's children (its environment says). */
static pid_t find_rank(pid_t mpirun, int rank) {
    char cmd[512], line[64];
    snprintf(cmd, sizeof cmd,
             "for p in $(pgrep -P %d); do tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | "
             "grep -qx OMPI_COMM_WORLD_RANK=%d && echo $p; done",
             (int)mpirun, rank);
    FILE *fp = popen(cmd, "r");
    pid_t pid = 0;
    if (fp && fgets(line, sizeof line, fp)) pid = (pid_t)atoi(line);
    if (fp) pclose(fp);
    return pid;
}

Test(mpi, a_killed_rank_stops_the_job_and_resume_completes_it) {
    require_mpi();
    require_shared();
    make_sample(80);
    cr_assert_eq(one_vit(NULL, "classify -m %s sample -o one.csv -t 2 -q", DEIT), 0);
    /* mpirun in its own process group, so its children are its own. */
    char out[256];
    snprintf(out, sizeof out, "%s/part.csv", dir);
    pid_t mpirun = fork();
    cr_assert(mpirun >= 0);
    if (mpirun == 0) {
        setpgid(0, 0);
        if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
        char cmd[2048];
        snprintf(cmd, sizeof cmd, "cd %s && exec env " MPIRUN "3 %s classify -m %s sample -o part.csv -t 1 -b 2 -q",
                 dir, VIT, DEIT);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    /* Wait until some rows are written, then kill rank 1 as a crash would. */
    const struct timespec tick = {0, 50000000};
    pid_t victim = 0;
    for (int waited = 0; waited < 1200 && (!victim || count_file_lines(out) < 5); waited++) {
        if (!victim) victim = find_rank(mpirun, 1);
        nanosleep(&tick, NULL);
    }
    cr_assert(victim > 0, "rank 1 not found");
    const int rows_before = count_file_lines(out);
    cr_assert(rows_before >= 5 && rows_before < 81, "%d lines before the kill", rows_before);
    kill(victim, SIGKILL);
    /* The job must end, not hang: Open MPI aborts it when a rank dies. */
    int status = 0, waited = 0;
    while (waitpid(mpirun, &status, WNOHANG) == 0 && waited++ < 600) nanosleep(&tick, NULL);
    if (waited >= 600) {
        kill(-mpirun, SIGKILL);
        waitpid(mpirun, &status, 0);
        cr_assert_fail("mpirun still running 30 s after rank 1 was killed");
    }
    cr_expect(!WIFEXITED(status) || WEXITSTATUS(status) != 0, "the job reported success");
    /* Whatever was written is a prefix of the full file (a last row may be
     * cut); --resume on another number of ranks completes it exactly. */
    cr_expect_eq(mpi_vit(2, NULL, "classify -m %s sample -o part.csv -t 1 -b 2 -q --resume", DEIT), 0,
                 "%s", err_text());
    expect_same_file("one.csv", "part.csv");
}

Test(mpi, errors_are_reported_once_with_the_job_status) {
    require_mpi();
    make_mixed_photos();
    cr_expect_eq(mpi_vit(2, NULL, "classify -m %s in --bogus", TINY), 1);
    const char *err = err_text();
    const char *first = strstr(err, "unrecognized option '--bogus'");
    cr_expect(first && !strstr(first + 1, "unrecognized option"), "%s", err);
    cr_expect_eq(mpi_vit(2, NULL, "classify -m %s/nothing-here in", dir), 1);
    cr_expect_eq(mpi_vit(3, NULL, "classify -m %s in -o x.csv --resume -k 0", TINY), 1);
    cr_expect_eq(mpi_vit(2, NULL, "info -m %s", TINY), 1);
    cr_expect(strstr(err_text(), "does not run on several MPI processes"), "%s", err_text());
    /* One process under mpirun is a plain run. */
    cr_assert_eq(one_vit(NULL, "classify -m %s in -o one.csv -q", TINY), 2);
    cr_expect_eq(mpi_vit(1, NULL, "classify -m %s in -o n1.csv -q", TINY), 2);
    expect_same_file("one.csv", "n1.csv");
    cr_expect_eq(mpi_vit(1, "info.txt", "info -m %s", TINY), 0);
}
