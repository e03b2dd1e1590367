/* classify, eval and features over several processes with MPI (cli_mpi.h).
 *
 * Rank 0 hands out batches as ranks ask for them and writes; every rank,
 * rank 0 included, computes. Rank 0 runs three threads of its own: the
 * main thread computes like any rank, the loader thread decodes the next
 * batch, and a writer thread answers the other ranks (next batch, results)
 * and calls the command's handlers in input order. Waiting is done by
 * polling with short sleeps: Open MPI's blocking calls spin on a core,
 * which on a machine whose cores all run the model costs a whole rank. */
#include <mpi.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_mpi.h"

enum { TAG_REQUEST = 1, TAG_ASSIGN, TAG_RESULT };

static int joined, world_rank, world_size;

int cli_mpi_active(void) { return world_size > 1; }
int cli_mpi_rank(void) { return world_rank; }
int cli_mpi_size(void) { return joined ? world_size : 1; }

/* Only called through the module, which the program opens when a launcher
 * started it (cli/mpi_calls.c looks for the launcher's variables), so it
 * always joins. A plain vit never calls MPI_Init. */
int cli_mpi_start(int *argc, char ***argv) {
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "vit: cannot join the MPI job (MPI_Init_thread failed)\n");
        return -1;
    }
    joined = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (provided < MPI_THREAD_MULTIPLE && world_size > 1) {
        if (world_rank == 0)
            fprintf(stderr, "vit: this MPI library does not support MPI_THREAD_MULTIPLE, which vit "
                            "needs to run on several processes\n");
        return -1;
    }
    return 0;
}

/* Sleeps a little longer each time nothing happened, up to 2 ms. */
static void idle(long *ns) {
    *ns = *ns < 20000 ? 20000 : *ns * 2 > 2000000 ? 2000000 : *ns * 2;
    const struct timespec t = {0, *ns};
    nanosleep(&t, NULL);
}

/* MPI_Wait without spinning on a core. */
static void wait_quietly(MPI_Request *request, MPI_Status *status) {
    long ns = 0;
    for (;;) {
        int done = 0;
        MPI_Test(request, &done, status ? status : MPI_STATUS_IGNORE);
        if (done) return;
        idle(&ns);
    }
}

int cli_mpi_finish(int status) {
    if (!joined) return status;
    if (world_size > 1) {
        /* Every rank leaves with rank 0's status, so mpirun's is the job's. */
        int shared = status;
        MPI_Request r;
        MPI_Ibcast(&shared, 1, MPI_INT, 0, MPI_COMM_WORLD, &r);
        wait_quietly(&r, NULL);
        status = shared;
    }
    MPI_Finalize();
    return status;
}

void cli_mpi_abort(int status) {
    if (joined) MPI_Abort(MPI_COMM_WORLD, status);
}

int cli_mpi_go(int ok) {
    if (world_size <= 1) return ok;
    int word = ok;
    MPI_Request r;
    MPI_Ibcast(&word, 1, MPI_INT, 0, MPI_COMM_WORLD, &r);
    wait_quietly(&r, NULL);
    return word;
}

int cli_mpi_agree(const char *command, int ok) {
    if (world_size <= 1) return ok;
    int mine = ok, all = 0;
    MPI_Request r;
    MPI_Iallreduce(&mine, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &r);
    wait_quietly(&r, NULL);
    if (!ok && world_rank != 0) {
        char host[256] = "?";
        gethostname(host, sizeof host - 1);
        fprintf(stderr, "vit %s: (the line above is from rank %d of %d, on %s)\n", command,
                world_rank, world_size, host);
    }
    return all;
}

/* Broadcasts n bytes in pieces MPI's int counts can hold. */
static void share_bytes(char *data, size_t n) {
    const size_t piece = (size_t)1 << 30;
    for (size_t at = 0; at < n; at += piece) {
        MPI_Request r;
        MPI_Ibcast(data + at, (int)(n - at < piece ? n - at : piece), MPI_BYTE, 0, MPI_COMM_WORLD, &r);
        wait_quietly(&r, NULL);
    }
}

