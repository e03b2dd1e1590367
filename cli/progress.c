/* Timings, the summary, the progress line and the stop signals (progress.h). */
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

void cli_timings_take(cli_timings *t, const vit_pipeline *pipeline) {
    const vit_pipeline_timings *p = vit_pipeline_get_timings(pipeline);
    t->start = p->start;
    t->decode = p->decode;
    t->forward = p->forward;
}

double cli_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_print_summary(const char *command, const char *verbed, size_t files, size_t failed,
                       const char *note, const cli_timings *t) {
    if (!note) note = "";
    const char *noun = files == 1 ? "file" : "files";
    if (files == 0) {
        fprintf(stderr, "vit %s: nothing to do: no files\n", command);
        return;
    }
    if (files > 0 && failed == files) {
        fprintf(stderr, "vit %s: %zu %s, %zu failed%s: nothing %s\n", command, files, noun, failed,
                note, verbed);
        return;
    }
    char split[128] = "";
    if (t->split)
        snprintf(split, sizeof split, ", decode wait %.2f s, forward %.2f s", t->decode, t->forward);
    else /* over MPI ranks: the batches ran on every rank at once */
        snprintf(split, sizeof split, ", run %.2f s", t->total);
    fprintf(stderr, "vit %s: %zu %s, %zu failed%s; load %.2f s%s; %.1f images/s\n", command, files,
            noun, failed, note, t->load, split, t->total > 0 ? files / t->total : 0.0);
}

void cli_print_timings(const char *command, const cli_timings *t) {
    if (!getenv("VITC_TIMINGS")) return;
    fprintf(stderr, "vit %s: timings: load %.2f ms, start %.2f ms, decode wait %.2f ms, forward %.2f ms\n",
            command, t->load * 1e3, t->start * 1e3, t->decode * 1e3, t->forward * 1e3);
}

/* The width of the terminal on stderr (COLUMNS, else 80, when not known). */
static int terminal_columns(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    const char *columns = getenv("COLUMNS");
    const long n = columns ? strtol(columns, NULL, 10) : 0;
    return n > 0 && n < 10000 ? (int)n : 80;
}

void cli_progress_line(const char *format, ...) {
    char line[512];
    va_list ap;
    va_start(ap, format);
    vsnprintf(line, sizeof line, format, ap);
    va_end(ap);
    /* One column short of the width: a full line would put some terminals'
     * cursor on the next row. \033[K erases what a longer line left. */
    const int width = terminal_columns() - 1;
    fprintf(stderr, "\r%.*s\033[K", width > 0 ? width : 0, line);
    fflush(stderr);
}

void cli_progress_clear(void) { fputs("\r\033[K", stderr); }

void cli_show_progress(size_t done, size_t total, size_t failed, double elapsed) {
    const double rate = elapsed > 0 ? done / elapsed : 0.0;
    const long eta = rate > 0 ? (long)((total - done) / rate + 0.5) : 0;
    cli_progress_line("  %zu/%zu files  %.1f images/s  ETA %ld:%02ld:%02ld  %zu failed", done, total,
                      rate, eta / 3600, eta / 60 % 60, eta % 60, failed);
}

/* ------------------------------------------------------------- signals */

/* Set by the handler, read between batches: the handler does nothing else,
 * as only that is async-signal-safe. */
static volatile sig_atomic_t stop_signal;

static void note_stop_signal(int signo) { stop_signal = signo; }

void cli_catch_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = note_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* Interrupted writes restart, so a row is never cut by the signal; the
     * handler resets to the default, so a second signal stops at once. */
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int cli_stop_requested(void) { return stop_signal; }
