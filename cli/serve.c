/* vit serve: an HTTP inference server with dynamic batching.
 *
 * GNU libmicrohttpd does all of HTTP (parsing, keep-alive, chunked bodies,
 * 100-continue, multipart through its post processor, timeouts and the
 * connection limit). Threads:
 *  - libmicrohttpd's: one per connection. A request's handler reads the
 *    body, decodes and preprocesses its images itself (so requests that
 *    arrive together are decoded in parallel), puts them in the queue and
 *    sleeps until the model has answered them, then formats the response.
 *  - one model thread: takes what is queued, waiting up to --max-wait-ms
 *    after the first image for -b images in all, runs them through one
 *    batched forward pass (OpenMP inside) and wakes the handlers.
 *  - the main thread: waits for SIGINT/SIGTERM (blocked everywhere else,
 *    taken with sigwait), then stops accepting, lets the requests in
 *    flight finish and exits 0.
 * The queue is bounded (--queue images, counted from admission to the
 * model taking them); a request that does not fit gets 503 at once.
 * Everything shared lives in one server struct under one mutex. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"

#ifndef VITC_HAVE_MHD

int cli_serve(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "vit serve: this vit was built without GNU libmicrohttpd (install "
                    "libmicrohttpd-dev, as scripts/setup does, and rebuild)\n");
    return CLI_EXIT_FATAL;
}

#else

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

enum { OPT_MODEL, OPT_REVISION, OPT_LABELS, OPT_HOST, OPT_PORT, OPT_BATCH, OPT_MAX_WAIT,
       OPT_THREADS, OPT_TOPK, OPT_QUEUE, OPT_MAX_BODY, OPT_TIMEOUT, OPT_CONNECTIONS,
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
    [OPT_TIMEOUT] = {"timeout", 0, 1, "S", "close a connection idle for S seconds (default 30)"},
    [OPT_CONNECTIONS] = {"max-connections", 0, 1, "N", "connections open at once at most "
                                                      "(default 64)"},
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
    "413 body or image too large, 422 not a readable image, 503 queue full or\n"
    "shutting down. SIGINT/SIGTERM: stop accepting, answer the requests in\n"
    "flight, exit 0 (a second signal stops at once).";

/* ------------------------------------------------------------ metrics */

enum { EP_CLASSIFY, EP_FEATURES, EP_HEALTH, EP_INFO, EP_METRICS, EP_OTHER, EP_COUNT };
static const char *const EP_NAMES[EP_COUNT] = {"classify", "features", "health",
                                               "info",     "metrics",  "other"};

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
} metrics;

/* ------------------------------------------------------------ requests */

typedef struct part {
    char *name; /* its file name, for messages */
    unsigned char *bytes;
    size_t length, capacity;
} part;

typedef enum pool_kind { POOL_MODEL, POOL_CLS, POOL_MEAN } pool_kind;

struct server;