int cli_mpi_share_inputs(const char *command, cli_inputs *in, long *batch) {
    if (world_size <= 1) return 0;
    /* Rank 0: "path\0name\0" for every input, after the counts. */
    uint64_t head[3] = {0, 0, (uint64_t)*batch};
    char *text = NULL;
    if (world_rank == 0) {
        head[0] = in->count;
        for (size_t i = 0; i < in->count; i++) head[1] += strlen(in->paths[i]) + strlen(in->names[i]) + 2;
    }
    MPI_Request r;
    MPI_Ibcast(head, 3, MPI_UINT64_T, 0, MPI_COMM_WORLD, &r);
    wait_quietly(&r, NULL);
    /* Out of memory on some rank here would leave the others waiting in
     * the broadcast: that rank aborts the job instead. */
    if (!(text = malloc(head[1] ? head[1] : 1))) {
        fprintf(stderr, "vit %s: out of memory for the list of %llu files\n", command,
                (unsigned long long)head[0]);
        cli_mpi_abort(CLI_EXIT_FATAL);
        return -1;
    }
    if (world_rank == 0) {
        char *p = text;
        for (size_t i = 0; i < in->count; i++) {
            p = stpcpy(p, in->paths[i]) + 1;
            p = stpcpy(p, in->names[i]) + 1;
        }
    }
    share_bytes(text, head[1]);
    if (world_rank != 0) {
        const char *p = text;
        for (uint64_t i = 0; i < head[0]; i++) {
            const char *name = p + strlen(p) + 1;
            if (cli_inputs_add(in, p, name) != 0) {
                fprintf(stderr, "vit %s: out of memory for the list of files\n", command);
                free(text);
                cli_mpi_abort(CLI_EXIT_FATAL);
                return -1;
            }
            p = name + strlen(name) + 1;
        }
        *batch = (long)head[2];
    }
    free(text);
    return 0;
}

/* ------------------------------------------------------------------ run */

/* One computed batch as it travels to rank 0: a header, per file its row
 * (or -1) and, for failed files, the error; then the good rows' floats. */
typedef struct packed_head {
    uint64_t first, floats_offset;
    int32_t count, num_good;
} packed_head;

typedef struct packed {
    char *data;
    size_t length, capacity;
} packed;

static int pack_put(packed *p, const void *bytes, size_t n) {
    if (p->length + n > p->capacity) {
        size_t capacity = p->capacity ? p->capacity : 65536;
        while (capacity < p->length + n) capacity *= 2;
        char *grown = realloc(p->data, capacity);
        if (!grown) return -1;
        p->data = grown;
        p->capacity = capacity;
    }
    memcpy(p->data + p->length, bytes, n);
    p->length += n;
    return 0;
}

static int pack_batch(packed *p, const data_batch *b, const float *results, size_t floats) {
    p->length = 0;
    packed_head head = {b->first, 0, b->count, 0};
    for (int i = 0; i < b->count; i++) head.num_good += b->row[i] >= 0;
    int rc = pack_put(p, &head, sizeof head);
    for (int i = 0; rc == 0 && i < b->count; i++) {
        const int32_t row = b->row[i];
        rc = pack_put(p, &row, sizeof row);
        if (rc == 0 && row < 0) {
            const int32_t len = (int32_t)strlen(b->errors[i].message);
            rc = pack_put(p, &len, sizeof len) || pack_put(p, b->errors[i].message, (size_t)len);
        }
    }
    /* Rows keep the batch's numbering (b->row), so copy as many as the
     * highest row used: the forward pass's rows are packed from 0. */
    int rows = 0;
    for (int i = 0; i < b->count; i++) rows = b->row[i] + 1 > rows ? b->row[i] + 1 : rows;
    const size_t pad = (sizeof(float) - p->length % sizeof(float)) % sizeof(float);
    const char zeros[sizeof(float)] = {0};
    if (rc == 0) rc = pack_put(p, zeros, pad);
    const uint64_t offset = p->length;
    if (rc == 0) rc = pack_put(p, results, sizeof(float) * floats * (size_t)rows);
    if (rc == 0) memcpy(p->data + offsetof(packed_head, floats_offset), &offset, sizeof offset);
    return rc;
}

