/* vitc's fp32 GEMM (kernels.h kernels_linear): packing weights into
 * panels, the one GEMM driver of every dtype (gemm_drive: tiles, threads,
 * activation; kernels_bf16.c and kernels_int8.c run it on their own
 * micro-kernels), choosing a path, and the portable C micro-kernel.
 * Compiled with -ffp-contract=off (CMakeLists.txt) like the AVX2 and
 * AVX-512 files: every multiply-add that is fused is an fmaf or an FMA
 * instruction, written out, in every path alike. */
/* madvise and MADV_HUGEPAGE (Linux) beside the project's POSIX. */
#define _DEFAULT_SOURCE
#include "kernels_gemm.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kernels_parallel.h"
#include "kernels_rows.h"

void *kernels_alloc_panels(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    bytes = (bytes + 63) / 64 * 64;
    void *values = NULL;
    /* A large matrix in 2 MiB pages where the kernel allows (transparent
     * huge pages in madvise mode): a 4 KiB page fault per 1024 weights was
     * half of a ViT-Base's load time on the VMs here. */
    if (bytes >= huge && posix_memalign(&values, huge, (bytes + huge - 1) / huge * huge) == 0) {
#ifdef MADV_HUGEPAGE
        madvise(values, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE);
#endif
        return values;
    }
    return aligned_alloc(64, bytes);
}

kernels_fmatrix *kernels_fmatrix_create(int rows, int cols) {
    if (rows <= 0 || cols <= 0) return NULL;
    kernels_fmatrix *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->rows = rows;
    w->cols = cols;
    w->panels = (rows + FPANEL - 1) / FPANEL;
    /* Not zeroed as a whole (kernels_alloc_floats would): set() writes
     * every value, so only the last panel's lanes past rows are zeroed. */
    w->values = kernels_alloc_panels(kernels_fmatrix_bytes(w));
    if (!w->values) {
        free(w);
        return NULL;
    }
    if (rows % FPANEL) {
        float *last = w->values + (size_t)(w->panels - 1) * cols * FPANEL;
        for (size_t k = 0; k < (size_t)cols; k++)
            for (int l = rows % FPANEL; l < FPANEL; l++) last[k * FPANEL + l] = 0.0f;
    }
    return w;
}

void kernels_fmatrix_set(kernels_fmatrix *w, int first_row, int count, int first_col, int width,
                         const float *values, float scale) {
    /* Panel by panel, 16 rows read side by side: the writes run straight
     * through the panel (one pass over memory each way). */
    for (int n0 = first_row; n0 < first_row + count;) {
        const int lane0 = n0 % FPANEL;
        const int lanes = FPANEL - lane0 < first_row + count - n0 ? FPANEL - lane0 : first_row + count - n0;
        float *panel = w->values + ((size_t)(n0 / FPANEL) * w->cols + first_col) * FPANEL + lane0;
        const float *rows = values + (size_t)(n0 - first_row) * width;
        for (int k = 0; k < width; k++)
            for (int l = 0; l < lanes; l++) panel[(size_t)k * FPANEL + l] = rows[(size_t)l * width + k] * scale;
        n0 += lanes;
    }
}

void kernels_fmatrix_to_f32(const kernels_fmatrix *w, float *dst) {
    for (int n = 0; n < w->rows; n++)
        for (int k = 0; k < w->cols; k++)
            dst[(size_t)n * w->cols + k] = w->values[((size_t)(n / FPANEL) * w->cols + k) * FPANEL + n % FPANEL];
}

int kernels_fmatrix_rows(const kernels_fmatrix *w) { return w->rows; }
int kernels_fmatrix_cols(const kernels_fmatrix *w) { return w->cols; }

size_t kernels_fmatrix_bytes(const kernels_fmatrix *w) {
    return (size_t)w->panels * FPANEL * w->cols * sizeof(float);
}

void kernels_fmatrix_free(kernels_fmatrix *w) {
    if (!w) return;
    if (!w->wrapped) free(w->values);
    free(w);
}

/* Version 1: [panels][cols][16] floats, panel p holding outputs 16p ..
 * 16p + 15 (lanes past rows 0), one part. */
const char *kernels_fmatrix_layout(void) { return "fmatrix-f32-panel16-v1"; }

void kernels_fmatrix_parts(const kernels_fmatrix *w, kernels_packed *out) {
    *out = (kernels_packed){.count = 1, .part = {w->values}, .bytes = {kernels_fmatrix_bytes(w)}};
}

