/* lazy_openblas.c — the BLAS entry points vitc calls, loading OpenBLAS on
 * first use (base_blas.h says why).
 *
 * The library is looked for where the build found it first (the directory
 * the link's RUNPATH used to name, so the same OpenMP build of OpenBLAS is
 * taken that a linked vit took), then by its soname through the loader's
 * usual search. The state below is written once, inside pthread_once, and
 * only read after it: the loader keeps the same kind of state for a
 * linked library. */
#include "base_blas.h"

#include <cblas.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef VITC_OPENBLAS_SONAME
#define VITC_OPENBLAS_SONAME "libopenblas.so.0"
#endif
#ifndef VITC_OPENBLAS_DIR
#define VITC_OPENBLAS_DIR ""
#endif

typedef void (*sgemm_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE,
                         const enum CBLAS_TRANSPOSE, const blasint, const blasint, const blasint,
                         const float, const float *, const blasint, const float *, const blasint,
                         const float, float *, const blasint);
typedef void (*sgemv_fn)(const enum CBLAS_ORDER, const enum CBLAS_TRANSPOSE, const blasint,
                         const blasint, const float, const float *, const blasint, const float *,
                         const blasint, const float, float *, const blasint);
typedef void (*set_threads_fn)(int);
typedef int (*get_parallel_fn)(void);
typedef char *(*get_corename_fn)(void);

static struct {
    pthread_once_t once;
    atomic_int loaded;
    atomic_int threads; /* openblas_set_num_threads before the load (0: none) */
    char why[512];
    sgemm_fn sgemm;
    sgemv_fn sgemv;
    set_threads_fn set_num_threads;
    get_parallel_fn get_parallel;
    get_corename_fn get_corename;
} blas = {.once = PTHREAD_ONCE_INIT};

static void *open_library(void) {
    char path[4096];
    const char *dir = VITC_OPENBLAS_DIR;
    if (dir[0]) {
        snprintf(path, sizeof path, "%s/%s", dir, VITC_OPENBLAS_SONAME);
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h) return h;
    }
    return dlopen(VITC_OPENBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
}

/* dlsym returns a void *; POSIX guarantees it converts to a function
 * pointer, ISO C does not, hence the copy instead of a cast. */
static int resolve(void *h, const char *name, void *fn, size_t fn_size) {
    void *p = dlsym(h, name);
    if (!p) return -1;
    memcpy(fn, &p, fn_size);
    return 0;
}

static void load(void) {
    void *h = open_library();
    if (!h) {
        const char *e = dlerror();
        snprintf(blas.why, sizeof blas.why, "%s", e ? e : VITC_OPENBLAS_SONAME ": not found");
        return;
    }
    if (resolve(h, "cblas_sgemm", &blas.sgemm, sizeof blas.sgemm) ||
        resolve(h, "cblas_sgemv", &blas.sgemv, sizeof blas.sgemv) ||
        resolve(h, "openblas_set_num_threads", &blas.set_num_threads, sizeof blas.set_num_threads) ||
        resolve(h, "openblas_get_parallel", &blas.get_parallel, sizeof blas.get_parallel) ||
        resolve(h, "openblas_get_corename", &blas.get_corename, sizeof blas.get_corename)) {
        const char *e = dlerror();
        snprintf(blas.why, sizeof blas.why, "%s", e ? e : "a BLAS function is missing");
        dlclose(h);
        return;
    }
    /* Flag first, count after: a count stored meanwhile is either read
     * here or sees the flag and is passed on by its setter. */
    atomic_store(&blas.loaded, 1);
    const int threads = atomic_load(&blas.threads);
    if (threads > 0) blas.set_num_threads(threads);
}

int base_blas_load(char *why, size_t size) {
    pthread_once(&blas.once, load);
    if (atomic_load(&blas.loaded)) return 0;
    if (why && size) snprintf(why, size, "cannot load OpenBLAS: %s", blas.why);
    return -1;
}

int base_blas_loaded(void) { return atomic_load(&blas.loaded); }

/* What the dynamic loader does when a linked library is missing (status
 * 127), only later: a BLAS call has no way to return an error. */
static void need(void) {
    char why[640];
    if (base_blas_load(why, sizeof why) == 0) return;
    fprintf(stderr, "vit: %s\n", why);
    fflush(stderr);
    _exit(127);
}

void cblas_sgemm(OPENBLAS_CONST enum CBLAS_ORDER Order, OPENBLAS_CONST enum CBLAS_TRANSPOSE TransA,
                 OPENBLAS_CONST enum CBLAS_TRANSPOSE TransB, OPENBLAS_CONST blasint M,
                 OPENBLAS_CONST blasint N, OPENBLAS_CONST blasint K, OPENBLAS_CONST float alpha,
                 OPENBLAS_CONST float *A, OPENBLAS_CONST blasint lda, OPENBLAS_CONST float *B,
                 OPENBLAS_CONST blasint ldb, OPENBLAS_CONST float beta, float *C,
                 OPENBLAS_CONST blasint ldc) {
    need();
    blas.sgemm(Order, TransA, TransB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void cblas_sgemv(OPENBLAS_CONST enum CBLAS_ORDER order, OPENBLAS_CONST enum CBLAS_TRANSPOSE trans,
                 OPENBLAS_CONST blasint m, OPENBLAS_CONST blasint n, OPENBLAS_CONST float alpha,
                 OPENBLAS_CONST float *a, OPENBLAS_CONST blasint lda, OPENBLAS_CONST float *x,
                 OPENBLAS_CONST blasint incx, OPENBLAS_CONST float beta, float *y,
                 OPENBLAS_CONST blasint incy) {
    need();
    blas.sgemv(order, trans, m, n, alpha, a, lda, x, incx, beta, y, incy);
}

/* Setting the thread count must not load the library (every command sets
 * it): the count is kept and given to OpenBLAS when it loads (load). */
void openblas_set_num_threads(int num_threads) {
    atomic_store(&blas.threads, num_threads);
    if (atomic_load(&blas.loaded)) blas.set_num_threads(num_threads);
}

int openblas_get_parallel(void) {
    need();
    return blas.get_parallel();
}

char *openblas_get_corename(void) {
    need();
    return blas.get_corename();
}