/* Rank 0: what the other ranks and its own main thread share with the
 * writer thread. */
typedef struct server {
    const cli_mpi_job *job;
    pthread_mutex_t lock;
    size_t num_batches, next_batch, assigned, written;
    packed *ready;          /* by batch: its results, data NULL until they came */
    int local_done;         /* rank 0's own loop has ended */
    int workers_left;       /* ranks that have not yet been told "no more" */
    double start;
    int failed;             /* a handler failed: the job is aborted */
} server;

/* The next batch for anyone; (size_t)-1 when none is left or a stop was asked. */
static size_t take_batch(server *s) {
    pthread_mutex_lock(&s->lock);
    size_t b = (size_t)-1;
    if (!cli_stop_requested() && s->next_batch < s->num_batches) {
        b = s->next_batch++;
        s->assigned++;
    }
    pthread_mutex_unlock(&s->lock);
    return b;
}

static size_t local_schedule(void *context) {
    server *s = context;
    const size_t b = take_batch(s);
    return b == (size_t)-1 ? DATA_LOADER_END : b * (size_t)s->job->batch;
}

/* Other ranks: ask rank 0 (on the loader thread). */
typedef struct worker {
    const cli_mpi_job *job;
} worker;

static size_t remote_schedule(void *context) {
    worker *w = context;
    int32_t quitting = cli_stop_requested() != 0;
    int64_t batch = -1;
    MPI_Request r;
    MPI_Isend(&quitting, 1, MPI_INT32_T, 0, TAG_REQUEST, MPI_COMM_WORLD, &r);
    wait_quietly(&r, NULL);
    MPI_Irecv(&batch, 1, MPI_INT64_T, 0, TAG_ASSIGN, MPI_COMM_WORLD, &r);
    wait_quietly(&r, NULL);
    return batch < 0 ? DATA_LOADER_END : (size_t)batch * (size_t)w->job->batch;
}

static void *stub_server, *stub_worker;

/* Writer thread: hands the batches that are next in order to the handlers. */
static int write_ready(server *s) {
    const cli_mpi_job *job = s->job;
    int wrote = 0;
    for (;;) {
        pthread_mutex_lock(&s->lock);
        packed p = s->written < s->num_batches ? s->ready[s->written] : (packed){0};
        pthread_mutex_unlock(&s->lock);
        if (!p.data) return wrote;
        packed_head head;
        memcpy(&head, p.data, sizeof head);
        const char *at = p.data + sizeof head;
        const float *floats = (const float *)(const void *)(p.data + head.floats_offset);
        char message[sizeof ((base_error *)0)->message];
        for (int i = 0; i < head.count; i++) {
            int32_t row;
            memcpy(&row, at, sizeof row);
            at += sizeof row;
            if (row < 0) {
                int32_t len;
                memcpy(&len, at, sizeof len);
                at += sizeof len;
                const size_t n = (size_t)len < sizeof message - 1 ? (size_t)len : sizeof message - 1;
                memcpy(message, at, n);
                message[n] = '\0';
                at += len;
                job->handlers.item(job->handlers.self, head.first + (size_t)i, NULL, message);
            } else {
                job->handlers.item(job->handlers.self, head.first + (size_t)i,
                                   floats + (size_t)row * job->floats, NULL);
            }
        }
        data_batch done = {.first = head.first, .count = head.count};
        const int rc = job->handlers.batch_done(job->handlers.self, &done, cli_now_seconds() - s->start);
        pthread_mutex_lock(&s->lock);
        free(s->ready[s->written].data);
        s->ready[s->written].data = NULL;
        s->written++;
        pthread_mutex_unlock(&s->lock);
        if (rc != 0) {
            /* An output that cannot be written: fatal, as in one process. */
            s->failed = 1;
            return wrote;
        }
        wrote = 1;
    }
}