kernels_fmatrix *kernels_fmatrix_wrap(int rows, int cols, const kernels_packed *p) {
    if (rows <= 0 || cols <= 0 || p->count != 1 || (uintptr_t)p->part[0] % 64 != 0) return NULL;
    kernels_fmatrix *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    *w = (kernels_fmatrix){rows, cols, (rows + FPANEL - 1) / FPANEL, (float *)p->part[0], 1};
    if (p->bytes[0] != kernels_fmatrix_bytes(w)) {
        free(w);
        return NULL;
    }
    return w;
}

/* b [K, N] (row-major, rows ldb floats apart) as the weights of a product
 * a · b: panels of its columns, [ceil(N / 16)][K][16], lanes past N zero. */
static void pack_columns(float *dst, const float *b, size_t ldb, int K, int N) {
    for (int j0 = 0; j0 < N; j0 += FPANEL) { /* a panel at a time: row pieces copied whole */
        const int width = N - j0 < FPANEL ? N - j0 : FPANEL;
        float *panel = dst + (size_t)j0 * K;
        for (int k = 0; k < K; k++) {
            for (int l = 0; l < width; l++) panel[(size_t)k * FPANEL + l] = b[k * ldb + j0 + l];
            for (int l = width; l < FPANEL; l++) panel[(size_t)k * FPANEL + l] = 0.0f;
        }
    }
}

/* ------------------------------------------------------------ driver */

void gemm_drive(const void *call, const gemm_tiles *t, int p0, int p1) {
    const gemm_dest *d = call; /* every call struct starts with its gemm_dest */
    for (int p = p0; p < p1; p += t->np) {
        const int np = p1 - p < t->np ? p1 - p : t->np;
        t->tile(call, 0, d->rows, p, np);
        if (d->ep.act == KERNELS_ACT_NONE) continue;
        /* After the panels' every row: the tiles' stores are still in L1. */
        const int j0 = p * FPANEL, cols = d->n - j0 < np * FPANEL ? d->n - j0 : np * FPANEL;
        for (int r = 0; r < d->rows; r++) {
            float *row = d->out + (size_t)r * d->ldo + j0;
            t->rows->act(row, row, (size_t)cols, d->ep.act);
        }
    }
}

/* Thread id of team's share of the panels. */
static void gemm_share(const void *call, const gemm_tiles *t, int team, int id) {
    const gemm_dest *d = call;
    const int panels = (d->n + FPANEL - 1) / FPANEL, pairs = (panels + 1) / 2;
    const int first = 2 * (int)((long)pairs * id / team);
    const int last = 2 * (int)((long)pairs * (id + 1) / team);
    if (first < panels) gemm_drive(call, t, first, last < panels ? last : panels);
}

void gemm_run(const void *call, const gemm_tiles *t, kernels_threads th) {
    const gemm_dest *d = call;
    if (d->rows <= 0) return;
    if (th.count <= 1) {
        gemm_drive(call, t, 0, (d->n + FPANEL - 1) / FPANEL);
    } else if (th.in_team) {
        gemm_share(call, t, omp_get_num_threads(), omp_get_thread_num());
#pragma omp barrier
    } else {
#pragma omp parallel num_threads(th.count)
        gemm_share(call, t, omp_get_num_threads(), omp_get_thread_num());
    }
}

/* ------------------------------------------------------------ generic */

/* One row's 16 columns of panel p, stored through the epilogue; a row at
 * a time, each element its own chain of fmaf over k. */
static void generic_row(const gemm_call *g, int r, int p) {
    const float *a = g->inp + (size_t)r * g->lda;
    const float *w = g->panels + (size_t)p * g->k * FPANEL;
    float acc[FPANEL] = {0};
    for (int k = 0; k < g->k; k++)
        for (int c = 0; c < FPANEL; c++) acc[c] = fmaf(a[k], w[(size_t)k * FPANEL + c], acc[c]);
    gemm_store_row(&g->d, r, p, acc);
}

#define ROW(m) generic_row(call, r0, p)
GEMM_TILE_FN(generic_tile, , 1, ROW)

ROWS_DEFINE_ELEMENTWISE(generic, )
ROWS_DEFINE_REDUCTIONS(generic, )

const kernels_path kernels_path_generic = {{generic_tile, 1, &kernels_path_generic},
                                           act_generic, gelu_backward_generic,
                                           layernorm_generic, softmax_generic};

