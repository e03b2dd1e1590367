/* mpi_train.h — vit train over several processes with MPI (data-parallel).
 *
 * Built when CMake finds MPI (-DVITC_MPI=OFF leaves it out): then
 * VITC_MPI is defined and cli/mpi_train.c is built into vit-mpi.so with
 * cli/mpi.c (cli_mpi.h says when vit opens it). Without it every function
 * below is a stub for one process, so cli/train.c calls them
 * unconditionally.
 *
 * In a job of several processes (main joins it, cli_mpi.h) each computes
 * the gradients of its slice of every global batch and the library's
 * vit_trainer_parallel.sum adds them in rank order (gathered to rank 0, summed there, broadcast), so every rank holds
 * the same gradients and weights to the bit. Rank 0 alone prints progress
 * and writes the model and state. A plain vit never calls MPI. */
#ifndef CLI_MPI_TRAIN_H
#define CLI_MPI_TRAIN_H

#include "vit_trainer.h"

#ifdef VITC_MPI

/* Takes the job main joined (cli_mpi_start; none: one process). 0. */
int cli_mpi_train_start(void);
/* Frees what the sums kept (main leaves the job). */
void cli_mpi_train_finish(void);
int cli_mpi_train_rank(void);
int cli_mpi_train_size(void);
/* Processes of the job on this host (for the default thread count). */
int cli_mpi_train_local_size(void);
/* The trainer's hook; NULL with one process. */
const vit_trainer_parallel *cli_mpi_train_parallel(void);
/* On ranks other than 0: what setup prints goes to a temporary file
 * (every rank would say the same), until cli_mpi_train_quiet_end, which
 * prints it, naming the rank, when replay is set. */
void cli_mpi_train_quiet_begin(void);
void cli_mpi_train_quiet_end(int replay);
/* Every rank says whether it is ready; 1 when all are. *root_ok: rank 0's word. */
int cli_mpi_train_agree(int ok, int *root_ok);
/* 0 when every rank starts from the same parameters, moments, step and
 * training data; else -1 after a message from rank 0. */
int cli_mpi_train_check_same(vit_trainer *t);
/* After every step: the test hooks (VITC_TEST_RANK_CHECKSUMS=1: every rank
 * prints a checksum of its parameters and moments to stderr;
 * VITC_TEST_KILL_RANK=R:S: rank R kills itself after step S). */
void cli_mpi_train_after_step(const vit_trainer *t);
/* Stops every rank with status (after a fatal error already printed). */
void cli_mpi_train_abort(int status);
/* Seconds this rank has spent in the sums so far (exchanging gradients,
 * and waiting for slower ranks). */
double cli_mpi_train_sum_seconds(void);

#else

static inline int cli_mpi_train_start(void) { return 0; }
static inline void cli_mpi_train_finish(void) {}
static inline int cli_mpi_train_rank(void) { return 0; }
static inline int cli_mpi_train_size(void) { return 1; }
static inline int cli_mpi_train_local_size(void) { return 1; }
static inline const vit_trainer_parallel *cli_mpi_train_parallel(void) { return NULL; }
static inline void cli_mpi_train_quiet_begin(void) {}
static inline void cli_mpi_train_quiet_end(int replay) { (void)replay; }
static inline int cli_mpi_train_agree(int ok, int *root_ok) { return *root_ok = ok; }
static inline int cli_mpi_train_check_same(vit_trainer *t) { (void)t; return 0; }
static inline void cli_mpi_train_after_step(const vit_trainer *t) { (void)t; }
static inline void cli_mpi_train_abort(int status) { (void)status; }
static inline double cli_mpi_train_sum_seconds(void) { return 0.0; }

#endif

#endif
