/* vit train over several processes with MPI (mpi_train.h): the trainer's
 * gradient sum, the checks that every rank starts alike, and the test hooks.
 *
 * The sum must give every rank the same bits, and MPI_Allreduce does not
 * promise an order of addition (nor the same one on every rank). So every
 * rank's part goes to rank 0 (MPI_Igather), rank 0 adds them in rank order
 * and broadcasts the total (MPI_Ibcast): the bits are rank 0's arithmetic,
 * the same whatever the number of hosts or the network. (VITC_MPI_TRAIN_SUM=
 * allgather instead gathers every part on every rank, which then adds them
 * in rank order itself: the same bits, kept for measurement, bench/README.md.)
 * Waiting polls with short sleeps rather than blocking: Open MPI's blocking
 * calls spin on a core, which on a machine whose cores all train costs a
 * whole rank. */
#include <mpi.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mpi_train.h"

static int world_rank, world_size = 1, local_size = 1, use_allgather;
static vit_trainer_parallel parallel;
static char *gather_buf; /* world_size parts (rank 0, or every rank with allgather) */
static size_t gather_size;
static FILE *quiet_file;
static double sum_seconds; /* in sum_parts, waits for slower ranks included */
static int saved_out = -1, saved_err = -1;

int cli_mpi_train_rank(void) { return world_rank; }
int cli_mpi_train_size(void) { return world_size; }
int cli_mpi_train_local_size(void) { return local_size; }

/* MPI_Wait without spinning on a core: a few quick tests (a collective's
 * later stages only progress inside MPI calls), then sleeps growing to
 * 0.5 ms. */
static void wait_quietly(MPI_Request *request) {
    long ns = 0;
    for (int tries = 0;; tries++) {
        int done = 0;
        MPI_Test(request, &done, MPI_STATUS_IGNORE);
        if (done) return;
        if (tries < 64) continue;
        ns = ns < 10000 ? 10000 : ns * 2 > 500000 ? 500000 : ns * 2;
        const struct timespec t = {0, ns};
        nanosleep(&t, NULL);
    }
}

/* The parts of all ranks, each `bytes` long: doubles then floats. */
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int sum_parts(void *ctx, float *floats, size_t nf, double *doubles, size_t nd) {
    (void)ctx;
    const double start = now();
    const size_t bytes = nd * sizeof(double) + nf * sizeof(float);
    if (bytes > (size_t)1 << 30) return -1; /* one int count of bytes per part */
    const int root = world_rank == 0;
    if ((root || use_allgather) && gather_size < bytes * world_size) {
        char *grown = realloc(gather_buf, bytes * world_size);
        if (!grown) return -1;
        gather_buf = grown;
        gather_size = bytes * world_size;
    }
    char *mine = malloc(bytes ? bytes : 1);
    if (!mine) return -1;
    if (nd) memcpy(mine, doubles, nd * sizeof(double));
    if (nf) memcpy(mine + nd * sizeof(double), floats, nf * sizeof(float));
    MPI_Request r;
    if (use_allgather)
        MPI_Iallgather(mine, (int)bytes, MPI_BYTE, gather_buf, (int)bytes, MPI_BYTE,
                       MPI_COMM_WORLD, &r);
    else
        MPI_Igather(mine, (int)bytes, MPI_BYTE, gather_buf, (int)bytes, MPI_BYTE, 0,
                    MPI_COMM_WORLD, &r);
    wait_quietly(&r);
    if (root || use_allgather) {
        /* In rank order: (((part 0 + part 1) + part 2) ...), element by element. */
        for (size_t i = 0; i < nd; i++) {
            double s = 0.0;
            memcpy(&s, gather_buf + i * sizeof(double), sizeof s);
            for (int k = 1; k < world_size; k++) {
                double x;
                memcpy(&x, gather_buf + k * bytes + i * sizeof(double), sizeof x);
                s += x;
            }
            doubles[i] = s;
        }
        if (nf) {
            const float *part0 = (const float *)(gather_buf + nd * sizeof(double));
            memcpy(floats, part0, nf * sizeof(float));
            for (int k = 1; k < world_size; k++) {
                const float *part = (const float *)(gather_buf + k * bytes + nd * sizeof(double));
                for (size_t i = 0; i < nf; i++) floats[i] += part[i];
            }
        }
        if (nd) memcpy(mine, doubles, nd * sizeof(double));
        if (nf) memcpy(mine + nd * sizeof(double), floats, nf * sizeof(float));
    }
    if (!use_allgather) {
        MPI_Ibcast(mine, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD, &r);
        wait_quietly(&r);
        if (nd) memcpy(doubles, mine, nd * sizeof(double));
        if (nf) memcpy(floats, mine + nd * sizeof(double), nf * sizeof(float));
    }
    free(mine);
    sum_seconds += now() - start;
    return 0;
}

double cli_mpi_train_sum_seconds(void) { return sum_seconds; }

int cli_mpi_train_start(void) {
    /* main joined the job (cli_mpi_start) when a launcher started vit. */
    int initialised = 0;
    MPI_Initialized(&initialised);
    if (!initialised) return 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    MPI_Comm local;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local) ==
        MPI_SUCCESS) {
        MPI_Comm_size(local, &local_size);
        MPI_Comm_free(&local);
    }
    const char *how = getenv("VITC_MPI_TRAIN_SUM");
    use_allgather = how && strcmp(how, "allgather") == 0;
    parallel = (vit_trainer_parallel){world_rank, world_size, sum_parts, NULL};
    return 0;
}

void cli_mpi_train_finish(void) {
    free(gather_buf);
    gather_buf = NULL;
    gather_size = 0;
}

const vit_trainer_parallel *cli_mpi_train_parallel(void) {
    return world_size > 1 ? &parallel : NULL;
}

