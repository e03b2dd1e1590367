/* vit serve: an HTTP inference server with dynamic batching.
 *
 * GNU libmicrohttpd does the HTTP protocol (parsing heads, keep-alive,
 * chunked bodies, 100-continue, the idle timeout and the connection
 * limit); multipart bodies and Accept are parsed in serve_http.c. Threads:
 *  - libmicrohttpd's: one per connection. A request's handler reads the
 *    body, decodes and preprocesses its images itself (so requests that
 *    arrive together are decoded in parallel), puts them in the queue and
 *    sleeps until the model has answered them, then formats the response.
 *  - one model thread: takes what is queued, waiting up to --max-wait-ms
 *    after the first image for -b images in all, runs them through one
 *    batched forward pass (OpenMP inside) and wakes the handlers.
 *  - the guard's (serve_guard.c): closes connections whose request head
 *    or body is late, and makes room at the connection limit.
 *  - the main thread: waits for SIGINT/SIGTERM (blocked everywhere else,
 *    taken with sigwait), then stops accepting, lets the requests begun
 *    before the signal finish and exits 0.
 * Memory is bounded whatever clients send: bodies are kept only up to
 * --max-body-mb each and --bodies-mb together, and an image is decoded only
 * once its probed peak (data_image_probe_memory) fits in --decode-mb beside
 * the decodes under way. The queue is bounded (--queue images, counted from
 * admission to the model taking them); a request that does not fit gets
 * 503 at once. The server's shared state lives in one struct under one
 * mutex; the budgets and the guard have their own. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "module.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <malloc.h>
#include <microhttpd.h>
#include <omp.h>

#include "serve_guard.h"
#include "serve_http.h"

enum { OPT_MODEL, OPT_REVISION, OPT_LABELS, OPT_HOST, OPT_PORT, OPT_BATCH, OPT_MAX_WAIT,
       OPT_THREADS, OPT_TOPK, OPT_QUEUE, OPT_MAX_BODY, OPT_BODIES, OPT_DECODE, OPT_DECODE_WAIT,
       OPT_TIMEOUT, OPT_HEAD_TIMEOUT, OPT_BODY_TIMEOUT, OPT_MIN_RATE, OPT_CONNECTIONS, OPT_PER_IP,
       OPT_LIMITS, NUM_OPTS = OPT_LIMITS + CLI_NUM_LIMIT_OPTIONS };

static const cli_option OPTIONS[NUM_OPTS] = {
    [OPT_MODEL] = {"model", 'm', 1, "MODEL", CLI_MODEL_HELP " (default: the shipped "
                                            "ImageNet-1k ViT-Ti/16)"},
    [OPT_REVISION] = CLI_REVISION_OPTION,
    [OPT_LABELS] = CLI_LABELS_OPTION,
    [OPT_HOST] = {"host", 0, 1, "ADDR", "address to listen on (default 127.0.0.1; 0.0.0.0 or :: "
                                       "for every interface)"},
    [OPT_PORT] = {"port", 'p', 1, "N", "TCP port (default 8080; 0: any free port)"},
    [OPT_BATCH] = {"batch", 'b', 1, "N", "images per forward pass at most (default 16)"},
    [OPT_MAX_WAIT] = {"max-wait-ms", 0, 1, "N", "wait up to N ms after a request for more to "
                                               "batch with it (default 5)"},
    [OPT_THREADS] = CLI_THREADS_OPTION,
    [OPT_TOPK] = {"top-k", 'k', 1, "N", "labels per image when a request gives no top_k "
                                       "(default 5)"},
    [OPT_QUEUE] = {"queue", 0, 1, "N", "images admitted and waiting for the model at most; "
                                      "more: 503 (default 256)"},
    [OPT_MAX_BODY] = {"max-body-mb", 0, 1, "N", "refuse request bodies over N MiB: 413 "
                                               "(default 20)"},
    [OPT_BODIES] = {"bodies-mb", 0, 1, "N", "request bodies held at once, all connections "
                                           "together, at most N MiB; more: 503 (default 128)"},
    [OPT_DECODE] = {"decode-mb", 0, 1, "N", "images being decoded at once take at most N MiB "
                                           "(each counted at its peak); one over: 413 (default "
                                           "384)"},
    [OPT_DECODE_WAIT] = {"decode-wait-ms", 0, 1, "N", "an image that does not fit in --decode-mb "
                                                     "now waits up to N ms, then 503 (default "
                                                     "10000)"},
    [OPT_TIMEOUT] = {"timeout", 0, 1, "S", "close a connection silent for S seconds; wait up to S "
                                          "for requests at shutdown (default 30)"},
    [OPT_HEAD_TIMEOUT] = {"head-timeout", 0, 1, "S", "close a connection whose request head is not "
                                                    "in S seconds after it opened (default 10)"},
    [OPT_BODY_TIMEOUT] = {"body-timeout", 0, 1, "S", "a request body may take S seconds, plus the "
                                                    "time its bytes take at --min-rate (default 30)"},
    [OPT_MIN_RATE] = {"min-rate", 0, 1, "KIB", "the slowest a body may arrive after "
                                              "--body-timeout, in KiB/s (default 16)"},
    [OPT_CONNECTIONS] = {"max-connections", 0, 1, "N", "connections open at once at most "
                                                      "(default 64)"},
    [OPT_PER_IP] = {"max-connections-per-ip", 0, 1, "N", "connections open at once from one "
                                                        "address (default 0: no limit)"},
    [OPT_LIMITS] = CLI_LIMIT_OPTIONS,
};

static const char USAGE[] =
    "usage: vit serve [-m MODEL] [--host ADDR] [--port N] [-b MAX_BATCH]\n"
    "                 [--max-wait-ms N] [-t N] [options]\n"
    "\n"
    "Answers HTTP requests with the model loaded once. Requests that arrive\n"
    "together run in one batched forward pass; each answer holds the numbers\n"
    "vit classify gives for the same file.\n"
    "\n"
    "  POST /classify   the image as the body, or multipart/form-data with one or\n"
    "                   more files; ?top_k=N. Answers [{\"label\", \"score\",\n"
    "                   \"index\"}, ...] best first (multipart: one list per file)\n"
    "  POST /features   the pooled embedding as a JSON array (multipart: one per\n"
    "                   file); ?pool=model|cls|mean; with Accept:\n"
    "                   application/octet-stream a .npy (images x size float32)\n"
    "  GET /health      {\"status\": \"ok\"}\n"
    "  GET /info        what vit info prints, as JSON\n"
    "  GET /metrics     Prometheus text: requests, errors, images, batch sizes,\n"
    "                   latency, queue length\n"
    "\n"
    "Errors are {\"error\": \"one line\"}: 400 bad request or parameter, 404, 405,\n"
    "406 Accept allows no answer type, 413 body, image or decode too large,\n"
    "422 not a readable image, 500 the model's output is not finite, 503 queue,\n"
    "bodies or decode budget full (Retry-After), or shutting down.\n"
    "SIGINT/SIGTERM: stop accepting, answer the requests begun, exit 0 (a\n"
    "second signal stops at once).";

/* ------------------------------------------------------------ metrics */

/* EP_NONE: requests libmicrohttpd refused itself, before any endpoint (a
 * malformed or oversized head, a bad Content-Length, another HTTP version). */
enum { EP_CLASSIFY, EP_FEATURES, EP_HEALTH, EP_INFO, EP_METRICS, EP_OTHER, EP_NONE, EP_COUNT };
static const char *const EP_NAMES[EP_COUNT] = {"classify", "features", "health", "info",
                                               "metrics",  "other",    "none"};

static const double LATENCY_BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                         0.5,   1,    2.5,   5,    10,  30};
#define NUM_LATENCY_BUCKETS (sizeof LATENCY_BUCKETS / sizeof *LATENCY_BUCKETS)
#define NUM_BATCH_BUCKETS 12 /* 1, 2, 4 ... 2048 */

