/* cli_mpi.h and mpi_train.h in vit itself: calls into vit-mpi.so
 * (mpi_module.h) when a launcher started vit, and otherwise what the
 * headers' stubs do for a build without MPI (one process), so a plain vit
 * neither loads nor initialises Open MPI. The table is set once, in main,
 * before any thread starts. */
#include <stdio.h>
#include <stdlib.h>

#include "mpi_module.h"

static const cli_mpi_module *mpi;

/* Launched by mpirun / mpiexec (Open MPI: OMPI_COMM_WORLD_SIZE, PMIx:
 * PMIX_RANK) or srun / MPICH's hydra (PMI_SIZE / PMI_RANK): the variables
 * cli/mpi.c looks for before MPI_Init. */
static int launched(void) {
    static const char *const VARS[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"};
    for (size_t i = 0; i < sizeof VARS / sizeof *VARS; i++)
        if (getenv(VARS[i])) return 1;
    return 0;
}

int cli_mpi_start(int *argc, char ***argv) {
    if (!launched()) return 0;
    char why[4400];
    /* RTLD_GLOBAL: Open MPI opens its own components later, and they
     * look for libmpi's symbols among the global ones. */
    mpi = cli_module_open(CLI_MPI_MODULE, CLI_MPI_MODULE_TABLE, 1, why, sizeof why);
    if (!mpi) {
        fprintf(stderr, "vit: started by an MPI launcher, but %s\n", why);
        return -1;
    }
    return mpi->start(argc, argv);
}

int cli_mpi_finish(int status) { return mpi ? mpi->finish(status) : status; }
int cli_mpi_active(void) { return mpi ? mpi->active() : 0; }
int cli_mpi_rank(void) { return mpi ? mpi->rank() : 0; }
int cli_mpi_size(void) { return mpi ? mpi->size() : 1; }
int cli_mpi_go(int ok) { return mpi ? mpi->go(ok) : ok; }
int cli_mpi_agree(const char *command, int ok) { return mpi ? mpi->agree(command, ok) : ok; }

int cli_mpi_share_inputs(const char *command, cli_inputs *in, long *batch) {
    return mpi ? mpi->share_inputs(command, in, batch) : 0;
}

int cli_mpi_run(const cli_mpi_job *job, double *seconds) {
    return mpi ? mpi->run(job, seconds) : -1;
}

void cli_mpi_abort(int status) {
    if (mpi) mpi->abort(status);
}

int cli_mpi_train_start(void) { return mpi ? mpi->train_start() : 0; }

void cli_mpi_train_finish(void) {
    if (mpi) mpi->train_finish();
}

int cli_mpi_train_rank(void) { return mpi ? mpi->train_rank() : 0; }
int cli_mpi_train_size(void) { return mpi ? mpi->train_size() : 1; }
int cli_mpi_train_local_size(void) { return mpi ? mpi->train_local_size() : 1; }

const vit_trainer_parallel *cli_mpi_train_parallel(void) {
    return mpi ? mpi->train_parallel() : NULL;
}

void cli_mpi_train_quiet_begin(void) {
    if (mpi) mpi->train_quiet_begin();
}

void cli_mpi_train_quiet_end(int replay) {
    if (mpi) mpi->train_quiet_end(replay);
}

int cli_mpi_train_agree(int ok, int *root_ok) {
    if (mpi) return mpi->train_agree(ok, root_ok);
    return *root_ok = ok;
}

int cli_mpi_train_check_same(vit_trainer *t) { return mpi ? mpi->train_check_same(t) : 0; }

void cli_mpi_train_after_step(const vit_trainer *t) {
    if (mpi) mpi->train_after_step(t);
}

void cli_mpi_train_abort(int status) {
    if (mpi) mpi->train_abort(status);
}

double cli_mpi_train_sum_seconds(void) { return mpi ? mpi->train_sum_seconds() : 0.0; }
