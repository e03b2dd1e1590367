/* serve_guard.c — memory budgets and connection deadlines for vit serve
 * (see serve_guard.h). */
#ifdef VITC_HAVE_MHD

#include "serve_guard.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "cli.h"

/* A connection counts as slow, and first to give its slot to a newcomer,
 * once it has waited this long for its head or sent its body below the
 * rate this long: a prompt client's head takes milliseconds, and a body
 * may start late (curl waits up to a second for 100 Continue). */
#define EVICT_AFTER_SECONDS 1.0

static void timespec_at(double when, struct timespec *ts) {
    ts->tv_sec = (time_t)when;
    ts->tv_nsec = (long)((when - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void monotonic_cond_init(pthread_cond_t *cond) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* cli_now_seconds' clock */
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

/* ------------------------------------------------------------ budgets */

void serve_budget_init(serve_budget *b, size_t capacity) {
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->lock, NULL);
    monotonic_cond_init(&b->freed);
    b->capacity = capacity;
}

void serve_budget_destroy(serve_budget *b) {
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->freed);
}

serve_budget_result serve_budget_take(serve_budget *b, size_t bytes, double wait_seconds) {
    pthread_mutex_lock(&b->lock);
    serve_budget_result result = BUDGET_TAKEN;
    if (bytes > b->capacity) {
        b->too_large++;
        result = BUDGET_NEVER;
    } else if (b->used + bytes > b->capacity) {
        b->waited += wait_seconds > 0;
        struct timespec ts;
        timespec_at(cli_now_seconds() + wait_seconds, &ts);
        while (b->used + bytes > b->capacity && wait_seconds > 0)
            if (pthread_cond_timedwait(&b->freed, &b->lock, &ts) == ETIMEDOUT) break;
        if (b->used + bytes > b->capacity) {
            b->timed_out++;
            result = BUDGET_BUSY;
        }
    }
    if (result == BUDGET_TAKEN) {
        b->used += bytes;
        if (b->used > b->peak) b->peak = b->used;
    }
    pthread_mutex_unlock(&b->lock);
    return result;
}

void serve_budget_give(serve_budget *b, size_t bytes) {
    if (bytes == 0) return;
    pthread_mutex_lock(&b->lock);
    b->used -= bytes < b->used ? bytes : b->used;
    pthread_cond_broadcast(&b->freed);
    pthread_mutex_unlock(&b->lock);
}

void serve_budget_read(serve_budget *b, serve_budget *copy) {
    pthread_mutex_lock(&b->lock);
    *copy = *b;
    pthread_mutex_unlock(&b->lock);
}

/* ------------------------------------------------------------ connections */

typedef enum conn_state { CONN_HEAD, CONN_BODY, CONN_BUSY, CONN_CLOSING } conn_state;

struct serve_guard_conn {
    serve_guard_conn *prev, *next;
    MHD_socket fd;
    conn_state state;
    int kept_alive; /* waiting for a head after an answer */
    double since;   /* when the state began */
    size_t received; /* body bytes so far */
};

/* When the connection must have moved on, in cli_now_seconds' time. */
static double deadline_of(const serve_guard *g, const serve_guard_conn *k) {
    if (k->state == CONN_HEAD) {
        const double wait = k->kept_alive && g->idle_timeout > g->head_timeout ? g->idle_timeout
                                                                                : g->head_timeout;
        return k->since + wait;
    }
    if (k->state == CONN_BODY) return k->since + g->body_timeout + (double)k->received / g->min_rate;
    return INFINITY;
}

/* How readily a connection gives its slot to a newcomer:
 *  0: for a second or more it has waited for its head, sent its body
 *     under --min-rate, or sat idle after an answer (a server may close
 *     a kept-alive connection at any time, RFC 9112 9.6);
 *  1: it opened less than a second ago and its head has not arrived:
 *     closing it or the newcomer costs one client alike, and right after
 *     a slowloris client has reconnected all its sockets together that is
 *     all there is;
 *  2: it answered a request less than a second ago: most likely a prompt
 *     client about to send the next one, so last (but it may also be one
 *     its client has closed and libmicrohttpd has not cleaned up yet);
 * -1: never: it is being answered, or its body comes at the rate. */
static int eviction_rank(const serve_guard *g, const serve_guard_conn *k, double now) {
    const double age = now - k->since;
    const int slow = age >= EVICT_AFTER_SECONDS;
    if (k->state == CONN_HEAD) return slow ? 0 : k->kept_alive ? 2 : 1;
    if (k->state == CONN_BODY && slow && (double)k->received < g->min_rate * age) return 0;
    return -1;
}

/* Under the lock: its thread sees the end of the stream, libmicrohttpd
 * closes it (and then reports it closed, which frees k). */
static void close_conn(serve_guard *g, serve_guard_conn *k) {
    if (k->fd != MHD_INVALID_SOCKET) shutdown(k->fd, SHUT_RDWR);
    k->state = CONN_CLOSING;
    g->open--;
}

static void *guard_thread(void *arg) {
    serve_guard *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stop) {
        const double now = cli_now_seconds();
        double next = now + 1.0;
        for (serve_guard_conn *k = g->conns; k; k = k->next) {
            if (k->state != CONN_HEAD && k->state != CONN_BODY) continue;
            const double deadline = deadline_of(g, k);
            if (now >= deadline) {
                if (k->state == CONN_HEAD) g->head_timeouts++;
                else g->body_timeouts++;
                close_conn(g, k);
            } else if (deadline < next) {
                next = deadline;
            }
        }
        struct timespec ts;
        timespec_at(next + 0.001, &ts);
        pthread_cond_timedwait(&g->wake, &g->lock, &ts);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

int serve_guard_start(serve_guard *g, int limit, double head_timeout, double idle_timeout,
                      double body_timeout, double min_rate) {
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->lock, NULL);
    monotonic_cond_init(&g->wake);
    g->limit = limit;
    g->head_timeout = head_timeout;
    g->idle_timeout = idle_timeout;
    g->body_timeout = body_timeout;
    g->min_rate = min_rate;
    const int rc = pthread_create(&g->thread, NULL, guard_thread, g);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    g->started = 1;
    return 0;
}

void serve_guard_stop(serve_guard *g) {
    if (g->started) {
        pthread_mutex_lock(&g->lock);
        g->stop = 1;
        pthread_cond_signal(&g->wake);
        pthread_mutex_unlock(&g->lock);
        pthread_join(g->thread, NULL);
        g->started = 0;
    }
    while (g->conns) { /* none once libmicrohttpd has stopped; freed all the same */
        serve_guard_conn *k = g->conns;
        g->conns = k->next;
        free(k);
    }
    pthread_mutex_destroy(&g->lock);
    pthread_cond_destroy(&g->wake);
}

/* A new connection over the limit: the connection of the lowest rank
 * (eviction_rank), the longest in its state among those, makes room;
 * when every other is being answered or sends its body at the rate, the
 * newcomer is turned away. */
static void make_room(serve_guard *g, serve_guard_conn *newcomer) {
    const double now = cli_now_seconds();
    serve_guard_conn *victim = NULL;
    int victim_rank = 3;
    for (serve_guard_conn *k = g->conns; k; k = k->next) {
        const int rank = k == newcomer ? -1 : eviction_rank(g, k, now);
        if (rank >= 0 && (rank < victim_rank || (rank == victim_rank && k->since < victim->since))) {
            victim = k;
            victim_rank = rank;
        }
    }
    if (victim) g->evicted++;
    else g->refused++;
    close_conn(g, victim ? victim : newcomer);
}

void serve_guard_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                               enum MHD_ConnectionNotificationCode code) {
    serve_guard *g = cls;
    if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        serve_guard_conn *k = *socket_context;
        if (!k) return;
        pthread_mutex_lock(&g->lock);
        if (k->prev) k->prev->next = k->next;
        else g->conns = k->next;
        if (k->next) k->next->prev = k->prev;
        if (k->state != CONN_CLOSING) g->open--;
        pthread_mutex_unlock(&g->lock);
        free(k);
        *socket_context = NULL;
        return;
    }
    serve_guard_conn *k = calloc(1, sizeof *k);
    if (!k) return; /* not tracked: it still has libmicrohttpd's idle timeout */
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    k->fd = info ? info->connect_fd : MHD_INVALID_SOCKET;
    k->state = CONN_HEAD;
    k->since = cli_now_seconds();
    pthread_mutex_lock(&g->lock);
    k->next = g->conns;
    if (g->conns) g->conns->prev = k;
    g->conns = k;
    g->open++;
    if (g->open > g->limit) make_room(g, k);
    pthread_cond_signal(&g->wake); /* its deadline may be the next one */
    pthread_mutex_unlock(&g->lock);
    *socket_context = k;
}

