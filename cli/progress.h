/* progress.h — what a batch run tells the user while and after it runs: the
 * clock, the timings, the progress line, the summary, and the stop signals
 * it finishes cleanly on (private to cli/; cli/progress.c) */
#ifndef CLI_PROGRESS_H
#define CLI_PROGRESS_H

#include <stddef.h>
#include "vit_pipeline.h"

/* A monotonic clock in seconds, for rates and progress. */
double cli_now_seconds(void);

/* Where a batch run's time went, for the summary line. decode is the time
 * the forward pass waited for decoded images: with the prefetching loader
 * decoding overlaps the forward pass, and only the part it does not hide
 * costs time. */
typedef struct cli_timings {
    double load, decode, forward, total; /* seconds; total: the batch loop */
    double start; /* cli_batch_start: the inference context and the loader */
    int split; /* decode and forward were measured (not over MPI ranks) */
} cli_timings;

/* Copies the pipeline's setup, decode-wait and forward times into t. */
void cli_timings_take(cli_timings *t, const vit_pipeline *pipeline);

/* The summary line of a batch run on stderr: "vit CMD: 500 files, 2 failed;
 * load 0.12 s, decode wait 3.4 s, forward 10.2 s; 38.1 images/s". When no
 * file succeeded: "vit CMD: 1 file, 1 failed: nothing VERBED"; when there
 * was nothing to run, the caller says why (cli_print_nothing_to_do). note,
 * when not NULL, follows the counts ("; 300 more already in out.csv"). */
void cli_print_summary(const char *command, const char *verbed, size_t files, size_t failed,
                       const char *note, const cli_timings *t);

/* With VITC_TIMINGS in the environment (bench/oneshot.sh), the stages of
 * a batch run in milliseconds on stderr, -q or not: "vit CMD: timings:
 * load 41.20 ms, start 5.10 ms, decode wait 7.91 ms, forward 10.33 ms"
 * (start: cli_batch_start). Nothing without. */
void cli_print_timings(const char *command, const cli_timings *t);

/* The "done/total files, images/s, ETA, failed" line a batch run redraws on
 * a terminal. */
void cli_show_progress(size_t done, size_t total, size_t failed, double elapsed);

/* Redraws the progress line on stderr (a terminal) with printf-style text,
 * cut to the terminal's width so that it never wraps and scrolls. */
void cli_progress_line(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Erases the progress line (before an error line or the summary). */
void cli_progress_clear(void);

/* From now on SIGINT and SIGTERM only set a flag, which cli_stop_requested
 * returns (the signal number, 0 if none came): a batch run checks it between
 * batches and finishes its output cleanly. A second signal kills at once. */
void cli_catch_stop_signals(void);
int cli_stop_requested(void);

#endif
