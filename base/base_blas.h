/* base_blas.h — OpenBLAS, loaded the first time it is called.
 *
 * With VITC_LAZY_BLAS (the default) the program does not link OpenBLAS:
 * lazy_openblas.c defines the few BLAS entry points vitc calls (cblas.h's
 * prototypes, checked by the compiler) and each loads the library on its
 * first call, so a command that never multiplies through OpenBLAS (vit
 * --version, vit info) does not pay its start-up: mapping ~30 MB with
 * libgfortran and libquadmath, 2 000 relocations and its constructor, about
 * 5 ms of a 15 ms start on the project's machines (bench/README.md).
 *
 * A function vitc starts calling must be added there: the link fails
 * (undefined reference) until it is. */
#ifndef BASE_BLAS_H
#define BASE_BLAS_H

#include <stddef.h>

/* Loads OpenBLAS now if it is not loaded yet. 0, or -1 with why (the
 * dynamic loader's message) written to why[0 .. size). A BLAS call that
 * cannot load the library prints that message and ends the process with
 * status 127, as the dynamic loader does for a missing library, because no
 * BLAS function can return an error: call this first to report it instead. */
int base_blas_load(char *why, size_t size);

/* Whether OpenBLAS has been loaded (by a call or base_blas_load). */
int base_blas_loaded(void);

#endif