typedef struct metrics {
    unsigned long requests[EP_COUNT][600]; /* by status code */
    unsigned long latency[NUM_LATENCY_BUCKETS + 1]; /* the last: +Inf */
    double latency_sum;
    unsigned long latency_count;
    unsigned long batch_sizes[NUM_BATCH_BUCKETS + 1];
    unsigned long batches, images, batch_images;
    double forward_seconds;
    unsigned long rejected_full; /* 503 for a full queue */
    unsigned long refused_connections; /* by libmicrohttpd's limits (total, per address) */
} metrics;

/* libmicrohttpd's messages, which a client can provoke at will (one per
 * malformed request): at most LOG_BURST lines per LOG_WINDOW seconds. */
#define LOG_BURST 5
#define LOG_WINDOW 10.0

typedef struct log_limit {
    double window_start;
    int lines;
    unsigned long suppressed;
} log_limit;

/* ------------------------------------------------------------ requests */

typedef enum pool_kind { POOL_MODEL, POOL_CLS, POOL_MEAN } pool_kind;

struct server;

/* Why a body was not kept (the answer is given once it has been read). */
typedef enum body_refusal { BODY_KEPT, BODY_TOO_LARGE, BODY_NO_BUDGET, BODY_TOO_MANY_PARTS } body_refusal;

/* One HTTP request, from its headers to the end of its response. */
typedef struct request {
    struct server *s;
    int endpoint;
    double start;
    unsigned code;   /* status sent (0: none yet) */
    int answered;    /* a response was queued at the first call */
    int late;        /* its head came after the stop signal */
    /* The body, kept whole; a multipart one is split when it is in. */
    unsigned char *body;
    size_t length, capacity; /* capacity is what the bodies budget holds for it */
    size_t expected;         /* Content-Length, 0 when not given */
    size_t received;
    body_refusal refused;
    int multipart;
    char boundary[SERVE_BOUNDARY_MAX + 1];
    serve_form_counter counter;
    serve_form_part *parts; /* the files, once split */
    size_t num_parts;
    /* The work: n images, the model fills outputs and counts down. */
    int n;
    int wants_features;
    pool_kind pool;
    int feature_size; /* floats per image from /features (by pool) */
    float *inputs;  /* n x image floats */
    float *outputs; /* n x out floats */
    char **errors;  /* per image: why the model could not answer (NULL: fine) */
    int remaining;  /* images the model has not done; guarded by s->lock */
} request;

typedef struct item {
    request *r;
    int index;
    double queued;
} item;

typedef struct server {
    vit_model *model;
    int is_default_model;
    data_preprocess pre;
    int classes, out_floats, feature_floats, tokens, hidden;
    size_t image_floats;
    long batch, max_wait_ms, threads, top_k, queue_cap, timeout, connections, per_ip;
    long head_timeout, body_timeout, min_rate_kib;
    size_t max_body;
    double decode_wait; /* seconds */
    serve_budget bodies, decode;
    serve_guard guard;
    int guard_started;
    struct MHD_Daemon *daemon;
    pthread_t worker;
    int worker_started;
    pthread_mutex_t lock;
    pthread_cond_t work; /* the model thread waits for images (or the end) */
    pthread_cond_t done; /* handlers wait for their images; shutdown for requests */
    /* The model thread's: the context and a batch's buffers. */
    vit_pipeline *pipeline; /* context and rows; the queue below is its batch source */
    float *images, *tokens_buffer, *scratch;
    int *finite; /* per image of a batch: its row is finite */
    item *items;
    item *ring;          /* queue_cap items */
    size_t head, count;  /* decoded images waiting for the model */
    size_t reserved;     /* images admitted and not yet taken by the model */
    int active;          /* requests begun and not completed */
    int stopping;        /* refuse new work */
    int worker_stop;     /* the model thread ends when the queue is empty */
    metrics m;
    log_limit log;
} server;

/* ------------------------------------------------------------ responses */

/* A one-line text for an error message: control characters (a line break in
 * a client's file name) become spaces. */
static void one_line(char *text) {
    for (unsigned char *p = (unsigned char *)text; *p; p++)
        if (*p < 0x20 || *p == 0x7f) *p = ' ';
}

static enum MHD_Result send_buffer(struct MHD_Connection *c, request *r, unsigned code,
                                   const char *type, char *data, size_t length) {
    struct MHD_Response *response =
        data ? MHD_create_response_from_buffer(length, data, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!response) {
        free(data);
        return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    }
    MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW,
                                r->endpoint == EP_CLASSIFY || r->endpoint == EP_FEATURES ? "POST"
                                                                                         : "GET, HEAD");
    if (code == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    const enum MHD_Result ok = MHD_queue_response(c, code, response);
    MHD_destroy_response(response);
    if (ok == MHD_YES) r->code = code;
    return ok;
}

static enum MHD_Result send_json(struct MHD_Connection *c, request *r, unsigned code, cJSON *json) {
    char *text = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!text) return MHD_NO;
    const size_t n = strlen(text);
    char *body = realloc(text, n + 2); /* a final newline, for curl users */
    if (!body) {
        free(text);
        return MHD_NO;
    }
    memcpy(body + n, "\n", 2);
    return send_buffer(c, r, code, "application/json", body, n + 1);
}

/* {"error": "..."} with a printf-style message kept to one line. */
static enum MHD_Result send_error(struct MHD_Connection *c, request *r, unsigned code,
                                  const char *format, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, request *r, unsigned code,
                                  const char *format, ...) {
    char message[1024];
    va_list ap;
    va_start(ap, format);
    vsnprintf(message, sizeof message, format, ap);
    va_end(ap);
    one_line(message);
    char *text = cli_json_text(message);
    cJSON *json = cJSON_CreateObject();
    if (!text || !json || !cJSON_AddStringToObject(json, "error", text)) {
        free(text);
        cJSON_Delete(json);
        return MHD_NO;
    }
    free(text);
    return send_json(c, r, code, json);
}

/* A growable text buffer (responses with many numbers). */
typedef struct text {
    char *data;
    size_t length, capacity;
    int failed;
} text;

static void text_add(text *t, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void text_add(text *t, const char *format, ...) {
    if (t->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, format);
        const int n = vsnprintf(t->data ? t->data + t->length : NULL,
                                t->data ? t->capacity - t->length : 0, format, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = 1;
            return;
        }
        if (t->data && t->length + (size_t)n < t->capacity) {
            t->length += (size_t)n;
            return;
        }
        const size_t capacity = 2 * (t->capacity + (size_t)n + 64);
        char *grown = realloc(t->data, capacity);
        if (!grown) {
            t->failed = 1;
            return;
        }
        t->data = grown;
        t->capacity = capacity;
    }
}

/* ------------------------------------------------------------ the model thread */

static double now(void) { return cli_now_seconds(); }

