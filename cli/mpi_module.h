/* mpi_module.h — the table of vit-mpi.so (module.h): cli/mpi.c and
 * cli/mpi_train.c, built into the module, behind the functions of
 * cli_mpi.h and mpi_train.h, which vit defines (cli/mpi_calls.c) as calls
 * through it when a launcher started vit, and as one process otherwise. */
#ifndef CLI_MPI_MODULE_H
#define CLI_MPI_MODULE_H

#include "cli_mpi.h"
#include "module.h"
#include "mpi_train.h"

typedef struct cli_mpi_module {
    cli_module_head head;
    /* cli_mpi.h */
    int (*start)(int *argc, char ***argv);
    int (*finish)(int status);
    int (*active)(void);
    int (*rank)(void);
    int (*size)(void);
    int (*go)(int ok);
    int (*agree)(const char *command, int ok);
    int (*share_inputs)(const char *command, cli_inputs *in, long *batch);
    int (*run)(const cli_mpi_job *job, double *seconds);
    void (*abort)(int status);
    /* mpi_train.h */
    int (*train_start)(void);
    void (*train_finish)(void);
    int (*train_rank)(void);
    int (*train_size)(void);
    int (*train_local_size)(void);
    const vit_trainer_parallel *(*train_parallel)(void);
    void (*train_quiet_begin)(void);
    void (*train_quiet_end)(int replay);
    int (*train_agree)(int ok, int *root_ok);
    int (*train_check_same)(vit_trainer *t);
    void (*train_after_step)(const vit_trainer *t);
    void (*train_abort)(int status);
    double (*train_sum_seconds)(void);
} cli_mpi_module;

#endif