const kernels_path *kernels_path_of(kernels_isa isa) {
    switch (isa) {
    case KERNELS_ISA_AVX2:
    case KERNELS_ISA_AVX_VNNI: return &kernels_path_avx2;
    case KERNELS_ISA_AVX512:
    case KERNELS_ISA_AVX512_VNNI:
    case KERNELS_ISA_AVX512_BF16: return &kernels_path_avx512;
    case KERNELS_ISA_NEON:
    case KERNELS_ISA_NEON_DOTPROD:
    case KERNELS_ISA_NEON_I8MM: return &kernels_path_neon;
    default: return &kernels_path_generic;
    }
}

void kernels_linear(float *out, int ldo, const float *inp, int lda, int rows,
                    const kernels_fmatrix *w, const kernels_epilogue *ep, kernels_threads th) {
    static const kernels_epilogue plain = {0};
    const gemm_call g = {{out, ldo, rows, w->rows, ep ? *ep : plain}, inp, lda, w->values, w->cols};
    gemm_run(&g, &kernels_path_of(th.isa)->gemm, th);
}

size_t kernels_matmul_scratch_floats(int K, int N) {
    return (size_t)(N + FPANEL - 1) / FPANEL * FPANEL * (size_t)K;
}

void kernels_matmul(float *out, int ldo, const float *a, int lda, int rows, const float *b, int ldb,
                    int K, int N, float *scratch, kernels_threads th) {
    pack_columns(scratch, b, (size_t)ldb, K, N);
    const gemm_call g = {{out, ldo, rows, N, {0}}, a, lda, scratch, K};
    gemm_run(&g, &kernels_path_of(th.isa)->gemm, th);
}

/* Elementwise work in chunks of 4096 floats (whole vectors on every
 * path), split statically over th's threads. */
#define CHUNK 4096
#define CHUNKS(n) (((n) + CHUNK - 1) / CHUNK)
#define CHUNK_LEN(n, c) ((n) - (c) * CHUNK < CHUNK ? (n) - (c) * CHUNK : CHUNK)

void kernels_act_forward(float *out, const float *inp, size_t n, kernels_act act,
                         kernels_threads th) {
    const kernels_path *path = kernels_path_of(th.isa);
    if (act == KERNELS_ACT_NONE) return;
    PARALLEL_FOR(for (size_t c = 0; c < CHUNKS(n); c++) {
        path->act(out + c * CHUNK, inp + c * CHUNK, CHUNK_LEN(n, c), act);
    });
}

void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n,
                   kernels_threads th) {
    const kernels_path *path = kernels_path_of(th.isa);
    PARALLEL_FOR(for (size_t c = 0; c < CHUNKS(n); c++) {
        path->gelu_backward(dinp + c * CHUNK, inp + c * CHUNK, dout + c * CHUNK, CHUNK_LEN(n, c));
    });
}

/* ------------------------------------------------------------ attention */

/* Floats of one head's K in panels ([ceil(T / 16)][dh][16]: K as the
 * weights of Q Kᵀ) and of its V ([ceil(dh / 16)][T][16]: Vᵀ as the
 * weights of P V), each a whole number of 16-float vectors. */
static size_t k_panel_floats(int T, int dh) { return (size_t)(T + FPANEL - 1) / FPANEL * FPANEL * dh; }
static size_t v_panel_floats(int T, int dh) { return (size_t)(dh + FPANEL - 1) / FPANEL * FPANEL * T; }

/* A thread's scratch: a 16-float header (which head its panels hold), the
 * panels, then the scores of a task. */
#define SLOT_HEADER 16

size_t attention_pack_floats(int T, int dh) {
    return SLOT_HEADER + k_panel_floats(T, dh) + v_panel_floats(T, dh);
}

/* K [T, dh] and V [T, dh] (rows ld floats apart) into their panels: K
 * rows as the weights of Q Kᵀ (transposed into panels of tokens, lanes past
 * T zero), V's columns as those of P V. */
static void pack_head(float *kp, float *vp, const float *k, const float *v, size_t ld, int T,
                      int dh) {
    for (int t = 0; t < (T + FPANEL - 1) / FPANEL * FPANEL; t++) {
        float *dst = kp + (size_t)(t / FPANEL) * dh * FPANEL + t % FPANEL;
        for (int d = 0; d < dh; d++) dst[(size_t)d * FPANEL] = t < T ? k[t * ld + d] : 0.0f;
    }
    pack_columns(vp, v, ld, T, dh);
}

