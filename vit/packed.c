/* packed.c — packed copies of a checkpoint (vit quantize; docs/quantize.md):
 * the weights already in the kernels' packed layouts, so a load maps them
 * instead of packing.
 *
 * A packed file is an ordinary safetensors file holding
 *  - every tensor of the checkpoint it was made from, as that stored it
 *    (I8 with its scales, F32, BF16): what a load packs from when the
 *    file's layouts are not the kernels' (another path's int8 layout, an
 *    older layout version), and what other tools read;
 *  - before them, each packed matrix's parts (kernels.h kernels_packed) as
 *    U8 tensors "vitc_packed.<matrix>.<part>", <matrix> one of patch, head,
 *    blocks.<l>.qkv / proj / fc1 / fc2, each part a multiple of 64 bytes
 *    and the header padded to 64, so every part starts 64-byte aligned in
 *    the mapping;
 *  - in __metadata__, the layout names the parts were packed in:
 *    vitc_packed_fmatrix (float32 matrices), vitc_packed_qmatrix (int8
 *    ones; absent without any) and vitc_packed_bmatrix (bf16 ones, as
 *    vit quantize --dtype bf16 stores the linear layers; absent without).
 * A load takes the parts of a matrix type only when its layout name is the
 * one the kernels use now; otherwise it packs from the source tensors as
 * for any file and says so in one notice line. Parts that the metadata
 * claims but that are missing or of the wrong size refuse the load. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vit_internal.h"

#define PREFIX "vitc_packed."
#define KEY_F "vitc_packed_fmatrix"
#define KEY_Q "vitc_packed_qmatrix"
#define KEY_B "vitc_packed_bmatrix"

int vit_packed_is_part(const char *name) { return strncmp(name, PREFIX, strlen(PREFIX)) == 0; }

int vit_packed_is_key(const char *key) {
    return strcmp(key, KEY_F) == 0 || strcmp(key, KEY_Q) == 0 || strcmp(key, KEY_B) == 0;
}

/* Whether layout is what the int8 kernels of some path of this vitc pack:
 * a copy made on another CPU, not a stale one. */
static int current_qmatrix_layout(const char *layout) {
    for (int isa = 0; isa < KERNELS_ISA_COUNT; isa++)
        if (strcmp(layout, kernels_qmatrix_layout((kernels_isa)isa)) == 0) return 1;
    return 0;
}

/* The file's layout for key against the kernels' now: 1 take the parts, 0
 * none stored or packed for another CPU's int8 path (packed at load, as a
 * plain file: the shipped default model, packed for AVX-512 VNNI, on an
 * AVX2 machine says nothing), -1 a layout no kernel of this vitc uses
 * (another version: appended to stale, for the one line). */
static int settle_one(const vit_model *m, const char *key, const char *now, char *stale,
                      size_t size) {
    const char *stored = weights_metadata(m->file, key);
    if (!stored) return 0;
    if (strcmp(stored, now) == 0) return 1;
    if (strcmp(key, KEY_Q) == 0 && current_qmatrix_layout(stored)) return 0;
    const size_t used = strlen(stale);
    snprintf(stale + used, size - used, "%s%.60s (these kernels: %s)", used ? ", " : "", stored, now);
    return -1;
}

int vit_packed_settle(vit_model *m, char *note, size_t size) {
    char stale[300] = "";
    m->packed_f = settle_one(m, KEY_F, kernels_fmatrix_layout(), stale, sizeof stale) == 1;
    m->packed_q = settle_one(m, KEY_Q, kernels_qmatrix_layout(m->isa), stale, sizeof stale) == 1;
    m->packed_b = settle_one(m, KEY_B, kernels_bmatrix_layout(), stale, sizeof stale) == 1;
    /* The parts are never an unknown tensor, used or not. */
    for (size_t i = 0; i < weights_count(m->file); i++)
        if (vit_packed_is_part(weights_at(m->file, i)->name)) m->used[i] = 1;
    if (!stale[0]) return 0;
    snprintf(note, size,
             "%s: packed for another layout, %s: packed again at load (vit quantize --dtype "
             "packed writes a copy packed for these kernels)",
             weights_path(m->file), stale);
    return 1;
}

