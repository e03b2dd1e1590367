/* mpirun -np N vit train: data-parallel training over N processes (TCP
 * transport only, as between hosts). N ranks and global batch B train the
 * same model as one process with batch B, within float rounding (compared
 * tensor by tensor, moments too); every rank holds the same weights to the
 * bit after every step (VITC_TEST_RANK_CHECKSUMS); a run whose rank died is
 * resumed with another number of ranks; a dying rank stops the job with a
 * message; a setup error is said once. Skipped, with a message, when the
 * build has no MPI or mpirun is absent. */
#include <math.h>

#include "test_util.h"

TEMP_DIR_SUITE(mpi_train);

/* A tiny model on 60 Fashion-MNIST images, batch 16: 4 steps an epoch, the
 * last of 12 images, so 3 ranks get slices of 6/5/5 and 4/4/4. */
#define TINY                                                                                \
    "train --data fashion-mnist --limit 60 --arch custom --dim 16 --depth 1 --heads 2 "     \
    "--mlp 32 --patch 7 -b 16 --seed 3 --shift 2 -t 1"

/* Largest difference allowed between a parameter or AdamW moment trained
 * by N ranks and by one process, relative to the tensor's largest value:
 * float rounding (the ranks' partial gradient sums are added in another
 * order). Measured after 8 and 12 steps: 6.6e-7 at most. Except the
 * attention key biases (the qkv.bias parameters): softmax ignores a key
 * bias, so its gradient is zero up to rounding, and AdamW, which divides
 * by the gradient's size, turns that rounding into steps of up to the
 * learning rate; their allowance is absolute, 1% of --lr (1e-3).
 * Measured: 1.0e-6 at most. */
#define TOLERANCE 1e-5
#define KEY_BIAS_TOLERANCE 1e-5

/* Skips (saying so on stderr too: Criterion shows skips only with
 * --verbose) without MPI in the build or mpirun on the PATH. */
static void need_mpi(void) {
#ifndef VITC_HAVE_MPI
    fprintf(stderr, "test_mpi_train: this build has no MPI (VITC_MPI off or MPI not found): skipped\n");
    cr_skip_test("this build has no MPI (VITC_MPI off or MPI not found): skipped");
#endif
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        fprintf(stderr, "test_mpi_train: mpirun is not installed: skipped\n");
        cr_skip_test("mpirun is not installed: skipped");
    }
}

/* Runs "[ENV] mpirun -np N vit ARGS" (N 0: plain vit) under a 120 s
 * timeout; status 124 is a hang. Under mpirun the sanitizer build checks
 * memory errors but not leaks: Open MPI keeps allocations to its exit. */
static run_result *run_np(int np, const char *env, const char *args) {
    static run_result r;
    char cmd[8192], out_path[64], err_path[64];
    snprintf(out_path, sizeof out_path, "/tmp/vitc-mpitest-out.%d", (int)getpid());
    snprintf(err_path, sizeof err_path, "/tmp/vitc-mpitest-err.%d", (int)getpid());
    if (np)
        snprintf(cmd, sizeof cmd,
                 "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
                 "ASAN_OPTIONS=detect_leaks=0 %s timeout 120 mpirun "
                 "--oversubscribe -np %d --mca btl tcp,self %s %s >%s 2>%s </dev/null",
                 env ? env : "", np, VIT, args, out_path, err_path);
    else
        snprintf(cmd, sizeof cmd, "%s timeout 120 %s %s >%s 2>%s </dev/null", env ? env : "",
                 VIT, args, out_path, err_path);
    const int raw = system(cmd);
    cr_assert(WIFEXITED(raw), "'%s' did not exit normally", cmd);
    r.status = WEXITSTATUS(raw);
    slurp(out_path, r.out, sizeof r.out);
    slurp(err_path, r.err, sizeof r.err);
    remove(out_path);
    remove(err_path);
    cr_assert_neq(r.status, 124, "'%s' hung: %s", cmd, r.err);
    return &r;
}