static serve_guard_conn *conn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

/* Moves c to state (unless the guard is closing it). */
static void set_state(serve_guard *g, struct MHD_Connection *c, conn_state state) {
    serve_guard_conn *k = conn_of(c);
    if (!k) return;
    pthread_mutex_lock(&g->lock);
    if (k->state != CONN_CLOSING) {
        k->kept_alive = state == CONN_HEAD;
        k->state = state;
        k->since = cli_now_seconds();
        k->received = 0;
        pthread_cond_signal(&g->wake);
    }
    pthread_mutex_unlock(&g->lock);
}

void serve_guard_request(serve_guard *g, struct MHD_Connection *c, int has_body) {
    set_state(g, c, has_body ? CONN_BODY : CONN_BUSY);
}

void serve_guard_body(serve_guard *g, struct MHD_Connection *c, size_t n) {
    serve_guard_conn *k = conn_of(c);
    if (!k) return;
    pthread_mutex_lock(&g->lock);
    k->received += n;
    pthread_mutex_unlock(&g->lock);
}

void serve_guard_busy(serve_guard *g, struct MHD_Connection *c) { set_state(g, c, CONN_BUSY); }

void serve_guard_done(serve_guard *g, struct MHD_Connection *c) { set_state(g, c, CONN_HEAD); }

void serve_guard_read(serve_guard *g, serve_guard_counts *counts) {
    pthread_mutex_lock(&g->lock);
    counts->open = g->open;
    counts->head_timeouts = g->head_timeouts;
    counts->body_timeouts = g->body_timeouts;
    counts->evicted = g->evicted;
    counts->refused = g->refused;
    pthread_mutex_unlock(&g->lock);
}

#else
typedef int serve_guard_not_built; /* ISO C: a translation unit is not empty */
#endif