/* The parts of matrix name into p; 0 when there are none. */
static int find_parts(const vit_model *m, const char *name, kernels_packed *p) {
    *p = (kernels_packed){0};
    for (int i = 0; i < KERNELS_PACKED_PARTS; i++) {
        char key[96];
        snprintf(key, sizeof key, PREFIX "%s.%d", name, i);
        const weights_tensor *t = weights_find(m->file, key);
        if (!t || t->dtype != WEIGHTS_U8 || t->ndim != 1) break;
        p->part[i] = t->data;
        p->bytes[i] = t->nbytes;
        p->count = i + 1;
    }
    return p->count;
}

/* Whether every part is 64-byte aligned. A mapped file's are (the header
 * and every part are multiples of 64); a file handed over in memory
 * (vit_model_load_memory) may sit anywhere, and is then packed at load. */
static int parts_aligned(const kernels_packed *p) {
    for (int i = 0; i < p->count; i++)
        if ((uintptr_t)p->part[i] % 64 != 0) return 0;
    return 1;
}

static base_status bad_parts(const vit_model *m, const char *name, const char *layout, int rows,
                            int cols, base_error *err) {
    return base_error_set(err, BASE_E_FORMAT,
                         "%s: packed matrix '%s' is missing or not %s for %d x %d (a damaged "
                         "packed file: make it again with vit quantize)",
                         weights_path(m->file), name, layout, rows, cols);
}

base_status vit_packed_fmatrix(vit_model *m, const char *name, int rows, int cols,
                              kernels_fmatrix **out, base_error *err) {
    *out = NULL;
    if (!m->packed_f) return BASE_OK;
    kernels_packed p;
    if (find_parts(m, name, &p) && !parts_aligned(&p)) return BASE_OK;
    if (p.count) *out = kernels_fmatrix_wrap(rows, cols, &p);
    m->mapped += *out != NULL;
    return *out ? BASE_OK : bad_parts(m, name, kernels_fmatrix_layout(), rows, cols, err);
}

base_status vit_packed_qmatrix(vit_model *m, const char *name, int rows, int cols, int group,
                              kernels_qmatrix **out, base_error *err) {
    *out = NULL;
    if (!m->packed_q) return BASE_OK;
    kernels_packed p;
    if (find_parts(m, name, &p) && !parts_aligned(&p)) return BASE_OK;
    if (p.count) *out = kernels_qmatrix_wrap(rows, cols, group, m->isa, &p);
    m->mapped += *out != NULL;
    return *out ? BASE_OK
                : bad_parts(m, name, kernels_qmatrix_layout(m->isa), rows, cols, err);
}

base_status vit_packed_bmatrix(vit_model *m, const char *name, int rows, int cols,
                              kernels_bmatrix **out, base_error *err) {
    *out = NULL;
    if (!m->packed_b) return BASE_OK;
    kernels_packed p;
    if (find_parts(m, name, &p) && !parts_aligned(&p)) return BASE_OK;
    if (p.count) *out = kernels_bmatrix_wrap(rows, cols, &p);
    m->mapped += *out != NULL;
    return *out ? BASE_OK : bad_parts(m, name, kernels_bmatrix_layout(), rows, cols, err);
}

/* ------------------------------------------------------------- writing */

typedef struct part_list {
    weights_tensor *t;
    size_t n;
    char (*names)[96];
} part_list;

static void add_parts(part_list *l, const char *name, const kernels_packed *p) {
    for (int i = 0; i < p->count; i++) {
        snprintf(l->names[l->n], sizeof l->names[l->n], PREFIX "%s.%d", name, i);
        l->t[l->n] = (weights_tensor){.name = l->names[l->n], .dtype = WEIGHTS_U8, .ndim = 1,
                                      .shape = {(int64_t)p->bytes[i]}, .numel = p->bytes[i],
                                      .nbytes = p->bytes[i], .data = p->part[i]};
        l->n++;
    }
}