void cli_mpi_train_abort(int status) {
    if (world_size > 1) MPI_Abort(MPI_COMM_WORLD, status);
}

void cli_mpi_train_quiet_begin(void) {
    if (world_size <= 1 || world_rank == 0 || quiet_file) return;
    fflush(stdout);
    fflush(stderr);
    if (!(quiet_file = tmpfile())) return;
    saved_out = dup(STDOUT_FILENO);
    saved_err = dup(STDERR_FILENO);
    dup2(fileno(quiet_file), STDOUT_FILENO);
    dup2(fileno(quiet_file), STDERR_FILENO);
}

void cli_mpi_train_quiet_end(int replay) {
    if (!quiet_file) return;
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, STDOUT_FILENO);
    dup2(saved_err, STDERR_FILENO);
    close(saved_out);
    close(saved_err);
    if (replay) {
        char host[256] = "?", line[4096];
        gethostname(host, sizeof host - 1);
        rewind(quiet_file);
        while (fgets(line, sizeof line, quiet_file))
            fprintf(stderr, "[rank %d of %d, %s] %s", world_rank, world_size, host, line);
    }
    fclose(quiet_file);
    quiet_file = NULL;
}

int cli_mpi_train_agree(int ok, int *root_ok) {
    *root_ok = world_rank == 0 ? ok : 1;
    if (world_size <= 1) return ok;
    double bad[2] = {!ok, world_rank == 0 && !ok};
    if (sum_parts(NULL, NULL, 0, bad, 2) != 0) cli_mpi_train_abort(1);
    *root_ok = bad[1] == 0.0;
    return bad[0] == 0.0;
}

/* FNV-1a, 64 bits. */
static uint64_t fnv(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* Fingerprints: [0] parameters and moments, [1] the training data (labels,
 * and the files' paths or Fashion-MNIST's pixels), [2] where the run stands
 * and its options. */
static void fingerprints(vit_trainer *t, uint64_t out[3]) {
    const uint64_t basis = 0xcbf29ce484222325ull;
    const size_t np = vit_model_param_count(t->model);
    out[0] = fnv(basis, vit_model_params(t->model), np * sizeof(float));
    out[0] = fnv(out[0], t->opt->m, np * sizeof(float));
    out[0] = fnv(out[0], t->opt->v, np * sizeof(float));
    const vit_trainer_source *s = t->train;
    uint64_t h = fnv(basis, &s->count, sizeof s->count);
    for (size_t i = 0; i < s->count; i++) {
        const int label = vit_trainer_source_label(s, i);
        h = fnv(h, &label, sizeof label);
        if (!s->mnist) h = fnv(h, s->files.paths[i], strlen(s->files.paths[i]));
    }
    if (s->mnist) h = fnv(h, s->set.pixels, s->count * (size_t)s->set.width * s->set.height);
    out[1] = h;
    h = fnv(basis, &t->step, sizeof t->step);
    h = fnv(h, &t->seed, sizeof t->seed);
    h = fnv(h, &t->epochs, sizeof t->epochs);
    h = fnv(h, &t->h.batch, sizeof t->h.batch);
    const double opts[] = {t->h.lr, t->h.min_lr, t->h.wd, t->h.smoothing, t->h.clip,
                           t->h.min_scale, (double)t->h.warmup, (double)t->h.shift,
                           (double)t->h.flip, (double)t->h.freeze};
    out[2] = fnv(h, opts, sizeof opts);
}

int cli_mpi_train_check_same(vit_trainer *t) {
    if (world_size <= 1) return 0;
    uint64_t mine[3], *all = calloc((size_t)world_size * 3, sizeof *all);
    if (!all) cli_mpi_train_abort(1);
    fingerprints(t, mine);
    MPI_Request r;
    MPI_Iallgather(mine, 3, MPI_UINT64_T, all, 3, MPI_UINT64_T, MPI_COMM_WORLD, &r);
    wait_quietly(&r);
    static const char *const WHAT[3] = {"parameters or AdamW moments", "training data",
                                        "step, seed or options"};
    int bad = 0;
    for (int k = 1; k < world_size; k++)
        for (int j = 0; j < 3; j++)
            if (all[k * 3 + j] != all[j]) {
                if (world_rank == 0)
                    fprintf(stderr, "vit train: rank %d of %d starts with other %s than rank 0 "
                                    "(every rank must see the same files: --data, --resume, "
                                    "--init)\n", k, world_size, WHAT[j]);
                bad = 1;
            }
    free(all);
    return bad ? -1 : 0;
}

void cli_mpi_train_after_step(const vit_trainer *t) {
    static int checked, checksums, kill_rank = -1;
    static long kill_step = -1;
    if (!checked) {
        checked = 1;
        const char *c = getenv("VITC_TEST_RANK_CHECKSUMS");
        checksums = c && strcmp(c, "1") == 0;
        const char *k = getenv("VITC_TEST_KILL_RANK");
        if (k && sscanf(k, "%d:%ld", &kill_rank, &kill_step) != 2) kill_rank = -1;
    }
    if (checksums) {
        vit_trainer *u = (vit_trainer *)t;
        const size_t np = vit_model_param_count(u->model);
        uint64_t h = fnv(0xcbf29ce484222325ull, vit_model_params(u->model), np * sizeof(float));
        h = fnv(h, u->opt->m, np * sizeof(float));
        h = fnv(h, u->opt->v, np * sizeof(float));
        fprintf(stderr, "vitc-test rank %d step %ld weights %016llx\n", world_rank, t->step,
                (unsigned long long)h);
    }
    if (world_rank == kill_rank && t->step == kill_step) {
        fflush(stderr);
        raise(SIGKILL);
    }
}
