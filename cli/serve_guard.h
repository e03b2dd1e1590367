/* serve_guard.h — what keeps vit serve's memory and connection slots
 * bounded whatever its clients do (issue 24):
 *
 *  - serve_budget: bytes held across all connections, taken before and
 *    given back after a use (decoding an image: its probed peak; request
 *    bodies: their buffers). A take that can never fit is refused at
 *    once; one that does not fit now waits, at most a given time.
 *  - serve_guard: every open connection and what it is doing (waiting for
 *    a request head, receiving a body, being answered). A thread closes a
 *    connection whose head has not arrived in time, or whose body comes in
 *    slower than a minimum rate after a grace period; libmicrohttpd's own
 *    timeout only sees silence, not a byte every few seconds. At the
 *    connection limit a new connection takes the slot of one that has been
 *    slow (or idle after an answer) for a second, else of one still
 *    waiting for its head, else of one that answered a request just now,
 *    so slow clients cannot keep prompt ones out; only when every slot is
 *    being answered or receiving a body at the rate is it turned away.
 *
 * A connection is closed by shutdown(2) on its socket, under the guard's
 * lock: its own thread then sees the end of the stream and libmicrohttpd
 * closes it as if the client had, and the socket cannot have been closed
 * and reused in between, since libmicrohttpd reports the close
 * (MHD_CONNECTION_NOTIFY_CLOSED, which takes the lock) before closing it. */
#ifndef SERVE_GUARD_H
#define SERVE_GUARD_H

#include <pthread.h>
#include <stddef.h>

#include <microhttpd.h>

typedef struct serve_budget {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    size_t capacity, used, peak;
    unsigned long waited, too_large, timed_out; /* takes that waited, never fit, gave up */
} serve_budget;

typedef enum serve_budget_result { BUDGET_TAKEN, BUDGET_NEVER, BUDGET_BUSY } serve_budget_result;

void serve_budget_init(serve_budget *b, size_t capacity);
void serve_budget_destroy(serve_budget *b);
/* Takes bytes, waiting up to wait_seconds for others to give some back. */
serve_budget_result serve_budget_take(serve_budget *b, size_t bytes, double wait_seconds);
void serve_budget_give(serve_budget *b, size_t bytes);
/* A consistent copy of b's numbers (lock and condition left out). */
void serve_budget_read(serve_budget *b, serve_budget *copy);

typedef struct serve_guard_conn serve_guard_conn;

typedef struct serve_guard {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    int started, stop;
    serve_guard_conn *conns; /* a doubly linked list */
    int open, limit;         /* connections not being closed; --max-connections */
    double head_timeout;     /* seconds from the connection (or the previous answer) to a head */
    double idle_timeout;     /* --timeout: a kept-alive connection's head may wait this long */
    double body_timeout;     /* seconds of grace for a body ... */
    double min_rate;         /* ... then at least this many bytes per second */
    unsigned long head_timeouts, body_timeouts, evicted, refused;
} serve_guard;

typedef struct serve_guard_counts {
    int open;
    unsigned long head_timeouts, body_timeouts, evicted, refused;
} serve_guard_counts;

/* Starts the guard's thread; 0 or -1 (with errno). */
int serve_guard_start(serve_guard *g, int limit, double head_timeout, double idle_timeout,
                      double body_timeout, double min_rate);
/* Stops the thread; call after MHD_stop_daemon (every connection is gone). */
void serve_guard_stop(serve_guard *g);

/* MHD_OPTION_NOTIFY_CONNECTION's callback (cls: the guard). */
void serve_guard_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                               enum MHD_ConnectionNotificationCode code);

/* A request's head has arrived; a body follows (has_body) or not. */
void serve_guard_request(serve_guard *g, struct MHD_Connection *c, int has_body);
/* n more bytes of the body arrived. */
void serve_guard_body(serve_guard *g, struct MHD_Connection *c, size_t n);
/* The body is in (or there was none): the request is being answered. */
void serve_guard_busy(serve_guard *g, struct MHD_Connection *c);
/* The answer is sent: the connection waits for its next request head. */
void serve_guard_done(serve_guard *g, struct MHD_Connection *c);

void serve_guard_read(serve_guard *g, serve_guard_counts *counts);

#endif
