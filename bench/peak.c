/* vit_peak — this machine's arithmetic peaks, per instruction set (peak.h
 * says how): the ceiling the kernels' "% of peak" (bench/README.md) is
 * measured against. Paths this CPU lacks are reported as skipped. One JSON
 * line per path and thread count: {"peak":"fp32_avx512","threads":2,"gflop_s":...}.
 *
 * usage: vit_peak [-t N] [--tries N]   (N: threads of the multi-threaded
 * run, default all; each path also runs on one thread) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peak.h"

int main(int argc, char **argv) {
    int threads = omp_get_num_procs(), tries = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-t") == 0) threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--tries") == 0) tries = atoi(argv[i + 1]);
    }
    if (threads < 1 || tries < 1) {
        fprintf(stderr, "usage: vit_peak [-t N] [--tries N]\n");
        return 1;
    }
    for (size_t i = 0; i < NUM_PEAK_PATHS; i++) {
        const peak_path *p = &PEAK_PATHS[i];
        if (!p->supported()) {
            printf("{\"peak\":\"%s\",\"skipped\":\"this CPU lacks it\"}\n", p->name);
            continue;
        }
        for (int t = 1; t <= threads; t = t == threads ? threads + 1 : threads)
            printf("{\"peak\":\"%s\",\"threads\":%d,\"gflop_s\":%.1f}\n", p->name, t,
                   peak_measure(p, t, tries));
        fflush(stdout);
    }
    return 0;
}
