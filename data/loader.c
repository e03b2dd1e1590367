/* A double-buffered batch loader: while the caller runs the model on one
 * batch, a background thread decodes and preprocesses the next, so the
 * model rarely waits for the disk or the JPEG decoder. The background thread
 * decodes alone: with the model's threads already on every core, a second
 * OpenMP team only added threads spinning for work (bench/README.md).
 * Without prefetch a batch is decoded on all threads when it is asked for. */
#include "data.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct loader_slot {
    float *images;
    int *row;
    base_status *status;
    base_error *errors;
    size_t first;
    int count, num_good;
    enum { SLOT_FREE, SLOT_READY, SLOT_IN_USE } state;
} loader_slot;

struct data_loader {
    data_preprocess pre;
    const char *const *paths;
    size_t num_paths;
    size_t next_to_fill; /* first file of the next batch to decode */
    size_t next_to_take; /* first file of the next batch to hand out */
    int batch_size, threads, prefetch;
    /* Scheduled loaders: where each next batch starts comes from schedule
     * (DATA_LOADER_END: no more), and the producer says when it is done. */
    data_loader_schedule schedule;
    void *schedule_context;
    int producer_done;
    size_t image_floats;
    /* Both sides walk the two slots in turn: the producer fills a slot once
     * it is free, the consumer takes it once it is ready and frees it on
     * its next call. */
    loader_slot slots[2];
    int fill_slot, take_slot;
    int stop;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t lock;
    pthread_cond_t changed;
};

/* Decodes the files of one batch into slot with `threads` threads, good
 * images packed to the front. */
static void fill(data_loader *l, loader_slot *slot, size_t first, int count, int threads) {
    slot->first = first;
    slot->count = count;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
    for (int i = 0; i < count; i++)
        slot->status[i] = data_preprocess_file(&l->pre, l->paths[first + i],
                                                slot->images + (size_t)i * l->image_floats,
                                                &slot->errors[i]);
    int good = 0;
    for (int i = 0; i < count; i++) {
        slot->row[i] = -1;
        if (slot->status[i] != BASE_OK) continue;
        if (good != i)
            memmove(slot->images + (size_t)good * l->image_floats,
                    slot->images + (size_t)i * l->image_floats, sizeof(float) * l->image_floats);
        slot->row[i] = good++;
    }
    slot->num_good = good;
}

static int batch_at(const data_loader *l, size_t first) {
    size_t left = l->num_paths - first;
    return (int)(left < (size_t)l->batch_size ? left : (size_t)l->batch_size);
}

/* The first file of the next batch to decode, or DATA_LOADER_END. A
 * schedule is asked without the lock held (it may wait, e.g. for another
 * process to hand out work). */
static size_t next_first(data_loader *l) {
    if (l->schedule) {
        const size_t first = l->schedule(l->schedule_context);
        return first < l->num_paths ? first : DATA_LOADER_END;
    }
    if (l->next_to_fill >= l->num_paths) return DATA_LOADER_END;
    const size_t first = l->next_to_fill;
    l->next_to_fill += (size_t)batch_at(l, first);
    return first;
}

