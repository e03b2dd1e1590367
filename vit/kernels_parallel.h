/* kernels_parallel.h — how the kernels run a loop on th.count threads.
 * Internal to the kernel layer (kernels.c, kernels_int8.c). */
#ifndef VIT_KERNELS_PARALLEL_H
#define VIT_KERNELS_PARALLEL_H

#include <omp.h>

#include "kernels.h"

/* Runs the for loop given on th.count OpenMP threads with the pragma given,
 * or, with one thread, plainly on the caller: no parallel region at all,
 * so a kernel called by a thread that runs whole images never nests one.
 * Every kernel names its kernels_threads `th`. */
#define PARALLEL_FOR_WITH(pragma, team_pragma, ...)                              \
    do {                                                                          \
        if (th.in_team && th.count > 1) {                                         \
            _Pragma(team_pragma) __VA_ARGS__                                      \
        } else if (th.count > 1) {                                                \
            _Pragma(pragma) __VA_ARGS__                                           \
        } else {                                                                  \
            __VA_ARGS__                                                           \
        }                                                                         \
    } while (0)

/* Static split (rows of equal cost; the split changes no result). Inside a
 * team (th.in_team) an orphaned omp for, whose end is a barrier. */
#define PARALLEL_FOR(...)                                                             \
    PARALLEL_FOR_WITH("omp parallel for schedule(static) num_threads(th.count)",      \
                      "omp for schedule(static)", __VA_ARGS__)

/* Iterations handed out one by one (tasks of uneven cost). */
#define PARALLEL_FOR_DYNAMIC(...)                                                     \
    PARALLEL_FOR_WITH("omp parallel for schedule(dynamic) num_threads(th.count)",     \
                      "omp for schedule(dynamic)", __VA_ARGS__)

/* Which thread's part of a per-thread scratch buffer to use inside a
 * PARALLEL_FOR: with one thread there is no region of our own, and the
 * caller has already handed us its part. */
static inline int scratch_slot(kernels_threads th) { return th.count > 1 ? omp_get_thread_num() : 0; }

#endif