static void store_result(server *s, packed *p) {
    packed_head head;
    memcpy(&head, p->data, sizeof head);
    const size_t b = head.first / (size_t)s->job->batch;
    pthread_mutex_lock(&s->lock);
    s->ready[b] = *p;
    pthread_mutex_unlock(&s->lock);
    *p = (packed){0};
}

/* Answers one message from another rank, if one is there; 1 if it did. */
static int serve_one(server *s) {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
    if (!flag) return 0;
    MPI_Request r;
    if (st.MPI_TAG == TAG_REQUEST) {
        int32_t quitting;
        MPI_Irecv(&quitting, 1, MPI_INT32_T, st.MPI_SOURCE, TAG_REQUEST, MPI_COMM_WORLD, &r);
        wait_quietly(&r, NULL);
        const size_t b = quitting ? (size_t)-1 : take_batch(s);
        const int64_t answer = b == (size_t)-1 ? -1 : (int64_t)b;
        if (answer < 0) s->workers_left--;
        MPI_Isend(&answer, 1, MPI_INT64_T, st.MPI_SOURCE, TAG_ASSIGN, MPI_COMM_WORLD, &r);
        wait_quietly(&r, NULL);
    } else if (st.MPI_TAG == TAG_RESULT) {
        int bytes;
        MPI_Get_count(&st, MPI_BYTE, &bytes);
        packed p = {malloc(bytes > 0 ? (size_t)bytes : 1), (size_t)bytes, (size_t)bytes};
        if (!p.data) {
            fprintf(stderr, "vit %s: out of memory receiving results\n", s->job->command);
            cli_mpi_abort(CLI_EXIT_FATAL);
        }
        MPI_Irecv(p.data, bytes, MPI_BYTE, st.MPI_SOURCE, TAG_RESULT, MPI_COMM_WORLD, &r);
        wait_quietly(&r, NULL);
        store_result(s, &p);
    }
    return 1;
}

static void *serve(void *arg) {
    server *s = arg;
    long ns = 0;
    for (;;) {
        int busy = serve_one(s);
        busy |= write_ready(s);
        if (s->failed) cli_mpi_abort(CLI_EXIT_FATAL);
        pthread_mutex_lock(&s->lock);
        const int finished = s->local_done && s->workers_left == 0 && s->written == s->assigned;
        pthread_mutex_unlock(&s->lock);
        if (finished) return NULL;
        if (busy) ns = 0;
        else idle(&ns);
    }
}

/* The stub's batches: straight from the schedule, every file "good". */
static int next_stub_batch(const cli_mpi_job *job, int *rows, data_batch *b) {
    const size_t first = world_rank == 0 ? local_schedule(stub_server) : remote_schedule(stub_worker);
    if (first == DATA_LOADER_END) return 0;
    const size_t left = job->count - first;
    *b = (data_batch){.first = first, .count = (int)(left < (size_t)job->batch ? left : (size_t)job->batch), .row = rows};
    b->num_good = b->count;
    return 1;
}

/* For bench/mpi_overhead.sh only (not a user option): no decoding and no
 * model, made-up probabilities, so what is measured is the handing out,
 * the messages and rank 0's writer. The rows' indices; *results: the rows. */
static int *make_stub_rows(const cli_mpi_job *job, float **results) {
    int *rows = malloc(sizeof *rows * (size_t)job->batch);
    *results = malloc(sizeof(float) * job->floats * (size_t)job->batch);
    if (!rows || !*results) {
        fprintf(stderr, "vit %s: out of memory\n", job->command);
        cli_mpi_abort(CLI_EXIT_FATAL);
    }
    for (int i = 0; i < job->batch; i++) {
        rows[i] = i;
        for (size_t c = 0; c < job->floats; c++)
            (*results)[(size_t)i * job->floats + c] = (float)((c * 7 + (size_t)i) % job->floats) / job->floats;
    }
    return rows;
}

