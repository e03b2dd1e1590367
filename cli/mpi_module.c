/* The table vit opens in vit-mpi.so (mpi_module.h): built into the module
 * with cli/mpi.c and cli/mpi_train.c, whose functions stay hidden inside
 * it, so their calls to each other never reach vit's same-named ones. */
#include "mpi_module.h"

__attribute__((visibility("default"))) const cli_mpi_module vitc_mpi_module = {
    {VITC_MODULE_ABI},
    cli_mpi_start,
    cli_mpi_finish,
    cli_mpi_active,
    cli_mpi_rank,
    cli_mpi_size,
    cli_mpi_go,
    cli_mpi_agree,
    cli_mpi_share_inputs,
    cli_mpi_run,
    cli_mpi_abort,
    cli_mpi_train_start,
    cli_mpi_train_finish,
    cli_mpi_train_rank,
    cli_mpi_train_size,
    cli_mpi_train_local_size,
    cli_mpi_train_parallel,
    cli_mpi_train_quiet_begin,
    cli_mpi_train_quiet_end,
    cli_mpi_train_agree,
    cli_mpi_train_check_same,
    cli_mpi_train_after_step,
    cli_mpi_train_abort,
    cli_mpi_train_sum_seconds,
};