/* Trains dir/NAME.safetensors with np ranks (0: one plain process). */
static run_result *train(int np, const char *name, const char *extra) {
    char args[2048];
    snprintf(args, sizeof args, TINY " -o %s/%s.safetensors %s", dir, name, extra);
    run_result *r = run_np(np, NULL, args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    return r;
}

/* The largest difference between two files' tensors (every tensor of a
 * in b, same shape): relative to each tensor's largest value in a, and
 * (*key_bias) absolute for the attention qkv biases (parameters). */
static double compare(const char *name_a, const char *name_b, int *identical, double *key_bias) {
    char pa[256], pb[256];
    snprintf(pa, sizeof pa, "%s/%s", dir, name_a);
    snprintf(pb, sizeof pb, "%s/%s", dir, name_b);
    weights_file *a, *b;
    base_error err;
    cr_assert_eq(weights_open(pa, &a, &err), BASE_OK, "%s", err.message);
    cr_assert_eq(weights_open(pb, &b, &err), BASE_OK, "%s", err.message);
    cr_assert_eq(weights_count(a), weights_count(b));
    double worst = 0.0;
    *identical = 1;
    for (size_t i = 0; i < weights_count(a); i++) {
        const weights_tensor *ta = weights_at(a, i), *tb;
        float *va = tensor_f32(a, ta->name, NULL), *vb = tensor_f32(b, ta->name, &tb);
        cr_assert_eq(ta->numel, tb->numel, "%s", ta->name);
        double scale = 0.0, diff = 0.0;
        for (size_t j = 0; j < ta->numel; j++) {
            scale = fmax(scale, fabs(va[j]));
            diff = fmax(diff, fabs((double)va[j] - vb[j]));
        }
        *identical &= memcmp(va, vb, ta->numel * sizeof(float)) == 0;
        const size_t len = strlen(ta->name);
        if (strncmp(ta->name, "adamw.", 6) != 0 && len > 13 &&
            strcmp(ta->name + len - 13, "attn.qkv.bias") == 0)
            *key_bias = fmax(*key_bias, diff);
        else if (scale > 0)
            worst = fmax(worst, diff / scale);
        free(va);
        free(vb);
    }
    weights_close(a);
    weights_close(b);
    return worst;
}

/* The model and the state (parameters as trained, AdamW moments) of
 * dir/A and dir/B agree within the tolerances. */
static void expect_close(const char *a, const char *b, const char *what) {
    char sa[256], sb[256];
    snprintf(sa, sizeof sa, "%s.state", a);
    snprintf(sb, sizeof sb, "%s.state", b);
    int same_model, same_state;
    double key_bias = 0.0;
    const double model = compare(a, b, &same_model, &key_bias);
    const double state = compare(sa, sb, &same_state, &key_bias);
    fprintf(stderr, "test_mpi_train: %s: largest relative difference %.2g (model), %.2g (state "
                    "with moments); key biases %.2g%s\n", what, model, state, key_bias,
            same_model && same_state ? ", identical" : "");
    cr_expect(model <= TOLERANCE, "%s: model differs by %g", what, model);
    cr_expect(state <= TOLERANCE, "%s: state differs by %g", what, state);
    cr_expect(key_bias <= KEY_BIAS_TOLERANCE, "%s: key biases differ by %g", what, key_bias);
}

/* The loss of each epoch summary line ("epoch E/N: loss X,"). */
static int epoch_losses(const char *err, double *loss, int max) {
    int n = 0;
    for (const char *p = err; (p = strstr(p, "epoch ")) && n < max; p++) {
        int e, total;
        double x;
        if (sscanf(p, "epoch %d/%d: loss %lf,", &e, &total, &x) == 3) loss[n++] = x;
    }
    return n;
}

Test(mpi_train, n_ranks_train_the_model_of_one_process) {
    need_mpi();
    run_result *r = train(0, "one", "--epochs 2");
    double one[4], many[4];
    cr_assert_eq(epoch_losses(r->err, one, 4), 2, "%s", r->err);
    for (int np = 2; np <= 3; np++) {
        char name[16], what[32];
        snprintf(name, sizeof name, "np%d", np);
        snprintf(what, sizeof what, "%d ranks, 8 steps", np);
        r = train(np, name, "--epochs 2");
        /* Rank 0 alone speaks: one header, one line per epoch, one "wrote". */
        cr_expect(strstr(r->err, "2 processes x 1 threads") || strstr(r->err, "3 processes x 1 threads"),
                  "%s", r->err);
        cr_expect_eq(epoch_losses(r->err, many, 4), 2, "%s", r->err);
        for (int e = 0; e < 2; e++)
            cr_expect(fabs(many[e] - one[e]) <= 1e-4, "epoch %d loss %g vs %g", e + 1, many[e], one[e]);
        cr_expect(!strstr(r->err, "vitc-test"), "test output without the test variable: %s", r->err);
        cr_expect_eq(count_lines(r->out), 1, "%s", r->out);
        char a[32];
        snprintf(a, sizeof a, "%s.safetensors", name);
        expect_close("one.safetensors", a, what);
    }
}

/* "vitc-test rank R step S weights H" lines: for every step 1..steps, all
 * np ranks printed the same H. */
static void expect_same_weights(const char *err, int np, int steps) {
    for (int s = 1; s <= steps; s++) {
        char first[32] = "";
        int seen = 0;
        for (const char *p = err; (p = strstr(p, "vitc-test rank ")); p++) {
            int rank;
            long step;
            char hash[32];
            if (sscanf(p, "vitc-test rank %d step %ld weights %31s", &rank, &step, hash) != 3 ||
                step != s)
                continue;
            if (!seen++) snprintf(first, sizeof first, "%s", hash);
            cr_expect_str_eq(hash, first, "step %d: rank %d holds other weights", s, rank);
        }
        cr_expect_eq(seen, np, "step %d: %d of %d ranks said: %s", s, seen, np, err);
    }
}

Test(mpi_train, every_rank_holds_the_same_weights_after_every_step) {
    need_mpi();
    char args[2048];
    snprintf(args, sizeof args, TINY " -o %s/c.safetensors --epochs 2", dir);
    run_result *r = run_np(3, "VITC_TEST_RANK_CHECKSUMS=1", args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    expect_same_weights(r->err, 3, 8);
    /* -b 2 on 3 ranks: one rank has no image in any step. */
    snprintf(args, sizeof args, TINY " -o %s/d.safetensors --epochs 1 --limit 6 -b 2", dir);
    r = run_np(3, "VITC_TEST_RANK_CHECKSUMS=1", args);
    cr_assert_eq(r->status, 0, "%s", r->err);
    expect_same_weights(r->err, 3, 3);
}

Test(mpi_train, a_run_whose_rank_died_resumes_on_another_number_of_ranks) {
    need_mpi();
    train(0, "one", "--epochs 3");
    /* Rank 1 of 2 dies after step 6, in epoch 2: the checkpoint holds epoch 1. */
    char args[2048];
    snprintf(args, sizeof args, TINY " -o %s/cut.safetensors --epochs 3", dir);
    run_result *r = run_np(2, "VITC_TEST_KILL_RANK=1:6", args);
    cr_assert_neq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "epoch 1/3: loss") && !strstr(r->err, "epoch 2/3: loss"), "%s", r->err);
    /* Resumed on 3 ranks, then on one: the same model as one uninterrupted process. */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "train --data fashion-mnist --limit 60 -t 1 -o %s/cut.safetensors "
             "--resume %s/cut.safetensors --epochs 3", dir, dir);
    /* Copy the cut run so it can be resumed twice. */
    shell("cp %s/cut.safetensors %s/cut1.safetensors && cp %s/cut.safetensors.state "
          "%s/cut1.safetensors.state", dir, dir, dir, dir);
    r = run_np(3, NULL, cmd);
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->err, "resuming ") && strstr(r->err, "after epoch 1 of 3"), "%s", r->err);
    expect_close("one.safetensors", "cut.safetensors", "2 ranks cut after epoch 1, resumed on 3");
    snprintf(cmd, sizeof cmd, "train --data fashion-mnist --limit 60 -t 1 -o %s/cut1.safetensors "
             "--resume %s/cut1.safetensors --epochs 3", dir, dir);
    r = run_np(0, NULL, cmd);
    cr_assert_eq(r->status, 0, "%s", r->err);
    expect_close("one.safetensors", "cut1.safetensors", "2 ranks cut after epoch 1, resumed on 1");
}