/* One inference attention: the arguments of attention_forward. */
typedef struct attention_job {
    float *out, *att;
    const float *qkv;
    int T, D, heads, block_rows, blocks;
    float *scratch;
    size_t slot; /* floats of a thread's part of scratch */
    kernels_isa isa;
} attention_job;

/* Task `task` (block task % blocks of head task / blocks % heads of image
 * task / (heads * blocks)) with scratch `mine`, whose panels are packed
 * again only for another head than the last. */
static void attention_task(const attention_job *a, int task, float *mine) {
    const kernels_path *path = kernels_path_of(a->isa);
    const int T = a->T, D = a->D, heads = a->heads, dh = D / heads;
    const int b = task / (heads * a->blocks), h = task / a->blocks % heads;
    const int first = task % a->blocks * a->block_rows;
    const int rows = task % a->blocks == a->blocks - 1 ? T - first : a->block_rows;
    const size_t ld = 3 * (size_t)D;
    const float *image = a->qkv + (size_t)b * T * ld + (size_t)h * dh;
    float *kp = mine + SLOT_HEADER, *vp = kp + k_panel_floats(T, dh);
    float *scores = a->att ? a->att + (((size_t)b * heads + h) * T + first) * T
                           : vp + v_panel_floats(T, dh);
    if (mine[0] != (float)(b * heads + h)) {
        pack_head(kp, vp, image + D, image + 2 * D, ld, T, dh);
        mine[0] = (float)(b * heads + h);
        /* The next head's K and V rows (this thread's next task, unless
         * it is the last) towards L2 while this one computes: rows 3D
         * floats apart, each on its own page, otherwise reach the packing
         * one miss at a time (a fifth of ViT-Base's attention). */
        if (h + 1 < heads)
            for (int t = 0; t < T; t++)
                for (int d = 0; d < dh; d += 16) {
                    __builtin_prefetch(image + dh + t * ld + D + d, 0, 2);
                    __builtin_prefetch(image + dh + t * ld + 2 * D + d, 0, 2);
                }
    }
    const gemm_call s = {{scores, T, rows, T, {.scaled = 1, .scale = 1.0f / sqrtf((float)dh)}},
                         image + first * ld, (int)ld, kp, dh};
    gemm_drive(&s, &path->gemm, 0, (T + FPANEL - 1) / FPANEL);
    for (int i = 0; i < rows; i++) path->softmax(scores + (size_t)i * T, T);
    const gemm_call o = {{a->out + ((size_t)b * T + first) * D + (size_t)h * dh, D, rows, dh, {0}},
                         scores, T, vp, T};
    gemm_drive(&o, &path->gemm, 0, (dh + FPANEL - 1) / FPANEL);
}

/* The tasks of a team's thread `id`, as an orphaned omp for ending with
 * its barrier. Static: each thread a contiguous run of tasks, so it packs
 * each head it meets once (two threads on DeiT-tiny's 3 heads x 4 blocks:
 * 4 packings a layer, up to 6 handed out one by one); the runs differ by at
 * most one block's few extra rows. */
static void attention_share(const attention_job *a, int tasks, int id) {
    float *mine = a->scratch + (size_t)id * a->slot;
    mine[0] = -1.0f; /* no head packed yet in this call */
#pragma omp for schedule(static)
    for (int task = 0; task < tasks; task++) attention_task(a, task, mine);
}

void attention_forward_vitc(float *out, float *att, const float *qkv, int batch, int T, int D,
                            int heads, int block_rows, float *scratch, size_t slot,
                            kernels_threads th) {
    if (block_rows > T) block_rows = T;
    /* The rows left after the last whole block join it (197 tokens in 48-row
     * blocks: 48, 48, 48, 53), rather than making a task of their own. */
    const attention_job a = {out, att, qkv, T, D, heads, block_rows, T / block_rows, scratch, slot, th.isa};
    const int tasks = batch * heads * a.blocks;
    if (th.count <= 1) {
        scratch[0] = -1.0f;
        for (int task = 0; task < tasks; task++) attention_task(&a, task, scratch);
    } else if (th.in_team) {
        attention_share(&a, tasks, omp_get_thread_num());
    } else {
#pragma omp parallel num_threads(th.count)
        attention_share(&a, tasks, omp_get_thread_num());
    }
}

/* The paths of another architecture: never chosen (kernels_isa_supported),
 * kept linkable. */
#if !defined(__x86_64__) && !defined(__i386__)
const kernels_path kernels_path_avx2 = {0}, kernels_path_avx512 = {0};
#endif
#if !defined(__aarch64__)
const kernels_path kernels_path_neon = {0};
#endif