/* One HTTP request, from its headers to the end of its response. */
typedef struct request {
    struct server *s;
    int endpoint;
    double start;
    unsigned code;   /* status sent (0: none yet) */
    int answered;    /* a response was queued at the first call */
    /* The body: raw bytes, or the files of a multipart body. */
    struct MHD_PostProcessor *pp;
    part body;
    part *parts;
    size_t num_parts, parts_capacity;
    size_t received;
    int too_large, form_error;
    char form_message[256];
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
    long batch, max_wait_ms, threads, top_k, queue_cap, timeout, connections;
    size_t max_body;
    struct MHD_Daemon *daemon;
    pthread_t worker;
    int worker_started;
    pthread_mutex_t lock;
    pthread_cond_t work; /* the model thread waits for images (or the end) */
    pthread_cond_t done; /* handlers wait for their images; shutdown for requests */
    /* The model thread's: the context and a batch's buffers. */
    vit_context *ctx;
    float *images, *logits, *tokens_buffer, *scratch;
    item *items;
    item *ring;          /* queue_cap items */
    size_t head, count;  /* decoded images waiting for the model */
    size_t reserved;     /* images admitted and not yet taken by the model */
    int active;          /* requests begun and not completed */
    int stopping;        /* refuse new work */
    int worker_stop;     /* the model thread ends when the queue is empty */
    metrics m;
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
static void run_items(server *s, vit_context *ctx, float *images, float *logits, float *tokens,
                      float *scratch, const item *items, int k) {
    int features = 0;
    for (int i = 0; i < k; i++) {
        memcpy(images + (size_t)i * s->image_floats,
               items[i].r->inputs + (size_t)items[i].index * s->image_floats,
               s->image_floats * sizeof *images);
        features |= items[i].r->wants_features;
    }
    vit_error err;
    vit_status st = vit_context_capture_tokens(ctx, vit_model_config(s->model)->num_layers - 1,
                                               features ? tokens : NULL, &err);
    if (st == VIT_OK)
        st = vit_forward_checked(ctx, images, k, 3, data_preprocess_out_height(&s->pre),
                                 data_preprocess_out_width(&s->pre), logits, &err);
    for (int i = 0; i < k; i++) {
        request *r = items[i].r;
        const int x = items[i].index;
        if (st != VIT_OK) {
            r->errors[x] = strdup(err.message);
            continue;
        }
        if (r->wants_features) {
            static const vit_pool POOLS[] = {[POOL_MODEL] = VIT_POOL_MODEL, [POOL_CLS] = VIT_POOL_CLS,
                                             [POOL_MEAN] = VIT_POOL_MEAN};
            vit_error perr;
            float *out = r->outputs + (size_t)x * r->feature_size;
            if (vit_pool_tokens(s->model, tokens + (size_t)i * s->tokens * s->hidden, s->tokens,
                                POOLS[r->pool], 0, out, scratch, &perr) != VIT_OK)
                r->errors[x] = strdup(perr.message);
            else
                for (int f = 0; f < r->feature_size && !r->errors[x]; f++)
                    if (!isfinite(out[f])) r->errors[x] = strdup("model output is not finite (NaN/Inf)");
            continue;
        }
        /* As cli_run_batch_softmax: non-finite outputs fail, else softmax. */
        float *out = r->outputs + (size_t)x * s->classes;
        memcpy(out, logits + (size_t)i * s->out_floats, (size_t)s->classes * sizeof *out);
        int finite = 1;
        for (int c = 0; c < s->classes; c++) finite &= isfinite(out[c]) != 0;
        if (!finite) r->errors[x] = strdup("model output is not finite (NaN/Inf)");
        else vit_softmax(out, s->classes);
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
        run_items(s, s->ctx, s->images, s->logits, s->tokens_buffer, s->scratch, items, k);
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

static void part_free(part *p) {
    free(p->name);
    free(p->bytes);
    memset(p, 0, sizeof *p);
}

static int part_append(part *p, const char *data, size_t size) {
    if (p->length + size > p->capacity) {
        size_t capacity = p->capacity ? p->capacity : 65536;
        while (capacity < p->length + size) capacity *= 2;
        unsigned char *grown = realloc(p->bytes, capacity);
        if (!grown) return -1;
        p->bytes = grown;
        p->capacity = capacity;
    }
    memcpy(p->bytes + p->length, data, size);
    p->length += size;
    return 0;
}

static void request_free(request *r) {
    if (!r) return;
    if (r->pp) MHD_destroy_post_processor(r->pp);
    part_free(&r->body);
    for (size_t i = 0; i < r->num_parts; i++) part_free(&r->parts[i]);
    free(r->parts);
    for (int i = 0; r->errors && i < r->n; i++) free(r->errors[i]);
    free(r->errors);
    free(r->inputs);
    free(r->outputs);
    free(r);
}

/* The post processor's callback: each file of a multipart body. */
static enum MHD_Result on_form_data(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *filename, const char *content_type,
                                    const char *transfer_encoding, const char *data, uint64_t off,
                                    size_t size) {
    request *r = cls;
    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    if (r->form_error) return MHD_YES;
    if (!filename) {
        snprintf(r->form_message, sizeof r->form_message,
                 "form field '%.100s' is not a file: send images as files (curl -F image=@cat.jpg)",
                 key ? key : "");
        r->form_error = 1;
        return MHD_YES;
    }
    part *last = r->num_parts ? &r->parts[r->num_parts - 1] : NULL;
    if (off == 0 && (!last || last->length > 0 || strcmp(last->name, filename) != 0)) {
        if (r->num_parts == r->parts_capacity) {
            const size_t capacity = r->parts_capacity ? 2 * r->parts_capacity : 4;
            part *grown = realloc(r->parts, capacity * sizeof *grown);
            if (!grown) return MHD_NO;
            r->parts = grown;
            r->parts_capacity = capacity;
        }
        last = &r->parts[r->num_parts++];
        memset(last, 0, sizeof *last);
        if (!(last->name = strdup(filename[0] ? filename : "(unnamed file)"))) return MHD_NO;
    }
    if (!last) return MHD_YES;
    return size == 0 || part_append(last, data, size) == 0 ? MHD_YES : MHD_NO;
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
static unsigned decode_status(vit_status st) {
    if (st == VIT_E_LIMIT) return MHD_HTTP_CONTENT_TOO_LARGE;
    if (st == VIT_E_NOMEM) return MHD_HTTP_SERVICE_UNAVAILABLE;
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

static enum MHD_Result answer_results(struct MHD_Connection *c, request *r, long top_k,
                                      int several) {
    server *s = r->s;
    for (int i = 0; i < r->n; i++)
        if (r->errors[i])
            return send_error(c, r, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s%s%s",
                              several ? r->parts[i].name : "", several ? ": " : "", r->errors[i]);
    const char *accept = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT);
    if (r->endpoint == EP_FEATURES && accept && strstr(accept, "application/octet-stream")) {
        unsigned char header[DATA_NPY_MAX_HEADER];
        size_t header_length;
        const int64_t shape[2] = {r->n, r->feature_size};
        vit_error err;
        const size_t bytes = (size_t)r->n * (size_t)r->feature_size * sizeof(float);
        if (data_npy_header(DATA_NPY_F32, shape, 2, header, &header_length, &err) != VIT_OK)
            return send_error(c, r, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s", err.message);
        char *npy = malloc(header_length + bytes);
        if (!npy) return MHD_NO;
        memcpy(npy, header, header_length);
        memcpy(npy + header_length, r->outputs, bytes);
        return send_buffer(c, r, MHD_HTTP_OK, "application/octet-stream", npy, header_length + bytes);
    }
    text t = {0};
    if (several) text_add(&t, "[");
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
    if (several) text_add(&t, "]");
    text_add(&t, "\n");
    if (t.failed) {
        free(t.data);
        return MHD_NO;
    }
    return send_buffer(c, r, MHD_HTTP_OK, "application/json", t.data, t.length);
}

/* The whole body is in: check, decode, queue, wait for the model, answer. */
static enum MHD_Result run_request(struct MHD_Connection *c, request *r) {
    server *s = r->s;
    if (r->too_large)
        return send_error(c, r, MHD_HTTP_CONTENT_TOO_LARGE,
                          "request body exceeds the limit of %zu MiB (--max-body-mb)", s->max_body >> 20);
    if (r->pp && MHD_destroy_post_processor(r->pp) != MHD_YES && !r->form_error) {
        r->pp = NULL;
        return send_error(c, r, MHD_HTTP_BAD_REQUEST, "malformed or truncated multipart/form-data body");
    }
    const int multipart = r->pp != NULL;
    r->pp = NULL;
    if (r->form_error) return send_error(c, r, MHD_HTTP_BAD_REQUEST, "%s", r->form_message);
    params p = {.r = r, .top_k = s->top_k};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, on_argument, &p);
    if (p.message[0]) return send_error(c, r, MHD_HTTP_BAD_REQUEST, "%s", p.message);
    if (r->endpoint == EP_FEATURES && r->pool == POOL_CLS &&
        vit_model_config(s->model)->no_class_token)
        return send_error(c, r, MHD_HTTP_BAD_REQUEST, "the model has no class token (use pool=mean)");
    if (multipart ? r->num_parts == 0 : r->body.length == 0)
        return send_error(c, r, MHD_HTTP_BAD_REQUEST,
                          multipart ? "no file in the multipart/form-data body"
                                    : "empty body: send the image bytes (curl --data-binary "
                                      "@cat.jpg) or a multipart form with files");
    const int n = multipart ? (int)r->num_parts : 1;
    if (n > s->queue_cap)
        return send_error(c, r, MHD_HTTP_CONTENT_TOO_LARGE,
                          "%d images in one request; the queue holds %ld (--queue)", n, s->queue_cap);
    /* Admission: a place in the queue for every image, or 503 now. */
    pthread_mutex_lock(&s->lock);
    const int stopping = s->stopping;
    const int full = !stopping && s->reserved + (size_t)n > (size_t)s->queue_cap;
    if (!stopping && !full) s->reserved += (size_t)n;
    if (full) s->m.rejected_full++;
    const size_t waiting = s->reserved;
    pthread_mutex_unlock(&s->lock);
    if (stopping) return send_error(c, r, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is shutting down");
    if (full)
        return send_error(c, r, MHD_HTTP_SERVICE_UNAVAILABLE,
                          "queue full (%zu images waiting, --queue %ld); try again later", waiting,
                          s->queue_cap);
    r->n = n;
    r->wants_features = r->endpoint == EP_FEATURES;
    r->feature_size = r->pool == POOL_MODEL ? s->feature_floats : s->hidden;
    const size_t out = (size_t)(r->wants_features ? r->feature_size : s->classes);
    r->inputs = malloc((size_t)n * s->image_floats * sizeof(float));
    r->outputs = malloc((size_t)n * out * sizeof(float));
    r->errors = calloc((size_t)n, sizeof *r->errors);
    unsigned status = 0;
    vit_error err;
    if (!r->inputs || !r->outputs || !r->errors) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        snprintf(err.message, sizeof err.message, "out of memory for %d images", n);
    }
    /* Decoded here, on this connection's thread: requests that arrive
     * together are decoded at the same time. */
    for (int i = 0; !status && i < n; i++) {
        const part *img = multipart ? &r->parts[i] : &r->body;
        const vit_status st = data_preprocess_memory(&s->pre, img->bytes, img->length,
                                                     multipart ? img->name : "request body",
                                                     r->inputs + (size_t)i * s->image_floats, &err);
        if (st != VIT_OK) status = decode_status(st);
    }
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
    if (status) return send_error(c, r, status, "%s", err.message);
    /* The images are no longer needed: free them before formatting. */
    free(r->inputs);
    r->inputs = NULL;
    return answer_results(c, r, p.top_k, multipart);
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    server *s = cls;
    (void)version;
    request *r = *con_cls;
    if (!r) {
        /* The headers are in: route, and refuse what can be refused now. */
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        r->s = s;
        r->start = now();
        r->endpoint = endpoint_of(url);
        *con_cls = r;
        pthread_mutex_lock(&s->lock);
        s->active++;
        pthread_mutex_unlock(&s->lock);
        const int post = r->endpoint == EP_CLASSIFY || r->endpoint == EP_FEATURES;
        const int is_post = strcmp(method, MHD_HTTP_METHOD_POST) == 0;
        const int is_get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 ||
                           strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
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
        const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull(length, NULL, 10) > s->max_body)
            return send_error(c, r, MHD_HTTP_CONTENT_TOO_LARGE,
                              "request body of %s bytes exceeds the limit of %zu MiB (--max-body-mb)",
                              length, s->max_body >> 20);
        const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                       MHD_HTTP_HEADER_CONTENT_TYPE);
        if (type && strncasecmp(type, "multipart/form-data", 19) == 0 &&
            !(r->pp = MHD_create_post_processor(c, 65536, on_form_data, r)))
            return send_error(c, r, MHD_HTTP_BAD_REQUEST,
                              "multipart/form-data without a usable boundary");
        r->answered = 0;
        return MHD_YES;
    }
    if (r->answered) { /* refused at the headers: the rest of the body is dropped */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        const size_t size = *upload_data_size;
        *upload_data_size = 0;
        r->received += size;
        if (r->received > s->max_body) r->too_large = 1; /* chunked: read on, keep nothing */
        if (r->too_large) return MHD_YES;
        if (r->pp) return MHD_post_process(r->pp, upload_data, size) == MHD_YES || r->form_error
                              ? MHD_YES
                              : (r->form_error = 1,
                                 snprintf(r->form_message, sizeof r->form_message,
                                          "malformed multipart/form-data body"),
                                 MHD_YES);
        return part_append(&r->body, upload_data, size) == 0 ? MHD_YES : MHD_NO;
    }
    r->answered = 1;
    return run_request(c, r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    server *s = cls;
    request *r = *con_cls;
    (void)c;
    (void)toe;
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

static enum MHD_Result answer_metrics(struct MHD_Connection *c, request *r) {
    server *s = r->s;
    pthread_mutex_lock(&s->lock);
    const metrics m = s->m;
    const size_t reserved = s->reserved;
    const int active = s->active;
    pthread_mutex_unlock(&s->lock);
    text t = {0};
    text_add(&t, "# HELP vit_requests_total HTTP requests answered, by endpoint and status code.\n"
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
    if (t.failed) {
        free(t.data);
        return MHD_NO;
    }
    return send_buffer(c, r, MHD_HTTP_OK, "text/plain; version=0.0.4", t.data, t.length);
}

/* libmicrohttpd's own messages (a refused connection, a protocol error). */
static void on_log(void *cls, const char *format, va_list ap) {
    (void)cls;
    char line[1024];
    vsnprintf(line, sizeof line, format, ap);
    const size_t n = strcspn(line, "\n");
    fprintf(stderr, "vit serve: %.*s\n", (int)n, line);
}

/* ------------------------------------------------------------ setup */

static int read_options(server *s, const cli_args *args, vit_limits *limits, int *allow_unused,
                        long *port) {
    const char *const *v = args->values;
    long max_body_mb = 20;
    *port = 8080;
    if (cli_limits("serve", &v[OPT_LIMITS], CLI_NUM_LIMIT_OPTIONS, limits, allow_unused) != 0 ||
        (v[OPT_PORT] && cli_int("serve", "--port", v[OPT_PORT], 0, 65535, port)) ||
        (v[OPT_BATCH] && cli_int("serve", "-b", v[OPT_BATCH], 1, 1024, &s->batch)) ||
        (v[OPT_MAX_WAIT] && cli_int("serve", "--max-wait-ms", v[OPT_MAX_WAIT], 0, 60000, &s->max_wait_ms)) ||
        (v[OPT_THREADS] && cli_int("serve", "-t", v[OPT_THREADS], 1, 1024, &s->threads)) ||
        (v[OPT_TOPK] && cli_int("serve", "-k", v[OPT_TOPK], 1, 1000, &s->top_k)) ||
        (v[OPT_QUEUE] && cli_int("serve", "--queue", v[OPT_QUEUE], 1, 1 << 20, &s->queue_cap)) ||
        (v[OPT_MAX_BODY] && cli_int("serve", "--max-body-mb", v[OPT_MAX_BODY], 1, 1024, &max_body_mb)) ||
        (v[OPT_TIMEOUT] && cli_int("serve", "--timeout", v[OPT_TIMEOUT], 1, 86400, &s->timeout)) ||
        (v[OPT_CONNECTIONS] &&
         cli_int("serve", "--max-connections", v[OPT_CONNECTIONS], 1, 10000, &s->connections)))
        return -1;
    s->max_body = (size_t)max_body_mb << 20;
    if (args->num_positional > 0) {
        fprintf(stderr, "vit serve: unexpected argument '%s' (images come in requests)\n",
                args->positional[0]);
        return -1;
    }
    return 0;
}

/* The address to bind: a numeric IPv4/IPv6 address or a host name. */
static int resolve_host(const char *host, long port, struct sockaddr_storage *addr, socklen_t *len) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *found = NULL;
    char service[16];
    snprintf(service, sizeof service, "%ld", port);
    const int rc = getaddrinfo(host, service, &hints, &found);
    if (rc != 0 || !found) {
        fprintf(stderr, "vit serve: --host %s: %s\n", host, rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    memcpy(addr, found->ai_addr, found->ai_addrlen);
    *len = found->ai_addrlen;
    freeaddrinfo(found);
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
    vit_error err;
    if (vit_context_create(s->model, (int)s->batch, 0, &s->ctx, &err) != VIT_OK) {
        fprintf(stderr, "vit serve: %s\n", err.message);
        return -1;
    }
    const size_t batch = (size_t)s->batch;
    s->tokens = vit_context_num_tokens(s->ctx);
    s->images = malloc(batch * s->image_floats * sizeof(float));
    s->logits = malloc(batch * (size_t)s->out_floats * sizeof(float));
    s->tokens_buffer = malloc(batch * (size_t)s->tokens * (size_t)s->hidden * sizeof(float));
    s->scratch = malloc((size_t)s->hidden * sizeof(float));
    s->items = malloc(batch * sizeof *s->items);
    s->ring = calloc((size_t)s->queue_cap, sizeof *s->ring);
    if (!s->images || !s->logits || !s->tokens_buffer || !s->scratch || !s->items || !s->ring) {
        fprintf(stderr, "vit serve: out of memory\n");
        return -1;
    }
    if (pthread_create(&s->worker, NULL, model_thread, s) != 0) {
        fprintf(stderr, "vit serve: cannot start the model thread\n");
        return -1;
    }
    s->worker_started = 1;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    if (resolve_host(host, port, &addr, &addr_len) != 0) return -1;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (addr.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_log, NULL,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->timeout,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)s->connections,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                 MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                                 MHD_OPTION_END);
    if (!s->daemon) {
        fprintf(stderr, "vit serve: cannot listen on %s port %ld (in use, or not an address "
                        "of this machine?)\n", host, port);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    const unsigned bound = info ? info->port : (unsigned)port;
    const int v6 = addr.ss_family == AF_INET6;
    fprintf(stderr, "vit serve: listening on http://%s%s%s:%u\n", v6 ? "[" : "", host, v6 ? "]" : "",
            bound);
    return 0;
}

/* After a stop signal: no new connections, requests in flight answered
 * (waiting at most --timeout for one that is still sending its body). */
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
    if (s->worker_started) {
        pthread_mutex_lock(&s->lock);
        s->worker_stop = 1;
        pthread_cond_signal(&s->work);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->worker, NULL);
    }
    vit_context_free(s->ctx);
    free(s->images);
    free(s->logits);
    free(s->tokens_buffer);
    free(s->scratch);
    free(s->items);
    free(s->ring);
}

int cli_serve(int argc, char **argv) {
    cli_args args;
    const int parsed = cli_parse("serve", USAGE, OPTIONS, NUM_OPTS, argc, argv, &args);
    if (parsed != 0) {
        free(args.positional);
        return parsed > 0 ? CLI_EXIT_OK : CLI_EXIT_FATAL;
    }
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
                .connections = 64};
    vit_limits limits;
    int allow_unused;
    long port;
    const int ok = read_options(&s, &args, &limits, &allow_unused, &port) == 0;
    const char *host = args.values[OPT_HOST] ? args.values[OPT_HOST] : "127.0.0.1";
    s.is_default_model = args.values[OPT_MODEL] == NULL;
    if (ok)
        s.model = cli_load_model_limited("serve", args.values[OPT_MODEL], args.values[OPT_LABELS],
                                         NULL, &limits, 0, allow_unused);
    if (!s.model) {
        free(args.positional);
        return CLI_EXIT_FATAL;
    }
    const vit_config *c = vit_model_config(s.model);
    s.pre = *vit_model_preprocess(s.model);
    s.classes = c->num_classes;
    s.out_floats = vit_model_output_size(s.model);
    s.feature_floats = vit_config_pooled_size(c);
    s.hidden = c->hidden_size;
    s.image_floats = 3 * (size_t)data_preprocess_out_height(&s.pre) *
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
    vit_model_free(s.model);
    free(args.positional);
    if (exit_code == CLI_EXIT_OK) fprintf(stderr, "vit serve: stopped\n");
    return exit_code;
}

#endif