Test(mpi_train, a_dying_rank_stops_the_job_with_a_message) {
    need_mpi();
    char args[2048];
    snprintf(args, sizeof args, TINY " -o %s/k.safetensors --epochs 3", dir);
    run_result *r = run_np(3, "VITC_TEST_KILL_RANK=2:2", args);
    cr_expect_neq(r->status, 0, "%s", r->err);
    /* mpirun names the process and how it ended. */
    cr_expect(strstr(r->err, "rank 2") && (strstr(r->err, "signal 9") || strstr(r->err, "Killed")),
              "%s", r->err);
}

Test(mpi_train, a_setup_error_is_said_once) {
    need_mpi();
    char args[2048];
    snprintf(args, sizeof args, TINY " -o %s/e.safetensors --resume %s/missing.safetensors", dir,
             dir);
    run_result *r = run_np(3, NULL, args);
    cr_expect_eq(r->status, 1, "%s", r->err);
    /* One line from vit (rank 0's), then mpirun's own note of the status. */
    int said = 0;
    for (const char *p = r->err; (p = strstr(p, "vit train:")); p++) said++;
    cr_expect_eq(said, 1, "%s", r->err);
    cr_expect(strstr(r->err, "vit train: --resume: ") && strstr(r->err, "missing.safetensors"),
              "%s", r->err);
}
