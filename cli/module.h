/* module.h — the parts of vit that are separate shared modules, opened
 * only by the commands that need them (private to cli/).
 *
 * vit links only what every command uses. MPI (vit-mpi.so: cli/mpi.c,
 * cli/mpi_train.c, opened when a launcher started vit) and the HTTP server
 * (vit-serve.so: cli/serve*.c, opened by vit serve) are built as modules
 * installed beside the program: Open MPI's and libmicrohttpd's libraries
 * (20 of the 31 vit linked, with GnuTLS) cost a plain command ~8 ms of its
 * start (bench/README.md). A module calls back into the program (cli_*,
 * data_*, vit_* are exported for it, cli/modules.exports) and exports one
 * table, which starts with the build's VITC_MODULE_ABI so that a module
 * left from another build is refused instead of misread. */
#ifndef CLI_MODULE_H
#define CLI_MODULE_H

#include <stddef.h>

/* Every module table starts with this. */
typedef struct cli_module_head {
    const char *abi; /* VITC_MODULE_ABI of the build that made the module */
} cli_module_head;

/* The MPI module's file and table name, and the serve module's. */
#define CLI_MPI_MODULE "vit-mpi.so"
#define CLI_MPI_MODULE_TABLE "vitc_mpi_module"
#define CLI_SERVE_MODULE "vit-serve.so"
#define CLI_SERVE_MODULE_TABLE "vitc_serve_module"

/* The serve module's table. */
typedef struct cli_serve_module {
    cli_module_head head;
    int (*serve)(int argc, char **argv); /* cli_serve */
} cli_serve_module;

/* Opens file (one of the names above) in the directory of the running
 * program, with the dynamic loader's flags (RTLD_NOW plus RTLD_GLOBAL or
 * RTLD_LOCAL), and returns its table, checked against this build's ABI.
 * NULL with why written (one line: the path and what is wrong). The
 * module stays loaded for the life of the process. */
const void *cli_module_open(const char *file, const char *table, int global, char *why,
                            size_t why_size);

#endif
