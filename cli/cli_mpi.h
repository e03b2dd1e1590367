/* cli_mpi.h — classify, eval and features over several processes (MPI).
 *
 * Built when CMake finds MPI (-DVITC_MPI=OFF leaves it out): then
 * VITC_MPI is defined, cli/mpi.c is built into vit-mpi.so, which vit opens
 * only when a launcher started it, and cli/mpi_calls.c defines these
 * functions in vit (through the module, or as one process). Without it
 * every function below is a stub for one process, so the commands call
 * them unconditionally.
 *
 * A vit started by a launcher (mpirun, mpiexec, srun: OMPI_COMM_WORLD_SIZE,
 * PMIX_RANK or PMI_SIZE in its environment) joins the job with MPI_Init; a
 * job of one process then runs exactly as a plain vit. With several, rank 0
 * parses, walks, loads, opens and locks the outputs and reads --resume, and
 * sends every rank the list of files; every rank (rank 0 too) decodes and
 * runs batches with its own threads, asking rank 0 for the next batch when
 * it has a free slot (one batch of look-ahead), and sends its outputs to
 * rank 0, where one thread puts them back in input order and calls the
 * command's handlers exactly as a single process does. bench/mpi_overhead.sh
 * sets VITC_MPI_BENCH_STUB to measure the writer without the model (cli/mpi.c). */
#ifndef CLI_MPI_H
#define CLI_MPI_H

#include "cli.h"

/* What every rank runs and what rank 0 does with the results. */
typedef struct cli_mpi_job {
    const char *command;
    /* Every rank's pipeline (vit_pipeline.h): cli_mpi_run plugs in the
     * job's batch source (rank 0 hands out the batches) and runs it. */
    vit_pipeline *pipeline;
    const char *const *paths; /* the same list on every rank (cli_mpi_share_inputs) */
    size_t count;
    int batch;
    size_t floats;            /* result floats per image */
    /* Every rank, after the pipeline ran a batch: *results gets one row of
     * `floats` per good image, at b->row[i] (the pipeline's own rows, or
     * what the command made of the batch); it may fail more files (row -1
     * and an error). -1: fatal (message printed; the job is aborted). */
    int (*rows)(void *self, data_batch *b, float **results);
    /* Rank 0, in input order, on its writer thread: the command's own. */
    cli_batch_handlers handlers;
    void *self; /* rows' */
} cli_mpi_job;

#ifdef VITC_MPI

/* In main: joins the MPI job when a launcher started vit (MPI_Init_thread,
 * MPI_THREAD_MULTIPLE). 0, or -1 after one line. */
int cli_mpi_start(int *argc, char ***argv);
/* Leaves it (MPI_Finalize), giving every rank rank 0's exit status. */
int cli_mpi_finish(int status);
/* Several processes: the distributed paths are taken. */
int cli_mpi_active(void);
int cli_mpi_rank(void);
int cli_mpi_size(void);
/* Rank 0 says whether the job goes on (ok: 1); the others learn it.
 * Returns rank 0's word. */
int cli_mpi_go(int ok);
/* Every rank says whether it is ready; 1 when all are. A rank that is not
 * names itself (rank and host) after its own message. */
int cli_mpi_agree(const char *command, int ok);
/* Rank 0's inputs (paths and names) and *batch to every rank. -1 after one line. */
int cli_mpi_share_inputs(const char *command, cli_inputs *in, long *batch);
/* Runs the job; on rank 0 the handlers see every file in order. seconds:
 * the time the batches took. -1 on a failure (printed); a fatal one on any
 * rank aborts the whole job (MPI_Abort, status 1). */
int cli_mpi_run(const cli_mpi_job *job, double *seconds);
/* Stops every rank with status (after a fatal error already printed). */
void cli_mpi_abort(int status);

#else

static inline int cli_mpi_start(int *argc, char ***argv) { (void)argc, (void)argv; return 0; }
static inline int cli_mpi_finish(int status) { return status; }
static inline int cli_mpi_active(void) { return 0; }
static inline int cli_mpi_rank(void) { return 0; }
static inline int cli_mpi_size(void) { return 1; }
static inline int cli_mpi_go(int ok) { return ok; }
static inline int cli_mpi_agree(const char *command, int ok) { (void)command; return ok; }
static inline int cli_mpi_share_inputs(const char *command, cli_inputs *in, long *batch) {
    (void)command, (void)in, (void)batch;
    return 0;
}
static inline int cli_mpi_run(const cli_mpi_job *job, double *seconds) {
    (void)job, (void)seconds;
    return -1;
}
static inline void cli_mpi_abort(int status) { (void)status; }

#endif

#endif