static void add_f(part_list *l, const char *name, const kernels_fmatrix *w) {
    kernels_packed p;
    if (!w) return;
    kernels_fmatrix_parts(w, &p);
    add_parts(l, name, &p);
}

static void add_q(part_list *l, const char *name, const kernels_qmatrix *w) {
    kernels_packed p;
    if (!w) return;
    kernels_qmatrix_parts(w, &p);
    add_parts(l, name, &p);
}

static void add_b(part_list *l, const char *name, const kernels_bmatrix *w) {
    kernels_packed p;
    if (!w) return;
    kernels_bmatrix_parts(w, &p);
    add_parts(l, name, &p);
}

/* Every packed matrix of m, then the file's own tensors (old parts left
 * out): the parts first, so they sit right after the 64-aligned header. */
static void list_tensors(const vit_model *m, part_list *l, int *has_q, int *has_b) {
    add_f(l, "patch", m->patch_f);
    add_f(l, "head", m->head_f);
    *has_q = *has_b = 0;
    for (int b = 0; b < m->config.num_layers; b++) {
        const vit_block *k = &m->blocks[b];
        char name[64];
        const kernels_fmatrix *f[4] = {k->qkv_f, k->proj_f, k->fc1_f, k->fc2_f};
        const kernels_qmatrix *q[4] = {k->qkv_q, k->proj_q, k->fc1_q, k->fc2_q};
        const kernels_bmatrix *h[4] = {k->qkv_h, k->proj_h, k->fc1_h, k->fc2_h};
        static const char *const WHAT[4] = {"qkv", "proj", "fc1", "fc2"};
        for (int i = 0; i < 4; i++) {
            snprintf(name, sizeof name, "blocks.%d.%s", b, WHAT[i]);
            add_f(l, name, f[i]);
            add_q(l, name, q[i]);
            add_b(l, name, h[i]);
            *has_q |= q[i] != NULL;
            *has_b |= h[i] != NULL;
        }
    }
    for (size_t i = 0; i < weights_count(m->file); i++)
        if (!vit_packed_is_part(weights_at(m->file, i)->name)) l->t[l->n++] = *weights_at(m->file, i);
}

base_status vit_model_write_packed(const vit_model *m, const char *path, const char *const *keys,
                                  const char *const *values, size_t n_meta, base_error *err) {
    /* At most KERNELS_PACKED_PARTS parts for each of 2 + 4 per block. */
    const size_t most = (size_t)KERNELS_PACKED_PARTS * (2 + 4 * (size_t)m->config.num_layers);
    part_list l = {calloc(most + weights_count(m->file) + 1, sizeof *l.t), 0,
                   calloc(most + 1, sizeof *l.names)};
    const char **k = calloc(n_meta + 3, sizeof *k), **v = calloc(n_meta + 3, sizeof *v);
    base_status status = BASE_OK;
    if (!l.t || !l.names || !k || !v) {
        status = base_error_set(err, BASE_E_NOMEM, "%s: out of memory", path);
    } else {
        int has_q, has_b;
        list_tensors(m, &l, &has_q, &has_b);
        size_t n = 0;
        for (size_t i = 0; i < n_meta; i++)
            if (!vit_packed_is_key(keys[i])) k[n] = keys[i], v[n++] = values[i];
        k[n] = KEY_F, v[n++] = kernels_fmatrix_layout();
        if (has_q) k[n] = KEY_Q, v[n++] = kernels_qmatrix_layout(m->isa);
        if (has_b) k[n] = KEY_B, v[n++] = kernels_bmatrix_layout();
        status = weights_write(path, l.t, l.n, k, v, n, err);
    }
    free(l.t);
    free(l.names);
    free(k);
    free(v);
    return status;
}