/* The pipeline's next batch and the job's rows of it: 1, 0 at the end;
 * a failure aborts the job (printed). */
static int next_batch(const cli_mpi_job *job, data_batch *b, float **rows) {
    base_error err;
    const int rc = vit_pipeline_next(job->pipeline, b, &err);
    if (rc < 0) fprintf(stderr, "vit %s: %s\n", job->command, err.message);
    if (rc < 0 || (rc > 0 && job->rows(job->self, b, rows) != 0)) cli_mpi_abort(CLI_EXIT_FATAL);
    return rc;
}

int cli_mpi_run(const cli_mpi_job *job, double *seconds) {
    const size_t num_batches = (job->count + (size_t)job->batch - 1) / (size_t)job->batch;
    server s = {.job = job, .num_batches = num_batches, .workers_left = world_size - 1};
    worker w = {job};
    stub_server = &s;
    stub_worker = &w;
    pthread_t writer;
    int writer_started = 0;
    base_error err;
    packed out = {0};
    cli_catch_stop_signals();
    s.start = cli_now_seconds();
    if (world_rank == 0) {
        pthread_mutex_init(&s.lock, NULL);
        if (!(s.ready = calloc(num_batches ? num_batches : 1, sizeof *s.ready))) {
            fprintf(stderr, "vit %s: out of memory\n", job->command);
            cli_mpi_abort(CLI_EXIT_FATAL);
        }
        if (pthread_create(&writer, NULL, serve, &s) != 0) {
            fprintf(stderr, "vit %s: cannot start the writer thread\n", job->command);
            cli_mpi_abort(CLI_EXIT_FATAL);
        }
        writer_started = 1;
    }
    const int stub = getenv("VITC_MPI_BENCH_STUB") != NULL;
    /* This job's batch source: rank 0 hands out the batches. */
    const vit_pipeline_source source = {.paths = job->paths,
                                        .count = job->count,
                                        .schedule = world_rank == 0 ? local_schedule : remote_schedule,
                                        .schedule_context = world_rank == 0 ? (void *)&s : (void *)&w};
    if (!stub && vit_pipeline_open(job->pipeline, &source, 1, 1, &err) != BASE_OK) {
        fprintf(stderr, "vit %s: %s\n", job->command, err.message);
        cli_mpi_abort(CLI_EXIT_FATAL);
    }
    float *results = NULL; /* the stub's rows (the pipeline has its own) */
    int *stub_rows = stub ? make_stub_rows(job, &results) : NULL;
    data_batch b;
    float *rows = results;
    while (stub ? next_stub_batch(job, stub_rows, &b) : next_batch(job, &b, &rows) > 0) {
        if (pack_batch(&out, &b, rows, job->floats) != 0) {
            fprintf(stderr, "vit %s: out of memory\n", job->command);
            cli_mpi_abort(CLI_EXIT_FATAL);
        }
        if (world_rank == 0) {
            store_result(&s, &out);
        } else {
            MPI_Request r;
            MPI_Isend(out.data, (int)out.length, MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD, &r);
            wait_quietly(&r, NULL);
        }
    }
    free(stub_rows);
    free(out.data);
    free(results);
    if (writer_started) {
        pthread_mutex_lock(&s.lock);
        s.local_done = 1;
        pthread_mutex_unlock(&s.lock);
        pthread_join(writer, NULL);
        for (size_t i = 0; i < num_batches; i++) free(s.ready[i].data);
        free(s.ready);
        pthread_mutex_destroy(&s.lock);
    }
    *seconds = cli_now_seconds() - s.start;
    return 0;
}