static void *producer(void *arg) {
    data_loader *l = arg;
    pthread_mutex_lock(&l->lock);
    while (!l->stop) {
        loader_slot *slot = &l->slots[l->fill_slot];
        while (!l->stop && slot->state != SLOT_FREE) pthread_cond_wait(&l->changed, &l->lock);
        if (l->stop) break;
        pthread_mutex_unlock(&l->lock);
        const size_t first = next_first(l);
        if (first != DATA_LOADER_END) fill(l, slot, first, batch_at(l, first), 1);
        pthread_mutex_lock(&l->lock);
        if (first == DATA_LOADER_END) break;
        slot->state = SLOT_READY;
        l->fill_slot ^= 1;
        pthread_cond_broadcast(&l->changed);
    }
    l->producer_done = 1;
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

base_status data_loader_create(const data_preprocess *pre, const char *const *paths, size_t count,
                              int batch_size, int threads, int prefetch, data_loader **out,
                              base_error *err) {
    return data_loader_create_scheduled(pre, paths, count, batch_size, threads, prefetch, NULL, NULL,
                                        out, err);
}

base_status data_loader_create_scheduled(const data_preprocess *pre, const char *const *paths,
                                        size_t count, int batch_size, int threads, int prefetch,
                                        data_loader_schedule schedule, void *context,
                                        data_loader **out, base_error *err) {
    *out = NULL;
    if (batch_size <= 0) return base_error_set(err, BASE_E_ARG, "batch size %d must be positive", batch_size);
    data_loader *l = calloc(1, sizeof *l);
    if (!l) return base_error_set(err, BASE_E_NOMEM, "out of memory");
    l->pre = *pre;
    l->paths = paths;
    l->num_paths = count;
    l->batch_size = batch_size;
    l->threads = threads > 0 ? threads : 1;
    l->prefetch = prefetch;
    l->schedule = schedule;
    l->schedule_context = context;
    l->image_floats = (size_t)3 * data_preprocess_out_height(pre) * data_preprocess_out_width(pre);
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->changed, NULL);
    for (int s = 0; s < (prefetch ? 2 : 1); s++) {
        loader_slot *slot = &l->slots[s];
        slot->images = malloc(sizeof(float) * l->image_floats * (size_t)batch_size);
        slot->row = malloc(sizeof *slot->row * (size_t)batch_size);
        slot->status = malloc(sizeof *slot->status * (size_t)batch_size);
        slot->errors = malloc(sizeof *slot->errors * (size_t)batch_size);
        if (!slot->images || !slot->row || !slot->status || !slot->errors) {
            data_loader_free(l);
            return base_error_set(err, BASE_E_NOMEM, "out of memory for a batch of %d images", batch_size);
        }
    }
    if (prefetch && count > 0) {
        if (pthread_create(&l->thread, NULL, producer, l) != 0) {
            data_loader_free(l);
            return base_error_set(err, BASE_E_NOMEM, "cannot start the loader thread");
        }
        l->thread_started = 1;
    }
    *out = l;
    return BASE_OK;
}

static void hand_out(const data_loader *l, const loader_slot *slot, data_batch *batch) {
    batch->first = slot->first;
    batch->count = slot->count;
    batch->num_good = slot->num_good;
    batch->images = slot->images;
    batch->height = data_preprocess_out_height(&l->pre);
    batch->width = data_preprocess_out_width(&l->pre);
    batch->row = slot->row;
    batch->errors = slot->errors;
}

int data_loader_next(data_loader *l, data_batch *batch) {
    memset(batch, 0, sizeof *batch);
    if (!l->prefetch) {
        const size_t first = next_first(l);
        if (first == DATA_LOADER_END) return 0;
        const int count = batch_at(l, first);
        fill(l, &l->slots[0], first, count, l->threads);
        hand_out(l, &l->slots[0], batch);
        return count;
    }
    pthread_mutex_lock(&l->lock);
    loader_slot *previous = &l->slots[l->take_slot ^ 1];
    if (previous->state == SLOT_IN_USE) { /* the caller is done with it */
        previous->state = SLOT_FREE;
        pthread_cond_broadcast(&l->changed);
    }
    if (!l->thread_started || (!l->schedule && l->next_to_take >= l->num_paths)) {
        pthread_mutex_unlock(&l->lock);
        return 0;
    }
    loader_slot *slot = &l->slots[l->take_slot];
    while (slot->state != SLOT_READY && !l->producer_done) pthread_cond_wait(&l->changed, &l->lock);
    if (slot->state != SLOT_READY) { /* the producer filled every batch there was */
        pthread_mutex_unlock(&l->lock);
        return 0;
    }
    slot->state = SLOT_IN_USE;
    l->take_slot ^= 1;
    l->next_to_take += (size_t)slot->count;
    hand_out(l, slot, batch);
    pthread_mutex_unlock(&l->lock);
    return batch->count;
}

int data_loader_restart(data_loader *l, const char *const *paths, size_t count, int threads) {
    if (l->prefetch || l->schedule) return -1;
    l->paths = paths;
    l->num_paths = count;
    l->next_to_fill = l->next_to_take = 0;
    l->threads = threads > 0 ? threads : 1;
    return 0;
}

void data_loader_free(data_loader *l) {
    if (!l) return;
    if (l->thread_started) {
        pthread_mutex_lock(&l->lock);
        l->stop = 1;
        pthread_cond_broadcast(&l->changed);
        pthread_mutex_unlock(&l->lock);
        pthread_join(l->thread, NULL);
    }
    for (int s = 0; s < 2; s++) {
        free(l->slots[s].images);
        free(l->slots[s].row);
        free(l->slots[s].status);
        free(l->slots[s].errors);
    }
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->changed);
    free(l);
}

uint64_t data_hash(const char *text) {
    uint64_t hash = 14695981039346656037ull;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        hash ^= *p;
        hash *= 1099511628211ull;
    }
    return hash;
}