static void deadline_to_timespec(double when, struct timespec *ts) {
    /* The condition variables run on CLOCK_MONOTONIC (see serve_start). */
    ts->tv_sec = (time_t)when;
    ts->tv_nsec = (long)((when - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int batch_bucket(int size) {
    int b = 0;
    while (b < NUM_BATCH_BUCKETS && (1 << b) < size) b++;
    return b;
}

/* Runs the taken items through the model and fills their requests'
 * outputs (or errors). Called without the lock: only this thread touches
 * the items' inputs and outputs until remaining reaches 0. */
static void run_items(server *s, float *images, float *tokens, float *scratch, const item *items,
                      int k) {
    int features = 0;
    for (int i = 0; i < k; i++) {
        memcpy(images + (size_t)i * s->image_floats,
               items[i].r->inputs + (size_t)items[i].index * s->image_floats,
               s->image_floats * sizeof *images);
        features |= items[i].r->wants_features;
    }
    base_error err;
    base_status st = vit_context_capture_tokens(vit_pipeline_context(s->pipeline),
                                               vit_model_config(s->model)->num_layers - 1,
                                               features ? tokens : NULL, &err);
    if (st == BASE_OK) st = vit_pipeline_run_images(s->pipeline, images, k, s->finite, &err);
    for (int i = 0; i < k; i++) {
        request *r = items[i].r;
        const int x = items[i].index;
        if (st != BASE_OK) {
            r->errors[x] = strdup(err.message);
            continue;
        }
        if (r->wants_features) {
            static const vit_pool POOLS[] = {[POOL_MODEL] = VIT_POOL_MODEL, [POOL_CLS] = VIT_POOL_CLS,
                                             [POOL_MEAN] = VIT_POOL_MEAN};
            base_error perr;
            float *out = r->outputs + (size_t)x * r->feature_size;
            if (vit_pool_tokens(s->model, tokens + (size_t)i * s->tokens * s->hidden, s->tokens,
                                POOLS[r->pool], 0, out, scratch, &perr) != BASE_OK)
                r->errors[x] = strdup(perr.message);
            else
                for (int f = 0; f < r->feature_size && !r->errors[x]; f++)
                    if (!isfinite(out[f])) r->errors[x] = strdup("model output is not finite (NaN/Inf)");
            continue;
        }
        /* The pipeline's row: probabilities, or not finite (failed). */
        float *out = r->outputs + (size_t)x * s->classes;
        memcpy(out, vit_pipeline_outputs(s->pipeline) + (size_t)i * s->out_floats,
               (size_t)s->classes * sizeof *out);
        if (!s->finite[i]) r->errors[x] = strdup("model output is not finite (NaN/Inf)");
    }
}

static void *model_thread(void *arg) {
    server *s = arg;
    /* OpenMP's thread count is per thread: set it where the model runs. */
    cli_set_threads((int)s->threads);
    const size_t batch = (size_t)s->batch;
    item *items = s->items;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (s->count == 0 && !s->worker_stop) pthread_cond_wait(&s->work, &s->lock);
        if (s->count == 0) break;
        /* Wait for company: up to -b images, at most --max-wait-ms after
         * the oldest one came. */
        const double deadline = s->ring[s->head].queued + (double)s->max_wait_ms / 1000.0;
        struct timespec ts;
        deadline_to_timespec(deadline, &ts);
        while (s->count < batch && !s->worker_stop && now() < deadline)
            if (pthread_cond_timedwait(&s->work, &s->lock, &ts) == ETIMEDOUT) break;
        const int k = (int)(s->count < batch ? s->count : batch);
        for (int i = 0; i < k; i++) {
            items[i] = s->ring[s->head];
            s->head = (s->head + 1) % (size_t)s->queue_cap;
        }
        s->count -= (size_t)k;
        s->reserved -= (size_t)k;
        pthread_mutex_unlock(&s->lock);
        const double start = now();
        run_items(s, s->images, s->tokens_buffer, s->scratch, items, k);
        const double seconds = now() - start;
        pthread_mutex_lock(&s->lock);
        for (int i = 0; i < k; i++) items[i].r->remaining--;
        s->m.batches++;
        s->m.batch_images += (unsigned long)k;
        s->m.batch_sizes[batch_bucket(k)]++;
        s->m.forward_seconds += seconds;
        pthread_cond_broadcast(&s->done);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ------------------------------------------------------------ handlers */

static void request_free(request *r) {
    if (!r) return;
    serve_budget_give(&r->s->bodies, r->capacity);
    free(r->body);
    serve_form_parts_free(r->parts, r->num_parts);
    for (int i = 0; r->errors && i < r->n; i++) free(r->errors[i]);
    free(r->errors);
    free(r->inputs);
    free(r->outputs);
    free(r);
}

/* Drops the body kept so far (a refused one is read on, not kept). */
static void body_drop(request *r, body_refusal why) {
    serve_budget_give(&r->s->bodies, r->capacity);
    free(r->body);
    r->body = NULL;
    r->length = r->capacity = 0;
    r->refused = why;
}

/* Appends to the body, its buffer growing with what has arrived (doubling,
 * up to the announced length) and charged to the bodies budget: memory
 * follows the bytes received, not what a header or a part count claims. */
static void body_append(request *r, const char *data, size_t size) {
    server *s = r->s;
    if (r->length + size > r->capacity) {
        size_t capacity = r->capacity ? 2 * r->capacity : 65536;
        if (capacity < r->length + size) capacity = r->length + size;
        if (r->expected >= r->length + size && capacity > r->expected) capacity = r->expected;
        if (capacity > s->max_body) capacity = s->max_body;
        if (serve_budget_take(&s->bodies, capacity - r->capacity, 0) != BUDGET_TAKEN) {
            body_drop(r, BODY_NO_BUDGET);
            return;
        }
        unsigned char *grown = realloc(r->body, capacity);
        if (!grown) {
            serve_budget_give(&s->bodies, capacity - r->capacity);
            body_drop(r, BODY_NO_BUDGET);
            return;
        }
        r->body = grown;
        r->capacity = capacity;
    }
    memcpy(r->body + r->length, data, size);
    r->length += size;
}

/* The next piece of a body: counted against the size limit and, for a
 * multipart body, against --queue files while it streams in. */
static void body_receive(request *r, const char *data, size_t size) {
    server *s = r->s;
    r->received += size;
    if (r->refused) return;
    if (r->received > s->max_body) {
        body_drop(r, BODY_TOO_LARGE); /* chunked: read on, keep nothing */
        return;
    }
    if (r->multipart &&
        serve_form_counter_feed(&r->counter, (const unsigned char *)data, size) > (size_t)s->queue_cap) {
        body_drop(r, BODY_TOO_MANY_PARTS);
        return;
    }
    body_append(r, data, size);
}

/* Query parameters: top_k (classify) and pool (features); anything else is
 * refused, so that a typo is not silently ignored. */
typedef struct params {
    request *r;
    long top_k;
    char message[256];
} params;

static enum MHD_Result on_argument(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value) {
    params *p = cls;
    (void)kind;
    if (p->message[0]) return MHD_NO;
    if (p->r->endpoint == EP_CLASSIFY && strcmp(key, "top_k") == 0) {
        char *end;
        errno = 0;
        const long k = value ? strtol(value, &end, 10) : 0;
        if (!value || errno || end == value || *end || k < 1 || k > 1000)
            snprintf(p->message, sizeof p->message,
                     "top_k must be a whole number from 1 to 1000, got '%.60s'", value ? value : "");
        else p->top_k = k;
    } else if (p->r->endpoint == EP_FEATURES && strcmp(key, "pool") == 0) {
        if (value && strcmp(value, "model") == 0) p->r->pool = POOL_MODEL;
        else if (value && strcmp(value, "cls") == 0) p->r->pool = POOL_CLS;
        else if (value && strcmp(value, "mean") == 0) p->r->pool = POOL_MEAN;
        else
            snprintf(p->message, sizeof p->message, "pool must be model, cls or mean, got '%.60s'",
                     value ? value : "");
    } else {
        snprintf(p->message, sizeof p->message, "unknown parameter '%.60s' (%s)", key,
                 p->r->endpoint == EP_CLASSIFY ? "/classify takes top_k" : "/features takes pool");
    }
    return p->message[0] ? MHD_NO : MHD_YES;
}

/* The status for an image that could not be read. */
static unsigned decode_status(base_status st) {
    if (st == BASE_E_LIMIT) return MHD_HTTP_CONTENT_TOO_LARGE;
    if (st == BASE_E_NOMEM) return MHD_HTTP_SERVICE_UNAVAILABLE;
    return MHD_HTTP_UNPROCESSABLE_CONTENT;
}

/* The classify answer for one image: [{"label", "score", "index"}, ...],
 * the scores printed as vit classify prints them (%.6f). */
static void add_predictions(text *t, const server *s, const float *probs, int top_k) {
    int top[1000];
    const int n = vit_top_k(probs, s->classes, top_k, top);
    text_add(t, "[");
    for (int i = 0; i < n; i++) {
        const char *label = vit_model_label(s->model, top[i]);
        char fallback[32];
        snprintf(fallback, sizeof fallback, "LABEL_%d", top[i]); /* as transformers names them */
        char *escaped = cli_json_text(label ? label : fallback);
        cJSON *str = escaped ? cJSON_CreateString(escaped) : NULL;
        char *quoted = str ? cJSON_PrintUnformatted(str) : NULL;
        if (!quoted) t->failed = 1;
        else text_add(t, "%s{\"label\":%s,\"score\":%.6f,\"index\":%d}", i ? "," : "", quoted,
                      (double)probs[top[i]], top[i]);
        free(quoted);
        cJSON_Delete(str);
        free(escaped);
    }
    text_add(t, "]");
}

/* A file's name for messages. */
static const char *part_name(const request *r, int i) {
    if (!r->multipart) return "request body";
    return r->parts[i].filename[0] ? r->parts[i].filename : "(unnamed file)";
}

/* The features as a .npy (images x size float32). */
static enum MHD_Result answer_npy(struct MHD_Connection *c, request *r) {
    unsigned char header[DATA_NPY_MAX_HEADER];
    size_t header_length;
    const int64_t shape[2] = {r->n, r->feature_size};
    base_error err;
    const size_t bytes = (size_t)r->n * (size_t)r->feature_size * sizeof(float);
    if (data_npy_header(DATA_NPY_F32, shape, 2, header, &header_length, &err) != BASE_OK)
        return send_error(c, r, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s", err.message);
    char *npy = malloc(header_length + bytes);
    if (!npy) return MHD_NO;
    memcpy(npy, header, header_length);
    memcpy(npy + header_length, r->outputs, bytes);
    return send_buffer(c, r, MHD_HTTP_OK, "application/octet-stream", npy, header_length + bytes);
}

static enum MHD_Result answer_results(struct MHD_Connection *c, request *r, long top_k) {
    server *s = r->s;
    for (int i = 0; i < r->n; i++)
        if (r->errors[i])
            return send_error(c, r, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s%s%s",
                              r->multipart ? part_name(r, i) : "", r->multipart ? ": " : "",
                              r->errors[i]);
    if (r->endpoint == EP_FEATURES &&
        serve_accept(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT)) ==
            SERVE_ANSWER_NPY)
        return answer_npy(c, r);
    text t = {0};
    if (r->multipart) text_add(&t, "[");
    for (int i = 0; i < r->n; i++) {
        if (i) text_add(&t, ",");
        if (r->endpoint == EP_CLASSIFY) {
            add_predictions(&t, s, r->outputs + (size_t)i * s->classes, (int)top_k);
        } else {
            const float *f = r->outputs + (size_t)i * r->feature_size;
            text_add(&t, "[");
            /* %.9g: the float32 exactly, as vit classify --all-classes. */
            for (int j = 0; j < r->feature_size; j++) text_add(&t, "%s%.9g", j ? "," : "", (double)f[j]);
            text_add(&t, "]");
        }
    }
    if (r->multipart) text_add(&t, "]");
    text_add(&t, "\n");
    if (t.failed) {
        free(t.data);
        return MHD_NO;
    }
    return send_buffer(c, r, MHD_HTTP_OK, "application/json", t.data, t.length);
}

/* A refusal's status, with its message written into message. */
static unsigned refusal(unsigned code, char *message, size_t size, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static unsigned refusal(unsigned code, char *message, size_t size, const char *format, ...) {
    va_list ap;
    va_start(ap, format);
    vsnprintf(message, size, format, ap);
    va_end(ap);
    return code;
}

/* The body is in: why it cannot be served (a status, with message), or 0
 * with a multipart body split into its files. An empty part with an empty
 * file name is what a browser sends for a file input left empty: skipped. */
static unsigned check_body(request *r, char *message, size_t size) {
    server *s = r->s;
    if (r->refused == BODY_TOO_LARGE)
        return refusal(MHD_HTTP_CONTENT_TOO_LARGE, message, size,
                       "request body exceeds the limit of %zu MiB (--max-body-mb)", s->max_body >> 20);
    if (r->refused == BODY_TOO_MANY_PARTS)
        return refusal(MHD_HTTP_CONTENT_TOO_LARGE, message, size,
                       "more than %ld files in one request; the queue holds %ld (--queue)",
                       s->queue_cap, s->queue_cap);
    if (r->refused == BODY_NO_BUDGET)
        return refusal(MHD_HTTP_SERVICE_UNAVAILABLE, message, size,
                       "the request bodies held in memory are at their limit (--bodies-mb %zu); "
                       "try again later", s->bodies.capacity >> 20);
    if (!r->multipart)
        return r->length ? 0
                         : refusal(MHD_HTTP_BAD_REQUEST, message, size,
                                   "empty body: send the image bytes (curl --data-binary @cat.jpg) "
                                   "or a multipart form with files");
    if (serve_form_split(r->body, r->length, r->boundary, (size_t)s->queue_cap, &r->parts,
                         &r->num_parts, message, size) != 0)
        return MHD_HTTP_BAD_REQUEST;
    for (size_t i = 0; i < r->num_parts; i++)
        if (!r->parts[i].filename)
            return refusal(MHD_HTTP_BAD_REQUEST, message, size,
                           "form field '%.100s' is not a file: send images as files (curl -F "
                           "image=@cat.jpg)", r->parts[i].field);
    size_t files = 0;
    for (size_t i = 0; i < r->num_parts; i++) {
        serve_form_part *part = &r->parts[i];
        if (part->filename[0] || part->length) {
            r->parts[files++] = *part;
        } else {
            free(part->field);
            free(part->filename);
        }
    }
    r->num_parts = files; /* the slots past it are stale copies, never freed */
    if (files == 0)
        return refusal(MHD_HTTP_BAD_REQUEST, message, size, "no file in the multipart/form-data body");
    return 0;
}

/* Probes image i, waits for room in the decode budget, decodes and
 * preprocesses it into its input row; 0 or a status with message. */
static unsigned decode_image(request *r, int i, char *message, size_t size) {
    server *s = r->s;
    const unsigned char *bytes = r->multipart ? r->body + r->parts[i].offset : r->body;
    const size_t length = r->multipart ? r->parts[i].length : r->length;
    const char *name = part_name(r, i);
    data_image_probe probe;
    base_error err;
    base_status st = data_image_probe_memory(bytes, length, name, s->pre.max_pixels, &probe, &err);
    if (st != BASE_OK) return refusal(decode_status(st), message, size, "%s", err.message);
    const size_t mib = (probe.peak_bytes + (1 << 20) - 1) >> 20;
    switch (serve_budget_take(&s->decode, probe.peak_bytes, s->decode_wait)) {
    case BUDGET_NEVER:
        return refusal(MHD_HTTP_CONTENT_TOO_LARGE, message, size,
                       "%s: a %dx%d %s takes about %zu MiB to decode, over the decode budget of "
                       "%zu MiB (--decode-mb)", name, probe.width, probe.height, probe.format, mib,
                       s->decode.capacity >> 20);
    case BUDGET_BUSY:
        return refusal(MHD_HTTP_SERVICE_UNAVAILABLE, message, size,
                       "%s: decoding it takes about %zu MiB and the decode budget (--decode-mb %zu) "
                       "stayed full for %.0f ms; try again later", name, mib,
                       s->decode.capacity >> 20, s->decode_wait * 1000);
    case BUDGET_TAKEN: break;
    }
    st = data_preprocess_memory(&s->pre, bytes, length, name, r->inputs + (size_t)i * s->image_floats,
                                &err);
    serve_budget_give(&s->decode, probe.peak_bytes);
    return st == BASE_OK ? 0 : refusal(decode_status(st), message, size, "%s", err.message);
}

/* A place in the queue for every image, or 503 now; then the buffers. */
static unsigned admit(request *r, int n, char *message, size_t size) {
    server *s = r->s;
    if (n > s->queue_cap)
        return refusal(MHD_HTTP_CONTENT_TOO_LARGE, message, size,
                       "%d images in one request; the queue holds %ld (--queue)", n, s->queue_cap);
    pthread_mutex_lock(&s->lock);
    const int full = s->reserved + (size_t)n > (size_t)s->queue_cap;
    if (full) s->m.rejected_full++;
    else s->reserved += (size_t)n;
    const size_t waiting = s->reserved;
    pthread_mutex_unlock(&s->lock);
    if (full)
        return refusal(MHD_HTTP_SERVICE_UNAVAILABLE, message, size,
                       "queue full (%zu images waiting, --queue %ld); try again later", waiting,
                       s->queue_cap);
    r->n = n;
    r->wants_features = r->endpoint == EP_FEATURES;
    r->feature_size = r->pool == POOL_MODEL ? s->feature_floats : s->hidden;
    const size_t out = (size_t)(r->wants_features ? r->feature_size : s->classes);
    r->inputs = malloc((size_t)n * s->image_floats * sizeof(float));
    r->outputs = malloc((size_t)n * out * sizeof(float));
    r->errors = calloc((size_t)n, sizeof *r->errors);
    if (!r->inputs || !r->outputs || !r->errors)
        return refusal(MHD_HTTP_SERVICE_UNAVAILABLE, message, size, "out of memory for %d images", n);
    return 0;
}

/* The whole body is in: check, decode, queue, wait for the model, answer. */
static enum MHD_Result run_request(struct MHD_Connection *c, request *r) {
    server *s = r->s;
    char message[1024];
    if (r->late) return send_error(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is shutting down");
    unsigned status = check_body(r, message, sizeof message);
    if (status) return send_error(c, r, status, "%s", message);
    params p = {.r = r, .top_k = s->top_k};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, on_argument, &p);
    if (p.message[0]) return send_error(c, r, MHD_HTTP_BAD_REQUEST, "%s", p.message);
    if (r->endpoint == EP_FEATURES && r->pool == POOL_CLS &&
        vit_model_config(s->model)->no_class_token)
        return send_error(c, r, MHD_HTTP_BAD_REQUEST, "the model has no class token (use pool=mean)");
    const int n = r->multipart ? (int)r->num_parts : 1;
    if ((status = admit(r, n, message, sizeof message)) != 0) {
        if (r->n) { /* admitted, then short of memory */
            pthread_mutex_lock(&s->lock);
            s->reserved -= (size_t)n;
            pthread_mutex_unlock(&s->lock);
        }
        return send_error(c, r, status, "%s", message);
    }
    /* Decoded here, on this connection's thread: requests that arrive
     * together are decoded at the same time, within the decode budget. */
    for (int i = 0; !status && i < n; i++) status = decode_image(r, i, message, sizeof message);
    /* The encoded bytes are no longer needed. */
    body_drop(r, BODY_KEPT);
    pthread_mutex_lock(&s->lock);
    if (status) {
        s->reserved -= (size_t)n;
    } else {
        r->remaining = n;
        const double queued = now();
        for (int i = 0; i < n; i++) {
            s->ring[(s->head + s->count) % (size_t)s->queue_cap] = (item){r, i, queued};
            s->count++;
        }
        pthread_cond_signal(&s->work);
        while (r->remaining > 0) pthread_cond_wait(&s->done, &s->lock);
        s->m.images += (unsigned long)n;
    }
    pthread_mutex_unlock(&s->lock);
    if (status) return send_error(c, r, status, "%s", message);
    /* The images are no longer needed: free them before formatting. */
    free(r->inputs);
    r->inputs = NULL;
    return answer_results(c, r, p.top_k);
}

static enum MHD_Result answer_metrics(struct MHD_Connection *c, request *r);

static enum MHD_Result answer_get(struct MHD_Connection *c, request *r) {
    server *s = r->s;
    if (r->endpoint == EP_HEALTH) {
        cJSON *json = cJSON_CreateObject();
        if (json) cJSON_AddStringToObject(json, "status", "ok");
        return send_json(c, r, MHD_HTTP_OK, json);
    }
    if (r->endpoint == EP_INFO) {
        cJSON *json = cli_info_json(s->model, s->is_default_model);
        if (json) {
            cJSON_AddNumberToObject(json, "max_batch", (double)s->batch);
            cJSON_AddNumberToObject(json, "max_wait_ms", (double)s->max_wait_ms);
            cJSON_AddNumberToObject(json, "queue", (double)s->queue_cap);
        }
        return send_json(c, r, MHD_HTTP_OK, json);
    }
    return answer_metrics(c, r);
}

static int endpoint_of(const char *url) {
    for (int e = 0; e < EP_OTHER; e++)
        if (url[0] == '/' && strcmp(url + 1, EP_NAMES[e]) == 0) return e;
    return EP_OTHER;
}

/* The first call, with the request's head: route, and refuse what can be
 * refused now. */
static enum MHD_Result begin_request(struct MHD_Connection *c, server *s, request *r,
                                     const char *url, const char *method) {
    const int post = r->endpoint == EP_CLASSIFY || r->endpoint == EP_FEATURES;
    const int is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
    const int is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                       strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    serve_guard_request(&s->guard, c, is_post);
    r->answered = 1;
    if (r->endpoint == EP_OTHER)
        return send_error(c, r, MHD_HTTP_NOT_FOUND,
                          "no such endpoint: %.200s (POST /classify, POST /features, GET "
                          "/health, GET /info, GET /metrics)", url);
    if (post ? !is_post : !is_get)
        return send_error(c, r, MHD_HTTP_METHOD_NOT_ALLOWED, "%s %.200s: use %s", method, url,
                          post ? "POST" : "GET");
    if (!post) return answer_get(c, r);
    if (r->endpoint == EP_CLASSIFY && s->classes == 0)
        return send_error(c, r, MHD_HTTP_BAD_REQUEST,
                          "the model has no classification head: use POST /features");
    if (r->endpoint == EP_FEATURES &&
        serve_accept(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT)) ==
            SERVE_ANSWER_NONE)
        return send_error(c, r, MHD_HTTP_NOT_ACCEPTABLE,
                          "Accept allows neither application/json nor application/octet-stream");
    const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const unsigned long long announced = length ? strtoull(length, NULL, 10) : 0;
    if (announced > s->max_body)
        return send_error(c, r, MHD_HTTP_CONTENT_TOO_LARGE,
                          "request body of %s bytes exceeds the limit of %zu MiB (--max-body-mb)",
                          length, s->max_body >> 20);
    r->expected = (size_t)announced;
    const int form = serve_form_boundary(
        MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE), r->boundary);
    if (form < 0)
        return send_error(c, r, MHD_HTTP_BAD_REQUEST, "multipart/form-data without a usable boundary");
    if ((r->multipart = form > 0)) serve_form_counter_init(&r->counter, r->boundary);
    r->answered = 0;
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    server *s = cls;
    (void)version;
    request *r = *con_cls;
    if (!r) {
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        r->s = s;
        r->start = now();
        r->endpoint = endpoint_of(url);
        *con_cls = r;
        pthread_mutex_lock(&s->lock);
        s->active++;
        r->late = s->stopping; /* a head after the stop signal (a kept-alive connection) */
        pthread_mutex_unlock(&s->lock);
        return begin_request(c, s, r, url, method);
    }
    if (*upload_data_size > 0) {
        const size_t size = *upload_data_size;
        *upload_data_size = 0;
        serve_guard_body(&s->guard, c, size);
        if (!r->answered) body_receive(r, upload_data, size); /* else refused at the head: dropped */
        return MHD_YES;
    }
    if (r->answered) return MHD_YES;
    r->answered = 1;
    serve_guard_busy(&s->guard, c);
    return run_request(c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    server *s = cls;
    request *r = *con_cls;
    (void)toe;
    serve_guard_done(&s->guard, c);
    if (!r) return;
    const double seconds = now() - r->start;
    pthread_mutex_lock(&s->lock);
    if (r->code) {
        s->m.requests[r->endpoint][r->code < 600 ? r->code : 599]++;
        size_t b = 0;
        while (b < NUM_LATENCY_BUCKETS && seconds > LATENCY_BUCKETS[b]) b++;
        s->m.latency[b]++;
        s->m.latency_sum += seconds;
        s->m.latency_count++;
    }
    s->active--;
    pthread_cond_broadcast(&s->done);
    pthread_mutex_unlock(&s->lock);
    request_free(r);
    *con_cls = NULL;
}

/* The counters of the limits that keep the server bounded. */
static void metrics_limits(text *t, server *s, const metrics *m) {
    serve_budget decode, bodies;
    serve_budget_read(&s->decode, &decode);
    serve_budget_read(&s->bodies, &bodies);
    serve_guard_counts g;
    serve_guard_read(&s->guard, &g);
    text_add(t, "# HELP vit_decode_budget_bytes Memory images being decoded may take at once "
                "(--decode-mb).\n# TYPE vit_decode_budget_bytes gauge\nvit_decode_budget_bytes %zu\n"
                "# HELP vit_decode_bytes_in_use Of it, taken by decodes under way (each at its "
                "probed peak).\n# TYPE vit_decode_bytes_in_use gauge\nvit_decode_bytes_in_use %zu\n"
                "# HELP vit_decode_bytes_peak The most taken at once since the start.\n"
                "# TYPE vit_decode_bytes_peak gauge\nvit_decode_bytes_peak %zu\n",
             decode.capacity, decode.used, decode.peak);
    text_add(t, "# HELP vit_decode_waits_total Images that waited for room in the decode budget.\n"
                "# TYPE vit_decode_waits_total counter\nvit_decode_waits_total %lu\n"
                "# HELP vit_decode_rejections_total Images refused by the decode budget: too_large "
                "(413), busy (503 after --decode-wait-ms).\n# TYPE vit_decode_rejections_total counter\n"
                "vit_decode_rejections_total{reason=\"too_large\"} %lu\n"
                "vit_decode_rejections_total{reason=\"busy\"} %lu\n",
             decode.waited, decode.too_large, decode.timed_out);
    text_add(t, "# HELP vit_body_bytes_in_use Memory holding request bodies (--bodies-mb: "
                "vit_body_budget_bytes).\n# TYPE vit_body_bytes_in_use gauge\nvit_body_bytes_in_use %zu\n"
                "# TYPE vit_body_budget_bytes gauge\nvit_body_budget_bytes %zu\n"
                "# HELP vit_body_rejections_total Bodies refused for want of room (503).\n"
                "# TYPE vit_body_rejections_total counter\nvit_body_rejections_total %lu\n",
             bodies.used, bodies.capacity, bodies.timed_out + bodies.too_large);
    text_add(t, "# HELP vit_connections_open Connections open (--max-connections).\n"
                "# TYPE vit_connections_open gauge\nvit_connections_open %d\n"
                "# HELP vit_connections_closed_total Connections the server closed: head_timeout, "
                "body_timeout (too slow), evicted (a slow one's slot given to a new one), refused "
                "(no slot free).\n# TYPE vit_connections_closed_total counter\n"
                "vit_connections_closed_total{reason=\"head_timeout\"} %lu\n"
                "vit_connections_closed_total{reason=\"body_timeout\"} %lu\n"
                "vit_connections_closed_total{reason=\"evicted\"} %lu\n"
                "vit_connections_closed_total{reason=\"refused\"} %lu\n",
             g.open, g.head_timeouts, g.body_timeouts, g.evicted, g.refused + m->refused_connections);
}

static enum MHD_Result answer_metrics(struct MHD_Connection *c, request *r) {
    server *s = r->s;
    pthread_mutex_lock(&s->lock);
    const metrics m = s->m;
    const size_t reserved = s->reserved;
    const int active = s->active;
    pthread_mutex_unlock(&s->lock);
    text t = {0};
    text_add(&t, "# HELP vit_requests_total HTTP requests answered, by endpoint and status code "
                 "(endpoint none: refused by the HTTP layer before routing).\n"
                 "# TYPE vit_requests_total counter\n");
    unsigned long errors[EP_COUNT] = {0};
    for (int e = 0; e < EP_COUNT; e++)
        for (int code = 100; code < 600; code++) {
            if (!m.requests[e][code]) continue;
            text_add(&t, "vit_requests_total{endpoint=\"%s\",code=\"%d\"} %lu\n", EP_NAMES[e], code,
                     m.requests[e][code]);
            if (code >= 400) errors[e] += m.requests[e][code];
        }
    text_add(&t, "# HELP vit_errors_total Requests answered with a 4xx or 5xx status.\n"
                 "# TYPE vit_errors_total counter\n");
    for (int e = 0; e < EP_COUNT; e++)
        text_add(&t, "vit_errors_total{endpoint=\"%s\"} %lu\n", EP_NAMES[e], errors[e]);
    text_add(&t, "# HELP vit_queue_rejections_total Requests refused with 503 for a full queue.\n"
                 "# TYPE vit_queue_rejections_total counter\nvit_queue_rejections_total %lu\n",
             m.rejected_full);
    text_add(&t, "# HELP vit_images_total Images run through the model.\n"
                 "# TYPE vit_images_total counter\nvit_images_total %lu\n", m.images);
    text_add(&t, "# HELP vit_batch_size Images per forward pass.\n# TYPE vit_batch_size histogram\n");
    unsigned long cumulative = 0;
    /* Buckets up to the first power of two that holds -b. */
    for (int b = 0; b <= batch_bucket((int)s->batch); b++) {
        cumulative += m.batch_sizes[b];
        text_add(&t, "vit_batch_size_bucket{le=\"%d\"} %lu\n", 1 << b, cumulative);
    }
    text_add(&t, "vit_batch_size_bucket{le=\"+Inf\"} %lu\nvit_batch_size_sum %lu\n"
                 "vit_batch_size_count %lu\n", cumulative, m.batch_images, m.batches);
    text_add(&t, "# HELP vit_request_duration_seconds Time from a request's headers to its "
                 "response.\n# TYPE vit_request_duration_seconds histogram\n");
    cumulative = 0;
    for (size_t b = 0; b < NUM_LATENCY_BUCKETS; b++) {
        cumulative += m.latency[b];
        text_add(&t, "vit_request_duration_seconds_bucket{le=\"%g\"} %lu\n", LATENCY_BUCKETS[b],
                 cumulative);
    }
    cumulative += m.latency[NUM_LATENCY_BUCKETS];
    text_add(&t, "vit_request_duration_seconds_bucket{le=\"+Inf\"} %lu\n"
                 "vit_request_duration_seconds_sum %.6f\nvit_request_duration_seconds_count %lu\n",
             cumulative, m.latency_sum, m.latency_count);
    text_add(&t, "# HELP vit_forward_seconds_total Time spent in forward passes.\n"
                 "# TYPE vit_forward_seconds_total counter\nvit_forward_seconds_total %.6f\n",
             m.forward_seconds);
    text_add(&t, "# HELP vit_queue_length Images admitted and not yet taken by the model.\n"
                 "# TYPE vit_queue_length gauge\nvit_queue_length %zu\n", reserved);
    text_add(&t, "# HELP vit_queue_capacity Images the queue holds (--queue).\n"
                 "# TYPE vit_queue_capacity gauge\nvit_queue_capacity %ld\n", s->queue_cap);
    text_add(&t, "# HELP vit_requests_in_flight Requests begun and not yet completed.\n"
                 "# TYPE vit_requests_in_flight gauge\nvit_requests_in_flight %d\n", active);
    metrics_limits(&t, s, &m);
    if (t.failed) {
        free(t.data);
        return MHD_NO;
    }
    return send_buffer(c, r, MHD_HTTP_OK, "text/plain; version=0.0.4", t.data, t.length);
}

/* Under s->lock: whether a line may be printed now; a line saying how
 * many were held back goes first, once a window that held some is over. */
static int log_allowed(server *s) {
    const double t = now();
    if (t - s->log.window_start >= LOG_WINDOW) {
        if (s->log.suppressed)
            fprintf(stderr, "vit serve: %lu more libmicrohttpd messages in the last %.0f s not "
                            "shown\n", s->log.suppressed, t - s->log.window_start);
        s->log.window_start = t;
        s->log.lines = 0;
        s->log.suppressed = 0;
    }
    if (s->log.lines < LOG_BURST) {
        s->log.lines++;
        return 1;
    }
    s->log.suppressed++;
    return 0;
}

/* libmicrohttpd's own messages: counted (the errors it answers itself, the
 * connections its limits refuse) and printed at a bounded rate. Its
 * message formats are matched by their opening words, stable in 0.9.x. */
static void on_log(void *cls, const char *format, va_list ap) {
    server *s = cls;
    static const char ANSWERED[] = "Error processing request (HTTP response code is ";
    static const char LIMIT[] = "Server reached connection limit";
    unsigned code = 0;
    if (strncmp(format, ANSWERED, sizeof ANSWERED - 1) == 0) {
        va_list copy;
        va_copy(copy, ap);
        code = va_arg(copy, unsigned);
        va_end(copy);
    }
    char line[1024];
    vsnprintf(line, sizeof line, format, ap);
    pthread_mutex_lock(&s->lock);
    if (code >= 100 && code < 600) s->m.requests[EP_NONE][code]++;
    if (strncmp(format, LIMIT, sizeof LIMIT - 1) == 0) s->m.refused_connections++;
    const int print = log_allowed(s);
    pthread_mutex_unlock(&s->lock);
    if (print) fprintf(stderr, "vit serve: %.*s\n", (int)strcspn(line, "\n"), line);
}

/* ------------------------------------------------------------ setup */

static int read_limits(server *s, const cli_args *args) {
    const char *const *v = args->values;
    long max_body_mb = 20, bodies_mb = 128, decode_mb = 384, decode_wait_ms = 10000;
    if ((v[OPT_MAX_BODY] && cli_int("serve", "--max-body-mb", v[OPT_MAX_BODY], 1, 1024, &max_body_mb)) ||
        (v[OPT_BODIES] && cli_int("serve", "--bodies-mb", v[OPT_BODIES], 1, 1 << 20, &bodies_mb)) ||
        (v[OPT_DECODE] && cli_int("serve", "--decode-mb", v[OPT_DECODE], 1, 1 << 20, &decode_mb)) ||
        (v[OPT_DECODE_WAIT] &&
         cli_int("serve", "--decode-wait-ms", v[OPT_DECODE_WAIT], 0, 600000, &decode_wait_ms)) ||
        (v[OPT_TIMEOUT] && cli_int("serve", "--timeout", v[OPT_TIMEOUT], 1, 86400, &s->timeout)) ||
        (v[OPT_HEAD_TIMEOUT] &&
         cli_int("serve", "--head-timeout", v[OPT_HEAD_TIMEOUT], 1, 86400, &s->head_timeout)) ||
        (v[OPT_BODY_TIMEOUT] &&
         cli_int("serve", "--body-timeout", v[OPT_BODY_TIMEOUT], 1, 86400, &s->body_timeout)) ||
        (v[OPT_MIN_RATE] && cli_int("serve", "--min-rate", v[OPT_MIN_RATE], 1, 1 << 20, &s->min_rate_kib)) ||
        (v[OPT_CONNECTIONS] &&
         cli_int("serve", "--max-connections", v[OPT_CONNECTIONS], 1, 10000, &s->connections)) ||
        (v[OPT_PER_IP] &&
         cli_int("serve", "--max-connections-per-ip", v[OPT_PER_IP], 0, 10000, &s->per_ip)))
        return -1;
    if (bodies_mb < max_body_mb) {
        fprintf(stderr, "vit serve: --bodies-mb %ld is less than --max-body-mb %ld: a body of the "
                        "largest size could never be held\n", bodies_mb, max_body_mb);
        return -1;
    }
    s->max_body = (size_t)max_body_mb << 20;
    serve_budget_init(&s->bodies, (size_t)bodies_mb << 20);
    serve_budget_init(&s->decode, (size_t)decode_mb << 20);
    s->decode_wait = (double)decode_wait_ms / 1000.0;
    return 0;
}

static int read_options(server *s, const cli_args *args, base_limits *limits, int *allow_unused,
                        long *port) {
    const char *const *v = args->values;
    *port = 8080;
    if (cli_limits("serve", &v[OPT_LIMITS], CLI_NUM_LIMIT_OPTIONS, limits, allow_unused) != 0 ||
        (v[OPT_PORT] && cli_int("serve", "--port", v[OPT_PORT], 0, 65535, port)) ||
        (v[OPT_BATCH] && cli_int("serve", "-b", v[OPT_BATCH], 1, 1024, &s->batch)) ||
        (v[OPT_MAX_WAIT] && cli_int("serve", "--max-wait-ms", v[OPT_MAX_WAIT], 0, 60000, &s->max_wait_ms)) ||
        (v[OPT_THREADS] && cli_int("serve", "-t", v[OPT_THREADS], 1, 1024, &s->threads)) ||
        (v[OPT_TOPK] && cli_int("serve", "-k", v[OPT_TOPK], 1, 1000, &s->top_k)) ||
        (v[OPT_QUEUE] && cli_int("serve", "--queue", v[OPT_QUEUE], 1, 1 << 20, &s->queue_cap)) ||
        read_limits(s, args) != 0)
        return -1;
    if (args->num_positional > 0) {
        fprintf(stderr, "vit serve: unexpected argument '%s' (images come in requests)\n",
                args->positional[0]);
        return -1;
    }
    return 0;
}

/* The listening socket, made here rather than by libmicrohttpd so that a
 * port in use is an error that says so: SO_REUSEADDR lets a restarted
 * server bind while old connections linger in TIME_WAIT, but (unlike the
 * SO_REUSEPORT libmicrohttpd's address reuse option adds) not while
 * another server listens there. */
static int open_listener(const char *host, long port, MHD_socket *fd, int *v6) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *found = NULL;
    char service[16];
    snprintf(service, sizeof service, "%ld", port);
    const int rc = getaddrinfo(host, service, &hints, &found);
    if (rc != 0 || !found) {
        fprintf(stderr, "vit serve: --host %s: %s\n", host, rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    *v6 = found->ai_family == AF_INET6;
    *fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    int e = *fd < 0 ? errno : 0;
    if (!e && (setsockopt(*fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
               (*v6 && setsockopt(*fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0) ||
               bind(*fd, found->ai_addr, found->ai_addrlen) != 0 || listen(*fd, SOMAXCONN) != 0))
        e = errno;
    freeaddrinfo(found);
    if (!e) return 0;
    if (*fd >= 0) close(*fd);
    *fd = MHD_INVALID_SOCKET;
    if (e == EADDRINUSE)
        fprintf(stderr, "vit serve: port %ld on %s is in use (another server is listening there; "
                        "choose another --port, or --port 0 for any free one)\n", port, host);
    else
        fprintf(stderr, "vit serve: cannot listen on %s port %ld: %s\n", host, port, strerror(e));
    return -1;
}

/* A model whose output is not finite on plain black, grey and white
 * images (a broken checkpoint, or a preprocessor whose image_std is
 * near zero) would answer every request 500: refuse it at the start. */
static int check_model_output(server *s) {
    static const uint8_t LEVELS[3] = {0, 128, 255};
    uint8_t pixels[32 * 32 * 3];
    const data_image img = {32, 32, pixels};
    data_preprocess pre = s->pre;
    pre.max_pixels = 0; /* --max-pixels is for clients' images */
    base_error err;
    for (int i = 0; i < 3; i++) {
        memset(pixels, LEVELS[i], sizeof pixels);
        if (data_preprocess_apply(&pre, &img, s->images, &err) != BASE_OK ||
            vit_context_capture_tokens(vit_pipeline_context(s->pipeline),
                                       vit_model_config(s->model)->num_layers - 1, NULL,
                                       &err) != BASE_OK ||
            vit_pipeline_run_images(s->pipeline, s->images, 1, s->finite, &err) != BASE_OK) {
            fprintf(stderr, "vit serve: the model cannot run: %s\n", err.message);
            return -1;
        }
        if (!s->finite[0]) {
            fprintf(stderr, "vit serve: the model's output is not finite (NaN/Inf) on a plain "
                            "%s image: its weights or its preprocessing (image_mean, image_std) "
                            "are broken; not serving it\n",
                    i == 0 ? "black" : i == 1 ? "grey" : "white");
            return -1;
        }
    }
    return 0;
}

/* The context, the model thread's buffers and the thread itself. */
static int start_model(server *s) {
    base_error err;
    /* No loader: the request queue is the pipeline's batch source, its
     * bodies decoded by the HTTP threads. */
    const vit_pipeline_options options = {.batch = (int)s->batch,
                                          .threads = cli_thread_count((int)s->threads),
                                          .softmax = 1};
    if (vit_pipeline_create(s->model, &options, NULL, &s->pipeline, &err) != BASE_OK) {
        fprintf(stderr, "vit serve: %s\n", err.message);
        return -1;
    }
    const size_t batch = (size_t)s->batch;
    s->tokens = vit_context_num_tokens(vit_pipeline_context(s->pipeline));
    s->images = malloc(batch * s->image_floats * sizeof(float));
    s->finite = malloc(batch * sizeof *s->finite);
    s->tokens_buffer = malloc(batch * (size_t)s->tokens * (size_t)s->hidden * sizeof(float));
    s->scratch = malloc((size_t)s->hidden * sizeof(float));
    s->items = malloc(batch * sizeof *s->items);
    s->ring = calloc((size_t)s->queue_cap, sizeof *s->ring);
    if (!s->images || !s->finite || !s->tokens_buffer || !s->scratch || !s->items || !s->ring) {
        fprintf(stderr, "vit serve: out of memory\n");
        return -1;
    }
    if (check_model_output(s) != 0) return -1;
    if (pthread_create(&s->worker, NULL, model_thread, s) != 0) {
        fprintf(stderr, "vit serve: cannot start the model thread\n");
        return -1;
    }
    s->worker_started = 1;
    return 0;
}

static int serve_start(server *s, const char *host, long port) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work, &attr);
    pthread_cond_init(&s->done, &attr);
    pthread_condattr_destroy(&attr);
    if (start_model(s) != 0) return -1;
    MHD_socket listener;
    int v6;
    if (open_listener(host, port, &listener, &v6) != 0) return -1;
    if (serve_guard_start(&s->guard, (int)s->connections, (double)s->head_timeout,
                          (double)s->timeout, (double)s->body_timeout,
                          (double)s->min_rate_kib * 1024.0) != 0) {
        fprintf(stderr, "vit serve: cannot start the connection guard: %s\n", strerror(errno));
        close(listener);
        return -1;
    }
    s->guard_started = 1;
    /* libmicrohttpd's own limit sits above --max-connections, which the
     * guard enforces: closed connections hold a slot there until its
     * thread has cleaned them up, and a newcomer must get in to take the
     * slot of a slow one. */
    const unsigned hard_limit = (unsigned)(s->connections + 8 + s->connections / 8);
    const unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                           MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_log, s,
                                 MHD_OPTION_LISTEN_SOCKET, listener,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->timeout,
                                 MHD_OPTION_CONNECTION_LIMIT, hard_limit,
                                 MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)s->per_ip,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                 MHD_OPTION_NOTIFY_CONNECTION, serve_guard_on_connection, &s->guard,
                                 MHD_OPTION_END);
    if (!s->daemon) {
        fprintf(stderr, "vit serve: cannot start the HTTP server on %s port %ld\n", host, port);
        close(listener);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    const unsigned bound = info ? info->port : (unsigned)port;
    fprintf(stderr, "vit serve: listening on http://%s%s%s:%u\n", v6 ? "[" : "", host, v6 ? "]" : "",
            bound);
    return 0;
}

/* After a stop signal: no new connections; the requests whose heads came
 * before it are answered as usual (bodies still arriving included), the
 * wait bounded by --timeout; requests after it on kept-alive connections
 * get 503. */
static void serve_drain(server *s, int signo) {
    pthread_mutex_lock(&s->lock);
    s->stopping = 1;
    const int active = s->active;
    pthread_mutex_unlock(&s->lock);
    fprintf(stderr, "vit serve: %s: stopping; %d request%s in flight\n",
            signo == SIGINT ? "SIGINT" : "SIGTERM", active, active == 1 ? "" : "s");
    const MHD_socket listener = MHD_quiesce_daemon(s->daemon);
    if (listener != MHD_INVALID_SOCKET) close(listener);
    struct timespec ts;
    deadline_to_timespec(now() + (double)s->timeout, &ts);
    pthread_mutex_lock(&s->lock);
    while (s->active > 0)
        if (pthread_cond_timedwait(&s->done, &s->lock, &ts) == ETIMEDOUT) break;
    pthread_mutex_unlock(&s->lock);
}

static void serve_stop(server *s) {
    if (s->daemon) MHD_stop_daemon(s->daemon); /* closes idle keep-alive connections */
    if (s->guard_started) serve_guard_stop(&s->guard);
    if (s->worker_started) {
        pthread_mutex_lock(&s->lock);
        s->worker_stop = 1;
        pthread_cond_signal(&s->work);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->worker, NULL);
    }
    if (s->log.suppressed)
        fprintf(stderr, "vit serve: %lu more libmicrohttpd messages not shown\n", s->log.suppressed);
    vit_pipeline_free(s->pipeline);
    free(s->images);
    free(s->finite);
    free(s->tokens_buffer);
    free(s->scratch);
    free(s->items);
    free(s->ring);
}

int cli_serve(int argc, char **argv) {
    cli_args args;
    const int parsed = cli_parse("serve", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0) return cli_parse_exit(parsed);
    /* SIGINT and SIGTERM go to the main thread alone, which takes them with
     * sigwait: they are blocked before any thread (OpenMP's included) is
     * started, and every thread inherits that. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    /* Each connection thread decodes its images: with glibc's default of up
     * to 8 malloc arenas per core, every thread's freed buffers stay in its
     * own arena, and the resident size climbed by ~40% in the first seconds
     * of a soak (bench/serve_load.sh --soak: 138 -> 190 MB, flat after; with
     * 2 arenas it stayed at 134-140 MB). A user's MALLOC_ARENA_MAX wins. */
    if (!getenv("MALLOC_ARENA_MAX")) mallopt(M_ARENA_MAX, 2);
    server s = {.batch = 16, .max_wait_ms = 5, .top_k = 5, .queue_cap = 256, .timeout = 30,
                .connections = 64, .head_timeout = 10, .body_timeout = 30, .min_rate_kib = 16};
    base_limits limits;
    int allow_unused;
    long port;
    const int ok = read_options(&s, &args, &limits, &allow_unused, &port) == 0;
    const char *host = args.values[OPT_HOST] ? args.values[OPT_HOST] : "127.0.0.1";
    s.is_default_model = args.values[OPT_MODEL] == NULL;
    if (ok)
        s.model = cli_load_model_limited("serve", args.values[OPT_MODEL], args.values[OPT_LABELS],
                                         NULL, &limits, 0, allow_unused);
    if (!s.model) {
        if (ok) {
            serve_budget_destroy(&s.bodies);
            serve_budget_destroy(&s.decode);
        }
        free(args.positional);
        return CLI_EXIT_FATAL;
    }
    const vit_config *c = vit_model_config(s.model);
    s.pre = *vit_model_preprocess(s.model);
    s.classes = c->num_classes;
    s.out_floats = vit_model_output_size(s.model);
    s.feature_floats = vit_config_pooled_size(c);
    s.hidden = c->hidden_size;
    s.image_floats = (size_t)c->num_channels * (size_t)data_preprocess_out_height(&s.pre) *
                     (size_t)data_preprocess_out_width(&s.pre);
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-response is its own business */
    int exit_code = CLI_EXIT_FATAL;
    if (serve_start(&s, host, port) == 0) {
        int signo = 0;
        while (sigwait(&stop, &signo) != 0) {
        }
        /* A second signal stops at once (the default action). */
        pthread_sigmask(SIG_UNBLOCK, &stop, NULL);
        serve_drain(&s, signo);
        exit_code = CLI_EXIT_OK;
    }
    serve_stop(&s);
    pthread_mutex_destroy(&s.lock);
    pthread_cond_destroy(&s.work);
    pthread_cond_destroy(&s.done);
    serve_budget_destroy(&s.bodies);
    serve_budget_destroy(&s.decode);
    vit_model_free(s.model);
    free(args.positional);
    if (exit_code == CLI_EXIT_OK) fprintf(stderr, "vit serve: stopped\n");
    return exit_code;
}

/* What vit opens (module.c): this file is built into vit-serve.so, with
 * serve_guard.c and serve_http.c, only when libmicrohttpd is there. */
__attribute__((visibility("default"))) const cli_serve_module vitc_serve_module = {
    {VITC_MODULE_ABI}, cli_serve};
